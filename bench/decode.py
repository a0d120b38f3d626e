"""The decode benchmark (``make bench-decode``): decoding and validating one record
(``worker.decode.decode``: content mode, JSON, envelope, data, identifiers, fingerprint)
in µs per record, for valid and invalid input in both content modes, against plain
``json.loads`` of the same bytes. No services needed.

Each kind: BENCH_DECODE_RECORDS different records (20000), timed over
BENCH_DECODE_ROUNDS rounds (7) with ``time.perf_counter_ns`` and the garbage collector
off while timing (as ``timeit`` does); the median round counts.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench.report import table
from bench.services import RESULTS, code_version, env_int, machine, write_results
from bench.stream import Generator, StreamShape
from worker.decode import decode
from worker.events import RawRecord

# kind → (shape changes, expected outcome)
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "valid, structured": ({"binary": 0.0}, "TagMoved"),
    "valid, binary": ({"binary": 1.0}, "TagMoved"),
    "422 invalid data, structured": ({"binary": 0.0, "invalid": 1.0}, "Invalid"),
    "422 invalid data, binary": ({"binary": 1.0, "invalid": 1.0}, "Invalid"),
    "400 undecodable (mixed)": ({"invalid": 1.0, "undecodable_share": 1.0}, "Undecodable"),
}


def records_of(kind: str, count: int, seed: int = 7) -> list[RawRecord]:
    changes, _ = KINDS[kind]
    params: dict[str, Any] = {
        "tags": 5_000, "duplicates": 0.0, "invalid": 0.0, "undecodable_share": 0.0,
    }  # fmt: skip
    params.update(changes)
    generator = Generator(StreamShape(**params), seed, "dec")
    start = datetime.now(UTC) - timedelta(days=1)
    return [
        RawRecord("ocitag.events", 0, n, 0, r.key, r.value, tuple(r.headers))
        for n, r in enumerate(generator.many(count, start, timedelta(milliseconds=5)))
    ]


def _loads_all(values: Sequence[bytes]) -> None:
    for value in values:
        try:  # noqa: SIM105 - contextlib.suppress would cost more than the parse
            json.loads(value)
        except ValueError:
            pass


def _decode_all(records: Sequence[RawRecord]) -> None:
    for record in records:
        decode(record, 65_536)


def _rounds(work: Callable[[], None], count: int, rounds: int) -> list[float]:
    """µs per record of each round."""
    out = []
    enabled = gc.isenabled()
    try:
        for _ in range(rounds):
            gc.collect()
            gc.disable()
            started = time.perf_counter_ns()
            work()
            out.append((time.perf_counter_ns() - started) / count / 1_000)
            if enabled:
                gc.enable()
    finally:
        if enabled:
            gc.enable()
    return out


def run(count: int, rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for kind, (_, expected) in KINDS.items():
        records = records_of(kind, count)
        outcomes = Counter(type(decode(r, 65_536)).__name__ for r in records)
        values = [r.value or b"" for r in records]
        _decode_all(records[:1_000])  # warm up
        decoded = _rounds(partial(_decode_all, records), count, rounds)
        loads = _rounds(partial(_loads_all, values), count, rounds)
        median_decode, median_loads = statistics.median(decoded), statistics.median(loads)
        figures[kind] = {
            "records": count,
            "expected": expected,
            "decoded_as": dict(outcomes),
            "mean_bytes": round(sum(map(len, values)) / count, 1),
            "decode_us": round(median_decode, 2),
            "json_loads_us": round(median_loads, 2),
            "ratio": round(median_decode / median_loads, 1),
            "decode_rounds_us": [round(v, 2) for v in decoded],
            "decode_records_per_second": round(1e6 / median_decode),
        }
    return {
        "benchmark": "decode",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"records": count, "rounds": rounds},
        "machine": machine(),
        "code": code_version(),
        "figures": figures,
    }


def render(results: dict[str, Any]) -> str:
    rows = [
        [
            kind,
            f["mean_bytes"],
            f["decode_us"],
            f["json_loads_us"],
            f["ratio"],
            f["decode_records_per_second"],
            ", ".join(f"{k} {v}" for k, v in f["decoded_as"].items()),
        ]
        for kind, f in results["figures"].items()
    ]
    headers = [
        "input", "bytes", "decode µs", "json.loads µs", "x json.loads", "records/s (1 core)",
        "decoded as",
    ]  # fmt: skip
    return table(headers, rows)


def main() -> None:
    count = env_int("BENCH_DECODE_RECORDS", 20_000)
    rounds = env_int("BENCH_DECODE_ROUNDS", 7)
    results = run(count, rounds)
    path = write_results("decode", results, Path(os.environ.get("BENCH_RESULTS", str(RESULTS))))
    print(render(results))
    print(f"\nresults: {path} (and decode-latest.json)")


if __name__ == "__main__":
    main()
