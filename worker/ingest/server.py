"""The webhook receiver: ``POST /webhooks/<kind>`` and ``/webhooks/<kind>/<secret>``.

One delivery, in order: the kind must be enabled (else 404); the delivery proves itself
and its body is read (``gate``: 401, 413, 408); the kind's mapper turns it
into tag events and ignored entries (400 problem+json naming what it could not map);
missing digests are looked up (502 when they cannot be); the events are produced and
every acknowledgement awaited, all within OCITAG_INGEST_DEADLINE_SECONDS (503 with
Retry-After when Kafka is away or slow); only then 200, listing what was published and
what was ignored. One log line per delivery says how it ended.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from worker import metrics, tracing
from worker.errors import WorkerError
from worker.ingest import refusals
from worker.ingest.arrivals import Arrivals
from worker.ingest.auth import Compare
from worker.ingest.delivery import accepted_body, cloud_event, messages, plan
from worker.ingest.gate import Enabled, Gate, decoy
from worker.ingest.mapping import RECEIVED_AT_HEADER, REGISTRY_HEADER, MappingError
from worker.ingest.receivers import outside_hosts
from worker.ingest.refusals import RefusedError
from worker.ingest.resolve import DigestResolver, UnresolvedDigestError, resolve_all
from worker.ingest.sending import AckTimeoutError, InFlightSends
from worker.kafka import Message
from worker.problems import PROBLEM_JSON, about_blank
from worker.startup import EventSink
from worker.timefmt import format_rfc3339

log = structlog.get_logger("worker.ingest")


@dataclass(frozen=True, slots=True)
class Limits:
    topic: str
    max_body_bytes: int
    read_timeout: float
    deadline: float
    retry_after: int
    problem_base_uri: str


@dataclass
class _Delivery:
    """What one delivery did, for its log line and metrics."""

    kind: str
    receiver: str = "unknown"
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    size: int = 0
    published: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    cause: str | None = None


@web.middleware
async def _routing_problems(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """What the router refuses by itself (an unknown path, a method other than POST) is
    answered as problem+json like every other refusal, not aiohttp's plain text."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        headers = {"Content-Type": PROBLEM_JSON}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return web.Response(
            status=exc.status, body=orjson.dumps(about_blank(exc.status)), headers=headers
        )


#: kinds whose senders validate an endpoint with the CloudEvents webhook handshake
VALIDATING_KINDS = frozenset({"acr", "cloudevents", "zot"})


class IngestServer:
    """The aiohttp application of ``ocitag-worker ingest`` (probes are served apart)."""

    def __init__(
        self,
        kinds: Mapping[str, Enabled],
        sink: EventSink,
        resolver: DigestResolver,
        limits: Limits,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        compare: Compare = hmac.compare_digest,
    ) -> None:
        self._kinds = dict(kinds)
        self._gate = Gate(
            limits.max_body_bytes, limits.read_timeout, limits.problem_base_uri, compare
        )
        self._sends = InFlightSends(sink)
        self._resolver = resolver
        self._limits = limits
        self._clock = clock
        self._arrivals = Arrivals()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._limits.max_body_bytes,
            middlewares=[*tracing.server_middlewares(), _routing_problems],
        )
        app.router.add_post("/webhooks/{kind}", self.handle)
        app.router.add_post("/webhooks/{kind}/{secret}", self.handle)
        app.router.add_route("OPTIONS", "/webhooks/{kind}", self.validation)
        return app

    async def validation(self, request: web.Request) -> web.StreamResponse:
        """The CloudEvents HTTP webhook validation handshake ("abuse protection"): an
        ``OPTIONS`` with ``WebHook-Request-Origin``, answered with
        ``WebHook-Allowed-Origin``. Event Grid sends it for subscriptions in the
        CloudEvents schema (acr); CloudEvents senders may too. It publishes nothing and
        Event Grid sends it without the subscription's delivery headers, so it is
        answered without the secret, for enabled CloudEvents-speaking kinds only."""
        name = request.match_info["kind"]
        origin = request.headers.get("WebHook-Request-Origin", "").strip()
        enabled = self._kinds.get(name)
        validating = enabled is not None and enabled.spec.name in VALIDATING_KINDS
        if not validating or not origin:
            status = 404 if not validating else 400
            title = None if status == 404 else "WebHook-Request-Origin is required"
            return web.Response(
                status=status,
                body=orjson.dumps(about_blank(status, title)),
                headers={"Content-Type": PROBLEM_JSON},
            )
        log.info("webhook_validation", kind=name, origin=origin[:200])
        return web.Response(
            status=200,
            headers={
                "WebHook-Allowed-Origin": origin,
                "WebHook-Allowed-Rate": "*",
                "Allow": "POST, OPTIONS",
            },
        )

    async def close(self) -> None:
        """Sends that outlived their delivery: waited for briefly, then cancelled."""
        await self._sends.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        received = self._clock()
        name = request.match_info["kind"]
        enabled = self._kinds.get(name)
        if enabled is None:  # checked against decoys like a receiver: 401 alike, as costly
            enabled = decoy(request)
        known = not enabled.decoy
        delivery = _Delivery(
            enabled.spec.name if known else "unknown", name if known else "unknown"
        )
        try:
            status, body, headers = await self._deliver(
                request, enabled, delivery, started, received
            )
        except RefusedError as refused:
            status, body, headers = refused.status, refused.body, refused.headers
            delivery.cause = refused.cause
            headers = {**headers, "Content-Type": PROBLEM_JSON}
        except Exception:
            log.exception("ingest_internal_error", kind=delivery.kind)
            status, body = 500, about_blank(500)
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
        body = await self._gate.body(request, enabled, headers)
        delivery.size = len(body)
        if "registry" in request.query:
            headers[REGISTRY_HEADER] = request.query["registry"]
        if spec.arrival_timed:  # a retry of this body keeps its first arrival's time
            received = self._arrivals.first(spec.name, body, received)
        headers[RECEIVED_AT_HEADER] = format_rfc3339(received)
        base = self._limits.problem_base_uri
        try:
            mapped = spec.map_delivery(body, headers)
            decided = plan(mapped, hosted=spec.hosted)
        except MappingError as exc:
            raise refusals.unmappable(base, exc, delivery.delivery_id) from None
        outside = outside_hosts(mapped, enabled.hosts, delivery.receiver)
        if outside:  # before any look-up or publish: the whole delivery is refused
            raise refusals.host_not_allowed(base, outside, delivery.delivery_id)
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

    async def _resolve(self, events: Sequence[Any], budget: float) -> list[Any]:
        try:
            async with asyncio.timeout(budget):
                return await resolve_all(events, self._resolver)
        except UnresolvedDigestError as exc:
            detail = f"{exc.ocitag_id}: {exc.reason}"
            raise refusals.unresolved(self._limits.problem_base_uri, detail) from None
        except TimeoutError:
            raise refusals.unresolved(
                self._limits.problem_base_uri,
                "the registry did not answer the digest look-up "
                "within OCITAG_INGEST_DEADLINE_SECONDS",
            ) from None

    async def _produce(self, batch: list[Message], delivery: _Delivery, budget: float) -> None:
        """Send and wait for every ack (sending.InFlightSends: a retry joins a send still
        in flight); Kafka away or slower than the deadline is 503."""
        started = time.monotonic()
        try:
            await self._sends.send(batch, budget)
        except (AckTimeoutError, WorkerError) as exc:
            raise refusals.unavailable(
                self._limits.problem_base_uri, str(exc), self._limits.retry_after
            ) from None
        metrics.INGEST_PRODUCE_SECONDS.labels(delivery.kind).observe(time.monotonic() - started)

    def _account(self, delivery: _Delivery, status: int, seconds: float) -> None:
        kind = delivery.kind
        if status >= 300:
            result = "rejected"
            metrics.INGEST_REJECTED.labels(kind, delivery.cause or "internal").inc()
            if status < 500:  # a refusal of the sender, by receiver (configured names)
                reason = delivery.cause or "internal"
                metrics.INGEST_RECEIVER_REFUSALS.labels(delivery.receiver, reason).inc()
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
            receiver=delivery.receiver,
            status=status,
            result=result,
            cause=delivery.cause,
            published=delivery.published,
            ignored=delivery.ignored or None,
            bytes=delivery.size,
            delivery_id=delivery.delivery_id,
            duration_ms=round(seconds * 1000, 2),
        )
