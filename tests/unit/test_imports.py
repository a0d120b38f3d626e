"""Test files share helpers through tests/helpers only: no file imports a test module or
conftest (pytest loads those itself; importing them runs their tests' module code twice
and ties unrelated test files together)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.imports import imported

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_file_imports_another_test_file() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in imported(path)
        if module.startswith("tests.")
        and (module.rsplit(".", 1)[-1].startswith("test_") or module == "tests.conftest")
    ]
    assert not offenders, "move shared code to tests/helpers/: " + "; ".join(offenders)
