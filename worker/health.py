"""Liveness and readiness state. The loop reports in; the HTTP probes read.

Live: the poll loop has iterated within OCITAG_LIVENESS_TIMEOUT_SECONDS. Waiting for a
service (retrying) is alive: a restart would not bring the database back.
Ready: the consumer has joined (or is joining) its group, the database answers and the
producer knows a broker. Checks are cached briefly so probes stay cheap.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Check:
    ok: bool
    reason: str


class Health:
    def __init__(
        self, liveness_timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout = liveness_timeout
        self._clock = clock
        self._last_loop: float | None = None
        self._started = False
        self.readiness_probe: Callable[[], Awaitable[Check]] | None = None

    def started(self) -> None:
        self._started = True
        self._last_loop = self._clock()

    def loop_beat(self) -> None:
        self._last_loop = self._clock()

    def live(self) -> Check:
        if not self._started or self._last_loop is None:
            return Check(True, "starting")
        idle = self._clock() - self._last_loop
        if idle > self._timeout:
            return Check(False, f"poll loop has not run for {idle:.0f} s")
        return Check(True, "polling")

    async def ready(self) -> Check:
        if not self._started:
            return Check(False, "starting")
        if self.readiness_probe is None:
            return Check(True, "ready")
        return await self.readiness_probe()
