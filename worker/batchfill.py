"""Filling small batches at low rates: how long the poll loop waits for more records
after a fetch that brought few, decided from the rate records arrive at. Pure.

At a low rate a fetch brings a few records per partition and each partition's become a
batch that pays the same fixed cost whatever its size: BEGIN, the lookup, the write,
COMMIT (its fsync), and a produce awaited with acks=all. A short wait after a small
fetch lets the next fetch's records join the same batches: the same round trips for
more events, at the price of that wait in latency. The wait is bounded
(``OCITAG_BATCH_WAIT_MS``, 0 turns it off), and skipped when the fetch is large enough
already (``FILL_RECORDS``) or when not even one more record is expected within the bound
(a lone event at a trickle is not held for nothing).

Why not the consumer's own ``fetch_min_bytes`` with a short ``fetch_max_wait_ms`` (the
broker holding each fetch until it has that many bytes): aiokafka keeps one fetch in
flight per broker, so a partition resumed meanwhile waits for it to return before its
own fetch, up to twice the wait, and an idle worker then polls every few milliseconds;
both were measured (docs/scaling.md, "What each change bought").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: a fetch this large is started at once: a batch's fixed cost is then a small share of
#: its events' (about 1.5 ms against ~0.1 ms an event, docs/scaling.md)
FILL_RECORDS = 64


def fill_wait(fetched: int, rate: float, limit: float, target: int = FILL_RECORDS) -> float:
    """Seconds to wait for more records after a fetch of ``fetched`` records, records
    arriving at ``rate`` a second, at most ``limit``: as long as the fetch needs to reach
    ``target`` at that rate, bounded; none when nothing was fetched, the fetch is large
    enough, or fewer than one more record is expected within the bound."""
    if limit <= 0 or fetched <= 0 or fetched >= target or rate * limit < 1.0:
        return 0.0
    return min(limit, (target - fetched) / rate)


@dataclass
class ArrivalRate:
    """Records fetched a second, as an exponentially decayed count (time constant
    ``tau`` seconds): a steady rate reads as itself, a burst fades within a few ``tau``."""

    tau: float = 1.0
    _count: float = 0.0
    _at: float | None = None

    def observe(self, records: int, now: float) -> None:
        self._count = self._decayed(now) + records
        self._at = now

    def rate(self, now: float) -> float:
        return self._decayed(now) / self.tau

    def _decayed(self, now: float) -> float:
        if self._at is None:
            return 0.0
        return self._count * math.exp(-max(0.0, now - self._at) / self.tau)
