"""Named receivers (``OCITAG_INGEST_RECEIVERS``) and the registry hosts each may speak
for. Pure: reading a ``secret_file`` is the caller's function.

A receiver is ``{"name", "kind", "secret" | "secret_file", "hosts"}``: served at
``/webhooks/<name>`` (``/webhooks/<name>/<secret>`` for the path kinds), authenticated
as its kind is, and refused (403 ``host-not-allowed``) for a delivery naming any
repository whose registry host is not among its ``hosts``. A host pattern is exact
(``host[:port]``, compared as repositories name hosts: lower case, Docker Hub's aliases
as ``docker.io``) or has ``*`` for exactly one DNS label (``*.dev.example.com:5000``);
a port is part of the host (a pattern without one matches only hosts without one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.documents import DocumentError, child, expect, members, parse
from worker.identifiers import InvalidIdentifierError, canonical_host, normalize_repository
from worker.ingest.auth import SLOTS
from worker.ingest.kinds import KINDS
from worker.ingest.mapping import Mapped, TagChange
from worker.problems import ErrorItem

SETTING = "OCITAG_INGEST_RECEIVERS"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)


@dataclass(frozen=True, slots=True)
class Hosts:
    """The registry hosts a receiver may speak for; ``matcher`` None: any host (the
    receivers of ``OCITAG_INGEST_<KIND>_SECRET``)."""

    patterns: tuple[str, ...] = ()
    matcher: re.Pattern[str] | None = None

    @classmethod
    def any(cls) -> Hosts:
        return cls()

    @property
    def unbound(self) -> bool:
        return self.matcher is None

    def allows(self, host: str) -> bool:
        return self.matcher is None or self.matcher.fullmatch(host) is not None


def host_regex(pattern: str) -> str:
    """The regular expression of one host pattern (ValueError naming the rule)."""
    if "*" not in pattern:
        try:
            return re.escape(canonical_host(pattern))
        except InvalidIdentifierError as exc:
            raise ValueError(str(exc)) from None
    name, sep, port = pattern.partition(":")
    if sep and not port.isdigit():
        raise ValueError(f"the port of '{pattern[:100]}' must be digits")
    parts = []
    for label in name.lower().split("."):
        if label == "*":
            parts.append(_LABEL)
        elif _LABEL_RE.fullmatch(label):
            parts.append(re.escape(label))
        else:
            raise ValueError(
                f"'{pattern[:100]}' must be DNS labels or '*' (one whole label), "
                "joined by '.', with an optional :port"
            )
    return r"\.".join(parts) + (re.escape(":" + port) if sep else "")


def hosts_of(patterns: Sequence[str]) -> Hosts:
    regex = "|".join(f"(?:{host_regex(p)})" for p in patterns)
    return Hosts(tuple(patterns), re.compile(regex))


@dataclass(frozen=True, slots=True)
class ReceiverSpec:
    name: str
    kind: str
    secrets: tuple[bytes, ...]
    hosts: Hosts


def parse_receivers(raw: str, read_file: Callable[[str], str]) -> tuple[ReceiverSpec, ...]:
    """The receivers of the document; DocumentError naming the JSON place of the first
    broken rule (never a secret's value)."""
    document = expect(parse(raw), list, "$", "a list of receivers")
    receivers: list[ReceiverSpec] = []
    for number, item in enumerate(document):
        receiver = _receiver(item, child("$", number), read_file)
        if any(r.name == receiver.name for r in receivers):
            where = child(child("$", number), "name")
            raise DocumentError(where, f'"{receiver.name}" names another receiver already')
        receivers.append(receiver)
    return tuple(receivers)


def _receiver(item: Any, where: str, read_file: Callable[[str], str]) -> ReceiverSpec:
    expect(item, dict, where, 'an object {"name", "kind", "secret" | "secret_file", "hosts"}')
    members(item, where, {"name", "kind", "hosts"}, {"secret", "secret_file"})
    name = expect(item["name"], str, child(where, "name"), "a string")
    if not NAME_RE.fullmatch(name):
        raise DocumentError(child(where, "name"), "must match [a-z0-9][a-z0-9-]{0,62}")
    kind = expect(item["kind"], str, child(where, "kind"), "a string")
    if kind not in KINDS:
        raise DocumentError(
            child(where, "kind"), f'unknown kind "{kind[:40]}" (kinds: {", ".join(KINDS)})'
        )
    secrets = _secrets(item, where, read_file)
    hosts_at = child(where, "hosts")
    patterns = expect(item["hosts"], list, hosts_at, "a non-empty list of host patterns")
    if not patterns:
        raise DocumentError(hosts_at, "must be a non-empty list of host patterns")
    for number, pattern in enumerate(patterns):
        expect(pattern, str, child(hosts_at, number), "a string")
        try:
            host_regex(pattern)
        except ValueError as exc:
            raise DocumentError(child(hosts_at, number), str(exc)) from None
    return ReceiverSpec(name, kind, secrets, hosts_of(patterns))


def _secrets(
    item: dict[str, Any], where: str, read_file: Callable[[str], str]
) -> tuple[bytes, ...]:
    if ("secret" in item) == ("secret_file" in item):
        raise DocumentError(where, 'needs exactly one of "secret" and "secret_file"')
    if "secret_file" in item:
        at = child(where, "secret_file")
        path = expect(item["secret_file"], str, at, "a file name")
        try:
            text = read_file(path)
        except OSError as exc:
            raise DocumentError(at, f"cannot read {path}: {exc.strerror}") from None
        values = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        at = child(where, "secret")
        value = item["secret"]
        if isinstance(value, str):
            values = [value]
        else:
            expect(value, list, at, "a secret or a non-empty list of secrets")
            for number, secret in enumerate(value):
                expect(secret, str, child(at, number), "a string")
            values = list(value)
    if not values or not all(values):
        raise DocumentError(at, "holds no secret")
    if len(values) > SLOTS:
        raise DocumentError(at, f"holds more than {SLOTS} secrets (rotation needs two)")
    return tuple(v.encode() for v in values)


def outside_hosts(mapped: Sequence[Mapped], hosts: Hosts, receiver: str) -> list[ErrorItem]:
    """One error per tag event whose repository's host the receiver may not speak for
    (the entries are already checked: the repositories normalise)."""
    if hosts.unbound:
        return []
    items = []
    for index, entry in enumerate(mapped):
        if isinstance(entry, TagChange):
            repository = normalize_repository(entry.repository)
            host = repository.split("/", 1)[0]
            if not hosts.allows(host):
                items.append(
                    ErrorItem(
                        f"entries[{index}].repository",
                        f"registry host {host} is not among the hosts of receiver {receiver}",
                        repository,
                    )
                )
    return items
