"""The OCI distribution API client: resolve a tag's digest, list tags and the catalogue.

Built on httpx (async, connection pooling, TLS, and pluggable auth flows). What is
written here is what the distribution spec adds on top of HTTP and no well-kept Python
library packages on its own: the ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``
token flow (tokens cached per scope until they expire), paging by ``Link`` (parsed by
httpx, followed here only on the same origin), the manifest ``Accept`` types, polite
429 handling (``Retry-After``), and one small error tree at the boundary (httpx's style):

- ``RegistryError`` — base; the message names the host and path, never a credential.
  - ``RegistryUnavailableError`` — unreachable, timed out, 5xx: try again later.
    - ``RegistryRateLimitedError`` — still 429 after the polite retries.
  - ``RegistryAuthError`` — 401/403, or the token endpoint refused the credentials.
  - ``RepositoryNotFoundError`` — the registry says ``NAME_UNKNOWN`` for the repository.
  - ``RegistryResponseError`` — any other answer the spec does not allow.

Repositories are named as the worker names them, with the registry host
(``127.0.0.1:5000/team/app``, ``docker.io/library/nginx``); the host picks the endpoint
(worker/oci_config.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from worker.errors import WorkerError
from worker.identifiers import canonical_host, normalize_repository
from worker.oci_config import (
    Credentials,
    Endpoint,
    RegistryEndpoints,
    credentials_for,
    parse_docker_config,
)
from worker.retry import backoff_delay

if TYPE_CHECKING:
    from worker.settings import Settings

#: Every manifest kind a tag may point at: OCI and Docker, image manifests and indexes.
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_DEFAULT_TOKEN_SECONDS = 60  # the token spec's default when expires_in is absent
_TOKEN_MARGIN_SECONDS = 10


# --------------------------------------------------------------- errors -----


class RegistryError(WorkerError):
    """Base of every error the client raises."""


class RegistryUnavailableError(RegistryError):
    """The registry is unreachable, timed out or failed (5xx): try again later."""


class RegistryRateLimitedError(RegistryUnavailableError):
    """The registry still answered 429 after the polite retries."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or there were none and it wants some)."""


class RepositoryNotFoundError(RegistryError):
    """The registry does not know the repository (``NAME_UNKNOWN``)."""


class RegistryResponseError(RegistryError):
    """An answer the distribution spec does not allow (status, body or headers)."""


# ------------------------------------------------------- pure protocol parts -----


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lower-case) and its parameters."""

    scheme: str
    params: Mapping[str, str]


# auth-param = token "=" ( token / quoted-string ), RFC 9110 §11.2
_PARAM_RE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_SCHEME_RE = re.compile(r"\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")


def parse_www_authenticate(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` value, or None if it has none.
    Registries send one (``Bearer realm="…",service="…",scope="…"`` or
    ``Basic realm="…"``); quoted values may contain commas (``scope`` lists actions)."""
    match = _SCHEME_RE.match(header)
    if match is None:
        return None
    params: dict[str, str] = {}
    position = match.end()
    while position < len(header):
        param = _PARAM_RE.match(header, position)
        if param is None or param.end() == position:
            break
        value = param.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(param.group(1).lower(), value)
        position = param.end()
    return Challenge(match.group(1).lower(), params)


def request_scope(path: str) -> str:
    """The token scope a read of this API path needs (the key tokens are cached by)."""
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    for marker in ("/manifests/", "/tags/list", "/blobs/"):
        if marker in path:
            name = path.removeprefix("/v2/").split(marker, 1)[0]
            return f"repository:{name}:pull"
    return ""


def next_page(current: httpx.URL, links: Mapping[str | None, Mapping[str, str]]) -> str | None:
    """The absolute URL of the ``rel="next"`` page (httpx parses ``Link``), or None when
    there is none. Relative links resolve against the current URL. A link to another
    origin (it would take the token along) or to the same page is ValueError, not the
    end: a listing cut short there would read as tags deleted."""
    link = links.get("next")
    if not link or not link.get("url"):
        return None
    target = current.join(link["url"])
    if (target.scheme, target.host, target.port) != (current.scheme, current.host, current.port):
        raise ValueError(f"the next page is on another origin ({target.scheme}://{target.host})")
    if target == current:
        raise ValueError("the next page is this page")
    return str(target)


def retry_after_seconds(value: str | None, now: float, default: float) -> float:
    """``Retry-After`` as seconds from ``now`` (unix time): delta-seconds or an HTTP
    date; ``default`` when absent or unreadable. Never negative."""
    if value is None:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return default


def split_repository(repository: str) -> tuple[str, str]:
    """``127.0.0.1:5000/team/app`` → (``127.0.0.1:5000``, ``team/app``), normalised."""
    host, _, name = normalize_repository(repository).partition("/")
    return host, name


def _error_code(response: httpx.Response) -> str | None:
    """The first ``errors[].code`` of a distribution error body, if it has one."""
    try:
        body = response.json()
        return str(body["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# ------------------------------------------------------------- auth flow -----


class RegistryAuth(httpx.Auth):
    """Basic auth or the bearer token flow, as the registry's challenge asks. Tokens
    are cached per scope until shortly before they expire. The flow does no I/O of its
    own (httpx sends what it yields), so it is driven by either client."""

    requires_response_body = True  # the token endpoint's JSON

    def __init__(
        self, credentials: Credentials | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False  # the host asked for Basic once: send it up front

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = request_scope(request.url.path)
        sent = self._authorize(request, scope)
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_www_authenticate(response.headers.get("www-authenticate", ""))
        if challenge is None or sent == "basic":
            return
        if challenge.scheme == "basic":
            if self._credentials is None:
                return
            self._basic = True
            request.headers["Authorization"] = self._basic_header()
            yield request
        elif challenge.scheme == "bearer" and "realm" in challenge.params:
            token_response = yield self._token_request(challenge, scope)
            token, lifetime = self._read_token(token_response, challenge.params["realm"])
            self._tokens[scope] = (token, self._clock() + lifetime - _TOKEN_MARGIN_SECONDS)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _authorize(self, request: httpx.Request, scope: str) -> str:
        if self._basic and self._credentials is not None:
            request.headers["Authorization"] = self._basic_header()
            return "basic"
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > self._clock():
            request.headers["Authorization"] = f"Bearer {cached[0]}"
            return "bearer"
        return ""

    def _basic_header(self) -> str:
        assert self._credentials is not None
        pair = f"{self._credentials.username}:{self._credentials.password}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def _token_request(self, challenge: Challenge, scope: str) -> httpx.Request:
        query = {"service": challenge.params.get("service", "")}
        query["scope"] = challenge.params.get("scope", scope)
        if self._credentials is not None:
            query["account"] = self._credentials.username
        realm = challenge.params["realm"]
        separator = "&" if "?" in realm else "?"
        request = httpx.Request(
            "GET", realm + separator + urlencode({k: v for k, v in query.items() if v})
        )
        if self._credentials is not None:
            request.headers["Authorization"] = self._basic_header()
        return request

    @staticmethod
    def _read_token(response: httpx.Response, realm: str) -> tuple[str, float]:
        where = httpx.URL(realm).copy_with(query=None)
        if response.status_code in {401, 403}:
            raise RegistryAuthError(f"token endpoint {where} refused the credentials")
        if response.status_code != 200:
            raise RegistryUnavailableError(
                f"token endpoint {where} answered {response.status_code}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryResponseError(f"token endpoint {where} answered without a token")
        return token, lifetime


# --------------------------------------------------------------- client -----


class RegistryClient:
    """Reads tags and digests from any number of registry hosts.

    ``concurrency`` bounds the requests in flight across all hosts; a 429 is retried up
    to ``rate_limit_retries`` times after its ``Retry-After`` (capped), holding its slot
    so that a throttled client slows down rather than piling on."""

    def __init__(
        self,
        endpoints: RegistryEndpoints | None = None,
        *,
        docker_auths: Mapping[str, Credentials] | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 10.0,
        concurrency: int = 8,
        page_size: int | None = None,
        rate_limit_retries: int = 4,
        max_retry_after: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._endpoints = endpoints or RegistryEndpoints()
        self._docker_auths = dict(docker_auths or {})
        self._page_size = page_size
        self._retries = rate_limit_retries
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._slots = asyncio.Semaphore(concurrency)
        self._auth: dict[str, tuple[Endpoint, RegistryAuth]] = {}
        self._http = httpx.AsyncClient(
            verify=verify,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": "ocitag-worker"},
            follow_redirects=True,  # manifests and token realms may redirect
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> RegistryClient:
        """The client the settings describe (endpoints, config.json, TLS, limits)."""
        auths: dict[str, Credentials] = {}
        if settings.registry.registry_docker_config is not None:
            auths = parse_docker_config(settings.registry.registry_docker_config.read_text("utf-8"))
        return cls(
            settings.registry.endpoints,
            docker_auths=auths,
            verify=tls_verify(
                settings.registry.registry_tls_verify, settings.registry.registry_ca_file
            ),
            timeout=settings.registry.registry_timeout_seconds,
            concurrency=settings.registry.registry_concurrency,
            page_size=settings.registry.registry_page_size,
            rate_limit_retries=settings.registry.registry_rate_limit_retries,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- operations

    async def resolve_digest(self, repository: str, tag: str) -> str | None:
        """The digest (``sha256:<hex>``, as the registry gives it) ``tag`` points at, or
        None if the registry has no such tag (404)."""
        host, name = split_repository(repository)
        path = f"/v2/{name}/manifests/{tag}"
        headers = {"Accept": MANIFEST_ACCEPT}
        response = await self._request(host, "HEAD", path, headers=headers)
        if response.status_code == 404:
            return None
        self._expect_ok(response, host, path)
        digest: str | None = response.headers.get("docker-content-digest")
        if digest:
            return digest
        # Not every registry sends the header on HEAD: the digest is the hash of the
        # manifest's exact bytes.
        response = await self._request(host, "GET", path, headers=headers)
        if response.status_code == 404:
            return None
        self._expect_ok(response, host, path)
        return "sha256:" + hashlib.sha256(response.content).hexdigest()

    async def list_tags(self, repository: str) -> list[str]:
        """Every tag of the repository, following ``Link`` pages. Raises
        RepositoryNotFoundError when the registry answers ``NAME_UNKNOWN``."""
        host, name = split_repository(repository)
        tags: list[str] = []
        async for page in self._pages(host, f"/v2/{name}/tags/list", "tags"):
            tags.extend(page)
        return tags

    async def catalog(self, host: str) -> list[str]:
        """Every repository of the registry's ``/v2/_catalog``, named with the host."""
        host = canonical_host(host)
        names: list[str] = []
        async for page in self._pages(host, "/v2/_catalog", "repositories"):
            names.extend(f"{host}/{name}" for name in page)
        return names

    # --- plumbing

    async def _pages(self, host: str, path: str, member: str) -> AsyncIterator[list[str]]:
        endpoint, _ = self._endpoint(host)
        url: str | None = endpoint.base_url + path
        if self._page_size is not None:
            url = f"{url}?n={self._page_size}"
        seen: set[str] = set()
        while url is not None:
            seen.add(url)
            response = await self._request(host, "GET", url, absolute=True)
            shown = httpx.URL(url).path
            if response.status_code == 404 and _error_code(response) == "NAME_UNKNOWN":
                raise RepositoryNotFoundError(f"{host}: no repository at {shown}")
            self._expect_ok(response, host, shown)
            try:
                items = response.json().get(member) or []
            except (ValueError, AttributeError):
                raise RegistryResponseError(
                    f"{host}{shown}: the body is not the JSON expected"
                ) from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise RegistryResponseError(f"{host}{shown}: '{member}' is not a list of strings")
            yield items
            try:
                url = next_page(response.url, response.links)
            except ValueError as exc:
                raise RegistryResponseError(f"{host}{shown}: broken paging: {exc}") from None
            if url in seen:  # a listing that loops must fail, not end or run forever
                raise RegistryResponseError(f"{host}{shown}: broken paging: it loops")

    def _endpoint(self, host: str) -> tuple[Endpoint, RegistryAuth]:
        host = canonical_host(host)
        found = self._auth.get(host)
        if found is None:
            endpoint = credentials_for(host, self._endpoints, self._docker_auths)
            found = self._auth[host] = (endpoint, RegistryAuth(endpoint.credentials))
        return found

    async def _request(
        self,
        host: str,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        absolute: bool = False,
    ) -> httpx.Response:
        endpoint, auth = self._endpoint(host)
        url = path if absolute else endpoint.base_url + path
        shown = f"{host}{httpx.URL(url).path}"
        async with self._slots:
            for attempt in range(self._retries + 1):
                try:
                    response = await self._http.request(method, url, headers=headers, auth=auth)
                except httpx.TimeoutException as exc:
                    raise RegistryUnavailableError(f"{shown}: timed out ({exc})") from None
                except httpx.HTTPError as exc:
                    raise RegistryUnavailableError(
                        f"{shown}: {type(exc).__name__}: {exc}"
                    ) from None
                if response.status_code != 429 or attempt == self._retries:
                    break
                # the registry's Retry-After when it gives one, else the one backoff policy
                fallback = backoff_delay(attempt, 1.0, self._max_retry_after)
                wait = retry_after_seconds(
                    response.headers.get("retry-after"), time.time(), fallback
                )
                await self._sleep(min(self._max_retry_after, wait))
        if response.status_code == 429:
            raise RegistryRateLimitedError(f"{shown}: still 429 after {self._retries} retries")
        return response

    @staticmethod
    def _expect_ok(response: httpx.Response, host: str, path: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        where = f"{host}{path}"
        if status in {401, 403}:
            raise RegistryAuthError(
                f"{where}: {status} (check the credentials for {host}: "
                "OCITAG_REGISTRY_ENDPOINTS or OCITAG_REGISTRY_DOCKER_CONFIG)"
            )
        if status >= 500:
            raise RegistryUnavailableError(f"{where}: {status}")
        raise RegistryResponseError(f"{where}: unexpected {status}")


def tls_verify(verify: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies servers with: a CA bundle, the system's, or nothing."""
    if not verify:
        return False
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return True
