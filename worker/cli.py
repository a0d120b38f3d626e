"""``ocitag-worker run | migrate | publish | outcomes | history | audit | reconcile | api``
(and ``state verify``, ``state repair``).

Each command has a flag for every setting it uses (``--input-topic`` for
``OCITAG_INPUT_TOPIC``; worker/settings.py ``COMMAND_SETTINGS``); flags win over the
environment. Exit codes: 0 done, 1 a fatal error (one line naming the
cause), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from worker import __version__, logs, reachability, runtime, tracing
from worker.errors import FatalError, SettingsError, WorkerError
from worker.settings import (
    COMMAND_SETTINGS,
    MASK,
    RENAMED,
    SECRET_FIELDS,
    Renamed,
    Settings,
    env_flag,
    env_name,
    flag_name,
    load_settings,
)

EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_FINDINGS = 3  # audit: the store lacks what outcomes announced; state repair: to do


class UsageError(Exception):
    """The command's arguments or input file are wrong (exit 2)."""


def _add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of the settings ``command`` uses, in ``Settings``' order (by group);
    a renamed setting's old flag still works, unlisted."""
    group = parser.add_argument_group("settings (each also an environment variable)")
    used = COMMAND_SETTINGS[command]
    for name, field in Settings.FIELDS.items():
        if name not in used:
            continue
        default = field.default
        shown = MASK if name in SECRET_FIELDS else default
        group.add_argument(
            flag_name(name),
            dest=f"setting_{name}",
            metavar="VALUE",
            help=f"{env_name(name)}: {field.description} (default: {shown})",
        )
    for old, name in RENAMED.items():
        if name in used:
            group.add_argument(env_flag(old), dest=f"renamed_{name}", help=argparse.SUPPRESS)


def _add_state_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``state verify``, ``state repair`` and ``state backfill``."""
    state = commands.add_parser("state", help="the state topic (docs/subscribers.md)")
    state_commands = state.add_subparsers(dest="state_command", required=True)
    verify = state_commands.add_parser(
        "verify",
        help="compare the state topic, folded by key, with the live records",
        description="Read the state topic from the beginning to its end offsets, keep the "
        "last value per key, and compare with live_ocitags. Prints each difference "
        "(missing, extra, differing with the fields); exit 1 if any, 0 if in step. Run it "
        "while the worker is idle.",
    )
    verify.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _add_setting_flags(verify, "state")
    repair = state_commands.add_parser(
        "repair",
        help="restore the store to the state topic where the topic is ahead (after a failover)",
        description="Read the state topic, keep the last record per key (tombstones too), and "
        "for every tag whose topic version is greater than its row's (or which has no row), "
        "restore the row to the topic's record through the guarded write, with a history "
        "entry (docs/replicated.md). Without --apply it only prints what it would do. Exit 0 "
        "when nothing is (left) to restore, 3 when restores are pending or a tag cannot be "
        "restored.",
    )
    repair.add_argument("--apply", action="store_true", help="write the restores")
    repair.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _add_setting_flags(repair, "state")
    backfill = state_commands.add_parser(
        "backfill",
        help="put on the state topic the live record of every tag it lacks",
        description="For tags that existed before the state topic: read the topic to its "
        "end offsets, then produce the live record of every live tag it does not hold "
        "(rows share-locked until acknowledged: safe while the worker runs). Prints how "
        "many; running it again produces none.",
    )
    _add_setting_flags(backfill, "state")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocitag-worker",
        description="Applies 'tag moved' events from Kafka to PostgreSQL and publishes one "
        "outcome per event.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the worker")
    _add_setting_flags(run, "run")

    migrate = commands.add_parser("migrate", help="apply database migrations")
    _add_setting_flags(migrate, "migrate")

    publish = commands.add_parser(
        "publish",
        help="publish tag events (moves; deletions with --delete)",
        description="publish OCITAG_ID ARTIFACT [options], publish --delete OCITAG_ID "
        "[options], or publish --file events.ndjson",
    )
    publish.add_argument("ocitag_id", nargs="?", help="e.g. docker.io/istio/pilot:1.3.0")
    publish.add_argument("artifact", nargs="?", help="digest, e.g. sha256:ba78…15ad")
    publish.add_argument("--file", type=Path, help="JSON array, JSON object or NDJSON file")
    publish.add_argument(
        "--delete",
        action="store_true",
        help="publish an ocitag.deleted.v1 for OCITAG_ID (the tag was deleted; no ARTIFACT)",
    )
    publish.add_argument("--actor")
    publish.add_argument("--previous-artifact")
    publish.add_argument("--expected-version", type=int)
    publish.add_argument("--source", default="urn:ocitag-worker:cli")
    publish.add_argument("--id", dest="event_id", help="event id (default: a new UUID)")
    publish.add_argument("--time", help="RFC 3339 event time (default: now)")
    publish.add_argument("--mode", choices=["structured", "binary"], default="structured")
    _add_setting_flags(publish, "publish")

    ingest = commands.add_parser(
        "ingest",
        help="serve registry webhooks (POST /webhooks/<kind>) and publish tag events",
    )
    _add_setting_flags(ingest, "ingest")

    outcomes = commands.add_parser("outcomes", help="print outcomes as they arrive")
    outcomes.add_argument("--from-beginning", action="store_true")
    outcomes.add_argument("--count", type=int, help="stop after this many")
    outcomes.add_argument("--idle-timeout", type=float, help="stop after this many quiet seconds")
    outcomes.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _add_setting_flags(outcomes, "outcomes")

    history = commands.add_parser(
        "history",
        help="print a tag's history, newest first",
        description="Every applied change of one tag, newest version first: a table on a "
        "terminal, JSON lines when piped. Exit 3 when the tag has no history.",
    )
    history.add_argument("ocitag_id", metavar="OCITAG_ID")
    history.add_argument("--limit", type=int, help="the newest this many entries only")
    history.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _add_setting_flags(history, "history")

    reconcile = commands.add_parser(
        "reconcile",
        help="repair drift between a registry and the live records",
        description="List the registry's tags, compare them with the live records of that "
        "host and publish the events that repair every difference. Exit 0 when done, 3 "
        "when some repositories could not be read (the others were repaired).",
    )
    reconcile.add_argument(
        "--registry", required=True, help="registry host as repositories name it, e.g. ghcr.io"
    )
    reconcile.add_argument(
        "--repository",
        action="append",
        dest="repositories",
        metavar="NAME",
        help="a repository path in the registry (repeatable); default: the catalogue's "
        "and every repository of the host with live records",
    )
    reconcile.add_argument(
        "--dry-run", action="store_true", help="print the differences, publish nothing"
    )
    reconcile.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="run again every SECONDS (serving /metrics) until SIGTERM; default: once",
    )
    reconcile.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _add_setting_flags(reconcile, "reconcile")

    _add_state_parser(commands)

    audit = commands.add_parser(
        "audit",
        help="compare the outcome topic with the store: versions announced but not stored",
        description="Read the outcome topic from the beginning and compare each tag's 200 "
        "outcomes with its row: 'lost' (an announced version above the stored one) and "
        "'reused' (one version announced for two events), as after a failover to an "
        "asynchronous standby. One JSON line per finding; exit 0 when none, 3 otherwise.",
    )
    _add_setting_flags(audit, "audit")

    # --- api
    api = commands.add_parser(
        "api", help="serve the seed's HTTP API (PUT/DELETE/GET /ocitags/{tag}/) over Kafka"
    )
    _add_setting_flags(api, "api")
    return parser


def _overrides(args: argparse.Namespace) -> tuple[dict[str, Any], list[Renamed]]:
    """The settings given as flags, and the old flags used (the new one wins)."""
    given = vars(args)
    values = {
        key.removeprefix("setting_"): value
        for key, value in given.items()
        if key.startswith("setting_") and value is not None
    }
    renamed: list[Renamed] = []
    for old, name in RENAMED.items():
        value = given.get(f"renamed_{name}")
        if value is not None:
            renamed.append(Renamed(env_flag(old), flag_name(name)))
            values.setdefault(name, value)
    return values, renamed


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags, renamed_flags = _overrides(args)
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        print(f"ocitag-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    traced = args.command in tracing.SERVICE_NAMES and settings.tracing.enabled
    logs.configure(settings.process.log_level, settings.process.log_format, trace_ids=traced)
    log = structlog.get_logger("worker")
    for renamed in (*settings.renamed, *renamed_flags):
        log.warning("setting_renamed", old=renamed.old, new=renamed.new, hint=renamed.warning())
    if settings.process.log_level == "debug":  # every setting; each start-up line has its own
        log.debug("settings", settings=settings.masked())
    if traced:  # before anything opens: the instrumentations wrap what is made later
        tracing.start(settings, args.command)
    try:
        with asyncio.Runner(
            loop_factory=runtime.loop_factory(settings.process.event_loop)
        ) as runner:
            return runner.run(_dispatch(args, settings))
    except (SettingsError, UsageError) as exc:  # SettingsError: ingest's kinds, at start
        print(f"ocitag-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerError as exc:
        structlog.get_logger("worker").error("fatal", error=str(exc))
        print(f"ocitag-worker: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KafkaError as exc:
        print(f"ocitag-worker: Kafka at KAFKA_BOOTSTRAP_SERVERS: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.stop()  # the spans still queued are exported before the process ends


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    reachability.probe_services(settings)
    if args.command in {"run", "ingest", "api"}:
        return await _serve(args.command, settings)
    if args.command == "migrate":
        return await _migrate(settings)
    handler = _COMMANDS.get(args.command)
    if handler is None:
        raise AssertionError(f"unhandled command {args.command}")  # argparse knows them all
    return await handler(args, settings)


async def _serve(command: str, settings: Settings) -> int:
    """The long-running components, until SIGTERM; each one's imports only when it runs."""
    serve: Callable[[Settings], Awaitable[None]]
    if command == "run":
        from worker.app import run as serve  # noqa: PLC0415
    elif command == "ingest":
        from worker.ingest.app import run_ingest as serve  # noqa: PLC0415
    else:
        from worker.api.app import run_api as serve  # noqa: PLC0415
    await serve(settings)
    return 0


async def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from worker.reconcile.output import choose  # noqa: PLC0415
    from worker.reconcile.run import parse_options, reconcile  # noqa: PLC0415

    try:
        options = parse_options(args.registry, args.repositories, args.dry_run, args.interval)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return await reconcile(settings, options, choose(True if args.json else None))


async def _migrate(settings: Settings) -> int:
    from worker.migrate import migrate  # noqa: PLC0415
    from worker.startup import create_pool  # noqa: PLC0415

    pool = await create_pool(
        settings, "migration", give_up_after=settings.lifecycle.startup_timeout_seconds
    )
    try:
        async with pool.acquire() as conn:
            done = await migrate(conn)
    except asyncpg.PostgresError as exc:
        raise FatalError(f"migration failed: {exc}") from exc
    finally:
        await pool.close()
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in done) or "none (up to date)"
    print(f"migrations applied: {names}")
    return 0


async def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from worker.encode import build_event  # noqa: PLC0415
    from worker.publisher import event_from_item, publish, read_items  # noqa: PLC0415

    try:
        if args.file is not None:
            if args.delete or args.ocitag_id:
                raise UsageError("publish --file takes no OCITAG_ID, ARTIFACT or --delete")
            events = [event_from_item(item, args.source) for item in read_items(args.file)]
        elif args.delete and args.artifact:
            raise UsageError("publish --delete takes OCITAG_ID only: a deletion has no ARTIFACT")
        elif args.ocitag_id and (args.artifact or args.delete):
            events = [
                build_event(
                    args.ocitag_id,
                    None if args.delete else args.artifact,
                    actor=args.actor,
                    previous_artifact=args.previous_artifact,
                    expected_version=args.expected_version,
                    source=args.source,
                    event_id=args.event_id,
                    time=args.time,
                )
            ]
        else:
            raise UsageError("publish needs OCITAG_ID ARTIFACT, --delete OCITAG_ID, or --file")
    except (ValueError, OSError) as exc:  # a bad OCITag ID, file or JSON
        raise UsageError(str(exc)) from exc
    for event_id, partition, offset in await publish(settings, events, args.mode):
        print(f"published {event_id} to {settings.topics.input_topic}[{partition}]@{offset}")
    return 0


async def _state(args: argparse.Namespace, settings: Settings) -> int:
    if args.state_command == "repair":
        return await _state_repair(args, settings)
    if args.state_command == "backfill":
        return await _state_backfill(args, settings)
    return await _state_verify(args, settings)


async def _state_repair(args: argparse.Namespace, settings: Settings) -> int:
    from worker.staterepair import print_repaired, repair  # noqa: PLC0415

    try:
        repaired = await repair(settings, apply=args.apply)
    except ValueError as exc:  # the state topic is off
        raise UsageError(str(exc)) from exc
    print_repaired(repaired, True if args.json else None)
    structlog.get_logger("worker.staterepair").info("state_repaired", **repaired.summary())
    return repaired.exit_code


async def _state_verify(args: argparse.Namespace, settings: Settings) -> int:
    from worker.stateverify import print_verified, verify  # noqa: PLC0415

    try:
        verified = await verify(settings)
    except ValueError as exc:  # the state topic is off
        raise UsageError(str(exc)) from exc
    print_verified(verified, True if args.json else None)
    return EXIT_FATAL if verified.differences else 0


async def _state_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from worker.statebackfill import backfill  # noqa: PLC0415

    try:
        done = await backfill(settings)
    except ValueError as exc:  # the state topic is off
        raise UsageError(str(exc)) from exc
    print(json.dumps(done.summary()))
    return 0


async def _history(args: argparse.Namespace, settings: Settings) -> int:
    from worker.history_command import history  # noqa: PLC0415

    if args.limit is not None and args.limit < 1:
        raise UsageError("history --limit must be at least 1")
    try:
        return await history(
            settings, args.ocitag_id, limit=args.limit, as_json=True if args.json else None
        )
    except ValueError as exc:  # a bad OCITag ID
        raise UsageError(str(exc)) from exc


async def _audit(settings: Settings) -> int:
    from worker.audit import audit  # noqa: PLC0415

    found = await audit(settings)
    for finding in found:
        print(json.dumps(finding.as_dict()))
    structlog.get_logger("worker.audit").info(
        "audited",
        lost=sum(1 for f in found if f.kind == "lost"),
        reused=sum(1 for f in found if f.kind == "reused"),
    )
    return EXIT_FINDINGS if found else 0


async def _outcomes(args: argparse.Namespace, settings: Settings) -> int:
    from worker.shutdown import install_signals  # noqa: PLC0415
    from worker.watch import watch  # noqa: PLC0415

    # Ctrl-C is how a person stops following: a clean stop, exit 0
    stop = asyncio.Event()
    install_signals(stop)
    await watch(
        settings,
        from_beginning=args.from_beginning,
        count=args.count,
        idle_timeout=args.idle_timeout,
        as_json=True if args.json else None,
        stop=stop,
    )
    return 0


#: the one-shot commands that take their arguments (``run``/``ingest``/``api`` serve,
#: ``migrate`` takes none)
_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Awaitable[int]]] = {
    "publish": _publish,
    "reconcile": _reconcile,
    "outcomes": _outcomes,
    "state": _state,
    "history": _history,
    "audit": lambda _args, settings: _audit(settings),
}
