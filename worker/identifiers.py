"""Repository, tag and digest rules of the contract (docs/contract.md "Identifiers").
Pure functions.

Each ``normalize_*`` returns the canonical (stored and published) form, or raises
``InvalidIdentifierError`` whose message states the broken rule in plain words.
Normalisation follows ``docker pull`` (distribution/reference ``ParseNormalizedNamed``).

The grammar is spelled once here as pattern strings (``HOST_PATTERN``, ``PATH_PATTERN``,
``TAG_PATTERN``, ``DIGEST_PATTERN``, ``OCITAG_ID_PATTERN``): the published schemas (the
data models, the api's OpenAPI document) are built from them, and the checks below
compile them.
"""

from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_DOMAIN = "docker.io"
DOCKER_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
OFFICIAL_PREFIX = "library/"
MAX_REPOSITORY_LENGTH = 255
MAX_TAG_LENGTH = 128

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
#: A registry host: DNS labels or a bracketed IPv6 address, with an optional :port.
HOST_PATTERN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
#: A repository path: lower-case components joined by '/' (OCI distribution name grammar).
PATH_PATTERN = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
#: A digest as accepted on input (bare 64 hex is sha256).
DIGEST_PATTERN = r"(?:(?:sha256:)?[0-9a-f]{64}|sha512:[0-9a-f]{128})"
#: ``[host/]path:tag``; the length limits are checked apart.
OCITAG_ID_PATTERN = rf"(?:{HOST_PATTERN}/)?{PATH_PATTERN}:{TAG_PATTERN}"

_PATH_RE = re.compile(PATH_PATTERN)
_HOST_RE = re.compile(HOST_PATTERN)
_SPACE_RE = re.compile(r"\s")
_TAG_RE = re.compile(TAG_PATTERN)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")


class InvalidIdentifierError(ValueError):
    """The value breaks an identifier rule; the message says which."""


def anchored(pattern: str) -> str:
    """One of the ``*_PATTERN`` strings as a whole-string JSON Schema pattern: JSON
    Schema matches anywhere, so the published form carries ``^…$`` (each pattern has no
    top-level '|', so no group is needed)."""
    return f"^{pattern}$"


def canonical_host(host: str) -> str:
    """A registry host as repositories and endpoints name it: checked against
    ``HOST_PATTERN``, lower-case (host names are case-insensitive), Docker Hub's aliases
    as ``docker.io``. Raises InvalidIdentifierError for something that is not a
    host[:port]."""
    if not _HOST_RE.fullmatch(host):
        raise InvalidIdentifierError(
            f"registry host '{host[:100]}' is not a valid host name with an optional :port"
        )
    host = host.lower()
    return DEFAULT_DOMAIN if host in DOCKER_ALIASES else host


def split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a host if it has '.' or ':', is localhost,
    or has upper-case letters; otherwise the name is on docker.io."""
    first, sep, rest = name.partition("/")
    if not sep or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        return DEFAULT_DOMAIN, name
    return first, rest


def _check_shape(raw: str) -> None:
    if not raw:
        raise InvalidIdentifierError("repository must not be empty")
    if "@" in raw:
        raise InvalidIdentifierError("repository must not contain a digest ('@…')")
    if _SPACE_RE.search(raw):
        raise InvalidIdentifierError("repository must not contain white space")


@lru_cache(maxsize=65_536)  # a fleet re-tags the same repositories again and again
def normalize_repository(raw: str) -> str:
    """``istio/pilot`` → ``docker.io/istio/pilot``; ``nginx`` → ``docker.io/library/nginx``."""
    _check_shape(raw)
    domain, path = split_domain(raw)
    if ":" in path:
        raise InvalidIdentifierError(
            "repository must not contain a tag (':' after the last '/'): put it in 'tag'"
        )
    if not _HOST_RE.fullmatch(domain):
        raise InvalidIdentifierError(
            f"registry host '{domain}' is not a valid host name with an optional :port"
        )
    if domain in DOCKER_ALIASES:
        domain = DEFAULT_DOMAIN
    if not path:
        raise InvalidIdentifierError("repository must have a path after the registry host")
    if not _PATH_RE.fullmatch(path):
        raise InvalidIdentifierError(
            "repository path must be lower-case components of [a-z0-9] separated by "
            "'.', '_', '__' or '-', joined by '/' (OCI distribution name grammar)"
        )
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    canonical = f"{domain}/{path}"
    if len(canonical) > MAX_REPOSITORY_LENGTH:
        raise InvalidIdentifierError(
            f"repository must be at most {MAX_REPOSITORY_LENGTH} characters "
            f"(normalised it has {len(canonical)})"
        )
    return canonical


def validate_tag(raw: str) -> str:
    """Tags are ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``; returned unchanged."""
    if not _TAG_RE.fullmatch(raw):
        if len(raw) > MAX_TAG_LENGTH:
            raise InvalidIdentifierError(f"tag must be at most {MAX_TAG_LENGTH} characters")
        if raw.startswith(("sha256:", "sha512:")):
            raise InvalidIdentifierError("a digest is not a tag")
        raise InvalidIdentifierError(
            "tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}: letters, digits, '_', "
            "'.', '-', not starting with '.' or '-'"
        )
    return raw


def normalize_digest(raw: str) -> str:
    """``sha256:<64 hex>`` or bare 64 hex → bare hex; ``sha512:<128 hex>`` stays prefixed."""
    algorithm, sep, hex_part = raw.partition(":")
    if not sep:
        if _HEX64.fullmatch(raw):
            return raw
        hex_part = raw
        algorithm = "sha256"
    elif algorithm not in {"sha256", "sha512"}:
        raise InvalidIdentifierError(
            f"digest algorithm must be sha256 or sha512, not '{algorithm[:20]}'"
        )
    if hex_part != hex_part.lower() and re.fullmatch(r"[0-9a-fA-F]+", hex_part):
        raise InvalidIdentifierError("digest hex must be lower-case")
    if algorithm == "sha256":
        if _HEX64.fullmatch(hex_part):
            return hex_part
        raise InvalidIdentifierError(
            f"sha256 digest must be 64 lower-case hex characters (got {len(hex_part)})"
        )
    if _HEX128.fullmatch(hex_part):
        return f"sha512:{hex_part}"
    raise InvalidIdentifierError(
        f"sha512 digest must be 128 lower-case hex characters (got {len(hex_part)})"
    )


def split_ocitag_id(raw: str) -> tuple[str, str]:
    """``localhost:5000/team/app:v2`` → (``localhost:5000/team/app``, ``v2``): the tag
    follows the last ':' after the last '/'."""
    if "@" in raw:
        raise InvalidIdentifierError("an OCITag ID names a tag, not a digest ('@…')")
    slash = raw.rfind("/")
    colon = raw.rfind(":")
    if colon <= slash:
        raise InvalidIdentifierError("OCITag ID must end in ':<tag>' after the repository")
    return raw[:colon], raw[colon + 1 :]


def normalize_ocitag_id(raw: str) -> str:
    """The canonical ``repository:tag`` of an OCITag ID."""
    repository, tag = split_ocitag_id(raw)
    return f"{normalize_repository(repository)}:{validate_tag(tag)}"
