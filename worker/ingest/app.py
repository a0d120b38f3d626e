"""``ocitag-worker ingest``: start-up, the Kafka connection kept in the background, and
shutdown.

Ingest starts and answers while Kafka is unreachable: the producer is (re)started in the
background with backoff, and until it is up every delivery with events gets 503 with
Retry-After (deliveries with nothing to publish are still answered 200). For the same
reason /readyz does not depend on Kafka: its reason says whether the producer reaches
it now (``kafka connected``, or ``kafka unreachable …`` during an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import structlog
from aiohttp import web

from worker import reachability
from worker.documents import DocumentError
from worker.errors import Cause, SettingsError, TransientError, describe
from worker.health import COMMAND_PARTS, HTTP, Check, Health
from worker.ingest.auth import SLOTS, split_secrets
from worker.ingest.gate import Enabled
from worker.ingest.kinds import KINDS
from worker.ingest.oidc import HttpKeySource, OidcPolicy, OidcVerifier
from worker.ingest.receivers import SETTING as RECEIVERS
from worker.ingest.receivers import ReceiverSpec, parse_receivers
from worker.ingest.resolve import NoResolver
from worker.ingest.server import IngestServer, Limits
from worker.oci import RegistryClient
from worker.retry import Backoff
from worker.settings import COMMAND_SETTINGS, INGEST_KINDS, Settings, env_name
from worker.startup import InputSink, Lifecycle

log = structlog.get_logger("worker.ingest")


def _kafka_away(exc: BaseException) -> BaseException:
    return TransientError(Cause.KAFKA_UNAVAILABLE, describe(exc))


#: kinds whose payloads lack the digest: a registry client is made only for them
NEEDS_RESOLVER = ("dockerhub", "quay")


def enabled_kinds(settings: Settings, oidc: OidcVerifier | None = None) -> dict[str, Enabled]:
    """The served receivers by name: each of ``OCITAG_INGEST_RECEIVERS``, and for each
    ``OCITAG_INGEST_<KIND>_SECRET`` one named ``<kind>`` that may name any host (warned).
    SettingsError naming the setting (and the JSON place) for a broken receiver, a kind
    secret that holds no secret, a name given twice, or nothing served at all. ``oidc``:
    gar's Pub/Sub token check, for the ``gar`` kind's receiver only (a token is not
    bound to one receiver's hosts)."""
    enabled: dict[str, Enabled] = {}
    for kind in INGEST_KINDS:
        secret = settings.value(f"ingest_{kind}_secret")
        if secret is None:
            continue
        name = env_name(f"ingest_{kind}_secret")
        secrets = split_secrets(secret.get_secret_value())
        if not secrets:
            raise SettingsError(f"invalid setting {name}: holds no secret (comma-separated)")
        if len(secrets) > SLOTS:
            raise SettingsError(f"invalid setting {name}: holds more than {SLOTS} secrets")
        log.warning(
            "ingest_unbound_receiver",
            receiver=kind,
            hint=f"{name} serves /webhooks/{kind} for any registry host: name the hosts "
            "with OCITAG_INGEST_RECEIVERS (docs/authorization.md)",
        )
        enabled[kind] = Enabled(KINDS[kind], secrets, oidc=oidc if kind == "gar" else None)
    for receiver in configured_receivers(settings):
        if receiver.name in enabled:
            raise SettingsError(
                f"invalid setting {RECEIVERS}: receiver {receiver.name} is also served by "
                f"{env_name(f'ingest_{receiver.name}_secret')}: rename it or drop that setting"
            )
        enabled[receiver.name] = Enabled(
            KINDS[receiver.kind], receiver.secrets, hosts=receiver.hosts
        )
    if not enabled:
        raise SettingsError(
            "ingest serves no registry kind: set OCITAG_INGEST_RECEIVERS or at least one "
            f"OCITAG_INGEST_<KIND>_SECRET (kinds: {', '.join(INGEST_KINDS)})"
        )
    return enabled


def configured_receivers(settings: Settings) -> tuple[ReceiverSpec, ...]:
    """OCITAG_INGEST_RECEIVERS parsed, its secret files read; SettingsError naming the
    JSON place (never a secret)."""
    value = settings.ingest.ingest_receivers
    if value is None:
        return ()
    try:
        return parse_receivers(value.get_secret_value(), _read_secret_file)
    except DocumentError as exc:
        raise SettingsError(f"invalid setting {RECEIVERS}: {exc}") from None


def _read_secret_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


async def _connect(sink: InputSink, settings: Settings) -> None:
    """Create the input topic when it is missing and OCITAG_CREATE_TOPICS allows, then
    start the producer, for as long as it takes (the settings' backoff). Every failure
    is waited out, refusals included: ingest keeps answering (503) and says why in the
    log, rather than stopping the receiver of every registry."""
    backoff = Backoff(
        settings.lifecycle.retry_backoff_initial_seconds,
        settings.lifecycle.retry_backoff_max_seconds,
    )
    await sink.keep_starting([settings.topics.input_topic], classify=_kafka_away, backoff=backoff)
    reachability.KAFKA.succeeded()
    log.info("kafka_connected")


def gar_oidc(settings: Settings, client: httpx.AsyncClient) -> OidcVerifier | None:
    """gar's Pub/Sub OIDC check, when OCITAG_INGEST_GAR_OIDC_AUDIENCE is set."""
    if settings.ingest.ingest_gar_oidc_audience is None:
        return None
    policy = OidcPolicy(
        settings.ingest.ingest_gar_oidc_audience, settings.ingest.ingest_gar_oidc_email
    )
    return OidcVerifier(policy, HttpKeySource(settings.ingest.ingest_gar_oidc_jwks_url, client))


def limits(settings: Settings) -> Limits:
    return Limits(
        topic=settings.topics.input_topic,
        max_body_bytes=settings.ingest.ingest_max_body_bytes,
        read_timeout=settings.ingest.ingest_read_timeout_seconds,
        deadline=settings.ingest.ingest_deadline_seconds,
        retry_after=settings.ingest.ingest_retry_after_seconds,
        problem_base_uri=settings.contract.problem_base_uri,
    )


def resolver_for(settings: Settings) -> RegistryClient | None:
    """The registry client for digest look-ups, when a served kind needs one (Docker
    Hub and Quay payloads carry no digest)."""
    kinds = {f"ingest_{kind}_secret" for kind in NEEDS_RESOLVER}
    named = any(r.kind in NEEDS_RESOLVER for r in configured_receivers(settings))
    if not named and not any(settings.value(name) is not None for name in kinds):
        return None
    return RegistryClient.from_settings(settings)


async def run_ingest(
    settings: Settings, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> None:
    """Serve webhooks until SIGTERM/SIGINT (or ``stop``); in-flight deliveries finish."""
    keys_client = httpx.AsyncClient(headers={"User-Agent": "ocitag-worker"})
    async with contextlib.AsyncExitStack() as closing:
        closing.push_async_callback(keys_client.aclose)
        kinds = enabled_kinds(settings, gar_oidc(settings, keys_client))
        process = await closing.enter_async_context(Lifecycle(stop, handle_signals=handle_signals))
        log.info(
            "starting",
            settings=settings.masked(COMMAND_SETTINGS["ingest"], changed=True),
            receivers={name: e.spec.name for name, e in sorted(kinds.items())},
        )
        await _serve(settings, kinds, process)
    log.info("stopped")


async def _serve(settings: Settings, kinds: dict[str, Enabled], process: Lifecycle) -> None:
    health = Health(settings.probes.liveness_timeout_seconds, parts=COMMAND_PARTS["ingest"])
    # on the way down, in reverse: deliveries in flight finish, then the sink stops
    sink = await process.input_sink(settings, "ingest")
    process.task(_connect(sink, settings), name="ingest-producer")

    async def ready() -> Check:
        # Ready while serving, whatever Kafka's state: a sender must get the 503 with
        # Retry-After, not a Service without endpoints (the reason shows Kafka's state).
        return Check(True, f"serving; kafka {await sink.kafka_state()}")

    health.readiness_probe = ready
    await process.probes(settings, health, "ingest")
    registry = resolver_for(settings)
    if registry is not None:
        process.on_exit(registry.aclose)
    server = IngestServer(kinds, sink, registry or NoResolver(), limits(settings))
    process.on_exit(server.close)
    runner = web.AppRunner(
        server.app(), access_log=None, shutdown_timeout=settings.lifecycle.shutdown_grace_seconds
    )
    await runner.setup()
    process.on_exit(runner.cleanup)
    # the event loop that answers deliveries keeps running tasks
    process.task(health.heartbeat(HTTP), name="ingest-heartbeat")
    await web.TCPSite(runner, settings.ingest.ingest_host, settings.ingest.ingest_port).start()
    health.started()
    log.info("running", port=settings.ingest.ingest_port, topic=settings.topics.input_topic)
    await process.stop.wait()
