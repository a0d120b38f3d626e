// Validates AsyncAPI documents with the reference parser (@asyncapi/parser: the AsyncAPI
// JSON Schema of the spec version, the Spectral AsyncAPI ruleset, the payload and binding
// schemas, every $ref resolved, relative file references included).
//
//   node tools/asyncapi-validate.mjs schemas/asyncapi.yaml [more.yaml …]
//
// Prints every diagnostic as file:line:col severity code message (path). Exits 1 when a
// document has a diagnostic of severity error or cannot be parsed; warnings, infos and
// hints are printed and do not fail.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import { Parser } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'info', 'hint'];

async function validate(parser, file) {
  const source = path.resolve(file);
  const text = await readFile(source, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source });
  let errors = 0;
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? String(d.severity);
    if (d.severity === 0) errors += 1;
    const where = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : '?';
    const origin = d.source && path.resolve(d.source) !== source ? path.relative('.', d.source) : file;
    const at = d.path && d.path.length ? ` (at ${d.path.join('.')})` : '';
    console.log(`${origin}:${where} ${severity} ${d.code} ${d.message}${at}`);
  }
  if (document === undefined && errors === 0) {
    console.log(`${file}: not parsed (no document and no error diagnostic)`);
    errors = 1;
  }
  const summary = document
    ? `AsyncAPI ${document.version()}: ${document.channels().length} channels, ` +
      `${document.operations().length} operations, ${document.messages().length} messages`
    : 'invalid';
  console.log(`${file}: ${summary}; ${errors} error(s), ${diagnostics.length - errors} other diagnostic(s)`);
  return errors;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node tools/asyncapi-validate.mjs FILE.yaml [FILE.yaml …]');
  process.exit(2);
}
const parser = new Parser();
let failed = 0;
for (const file of files) {
  try {
    failed += await validate(parser, file);
  } catch (err) {
    console.error(`${file}: ${err?.stack ?? err}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);
