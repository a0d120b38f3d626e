"""The webhook receiver: ``POST /webhooks/<kind>`` and ``/webhooks/<kind>/<secret>``.

One delivery, in order: the kind must be enabled (else 404); header and path secrets are
checked before the body is read, signatures right after (401, no detail); the body is
read within the size limit (413) and the read timeout (408); the kind's mapper turns it
into tag events and ignored entries (400 problem+json naming what it could not map);
missing digests are looked up (502 when they cannot be); the events are produced and
every acknowledgement awaited, all within OCITAG_INGEST_DEADLINE_SECONDS (503 with
Retry-After when Kafka is away or slow); only then 200, listing what was published and
what was ignored. One log line per delivery says how it ended.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from worker import metrics
from worker.errors import WorkerError
from worker.ingest.auth import authentic
from worker.ingest.delivery import accepted_body, cloud_event, messages, plan
from worker.ingest.kinds import KindSpec
from worker.ingest.mapping import RECEIVED_AT_HEADER, REGISTRY_HEADER, MappingError
from worker.ingest.oidc import OidcVerifier
from worker.ingest.resolve import DigestResolver, UnresolvedDigestError, resolve_all
from worker.kafka import Message
from worker.problems import ErrorItem
from worker.timefmt import format_rfc3339

log = structlog.get_logger("worker.ingest")

PROBLEM_JSON = "application/problem+json"
_CHUNK = 65_536


class EventSink(Protocol):
    """Where events go: ``worker.kafka.Producer`` (behind ``KafkaSink``) or a test fake."""

    async def send_all(self, messages: Sequence[Message]) -> None: ...


@dataclass(frozen=True, slots=True)
class Enabled:
    """A served kind: its mapper and scheme, and the secrets that are valid now."""

    spec: KindSpec
    secrets: tuple[bytes, ...]
    #: also accepted on the route without a path secret: a verified OIDC token (gar)
    oidc: OidcVerifier | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    topic: str
    max_body_bytes: int
    read_timeout: float
    deadline: float
    retry_after: int
    problem_base_uri: str


class RefusedError(Exception):
    """The delivery ends with this answer (a problem, or a bare status)."""

    def __init__(self, status: int, cause: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause
        self.body = body or {"title": _TITLES.get(status, "Error"), "status": status}
        self.headers: dict[str, str] = {}


_TITLES = {
    400: "Delivery could not be mapped",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    500: "Internal Server Error",
    502: "Digest could not be resolved",
    503: "Kafka unavailable",
}


@dataclass
class _Delivery:
    """What one delivery did, for its log line and metrics."""

    kind: str
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    size: int = 0
    published: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    cause: str | None = None


class IngestServer:
    """The aiohttp application of ``ocitag-worker ingest`` (probes are served apart)."""

    def __init__(
        self,
        kinds: Mapping[str, Enabled],
        sink: EventSink,
        resolver: DigestResolver,
        limits: Limits,
    ) -> None:
        self._kinds = dict(kinds)
        self._sink = sink
        self._resolver = resolver
        self._limits = limits
        # sends in flight by record value: a retry of the same delivery joins them
        self._sending: dict[bytes | None, asyncio.Future[None]] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._limits.max_body_bytes)
        app.router.add_post("/webhooks/{kind}", self.handle)
        app.router.add_post("/webhooks/{kind}/{secret}", self.handle)
        return app

    async def close(self) -> None:
        """Wait (briefly) for sends that outlived their delivery."""
        if self._sending:
            await asyncio.wait(set(self._sending.values()), timeout=5)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        received = datetime.now(UTC)
        name = request.match_info["kind"]
        enabled = self._kinds.get(name)
        delivery = _Delivery(kind=name if enabled else "unknown")
        try:
            if enabled is None:
                raise RefusedError(404, "not_found")
            status, body, headers = await self._deliver(
                request, enabled, delivery, started, received
            )
        except RefusedError as refused:
            status, body, headers = refused.status, refused.body, refused.headers
            delivery.cause = refused.cause
            headers = {**headers, "Content-Type": PROBLEM_JSON}
        except Exception:
            log.exception("ingest_internal_error", kind=delivery.kind)
            status, body = 500, {"title": _TITLES[500], "status": 500}
            headers = {"Content-Type": PROBLEM_JSON}
            delivery.cause = "internal"
        self._account(delivery, status, time.monotonic() - started)
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            headers={"Content-Type": "application/json", **headers},
        )

    async def _deliver(
        self,
        request: web.Request,
        enabled: Enabled,
        delivery: _Delivery,
        started: float,
        received: datetime,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        spec = enabled.spec
        headers = {k.lower(): v for k, v in request.headers.items()}
        path_secret = request.match_info.get("secret")
        if not spec.auth.needs_body and not await self._authentic(enabled, headers, path_secret):
            raise RefusedError(401, "unauthenticated")
        body = await self._read(request)
        delivery.size = len(body)
        if spec.auth.needs_body and not authentic(
            spec.auth, enabled.secrets, headers, body, path_secret
        ):
            raise RefusedError(401, "unauthenticated")
        if "registry" in request.query:
            headers[REGISTRY_HEADER] = request.query["registry"]
        headers[RECEIVED_AT_HEADER] = format_rfc3339(received)
        try:
            decided = plan(spec.map_delivery(body, headers))
        except MappingError as exc:
            raise RefusedError(400, "unmappable", self._unmappable(exc, delivery)) from None
        for _, why in decided.ignored:
            delivery.ignored[why.reason] = delivery.ignored.get(why.reason, 0) + 1
        if decided.handshake is not None:
            return 200, decided.handshake.body, {}
        remaining = self._limits.deadline - (time.monotonic() - started)
        events = await self._resolve(decided.events, max(remaining, 0.001))
        built = [cloud_event(event) for event in events]
        if built:
            remaining = self._limits.deadline - (time.monotonic() - started)
            await self._produce(messages(self._limits.topic, built), delivery, remaining)
            for event in events:
                metrics.INGEST_EVENTS.labels(delivery.kind, event.action).inc()
        delivery.published = len(built)
        return 200, accepted_body(built, decided.ignored), {}

    @staticmethod
    async def _authentic(
        enabled: Enabled, headers: Mapping[str, str], path_secret: str | None
    ) -> bool:
        if path_secret is None and enabled.oidc is not None:
            return await enabled.oidc.authentic(headers.get("authorization"))
        return authentic(enabled.spec.auth, enabled.secrets, headers, b"", path_secret)

    async def _read(self, request: web.Request) -> bytes:
        limit = self._limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RefusedError(413, "too_large", self._too_large(request.content_length))
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._limits.read_timeout):
                while chunk := await request.content.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise RefusedError(413, "too_large", self._too_large(size))
                    chunks.append(chunk)
        except TimeoutError:
            raise RefusedError(408, "read_timeout") from None
        return b"".join(chunks)

    async def _resolve(self, events: Sequence[Any], budget: float) -> list[Any]:
        try:
            async with asyncio.timeout(budget):
                return await resolve_all(events, self._resolver)
        except UnresolvedDigestError as exc:
            raise RefusedError(
                502,
                "unresolved_digest",
                self._problem(502, "unresolved-digest", f"{exc.ocitag_id}: {exc.reason}"),
            ) from None
        except TimeoutError:
            raise RefusedError(
                502,
                "unresolved_digest",
                self._problem(
                    502,
                    "unresolved-digest",
                    "the registry did not answer the digest look-up "
                    "within OCITAG_INGEST_DEADLINE_SECONDS",
                ),
            ) from None

    async def _produce(self, batch: list[Message], delivery: _Delivery, budget: float) -> None:
        """Send and wait for every ack. A send that outlives its delivery's deadline is
        left to finish (asyncio.wait, not wait_for), and a retried delivery waits for it
        rather than sending the same events again: a sender retrying every second while
        Kafka is away must not pile up copies."""
        started = time.monotonic()
        waits = {self._sending[m[2]] for m in batch if m[2] in self._sending}
        fresh = [m for m in batch if m[2] not in self._sending]
        if fresh:
            task = asyncio.ensure_future(self._sink.send_all(fresh))
            values = [m[2] for m in fresh]
            for value in values:
                self._sending[value] = task
            task.add_done_callback(lambda done: self._sent(done, values))
            waits.add(task)
        done, pending = await asyncio.wait(waits, timeout=max(budget, 0.001))
        if pending:
            raise self._unavailable("Kafka did not acknowledge within the deadline")
        for finished in done:
            error = finished.exception()
            if error is None:
                continue
            if not isinstance(error, WorkerError):
                raise error
            raise self._unavailable(str(error))
        metrics.INGEST_PRODUCE_SECONDS.labels(delivery.kind).observe(time.monotonic() - started)

    def _sent(self, task: asyncio.Future[None], values: list[bytes | None]) -> None:
        for value in values:
            if self._sending.get(value) is task:
                del self._sending[value]
        if not task.cancelled() and task.exception() is not None:
            log.debug("ingest_send_failed", error=str(task.exception()))

    def _unavailable(self, detail: str) -> RefusedError:
        refused = RefusedError(
            503,
            "kafka_unavailable",
            self._problem(503, "kafka-unavailable", f"nothing was accepted: {detail}"),
        )
        refused.headers["Retry-After"] = str(self._limits.retry_after)
        return refused

    def _too_large(self, size: int) -> dict[str, Any]:
        limit = self._limits.max_body_bytes
        return self._problem(
            413,
            "too-large",
            f"the delivery is over {limit} bytes (OCITAG_INGEST_MAX_BODY_BYTES)",
            [ErrorItem("body", f"must be at most {limit} bytes", size)],
        )

    def _unmappable(self, exc: MappingError, delivery: _Delivery) -> dict[str, Any]:
        return self._problem(
            400,
            "unmappable-delivery",
            f"{exc.location} {exc.message}",
            [ErrorItem(exc.location, exc.message, exc.value)],
            instance=f"urn:uuid:{delivery.delivery_id}",
        )

    def _problem(
        self,
        status: int,
        slug: str,
        detail: str,
        errors: Sequence[ErrorItem] = (),
        instance: str | None = None,
    ) -> dict[str, Any]:
        """The seed's ErrorModel shape (RFC 9457)."""
        return {
            "type": self._limits.problem_base_uri + slug,
            "title": _TITLES[status],
            "status": status,
            "detail": detail,
            "instance": instance or f"urn:uuid:{uuid.uuid4()}",
            "errors": [item.as_json() for item in errors],
        }

    def _account(self, delivery: _Delivery, status: int, seconds: float) -> None:
        kind = delivery.kind
        if status >= 300:
            result = "rejected"
            metrics.INGEST_REJECTED.labels(kind, delivery.cause or "internal").inc()
        else:
            result = "accepted" if delivery.published else "ignored"
        metrics.INGEST_DELIVERIES.labels(kind, result).inc()
        if result != "rejected":  # a refused delivery comes back: count its entries then
            for reason, count in delivery.ignored.items():
                metrics.INGEST_IGNORED.labels(kind, reason).inc(count)
        metrics.INGEST_DELIVERY_SECONDS.labels(kind).observe(seconds)
        emit = log.warning if status >= 500 else log.info
        emit(
            "delivery",
            kind=kind,
            status=status,
            result=result,
            cause=delivery.cause,
            published=delivery.published,
            ignored=delivery.ignored or None,
            bytes=delivery.size,
            delivery_id=delivery.delivery_id,
            duration_ms=round(seconds * 1000, 2),
        )
