"""The outcome-building A/B (``make bench-outcomes``): what building one outcome costs,
by kind, this checkout's ``worker/`` against another checkout's (BENCH_OUTCOMES_BASELINE,
required), interleaved in one process. No services needed.

Per kind, what the store does in ``outcomes.py`` for a batch: ``batch_outcomes`` of
BENCH_OUTCOMES_BATCH items (1,000: a drain's batch) and, for each new item, the
idempotency record's ``processed_row``; decode and decisions are made beforehand, by each
side's own modules, and not timed. One more row, **drain mix**, times the whole pure path
of a drain for the bench generator's stream (the issue's backlog: N/4 tags, random event
times, 5 % duplicates): decode, the decisions per tag and the outcomes, batch by batch,
as ``bench/profile.py`` sees the worker spend it; and **decode**, the same stream's
records decoded alone (the drain's largest pure step).

The baseline is a whole other ``worker`` package (its modules import each other, and a
change may span several): imported from its checkout with this one's ``worker.*`` set
aside in ``sys.modules``, then put back, so each side runs on its own modules only.
Each round times every kind on both sides, in alternating order (A B, then B A); each
figure is the median of BENCH_OUTCOMES_ROUNDS rounds (7), in µs per outcome, timed with
``time.perf_counter_ns`` and the garbage collector off while timing (as ``timeit`` does).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.report import ratio, table
from bench.services import RESULTS, code_version, env_int, machine, write_results
from bench.stream import Generator
from bench.versus import shape_for

SYSTEMS = ("before", "after")
MODULES = ("decode", "decision", "events", "outcomes", "plan")
SOURCE = "https://registry.example.com/webhook"
START = datetime(2026, 1, 1, tzinfo=UTC)
AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
STRUCTURED = (("content-type", b"application/cloudevents+json"),)
KINDS = (
    "200 created",
    "200 updated",
    "200 unchanged",
    "200 deleted",
    "409 superseded",
    "409 superseded deletion",
    "409 id reused",
    "412 precondition failed",
    "404 not found",
    "422 invalid data",
    "400 undecodable",
    "replay, 200 rebuilt",
    "replay, 409 rebuilt",
)


@dataclass(frozen=True)
class Side:
    """One checkout's worker modules (``decode``, ``decision``, ``outcomes``…)."""

    name: str
    modules: dict[str, ModuleType]

    def __getattr__(self, module: str) -> Any:
        return self.modules[module]


def _ours() -> dict[str, ModuleType]:
    """The ``worker`` package's modules now imported."""
    names = [m for m in sys.modules if m == "worker" or m.startswith("worker.")]
    return {m: sys.modules[m] for m in names}


def load_side(name: str, checkout: Path | None, modules: Sequence[str] = MODULES) -> Side:
    """This checkout's ``modules`` (None), or another checkout's, as a package of its own."""
    if checkout is None:
        return Side(name, {m: importlib.import_module(f"worker.{m}") for m in modules})
    if not (checkout / "worker" / "outcomes.py").is_file():
        raise SystemExit(f"BENCH_OUTCOMES_BASELINE: no worker/outcomes.py in {checkout}")
    ours = _ours()
    for module in ours:
        del sys.modules[module]
    sys.path.insert(0, str(checkout))
    try:
        loaded = {m: importlib.import_module(f"worker.{m}") for m in modules}
    finally:
        sys.path.remove(str(checkout))
        for module in _ours():
            del sys.modules[module]
        sys.modules.update(ours)
    return Side(name, loaded)


# ---- the inputs: the same records for both sides, read by each side's own modules


def _event(n: int, kind: str, later: int = 0, **data: Any) -> dict[str, Any]:
    """Event ``kind-n`` moving tag ``t{n}``, ``later`` seconds after the first of it."""
    tag = f"t{n}"
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{kind}-{n}",
        "source": SOURCE,
        "type": "ocitag.moved.v1",
        "time": (START + timedelta(seconds=n + later, microseconds=n % 997)).isoformat(),
        "data": {"repository": "ghcr.io/acme/app", "tag": tag, "actor": "ci-bot"},
    }
    body["data"].update(data)
    return body


def _digest(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def _raw(side: Side, body: dict[str, Any] | bytes, offset: int) -> Any:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return side.events.RawRecord(
        "ocitag.events", 0, offset, 1_700_000_000_000, None, value, STRUCTURED
    )


def _item(side: Side, body: dict[str, Any], offset: int) -> Any:
    record = _raw(side, body, offset)
    return side.plan.Item(record, side.decode.decode(record, 65_536))


def _stored(side: Side, n: int, *, later: bool = False, artifact: int = 1) -> Any:
    """A live row of tag ``t{n}``, created an hour before the events of ``_event`` (and
    moved again a day after them if ``later``)."""
    first = _item(side, _event(n, "first", -3_600, artifact=_digest(artifact)), 0).event
    row = side.decision.decide(None, first).record
    if later:
        newer = _item(side, _event(n, "newer", 86_400, artifact=_digest(2)), 0)
        row = side.decision.decide(row, newer.event).record
    return row


@dataclass
class Work:
    """One kind's batch on one side, and how to build its outcomes."""

    run: Callable[[], object]
    count: int
    statuses: Counter[int]


def _decided(side: Side, ctx: Any, items: list[Any], stored: list[Any]) -> Work:
    o, d = side.outcomes, side.decision
    decisions = {
        i: d.decide(row, it.event)
        for i, (it, row) in enumerate(zip(items, stored, strict=True))
        if not isinstance(it.event, side.events.Invalid)
    }
    new = list(range(len(items)))

    def run() -> list[Any]:
        outcomes = o.batch_outcomes(
            ctx, items, new=new, decisions=decisions, earlier={}, processed_at=AT
        )
        return [o.processed_row(ctx, items[i], decisions.get(i), outcomes[i], AT) for i in new]

    out = o.batch_outcomes(ctx, items, new=new, decisions=decisions, earlier={}, processed_at=AT)
    return Work(run, len(items), Counter(x.status for x in out))


def _repeated(side: Side, ctx: Any, items: list[Any], earlier: dict[Any, Any]) -> Work:
    o = side.outcomes

    def run() -> list[Any]:
        outcomes: list[Any] = o.batch_outcomes(
            ctx, items, new=(), decisions={}, earlier=earlier, processed_at=AT
        )
        return outcomes

    return Work(run, len(items), Counter(x.status for x in run()))


def _first_rows(side: Side, ctx: Any, items: list[Any], stored: list[Any]) -> dict[Any, Any]:
    """The idempotency record of each item processed once (against ``stored``)."""
    rows = {}
    for it, row in zip(items, stored, strict=True):
        decision = side.decision.decide(row, it.event)
        outcome = side.outcomes.decision_outcome(ctx, it, decision, AT - timedelta(hours=1))
        rows[it.key] = side.outcomes.processed_row(
            ctx, it, decision, outcome, AT - timedelta(hours=1)
        )
    return rows


class _Inputs:
    """The items and rows a kind's batch is made of, read by one side's modules."""

    def __init__(self, side: Side, size: int) -> None:
        self.side, self.ns = side, range(size)
        self.fresh: list[Any] = [None] * size

    def items(self, kind: str, **data: Any) -> list[Any]:
        return [self.side_item(_event(n, kind, **data), n) for n in self.ns]

    def side_item(self, body: dict[str, Any], n: int) -> Any:
        return _item(self.side, body, n)

    @cached_property
    def moves(self) -> list[Any]:
        return self.items("m", artifact=_digest(0))

    @cached_property
    def deletions(self) -> list[Any]:
        return [self.side_item({**_event(n, "d"), "type": "ocitag.deleted.v1"}, n) for n in self.ns]

    @cached_property
    def live(self) -> list[Any]:
        return [_stored(self.side, n) for n in self.ns]

    @cached_property
    def newer(self) -> list[Any]:
        return [_stored(self.side, n, later=True) for n in self.ns]

    def undecodable(self, ctx: Any) -> Work:
        side = self.side
        records = [_raw(side, b'{"specversion": "1.0", "id": ' + b"%d" % n, n) for n in self.ns]
        pairs = [(r, side.decode.decode(r, 65_536)) for r in records]

        def run() -> list[Any]:
            return [side.outcomes.undecodable_outcome(ctx, r, e) for r, e in pairs]

        return Work(run, len(records), Counter(x.status for x in run()))


def kind_work(side: Side, ctx: Any, kind: str, size: int) -> Work:
    """The batch of ``size`` items of ``kind`` on ``side``."""
    i = _Inputs(side, size)
    table: dict[str, Callable[[], Work]] = {
        "200 created": lambda: _decided(side, ctx, i.moves, i.fresh),
        "200 updated": lambda: _decided(side, ctx, i.moves, i.live),
        "200 unchanged": lambda: _decided(
            side, ctx, i.moves, [_stored(side, n, artifact=0) for n in i.ns]
        ),
        "200 deleted": lambda: _decided(side, ctx, i.deletions, i.live),
        "409 superseded": lambda: _decided(side, ctx, i.moves, i.newer),
        "409 superseded deletion": lambda: _decided(side, ctx, i.deletions, i.newer),
        "409 id reused": lambda: _repeated(
            side, ctx, i.moves, _first_rows(side, ctx, i.items("m", artifact=_digest(9)), i.fresh)
        ),
        "412 precondition failed": lambda: _decided(
            side, ctx, i.items("p", artifact=_digest(0), expected_version=7), i.live
        ),
        "404 not found": lambda: _decided(side, ctx, i.deletions, i.fresh),
        "422 invalid data": lambda: _decided(side, ctx, i.items("i", artifact="x"), i.fresh),
        "400 undecodable": lambda: i.undecodable(ctx),
        "replay, 200 rebuilt": lambda: _repeated(
            side, ctx, i.moves, _first_rows(side, ctx, i.moves, i.live)
        ),
        "replay, 409 rebuilt": lambda: _repeated(
            side, ctx, i.moves, _first_rows(side, ctx, i.moves, i.newer)
        ),
    }
    return table[kind]()


# ---- the drain mix: decode, decisions and outcomes of the generator's stream


def stream(count: int) -> list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]:
    generator = Generator(shape_for(count), 20261128, "ob")
    return [
        (r.key, r.value, tuple(r.headers))
        for r in generator.many(count, START, timedelta(milliseconds=5))
    ]


def drain_work(side: Side, ctx: Any, records: Sequence[Any], size: int) -> Work:
    """The pure path of a drain in batches of ``size``, as the store runs it (a fresh
    store: each batch sees the rows and records the earlier ones left)."""
    ev, o, p = side.events, side.outcomes, side.plan
    raws = [
        ev.RawRecord("ocitag.events", 0, n, 1_700_000_000_000 + n, k, v, h)
        for n, (k, v, h) in enumerate(records)
    ]

    def run() -> Counter[int]:
        rows: dict[Any, Any] = {}
        earlier: dict[Any, Any] = {}
        statuses: Counter[int] = Counter()
        for start in range(0, len(raws), size):
            items = []
            for record in raws[start : start + size]:
                event = side.decode.decode(record, 65_536)
                if isinstance(event, ev.Undecodable):
                    statuses[o.undecodable_outcome(ctx, record, event).status] += 1
                else:
                    items.append(p.Item(record, event))
            firsts = p.first_occurrences(items)
            new = sorted(i for key, i in firsts.items() if key not in earlier)
            decisions: dict[int, Any] = {}
            for tag, indexes in p.events_by_tag(items, new).items():
                after, decided = p.decide_tag(rows.get(tag), items, indexes)
                decisions.update(zip(indexes, decided, strict=True))
                if after is not None:
                    rows[tag] = after
            outcomes = o.batch_outcomes(
                ctx, items, new=new, decisions=decisions, earlier=earlier, processed_at=AT
            )
            for i in new:
                earlier[items[i].key] = o.processed_row(
                    ctx, items[i], decisions.get(i), outcomes[i], AT
                )
            statuses.update(x.status for x in outcomes)
        return statuses

    return Work(run, len(raws), run())


def decode_work(side: Side, records: Sequence[Any]) -> Work:
    """Decoding alone of the drain's records (each side's ``decode``), per record."""
    raws = [
        side.events.RawRecord("ocitag.events", 0, n, 1_700_000_000_000 + n, k, v, h)
        for n, (k, v, h) in enumerate(records)
    ]
    invalid = (side.events.Invalid, side.events.Undecodable)

    def run() -> Counter[int]:
        decoded = [side.decode.decode(r, 65_536) for r in raws]
        return Counter(400 if isinstance(e, invalid) else 200 for e in decoded)

    return Work(run, len(raws), run())


# ---- timing


def _timed(work: Work) -> float:
    """µs per outcome of one run."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        work.run()
        return (time.perf_counter_ns() - started) / work.count / 1_000
    finally:
        if enabled:
            gc.enable()


def run(baseline: Path, rounds: int, size: int, drain: int) -> dict[str, Any]:
    sides = {"before": load_side("before", baseline), "after": load_side("after", None)}
    works: dict[str, dict[str, Work]] = {}
    records = stream(drain)
    for name, side in sides.items():
        ctx = side.outcomes.OutcomeContext(
            "urn:ocitag-worker:bench", "https://ocitag-worker.dev/problems/"
        )
        works[name] = {kind: kind_work(side, ctx, kind, size) for kind in KINDS}
        works[name]["drain mix"] = drain_work(side, ctx, records, size)
        works[name]["decode"] = decode_work(side, records)
    for kind, work in works["before"].items():
        if work.statuses != works["after"][kind].statuses:
            raise SystemExit(f"{kind}: the two sides answer differently: {work.statuses}")
    timings: dict[str, dict[str, list[float]]] = {n: {k: [] for k in works[n]} for n in SYSTEMS}
    for r in range(rounds):
        for name in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
            for kind, work in works[name].items():
                timings[name][kind].append(_timed(work))
    figures = {}
    for kind in works["after"]:
        before = statistics.median(timings["before"][kind])
        after = statistics.median(timings["after"][kind])
        figures[kind] = {
            "outcomes": works["after"][kind].count,
            "statuses": {str(s): c for s, c in sorted(works["after"][kind].statuses.items())},
            "before_us": round(before, 2),
            "after_us": round(after, 2),
            "ratio": round(after / before, 3),
            "before_rounds_us": [round(v, 2) for v in timings["before"][kind]],
            "after_rounds_us": [round(v, 2) for v in timings["after"][kind]],
        }
    return {
        "benchmark": "outcomes",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"baseline": str(baseline), "rounds": rounds, "batch": size, "drain": drain},
        "machine": machine(),
        "code": code_version(),
        "figures": figures,
    }


def render(results: dict[str, Any]) -> str:
    rows = [
        [kind, f["before_us"], f["after_us"], ratio(f["after_us"], f["before_us"])]
        for kind, f in results["figures"].items()
    ]
    config = results["config"]
    return (
        table(["µs per outcome (median of rounds)", "before", "after", "after / before"], rows)
        + f"\nbefore: worker/ of {config['baseline']}; batches of {config['batch']},"
        f" {config['rounds']} rounds; drain mix: {config['drain']:,} events of the generator"
        f" (decode, decisions and outcomes, per event); load average at start"
        f" {results['machine']['load_average_1m_at_start']}"
    )


def main() -> None:
    raw = os.environ.get("BENCH_OUTCOMES_BASELINE")
    if not raw:
        raise SystemExit("BENCH_OUTCOMES_BASELINE: set it to another checkout of the worker")
    results = run(
        Path(raw),
        env_int("BENCH_OUTCOMES_ROUNDS", 7),
        env_int("BENCH_OUTCOMES_BATCH", 1_000),
        env_int("BENCH_OUTCOMES_DRAIN", 20_000),
    )
    path = write_results("outcomes", results, Path(os.environ.get("BENCH_RESULTS", str(RESULTS))))
    print(render(results))
    print(f"\nresults: {path} (and outcomes-latest.json)")


if __name__ == "__main__":
    main()
