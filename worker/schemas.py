"""JSON Schema (draft 2020-12) files of the contract, generated from worker/models.py.

    python -m worker.schemas DIR          # write the files into DIR (make schemas)
    python -m worker.schemas --check DIR  # exit 1 if a file in DIR is missing or stale

The output is deterministic (sorted keys, two-space indent, trailing newline) so that
tests/unit/test_schemas.py can hold schemas/ in sync with the models. schemas/asyncapi.yaml
refers to these files by relative ``$ref``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from worker.models import (
    SCHEMA_BASE_URI,
    ErrorModel,
    OCITag,
    RejectedOutcome,
    RemovedOutcome,
    StateRecord,
    TagDeletedData,
    TagDeletedEvent,
    TagMovedData,
    TagMovedEvent,
    UpdatedOutcome,
)

if TYPE_CHECKING:
    from pydantic._internal._core_utils import CoreSchemaOrField

DRAFT = "https://json-schema.org/draft/2020-12/schema"


class _Generator(GenerateJsonSchema):
    """pydantic's generator without the titles it makes up from member names."""

    def field_title_should_be_set(self, schema: CoreSchemaOrField) -> bool:
        return False


#: where every schema file's description points for the rules a schema cannot say
CONTRACT_NOTE = "The contract: docs/contract.md of the ocitag-worker project."


@dataclass(frozen=True, slots=True)
class SchemaFile:
    name: str
    model: type[BaseModel]
    #: "validation" for what the worker reads, "serialization" for what it writes
    mode: Literal["validation", "serialization"]
    title: str
    description: str


FILES: tuple[SchemaFile, ...] = (
    SchemaFile(
        "tag-moved-event.schema.json",
        TagMovedEvent,
        "validation",
        "Tag-moved event (structured mode)",
        "A CloudEvents 1.0 'ocitag.moved.v1' event as the value of a record on the input "
        "topic (ocitag.events) with content-type application/cloudevents+json. Extension "
        "attributes are allowed and ignored. The identifier rules of the contract "
        "(repository grammar and normalisation, tag, digest) are checked by the worker; a "
        "breach is a 422 outcome, an envelope breach a 400.",
    ),
    SchemaFile(
        "tag-moved-data.schema.json",
        TagMovedData,
        "validation",
        "Tag-moved data",
        "The 'data' of a tag-moved event: in structured mode the event's 'data' member, in "
        "binary mode (ce_* headers, content-type application/json) the whole record value. "
        "Unknown members are rejected.",
    ),
    SchemaFile(
        "tag-deleted-event.schema.json",
        TagDeletedEvent,
        "validation",
        "Tag-deleted event (structured mode)",
        "A CloudEvents 1.0 'ocitag.deleted.v1' event (the tag was deleted in the registry) "
        "as the value of a record on the input topic (ocitag.events) with content-type "
        "application/cloudevents+json. Same envelope and identifier rules as a tag-moved "
        "event; a breach of the data rules is a 422 outcome, an envelope breach a 400.",
    ),
    SchemaFile(
        "tag-deleted-data.schema.json",
        TagDeletedData,
        "validation",
        "Tag-deleted data",
        "The 'data' of a tag-deleted event: in structured mode the event's 'data' member, in "
        "binary mode the whole record value. A tag-moved data object without 'artifact'; "
        "unknown members ('artifact' included) are rejected.",
    ),
    SchemaFile(
        "ocitag.schema.json",
        OCITag,
        "serialization",
        "OCITag",
        "An OCITag record: the 'data' of an ocitag.updated.v1 or ocitag.removed.v1 outcome. "
        "The seed API's "
        "OCITag schema: same members, same required list.",
    ),
    SchemaFile(
        "state-record.schema.json",
        StateRecord,
        "serialization",
        "State record",
        "The value of a record on the state topic (ocitag.state, compacted, key = the OCITag "
        "ID, content-type application/json): the tag's record as it now is, the OCITag "
        "plus its version ('$schema' is never set there). A deleted tag's record is a "
        "tombstone: a null value. Subscribers: docs/subscribers.md.",
    ),
    SchemaFile(
        "error-model.schema.json",
        ErrorModel,
        "serialization",
        "ErrorModel",
        "RFC 9457 problem details: the 'data' of an ocitag.rejected.v1 outcome. The seed "
        "API's ErrorModel (with ErrorDetail). Problem types: docs/problems.md.",
    ),
    SchemaFile(
        "outcome-updated.schema.json",
        UpdatedOutcome,
        "serialization",
        "Outcome: tag updated",
        "A CloudEvents 1.0 'ocitag.updated.v1' event on the outcome topic (ocitag.outcomes): "
        "the event was applied (change created or updated) or the tag already pointed there "
        "(unchanged). Status 200; data is the OCITag record.",
    ),
    SchemaFile(
        "outcome-removed.schema.json",
        RemovedOutcome,
        "serialization",
        "Outcome: tag removed",
        "A CloudEvents 1.0 'ocitag.removed.v1' event on the outcome topic (ocitag.outcomes): "
        "a tag-deleted event was applied (change deleted). Status 200; resourceversion is "
        "the version of the tombstone; data is the OCITag record as it was just before "
        "the deletion.",
    ),
    SchemaFile(
        "outcome-rejected.schema.json",
        RejectedOutcome,
        "serialization",
        "Outcome: event rejected",
        "A CloudEvents 1.0 'ocitag.rejected.v1' event on the outcome topic (ocitag.outcomes): "
        "the event was not applied. Status 400, 404 (a deletion of a tag that does not "
        "exist; still recorded), 409, 412, 422 (or 500); data is the ErrorModel problem "
        "details.",
    ),
)


def schema_of(spec: SchemaFile) -> dict[str, Any]:
    schema = spec.model.model_json_schema(
        by_alias=True, mode=spec.mode, schema_generator=_Generator
    )
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE_URI + spec.name,
        **schema,
        "title": spec.title,
        "description": f"{spec.description} {CONTRACT_NOTE}",
    }


def generate() -> dict[str, dict[str, Any]]:
    """Every schema file: file name → JSON Schema."""
    return {spec.name: schema_of(spec) for spec in FILES}


def render(schema: dict[str, Any]) -> str:
    """The file text: stable whatever the order in which the models declare things."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of the files in ``directory`` that are missing or differ from the models."""
    out = []
    for name, schema in generate().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(schema):
            out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.schemas", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("directory", type=Path, help="where the schema files are (schemas)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        names = stale(args.directory)
        for name in names:
            print(f"{args.directory / name} is out of date: run make schemas", file=sys.stderr)
        return 1 if names else 0
    for path in write(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
