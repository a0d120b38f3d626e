"""Dead letters: the copy of an undecodable record (400) on the dead-letter topic.

The copy is the record's key, value and headers, plus ``ocitag_dlq_*`` headers saying
where it was and why it was rejected. It must fit the topic's ``max.message.bytes``:
a record that fitted its input topic may not, since the copy adds headers (and the
dead-letter topic may have a smaller limit). A copy that does not fit keeps what fits,
giving up, in order, the value, then the original headers (largest first), then the
key, and says what it left out:

- ``ocitag_dlq_value_omitted_bytes``: the size of the value left out;
- ``ocitag_dlq_headers_omitted``: how many original headers were left out;
- ``ocitag_dlq_key_omitted_bytes``: the size of the key left out;
- ``ocitag_dlq_escaped_header_keys``: how many header keys were not UTF-8 (a record the
  Kafka client could not read): those keys are written with their bytes escaped as
  ``\\xNN``, since Kafka clients write header keys as UTF-8 text.

The coordinates and the reason are always kept. A dead letter never stops the worker
unless the topic cannot take even those (a limit under a kilobyte): then the worker
stops with a message naming the topic's setting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker import metrics
from worker.errors import FatalError
from worker.events import RawRecord
from worker.kafka import Message, MessageTooLargeError
from worker.problems import Problem

log = structlog.get_logger("worker.deadletter")

MAX_REASON_BYTES = 1000
# Below this a copy cannot even hold the coordinates and the reason.
MIN_LIMIT = 2048

Header = tuple[str, bytes]


def dead_letter(raw: RawRecord, problem: Problem, topic: str, limit: int) -> Message:
    """The copy of ``raw`` for ``topic``, at most ``limit`` bytes as a record batch of
    its own (as far as the coordinates and reason allow)."""
    own, escaped = _writable(raw.headers)
    ours: list[Header] = [
        ("ocitag_dlq_topic", raw.topic.encode()),
        ("ocitag_dlq_partition", str(raw.partition).encode()),
        ("ocitag_dlq_offset", str(raw.offset).encode()),
        ("ocitag_dlq_status", str(problem.status).encode()),
        ("ocitag_dlq_reason", truncate_utf8(problem.detail, MAX_REASON_BYTES)),
    ]
    if escaped:
        ours.append(("ocitag_dlq_escaped_header_keys", str(escaped).encode()))
    key, value = raw.key, raw.value
    if _size(key, value, own + ours) <= limit:
        return Message(topic, key, value, own + ours)
    if value is not None:
        ours.append(("ocitag_dlq_value_omitted_bytes", str(len(value)).encode()))
        value = None
    kept = list(own)
    dropped = 0
    for header in sorted(own, key=_header_size, reverse=True):
        if _size(key, value, kept + ours) <= limit:
            break
        kept.remove(header)
        dropped += 1
    if dropped:
        ours.append(("ocitag_dlq_headers_omitted", str(dropped).encode()))
    if key is not None and _size(key, value, kept + ours) > limit:
        ours.append(("ocitag_dlq_key_omitted_bytes", str(len(key)).encode()))
        key = None
    return Message(topic, key, value, kept + ours)


def omitted(message: Message) -> list[str]:
    """The names of the ``ocitag_dlq_*_omitted*`` headers of a dead letter."""
    return [name for name, _ in message.headers if "_omitted" in name]


def _writable(headers: Sequence[Header]) -> tuple[list[Header], int]:
    """The headers with keys a Kafka client can write (UTF-8); how many were escaped."""
    out: list[Header] = []
    escaped = 0
    for name, value in headers:
        try:
            name.encode("utf-8")
            written = name
        except UnicodeEncodeError:
            written = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            escaped += 1
        out.append((written, value if value is not None else b""))
    return out, escaped


def _header_size(header: Header) -> int:
    return len(header[0].encode()) + len(header[1])


def _size(key: bytes | None, value: bytes | None, headers: list[Header]) -> int:
    """An upper bound of the record batch holding this record alone (what the broker
    compares with max.message.bytes)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def truncate_utf8(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of UTF-8, never cutting a character in two."""
    return text.encode("utf-8", "backslashreplace")[:limit].decode("utf-8", "ignore").encode()


class Sender(Protocol):
    async def send_alone(self, messages: Sequence[Message]) -> None: ...


class DeadLetters:
    """Sends dead letters, each in a record batch of its own, sized to the topic's limit
    (read at start). A refusal for size means the limit shrank since: it is read again
    (or halved, if it cannot be read or did not change) and the copies trimmed to it."""

    def __init__(
        self,
        sender: Sender,
        topic: str,
        limit: int,
        read_limit: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        self._sender = sender
        self.topic = topic
        self.limit = limit
        self._read_limit = read_limit

    async def send(self, rejected: Sequence[tuple[RawRecord, Problem]]) -> None:
        if not rejected:
            return
        while True:
            messages = [
                dead_letter(raw, problem, self.topic, self.limit) for raw, problem in rejected
            ]
            try:
                await self._sender.send_alone(messages)
            except MessageTooLargeError as exc:
                await self._shrink(exc)
                continue
            for raw, message in zip((r for r, _ in rejected), messages, strict=True):
                if left_out := omitted(message):
                    log.warning(
                        "dead_letter_trimmed",
                        partition=raw.partition,
                        offset=raw.offset,
                        omitted=left_out,
                        limit_bytes=self.limit,
                    )
            metrics.DEAD_LETTERED.inc(len(messages))
            return

    async def _shrink(self, exc: Exception) -> None:
        before = self.limit
        read = await self._read_limit() if self._read_limit is not None else None
        self.limit = read if read is not None and read < before else before // 2
        log.warning("dead_letter_refused", error=str(exc)[:300], limit_bytes=self.limit)
        if self.limit < MIN_LIMIT:
            raise FatalError(
                f"the dead-letter topic {self.topic} (OCITAG_DLQ_TOPIC) refuses even a "
                f"{MIN_LIMIT}-byte record: raise its max.message.bytes"
            ) from exc
