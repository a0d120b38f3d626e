"""Versioned schema migrations: ``worker/migrations/NNNN_name.sql``, applied in order.

A short runner rather than a migration framework: the established ones (alembic, yoyo)
drive a synchronous DB-API driver, which would add psycopg and a second set of
connection and TLS settings next to asyncpg for the sake of a few SQL files. This one
uses the worker's own connection, holds an advisory lock so replicas may all run it, and
refuses to run against edited or newer migrations.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from worker.db import Connection
from worker.errors import SchemaVersionError

_NAME_RE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 0x0C17A6  # pg_advisory_lock key: one migrator at a time


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files("worker.migrations").iterdir():
        match = _NAME_RE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def expected_version() -> int:
    return available()[-1].version


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def _applied(conn: Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {int(r["version"]): str(r["checksum"]) for r in rows}


def _check(applied: dict[int, str], known: list[Migration]) -> None:
    newest_known = known[-1].version
    newer = [v for v in applied if v > newest_known]
    if newer:
        raise SchemaVersionError(
            f"the database schema is at version {max(newer)}, newer than this build knows "
            f"({newest_known}): run a newer ocitag-worker"
        )
    for migration in known:
        stored = applied.get(migration.version)
        if stored is not None and stored != migration.checksum:
            raise SchemaVersionError(
                f"migration {migration.version:04d}_{migration.name} was changed after it "
                "was applied; ship schema changes as new migrations"
            )


async def migrate(conn: Connection, *, up_to: int | None = None) -> list[Migration]:
    """Apply what is pending (up to version ``up_to`` if given: the migration tests
    start from an earlier schema), each migration in its own transaction. Returns
    them."""
    known = available()
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        applied = await _applied(conn)
        _check(applied, known)
        done = []
        for migration in known:
            if migration.version in applied:
                continue
            if up_to is not None and migration.version > up_to:
                break
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def check_schema(conn: Connection) -> int:
    """``run`` refuses an unmigrated or newer schema; returns the version found."""
    known = available()
    applied = await _applied(conn)
    _check(applied, known)
    current = max(applied, default=0)
    if current < known[-1].version:
        raise SchemaVersionError(
            f"the database schema is at version {current}, this build needs "
            f"{known[-1].version}: run `ocitag-worker migrate` first"
        )
    return current
