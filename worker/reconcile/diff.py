"""The diff of one repository: the registry's tags against the live records. Pure.

Every observation carries the instant it was made, taken on the reconcile host just
*before* the request that made it was sent. Whatever the registry answered reflects its
state at some instant at or after that one, so a push the registry handled after the
answer has a later timestamp than the observation: the event reconcile publishes then
sorts before the push's own event and can never undo it (the worker applies only the
greater (time, source, id)). For the same reason a record already changed at or after
the observation is left alone (``newer``): reconcile has nothing to say about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Kind = Literal["moved", "deleted"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the registry said about one tag: the digest (the stored form, bare hex for
    sha256), or None when the tag is not there; and when it was observed."""

    digest: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """The part of a live record the diff needs."""

    artifact: str
    last_modified_on: datetime


@dataclass(frozen=True, slots=True)
class Difference:
    """One event to publish: move ``tag`` to ``artifact``, or delete it."""

    kind: Kind
    repository: str
    tag: str
    artifact: str | None  # the registry's digest (moved); None (deleted)
    stored: str | None  # what the live record says (None: no live record)
    observed_at: datetime

    @property
    def ocitag_id(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True, slots=True)
class RepositoryDiff:
    """The differences of one repository, and how many tags agreed or were newer."""

    repository: str
    differences: tuple[Difference, ...] = ()
    agreed: int = 0
    newer: int = 0  # records changed at or after the observation: left alone
    counts: Mapping[Kind, int] = field(default_factory=dict)


def diff_repository(
    repository: str,
    observed: Mapping[str, Observation],
    live: Mapping[str, LiveRecord],
    listed_at: datetime,
) -> RepositoryDiff:
    """``observed``: tag → observation for every tag the registry listed (a digest of
    None: it vanished before its manifest was read). ``live``: tag → live record of the
    repository. ``listed_at``: when the listing began, the observation instant of every
    live tag the listing lacks. Differences are ordered by tag."""
    differences: list[Difference] = []
    agreed = newer = 0
    for tag in sorted(observed.keys() | live.keys()):
        seen = observed.get(tag) or Observation(None, listed_at)
        record = live.get(tag)
        if record is not None and record.last_modified_on >= seen.at:
            newer += 1
            continue
        stored = record.artifact if record is not None else None
        if seen.digest == stored:
            agreed += stored is not None
            continue
        kind: Kind = "deleted" if seen.digest is None else "moved"
        differences.append(Difference(kind, repository, tag, seen.digest, stored, seen.at))
    counts: dict[Kind, int] = {}
    for difference in differences:
        counts[difference.kind] = counts.get(difference.kind, 0) + 1
    return RepositoryDiff(repository, tuple(differences), agreed, newer, counts)
