"""bench/store_ab.py's pure parts: the batches it applies and its table (its run needs
PostgreSQL and another checkout: ``make bench-store-ab``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import store_ab
from worker.events import TagMoved
from worker.migrate import available


def test_a_batch_has_new_tags_and_moves_of_an_earlier_batchs() -> None:
    items = store_ab.batch(7, "x", 8)
    events = [i.event for i in items]
    assert all(isinstance(e, TagMoved) for e in events)
    tags = [e.tag for e in events if isinstance(e, TagMoved)]
    assert tags[:6] == [f"x7-{i}" for i in range(6)] and tags[6:] == ["x3-0", "x3-1"]
    assert len({i.key for i in items}) == 8  # every event new
    assert [i.record.offset for i in items] == list(range(56, 64))


def _side(p50: float, statements: dict[str, float], server: int) -> dict[str, Any]:
    return {
        "batches": 10,
        "wall_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50},
        "cpu_us_per_batch": 1_000,
        "server_cpu_us_per_batch": server,
        "server_cpu_us_per_batch_in": {"lookup": server // 4, "write": server // 2},
        "statements_per_batch": len(statements) + 1,
        "statement_ms_per_batch": statements,
    }


def test_the_table_pairs_the_two_stores_and_their_statements() -> None:
    results = {
        "config": {
            "baseline": "/work/main",
            "rounds": 1,
            "block": 5,
            "batch": 8,
            "partitions": 2,
            "schemas": {"before": 9, "after": 10},
        },
        "machine": {"load_average_1m_at_start": 1.0},
        "systems": {
            "before": _side(10.0, {"SELECT epoch FROM": 0.5, "COMMIT;": 2.0}, 3_000),
            "after": _side(8.0, {"COMMIT;": 2.0}, 1_800),
        },
    }
    shown = store_ab.render(results)
    cells = {
        row[0]: row[1:]
        for row in (
            [c.strip() for c in line.strip("|").split("|")]
            for line in shown.splitlines()
            if line.startswith("|")
        )
    }
    assert [float(c) for c in cells["wall ms p50"]] == [10, 8, 0.8]
    assert cells["SELECT epoch FROM …"][1] == "-" and float(cells["SELECT epoch FROM …"][0]) == 0.5
    assert [float(c) for c in cells["COMMIT; …"]] == [2, 2]
    assert [c.replace(",", "") for c in cells["CPU µs per batch, PostgreSQL"]] == [
        "3000",
        "1800",
        "0.60",
    ]
    assert [c.replace(",", "") for c in cells["— of which in the lookup"][:2]] == ["750", "450"]
    assert "worker/store.py of /work/main" in shown and "2 partitions of the record" in shown
    assert "migrations to 0009 (after: 0010)" in shown


def _checkout_with(tmp_path: Path, edited: str | None = None) -> Path:
    """A checkout holding this one's migrations but the newest (``edited`` replacing the
    first one's text, if given)."""
    folder = tmp_path / "worker" / "migrations"
    folder.mkdir(parents=True)
    for m in available()[:-1]:
        sql = edited if edited is not None and m.version == 1 else m.sql
        (folder / f"{m.version:04d}_{m.name}.sql").write_text(sql, encoding="utf-8")
    return tmp_path


def test_the_baseline_store_runs_on_the_baselines_migrations(tmp_path: Path) -> None:
    """The before side's database is migrated as far as the other checkout's migrations
    go: a migration that replaces the store's functions is compared with the ones before
    it, not with itself."""
    assert store_ab.baseline_schema(_checkout_with(tmp_path)) == available()[-2].version


def test_a_baseline_whose_migrations_differ_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"0001_initial\.sql"):
        store_ab.baseline_schema(_checkout_with(tmp_path, edited="SELECT 1;"))


def test_a_backend_that_cannot_be_read_has_spent_nothing() -> None:
    """PostgreSQL on another host: its backend's CPU is not reported rather than wrong."""
    assert store_ab._backend_ns(None) == 0
    assert store_ab._backend_ns(2**22 + 1) == 0  # above pid_max: no such process
