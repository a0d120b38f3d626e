"""The api's history questions (docs/history.md): what a request asks, and its answer.

- ``GET /ocitags/{tag}/history?limit=&cursor=``: the tag's entries, newest first;
- ``GET /ocitags/{tag}/?at=<RFC 3339>``: the record as of that instant, with its ETag;
- ``GET /artifacts/{digest}/tags?history=&limit=&cursor=``: the tags that point (or
  pointed) at a digest.

Pages are keyed by opaque cursors (``requests.encode_position``), bound to what they page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar
from urllib.parse import quote

from worker.api import replies, requests
from worker.api.problems import ApiProblem, invalid
from worker.api.replies import Reply
from worker.history_reads import FIRST, NEWEST, HistoryReads, MayRead, allow_all
from worker.identifiers import InvalidIdentifierError, normalize_digest
from worker.problems import ErrorItem, ProblemKind
from worker.timefmt import parse_rfc3339

HISTORY_PATH = "/ocitags/{tag:.+}/history"
HISTORY_TEMPLATE = "/ocitags/{tag}/history"
ARTIFACT_TAGS_PATH = "/artifacts/{digest}/tags"
_MICROS = 1_000_000
_T = TypeVar("_T")

#: a cursor position: PostgreSQL bigints; a history cursor's first one is microseconds
#: within datetime's years (1 to 9999)
_MIN_POSITION, _MAX_POSITION = -(2**63), 2**63 - 1
_MIN_MICROS, _MAX_MICROS = -62_135_596_800_000_000, 253_402_300_799_999_999


class Db(Protocol):
    """Awaits a database answer; a failure becomes the api's 503 or 500."""

    def __call__(self, work: Awaitable[_T], /) -> Awaitable[_T]: ...


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    position: tuple[int, int] | None


def _page(query: Mapping[str, str], scope: str, *, micros_first: bool = False) -> Page:
    items: list[ErrorItem] = []
    limit = requests.limit_of(query, items)
    position = None
    raw = query.get("cursor")
    if raw is not None:
        found = requests.decode_position(raw, scope, (int, int))
        # what PostgreSQL's bigint and a datetime can hold: a forged position is a 422,
        # not a database overflow (500)
        if found is not None and not all(_MIN_POSITION <= int(v) <= _MAX_POSITION for v in found):
            found = None
        if found is not None and micros_first and not _MIN_MICROS <= int(found[0]) <= _MAX_MICROS:
            found = None
        if found is None:
            items.append(
                ErrorItem(
                    "query.cursor", "is not a cursor this API gave for this query (use `next`)", raw
                )
            )
        else:
            position = (int(found[0]), int(found[1]))
    if items:
        raise invalid(*items)
    return Page(limit, position)


def instant(raw: str) -> datetime:
    try:
        return parse_rfc3339(raw)
    except ValueError as exc:
        rule = str(exc)
        if " " in raw:  # curl '...?at=...+01:00': the query string decodes '+' as a space
            rule += "; write an offset's '+' as %2B (a '+' in a query string is a space)"
        raise invalid(ErrorItem("query.at", rule, raw)) from None


def digest(raw: str) -> str:
    try:
        return normalize_digest(raw)
    except InvalidIdentifierError as exc:
        raise invalid(ErrorItem("path.digest", str(exc), raw)) from None


def history_flag(query: Mapping[str, str]) -> bool:
    items: list[ErrorItem] = []
    flag = requests.flag_of(query, "history", items)
    if items:
        raise invalid(*items)
    return flag


def _micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _MICROS + delta.microseconds


def _moment(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // _MICROS, UTC).replace(microsecond=micros % _MICROS)


class HistoryAnswers:
    """The three questions against ``reads`` (None while PostgreSQL is not connected);
    ``db`` turns a database failure into the api's 503."""

    def __init__(
        self,
        reads: Callable[[], HistoryReads | None],
        db: Db,
        may_read: MayRead = allow_all,
    ) -> None:
        self._reads = reads
        self._db = db
        self.may_read = may_read

    def _backend(self) -> HistoryReads:
        reads = self._reads()
        if reads is None:
            raise ApiProblem(ProblemKind.UNAVAILABLE, "db is not available; retry later")
        return reads

    async def history(self, ocitag: str, query: Mapping[str, str]) -> Reply:
        page = _page(query, ocitag, micros_first=True)
        before = NEWEST if page.position is None else (_moment(page.position[0]), page.position[1])
        reads = self._backend()
        rows = await self._db(reads.entries(ocitag, before, page.limit + 1))
        if not rows and page.position is None:
            raise ApiProblem(ProblemKind.NOT_FOUND, f"{ocitag} has no history: never seen")
        items = rows[: page.limit]
        cursor = None
        if len(rows) > page.limit:
            last = items[-1]
            cursor = requests.encode_position(
                ocitag, _micros(parse_rfc3339(last["at"])), last["version"]
            )
        link = (
            f"/ocitags/{quote(ocitag, safe='')}/history?limit={page.limit}&cursor={cursor}"
            if cursor
            else None
        )
        return replies.page(items, cursor, link)

    async def as_of(self, ocitag: str, raw_at: str) -> Reply:
        moment = instant(raw_at)
        found = await self._db(self._backend().as_of(ocitag, moment))
        if found is None:
            raise ApiProblem(ProblemKind.NOT_FOUND, f"{ocitag} did not exist at {raw_at}")
        return replies.record(found.record, found.version)

    async def tags(
        self, raw_digest: str, query: Mapping[str, str], may_read: MayRead | None = None
    ) -> Reply:
        """The digest question; ``may_read`` (this caller's, e.g. from its grants) or the
        default given at construction filters the tags."""
        artifact = digest(raw_digest)
        with_history = history_flag(query)
        scope = f"{artifact} {'history' if with_history else 'now'}"
        page = _page(query, scope)
        found = await self._db(
            self._backend().tags(
                artifact,
                history=with_history,
                after=page.position or FIRST,
                limit=page.limit,
                may_read=may_read or self.may_read,
            )
        )
        items, after = found.items, found.after
        cursor = None if after is None else requests.encode_position(scope, *after)
        link = (
            f"/artifacts/{artifact}/tags?history={str(with_history).lower()}"
            f"&limit={page.limit}&cursor={cursor}"
            if cursor
            else None
        )
        return replies.page(items, cursor, link)
