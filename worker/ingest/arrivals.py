"""First arrivals of the deliveries whose payload carries no time (quay, artifactory). Pure.

Their events take the time of the delivery's arrival. A sender's retry of a delivery
that was already published would then carry a later time, and the worker would answer
it 409 (same id, other content). Remembering when each body first arrived (by the
SHA-256 of kind and body, for an hour, at most 20,000 bodies: a few MB) lets a retry that
reaches the same ingest process yield byte-identical events, which the worker replays.
Another replica, or this one after a restart or past the hour, does not know the first
arrival: that retry is answered 409, and the tag still changes once.

Written here rather than taken from cachetools' ``TTLCache``: the memory is measured on
the arrival times it is given, so it is a pure function of its calls (tested as such),
and an ordered dict is all it needs; the library would add a dependency and a stub
package for a dozen lines.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime, timedelta

MAX_AGE = timedelta(hours=1)
MAX_BODIES = 20_000


class Arrivals:
    """Body → first arrival, oldest forgotten first (by age, or when full)."""

    def __init__(self, max_age: timedelta = MAX_AGE, max_bodies: int = MAX_BODIES) -> None:
        self._max_age = max_age
        self._max_bodies = max_bodies
        self._first: OrderedDict[bytes, datetime] = OrderedDict()  # in arrival order

    def __len__(self) -> int:
        return len(self._first)

    def first(self, kind: str, body: bytes, now: datetime) -> datetime:
        """When this body first reached ``kind`` within the last ``max_age``; ``now``
        (remembered) when it did not."""
        key = hashlib.sha256(kind.encode() + b"\0" + body).digest()
        self._forget(now)
        seen = self._first.get(key)
        # the age is checked here too: after the clock was set back, the oldest body is
        # not necessarily the first in line
        if seen is not None and now - seen <= self._max_age:
            return seen
        self._first[key] = now
        self._first.move_to_end(key)
        if len(self._first) > self._max_bodies:
            self._first.popitem(last=False)
        return now

    def _forget(self, now: datetime) -> None:
        while self._first:
            oldest = next(iter(self._first.values()))
            if now - oldest <= self._max_age:
                return
            self._first.popitem(last=False)
