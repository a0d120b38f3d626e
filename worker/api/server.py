"""The API's routes on aiohttp (the HTTP stack ingest and the probes share).

One middleware per request does what every route needs: the bearer token, turning any
problem into ``application/problem+json``, the metrics and one canonical log line. The
handlers hold the request's flow; the rules are in ``requests`` and ``replies``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import orjson
import structlog
from aiohttp import web

from worker import metrics, tracing
from worker.api import replies, requests
from worker.api.access import Access, access_from_settings
from worker.api.auth import Tokens
from worker.api.backends import Backends, database
from worker.api.cursors import CursorSeal
from worker.api.grants import Action
from worker.api.history_routes import (
    ARTIFACT_TAGS_PATH,
    HISTORY_PATH,
    HISTORY_TEMPLATE,
    HistoryAnswers,
)
from worker.api.listing import visible_page
from worker.api.openapi import document
from worker.api.problems import ApiProblem, too_large, unavailable
from worker.api.replies import Reply
from worker.api.watches import Watches
from worker.api.writes import Writer
from worker.errors import TransientError, describe
from worker.identifiers import split_ocitag_id
from worker.problems import ProblemKind
from worker.settings import Settings

log = structlog.get_logger("worker.api")

TAG_PATH = "/ocitags/{tag:.+}/"  # slashes of the ID as path segments, or percent-encoded
TAG_TEMPLATE = "/ocitags/{tag}/"  # the route's canonical form (aiohttp drops the regex)
LIST_PATH = "/ocitags/"
OPENAPI_PATH = "/openapi.json"
#: (method, route) → operationId: the low-cardinality label of metrics and logs. A HEAD
#: is its GET's operation (``_operation``): the log line's ``method`` tells them apart.
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
#: RFC 9110 §9.3.2: HEAD wherever GET is served (aiohttp answers it with the GET's
#: status and headers, and no body)
_READS = {"GET", "HEAD"}

#: this request's fields of its canonical log line (aiohttp runs each request in its own
#: task, so each has its own value); the caller is among them once authenticated
_FIELDS: ContextVar[dict[str, Any]] = ContextVar("api_request_fields")


def _is_watch(request: web.Request) -> bool:
    return request.method in _READS and request.query.get("watch") == "true"


def _operation(method: str, template: str) -> str:
    """The request's operation label: one of ``OPERATIONS``' ids, or ``other``."""
    return OPERATIONS.get(("GET" if method == "HEAD" else method, template), "other")


def _respond(reply: Reply) -> web.Response:
    response = web.Response(status=reply.status, body=reply.body or None, headers=reply.headers)
    if reply.content_type:
        response.content_type = reply.content_type
    return response


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
        self.history = HistoryAnswers(lambda: self.backends.history, database)
        self._writer = Writer(settings, lambda: self.backends, clock)
        self.watches = Watches(settings, lambda: self.access, lambda: self.backends)

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[*tracing.server_middlewares(), self._middleware],
            client_max_size=self._settings.api.api_max_body_bytes,
        )
        app.router.add_get(HISTORY_PATH, self.tag_history)
        app.router.add_get(ARTIFACT_TAGS_PATH, self.artifact_tags)
        app.router.add_put(TAG_PATH, self.put)
        app.router.add_delete(TAG_PATH, self.delete)
        app.router.add_get(TAG_PATH, self.get)
        app.router.add_get(LIST_PATH, self.list)
        app.router.add_get(OPENAPI_PATH, self.openapi)
        # once the requests in flight have answered: the publishes they left running on
        app.on_cleanup.append(lambda _: self._writer.close())
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
        operation = _operation(request.method, template)
        instance = f"urn:uuid:{uuid.uuid4()}"
        fields: dict[str, Any] = {"operation": operation, "instance": instance}
        _FIELDS.set(fields)
        try:
            if template not in _PUBLIC:
                caller = self._tokens.caller(
                    requests.authorization(request.headers.getall("Authorization", []))
                )
                if caller is None:
                    raise ApiProblem(ProblemKind.UNAUTHORIZED)
                fields["caller"] = caller
                self.access.admit(caller)
            response = await handler(request)
        except ApiProblem as exc:
            response = self._problem(exc, instance)
        except TransientError as exc:
            fields["error"] = str(exc)[:300]
            response = self._problem(unavailable(exc.service), instance)
        except web.HTTPException as exc:
            limit = self._settings.api.api_max_body_bytes
            response = self._problem(_http_problem(exc, limit, request), instance)
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
        change = (update.artifact, update.actor, update.previous_artifact)
        return _respond(await self._writer.write(request, ocitag, change, _FIELDS.get()))

    async def delete(self, request: web.Request) -> web.Response:
        ocitag = requests.ocitag_id(request.match_info["tag"])
        self._allowed("delete", ocitag)
        return _respond(
            await self._writer.write(request, ocitag, (None, None, None), _FIELDS.get())
        )

    # ---- reads: PostgreSQL

    async def get(self, request: web.Request) -> web.Response:
        ocitag = requests.ocitag_id(request.match_info["tag"])
        _FIELDS.get()["ocitag_id"] = ocitag
        self._allowed("read", ocitag)
        if "at" in request.query:
            return _respond(await self.history.as_of(ocitag, request.query["at"]))
        reads = self.backends.reads
        if reads is None:
            raise unavailable("db")
        repository, tag = split_ocitag_id(ocitag)
        stored = await database(reads.get(repository, tag))
        if stored is None:
            raise ApiProblem(ProblemKind.NOT_FOUND, f"{ocitag} has no live record")
        if requests.etag_matches(request.headers.get("If-None-Match"), stored.version):
            return _respond(replies.not_modified(stored.version))
        return _respond(replies.record(stored.record, stored.version))

    async def list(self, request: web.Request) -> web.StreamResponse:
        if _is_watch(request):
            if request.method == "HEAD":
                return await self.watches.head(request, _FIELDS.get())
            return await self.watches.serve(request, _FIELDS.get())
        query = requests.list_query(request.query, self._cursors)
        caller = _FIELDS.get()["caller"]
        self.access.require_any(caller, "read", "query.repository", query.repository)
        reads = self.backends.reads
        if reads is None:
            raise unavailable("db")
        visible = None if self.access.grants.unrestricted else self.access.reader(caller)
        rows, last = await database(visible_page(reads, query, visible))
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

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=_openapi_bytes(), content_type="application/json")


@cache
def _openapi_bytes() -> bytes:
    return orjson.dumps(document())


def _http_problem(exc: web.HTTPException, max_body_bytes: int, request: web.Request) -> ApiProblem:
    """aiohttp's own refusals as the API's problems; 413 (aiohttp reads no more than
    ``client_max_size``) names the limit and its setting rather than only the reason; 404
    names the path, and the trailing slash a tag's path needs when that is what is missing."""
    if exc.status == 413:
        return too_large(max_body_bytes, request.content_length)
    if exc.status == 404:
        return ApiProblem(ProblemKind.NO_ROUTE, no_route_detail(request.path))
    if exc.status == 405:
        return ApiProblem(ProblemKind.METHOD_NOT_ALLOWED, exc.reason)
    return ApiProblem(ProblemKind.MALFORMED_REQUEST, exc.reason)


def no_route_detail(path: str) -> str:
    """``/ocitags/nginx:1`` is the most likely wrong path (the seed's ends in ``/``):
    a path under ``/ocitags/`` whose last segment names a tag is missing only that."""
    detail = f"{path[:300]} is none of the api's paths (GET /openapi.json lists them)"
    if path.startswith(LIST_PATH) and ":" in path.rsplit("/", 1)[-1]:
        detail += f"; a tag's path ends in '/': {path[:300]}/"
    return detail


def utc_now() -> datetime:
    return datetime.now(UTC)
