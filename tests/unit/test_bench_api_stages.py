"""bench-api's stages (bench/api_stages.py): each PUT's times inside the api joined
with the client's and Kafka's by its artifact, and the collector pauses of a window."""

from __future__ import annotations

from typing import Any

from bench.api_stages import collections, segments

T = 1_800_000_000.0  # Unix seconds


def _stages(artifact: str, at: float, late_ms: dict[str, float]) -> dict[str, Any]:
    """A write's stages, each ``late_ms`` after ``at`` (Unix seconds)."""
    return {"artifact": artifact, **{k: at + v / 1000 for k, v in late_ms.items()}}


NAMES = ("in", "write", "acked", "delivered", "resumed", "out")


def test_each_put_is_split_into_its_stages() -> None:
    stages = [
        _stages("a1", T, dict(zip(NAMES, (1, 1.5, 5, 20, 21, 22), strict=True))),
        # the outcome overtook the acknowledgement: the wake-up counts from the later one
        _stages("a2", T, dict(zip(NAMES, (2, 2.5, 30, 25, 31, 31.5), strict=True))),
        _stages("a3", T, {"in": 1, "write": 2}),  # no outcome (202): left out
    ]
    puts = [("a1", 0.025, T), ("a2", 0.033, T), ("a3", 0.5, T), ("a4", 0.01, T)]
    created = {"a1": int(T * 1000) + 3, "a2": int(T * 1000) + 4}
    answered = {"a1": int(T * 1000) + 15, "a2": int(T * 1000) + 20}
    found = segments(stages, puts, created, answered)
    assert {s["puts"] for s in found.values()} == {2}
    assert found["http in: sent → middlewares"]["max_ms"] == 2
    assert found["way back: outcome created → delivered"]["p50_ms"] == 5
    assert found["wake-up: max(delivered, acked) → resumed"]["max_ms"] == 1
    assert found["http out: middlewares done → read"]["max_ms"] == 3
    # round trip minus (outcome created - event created): 25 - 12 and 33 - 16
    assert found["api added (round trip - worker)"]["max_ms"] == 17
    assert found["api added (round trip - worker)"]["p50_ms"] == 13


def test_collector_pauses_are_summed_per_generation_within_the_window() -> None:
    written = [
        {"gc": 0, "at": T + 1, "ms": 0.2},
        {"gc": 0, "at": T + 2, "ms": 0.5},
        {"gc": 2, "at": T + 3, "ms": 48.0},
        {"gc": 2, "at": T + 60, "ms": 51.0},  # after the window
        _stages("a1", T, {"in": 1}),
    ]
    assert collections(written, T, T + 10) == {
        "gen0": {"count": 2, "sum_ms": 0.7, "max_ms": 0.5},
        "gen2": {"count": 1, "sum_ms": 48.0, "max_ms": 48.0},
    }
