"""The scan and the run against fakes behind the Protocols (the real registry and
store are in tests/integration/test_reconcile.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.oci import RegistryAuthError, RepositoryNotFoundError
from worker.reconcile.diff import LiveRecord
from worker.reconcile.output import JsonLines
from worker.reconcile.run import Reconciler, parse_options
from worker.reconcile.scan import repository_names

HOST = "r.example:5000"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A, B = "a" * 64, "b" * 64


class FakeRegistry:
    def __init__(self, tags: dict[str, dict[str, str]]) -> None:
        self.tags = tags  # repository → tag → digest
        self.failing: set[str] = set()
        self.calls: list[tuple[str, ...]] = []

    async def catalog(self, host: str) -> list[str]:
        return [r for r in self.tags if r.startswith(host + "/")]

    async def list_tags(self, repository: str) -> list[str]:
        self.calls.append(("list", repository))
        if repository in self.failing:
            raise RegistryAuthError(f"{repository}: 401")
        if repository not in self.tags:
            raise RepositoryNotFoundError(repository)
        return list(self.tags[repository])

    async def resolve_digest(self, repository: str, tag: str) -> str | None:
        self.calls.append(("head", repository, tag))
        digest = self.tags.get(repository, {}).get(tag)
        return None if digest is None else f"sha256:{digest}"


class FakeRecords:
    def __init__(self, live: dict[str, dict[str, LiveRecord]]) -> None:
        self.records = live

    async def repositories(self, host: str) -> list[str]:
        return [r for r in self.records if r.startswith(host + "/") and self.records[r]]

    async def live(self, repository: str) -> dict[str, LiveRecord]:
        return dict(self.records.get(repository, {}))


class FakeSink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def publish(self, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)


def ticking() -> Iterator[datetime]:
    moment = T0
    while True:
        moment += timedelta(milliseconds=1)
        yield moment


def old(artifact: str) -> LiveRecord:
    return LiveRecord(artifact, T0 - timedelta(days=1))


async def run(
    registry: FakeRegistry,
    records: FakeRecords,
    repositories: list[str] | None = None,
    *,
    dry_run: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]], FakeSink]:
    out = io.StringIO()
    sink = FakeSink()
    clock = ticking()
    reconciler = Reconciler(
        registry,
        records,
        None if dry_run else sink,
        JsonLines(out),
        concurrency=4,
        clock=lambda: next(clock),
    )
    await reconciler.run(parse_options(HOST, repositories, dry_run, None))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return lines[-1], lines[:-1], sink


async def test_catalogue_and_live_repositories_are_both_scanned() -> None:
    registry = FakeRegistry({f"{HOST}/team/app": {"v1": A, "v2": B, "new": A}})
    records = FakeRecords(
        {
            f"{HOST}/team/app": {"v1": old(A), "v2": old(A), "gone": old(B)},
            f"{HOST}/removed": {"x": old(A)},  # the whole repository was deleted
            "other.example/team/app": {"v1": old(A)},  # another host: never touched
        }
    )
    summary, differences, sink = await run(registry, records)
    assert {(d["kind"], d["ocitag_id"], d["artifact"]) for d in differences} == {
        ("moved", f"{HOST}/team/app:new", A),
        ("moved", f"{HOST}/team/app:v2", B),
        ("deleted", f"{HOST}/team/app:gone", None),
        ("deleted", f"{HOST}/removed:x", None),
    }
    assert summary["differences"] == {"moved": 2, "deleted": 2}
    assert summary["repositories_scanned"] == 2
    assert summary["tags_scanned"] == 3
    assert summary["agreed"] == 1
    assert summary["events_published"] == 4
    assert sorted(e["id"] for e in sink.events) == sorted(d["event_id"] for d in differences)
    assert {e["source"] for e in sink.events} == {
        f"urn:ocitag:reconcile:{HOST}:{summary['run_id']}"
    }


async def test_dry_run_publishes_nothing_and_says_so() -> None:
    registry = FakeRegistry({f"{HOST}/a": {"v1": A}})
    summary, differences, sink = await run(registry, FakeRecords({}), dry_run=True)
    assert sink.events == []
    assert [d["event_id"] for d in differences] == [None]
    assert summary["dry_run"] is True and summary["events_published"] == 0


async def test_a_repository_that_cannot_be_read_is_left_alone() -> None:
    registry = FakeRegistry({f"{HOST}/ok": {"v1": A}, f"{HOST}/locked": {"v1": A}})
    registry.failing.add(f"{HOST}/locked")
    records = FakeRecords({f"{HOST}/locked": {"v1": old(B)}})
    summary, differences, _ = await run(registry, records, ["ok", "locked"])
    assert [d["ocitag_id"] for d in differences] == [f"{HOST}/ok:v1"]
    assert summary["failed_repositories"] == [f"{HOST}/locked"]


async def test_invalid_tags_and_digests_are_skipped_not_deleted() -> None:
    registry = FakeRegistry({f"{HOST}/a": {".bad": A, "v1": "not-a-digest"}})
    records = FakeRecords({f"{HOST}/a": {"v1": old(A)}})
    summary, differences, _ = await run(registry, records, ["a"])
    assert differences == []
    assert summary["skipped"] == 2


async def test_observations_come_before_the_records_are_read() -> None:
    # a record changed by a webhook event after the HEAD was sent is newer: left alone
    registry = FakeRegistry({f"{HOST}/a": {"v1": B}})
    records = FakeRecords({f"{HOST}/a": {"v1": LiveRecord(A, T0 + timedelta(hours=1))}})
    summary, differences, _ = await run(registry, records, ["a"])
    assert differences == []
    assert summary["newer_in_store"] == 1


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["team/app", f"{HOST}/team/app", "other"], [f"{HOST}/team/app", f"{HOST}/other"]),
    ],
)
def test_repository_names(names: list[str], expected: list[str]) -> None:
    assert repository_names(HOST, names) == expected


def test_docker_hub_names_are_normalised() -> None:
    options = parse_options("registry-1.docker.io", ["nginx", "istio/pilot"], False, None)
    assert options.host == "docker.io"
    assert options.repositories == ("docker.io/library/nginx", "docker.io/istio/pilot")


@pytest.mark.parametrize(
    ("host", "repositories", "interval", "message"),
    [
        ("not a host", [], None, "--registry"),
        (HOST, ["Upper/Case"], None, "--repository"),
        (HOST, [], 0.0, "--interval"),
    ],
)
def test_bad_options(
    host: str, repositories: list[str], interval: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(host, repositories, False, interval)


@pytest.mark.parametrize(
    "argv",
    [
        ["reconcile", "--registry", "not a host"],
        ["reconcile", "--registry", HOST, "--repository", "Bad/Name"],
        ["reconcile", "--registry", HOST, "--interval", "-5"],
        ["reconcile", "--registry", HOST, "--registry-endpoints", "x=ftp://u:p@x"],
    ],
)
def test_cli_rejects_bad_arguments_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli import EXIT_USAGE, main

    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "ocitag-worker:" in err
    assert ":p@" not in err
