"""What the fault scenarios share: the local stack, which they stop and start."""

from __future__ import annotations

import pytest

from tests.helpers.services import Services, skip_or_fail


@pytest.fixture(scope="session")
def local_stack(services: Services) -> Services:
    if not services.can_restart:
        skip_or_fail("fault scenarios stop and start services: they need the local stack")
    return services
