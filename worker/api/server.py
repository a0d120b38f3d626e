"""The API's routes on aiohttp (the HTTP stack ingest and the probes share).

One middleware per request does what every route needs: the bearer token, turning any
problem into ``application/problem+json``, the metrics and one canonical log line. The
handlers hold the request's flow; the rules are in ``requests`` and ``replies``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import orjson
import structlog
from aiohttp import web

from worker import metrics, reachability, tracing
from worker.api import replies, requests
from worker.api.access import Access, access_from_settings
from worker.api.auth import Tokens
from worker.api.cursors import CursorSeal
from worker.api.feed import Feed
from worker.api.grants import Action
from worker.api.history_routes import (
    ARTIFACT_TAGS_PATH,
    HISTORY_PATH,
    HISTORY_TEMPLATE,
    HistoryAnswers,
)
from worker.api.listing import visible_page
from worker.api.openapi import document
from worker.api.problems import ApiProblem, too_large, unacknowledged, unpublished
from worker.api.replies import Reply
from worker.api.store import Reads
from worker.api.waiters import Waiters
from worker.api.watch import Scope, Watch, WatchOptions
from worker.api.watch import serve as serve_watch
from worker.api.watchlimits import WatchLimits
from worker.db import classify_db_error
from worker.encode import build_event, to_record
from worker.errors import PermanentError, TransientError, describe
from worker.history_reads import HistoryReads
from worker.identifiers import split_ocitag_id
from worker.kafka import BrokerUnreachableError, Message
from worker.problems import ProblemKind
from worker.settings import Settings
from worker.timefmt import format_rfc3339

log = structlog.get_logger("worker.api")

TAG_PATH = "/ocitags/{tag:.+}/"  # slashes of the ID as path segments, or percent-encoded
TAG_TEMPLATE = "/ocitags/{tag}/"  # the route's canonical form (aiohttp drops the regex)
LIST_PATH = "/ocitags/"
OPENAPI_PATH = "/openapi.json"
#: (method, route) → operationId: the low-cardinality label of metrics and logs
OPERATIONS = {
    ("PUT", TAG_TEMPLATE): "oci-tag-update",
    ("DELETE", TAG_TEMPLATE): "oci-tag-delete",
    ("GET", TAG_TEMPLATE): "oci-tag-get",
    ("GET", LIST_PATH): "oci-tag-list",
    ("GET", HISTORY_TEMPLATE): "oci-tag-history",
    ("GET", ARTIFACT_TAGS_PATH): "artifact-tags",
    ("GET", LIST_PATH + "?watch"): "oci-tag-watch",
    ("GET", OPENAPI_PATH): "openapi",
}
_PUBLIC = {OPENAPI_PATH}

Publish = Callable[[Sequence[Message]], Awaitable[None]]
#: this request's fields of its canonical log line (aiohttp runs each request in its own
#: task, so each has its own value); the caller is among them once authenticated
_FIELDS: ContextVar[dict[str, Any]] = ContextVar("api_request_fields")


@dataclass
class Backends:
    """What the handlers talk to; None until connected (then writes or reads are 503)."""

    publish: Publish | None = None
    reads: Reads | None = None
    history: HistoryReads | None = None
    waiters: Waiters = field(default_factory=Waiters)
    #: the state topic's feed of the watches (None until it runs, or with no state topic)
    feed: Feed | None = None


def _is_watch(request: web.Request) -> bool:
    return request.method == "GET" and request.query.get("watch") == "true"


def _respond(reply: Reply) -> web.Response:
    response = web.Response(status=reply.status, body=reply.body or None, headers=reply.headers)
    if reply.content_type:
        response.content_type = reply.content_type
    return response


def _unavailable(what: str) -> ApiProblem:
    return ApiProblem(ProblemKind.UNAVAILABLE, f"{what} is not available; retry later")


class Api:
    def __init__(
        self,
        settings: Settings,
        tokens: Tokens,
        backends: Backends,
        clock: Callable[[], datetime],
        access: Access | None = None,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self.backends = backends
        self._clock = clock
        #: grants and the rate limit; by default the settings' (monotonic clock)
        self.access = access or access_from_settings(settings, time.monotonic)
        tokens_text = settings.api.api_tokens
        self._cursors = CursorSeal.from_tokens(
            tokens_text.get_secret_value() if tokens_text is not None else None
        )
        self.history = HistoryAnswers(lambda: self.backends.history, _db)
        a = settings.api
        self.watch_limits = WatchLimits(a.api_max_watches, a.api_max_watches_per_caller)
        self._watch_options = WatchOptions(
            a.api_watch_queue_events,
            a.api_watch_heartbeat_seconds,
            a.api_watch_snapshot_page,
            a.api_watch_stall_seconds,
            a.api_watch_settle_seconds,
        )

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[*tracing.server_middlewares(), self._middleware],
            client_max_size=self._settings.api.api_max_body_bytes,
        )
        app.router.add_get(HISTORY_PATH, self.tag_history, allow_head=False)
        app.router.add_get(ARTIFACT_TAGS_PATH, self.artifact_tags, allow_head=False)
        app.router.add_put(TAG_PATH, self.put)
        app.router.add_delete(TAG_PATH, self.delete)
        app.router.add_get(TAG_PATH, self.get, allow_head=False)
        app.router.add_get(LIST_PATH, self.list, allow_head=False)
        app.router.add_get(OPENAPI_PATH, self.openapi, allow_head=False)
        return app

    # ---- the middleware: auth, problems, metrics, the canonical log line

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        template = route.canonical if route is not None else ""
        if template == LIST_PATH and _is_watch(request):
            template += "?watch"
        operation = OPERATIONS.get((request.method, template), "other")
        instance = f"urn:uuid:{uuid.uuid4()}"
        fields: dict[str, Any] = {"operation": operation, "instance": instance}
        _FIELDS.set(fields)
        try:
            if template not in _PUBLIC:
                caller = self._tokens.caller(request.headers.get("Authorization"))
                if caller is None:
                    raise ApiProblem(ProblemKind.UNAUTHORIZED)
                fields["caller"] = caller
                self.access.admit(caller)
            response = await handler(request)
        except ApiProblem as exc:
            response = self._problem(exc, instance)
        except TransientError as exc:
            fields["error"] = str(exc)[:300]
            response = self._problem(_unavailable(exc.service), instance)
        except web.HTTPException as exc:
            limit = self._settings.api.api_max_body_bytes
            response = self._problem(_http_problem(exc, limit, request.content_length), instance)
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception as exc:  # a bug or a refusal (not an outage): answered, logged
            log.exception("request_failed", **fields)
            fields["error"] = describe(exc)[:300]
            response = self._problem(ApiProblem(ProblemKind.UNEXPECTED_ERROR), instance)
        seconds = time.perf_counter() - started
        metrics.API_REQUESTS.labels(operation, str(response.status)).inc()
        metrics.API_REQUEST_SECONDS.labels(operation).observe(seconds)
        log.info(
            "request",
            method=request.method,
            path=request.path[:300],
            status=response.status,
            duration_ms=round(seconds * 1000, 2),
            **fields,
        )
        return response

    def _problem(self, exc: ApiProblem, instance: str) -> web.Response:
        return _respond(
            replies.problem(
                exc,
                base_uri=self._settings.contract.problem_base_uri,
                instance=instance,
                retry_after=self._settings.api.api_retry_after_seconds,
            )
        )

    # ---- writes: an event on the input topic, answered with its outcome

    def _allowed(self, action: Action, ocitag: str) -> None:
        """403 from the pattern alone: before any lookup, read or publish."""
        self.access.require(_FIELDS.get()["caller"], action, ocitag)

    async def put(self, request: web.Request) -> web.Response:
        ocitag = requests.ocitag_id(request.match_info["tag"])
        self._allowed("write", ocitag)
        body = await request.read()
        update = requests.put_body(body, request.headers.get("Content-Type"), ocitag)
        return await self._write(
            request, ocitag, update.artifact, update.actor, update.previous_artifact
        )

    async def delete(self, request: web.Request) -> web.Response:
        ocitag = requests.ocitag_id(request.match_info["tag"])
        self._allowed("delete", ocitag)
        return await self._write(request, ocitag, None, None, None)

    async def _write(
        self,
        request: web.Request,
        ocitag: str,
        artifact: str | None,
        actor: str | None,
        previous_artifact: str | None,
    ) -> web.Response:
        fields = _FIELDS.get()
        fields["ocitag_id"] = ocitag
        headers = request.headers
        expected = requests.expected_version(headers.get("If-Match"), headers.get("If-None-Match"))
        key = requests.idempotency_key(headers.get("Idempotency-Key"))
        publish, reads = self.backends.publish, self.backends.reads
        if publish is None:
            raise _unavailable("kafka")
        source = requests.api_source(fields["caller"])
        received = self._clock()
        if key is not None:
            if reads is None:
                raise _unavailable("db")
            received = await _db(reads.received_at(source, key, received))
        event_id = key or str(uuid.uuid4())
        fields["event_id"] = event_id
        event = build_event(
            ocitag,
            artifact,
            actor=actor,
            previous_artifact=previous_artifact,
            expected_version=expected,
            source=source,
            event_id=event_id,
            time=format_rfc3339(received),
        )
        message = Message(self._settings.topics.input_topic, *to_record(event, "structured"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.api.api_timeout_seconds
        # subscribed BEFORE publishing: the outcome may overtake the acknowledgement
        with self.backends.waiters.expect((source, event_id)) as waiter:
            try:
                await asyncio.wait_for(publish([message]), timeout=deadline - loop.time())
            except BrokerUnreachableError as exc:  # refused before the producer had it
                fields["error"] = "publish: kafka unreachable"
                raise unpublished() from exc
            except (TransientError, TimeoutError) as exc:
                fields["error"] = f"publish: {type(exc).__name__}"
                raise unacknowledged() from exc
            published = loop.time()
            try:
                outcome = await asyncio.wait_for(waiter, timeout=max(deadline - loop.time(), 0))
            except TimeoutError:
                metrics.API_OUTCOMES_LATE.inc()
                fields["outcome"] = "late"
                return _respond(replies.accepted(ocitag, source, event_id))
            finally:
                waited = loop.time() - published
                metrics.API_OUTCOME_WAIT_SECONDS.observe(waited)
                fields["outcome_wait_ms"] = round(waited * 1000, 2)
        version_header = "if-none-match" if "If-None-Match" in headers else "if-match"
        fields["outcome_status"] = outcome.get("status")
        return _respond(replies.from_outcome(outcome, version_header=version_header))

    # ---- reads: PostgreSQL

    async def get(self, request: web.Request) -> web.Response:
        ocitag = requests.ocitag_id(request.match_info["tag"])
        _FIELDS.get()["ocitag_id"] = ocitag
        self._allowed("read", ocitag)
        if "at" in request.query:
            return _respond(await self.history.as_of(ocitag, request.query["at"]))
        reads = self.backends.reads
        if reads is None:
            raise _unavailable("db")
        repository, tag = split_ocitag_id(ocitag)
        stored = await _db(reads.get(repository, tag))
        if stored is None:
            raise ApiProblem(ProblemKind.NOT_FOUND, f"{ocitag} has no live record")
        if requests.etag_matches(request.headers.get("If-None-Match"), stored.version):
            return _respond(replies.not_modified(stored.version))
        return _respond(replies.record(stored.record, stored.version))

    async def list(self, request: web.Request) -> web.StreamResponse:
        if _is_watch(request):
            return await self._watch(request)
        query = requests.list_query(request.query, self._cursors)
        caller = _FIELDS.get()["caller"]
        self.access.require_any(caller, "read", "query.repository", query.repository)
        reads = self.backends.reads
        if reads is None:
            raise _unavailable("db")
        visible = None if self.access.grants.unrestricted else self.access.reader(caller)
        rows, last = await _db(visible_page(reads, query, visible))
        cursor = requests.encode_cursor(query.repository, last, self._cursors) if last else None
        link = (
            f"{LIST_PATH}?repository={quote(query.repository, safe='')}"
            f"&limit={query.limit}&cursor={cursor}"
            if cursor
            else None
        )
        return _respond(replies.page([r.record for r in rows], cursor, link))

    async def tag_history(self, request: web.Request) -> web.Response:
        ocitag = requests.ocitag_id(request.match_info["tag"])
        _FIELDS.get()["ocitag_id"] = ocitag
        self._allowed("read", ocitag)
        return _respond(await self.history.history(ocitag, request.query))

    async def artifact_tags(self, request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        caller = _FIELDS.get()["caller"]
        self.access.require_any(caller, "read", "path.digest", digest)
        visible = None if self.access.grants.unrestricted else self.access.reader(caller)
        return _respond(await self.history.tags(digest, request.query, visible))

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        """``GET /ocitags/?watch=true``: Server-Sent Events (worker/api/watch.py)."""
        fields = _FIELDS.get()
        repository = requests.watch_query(request.query)
        if not self._settings.api.api_max_watches:
            raise ApiProblem(
                ProblemKind.TOO_MANY_WATCHES, "the watch is off (OCITAG_API_MAX_WATCHES=0)"
            )
        if not self._settings.topics.state_topic:
            detail = "the watch needs the state topic (OCITAG_STATE_TOPIC is empty)"
            raise ApiProblem(ProblemKind.UNAVAILABLE, detail)
        feed, reads = self.backends.feed, self.backends.reads
        if feed is None:
            raise _unavailable("kafka")
        if reads is None:
            raise _unavailable("db")
        caller = fields["caller"]
        # a caller with no read grant at all: 403; else each tag is filtered by its grants
        self.access.require_any(caller, "read", "query.repository", repository or "**")
        refused = self.watch_limits.admit(caller)
        if refused is not None:
            raise ApiProblem(ProblemKind.TOO_MANY_WATCHES, refused)
        metrics.API_WATCHERS.set(len(self.watch_limits))
        may_read = self.access.reader(caller)
        options = self._watch_options
        try:
            return await serve_watch(
                request,
                lambda response: Watch(
                    response,
                    feed,
                    reads,
                    options=options,
                    scope=Scope(repository, may_read, self.access.grants.unrestricted),
                    fields=fields,
                ),
            )
        finally:
            self.watch_limits.release(caller)
            metrics.API_WATCHERS.set(len(self.watch_limits))

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=_openapi_bytes(), content_type="application/json")


@cache
def _openapi_bytes() -> bytes:
    return orjson.dumps(document())


async def _db(work: Awaitable[Any]) -> Any:
    """A database answer, or 503 when PostgreSQL is away."""
    try:
        answer = await work
    except Exception as exc:
        error = classify_db_error(exc, "api")
        if isinstance(error, TransientError):
            if error.cause.outage:  # logged once per outage, not per request
                reachability.POSTGRESQL.failed(str(error))
            raise error from exc
        raise PermanentError(str(error)) from exc
    reachability.POSTGRESQL.succeeded()
    return answer


def _http_problem(
    exc: web.HTTPException, max_body_bytes: int, body_bytes: int | None
) -> ApiProblem:
    """aiohttp's own refusals as the API's problems; 413 (aiohttp reads no more than
    ``client_max_size``) names the limit and its setting rather than only the reason."""
    if exc.status == 413:
        return too_large(max_body_bytes, body_bytes)
    kinds = {404: ProblemKind.NO_ROUTE, 405: ProblemKind.METHOD_NOT_ALLOWED}
    kind = kinds.get(exc.status, ProblemKind.MALFORMED_REQUEST)
    return ApiProblem(kind, exc.reason)


def utc_now() -> datetime:
    return datetime.now(UTC)
