"""The per-caller rate limit (``OCITAG_API_RATE_LIMIT``): a token bucket per caller.
Pure: the clock is passed in.

``<requests>/<seconds>``: a bucket holds at most ``requests`` tokens (the burst) and
refills at ``requests / seconds`` tokens a second; a request takes one token or is
refused with the seconds until one is there (``Retry-After``). ``0`` turns it off.
Hand-written (thirty lines): the maintained limiters (``limits``, ``aiolimiter``) either
bring storage back-ends or wait instead of refusing, and neither takes a clock to test
with. Callers are the configured names of ``OCITAG_API_TOKENS``: the buckets (and the
metric's ``caller`` label) are bounded by that list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

_EPSILON = 1e-9
_LIMIT_RE = re.compile(r"([0-9]+)/([0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``requests`` per ``seconds``, with a burst of ``requests``; requests 0 = off."""

    requests: int
    seconds: float

    @property
    def enabled(self) -> bool:
        return self.requests > 0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def parse_rate_limit(raw: str) -> RateLimit:
    """``200/1`` → RateLimit(200, 1.0); ``0`` → off; ValueError stating the form."""
    text = raw.strip()
    if text == "0":
        return RateLimit(0, 1.0)
    match = _LIMIT_RE.fullmatch(text)
    if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
        raise ValueError(
            "must be <requests>/<seconds> with requests >= 1 and seconds > 0 "
            "(e.g. 200/1), or 0 to turn the limit off"
        )
    return RateLimit(int(match[1]), float(match[2]))


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float

    def take(self, limit: RateLimit, now: float) -> float:
        """Take a token: 0.0 when taken, else the seconds until one is there."""
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(float(limit.requests), self.tokens + elapsed * limit.per_second)
        self.updated = max(now, self.updated)
        if self.tokens >= 1.0 - _EPSILON:  # waiting the answer is enough, rounding aside
            self.tokens = max(self.tokens - 1.0, 0.0)
            return 0.0
        return (1.0 - self.tokens) / limit.per_second


@dataclass
class RateLimiter:
    """One bucket per caller, created full on the caller's first request."""

    limit: RateLimit
    clock: Callable[[], float]
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def wait(self, caller: str) -> float:
        """0.0: the request may go on; else the seconds the caller must wait."""
        if not self.limit.enabled:
            return 0.0
        now = self.clock()
        bucket = self.buckets.get(caller)
        if bucket is None:
            bucket = self.buckets[caller] = Bucket(float(self.limit.requests), now)
        return bucket.take(self.limit, now)


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))
