"""The API benchmark (``make bench-api``): PUT round trips through the whole event path
(HTTP → Kafka → worker → PostgreSQL → outcome → HTTP) against the local stack, beside the
worker's own event latency measured in the same run.

One worker (``python -m worker run``) and one API (``python -m worker api``) as
processes on a fresh database and fresh topics, then:

- closed loop: BENCH_API_CLIENTS (50) concurrent clients, each PUTting as fast as its
  answers come, BENCH_API_REQUESTS (3000) in all: round trips per second, p50/p99;
- open loop: PUTs started at BENCH_API_RATE (200) per second for BENCH_API_SECONDS (15),
  at most BENCH_API_CLIENTS in flight: latency at that load (goal: p99 < 100 ms), and
  each PUT's round trip split between the worker and the API (bench/api_split.py: the
  API's added time, p50/p99 of the per-PUT values; goal of issue "Close to the floor":
  p99 ≤ 20 ms at 200 PUT/s).

Each PUT moves one of BENCH_API_TAGS (1000) tags to a new digest (no preconditions). The
worker's own latency (``ocitag_event_processing_seconds``: fetched to outcome
acknowledged) and the API's wait for outcomes
(``ocitag_api_outcome_wait_seconds``) come from their /metrics histograms, the change
over each phase (percentiles interpolated within buckets). CPU per process in cores.
Results: a table on stdout, JSON in bench/results/api-*.json (BENCH_RESULTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import api_stages
from bench.api_split import Split
from bench.grants import check_seconds, grants_document
from bench.report import percentile, table
from bench.runner import Topics, WorkerProcess
from bench.services import (
    REPO,
    RESULTS,
    Services,
    code_version,
    cpu_snapshot,
    cpu_usage,
    create_database,
    create_topics,
    delete_topics,
    discover,
    drop_databases,
    env_flag,
    env_float,
    env_int,
    free_port,
    machine,
    service_pids,
    unique,
    vm_kib,
    write_results,
)

TOKEN = "bench-token-0123456789abcdef"
Histogram = dict[float, float]  # upper bound → cumulative count


def histogram(text: str, name: str) -> Histogram:
    """The ``<name>_bucket`` series of a /metrics text (label sets summed)."""
    found: Histogram = {}
    for line in text.splitlines():
        if not line.startswith(name + "_bucket{"):
            continue
        labels, _, value = line.rpartition(" ")
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        upper = float("inf") if bound == "+Inf" else float(bound)
        found[upper] = found.get(upper, 0.0) + float(value)
    return found


def quantile(before: Histogram, after: Histogram, q: float) -> float | None:
    """Like PromQL's histogram_quantile over the change between two scrapes (seconds)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


class ApiProcess:
    """``python -m worker api`` on the run's topics and database."""

    def __init__(
        self,
        worker: WorkerProcess,
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        grants: bool = True,
        stages_to: Path | None = None,
        checkout: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.probe_port = free_port()
        self._env = {
            **worker.env(),
            "OCITAG_API_HOST": "127.0.0.1",
            "OCITAG_API_PORT": str(self.port),
            "OCITAG_HTTP_PORT": str(self.probe_port),
            "OCITAG_API_TOKENS": f"bench:{TOKEN}",
            # the doors on, as in production: twenty callers' grants, and a rate limit
            # high enough never to refuse (its bucket is still taken on every request)
            "OCITAG_API_GRANTS": grants_document(),
            "OCITAG_API_RATE_LIMIT": "1000000/1",
            **(extra_env or {}),
        }
        if not grants:  # every caller may read everything: the watch's joined-once fan-out
            del self._env["OCITAG_API_GRANTS"]
        #: stages of every write noted (bench/api_stages.py) and written there at exit
        self.stages_to = stages_to
        if stages_to is not None:
            self._env["BENCH_API_STAGES_TO"] = str(stages_to)
        #: the checkout whose ``worker`` package runs (``python -m`` imports from its
        #: working directory first); None: this one
        self.checkout = checkout
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # the stages: this checkout's bench/api_stages.py run by its path, on the ``worker``
        # of the checkout measured (the working directory is first on sys.path)
        script = str(REPO / "bench" / "api_stages.py")
        stages = f"import runpy; runpy.run_path({script!r}, run_name='__main__')"
        command = ["-c", stages] if self.stages_to is not None else ["-m", "worker", "api"]
        with self._log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *command],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.checkout or REPO,
            )

    async def wait_ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(self._log_path.read_text(errors="replace")[-3000:])
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    url = f"http://127.0.0.1:{self.probe_port}/readyz"
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError("the API was not ready in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def digest(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


#: every PUT of a run names an artifact of its own, whatever its phase (a PUT is told
#: apart by it: the split's Kafka records, the api's stages)
_ARTIFACTS = itertools.count(1)


class Load:
    def __init__(self, base: str, tags: int) -> None:
        self._base = base
        self._tags = tags
        self._n = 0
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        #: (artifact, round trip in seconds, sent at in Unix seconds) of each PUT answered 200
        self.puts: list[tuple[str, float, float]] = []

    async def put(self, session: aiohttp.ClientSession) -> None:
        self._n += 1
        n = self._n
        url = f"{self._base}/ocitags/bench.example.com%2Fteam%2Fapp:t{n % self._tags}/"
        artifact = digest(next(_ARTIFACTS))
        sent_at = time.time()  # the clock Kafka's CreateTime is read from (the split)
        started = time.perf_counter()
        async with session.put(url, json={"artifact": artifact}) as response:
            await response.read()
        self.latencies.append(time.perf_counter() - started)
        self.statuses[response.status] += 1
        if response.status == 200:
            self.puts.append((artifact, self.latencies[-1], sent_at))

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered),
            "seconds": round(seconds, 3),
            "puts_per_second": round(len(ordered) / seconds, 1) if seconds else None,
            "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p90_ms": round(percentile(ordered, 90) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def closed_loop(
    session: aiohttp.ClientSession, base: str, clients: int, total: int, tags: int
) -> dict[str, Any]:
    load = Load(base, tags)
    remaining = total

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await load.put(session)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return load.summary(time.perf_counter() - started)


async def open_loop(
    session: aiohttp.ClientSession,
    base: str,
    clients: int,
    tags: int,
    *,
    rate: float,
    seconds: float,
    split: Split | None = None,
    load: Load | None = None,
) -> dict[str, Any]:
    """``load``: where the PUTs are kept (a new one if None)."""
    load = load or Load(base, tags)
    if split is not None:
        await split.start()
    slots = asyncio.Semaphore(clients)
    skipped = 0
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        try:
            await load.put(session)
        finally:
            slots.release()

    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots.locked():
            skipped += 1  # all clients busy: the offered rate is not reached
            continue
        await slots.acquire()
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    result = load.summary(time.perf_counter() - started)
    result["offered_per_second"] = rate
    result["not_sent_all_clients_busy"] = skipped
    if split is not None:
        await split.stop([artifact for artifact, _, _ in load.puts])
        result.update(split.summary(load.puts))
    return result


async def scrape(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        return await response.text()


@dataclass
class Processes:
    worker: WorkerProcess
    api: ApiProcess
    pids: Mapping[str, int]  # single processes: worker, api, bench
    trees: Mapping[str, int]  # process trees: the broker, the postmaster


async def phase(
    name: str, work: Any, session: aiohttp.ClientSession, procs: Processes
) -> dict[str, Any]:
    print(f"[bench-api] {name} …", file=sys.stderr)
    worker, api = procs.worker, procs.api
    w0, a0 = await scrape(session, worker.port), await scrape(session, api.probe_port)
    cpu0 = cpu_snapshot(procs.pids, procs.trees)
    result: dict[str, Any] = await work
    cpu1 = cpu_snapshot(procs.pids, procs.trees)
    w1, a1 = await scrape(session, worker.port), await scrape(session, api.probe_port)
    event = ("ocitag_event_processing_seconds", w0, w1)
    wait = ("ocitag_api_outcome_wait_seconds", a0, a1)
    for label, (metric, before, after) in {"worker_event": event, "api_outcome_wait": wait}.items():
        b, a = histogram(before, metric), histogram(after, metric)
        for q in (50, 99):
            value = quantile(b, a, q / 100)
            result[f"{label}_p{q}_ms"] = None if value is None else round(value * 1000, 2)
    result["cpu_cores"] = cpu_usage(cpu0, cpu1)
    # peak RSS so far (VmHWM) of the worker and the api: the Helm chart's memory requests
    peaks = {name: vm_kib(pid, "VmHWM") for name, pid in procs.pids.items() if name != "bench"}
    result["peak_rss_mib"] = {k: round(v / 1024, 1) for k, v in peaks.items() if v is not None}
    return result


def api_processes(worker: WorkerProcess, logs: Path) -> tuple[ApiProcess, ApiProcess | None]:
    """This checkout's api, and the baseline's (BENCH_API_BASELINE) if asked for; each
    noting its stages (BENCH_API_STAGES=1) in a file of its own under ``logs``."""
    stages = env_flag("BENCH_API_STAGES")
    checkout = os.environ.get("BENCH_API_BASELINE")
    found: list[ApiProcess] = []
    for side, where in (("api", None), ("baseline", checkout)):
        if side == "baseline" and not checkout:
            continue
        stages_to = logs / f"api-{side}-stages.jsonl" if stages else None
        if stages_to is not None:
            stages_to.unlink(missing_ok=True)
        # BENCH_API_ENV (JSON): settings of this side's api alone (a what-if against the
        # baseline, e.g. '{"OCITAG_GC_TUNING": "false"}')
        extra = json.loads(os.environ.get("BENCH_API_ENV") or "{}") if side == "api" else {}
        found.append(
            ApiProcess(
                worker,
                logs / f"api-{side}.log",
                extra,
                stages_to=stages_to,
                checkout=Path(where) if where else None,
            )
        )
    return found[0], found[1] if len(found) > 1 else None


async def run(services: Services) -> dict[str, Any]:
    clients = env_int("BENCH_API_CLIENTS", 50)
    total = env_int("BENCH_API_REQUESTS", 3000)
    tags = env_int("BENCH_API_TAGS", 1000)
    rate = env_float("BENCH_API_RATE", 200.0)
    seconds = env_float("BENCH_API_SECONDS", 15.0)
    name = unique("bench_api")
    topics = Topics(f"{name}.events", f"{name}.outcomes", f"{name}.dlq")
    database_url = await create_database(services.database_url, name)
    # BENCH_API_APPEND_TIME=1: each record's timestamp is the broker's append time, not its
    # producer's creation time: the split then leaves out both producers' queues (the
    # api's before its event is appended counts as the api's, the worker's before its
    # outcome is appended as the worker's), a diagnosis (the goal's figure is CreateTime's)
    append_time = env_flag("BENCH_API_APPEND_TIME")
    configs = {"message.timestamp.type": "LogAppendTime"} if append_time else None
    await create_topics(services.kafka, [topics.input, topics.outcomes, topics.dlq], 6, configs)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(
        services.kafka, database_url, topics, f"{name}-group", "warning", logs / "api-worker.log"
    )
    api, baseline = api_processes(worker, logs)
    stages_to = api.stages_to
    load = Load(f"http://127.0.0.1:{api.port}", tags)
    lag = api_stages.LoopLag()
    split: Split | None = None
    ab: dict[str, Any] | None = None
    try:
        worker.start()
        await worker.wait_assigned(6, within=90)
        for each in (api, baseline):
            if each is not None:
                each.start()
                await each.wait_ready()
        base = f"http://127.0.0.1:{api.port}"
        connector = aiohttp.TCPConnector(limit=clients * 2)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            await closed_loop(session, base, clients, 300, tags)  # warm-up, not reported
            if baseline is not None:
                other = f"http://127.0.0.1:{baseline.port}"
                await closed_loop(session, other, clients, 300, tags)
            assert api.proc is not None
            pids = {"worker": worker.pid, "api": api.proc.pid, "bench": os.getpid()}
            procs = Processes(worker, api, pids, service_pids(services))
            closed = await phase(
                "closed loop", closed_loop(session, base, clients, total, tags), session, procs
            )
            split = Split(services.kafka, topics.input, topics.outcomes, 6)
            if stages_to is not None:
                lag.start()
            opened = await phase(
                "open loop",
                open_loop(
                    session, base, clients, tags, rate=rate, seconds=seconds, split=split, load=load
                ),
                session,
                procs,
            )
            lag.stop()
            if baseline is not None:
                sides = {"this": api, "baseline": baseline}
                ab = await versus(
                    session, sides, services.kafka, topics, clients=clients, tags=tags
                )
    finally:
        if baseline is not None:
            baseline.stop()
        api.stop()
        worker.stop()
        await delete_topics(services.kafka, [topics.input, topics.outcomes, topics.dlq])
        await drop_databases(services.database_url, [name])
    doors = doors_share(closed, check_seconds())
    if ab is not None:  # the stages of each round, once the apis wrote them (at exit)
        ab.update(versus_stages(ab.pop("splits"), {"this": api, "baseline": baseline}))
    if stages_to is not None and split is not None:  # read once the api wrote them (at exit)
        stages = api_stages.read(stages_to)
        opened["stages"] = api_stages.segments(stages, load.puts, split.created, split.answered)
        sent = [sent_at for _, _, sent_at in load.puts]
        opened["api_gc"] = api_stages.collections(stages, min(sent), max(sent) + 1)
        opened["bench_loop_lag"] = lag.summary()
    return {
        "benchmark": "api",
        "doors": doors,
        "config": {
            "clients": clients,
            "requests": total,
            "tags": tags,
            "rate": rate,
            "seconds": seconds,
            "timestamps": "LogAppendTime" if append_time else "CreateTime",
        },
        "closed_loop": closed,
        "open_loop": opened,
        "versus_baseline": ab,
        "goal": {
            "p99_ms_below": 100,
            "at_puts_per_second": 200,
            "met": opened["p99_ms"] < 100 and opened["puts_per_second"] >= 0.95 * rate,
        },
        # issue "Close to the floor": what the API adds to the worker's time, per PUT
        "added_goal": {
            "api_added_p99_ms_at_most": 20,
            "at_puts_per_second": 200,
            "met": (opened.get("api_added_p99_ms") or float("inf")) <= 20
            and opened["puts_per_second"] >= 0.95 * rate,
        },
        "code": code_version(),
        "machine": machine(),
        "services": services.origin,
    }


async def versus(
    session: aiohttp.ClientSession,
    sides: Mapping[str, ApiProcess],
    kafka: str,
    topics: Topics,
    *,
    clients: int,
    tags: int,
) -> dict[str, Any]:
    """This api against another checkout's (BENCH_API_BASELINE), beside the same worker:
    BENCH_API_AB_ROUNDS (3) rounds of one open loop on each, the order swapped each round
    (the machine's drift falls on both); the medians of each side's figures, and this
    side's over the baseline's."""
    rounds = env_int("BENCH_API_AB_ROUNDS", 3)
    rate = env_float("BENCH_API_RATE", 200.0)
    seconds = env_float("BENCH_API_SECONDS", 15.0)
    names = list(sides)
    runs: list[dict[str, Any]] = []
    splits: list[tuple[str, Load, Split]] = []
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            print(f"[bench-api] versus: round {number + 1}, {name} …", file=sys.stderr)
            split = Split(kafka, topics.input, topics.outcomes, 6)
            base = f"http://127.0.0.1:{sides[name].port}"
            load = Load(base, tags)
            found = await open_loop(
                session, base, clients, tags, rate=rate, seconds=seconds, split=split, load=load
            )
            splits.append((name, load, split))
            runs.append({"side": name, "round": number + 1, **{k: found.get(k) for k in AB_KEYS}})
    medians = {
        name: {
            key: statistics.median(r[key] for r in runs if r["side"] == name and r[key] is not None)
            for key in AB_KEYS
        }
        for name in names
    }
    ratios = {
        key: round(medians["this"][key] / medians["baseline"][key], 3)
        for key in AB_KEYS
        if medians["baseline"][key]
    }
    return {"rounds": runs, "medians": medians, "this_over_baseline": ratios, "splits": splits}


def versus_stages(
    splits: list[tuple[str, Load, Split]], sides: Mapping[str, ApiProcess | None]
) -> dict[str, Any]:
    """With BENCH_API_STAGES=1: per side, the median over its rounds of each stage's p50
    and p99 (bench/api_stages.py), and this side's over the baseline's."""
    written = {
        name: api_stages.read(api.stages_to)
        for name, api in sides.items()
        if api is not None and api.stages_to is not None
    }
    if not written:
        return {}
    per_side: dict[str, list[dict[str, dict[str, float | int]]]] = {}
    pauses: dict[str, list[dict[str, Any]]] = {}
    for name, load, split in splits:
        found = api_stages.segments(written[name], load.puts, split.created, split.answered)
        per_side.setdefault(name, []).append(found)
        sent = [sent_at for _, _, sent_at in load.puts]
        if sent:
            window = (min(sent), max(sent) + 1)
            pauses.setdefault(name, []).append(api_stages.collections(written[name], *window))
    medians = {
        name: {
            stage: {
                q: statistics.median(r[stage][q] for r in rounds if stage in r)
                for q in ("p50_ms", "p99_ms")
            }
            for stage in rounds[0]
        }
        for name, rounds in per_side.items()
    }
    return {"stage_medians": medians, "collector_pauses_per_round": pauses}


AB_KEYS = (
    "puts_per_second",
    "p50_ms",
    "p99_ms",
    "worker_split_p99_ms",
    "api_added_p50_ms",
    "api_added_p99_ms",
    "api_in_p99_ms",
    "api_out_p99_ms",
)


def doors_share(closed: dict[str, Any], check: dict[str, float]) -> dict[str, Any]:
    """The grant check's (and the rate limit's) CPU against one PUT's CPU in the api
    process, measured in the closed loop (api cores x seconds / PUTs)."""
    api_cores = closed["cpu_cores"].get("api", 0.0)
    per_put = api_cores * closed["seconds"] / closed["requests"] if closed["requests"] else 0
    share = {
        "api_cpu_per_put_us": round(per_put * 1e6, 1),
        "grant_check_us": round(check["grant_check_s"] * 1e6, 3),
        "rate_limit_us": round(check["rate_limit_s"] * 1e6, 3),
    }
    for key, seconds in (
        ("grant_check", check["grant_check_s"]),
        ("rate_limit", check["rate_limit_s"]),
    ):
        share[f"{key}_share_pct"] = round(100 * seconds / per_put, 3) if per_put else None
    share["goal_grant_check_below_pct"] = 5
    share["met"] = share["grant_check_share_pct"] is not None and share["grant_check_share_pct"] < 5
    return share


def render(results: dict[str, Any]) -> str:
    rows = []
    for label, key in (("closed loop", "closed_loop"), ("open loop", "open_loop")):
        r = results[key]
        rows.append(
            [
                label,
                r["requests"],
                r["puts_per_second"],
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
                r["worker_event_p50_ms"],
                r["worker_event_p99_ms"],
                r["api_outcome_wait_p99_ms"],
                ", ".join(f"{k}: {v}" for k, v in r["statuses"].items()),
            ]
        )
    headers = [
        "run",
        "PUTs",
        "PUT/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "worker p50 ms",
        "worker p99 ms",
        "outcome wait p99 ms",
        "statuses",
    ]
    goal = results["goal"]
    verdict = "met" if goal["met"] else "NOT met"
    opened = results["open_loop"]
    added = results["added_goal"]
    return (
        table(headers, rows)
        + f"\n\ngoal p99 < {goal['p99_ms_below']} ms at {goal['at_puts_per_second']} PUT/s: "
        + verdict
        + "\nopen loop, each PUT split (bench/api_split.py, Kafka timestamps: "
        + f"{results['config'].get('timestamps', 'CreateTime')}; "
        + f"{opened.get('split_matched')} of {opened.get('split_puts')} PUTs matched): "
        + f"worker p50 / p99 {opened.get('worker_split_p50_ms')} / "
        + f"{opened.get('worker_split_p99_ms')} ms, API added p50 / p99 / max "
        + f"{opened.get('api_added_p50_ms')} / {opened.get('api_added_p99_ms')} / "
        + f"{opened.get('api_added_max_ms')} ms (before the event p50 / p99 "
        + f"{opened.get('api_in_p50_ms')} / {opened.get('api_in_p99_ms')} ms, after the "
        + f"outcome {opened.get('api_out_p50_ms')} / {opened.get('api_out_p99_ms')} ms); "
        + "goal API added p99 ≤ "
        + f"{added['api_added_p99_ms_at_most']} ms at {added['at_puts_per_second']} PUT/s: "
        + ("met" if added["met"] else "NOT met")
        + f"\nCPU (cores) closed loop: {results['closed_loop']['cpu_cores']}"
        + f"\nCPU (cores) open loop: {results['open_loop']['cpu_cores']}"
        + f"\npeak RSS MiB (VmHWM) after the open loop: {results['open_loop']['peak_rss_mib']}"
        + "\n\n"
        + render_doors(results["doors"])
        + render_stages(opened.get("stages"))
        + (
            f"\napi collector pauses in the open loop: {opened['api_gc']}"
            f"\nthe benchmark's own event loop, late by: {opened['bench_loop_lag']}"
            if "api_gc" in opened
            else ""
        )
        + render_versus(results.get("versus_baseline"))
    )


def render_versus(ab: dict[str, Any] | None) -> str:
    """Each round of this api against the baseline's, and the medians (or nothing)."""
    if not ab:
        return ""
    headers = ["side", "round", *AB_KEYS]
    rows = [[r["side"], r["round"], *(r[k] for k in AB_KEYS)] for r in ab["rounds"]]
    medians = ab["medians"].items()
    rows += [[f"{side} (median)", "", *(m[k] for k in AB_KEYS)] for side, m in medians]
    rows.append(["this / baseline", "", *(ab["this_over_baseline"].get(k) for k in AB_KEYS)])
    text = "\n\n" + table(headers, rows)
    stages = ab.get("stage_medians")
    if stages and {"this", "baseline"} <= stages.keys():
        this, other = stages["this"], stages["baseline"]
        stage_rows = [
            [name, other[name]["p50_ms"], this[name]["p50_ms"],
             other[name]["p99_ms"], this[name]["p99_ms"]]
            for name in this
            if name in other
        ]  # fmt: skip
        head = ["stage (median of rounds)", "baseline p50", "this p50", "baseline p99", "this p99"]
        text += "\n\n" + table(head, stage_rows)
    for side, rounds in (ab.get("collector_pauses_per_round") or {}).items():
        text += f"\n{side}: collector pauses per round {rounds}"
    return text


def render_stages(stages: dict[str, dict[str, float]] | None) -> str:
    """The open loop's PUTs split into stages (BENCH_API_STAGES=1), or nothing."""
    if not stages:
        return ""
    rows = [
        [name, s["puts"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]]
        for name, s in stages.items()
    ]
    headers = ["open loop, per PUT", "PUTs", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    return "\n\n" + table(headers, rows)


def render_doors(doors: dict[str, Any]) -> str:
    rows = [
        ["api CPU per PUT", doors["api_cpu_per_put_us"], 100.0],
        ["grant check", doors["grant_check_us"], doors["grant_check_share_pct"]],
        ["rate-limit bucket", doors["rate_limit_us"], doors["rate_limit_share_pct"]],
    ]
    verdict = "met" if doors["met"] else "NOT met"
    return (
        table(["per PUT", "CPU µs", "% of a PUT's api CPU"], rows)
        + f"\ngoal grant check < {doors['goal_grant_check_below_pct']} % of a PUT's CPU: {verdict}"
    )


def main() -> None:
    results = asyncio.run(run(discover()))
    print(render(results))
    directory = Path(os.environ.get("BENCH_RESULTS", RESULTS))
    print(f"\nresults: {write_results('api', results, directory)}")


if __name__ == "__main__":
    main()
