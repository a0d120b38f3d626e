"""Where each registry host is reached and with which credentials. Pure functions.

``OCITAG_REGISTRY_ENDPOINTS`` is a comma-separated list of ``host=url``; the URL
may carry credentials as its user-info, percent-encoded
(``docker.io=https://robot%24ci:s3cret@mirror.example.com``). It is a secret setting
(``OCITAG_REGISTRY_ENDPOINTS_FILE`` works too) and is never logged. A host not
listed is reached at ``https://<host>`` (Docker Hub at ``https://registry-1.docker.io``).
Credentials for a host without them in its URL come from a Docker ``config.json``
(``auths`` entries, as ``docker login`` writes them and as Kubernetes mounts a
``kubernetes.io/dockerconfigjson`` secret); credential helpers are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from worker.identifiers import DEFAULT_DOMAIN, InvalidIdentifierError, canonical_host

#: Docker Hub's API is not served on its repository host name.
DOCKER_HUB_URL = "https://registry-1.docker.io"
_DOCKER_HUB_CONFIG_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


@dataclass(frozen=True, slots=True)
class Credentials:
    """User name and password (or token) for basic auth and the token endpoint."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='****')"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How one registry host is reached: its API base URL (no trailing slash, no
    user-info) and optional credentials."""

    host: str
    base_url: str
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class RegistryEndpoints:
    """The parsed ``OCITAG_REGISTRY_ENDPOINTS``: host → endpoint."""

    entries: tuple[Endpoint, ...] = ()

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:  # never the credentials
        return "RegistryEndpoints(" + ", ".join(f"{e.host}={e.base_url}" for e in self) + ")"

    def for_host(self, host: str) -> Endpoint:
        """The configured endpoint of ``host``, else the default ``https://<host>``.
        Raises InvalidIdentifierError for something that is not a host[:port]."""
        host = canonical_host(host)
        for entry in self.entries:
            if entry.host == host:
                return entry
        return Endpoint(host, default_base_url(host))


class EndpointsError(ValueError):
    """The endpoints setting breaks its syntax; the message says where (never the value)."""


def default_base_url(host: str) -> str:
    """``https://<host>``, except Docker Hub."""
    host = canonical_host(host)
    return DOCKER_HUB_URL if host == DEFAULT_DOMAIN else f"https://{host}"


def parse_endpoints(text: str) -> RegistryEndpoints:
    """``host=url[,host=url…]`` (blank entries ignored). Raises EndpointsError naming the
    entry by its position and host only, since the value may hold a password."""
    entries: dict[str, Endpoint] = {}
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        host, sep, url = item.partition("=")
        host, url = host.strip(), url.strip()
        where = f"entry {position}"
        if not sep or not host or not url:
            raise EndpointsError(
                f"{where} must be host=url (e.g. docker.io=https://mirror.example)"
            )
        try:
            host = canonical_host(host)
        except InvalidIdentifierError:
            raise EndpointsError(
                f"{where}: '{host}' is not a host name with an optional :port"
            ) from None
        if host in entries:
            raise EndpointsError(f"{where}: host '{host}' is listed twice")
        entries[host] = _endpoint(host, url, f"{where} ({host})")
    return RegistryEndpoints(tuple(entries.values()))


def _endpoint(host: str, url: str, where: str) -> Endpoint:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise EndpointsError(f"{where}: the URL is not valid") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise EndpointsError(f"{where}: the URL must be http:// or https:// with a host")
    if parts.query or parts.fragment:
        raise EndpointsError(f"{where}: the URL must not have a query or fragment")
    credentials = None
    if parts.username is not None or parts.password is not None:
        if not parts.username or parts.password is None:
            raise EndpointsError(f"{where}: credentials in the URL must be user:password@")
        credentials = Credentials(unquote(parts.username), unquote(parts.password))
    hostname = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = hostname if port is None else f"{hostname}:{port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return Endpoint(host, base, credentials)


def parse_docker_config(text: str) -> dict[str, Credentials]:
    """Host → credentials from a Docker ``config.json`` (``auths``: ``auth`` =
    base64 ``user:password``, or ``username`` and ``password``). Entries without usable
    credentials (identity tokens, credential helpers) are skipped. Raises ValueError
    on a file that is not such JSON."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg}, line {exc.lineno})") from None
    auths = document.get("auths", {}) if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ValueError("'auths' must be an object of registry → credentials")
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        if not isinstance(entry, Mapping):
            continue
        credentials = _entry_credentials(entry)
        if credentials is None:
            continue
        try:
            found[config_key_host(str(key))] = credentials
        except InvalidIdentifierError:
            continue  # not a registry host: no repository could ever be looked up by it
    return found


def config_key_host(key: str) -> str:
    """An ``auths`` key is a host or a URL (``https://index.docker.io/v1/``). Raises
    InvalidIdentifierError when it names no registry host."""
    if key in _DOCKER_HUB_CONFIG_KEYS:
        return DEFAULT_DOMAIN
    if "://" in key:
        key = urlsplit(key).netloc
    return canonical_host(key.rstrip("/"))


def _entry_credentials(entry: Mapping[str, object]) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(user, password) if sep and user else None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


def credentials_for(
    host: str, endpoints: RegistryEndpoints, docker_auths: Mapping[str, Credentials]
) -> Endpoint:
    """The endpoint of ``host`` with credentials: the URL's own, else config.json's."""
    endpoint = endpoints.for_host(host)
    if endpoint.credentials is not None:
        return endpoint
    found = docker_auths.get(endpoint.host)
    return endpoint if found is None else Endpoint(endpoint.host, endpoint.base_url, found)
