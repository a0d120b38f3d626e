"""Each command takes the flags of the settings it uses, and no other: ``outcomes
--help`` lists no ingest secret. What a command reads while it runs is in its
declaration (worker/settings.py ``COMMAND_SETTINGS``); the long-running ones are held to
it in their own tests (tests/unit/ingest/test_app.py, tests/unit/api/test_app.py,
tests/integration/test_ops.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.helpers.registry import free_port
from tests.helpers.settings_reads import record_cli_reads
from worker import cli
from worker.settings import (
    COMMAND_SETTINGS,
    GROUPS,
    INGEST_KINDS,
    MASK,
    PROCESS,
    SECRET_FIELDS,
    Settings,
    flag_name,
)

COMMANDS = sorted(COMMAND_SETTINGS)


def _verbs(command: str) -> list[argparse.ArgumentParser]:
    """The command's parser, or its subcommands' (``state verify``, ``state backfill``)."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = commands.choices[command]
    nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
    return list(nested[0].choices.values()) if nested else [sub]


def _subparser(command: str) -> argparse.ArgumentParser:
    return _verbs(command)[0]


def _setting_flags(command: str) -> set[str]:
    """The setting flags of the command (every subcommand of it has the same)."""
    every = {flag_name(name) for name in Settings.FIELDS}
    each = [
        {option for action in verb._actions for option in action.option_strings if option in every}
        for verb in _verbs(command)
    ]
    assert all(flags == each[0] for flags in each), f"{command}'s subcommands differ"
    return each[0]


def test_every_command_of_the_cli_is_declared() -> None:
    assert set(COMMANDS) == set(
        next(
            a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        ).choices
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_has_the_flags_of_its_settings_only(command: str) -> None:
    assert _setting_flags(command) == {flag_name(n) for n in COMMAND_SETTINGS[command]}


@pytest.mark.parametrize(
    ("command", "absent"),
    [
        ("outcomes", {f"ingest_{kind}_secret" for kind in INGEST_KINDS}),
        ("outcomes", {"api_tokens", "api_port", "database_url", "db_password"}),
        ("publish", {"ingest_github_secret", "api_tokens", "database_url"}),
        ("migrate", {"kafka_sasl_password", "ingest_zot_secret", "api_tokens"}),
        ("run", {"ingest_harbor_secret", "api_tokens", "registry_endpoints"}),
        ("api", {"ingest_acr_secret", "registry_docker_config"}),
        ("ingest", {"api_tokens", "database_url", "db_password"}),
        ("reconcile", {"ingest_quay_secret", "api_tokens"}),
    ],
)
def test_help_lists_no_other_commands_secrets(command: str, absent: set[str]) -> None:
    """The issue's case: ``outcomes --help`` listed ~90 flags, every ingest secret."""
    shown = _subparser(command).format_help()
    assert not [flag for flag in map(flag_name, absent) if f"{flag} " in shown]


def test_every_setting_is_some_commands() -> None:
    assert set().union(*COMMAND_SETTINGS.values()) == set(Settings.FIELDS)
    assert all(used >= PROCESS for used in COMMAND_SETTINGS.values())
    assert set(Settings.FIELDS) >= SECRET_FIELDS


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("migrate", ["--startup-timeout-seconds", "0"]),
        ("publish", ["docker.io/istio/pilot:1.3.0", "sha256:" + "ab" * 32]),
        ("outcomes", ["--count", "1"]),
        ("reconcile", ["--registry", "registry.example"]),
        ("state", ["verify"]),
        ("state", ["repair"]),
        ("state", ["backfill"]),
    ],
)
def test_a_one_shot_command_reads_only_its_settings(
    command: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run for real against services that are not there (it fails at its first
    connection, having read what it reads to get there); its own flags are accepted."""
    away = {
        "--database-url": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        "--kafka-bootstrap-servers": f"127.0.0.1:{free_port()}",
        "--log-level": "error",
    }
    flags = [
        part
        for flag, value in away.items()
        if flag in _setting_flags(command)
        for part in (flag, value)
    ]
    recorded = record_cli_reads(monkeypatch)
    assert cli.main([command, *args, *flags]) == cli.EXIT_FATAL
    assert recorded.reads, "the command read no setting: the recording is broken"
    assert recorded.reads <= COMMAND_SETTINGS[command]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_every_setting_is_logged_at_debug_only(
    level: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each component's start-up line has its own settings; the whole set (secrets
    masked) is one debug line, for a close look."""
    bootstrap = f"127.0.0.1:{free_port()}"
    argv = ["outcomes", "--count", "1", "--kafka-bootstrap-servers", bootstrap]
    environ = {"OCITAG_API_TOKENS": "caller:hunter2-token"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        assert cli.main([*argv, "--log-level", level, "--log-format", "json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    shown = [line["settings"] for line in lines if line["event"] == "settings"]
    if level == "info":
        assert shown == []
    else:
        assert [set(settings) for settings in shown] == [set(GROUPS)]
        assert {name for group in shown[0].values() for name in group} == set(Settings.FIELDS)
        assert shown[0]["api"]["api_tokens"] == MASK
