"""What the fault scenarios share: the local stack, which they stop and start; and, when
a scenario fails, the logs of the processes it ran (tests/helpers/processlogs.py)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.helpers.processlogs import process_logs
from tests.helpers.services import Services, skip_or_fail


@pytest.fixture(scope="session")
def local_stack(services: Services) -> Services:
    if not services.can_restart:
        skip_or_fail("fault scenarios stop and start services: they need the local stack")
    return services


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed scenario's report carries its processes' logs (worker, ingest), one
    section each, shown with the failure: a stuck worker is diagnosed from them."""
    report = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when == "call" and report.failed and isinstance(tmp, Path):
        for title, excerpt in process_logs(tmp):
            report.sections.append((title, excerpt))
    return report
