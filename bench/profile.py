"""Where the worker's time goes: py-spy samples of the worker process (on-CPU samples
only, i.e. not waiting in the event loop's ``select``), attributed to buckets.

Each stack is read from its innermost frame outwards; the first frame that names a
concern decides the bucket (so ``json.dumps`` called by ``worker.outcomes`` counts as
outcome building, ``json.loads`` called by ``worker.decode`` as decoding). Frames that
say nothing about the concern (asyncio, the Kafka client's connection and protocol code,
json, hashlib…) decide only when no concern is found above them.

    python -m bench.profile bench/results/profile-latest.txt --events 200000
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import table

RATE_HZ = 200

# (bucket, pattern on "function (file:line)"), tried in this order on each frame
_STRONG: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (bucket, re.compile(pattern))
    for bucket, pattern in (
        ("logging", r"structlog/|logging/|worker/logs\.py|_log_event \("),
        ("metrics", r"prometheus_client/|worker/progress\.py"),
        ("tracing", r"opentelemetry/|worker/tracing"),
        ("state records", r"worker/state\.py"),
        ("validate", r"pydantic|worker/models\.py|worker/identifiers\.py"),
        ("decode", r"worker/decode\.py|worker/events\.py"),
        (
            "outcome building",
            r"worker/outcomes\.py|worker/problems\.py|worker/plan\.py|"
            r"worker/decision\.py",
        ),
        ("database", r"asyncpg|worker/store\.py|worker/db\.py"),
        # the group coordinator's frames (an offset commit's request, and the group's
        # heartbeats) before the consumer's other frames, which are the fetch's
        (
            "commit",
            r"[Cc]ommit.*aiokafka/|BatchRunner\._commit |aiokafka/consumer/group_coordinator\.py|"
            r"worker/commits\.py",
        ),
        ("produce", r"aiokafka/producer/|worker/kafka\.py"),
        ("fetch", r"aiokafka/consumer/|to_raw \(|Pipeline\._start |Pipeline\._fetch "),
    )
)
_WEAK: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (bucket, re.compile(pattern))
    for bucket, pattern in (
        ("kafka client I/O", r"aiokafka/"),
        ("event loop/other", r"asyncio/|selectors\.py|uvloop"),
    )
)
BUCKETS = (
    "decode",
    "validate",
    "database",
    "produce",
    "commit",
    "fetch",
    "kafka client I/O",
    "outcome building",
    "state records",
    "logging",
    "metrics",
    "tracing",
    "event loop/other",
)


@dataclass(frozen=True)
class Stack:
    frames: tuple[str, ...]  # outermost first, as py-spy writes them
    samples: int


def parse(lines: Iterable[str]) -> list[Stack]:
    """py-spy's ``--format raw`` (collapsed stacks: ``f1;f2;f3 N``)."""
    stacks = []
    for line in lines:
        body, _, count = line.rstrip("\n").rpartition(" ")
        if body and count.isdigit():
            stacks.append(Stack(tuple(body.split(";")), int(count)))
    return stacks


def bucket_of(frames: tuple[str, ...]) -> str:
    weak: str | None = None
    for frame in reversed(frames):
        for bucket, pattern in _STRONG:
            if pattern.search(frame):
                return bucket
        if weak is None:
            weak = next((b for b, p in _WEAK if p.search(frame)), None)
    return weak or "event loop/other"


def _function(frame: str) -> str:
    """``func (path/file.py:123)`` → ``path/file.py:func`` (lines merged)."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{path}:{name}" if path else name


def breakdown(
    stacks: list[Stack], events: int, rate_hz: float = RATE_HZ, top: int = 15
) -> dict[str, Any]:
    """CPU per bucket (seconds, share, µs per event) and the hottest functions."""
    per_bucket: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    bucket_leaves: dict[str, Counter[str]] = {b: Counter() for b in BUCKETS}
    inclusive_worker: Counter[str] = Counter()
    total = 0
    for stack in stacks:
        total += stack.samples
        bucket = bucket_of(stack.frames)
        per_bucket[bucket] += stack.samples
        self_time[_function(stack.frames[-1])] += stack.samples
        bucket_leaves[bucket][_function(stack.frames[-1])] += stack.samples
        seen = set()
        for frame in stack.frames:
            name = _function(frame)
            if "worker/" in name and name not in seen:
                seen.add(name)
                inclusive_worker[name] += stack.samples
    seconds = total / rate_hz

    def share(samples: int) -> dict[str, float]:
        return {
            "cpu_seconds": round(samples / rate_hz, 2),
            "share": round(samples / total, 4) if total else 0.0,
            "us_per_event": round(samples / rate_hz / events * 1e6, 1) if events else 0.0,
        }

    return {
        "events": events,
        "rate_hz": rate_hz,
        "samples": total,
        "cpu_seconds": round(seconds, 2),
        "us_per_event": round(seconds / events * 1e6, 1) if events else 0.0,
        "buckets": {b: share(per_bucket[b]) for b in BUCKETS if per_bucket[b]},
        "top_self": [{"function": f, **share(n)} for f, n in self_time.most_common(top)],
        "top_self_by_bucket": {
            b: [{"function": f, **share(n)} for f, n in leaves.most_common(5)]
            for b, leaves in bucket_leaves.items()
            if leaves
        },
        "top_inclusive_worker": [
            {"function": f, **share(n)} for f, n in inclusive_worker.most_common(top)
        ],
    }


def render(result: dict[str, Any]) -> str:
    buckets = result["buckets"]
    per_batch = "us_per_batch" in result  # a rate phase's profile (bench/versus.py)
    rows: list[list[object]] = [
        [name, v["us_per_event"], *([v["us_per_batch"]] if per_batch else []),
         round(v["share"] * 100, 1), v["cpu_seconds"]]
        for name, v in sorted(buckets.items(), key=lambda kv: -kv[1]["share"])
    ]  # fmt: skip
    rows.append(
        ["total (on CPU)", result["us_per_event"],
         *([result["us_per_batch"]] if per_batch else []), 100.0, result["cpu_seconds"]]
    )  # fmt: skip
    header = ["bucket", "µs/event", *(["µs/batch"] if per_batch else []), "% of CPU", "CPU s"]
    out = [table(header, rows), ""]
    out.append("hottest functions, self time (innermost frame):")
    out.append(
        table(
            ["function", "µs/event", "%"],
            [
                [t["function"], t["us_per_event"], round(t["share"] * 100, 1)]
                for t in result["top_self"]
            ],
        )
    )
    out.append("")
    out.append("hottest innermost frames of each bucket:")
    out.append(
        table(
            ["bucket", "function", "µs/event"],
            [
                [bucket, t["function"], t["us_per_event"]]
                for bucket, tops in result.get("top_self_by_bucket", {}).items()
                for t in tops[:4]
            ],
        )
    )
    out.append("")
    out.append("worker functions, inclusive time:")
    out.append(
        table(
            ["function", "µs/event", "%"],
            [
                [t["function"], t["us_per_event"], round(t["share"] * 100, 1)]
                for t in result["top_inclusive_worker"]
            ],
        )
    )
    return "\n".join(out)


def calls(path: Path, batches: int, top: int = 40) -> list[dict[str, Any]]:
    """From a cProfile dump (bench.patched_worker ``BENCH_CALLS_TO``): the functions
    called most often, with their calls per batch (start-up's calls included: a few
    thousand, against a rate phase's hundreds of thousands)."""
    stats = pstats.Stats(str(path))
    counted = [
        (f"{Path(file).name}:{line}:{name}" if line else name, primitive)
        for (file, line, name), (primitive, *_) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    counted.sort(key=lambda fc: -fc[1])
    return [
        {"function": function, "calls": n, "per_batch": round(n / batches, 2)}
        for function, n in counted[:top]
    ]


# ---- recording


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


def start_recording(pid: int, output: Path, native: bool = False) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` until :func:`stop_recording`; collapsed stacks to ``output``.
    Non-blocking sampling: the worker is not paused for each sample."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
    command = [
        exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
        "--rate", str(RATE_HZ), "--nonblocking",
    ]  # fmt: skip
    if native:
        command.append("--native")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop_recording(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    parser.add_argument("--events", type=int, required=True, help="events in the window")
    parser.add_argument("--rate", type=float, default=RATE_HZ, help="py-spy --rate used")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    with args.profile.open() as lines:
        result = breakdown(parse(lines), args.events, args.rate)
    print(json.dumps(result, indent=2) if args.json else render(result))


if __name__ == "__main__":
    main()
