"""A realistic input stream: tag-moved CloudEvents over many tags with skewed
(Zipf-like) popularity, in both content modes, with duplicate deliveries, out-of-order
times, invalid data (422) and a few undecodable records (400); and a fast producer."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from worker.identifiers import normalize_ocitag_id

Kind = Literal["valid", "invalid", "undecodable"]
Headers = list[tuple[str, bytes]]
STRUCTURED = [("content-type", b"application/cloudevents+json")]


@dataclass(frozen=True, slots=True)
class Record:
    """One input record and what its outcome must be."""

    key: bytes | None
    value: bytes
    headers: Headers
    kind: Kind  # valid → 200/409/412, invalid → 422, undecodable → 400
    #: the event id its outcome names (``causationid``); None when the record cannot be
    #: read that far (its outcome names the record: ``data.instance``)
    ident: str | None
    duplicate: bool = False


@dataclass(frozen=True)
class StreamShape:
    tags: int = 50_000
    duplicates: float = 0.05
    out_of_order: float = 0.03
    invalid: float = 0.02
    undecodable_share: float = 0.15  # of the invalid ones: 400 instead of 422
    binary: float = 0.10  # binary content mode (ce_* headers)
    zipf: float = 1.0  # popularity exponent; 0 = uniform
    tags_per_repository: int = 8
    namespace: str = ""  # prefixes the repository paths: distinct tags for another run
    #: seconds: each event's time is moved back by a uniformly random amount up to this
    #: (0: none); a spread as long as the backlog gives random event times (most of a
    #: tag's later deliveries are then late: 409 superseded)
    time_spread: float = 0.0


@dataclass(frozen=True, slots=True)
class _Tag:
    repository: str  # as a registry sends it (not normalised)
    tag: str
    ocitag_id: str  # canonical
    source: str


_HOSTS = (
    "",
    "",
    "",
    "",
    "ghcr.io/",
    "ghcr.io/",
    "registry.example.com/",
    "registry.example.com/",
    "public.ecr.aws/",
    "localhost:5000/",
)
_TAG_NAMES = ("latest", "stable", "main", "edge", "v{t}", "1.{t}.0", "sha-{t:07x}", "release-{t}")
_ACTORS = ("alice", "bob", "ci-bot", "renovate[bot]", "release-pipeline", None)


def _tag_table(shape: StreamShape) -> list[_Tag]:
    table = []
    for t in range(shape.tags):
        r = t // shape.tags_per_repository
        host = _HOSTS[r % len(_HOSTS)]
        path = shape.namespace + (f"team{r % 53}/app{r}" if host or r % 3 else f"app{r}")
        repository = host + path
        tag = _TAG_NAMES[t % len(_TAG_NAMES)].format(t=t)
        source = f"https://{host.rstrip('/') or 'hub.docker.com'}/webhook"
        table.append(_Tag(repository, tag, normalize_ocitag_id(f"{repository}:{tag}"), source))
    return table


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Generator:
    """Makes records one at a time; ``when`` is the event's creation time (it goes in
    the event's ``time``, moved back a little for the out-of-order ones)."""

    def __init__(self, shape: StreamShape, seed: int, id_prefix: str) -> None:
        self.shape = shape
        self._rng = random.Random(seed)
        self._tags = _tag_table(shape)
        weights = [1 / (n + 1) ** shape.zipf for n in range(shape.tags)]
        self._cum = list(itertools.accumulate(weights))
        self._prefix = id_prefix
        self._count = 0
        self._recent: deque[Record] = deque(maxlen=2_000)

    def _pick(self) -> _Tag:
        x = self._rng.random() * self._cum[-1]
        return self._tags[min(bisect.bisect_left(self._cum, x), len(self._tags) - 1)]

    def next(self, when: datetime) -> Record:
        """A new event, or (``duplicates`` of the time) a redelivery of a recent one."""
        if self._recent and self._rng.random() < self.shape.duplicates:
            return replace(self._rng.choice(self._recent), duplicate=True)
        record = self._fresh(when)
        self._recent.append(record)
        return record

    def many(self, count: int, start: datetime, step: timedelta) -> list[Record]:
        return [self.next(start + step * n) for n in range(count)]

    def _fresh(self, when: datetime) -> Record:
        rng = self._rng
        self._count += 1
        event_id = f"{self._prefix}-{self._count:09d}"
        tag = self._pick()
        if rng.random() < self.shape.out_of_order:
            when -= timedelta(seconds=rng.uniform(0.05, 5.0))
        if self.shape.time_spread:
            when -= timedelta(seconds=rng.uniform(0.0, self.shape.time_spread))
        digest = f"{rng.getrandbits(256):064x}"
        data: dict[str, Any] = {
            "repository": tag.repository,
            "tag": tag.tag,
            "artifact": digest if rng.random() < 0.7 else f"sha256:{digest}",
        }
        actor = rng.choice(_ACTORS)
        if actor is not None:
            data["actor"] = actor
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": tag.source,
            "type": "ocitag.moved.v1",
            "time": rfc3339(when),
        }
        if rng.random() < 0.5:
            attributes["subject"] = tag.ocitag_id
        kind: Kind = "valid"
        ident: str | None = event_id
        if rng.random() < self.shape.invalid:
            if rng.random() < self.shape.undecodable_share:
                return self._undecodable(tag, attributes, data, event_id)
            kind = "invalid"
            self._break_data(attributes, data)
        key = tag.ocitag_id.encode()
        if rng.random() < self.shape.binary:
            headers: Headers = [(f"ce_{k}", str(v).encode()) for k, v in attributes.items()]
            headers.append(("content-type", b"application/json"))
            return Record(key, _json(data), headers, kind, ident)
        return Record(key, _json({**attributes, "data": data}), list(STRUCTURED), kind, ident)

    def _break_data(self, attributes: dict[str, Any], data: dict[str, Any]) -> None:
        """One or two broken rules of the tag-moved data (422)."""
        for _ in range(self._rng.choice((1, 1, 1, 2))):
            match self._rng.randrange(6):
                case 0:
                    data["artifact"] = "not-a-digest"
                case 1:
                    data["tag"] = "-" + data["tag"]
                case 2:
                    data["colour"] = "blue"  # unknown member
                case 3:
                    data.pop("artifact", None)
                case 4:
                    data["artifact"] = str(data.get("artifact", "abc")).upper()
                case _:
                    attributes["subject"] = "docker.io/library/other:tag"

    def _undecodable(
        self, tag: _Tag, attributes: dict[str, Any], data: dict[str, Any], event_id: str
    ) -> Record:
        """Not a decodable CloudEvent (400). Only an unknown type still names the event."""
        key = tag.ocitag_id.encode()
        body = _json({**attributes, "data": data})
        match self._rng.randrange(4):
            case 0:
                return Record(
                    key, b"\x01not json " + body[:40], list(STRUCTURED), "undecodable", None
                )
            case 1:
                unknown = _json({**attributes, "type": "ocitag.renamed.v1", "data": data})
                return Record(key, unknown, list(STRUCTURED), "undecodable", event_id)
            case 2:
                no_id = {k: v for k, v in attributes.items() if k != "id"}
                return Record(
                    key, _json({**no_id, "data": data}), list(STRUCTURED), "undecodable", None
                )
            case _:
                return Record(key, body, [("content-type", b"text/plain")], "undecodable", None)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def kind_counts(records: Sequence[Record]) -> dict[str, int]:
    """How many outcomes of each kind the records must get (duplicates included)."""
    counts = {"valid": 0, "invalid": 0, "undecodable": 0}
    for record in records:
        counts[record.kind] += 1
    return counts


def fast_producer(kafka: str) -> AIOKafkaProducer:
    """For loading a backlog: big batches, some linger, still acks=all."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka,
        acks="all",
        enable_idempotence=True,
        linger_ms=50,
        max_batch_size=1_048_576,
        max_request_size=4_194_304,
        request_timeout_ms=60_000,
    )


async def produce(kafka: str, topic: str, records: Sequence[Record]) -> list[tuple[int, int]]:
    """Publish every record (in order); returns each one's (partition, offset)."""
    producer = fast_producer(kafka)
    await producer.start()
    placed: list[tuple[int, int]] = []
    try:
        for first in range(0, len(records), 20_000):
            chunk = records[first : first + 20_000]
            futures = [
                await producer.send(topic, r.value, key=r.key, headers=r.headers) for r in chunk
            ]
            for meta in await asyncio.gather(*futures):
                placed.append((meta.partition, meta.offset))
    finally:
        await producer.stop()
    return placed
