"""The signals of every long-running command: a clean stop first, at once on the second."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.helpers.wait import eventually
from worker.shutdown import install_signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_first_signal_stops_cleanly_and_a_second_leaves_at_once(
    signum: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_signals(stop)
    try:
        os.kill(os.getpid(), signum)
        await eventually(stop.is_set, timeout=5)
        assert exits == []
        os.kill(os.getpid(), signum)
        await eventually(lambda: exits, timeout=5)
        assert exits == [128 + signum]
    finally:
        for installed in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(installed)


def test_every_command_handles_signals_through_worker_shutdown() -> None:
    """One home for signal handling: no command installs its own (a second signal must
    leave at once for all of them, not only for ``run``)."""
    package = Path(__file__).resolve().parents[2] / "worker"
    offenders = [
        str(path.relative_to(package.parent))
        for path in sorted(package.rglob("*.py"))
        if path.name != "shutdown.py" and "add_signal_handler" in path.read_text("utf-8")
    ]
    assert offenders == []
