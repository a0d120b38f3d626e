"""The start-up kit (worker/startup.py): the one wait, the one lifecycle, the one
missing-topic message, and the arrows from the components to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.helpers.imports import imported
from worker import kafka
from worker.errors import Cause, FatalError, TransientError
from worker.kafka import Message
from worker.retry import Backoff
from worker.settings import Settings, load_settings
from worker.startup import (
    KAFKA,
    STARTUP_BACKOFF,
    InputSink,
    Lifecycle,
    StopRequestedError,
    startup_backoff,
    wait_for_service,
)

WORKER = Path(__file__).resolve().parents[2] / "worker"
#: the commands' own code; everything else in worker/ is the core they share
COMPONENTS = {"worker.api": "api", "worker.ingest": "ingest", "worker.reconcile": "reconcile"}
NO_WAIT = Backoff(0.0, 0.0)


def _settings() -> Settings:
    return load_settings(
        {"kafka_bootstrap_servers": "127.0.0.1:1", "database_url": "postgresql://x@127.0.0.1/x"},
        environ={},
    )


def _away() -> TransientError:
    return TransientError(Cause.KAFKA_UNAVAILABLE, "connection refused")


def _as_is(exc: BaseException) -> BaseException:
    return exc


async def test_a_transient_failure_is_waited_out() -> None:
    tries: list[int] = []

    async def attempt() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise _away()
        return "up"

    assert await wait_for_service(KAFKA, attempt, classify=_as_is, backoff=NO_WAIT) == "up"
    assert len(tries) == 3


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (FatalError("bad password"), "bad password"),
        (ValueError("no"), "Kafka (KAFKA_BOOTSTRAP_SERVERS) refused: no"),
    ],
    ids=["fatal-as-is", "not-transient-is-a-refusal"],
)
async def test_a_refusal_stops_at_once(failure: Exception, message: str) -> None:
    tries: list[int] = []

    async def attempt() -> None:
        tries.append(1)
        raise failure

    with pytest.raises(FatalError) as raised:
        await wait_for_service(KAFKA, attempt, classify=_as_is, backoff=NO_WAIT)
    assert str(raised.value) == message
    assert len(tries) == 1


async def test_past_the_deadline_the_wait_names_the_setting() -> None:
    async def attempt() -> None:
        raise _away()

    with pytest.raises(FatalError) as raised:
        await wait_for_service(KAFKA, attempt, classify=_as_is, give_up_after=0, backoff=NO_WAIT)
    assert str(raised.value).startswith(
        "Kafka at KAFKA_BOOTSTRAP_SERVERS did not answer within 0 s "
        "(OCITAG_STARTUP_TIMEOUT_SECONDS)"
    )


async def test_a_stop_ends_the_wait() -> None:
    stop = asyncio.Event()

    async def attempt() -> None:
        stop.set()  # as SIGTERM arriving during the attempt
        raise _away()

    with pytest.raises(StopRequestedError):
        await wait_for_service(KAFKA, attempt, classify=_as_is, stop=stop, backoff=NO_WAIT)


def test_the_startup_backoff_is_the_one_policy() -> None:
    backoff = startup_backoff()
    assert (backoff.initial, backoff.cap) == STARTUP_BACKOFF == (0.25, 5.0)


@pytest.mark.parametrize("failing", [False, True], ids=["clean-exit", "error"])
async def test_the_lifecycle_closes_in_reverse_on_any_exit(failing: bool) -> None:
    closed: list[str] = []

    def closer(name: str) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            closed.append(name)

        return close

    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError) if failing else contextlib.nullcontext():
        async with Lifecycle(handle_signals=False) as process:
            process.on_exit(closer("pool"))
            task = process.task(forever(), name="background")
            process.on_exit(closer("producer"))
            if failing:
                raise RuntimeError("start-up failed half-way")
    assert closed == ["producer", "pool"]
    assert task.cancelled()


async def test_the_sink_is_transient_until_started() -> None:
    with pytest.raises(TransientError) as raised:
        await InputSink(_settings(), "ingest").send_all([Message("t", None, b"{}", [])])
    assert raised.value.cause is Cause.KAFKA_UNAVAILABLE


@pytest.mark.parametrize(
    ("field", "topic", "setting"),
    [
        ("input_topic", "ocitag.events", "OCITAG_INPUT_TOPIC"),
        ("outcome_topic", "ocitag.outcomes", "OCITAG_OUTCOME_TOPIC"),
    ],
)
async def test_a_missing_topic_has_one_message(
    monkeypatch: pytest.MonkeyPatch, field: str, topic: str, setting: str
) -> None:
    settings = _settings()
    assert settings.value(field) == topic

    async def missing(_: Settings, names: list[str]) -> list[str]:
        return list(names)

    monkeypatch.setattr(kafka, "missing_topics", missing)
    with pytest.raises(FatalError) as raised:
        await kafka.require_topics(settings, [field])
    assert str(raised.value) == (
        f"topic {topic} does not exist: start the worker (it creates its topics) or create "
        f"it, or set {setting}"
    )


def _component(module: str) -> str | None:
    for prefix, name in COMPONENTS.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "worker" if module == "worker.app" else None


def test_arrows_point_from_the_components_to_the_core() -> None:
    """No component imports another, and the core imports none (the cli, which runs
    them, aside)."""
    offenders = []
    for path in sorted(WORKER.rglob("*.py")):
        parts = path.relative_to(WORKER.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module in {"worker.cli", "worker.__main__"}:
            continue
        own = _component(module)
        for target in imported(path):
            other = _component(target)
            if other is not None and other != own:
                offenders.append(f"{module} imports {target}")
    assert not offenders, offenders
