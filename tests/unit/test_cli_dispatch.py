"""Each subcommand runs its own component and nothing else (a merge once let `ingest`
fall through into `outcomes` when ingest stopped)."""

from __future__ import annotations

from typing import Any

import pytest

import worker.api.app
import worker.app
import worker.cli
import worker.ingest.app
from worker.settings import Settings

_RUNNERS = {
    "run": (worker.app, "run"),
    "ingest": (worker.ingest.app, "run_ingest"),
    "api": (worker.api.app, "run_api"),
}


@pytest.mark.parametrize("command", sorted(_RUNNERS))
async def test_a_long_running_command_runs_its_component_and_returns_0(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[str] = []
    for name, (module, attribute) in _RUNNERS.items():

        async def runner(settings: Settings, *_: Any, _name: str = name, **__: Any) -> None:
            called.append(_name)

        monkeypatch.setattr(module, attribute, runner)

    async def outcomes(*_: Any) -> int:
        called.append("outcomes")
        return 0

    monkeypatch.setattr(worker.cli, "_outcomes", outcomes)
    args = worker.cli.build_parser().parse_args([command])
    assert await worker.cli._dispatch(args, Settings(environ={})) == 0
    assert called == [command]
