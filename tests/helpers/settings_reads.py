"""Which settings a command reads while it runs: the fields of ``Settings``' groups
read on any instance, recorded while ``active``, until the test ends. Tests hold them to the
command's declaration (worker/settings.py ``COMMAND_SETTINGS``), which its flags and
start-up line follow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import worker.cli
from worker.settings import Settings, SettingsGroup


@dataclass
class Reads:
    reads: set[str] = field(default_factory=set)
    #: off while the settings are built (their validators read fields of every command)
    active: bool = True


def record_reads(monkeypatch: pytest.MonkeyPatch, *, active: bool = True) -> Reads:
    """Record the fields read on every ``Settings`` (on its groups) from now to the
    test's end."""
    recorded = Reads(active=active)
    fields = Settings.FIELDS

    def getattribute(self: SettingsGroup, name: str) -> Any:
        if recorded.active and name in fields:
            recorded.reads.add(name)
        return object.__getattribute__(self, name)

    monkeypatch.setattr(SettingsGroup, "__getattribute__", getattribute)
    return recorded


def record_cli_reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """Record what ``worker.cli.main`` reads once the settings are built: from the
    dispatch to the command on (the few reads before it are the process's own)."""
    dispatch: Callable[..., Awaitable[int]] = worker.cli._dispatch
    recorded = record_reads(monkeypatch, active=False)

    async def recording(*args: Any) -> int:
        recorded.active = True
        return await dispatch(*args)

    monkeypatch.setattr(worker.cli, "_dispatch", recording)
    return recorded
