"""The history questions' request rules and answers, against a fake of the queries
(behind worker/history_reads.py's HistoryReads): cursors bound to what they page, bad
parameters named, 404s, and the ``history`` command's table."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.api import requests
from worker.api.history_routes import HistoryAnswers
from worker.api.problems import ApiProblem
from worker.history_command import table
from worker.history_reads import FIRST, NEWEST, AsOf, MayRead, TagsPage
from worker.problems import ProblemKind

T = TypeVar("T")
TAG = "docker.io/team/app:v1"
HEX = "ab" * 32


def entry(version: int) -> dict[str, Any]:
    return {
        "version": version,
        "change": "updated",
        "artifact": HEX,
        "by": "alice",
        "at": f"2026-12-01T14:0{version}:00Z",
        "recorded_at": "2026-12-01T15:00:00Z",
        "event": {"source": "s", "id": f"e{version}"},
        "repointed": version == 2,
    }


class FakeReads:
    """Five entries of TAG, one record as of any instant after 14:00, one digest page."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    async def entries(
        self, ocitag: str, before: tuple[datetime, int], limit: int
    ) -> list[dict[str, Any]]:
        self.asked.append(("entries", ocitag, before, limit))
        if ocitag != TAG:
            return []
        return [entry(v) for v in range(5, 0, -1) if v < before[1]][:limit]

    async def as_of(self, ocitag: str, instant: datetime) -> AsOf | None:
        if instant < datetime(2026, 12, 1, 14, tzinfo=UTC):
            return None
        return AsOf({"artifact": HEX, "tag": "v1"}, 3)

    async def tags(
        self, digest: str, *, history: bool, after: tuple[int, int], limit: int, may_read: MayRead
    ) -> TagsPage:
        self.asked.append(("tags", digest, history, after, limit))
        readable = [{"tag": TAG}] if may_read(TAG) else []
        return TagsPage(readable, (7, 1) if after == FIRST else None)


async def _db(work: Awaitable[T]) -> T:
    return await work


def answers() -> tuple[HistoryAnswers, FakeReads]:
    reads = FakeReads()
    return HistoryAnswers(lambda: reads, _db), reads


async def test_history_pages_newest_first_with_a_cursor_for_that_tag() -> None:
    api, reads = answers()
    first = await api.history(TAG, {"limit": "2"})
    body = orjson.loads(first.body)
    assert [e["version"] for e in body["items"]] == [5, 4]
    assert first.headers["Link"].startswith("</ocitags/docker.io%2Fteam%2Fapp%3Av1/history?")
    second = orjson.loads((await api.history(TAG, {"limit": "2", "cursor": body["next"]})).body)
    assert [e["version"] for e in second["items"]] == [3, 2]
    assert reads.asked[0][2] == NEWEST
    last = orjson.loads((await api.history(TAG, {"limit": "9"})).body)
    assert last["next"] is None


async def test_a_cursor_of_another_tag_or_question_is_refused() -> None:
    api, _ = answers()
    body = orjson.loads((await api.history(TAG, {"limit": "2"})).body)
    with pytest.raises(ApiProblem) as refused:
        await api.history("docker.io/team/app:v2", {"cursor": body["next"]})
    assert refused.value.errors[0].location == "query.cursor"
    tags = orjson.loads((await api.tags(f"sha256:{HEX}", {"history": "true"})).body)
    with pytest.raises(ApiProblem):  # history=true's cursor is not history=false's
        await api.tags(HEX, {"history": "false", "cursor": tags["next"]})
    # any spelling of the digest: the same question, the same cursor
    again = await api.tags(HEX, {"history": "true", "cursor": tags["next"]})
    assert orjson.loads(again.body)["next"] is None


async def test_a_tag_never_seen_has_no_history() -> None:
    api, _ = answers()
    with pytest.raises(ApiProblem) as missing:
        await api.history("docker.io/team/other:1", {})
    assert missing.value.kind is ProblemKind.NOT_FOUND


async def test_as_of_gives_the_record_with_its_etag_or_404() -> None:
    api, _ = answers()
    found = await api.as_of(TAG, "2026-12-01T15:00:00+01:00")
    assert found.status == 200 and found.headers["ETag"] == '"3"'
    with pytest.raises(ApiProblem) as missing:
        await api.as_of(TAG, "2026-12-01T13:59:59Z")
    assert missing.value.kind is ProblemKind.NOT_FOUND


@pytest.mark.parametrize(
    ("call", "location"),
    [
        (lambda api: api.as_of(TAG, "Tuesday 14:03"), "query.at"),
        (lambda api: api.tags("sha256:abc", {}), "path.digest"),
        (lambda api: api.tags(HEX, {"history": "yes"}), "query.history"),
        (lambda api: api.history(TAG, {"limit": "0"}), "query.limit"),
        (lambda api: api.history(TAG, {"cursor": "!!"}), "query.cursor"),
    ],
)
async def test_bad_parameters_are_named(call: Any, location: str) -> None:
    api, _ = answers()
    with pytest.raises(ApiProblem) as bad:
        await call(api)
    assert [e.location for e in bad.value.errors] == [location]


async def test_an_offsets_plus_sign_decoded_as_a_space_is_explained() -> None:
    """curl sends ``?at=2026-12-01T15:00:00+01:00`` as is; the query decodes the ``+``
    as a space, so the 422 says how to send it."""
    api, _ = answers()
    with pytest.raises(ApiProblem) as bad:
        await api.as_of(TAG, "2026-12-01T15:00:00 01:00")
    (error,) = bad.value.errors
    assert (error.location, error.value) == ("query.at", "2026-12-01T15:00:00 01:00")
    assert "%2B" in error.message
    with pytest.raises(ApiProblem) as other:
        await api.as_of(TAG, "Tuesday")
    assert "%2B" not in other.value.errors[0].message


@given(scope=st.text(max_size=30), a=st.integers(-(2**63), 2**63 - 1), b=st.integers(0, 2**62))
def test_positions_round_trip_and_stay_bound_to_their_scope(scope: str, a: int, b: int) -> None:
    cursor = requests.encode_position(scope, a, b)
    assert requests.decode_position(cursor, scope, (int, int)) == (a, b)
    assert requests.decode_position(cursor, scope + "x", (int, int)) is None
    assert requests.decode_position(cursor, scope, (str, int)) is None


def test_the_command_table_has_a_header_and_flags_repointed_entries() -> None:
    lines = table([entry(2), entry(1)]).splitlines()
    assert lines[0].split() == ["version", "change", "artifact", "by", "at", "event", "repointed"]
    assert lines[1].split()[0] == "2" and lines[1].endswith("REPOINTED")
    assert not lines[2].endswith("REPOINTED")
    assert "…" in lines[1]  # the digest shortened


async def test_a_callers_may_read_filters_the_digest_question() -> None:
    api, _ = answers()
    everyone = orjson.loads((await api.tags(HEX, {})).body)
    assert everyone["items"] == [{"tag": TAG}]
    nobody = orjson.loads((await api.tags(HEX, {}, may_read=lambda _: False)).body)
    assert nobody["items"] == []
