"""Draw one Jaeger trace (its query API's JSON) as a timeline picture, for docs/tracing.md.

    python tools/trace_svg.py TRACE.json OUT.svg

One row per span, indented under its parent, in start order; a bar from its start to its
end, coloured by service, red when its status is an error; a link (an OpenTelemetry link,
Jaeger's FOLLOWS_FROM) drawn as a dashed line to the span it links to. Hand-written: a
picture of this one kind, in plain SVG, needs no plotting library.
"""

from __future__ import annotations

import json
import sys
from html import escape
from pathlib import Path
from typing import Any

ROW, LABEL, WIDTH, TOP = 22, 400, 640, 40
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948")


def _rows(trace: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, span) in tree order: children under their parent, each level by start."""
    spans = {s["spanID"]: s for s in trace["spans"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans.values():
        refs = span.get("references", [])
        # Jaeger keeps one reference to a span that is both parent and link (the
        # worker's batch and its first record's send span): a FOLLOWS_FROM then
        # places the span when there is no CHILD_OF
        parent = next((r["spanID"] for r in refs if r["refType"] == "CHILD_OF"), None)
        if parent is None:
            parent = next((r["spanID"] for r in refs if r["spanID"] in spans), None)
        children.setdefault(parent if parent in spans else None, []).append(span)
    rows: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            rows.append((depth, span))
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    return rows


def _label(name: str, tags: dict[str, Any]) -> str:
    """The span's name, saying which of the worker's two ``process`` spans it is."""
    if "messaging.batch.message_count" in tags and name.startswith("process"):
        name += f" (batch of {tags['messaging.batch.message_count']})"
    elif "messaging.message.id" in tags:
        name += f" (event {str(tags['messaging.message.id'])[:8]}…)"
    return name[:60]


def render(trace: dict[str, Any]) -> str:
    rows = _rows(trace)
    start = min(s["startTime"] for _, s in rows)
    end = max(s["startTime"] + s["duration"] for _, s in rows)
    scale = WIDTH / max(end - start, 1)
    services = sorted({trace["processes"][s["processID"]]["serviceName"] for _, s in rows})
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(services)}
    height = TOP + ROW * len(rows) + 30 + 18 * len(services)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL + WIDTH + 90}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="8" y="20" font-weight="bold">trace {escape(trace["traceID"])}: '
        f"{(end - start) / 1000:.1f} ms</text>",
    ]
    where: dict[str, tuple[float, float]] = {}
    for index, (depth, span) in enumerate(rows):
        y = TOP + index * ROW
        x = LABEL + (span["startTime"] - start) * scale
        w = max(span["duration"] * scale, 1.5)
        where[span["spanID"]] = (x, y + ROW / 2)
        tags = {t["key"]: t["value"] for t in span.get("tags", [])}
        failed = tags.get("otel.status_code") == "ERROR" or tags.get("error") is True
        service = trace["processes"][span["processID"]]["serviceName"]
        fill = "#d62728" if failed else colour[service]
        name = escape(_label(span["operationName"], tags))
        out.append(f'<text x="{8 + depth * 14}" y="{y + 15}">{name}</text>')
        out.append(
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{ROW - 8}" fill="{fill}"/>'
        )
        out.append(
            f'<text x="{x + w + 4:.1f}" y="{y + 15}" fill="#555">'
            f"{span['duration'] / 1000:.2f} ms</text>"
        )
    for _, span in rows:
        for ref in span.get("references", []):
            if ref["refType"] == "FOLLOWS_FROM" and ref["spanID"] in where:
                (x1, y1), (x2, y2) = where[ref["spanID"]], where[span["spanID"]]
                out.append(
                    f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                    'stroke="#333" stroke-dasharray="4 3"/>'
                )
    y = TOP + ROW * len(rows) + 20
    for name in services:
        out.append(f'<rect x="8" y="{y - 10}" width="12" height="12" fill="{colour[name]}"/>')
        out.append(f'<text x="26" y="{y}">{escape(name)}</text>')
        y += 18
    out.append(
        f'<text x="{LABEL}" y="{TOP + ROW * len(rows) + 20}" fill="#555">dashed: a link '
        "(the worker's batch to each event's producer span)</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    trace = source["data"][0] if "data" in source else source
    Path(argv[1]).write_text(render(trace), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
