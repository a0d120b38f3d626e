"""The pipeline benchmark's PNG: throughput over time while draining the backlog,
the worker's resident memory meanwhile, and the end-to-end latency distribution."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

COLOURS = {"worker_warning": "tab:blue", "worker_info": "tab:orange", "worker_profiled": "tab:gray"}


def _rates(series: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Committed offsets sampled every 0.5 s → events/s per interval (at its middle)."""
    times, rates = [], []
    for (t0, c0, *_), (t1, c1, *_) in itertools.pairwise(series):
        if t1 > t0:
            times.append((t0 + t1) / 2)
            rates.append((c1 - c0) / (t1 - t0))
    return times, rates


def _smooth(values: Sequence[float], width: int) -> list[float]:
    """Centred moving average over ``width`` samples (shorter at the ends)."""
    half = width // 2
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half) : i + half + 1]
        out.append(sum(window) / len(window))
    return out


def draw(results: Mapping[str, Any], path: Path) -> None:
    runs: Mapping[str, Any] = results["runs"]
    latency: Mapping[str, Any] | None = results.get("latency")
    fig, ((ax_rate, ax_rss), (ax_lat, ax_time)) = plt.subplots(2, 2, figsize=(16, 10))
    for name, run in runs.items():
        series = run.get("series")
        if not series:
            continue
        colour = COLOURS.get(name)
        times, rates = _rates(series)
        ax_rate.plot(times, rates, color=colour, linewidth=0.6, alpha=0.35)
        ax_rate.plot(times, _smooth(rates, 10), label=run["label"], color=colour, linewidth=1.6)
        ax_rate.axhline(run["events_per_second"], color=colour, linestyle="--", linewidth=0.8)
        rss = [(s[0], s[2] / 1024) for s in series if len(s) > 2 and s[2]]
        if rss:
            ax_rss.plot(*zip(*rss, strict=True), label=run["label"], color=colour)
    limits = results.get("summary", {}).get("reference_lines", {})
    for label, value in limits.items():
        ax_rate.axhline(value, color="black", linestyle=":", linewidth=0.8)
        ax_rate.annotate(
            f"{label}: {value:,.0f}/s", (0.01, value), xytext=(0, 2),
            textcoords="offset points", xycoords=ax_rate.get_yaxis_transform(), fontsize=8,
        )  # fmt: skip
    ax_rate.set_title(
        "Draining the backlog: committed events/s\n(0.5 s samples faint, 5 s average bold, "
        "dashed = mean)"
    )
    ax_rate.set_xlabel("seconds since first fetch")
    ax_rate.set_ylabel("events/s")
    ax_rate.set_ylim(bottom=0)
    ax_rate.grid(alpha=0.3)
    ax_rate.legend(loc="lower right", fontsize=8)
    ax_rss.set_title("Worker resident memory (VmRSS) while draining")
    ax_rss.set_xlabel("seconds since first fetch")
    ax_rss.set_ylabel("MiB")
    ax_rss.set_ylim(bottom=0)
    ax_rss.grid(alpha=0.3)
    ax_rss.legend(loc="lower right", fontsize=8)
    if latency and latency.get("cdf_ms"):
        cdf = latency["cdf_ms"]
        ax_lat.plot([p[1] for p in cdf], [p[0] for p in cdf], color="tab:blue")
        for q in ("p50", "p95", "p99"):
            value = latency[f"{q}_ms"]
            ax_lat.axvline(value, color="gray", linestyle=":", linewidth=0.8)
            ax_lat.annotate(
                f"{q} {value:.0f} ms", (value, float(q[1:])), xytext=(3, -12),
                textcoords="offset points", fontsize=8,
            )  # fmt: skip
        ax_lat.set_xscale("log")
        ax_lat.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_lat.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax_lat.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax_lat.set_title(
            f"Latency at {latency['offered_rate']:,.0f} events/s offered for "
            f"{latency['seconds']:g} s: created → outcome received"
        )
        ax_lat.set_xlabel("ms (log scale)")
        ax_lat.set_ylabel("percentile")
        ax_lat.set_ylim(0, 100)
        ax_lat.grid(alpha=0.3, which="both")
    else:
        ax_lat.set_axis_off()
    if latency and latency.get("timeline"):
        timeline = latency["timeline"]
        seconds = [row[0] + 0.5 for row in timeline]
        for column, label, style in ((2, "p50", "-"), (3, "p99", "--"), (4, "max", ":")):
            ax_time.plot(seconds, [row[column] for row in timeline], style, label=label)
        ax_time.set_yscale("log")
        ax_time.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_time.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax_time.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax_time.set_title("Latency by the second the events were sent in")
        ax_time.set_xlabel("seconds into the latency phase")
        ax_time.set_ylabel("ms (log scale)")
        ax_time.grid(alpha=0.3, which="both")
        ax_time.legend(loc="upper left", fontsize=8)
    else:
        ax_time.set_axis_off()
    fig.suptitle(results.get("title", "ocitag-worker pipeline benchmark"), fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pace_panel(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Each drain's pace, and its pace early and late in the drain (one drain's windows
    compare without the run-to-run noise of the host)."""
    sizes = [r["size"] for r in rows]
    ax.plot(sizes, [r["events_per_second"] for r in rows], "o-", label="whole drain")
    for key, style, label in (
        ("early_events_per_second", "^:", "at 5-25 % of the history"),
        ("late_events_per_second", "s--", "at 75-95 % of the history"),
    ):
        points = [(r["size"], r[key]) for r in rows if r.get(key)]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label)
    ax.set_title("Pace against history (same workload shape)")
    ax.set_ylabel("events/s")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def draw_history(history: Mapping[str, Any], path: Path) -> None:
    """Pace, database bytes per event and latency against history size (bench.history)."""
    entries: Sequence[Mapping[str, Any]] = history["sizes"]
    rows: Sequence[Mapping[str, Any]] = history["summary"]["table"]
    sizes = [r["size"] for r in rows]
    fig, ((ax_pace, ax_bytes), (ax_lat, ax_stage)) = plt.subplots(2, 2, figsize=(14, 9))
    _pace_panel(ax_pace, rows)
    names = sorted({n for e in entries for n in e["database"]["tables"]})
    bottom = [0.0] * len(entries)
    for name in names:
        values = [
            e["database"]["tables"].get(name, {}).get("total", 0) / e["size"] for e in entries
        ]
        ax_bytes.bar([str(s) for s in sizes], values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax_bytes.axhline(400, color="black", linestyle=":", linewidth=0.8)
    ax_bytes.set_title("Database bytes per processed event (tables + indexes; goal ≤ 400)")
    ax_bytes.set_xlabel("history events")
    ax_bytes.set_ylabel("bytes / event")
    ax_bytes.legend(fontsize=8)
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s--"), ("max_ms", "^:")):
        points = [(r["size"], r[key]) for r in rows if r[key] is not None]
        if points:
            ax_lat.plot(*zip(*points, strict=True), style, label=key.removesuffix("_ms"))
    ax_lat.set_title("Latency at the steady offered rate, against history")
    ax_lat.set_ylabel("ms")
    ax_lat.set_yscale("log")
    if ax_lat.get_legend_handles_labels()[0]:
        ax_lat.legend(fontsize=8)
    for stage in ("fetch", "decode", "apply", "produce", "commit"):
        points = [
            (e["size"], e["latency"]["stages"][stage]["mean_ms"])
            for e in entries
            if (e.get("latency") or {}).get("stages", {}).get(stage, {}).get("mean_ms")
        ]
        if points:
            ax_stage.plot(*zip(*points, strict=True), "o-", label=stage)
    ax_stage.set_title("Mean batch time per stage at the steady rate")
    ax_stage.set_ylabel("ms")
    ax_stage.set_yscale("log")
    if ax_stage.get_legend_handles_labels()[0]:
        ax_stage.legend(fontsize=8)
    for ax in (ax_pace, ax_lat, ax_stage):
        ax.set_xscale("log")
        ax.set_xlabel("history events")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"ocitag-worker: cost against history, {history.get('started_at', '')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
