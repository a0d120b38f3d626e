"""PostgreSQL at the edge: the pool, and what a driver error means (retry, reject, stop)."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from worker.errors import Cause, FatalError, PermanentError, TransientError

if TYPE_CHECKING:  # the driver's classes are generic only in its type stubs
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]
else:
    Connection = Any

# SQLSTATE classes that mean "the service, not the event": retry.
# 08 connection, 25 transaction state (read-only during a failover, idle-in-transaction
# timeout), 40 serialization failure and deadlock, 53 resources (too many connections),
# 55 lock not available, 57 operator intervention (admin shutdown, cannot connect now),
# 58 system error, XX internal error, 0A000 a cached plan invalidated by a schema change.
_TRANSIENT_CLASSES = ("08", "25", "40", "53", "55", "57", "58", "XX")
_TRANSIENT_CODES = frozenset({"0A000"})
# Only these belong to one event (its data does not fit: 22 data exception, 54 program
# limit exceeded): that event is rejected (500), the others go on. Anything else (28
# authorization, 3D no such database, 42 permission or schema mismatch, 23 a constraint
# a migration added…) means the worker cannot do its job: stop, never reject events.
_EVENT_CLASSES = ("22", "54")


#: What to do about a refusal, by SQLSTATE (exact code first, then its class). The
#: server's own words say what was refused; these name the setting or command that fixes
#: it. Never the password: the server's message does not hold it and neither do these.
_REFUSAL_HINTS: dict[str, str] = {
    "28P01": "check the user name and password in DATABASE_URL",
    "28000": "check the user name in DATABASE_URL: the role must exist and be allowed to "
    "connect from this host (pg_hba.conf)",
    "28": "check the user name and password in DATABASE_URL",
    "3D000": "check the database name in DATABASE_URL (create that database, then run "
    "`ocitag-worker migrate`)",
    "42501": "grant the role in DATABASE_URL that privilege (the tables belong to the role "
    "that ran `ocitag-worker migrate`)",
    "42P01": "the tables are missing: run `ocitag-worker migrate`",
    "3F000": "the schema is missing: run `ocitag-worker migrate`",
    "42": "the database schema does not match this version: run `ocitag-worker migrate` "
    "for this version",
}
_DEFAULT_HINT = (
    "check DATABASE_URL, the role's rights and that `ocitag-worker migrate` ran for this version"
)


def refusal_message(component: str, sqlstate: str, reason: str) -> str:
    """What a person reads when PostgreSQL refuses ``component`` (``worker``, ``api``,
    ``reconcile``, ``migrate``) for good: the server's reason, its SQLSTATE and what to
    change. Pure."""
    hint = _REFUSAL_HINTS.get(sqlstate) or _REFUSAL_HINTS.get(sqlstate[:2], _DEFAULT_HINT)
    return f"PostgreSQL refused the {component}: {reason} (SQLSTATE {sqlstate}): {hint}"


def classify_db_error(exc: BaseException, component: str) -> Exception:
    """Retry, reject the one event, or stop ``component`` (named in the message)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        if code.startswith(_TRANSIENT_CLASSES) or code in _TRANSIENT_CODES:
            return TransientError(_cause(code), f"{type(exc).__name__}: {exc}")
        if code.startswith(_EVENT_CLASSES):
            return PermanentError(f"{type(exc).__name__}: {exc}")
        return FatalError(refusal_message(component, code, str(exc)))
    # before OSError (its base): a server certificate that sslrootcert/sslmode reject (wrong
    # CA, host name mismatch) does not get better by retrying
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FatalError(
            f"the {component} rejected PostgreSQL's TLS certificate: {exc} (check sslmode and "
            "sslrootcert in DATABASE_URL)"
        )
    # InternalClientError: the driver's protocol state broke with the connection (seen
    # when the server shuts down under a running transaction); the pool replaces it
    if isinstance(
        exc,
        OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ):
        return TransientError(Cause.DB_CONNECTION, f"{type(exc).__name__}: {exc}")
    # not the database's word: a bug; stop rather than reject events for it
    return FatalError(f"unexpected error in the {component}: {type(exc).__name__}: {exc}")


def _cause(sqlstate: str) -> Cause:
    if sqlstate.startswith("40"):
        return Cause.DB_CONFLICT
    if sqlstate.startswith(("08", "57")):  # connection gone, server shutting down
        return Cause.DB_CONNECTION
    return Cause.DB_UNAVAILABLE


class PooledConnection(asyncpg.Connection):
    """A connection of the worker's pools: it can be told that its current use left no
    session state, so that going back to the pool costs no round trip.

    On release a pool rolls back an open transaction and drops the client's listeners
    (asyncpg's own, no query unless a transaction is open), then runs its reset: by
    default ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;``, one
    more round trip that undoes whatever session state a user may have left for the
    next one. A batch's apply leaves none (BEGIN ... COMMIT and plain statements: no
    session-level lock, setting, cursor or LISTEN) and is a round trip of five, so a
    use that says so (``left_no_session_state``, after its transaction committed) skips
    that query once; every other use, and any use that failed, gets it as before."""

    _stateless_use = False

    def left_no_session_state(self) -> None:
        """This use set nothing beyond its transactions: skip the reset query once."""
        self._stateless_use = True

    def take_stateless_use(self) -> bool:
        """Whether the use ending now said so (and forget it: the next use must say it
        again)."""
        stateless, self._stateless_use = self._stateless_use, False
        return stateless


async def reset_connection(conn: asyncpg.Connection) -> None:
    """The pools' reset on release: asyncpg's reset query, unless the use ending said it
    left no session state (``PooledConnection``). An open transaction was already rolled
    back by the pool, whatever this does."""
    if isinstance(conn, PooledConnection) and conn.take_stateless_use():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


def left_no_session_state(conn: Connection) -> None:
    """Tell a pooled connection (through the pool's proxy, which forwards to it) that its
    use left no session state; a connection of another class keeps its full reset."""
    mark = getattr(conn, "left_no_session_state", None)
    if mark is not None:
        mark()


async def open_pool(
    dsn: str, min_size: int, max_size: int, command_timeout: float, idle_in_transaction: float
) -> asyncpg.Pool:
    # A worker frozen mid-transaction (a zombie) must not hold its claims and row locks
    # for ever: PostgreSQL ends such a session, the live owner of the partition goes on.
    # Every statement is planned for its parameters (plan_cache_mode): asyncpg prepares
    # each statement once per connection, and after five executions PostgreSQL may cache
    # a generic plan built for the tables as they were then. On a fresh store, or a new
    # partition of the idempotency record before its first analyse, that plan was a
    # sequential scan, and it stayed one as the tables grew: every batch read the whole
    # record and tag table (p99 12.9 s at 2,000 events/s; tests/integration/test_plans.py).
    # A custom plan reads the tables' current size each time, so it follows their growth
    # without waiting for autoanalyze (with the statistics worker/statistics.py gathers
    # early). Its price is planning each execution. The statements where that price
    # counts are functions that plan once per session with their own settings, which hold
    # for their statements only: the store's lookup and write (migrations 0009 and 0010:
    # generic plans pinned onto the indexes; the server's CPU per batch of 10 0.6x)
    # and the digest question (0008); test_plans.py holds both to their indexes.
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=10,
        connection_class=PooledConnection,
        reset=reset_connection,
        server_settings={
            "idle_in_transaction_session_timeout": str(int(idle_in_transaction * 1000)),
            "application_name": "ocitag-worker",
            "plan_cache_mode": "force_custom_plan",
        },
    )
