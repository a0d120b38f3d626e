"""A scratch database on the test server, for the migration tests (which bring it to an
earlier schema with ``migrate(conn, up_to=…)``, add records of that schema, then migrate
the rest)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from tests.helpers.services import with_database


@asynccontextmanager
async def scratch_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new empty database (its URL), dropped afterwards."""
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    name = f"{prefix}_{os.getpid()}_{int(time.time())}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
