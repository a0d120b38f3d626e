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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from worker.decision import Applied
from worker.frozen import fast_init

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
        return bytes.fromhex(event_id.replace("-", ""))  # uuid.UUID(event_id).bytes
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
    #: the globs as one expression (each ``fnmatch.translate``-d, as ``fnmatchcase``
    #: does): one match per re-pointing move, not one per glob
    _match: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        joined = "|".join(f"(?:{fnmatch.translate(g)})" for g in self.globs)
        object.__setattr__(self, "_match", re.compile(joined) if self.globs else None)

    @classmethod
    def parse(cls, setting: str) -> ImmutableTags:
        return cls(tuple(g.strip() for g in setting.split(",") if g.strip()))

    def __contains__(self, tag: str) -> bool:
        return self._match is not None and self._match.match(tag) is not None


DEFAULT_IMMUTABLE = ImmutableTags.parse(DEFAULT_IMMUTABLE_TAGS)


def repointed(applied: Applied, immutable: ImmutableTags) -> bool:
    """A release tag moved from one artifact to another (also across a deletion)."""
    return applied.replaced is not None and applied.record.tag in immutable


@fast_init
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


class NameMemory:
    """The names of ``ocitag_history_names`` known to be committed, with their refs: a
    batch neither sends them again (each sent name costs the write statement a probe of
    the names' key, about 2 µs of the server's time) nor hashes them again (three
    SHA-256 per entry otherwise). Names are never deleted (retention drops entries, not
    names), so a name remembered stays true, across replicas too: a name is remembered
    only once the transaction that sent it committed (``ON CONFLICT DO NOTHING`` waits
    for another replica's insert of it and then finds it, or inserts it).

    Bounded, in two generations (hand-written: an LRU's move-to-end on every hit costs
    more than the hashing it saves): hits are looked up in the young one, then the old
    one (and copied to the young); when the young one holds half the limit it becomes
    the old one, and the names used since survive. At most ``limit`` names plus one
    batch's own (a batch's names go in at once): about 155 bytes each with its ref (tag
    IDs of ~30 characters, measured with tracemalloc)."""

    def __init__(self, limit: int) -> None:
        self._half = max(1, limit // 2)
        self._young: dict[str, int] = {}
        self._old: dict[str, int] = {}

    def get(self, name: str) -> int | None:
        ref = self._young.get(name)
        if ref is None:
            ref = self._old.get(name)
            if ref is not None:
                self._young[name] = ref
                self._rotate()  # hits fill the young one too: the bound holds between batches
        return ref

    def remember(self, names: Mapping[str, int]) -> None:
        """``names`` (name → ref) were committed."""
        self._young.update(names)
        self._rotate()

    def _rotate(self) -> None:
        if len(self._young) >= self._half:
            self._old, self._young = self._young, {}

    def forget(self) -> None:
        """Forget every name: the store lost committed writes (a failover to an
        asynchronous standby, a restore), names included. An entry whose name is not
        stored would be left out of every answer (the reads join the names), so names
        are sent again until they are known to be committed anew."""
        self._young, self._old = {}, {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


@dataclass(frozen=True, slots=True)
class StoredColumns:
    """What the store's write takes of history (worker/store.py ``_WRITE``): the names
    not known to be stored yet (name → ref), then the entries, each a tuple of its stored
    fields (migration 0011's ``ocitag_store_entry_in``: at, tag ref, actor ref, source
    ref, version, change code, artifact, event id)."""

    new_names: dict[str, int]
    entries: list[StoredEntry]

    @property
    def columns(self) -> tuple[list[object], ...]:
        """The entries as one array per field (worker/staterepair.py's statement)."""
        columns: tuple[list[object], ...] = tuple([] for _ in range(8))
        for entry in self.entries:
            for column, value in zip(columns, entry, strict=True):
                column.append(value)
        return columns

    @property
    def name_refs(self) -> list[int]:
        return list(self.new_names.values())

    @property
    def names(self) -> list[str]:
        return list(self.new_names)


#: an entry as the write's columns take it: (OCITag ID, at, by, source, version, change
#: code, artifact, event id)
_Row = tuple[str, datetime, str, str, int, int, str, str]
#: an entry as it is stored: (at, tag ref, actor ref, source ref, version, change code,
#: artifact, event id)
StoredEntry = tuple[datetime, int, int, int, int, int, bytes, bytes]


class _Columns:
    """The write's history entries, built entry by entry (one pass, no intermediate
    objects: at a drain's thousand entries a batch, the worker's own time per entry is
    a measurable share of history's cost, docs/history.md)."""

    def __init__(self, known: NameMemory | None) -> None:
        self.known = known
        self.new: dict[str, int] = {}
        self.entries: list[StoredEntry] = []

    def ref(self, name: str) -> int:
        ref = self.known.get(name) if self.known is not None else None
        if ref is None:
            ref = self.new.get(name)
            if ref is None:
                ref = self.new[name] = name_ref(name)
        return ref

    def add(self, row: _Row) -> None:
        ocitag, at, by, source, version, code, artifact, event_id = row
        self.entries.append(
            (
                at,
                self.ref(ocitag),
                self.ref(by),
                self.ref(source),
                version,
                code,
                artifact_bytes(artifact),
                event_id_bytes(event_id),
            )
        )

    def stored(self) -> StoredColumns:
        return StoredColumns(self.new, self.entries)


def stored_columns(
    rows: Iterable[tuple[str, Entry]], known: NameMemory | None = None
) -> StoredColumns:
    """``rows`` of (OCITag ID, entry); ``known`` the names already in
    ``ocitag_history_names``, which are not sent again."""
    columns = _Columns(known)
    for ocitag, e in rows:
        code = change_code(e.change, e.repointed)
        columns.add((ocitag, e.at, e.by, e.source, e.version, code, e.artifact, e.event_id))
    return columns.stored()


def applied_columns(
    decisions: Iterable[Applied], immutable: ImmutableTags, known: NameMemory | None = None
) -> StoredColumns:
    """The entries of applied decisions, as ``stored_columns`` of their ``entry_of``
    (tests/unit/test_history.py holds them equal), without building the entries."""
    columns = _Columns(known)
    for applied in decisions:
        record = applied.record
        deleted = applied.change == "deleted"
        by = record.deleted_by if deleted else record.last_modified_by
        assert by is not None, "an applied change always names its actor"
        assert record.artifact is not None, "an applied change always names an artifact"
        code = CHANGE_CODES[applied.change]
        if applied.replaced is not None and record.tag in immutable:
            code |= REPOINTED
        ocitag = f"{record.repository}:{record.tag}"
        at, source, event_id = (
            record.last_modified_on,
            record.last_event_source,
            record.last_event_id,
        )
        columns.add((ocitag, at, by, source, record.version, code, record.artifact, event_id))
    return columns.stored()
