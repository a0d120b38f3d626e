"""docs/contract.md, the project's contract, kept in step with the code where a machine
can check it: the status table against the problem catalogue, the settings it names
against Settings, the event types against the models; and nothing in the project points
at a contract outside it."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from worker.models import (
    DELETED_EVENT_TYPE,
    EVENT_TYPE,
    RejectedOutcome,
    RemovedOutcome,
    UpdatedOutcome,
)
from worker.problems import ProblemKind
from worker.settings import SECRET_FIELDS, Settings, env_name

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "docs" / "contract.md"

# Parts of the contract the worker does not meet yet ("What is built today" on the page).
# When one lands, its test here fails until it leaves this list.
PLANNED_STATUSES: set[int] = set()
PLANNED_TYPES: set[str] = set()
PLANNED_SETTING_PREFIXES = ("OCITAG_INGEST_", "OCITAG_API_")  # ingest, api


def _text() -> str:
    return CONTRACT.read_text(encoding="utf-8")


def _section(title: str) -> str:
    text = _text()
    start = text.index(f"\n{title}\n")
    end = text.find("\n#", start + len(title) + 2)
    return text[start : end if end != -1 else len(text)]


def _first_column(section: str) -> list[str]:
    return [
        line.split("|")[1].strip()
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| status |", "| setting |"))
    ]


def test_the_status_table_is_the_statuses_the_worker_gives() -> None:
    table = {int(cell) for cell in _first_column(_section("### Statuses"))}
    known = {200} | {kind.status for kind in ProblemKind if kind.published}
    assert known <= table, f"statuses the worker gives but the contract lacks: {known - table}"
    assert table - known == PLANNED_STATUSES


def test_the_settings_named_are_settings_with_those_defaults() -> None:
    env_names = {env_name(field): field for field in Settings.FIELDS}
    file_names = {env_name(field) + "_FILE" for field in SECRET_FIELDS}
    named = set(re.findall(r"`((?:OCITAG|KAFKA|DATABASE)_[A-Z0-9_<>]+)`", _text()))
    unknown = {
        name
        for name in named
        if name not in env_names
        and name not in file_names
        and not name.startswith(PLANNED_SETTING_PREFIXES)
    }
    assert not unknown, f"the contract names settings Settings does not have: {unknown}"
    checked = 0
    for line in _section("## Interfaces").splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) != 2 or cells[0].strip("`") not in env_names:
            continue  # not a row of the settings table
        field = env_names[cells[0].strip("`")]
        stated = re.match(r"`([^`]+)`", cells[1])
        assert stated is not None, line
        value = Settings.FIELDS[field].default
        shown = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        assert stated.group(1) == str(shown), (field, stated.group(1), shown)
        checked += 1
    assert checked == 9, "the settings table of the contract lost rows"


def test_the_event_types_are_the_models_types() -> None:
    text = _text()
    named = set(re.findall(r"`(ocitag\.[a-z]+\.v1)`", text))
    models = {
        EVENT_TYPE,
        DELETED_EVENT_TYPE,
        *typing.get_args(UpdatedOutcome.model_fields["type"].annotation),
        *typing.get_args(RemovedOutcome.model_fields["type"].annotation),
        *typing.get_args(RejectedOutcome.model_fields["type"].annotation),
    }
    assert models <= named, f"types the worker uses but the contract lacks: {models - named}"
    assert named - models == PLANNED_TYPES


def _project_files() -> list[Path]:
    tops = ("worker", "tests", "bench", "deploy", "docs", "schemas", "tools")
    found = [REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml"]
    for top in tops:
        found.extend(
            p
            for p in (REPO / top).rglob("*")
            if p.is_file()
            and not {"node_modules", "__pycache__", "results"} & set(p.parts)
            and p.suffix in {".py", ".md", ".json", ".yaml", ".yml", ".mjs", ".sql", ".toml", ""}
        )
    return found


def test_nothing_points_outside_the_project() -> None:
    # spelled in pieces so that this file passes its own test
    outside = ("SPEC" + ".md", "../" + "shared")
    offenders = [
        f"{path.relative_to(REPO)}: {needle}"
        for path in _project_files()
        for needle in outside
        if needle in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not offenders, "a clone has only this project; the contract is docs/contract.md"
