"""SIGTERM/SIGINT for every long-running command (run, ingest, api, reconcile
--interval): the first signal asks for a clean stop (in-flight work finishes); a second
one leaves at once, for a stop that hangs (uncommitted work is redelivered). And the
bounded wait a stop gives work left running."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("worker")


def install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def finish_or_cancel(running: Iterable[asyncio.Future[Any]], grace: float) -> None:
    """On shutdown, work left running past its caller (the api's publishes past their
    request, ingest's sends past their delivery): waited for at most ``grace`` seconds,
    then what is left is cancelled and waited for, so that none is still pending when
    the producer under it stops."""
    left = set(running)
    if not left:
        return
    _, pending = await asyncio.wait(left, timeout=grace)
    for future in pending:
        future.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
