"""PostgreSQL at the edge: the pool, and what a driver error means (retry, reject, stop)."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from worker.errors import FatalError, PermanentError, TransientError

if TYPE_CHECKING:  # the driver's classes are generic only in its type stubs
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]
else:
    Connection = Any

# SQLSTATE classes and codes that mean "the service, not the event": retry.
# 08 connection, 53 resources (too many connections), 57 operator intervention (admin
# shutdown, cannot connect now), 58 system error; 40001 serialization, 40P01 deadlock,
# 25006 read-only transaction (a failover in progress), 55P03 lock not available.
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_CODES = frozenset({"40001", "40P01", "25006", "55P03", "55006"})
# 28 invalid authorization, 3D invalid catalog (no such database), 42P01 no such table.
_FATAL_CLASSES = ("28", "3D")
_FATAL_CODES = frozenset({"42P01"})


def classify_db_error(exc: BaseException) -> Exception:
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        if code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES:
            return TransientError(f"db_{type(exc).__name__}", str(exc))
        if code.startswith(_FATAL_CLASSES) or code in _FATAL_CODES:
            return FatalError(f"PostgreSQL refused the worker: {exc} (check DATABASE_URL)")
        return PermanentError(f"{type(exc).__name__}: {exc}")
    # before OSError (its base): a server certificate that sslrootcert/sslmode reject (wrong
    # CA, host name mismatch) does not get better by retrying
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FatalError(
            f"PostgreSQL's TLS certificate was rejected: {exc} (check sslmode and sslrootcert "
            "in DATABASE_URL)"
        )
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError):
        return TransientError("db_connection", f"{type(exc).__name__}: {exc}")
    return PermanentError(f"{type(exc).__name__}: {exc}")


async def open_pool(
    dsn: str, min_size: int, max_size: int, command_timeout: float, idle_in_transaction: float
) -> asyncpg.Pool:
    # A worker frozen mid-transaction (a zombie) must not hold its claims and row locks
    # for ever: PostgreSQL ends such a session, the live owner of the partition goes on.
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=10,
        server_settings={
            "idle_in_transaction_session_timeout": str(int(idle_in_transaction * 1000)),
            "application_name": "ocitag-worker",
        },
    )
