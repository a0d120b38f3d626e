"""Commits that wait for a synchronous standby nobody has: told apart from an outage.

A primary whose ``synchronous_standby_names`` lists a standby that is not connected (a
promoted standby that kept its old primary's setting, the standby down) accepts sessions
and runs queries, but every COMMIT waits (``wait_event = 'SyncRep'``) until a listed
standby acknowledges it: for ever. The driver sees a statement that times out, so the
worker would log ``db_connection: TimeoutError`` and retry without end. While PostgreSQL
counts as away (worker/reachability.py), its probe asks the server whether that is what
happens, and if so says it (the log line ``sync_replication_stalled``, the gauge
``ocitag_db_sync_replication_stalled``, which the alert
``OcitagDatabaseCommitsWaitForSyncStandby`` reads) and keeps the outage open: a server
that takes sessions but not commits is not back.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import structlog

from worker import metrics

#: one round trip: the setting, the synchronous standbys connected now, the standbys
#: whose state this role may not see (sync_state needs pg_monitor or superuser: without
#: it a connected standby shows NULL), and the sessions of this role waiting for one
QUERY = """
SELECT current_setting('synchronous_standby_names') AS names,
       (SELECT count(*) FROM pg_stat_replication
         WHERE sync_state IN ('sync', 'quorum')) AS connected,
       (SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL) AS hidden,
       (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep') AS waiting
"""


@dataclass(frozen=True)
class SyncRepState:
    """What the primary says about synchronous replication."""

    names: str  # synchronous_standby_names
    connected: int  # synchronous (or quorum) standbys streaming now
    waiting: int  # sessions whose commit waits for one (wait_event SyncRep)
    hidden: int = 0  # standbys connected whose state this role may not read


class SyncReplicationStalledError(Exception):
    """Commits wait for a synchronous standby that does not acknowledge them."""


def diagnose(state: SyncRepState) -> str | None:
    """Why commits hang, when it is synchronous replication; None otherwise. Pure.

    ``synchronous_standby_names`` set with no synchronous standby connected: every
    commit that writes waits, and nothing releases it until a standby connects or the
    setting is emptied, whether or not a session waits at this moment (the worker's
    statement timeout cancels each wait, then it retries). With a standby connected, a
    wait is a slow standby: the timeout and the retries cover that, it is not this. A
    standby whose state is hidden (a role without pg_monitor) may be the synchronous one:
    unknown is not a stall, so no diagnosis (a promoted primary has no standby at all,
    hidden or not, and is still told)."""
    if not state.names.strip() or state.connected > 0 or state.hidden > 0:
        return None
    return (
        f"commits wait for synchronous replication: synchronous_standby_names = "
        f"'{state.names}' but no synchronous standby is connected ({state.waiting} "
        "session(s) waiting now, wait_event SyncRep); connect a standby, or, on a primary "
        "that has none (a promoted standby), set synchronous_standby_names = '' and reload"
    )


async def read_state(conn: asyncpg.Connection) -> SyncRepState:
    row = await conn.fetchrow(QUERY)
    assert row is not None
    return SyncRepState(
        str(row["names"]), int(row["connected"]), int(row["waiting"]), int(row["hidden"])
    )


class SyncRepWatch:
    """The gauge and one log line per change (stalled, then clear), fed by each probe."""

    def __init__(self) -> None:
        self._said: str | None = None

    def saw(self, state: SyncRepState) -> str | None:
        """Record ``state``; the diagnosis when commits are stalled."""
        said = diagnose(state)
        metrics.SYNC_REP_STALLED.set(1 if said else 0)
        log = structlog.get_logger("worker.syncrep")
        if said and self._said is None:
            log.error(
                "sync_replication_stalled",
                synchronous_standby_names=state.names,
                waiting_sessions=state.waiting,
                connected_sync_standbys=state.connected,
                error=said,
            )
        elif said is None and self._said is not None:
            log.info("sync_replication_resumed", synchronous_standby_names=state.names)
        self._said = said
        return said

    def clear(self) -> None:
        metrics.SYNC_REP_STALLED.set(0)
        self._said = None


WATCH = SyncRepWatch()


async def probe(dsn: str, watch: SyncRepWatch = WATCH) -> None:
    """PostgreSQL's outage probe: a session opens, and commits are not stalled on
    synchronous replication (SyncReplicationStalledError, naming the cause, if they
    are). Raises what the driver raises."""
    conn = await asyncpg.connect(dsn)
    try:
        said = watch.saw(await read_state(conn))
    finally:
        await conn.close()
    if said is not None:
        raise SyncReplicationStalledError(said)
