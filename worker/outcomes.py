"""Outcome CloudEvents: the one place that turns an input and what became of it into the
outcome published for it. Pure: no I/O, no clock.

What became of an input is one of:

- a **decision** about a stored input (``Applied`` → 200, ``Rejected`` → its problem's
  status): ``decision_outcome``; a 422 input is ``Rejected`` by its own problem
  (``invalid_outcome``);
- a **repeat** of an input already processed: its first outcome byte for byte, or 409
  id-reused when the content differs (``repeat_outcome``, ``replayed``);
- a **problem without a stored input**: 400 for a record that is not a decodable
  CloudEvent (``undecodable_outcome``), 500 for one the database refused
  (``internal_outcome``); neither is stored, so both are timed by the record's own Kafka
  timestamp and a redelivery rebuilds the same bytes.

Ids: an outcome that is stored (or rebuilt from what is stored) has ``outcome_id``, from
the input's (source, id) and content, so its replay carries the same id; one built from
its record alone (a 400, a reused id's 409, a 500) has ``record_outcome_id``, from the
record's coordinates too, since its ``data.instance`` names the record: one id, one set
of bytes.

``batch_outcomes`` assembles a whole batch from what the store found and decided; the
store does the I/O around it and stores what it returns.

A processed event's outcome is republished byte-identical, so nothing here may depend on
when or where it is rebuilt except what is passed in. The idempotency record keeps what
rebuilds it (``processed_row``): a tag-moved event's 200 from the repeat itself — equal
fingerprints mean equal meaning: repository, tag, artifact, actor, time, source and id —
plus version, change, creation and the worker source of the first publication; a
superseded event's 409 (a move's or a deletion's) from the repeat plus the newer row's
key and state, the first delivery's content mode and record, and the worker source and
problem base of the first publication; any other outcome as its bytes. ``replayed``
gives it back. An attribute with no value is left out, never ``null`` (CloudEvents SDKs
reject ``null`` attributes): ``_envelope`` is the one place an outcome's attributes are
written.

This runs once per event (a third of the worker's CPU in a drain, before it was made
lean; docs/scaling.md): a batch formats its processing time once, the builders take the
worker source and problem base as strings (a replay builds no context or event copies),
an outcome's attributes go straight into the one dict ``orjson`` serializes, and a 200's
OCITag is built once for its data and its state record. Serialization itself is one
``orjson.dumps`` per outcome (under a microsecond): nothing is spliced by hand.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from worker.decision import Applied, Change, Decision, Rejected, TagRecord, superseded_problem
from worker.events import Invalid, RawRecord, TagEvent, TagMoved, Undecodable
from worker.frozen import fast_init
from worker.history import DEFAULT_IMMUTABLE, ImmutableTags, repointed
from worker.models import REJECTED_TYPE, REMOVED_TYPE, STRUCTURED, UPDATED_TYPE
from worker.plan import EventKey, Item, ProcessedRow, Superseded, superseded_bytes
from worker.problems import PROBLEM_JSON, ErrorItem, Problem, ProblemKind, error_model
from worker.state import StateRecord, tombstone, upsert
from worker.timefmt import format_rfc3339

if TYPE_CHECKING:
    from worker.settings import ContractSettings

CONTENT_TYPE = STRUCTURED.encode()
#: bytes of the content fingerprint (SHA-256) the idempotency record keeps: 128 random
#: bits tell a replay from an id reuse with no collision in practice
STORED_FINGERPRINT_BYTES = 16
_HEADERS = [("content-type", CONTENT_TYPE)]  # shared, never modified
_NAMESPACE = uuid.UUID("6f0d3c1e-2b7a-5e44-9c1d-0a7c3f9e8b21")

#: The CloudEvents type of a successful outcome, by its change.
SUCCESS_TYPES: Mapping[Change, str] = {
    "created": UPDATED_TYPE,
    "updated": UPDATED_TYPE,
    "unchanged": UPDATED_TYPE,
    "deleted": REMOVED_TYPE,
}


@fast_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """An outcome ready to produce: key, value and its status for metrics and logs."""

    key: bytes | None
    value: bytes
    status: int
    change: Change | None = None
    #: republished from the processed-event record (a duplicate delivery)
    replay: bool = False
    #: an applied change's record for the state topic (worker/state.py): the record as
    #: applied, or a tombstone for a deletion; the store refreshes a repeat's
    state: StateRecord | None = None
    #: a release tag moved elsewhere (worker/history.py ``repointed``)
    repointed: bool = False

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return _HEADERS

    def as_replay(self) -> Outcome:
        """The same outcome, republished (``dataclasses.replace`` costs several times
        this, once per duplicate)."""
        return Outcome(
            self.key, self.value, self.status, self.change, True, self.state, self.repointed
        )


@dataclass(frozen=True, slots=True)
class OutcomeContext:
    """What every outcome of this worker shares (from settings)."""

    worker_source: str
    problem_base_uri: str
    #: OCITAG_IMMUTABLE_TAGS: a move of one of these elsewhere is flagged ``repointed``
    immutable_tags: ImmutableTags = DEFAULT_IMMUTABLE

    @classmethod
    def of(cls, contract: ContractSettings) -> OutcomeContext:
        """From the settings of what the contract carries."""
        return cls(
            contract.worker_source,
            contract.problem_base_uri,
            ImmutableTags.parse(contract.immutable_tags),
        )


# ---- identities and times


def outcome_id(source: str, event_id: str, fingerprint: bytes) -> str:
    """Deterministic: a republished outcome has the same id; a reused input id with other
    content gets another (its outcome is another event)."""
    return _uuid5(f"{source}\n{event_id}\n{fingerprint.hex()}")


#: SHA-1 of the namespace, copied for each name (``_uuid5``)
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE.bytes, usedforsecurity=False)


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))`` without building UUID objects (a test
    holds the two equal): this runs once per event."""
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(name.encode())
    h = sha1.hexdigest()
    # the version nibble is 5; the variant's two bits 10 (the high digit of byte 8 is
    # 8, 9, a or b): set on the hex digits themselves, no bytearray
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


#: a hex digit with its two high bits set to 10 (RFC 4122 variant)
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def record_outcome_id(record: RawRecord, kind: ProblemKind) -> str:
    """The id of an outcome that is not stored and so is built from its record alone
    (400, a reused id's 409, 500): the record's coordinates (topic, partition, offset),
    the SHA-256 of its bytes and the problem's type.

    The coordinates make one id one set of bytes: two records with the same (source, id)
    get two outcomes whose ``data.instance`` differs, so they need two ids (CloudEvents:
    ``source`` and ``id`` identify one event). A redelivery of the record has the same
    coordinates and bytes, so the same id. The type tells apart the outcomes one record
    can get on successive deliveries (a 500, then a 409 once another record took the
    id). Outcomes that are stored keep ``outcome_id``: their replay is byte-identical."""
    digest = hashlib.sha256(record.value or b"").hexdigest()
    return _uuid5(f"{record.instance}\n{digest}\n{kind.slug}")


def record_time(raw: RawRecord) -> datetime:
    """The record's Kafka timestamp: the time of outcomes that are not stored (400,
    500), so that a redelivery gets the same bytes. The epoch if it has none."""
    try:
        return datetime.fromtimestamp(raw.timestamp_ms / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


# ---- the envelope: the one place attributes are written


def _envelope(
    source: str,
    outcome_uuid: str,
    type_: str,
    time: str,
    *,
    subject: str | None,
    datacontenttype: str,
    status: int,
    causation: tuple[str | None, str | None],
    data: Mapping[str, Any],
    extensions: Mapping[str, Any] | None = None,
) -> bytes:
    """The outcome's bytes: the attributes in their fixed order, one left out when it has
    no value, the extensions, then ``data``. ``time`` is already formatted (a batch
    formats its processing time once)."""
    causation_source, causation_id = causation
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": outcome_uuid,
        "source": source,
        "type": type_,
        "time": time,
    }
    if subject is not None:
        envelope["subject"] = subject
    envelope["datacontenttype"] = datacontenttype
    envelope["status"] = status
    if causation_id is not None:
        envelope["causationid"] = causation_id
    if causation_source is not None:
        envelope["causationsource"] = causation_source
    if extensions:
        envelope.update(extensions)
    envelope["data"] = data
    try:
        return orjson.dumps(envelope)
    except TypeError:  # an offending value with an integer beyond 64 bits
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _success(
    source: str,
    immutable: ImmutableTags,
    event: TagEvent,
    applied: Applied,
    time: str,
    *,
    replay: bool = False,
) -> Outcome:
    """200. ``resourceversion`` is the version the event left; ``data`` the record as
    applied, or for an applied deletion the record as it was just before; ``repointed``
    (only when true) for a release tag moved elsewhere. A move's OCITag is its state
    record's too: built once."""
    record = applied.record
    flagged = repointed(applied, immutable)
    extensions: dict[str, Any] = {"resourceversion": record.version, "change": applied.change}
    if flagged:
        extensions["repointed"] = True
    subject = f"{record.repository}:{record.tag}"
    shown_record = applied.removed if applied.removed is not None else record
    shown = shown_record.as_ocitag()
    state = (
        tombstone(subject, record.version, record)
        if applied.change == "deleted"
        else upsert(record, shown if shown_record is record else None)
    )
    value = _envelope(
        source,
        outcome_id(event.source, event.id, event.fingerprint),
        SUCCESS_TYPES[applied.change],
        time,
        subject=subject,
        datacontenttype="application/json",
        status=200,
        causation=(event.source, event.id),
        data=shown,
        extensions=extensions,
    )
    return Outcome(subject.encode(), value, 200, applied.change, replay, state, flagged)


def _problem(
    source: str,
    problem_base: str,
    problem: Problem,
    *,
    instance: str,
    subject: str | None,
    outcome_uuid: str,
    time: str,
    causation: tuple[str | None, str | None],
    replay: bool = False,
) -> Outcome:
    value = _envelope(
        source,
        outcome_uuid,
        REJECTED_TYPE,
        time,
        subject=subject,
        datacontenttype=PROBLEM_JSON,
        status=problem.status,
        causation=causation,
        data=error_model(problem, problem_base, instance),
    )
    return Outcome(subject.encode() if subject else None, value, problem.status, replay=replay)


def _subject(event: TagEvent | Invalid) -> str | None:
    return event.subject if isinstance(event, Invalid) else event.ocitag_id


def _rejected(
    ctx: OutcomeContext, item: Item, problem: Problem, time: str, *, stored: bool = True
) -> Outcome:
    """A rejection of a decodable input; ``stored`` = False for one built from its record
    alone (a reused id's 409, a 500): then its id is the record's (``record_outcome_id``)."""
    event = item.event
    return _problem(
        ctx.worker_source,
        ctx.problem_base_uri,
        problem,
        instance=item.record.instance,
        subject=_subject(event),
        outcome_uuid=(
            outcome_id(event.source, event.id, event.fingerprint)
            if stored
            else record_outcome_id(item.record, problem.kind)
        ),
        time=time,
        causation=(event.source, event.id),
    )


# ---- what became of an input → its outcome


def decision_outcome(
    ctx: OutcomeContext, item: Item, decision: Decision, processed_at: datetime
) -> Outcome:
    """The outcome of a decision about a stored input, timed at its processing."""
    return _decided(ctx, item, decision, format_rfc3339(processed_at))


def _decided(ctx: OutcomeContext, item: Item, decision: Decision, time: str) -> Outcome:
    """``decision_outcome`` with the processing time formatted (once per batch). A new
    kind of decision is one more case here."""
    match decision:
        case Applied():
            assert not isinstance(item.event, Invalid), "only tag events are applied"
            return _success(ctx.worker_source, ctx.immutable_tags, item.event, decision, time)
        case Rejected(problem):  # a 404 deletion is one too: its record is the store's
            return _rejected(ctx, item, problem, time)


def invalid_outcome(ctx: OutcomeContext, item: Item, processed_at: datetime) -> Outcome:
    """422: a decodable event whose data breaks a rule (stored like any other)."""
    assert isinstance(item.event, Invalid)
    return _rejected(ctx, item, item.event.problem, format_rfc3339(processed_at))


def internal_outcome(ctx: OutcomeContext, item: Item, reason: str) -> Outcome:
    """500: the database refused this one event. Not stored: timed by the record, so a
    redelivery gets the same bytes."""
    problem = Problem(ProblemKind.INTERNAL, f"the event could not be stored: {reason}")
    return _rejected(ctx, item, problem, format_rfc3339(record_time(item.record)), stored=False)


def undecodable_outcome(ctx: OutcomeContext, raw: RawRecord, event: Undecodable) -> Outcome:
    """400: a record that is not a decodable CloudEvent (never stored, timed by the
    record). Subject and causation are there as far as the input got."""
    return _problem(
        ctx.worker_source,
        ctx.problem_base_uri,
        event.problem,
        instance=raw.instance,
        subject=event.subject,
        outcome_uuid=record_outcome_id(raw, event.problem.kind),
        time=format_rfc3339(record_time(raw)),
        causation=(event.source, event.id),
    )


def same_content(fingerprint: bytes, stored: bytes) -> bool:
    """Whether an event's fingerprint is the one stored (the record keeps a prefix)."""
    return fingerprint[:STORED_FINGERPRINT_BYTES] == stored[:STORED_FINGERPRINT_BYTES]


def processed_row(
    ctx: OutcomeContext,
    item: Item,
    decision: Decision | None,
    outcome: Outcome,
    processed_at: datetime,
) -> ProcessedRow:
    """What the idempotency record keeps of a new item's outcome: a tag-moved event's
    200 and a superseded event's 409 as what rebuilds them with the repeat
    (``replayed``), anything else as its bytes (a re-pointed release tag's 200 too: the
    repeat does not say where the tag was)."""
    fingerprint = item.event.fingerprint[:STORED_FINGERPRINT_BYTES]
    if isinstance(decision, Rejected) and decision.newer is not None:
        newer = decision.newer
        return ProcessedRow(
            fingerprint,
            processed_at,
            outcome.status,
            worker_source=ctx.worker_source,
            problem_base=ctx.problem_base_uri,
            superseded=Superseded(
                newer.last_modified_on,
                newer.last_event_source,
                newer.last_event_id,
                newer.live,
                item.event.binary,
                item.record.instance,
            ),
        )
    if (
        isinstance(item.event, TagMoved)
        and isinstance(decision, Applied)
        and decision.change in _REBUILT_CHANGES
        and not outcome.repointed
    ):
        record = decision.record
        created = decision.change == "created"
        return ProcessedRow(
            fingerprint,
            processed_at,
            outcome.status,
            change=decision.change,
            version=record.version,
            created_on=None if created else record.created_on,
            created_by=None if created else record.created_by,
            worker_source=ctx.worker_source,
            problem_base=ctx.problem_base_uri,
        )
    return ProcessedRow(fingerprint, processed_at, outcome.status, outcome.key, outcome.value)


#: the changes whose 200 is rebuilt from the repeat (a move's record is the event's)
_REBUILT_CHANGES = frozenset({"created", "updated", "unchanged"})
#: ``processed_events.change``: the change of a 200 rebuilt from the repeat
STORED_CHANGES: Mapping[Change, int] = {"created": 1, "updated": 2, "unchanged": 3}


#: a record as the store's write takes it (migration 0011's ``ocitag_store_record_in``)
RecordRow = tuple[
    bytes, bytes, int, int | None, int | None, datetime | None, str | None, int | None,
    bytes | None, bytes | None, bytes | None,
]  # fmt: skip


class RecordRows:
    """The new events' idempotency records as the store's write takes them
    (worker/store.py ``_WRITE``): one tuple per record, the fields of
    ``ocitag_store_record_in`` (key, fingerprint, status, change, version, created_on,
    created_by, source_ref, outcome_key, outcome, superseded). What each record keeps is
    ``processed_row``'s (tests/unit/test_outcomes.py holds the two equal); this builds
    the rows with no ProcessedRow or Superseded per event (in a drain's batch the records
    were a tenth of the store's Python, docs/scaling.md). ``source_ref`` is the
    ``outcome_sources`` id of this worker's (source, problem base): a rebuilt outcome's."""

    def __init__(self, source_ref: int) -> None:
        self._source_ref = source_ref
        self.rows: list[RecordRow] = []

    def add(self, key: bytes, item: Item, decision: Decision | None, outcome: Outcome) -> None:
        """The record of ``item`` (stored under ``key``), decided ``decision``, published
        as ``outcome``."""
        event = item.event
        fingerprint = event.fingerprint[:STORED_FINGERPRINT_BYTES]
        if isinstance(decision, Rejected) and decision.newer is not None:
            newer = decision.newer
            kept = superseded_bytes(
                newer.last_modified_on,
                newer.last_event_source,
                newer.last_event_id,
                live=newer.live,
                binary=event.binary,
                instance=item.record.instance,
            )
            row: RecordRow = (
                key, fingerprint, outcome.status, None, None, None, None, self._source_ref,
                None, None, kept,
            )  # fmt: skip
        elif (
            isinstance(event, TagMoved)
            and isinstance(decision, Applied)
            and decision.change in _REBUILT_CHANGES
            and not outcome.repointed
        ):
            record = decision.record
            created = decision.change == "created"
            row = (
                key, fingerprint, outcome.status, STORED_CHANGES[decision.change],
                record.version, None if created else record.created_on,
                None if created else record.created_by, self._source_ref, None, None, None,
            )  # fmt: skip
        else:
            row = (
                key, fingerprint, outcome.status, None, None, None, None, None, outcome.key,
                outcome.value, None,
            )  # fmt: skip
        self.rows.append(row)


def replayable(item: Item, row: ProcessedRow) -> bool:
    """Whether ``item`` repeats the event of ``row`` (else its id was reused)."""
    if not same_content(item.event.fingerprint, row.fingerprint):
        return False
    if row.superseded is not None:
        return not isinstance(item.event, Invalid)
    return row.outcome is not None or isinstance(item.event, TagMoved)


def replayed(ctx: OutcomeContext, item: Item, row: ProcessedRow) -> Outcome:
    """The first outcome of the event ``item`` repeats (``replayable``), as it was."""
    if row.outcome is not None:
        # a kept 200's state record is the tag's as it now is: the store fills it in
        return Outcome(row.outcome_key, row.outcome, row.status, _kept_change(row), True)
    if row.superseded is not None:
        return _superseded_again(ctx, item, row, row.superseded)
    event = item.event
    if not isinstance(event, TagMoved) or row.change is None or row.version is None:
        raise ValueError(f"cannot rebuild the outcome of {item.key}: not a stored move")
    # no creation stored: this event created the record
    record = TagRecord(
        repository=event.repository,
        tag=event.tag,
        artifact=event.artifact,
        created_by=row.created_by if row.created_by is not None else event.actor,
        created_on=row.created_on if row.created_on is not None else event.time,
        last_modified_by=event.actor,
        last_modified_on=event.time,
        version=row.version,
        last_event_source=event.source,
        last_event_id=event.id,
    )
    return _success(
        row.worker_source or ctx.worker_source,
        ctx.immutable_tags,
        event,
        Applied(record, row.change),
        format_rfc3339(row.processed_at),
        replay=True,
    )


def _superseded_again(
    ctx: OutcomeContext, item: Item, row: ProcessedRow, kept: Superseded
) -> Outcome:
    """A superseded event's first 409, rebuilt: the repeat (the same event: the
    fingerprint is equal) read in the first delivery's content mode, against the newer
    key it lost to, under the worker source and problem base it was published with."""
    event = item.event
    if isinstance(event, Invalid):
        raise ValueError(f"cannot rebuild the outcome of {item.key}: not a tag event")
    first = event if event.binary == kept.binary else replace(event, binary=kept.binary)
    return _problem(
        row.worker_source or ctx.worker_source,
        row.problem_base or ctx.problem_base_uri,
        superseded_problem(first, (kept.on, kept.source, kept.id), live=kept.live),
        instance=kept.instance,
        subject=first.ocitag_id,
        outcome_uuid=outcome_id(first.source, first.id, first.fingerprint),
        time=format_rfc3339(row.processed_at),
        causation=(first.source, first.id),
        replay=True,
    )


def _kept_change(row: ProcessedRow) -> Change | None:
    """The change a 200 kept as bytes says (a deletion's, or a move's recorded before the
    compact form): its ``change`` attribute. Read for the replay's metric labels only,
    so the rare parse is the price of not storing it twice."""
    if row.status != 200 or row.outcome is None:
        return None
    change = orjson.loads(row.outcome).get("change")
    return change if change in SUCCESS_TYPES else None


def repeat_outcome(
    ctx: OutcomeContext,
    item: Item,
    first_fingerprint: bytes,
    first_processed_at: datetime,
    first_outcome: Outcome,
) -> Outcome:
    """A duplicate gets the first outcome itself; an id reused with other content gets
    409, timed at the first processing so that its own replays are identical too."""
    if same_content(item.event.fingerprint, first_fingerprint):
        return first_outcome.as_replay()
    return id_reused_outcome(ctx, item, first_processed_at)


def id_reused_outcome(ctx: OutcomeContext, item: Item, first_processed_at: datetime) -> Outcome:
    """409: the input's (source, id) was first processed with other content."""
    source, event_id = item.key
    problem = Problem(
        ProblemKind.ID_REUSED,
        f"event (source {source}, id {event_id}) was first processed at "
        f"{format_rfc3339(first_processed_at)} with different content; a new event needs a "
        "new id",
        (
            ErrorItem(
                item.event.attribute_location("id"),
                "must be unique per source for different content",
                event_id,
            ),
        ),
    )
    return _rejected(ctx, item, problem, format_rfc3339(first_processed_at), stored=False)


def batch_outcomes(
    ctx: OutcomeContext,
    items: Sequence[Item],
    *,
    new: Sequence[int],
    decisions: Mapping[int, Decision],
    earlier: Mapping[EventKey, ProcessedRow],
    processed_at: datetime,
) -> list[Outcome]:
    """The outcome of each item of a batch, in order.

    ``new`` are the indexes of the items processed now (the first of each (source, id)
    the store claimed), ``decisions`` the decision for each new tag event (move or
    deletion),
    ``earlier`` what the store holds for the (source, id)s processed before. Every other
    item repeats one of those: an earlier batch's or the first of its own batch."""
    outcomes: dict[int, Outcome] = {}
    firsts: dict[EventKey, int] = {}
    time = format_rfc3339(processed_at)  # every new item's
    for index in new:
        item = items[index]
        event = item.event
        firsts[item.key] = index
        outcomes[index] = (
            _rejected(ctx, item, event.problem, time)
            if isinstance(event, Invalid)
            else _decided(ctx, item, decisions[index], time)
        )
    for index, item in enumerate(items):
        if index in outcomes:
            continue
        row = earlier.get(item.key)
        if row is not None:  # processed by an earlier batch
            outcomes[index] = (
                replayed(ctx, item, row)
                if replayable(item, row)
                else id_reused_outcome(ctx, item, row.processed_at)
            )
        else:  # first processed earlier in this batch
            first = firsts[item.key]
            outcomes[index] = repeat_outcome(
                ctx, item, items[first].event.fingerprint, processed_at, outcomes[first]
            )
    return [outcomes[i] for i in range(len(items))]
