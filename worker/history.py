"""History (docs/history.md): what an entry is, how it is stored compactly, which moves
are re-pointed release tags, and the intervals of the digest question. Pure.

The store writes one entry per 200 outcome in the transaction of the change
(worker/store.py); the api reads them (worker/api/history.py); this module is what both
and the tests' reference model agree on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import uuid
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from worker.decision import Applied

HistoryChange = Literal["baseline", "created", "updated", "unchanged", "deleted"]

#: ``ocitag_history.change`` (its low 3 bits; migration 0007 adds ``REPOINTED``); 0 is the
#: start of history (migration 0005, and retention: worker/partitions.py)
CHANGE_CODES: dict[HistoryChange, int] = {
    "baseline": 0,
    "created": 1,
    "updated": 2,
    "unchanged": 3,
    "deleted": 4,
}
CHANGE_NAMES: dict[int, HistoryChange] = {code: name for name, code in CHANGE_CODES.items()}
#: the bit of ``ocitag_history.change`` that says the entry is re-pointed
REPOINTED = 8
_CODE = REPOINTED - 1

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: the changes that make a tag point at an artifact (an interval of the digest question
#: starts there; ``unchanged`` neither ends nor restarts one)
STARTS = frozenset({"baseline", "created", "updated"})

DEFAULT_IMMUTABLE_TAGS = "v[0-9]*.[0-9]*.[0-9]*,[0-9]*.[0-9]*.[0-9]*"


def name_ref(name: str) -> int:
    """The 8-byte reference of a string in ``ocitag_history_names``: the first 8 bytes of
    its SHA-256, as a signed bigint (migration 0005 computes the same in SQL). 64 random
    bits: the chance that two of a million distinct names collide is about 3e-8."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def artifact_bytes(artifact: str) -> bytes:
    """The raw digest of an artifact in the stored (seed's) form: bare hex for sha256,
    ``sha512:<hex>``."""
    return bytes.fromhex(artifact.removeprefix("sha512:"))


def artifact_text(raw: bytes) -> str:
    """Back to the seed's form: 32 bytes are a sha256, 64 a sha512."""
    return raw.hex() if len(raw) == 32 else f"sha512:{raw.hex()}"


def artifact_prefix(raw: bytes) -> int:
    """What the artifact index holds (migration 0005): the digest's first 8 bytes, as a
    signed bigint."""
    return int.from_bytes(raw[:8], "big", signed=True)


def change_code(change: HistoryChange, repointed: bool) -> int:
    """The stored ``change`` (migration 0007): the change's code, plus 8 when re-pointed."""
    return CHANGE_CODES[change] | (REPOINTED if repointed else 0)


def change_of(code: int) -> tuple[HistoryChange, bool]:
    """Back: (change, repointed)."""
    return CHANGE_NAMES[code & _CODE], bool(code & REPOINTED)


def event_id_bytes(event_id: str) -> bytes:
    """The stored event id (migration 0007 converts the same way): a canonical UUID (the
    lowercase hyphenated form) as its 16 bytes; any other id as its UTF-8, after a zero
    byte when that is 16 bytes long, so that 16 bytes always mean a UUID (a text id
    never holds a zero byte: PostgreSQL text cannot)."""
    if _UUID.fullmatch(event_id):
        return uuid.UUID(event_id).bytes
    raw = event_id.encode()
    return b"\x00" + raw if len(raw) == 16 else raw


def event_id_text(raw: bytes) -> str:
    """Back to the event's id."""
    if len(raw) == 16:
        return str(uuid.UUID(bytes=raw))
    return raw[1:].decode() if raw[:1] == b"\x00" else raw.decode()


@dataclass(frozen=True, slots=True)
class ImmutableTags:
    """``OCITAG_IMMUTABLE_TAGS``: globs over the tag alone (fnmatch, case-sensitive);
    none disables the check."""

    globs: tuple[str, ...]

    @classmethod
    def parse(cls, setting: str) -> ImmutableTags:
        return cls(tuple(g.strip() for g in setting.split(",") if g.strip()))

    def __contains__(self, tag: str) -> bool:
        return any(fnmatch.fnmatchcase(tag, glob) for glob in self.globs)


DEFAULT_IMMUTABLE = ImmutableTags.parse(DEFAULT_IMMUTABLE_TAGS)


def repointed(applied: Applied, immutable: ImmutableTags) -> bool:
    """A release tag moved from one artifact to another (also across a deletion)."""
    return applied.replaced is not None and applied.record.tag in immutable


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a tag's history: a 200 outcome (or the baseline of migration 0005)."""

    version: int
    change: HistoryChange
    artifact: str
    by: str
    at: datetime
    recorded_at: datetime
    source: str
    event_id: str
    repointed: bool


def entry_of(applied: Applied, immutable: ImmutableTags, recorded_at: datetime) -> Entry:
    """The entry of an applied decision: for a deletion the artifact it pointed at until
    then and ``deleted_by``; otherwise the record as it now is."""
    record = applied.record
    deleted = applied.change == "deleted"
    artifact = record.artifact
    assert artifact is not None, "an applied change always names an artifact"
    by = record.deleted_by if deleted else record.last_modified_by
    assert by is not None
    return Entry(
        version=record.version,
        change=applied.change,
        artifact=artifact,
        by=by,
        at=record.last_modified_on,
        recorded_at=recorded_at,
        source=record.last_event_source,
        event_id=record.last_event_id,
        repointed=repointed(applied, immutable),
    )


@dataclass(frozen=True, slots=True)
class Interval:
    """A span in which a tag pointed at one artifact (the digest question)."""

    tag: str  # the OCITag ID
    artifact: str
    start: datetime
    until: datetime | None
    from_version: int


def intervals(tag: str, entries: Sequence[Entry]) -> list[Interval]:
    """The intervals of one tag's entries (any order): each starts at a change that made
    the tag point at an artifact and ends at the next change that moved or deleted it."""
    found: list[Interval] = []
    current: Interval | None = None
    for entry in sorted(entries, key=lambda e: e.version):
        same = current is not None and entry.artifact == current.artifact
        if current is not None and (entry.change == "deleted" or not same):
            found.append(
                Interval(tag, current.artifact, current.start, entry.at, current.from_version)
            )
            current = None
        if entry.change in STARTS and current is None:
            current = Interval(tag, entry.artifact, entry.at, None, entry.version)
    if current is not None:
        found.append(current)
    return found


@dataclass(frozen=True, slots=True)
class StoredColumns:
    """The arrays of the store's history statement (worker/store.py ``_WRITE``): the
    names not known to be stored yet, then one array per column of the entries."""

    name_refs: list[int]
    names: list[str]
    columns: tuple[list[object], ...]


def stored_columns(rows: Sequence[tuple[str, Entry]], known: AbstractSet[int]) -> StoredColumns:
    """``rows`` of (OCITag ID, entry); ``known`` the refs already in
    ``ocitag_history_names`` (they are never deleted), which are not sent again."""
    new_names: dict[int, str] = {}
    columns: tuple[list[object], ...] = tuple([] for _ in range(8))
    for ocitag, entry in rows:
        refs = []
        for name in (ocitag, entry.by, entry.source):
            ref = name_ref(name)
            if ref not in known:
                new_names[ref] = name
            refs.append(ref)
        values = (
            entry.at,
            refs[0],
            refs[1],
            refs[2],
            entry.version,
            change_code(entry.change, entry.repointed),
            artifact_bytes(entry.artifact),
            event_id_bytes(entry.event_id),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return StoredColumns(list(new_names), list(new_names.values()), columns)
