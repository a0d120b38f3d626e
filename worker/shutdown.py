"""SIGTERM/SIGINT for every long-running command (run, ingest, api, reconcile
--interval): the first signal asks for a clean stop (in-flight work finishes); a second
one leaves at once, for a stop that hangs (uncommitted work is redelivered)."""

from __future__ import annotations

import asyncio
import os
import signal

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
