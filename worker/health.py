"""Liveness and readiness state. The parts of a command report in; the HTTP probes read.

Live: every part the command watches (``COMMAND_PARTS``) has beaten within its timeout
(OCITAG_LIVENESS_TIMEOUT_SECONDS). A part waiting for a service (retrying while Kafka or
PostgreSQL is away), or for start-up to finish, is alive: a restart would not bring the
service back. The decision is ``liveness()``, without I/O; /healthz names the stale part
and for how long. Ready: each command's own probe (``readiness_probe``), once started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

#: the parts, one name each, as /healthz reports them
POLL_LOOP = "poll-loop"
HTTP = "http"
OUTCOME_LISTENER = "outcome-listener"
RECONCILE = "reconcile"

#: what /healthz watches, per command that serves it (deploy/check holds the Deployments'
#: probes to these commands)
COMMAND_PARTS: Mapping[str, tuple[str, ...]] = {
    "run": (POLL_LOOP,),  # the poll loop: fetch, hand out batches, commit
    "ingest": (HTTP,),  # the event loop that answers the webhooks
    "api": (HTTP, OUTCOME_LISTENER),  # that loop, and the consumer that answers requests
    "reconcile": (RECONCILE,),  # with --interval: runs (and repositories) completing
}
#: what a part waits for until its first beat
START_UP = "start-up"

#: the ``http`` heartbeat's period, at most (a quarter of the timeout when shorter)
_HEARTBEAT_SECONDS = 1.0


@dataclass
class Check:
    ok: bool
    reason: str


@dataclass(frozen=True)
class Beat:
    """A part's last report: when, and the service it is waiting for (if it is)."""

    at: float
    waiting_for: str | None = None


def liveness(beats: Mapping[str, Beat], now: float, timeout: float) -> Check:
    """Live unless a part that is not waiting for a service has not beaten for longer
    than ``timeout``; the reason names every stale part, stalest first (or, when live,
    each part's state). No part yet: starting, which is alive."""
    if not beats:
        return Check(True, "starting")
    idle = {part: now - beat.at for part, beat in beats.items() if beat.waiting_for is None}
    stale = sorted(((s, part) for part, s in idle.items() if s > timeout), reverse=True)
    if stale:
        parts = ", ".join(f"{part} has not run for {_seconds(s)} s" for s, part in stale)
        return Check(False, f"{parts} (timeout {timeout:g} s)")
    states = [
        f"{part} waiting for {beat.waiting_for}"
        if beat.waiting_for is not None
        else f"{part} ran {_seconds(now - beat.at)} s ago"
        for part, beat in sorted(beats.items())
    ]
    return Check(True, ", ".join(states))


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


class Health:
    def __init__(
        self,
        liveness_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        parts: Sequence[str] = (),
    ) -> None:
        """``parts``: those the command watches, each waiting for start-up until it
        beats (so /healthz names them all from the start)."""
        self._timeout = liveness_timeout
        self._clock = clock
        self._beats = {part: Beat(clock(), START_UP) for part in parts}
        self._started = False
        self.readiness_probe: Callable[[], Awaitable[Check]] | None = None

    def started(self) -> None:
        self._started = True

    def beat(self, part: str) -> None:
        """``part`` has just run (and waits for nothing)."""
        self._beats[part] = Beat(self._clock())

    def waiting(self, part: str, service: str) -> None:
        """``part`` waits for ``service`` until its next beat: alive meanwhile."""
        self._beats[part] = Beat(self._clock(), service)

    async def heartbeat(self, part: str) -> None:
        """Beat ``part`` from a task of this event loop, forever: it goes stale when the
        loop stops running tasks (blocked by a call that never yields) or the task dies."""
        period = min(_HEARTBEAT_SECONDS, self._timeout / 4)
        while True:
            self.beat(part)
            await asyncio.sleep(period)

    def live(self) -> Check:
        return liveness(self._beats, self._clock(), self._timeout)

    async def ready(self) -> Check:
        if not self._started:
            return Check(False, "starting")
        if self.readiness_probe is None:
            return Check(True, "ready")
        return await self.readiness_probe()
