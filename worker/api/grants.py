"""Who may do what to which tags (``OCITAG_API_GRANTS``). Pure.

The document maps a caller (as ``OCITAG_API_TOKENS`` names it) to a list of grants
``{"actions": ["read", "write", "delete"], "tags": ["<pattern>", …]}``. A pattern
matches the canonical OCITag ID: ``*`` is any run of characters other than ``/`` and
``:``, ``**`` any run at all, every other character is itself (``.``, ``?``, ``[`` too:
no pattern is a regular expression in disguise). A pattern's repository part is
normalised as ``docker pull`` reads a name (``istio/**`` is ``docker.io/istio/**``,
``nginx:*`` is ``docker.io/library/nginx:*``), using the identifier rules of
``worker.identifiers``; a first component holding a ``*`` is taken as a host pattern.

Each (caller, action) is compiled once, at start, into one anchored regular expression
built from escaped literals (``re.escape``) and the two wildcards: the standard
library's matcher is fast and correct, and nothing of the pattern's text reaches it
unescaped. Hand-written code, because no maintained glob library has exactly these two
wildcards with ``:`` as a separator (``fnmatch`` and ``wcmatch`` read ``?`` and ``[``).
A pattern may hold at most ``MAX_ANY_RUNS`` ``**``: each one multiplies the worst-case
backtracking of a failed match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from worker.api.auth import CALLER_RE
from worker.documents import DocumentError, child, expect, members, parse
from worker.identifiers import (
    DEFAULT_DOMAIN,
    OFFICIAL_PREFIX,
    InvalidIdentifierError,
    canonical_host,
    normalize_repository,
    split_domain,
)

Action = Literal["read", "write", "delete"]
ACTIONS: tuple[Action, ...] = get_args(Action)
SETTING = "OCITAG_API_GRANTS"
MAX_ANY_RUNS = 4
MAX_PATTERN_CHARS = 512
_PIECES = re.compile(r"\*\*|\*|[^*]+")
_NEVER = re.compile(r"(?!)")


class PatternError(ValueError):
    """A tag pattern breaks a rule; the message says which."""


def normalize_pattern(raw: str) -> str:
    """The canonical form of a tag pattern: its repository part normalised like a
    repository, its tag part (after the last ':' following the last '/') unchanged."""
    if not raw:
        raise PatternError("a tag pattern must not be empty")
    if len(raw) > MAX_PATTERN_CHARS:
        raise PatternError(f"a tag pattern must be at most {MAX_PATTERN_CHARS} characters")
    if any(c.isspace() for c in raw):
        raise PatternError("a tag pattern must not contain white space")
    if "***" in raw:
        raise PatternError("'***' is not a wildcard: use '*' or '**'")
    if raw.count("**") > MAX_ANY_RUNS:
        raise PatternError(f"a tag pattern may hold at most {MAX_ANY_RUNS} '**'")
    slash, colon = raw.rfind("/"), raw.rfind(":")
    repository, tag = (raw[:colon], raw[colon:]) if colon > slash else (raw, "")
    return _repository(repository) + tag


def _repository(raw: str) -> str:
    if "*" not in raw:
        try:
            return normalize_repository(raw)
        except InvalidIdentifierError as exc:
            raise PatternError(str(exc)) from None
    first = raw.partition("/")[0]
    if ("*" in first and "/" in raw) or raw == "**":
        return raw  # a host pattern (or everything): canonical IDs always start with one
    domain, path = split_domain(raw)
    if domain != DEFAULT_DOMAIN:
        try:
            domain = canonical_host(domain)
        except InvalidIdentifierError as exc:
            raise PatternError(str(exc)) from None
    if domain == DEFAULT_DOMAIN and "/" not in path and path != "**":
        path = OFFICIAL_PREFIX + path
    return f"{domain}/{path}"


def pattern_regex(pattern: str) -> str:
    """The regular expression (source) of a canonical pattern: literals escaped."""
    parts = []
    for piece in _PIECES.findall(pattern):
        if piece == "**":
            parts.append(".*")
        elif piece == "*":
            parts.append("[^/:]*")
        else:
            parts.append(re.escape(piece))
    return "".join(parts)


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    """One matcher for any of the canonical ``patterns`` (none: matches nothing)."""
    sources = sorted({pattern_regex(p) for p in patterns})
    if not sources:
        return _NEVER
    return re.compile("|".join(f"(?:{s})" for s in sources), re.DOTALL)


def matches(pattern: str, tag: str) -> bool:
    """Whether one canonical pattern matches the canonical OCITag ID ``tag``."""
    return compile_patterns([pattern]).fullmatch(tag) is not None


@dataclass(frozen=True, slots=True)
class Grants:
    """The compiled grants: per caller, per action, one matcher. ``rules`` None: the
    setting is absent and every caller may do everything."""

    rules: Mapping[str, Mapping[str, re.Pattern[str]]] | None

    @classmethod
    def everyone(cls) -> Grants:
        return cls(None)

    @property
    def unrestricted(self) -> bool:
        return self.rules is None

    def allows(self, caller: str, action: Action, tag: str) -> bool:
        """Whether ``caller`` may ``action`` the canonical OCITag ID ``tag``."""
        if self.rules is None:
            return True
        matcher = self.rules.get(caller, {}).get(action)
        return matcher is not None and matcher.fullmatch(tag) is not None

    def may_ever(self, caller: str, action: Action) -> bool:
        """Whether ``caller`` holds any grant of ``action`` (a list needs a read grant)."""
        if self.rules is None:
            return True
        return action in self.rules.get(caller, {})

    def callers(self) -> frozenset[str]:
        return frozenset(self.rules or {})


def may_read(grants: Grants, caller: str) -> Callable[[str], bool]:
    """The per-tag predicate of what ``caller`` may read: lists, history, watches and
    artifact look-ups keep only the records for which it is true."""
    if grants.unrestricted:
        return lambda _tag: True
    matcher = (grants.rules or {}).get(caller, {}).get("read", _NEVER)
    return lambda tag: matcher.fullmatch(tag) is not None


def parse_grants(raw: str) -> Grants:
    """The document of ``OCITAG_API_GRANTS`` compiled; DocumentError naming the JSON
    place of the first broken rule."""
    document = expect(parse(raw), dict, "$", "an object from caller to a list of grants")
    rules: dict[str, dict[str, re.Pattern[str]]] = {}
    for caller, grants in document.items():
        where = child("$", caller)
        if not CALLER_RE.fullmatch(caller):
            raise DocumentError(where, "a caller name must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        expect(grants, list, where, "a list of grants")
        patterns: dict[str, list[str]] = {}
        for number, grant in enumerate(grants):
            for action, pattern in _grant(grant, child(where, number)):
                patterns.setdefault(action, []).append(pattern)
        rules[caller] = {action: compile_patterns(p) for action, p in patterns.items()}
    return Grants(rules)


def _grant(grant: Any, where: str) -> list[tuple[str, str]]:
    expect(grant, dict, where, 'an object {"actions": [...], "tags": [...]}')
    members(grant, where, {"actions", "tags"}, set())
    actions = _strings(grant["actions"], child(where, "actions"), "actions")
    tags = _strings(grant["tags"], child(where, "tags"), "tag patterns")
    for number, action in enumerate(actions):
        if action not in ACTIONS:
            raise DocumentError(
                child(child(where, "actions"), number),
                f'unknown action "{action}" (actions: {", ".join(ACTIONS)})',
            )
    normalised = []
    for number, pattern in enumerate(tags):
        try:
            normalised.append(normalize_pattern(pattern))
        except PatternError as exc:
            raise DocumentError(child(child(where, "tags"), number), str(exc)) from None
    return [(action, pattern) for action in actions for pattern in normalised]


def _strings(value: Any, where: str, what: str) -> list[str]:
    expect(value, list, where, f"a non-empty list of {what}")
    if not value:
        raise DocumentError(where, f"must be a non-empty list of {what}")
    for number, item in enumerate(value):
        expect(item, str, child(where, number), "a string")
    return list(value)
