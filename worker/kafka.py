"""Kafka at the edge: client options from settings (TLS, SASL), topic set-up, the
producer every command shares (outcomes, input events, dead letters), and what a Kafka
error means for the loop (retry, reject, stop)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka import errors as aiokafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    BrokerResponseError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NoBrokersAvailable,
    NodeNotReadyError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnknownProducerId,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from worker import kafkaconn, metrics, tracing
from worker.delivery import DeliveryTimeoutError, abort, acknowledged, delivery_timeout
from worker.errors import Cause, FatalError, PermanentError, TransientError, describe
from worker.packing import Packer
from worker.settings import Settings, env_name

log = structlog.get_logger("worker.kafka")


class Message(NamedTuple):
    """One record to produce: what every producer of this package sends. While tracing
    is on, a record whose headers already hold a ``traceparent`` keeps it (the worker's
    outcome: its event's span; a dead letter: the record's own); the others get the
    producer call's (worker/tracing_sdk.py)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


#: What a command's producer is doing when Kafka refuses it (``Producer``'s ``action``).
PUBLISHING_OUTCOMES = "publishing outcomes"
PUBLISHING_INPUT_EVENTS = "publishing input events"

_TOPIC_ALREADY_EXISTS = 36
# The broker's default max.message.bytes, and the producer's own cap on one request
# (aiokafka's max_request_size): a message larger than either is refused.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
MAX_REQUEST_BYTES = 1_048_576
#: how long a caller refused at once may wait for a producer that had given up on the
#: cluster to try again (Producer.reachable): a broker that is back answers a metadata
#: request in milliseconds, one that is away refuses the connection at once
REACH_PROBE_SECONDS = 0.5
# A producer that raised these will not recover by itself: replace it. A broker's
# INVALID_PRODUCER_EPOCH reaches a send as ProducerFenced (aiokafka converts it): not
# retriable, it was a PermanentError, the batch "failed" and the worker stopped.
_STUCK = (
    KafkaTimeoutError,
    ProducerClosed,
    OutOfOrderSequenceNumber,
    InvalidProducerEpoch,
    ProducerFenced,
    UnknownProducerId,
)
_FATAL = (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    ssl.SSLCertVerificationError,
    UnsupportedSaslMechanismError,
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)


class MessageTooLargeError(PermanentError):
    """The broker (or the producer) refused a message as larger than the topic takes."""


#: how long a replaced producer may take to deliver what it holds before it is aborted
RETIRE_SECONDS = 10.0
#: how long a command's producer may take, once the command stops, to deliver what it
#: holds before it is aborted; the abort takes at most twice this more (the sender's
#: request in flight, then the connections): 6 s in all, which every command's shutdown
#: leaves after its own waits (``Producer.stop``)
STOP_SECONDS = 2.0

#: why a producer is unreachable, as readiness probes and refusals say it
NO_BROKER_ANSWERED = "no broker answered the producer's last try"


class BrokerUnreachableError(TransientError):
    """Refused before the messages were handed to the producer, which knows no broker
    answers: they will not be published (a retry may be)."""

    def __init__(self) -> None:
        super().__init__(Cause.KAFKA_UNAVAILABLE, NO_BROKER_ANSWERED)


class ClientRecord(Enum):
    """What one of the Kafka client's own log records says."""

    UNREACHABLE = "unreachable"  # a broker could not be reached: part of an outage
    REACHED = "reached"  # cluster metadata refreshed: brokers answer
    TRANSIENT = "transient"  # a broker answered "not now" (the client retries): debug
    OTHER = "other"  # anything else: logged as it is


# Records known by their wording, as they name no exception: aiokafka.cluster's DEBUG
# line on every successful metadata refresh (bootstrap included), aiokafka.client's line
# when every known broker failed one, and the consumer group's coordinator gone (an
# outage, or it moved): the client finds it again and rejoins, and a lost assignment
# shows in the worker's own rebalance lines.
_BY_TEMPLATE = {
    "Updated cluster metadata to %s": ClientRecord.REACHED,
    "Unable to update metadata from %s": ClientRecord.UNREACHABLE,
    "Marking the coordinator dead (node %s)for group %s.": ClientRecord.TRANSIENT,
    "Heartbeat session expired - marking coordinator dead": ClientRecord.TRANSIENT,
    "Heartbeat failed for group %s: coordinator (node %s) is either not started or not"
    " valid": ClientRecord.TRANSIENT,
}


# A broker's answers that mean the cluster is moving a coordinator or a leader (a first
# start creating __consumer_offsets, a broker restarting, a rebalance): the client finds
# the new one by itself. Other retriable answers (NOT_ENOUGH_REPLICAS,
# UNKNOWN_TOPIC_OR_PARTITION, KAFKA_STORAGE_ERROR) say something is wrong: logged as they are.
_MOVING: tuple[type[BrokerResponseError], ...] = (
    aiokafka_errors.GroupCoordinatorNotAvailableError,
    aiokafka_errors.NotCoordinatorForGroupError,
    aiokafka_errors.GroupLoadInProgressError,
    aiokafka_errors.NotLeaderForPartitionError,
    aiokafka_errors.LeaderNotAvailableError,
    aiokafka_errors.RebalanceInProgressError,
)


def classify_client_record(logger: str, template: object, args: object) -> ClientRecord:
    """Sort the Kafka client's log records by the error they carry (by their wording
    only when they carry none, above): an error in a broker's response means the broker
    is there (a retriable one, such as COORDINATOR_NOT_AVAILABLE while a first start
    creates __consumer_offsets, is the client's business); a connection error or a
    timeout means it is not."""
    if not logger.startswith("aiokafka"):
        return ClientRecord.OTHER
    if isinstance(template, str) and template in _BY_TEMPLATE:
        return _BY_TEMPLATE[template]
    values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else ()
    for value in values:
        # the producer names the class of a broker's error, not an instance
        if isinstance(value, BrokerResponseError) or (
            isinstance(value, type) and issubclass(value, BrokerResponseError)
        ):
            kind = value if isinstance(value, type) else type(value)
            return ClientRecord.TRANSIENT if issubclass(kind, _MOVING) else ClientRecord.OTHER
        if isinstance(value, BaseException):
            error = classify_kafka_error(value, "")
            return (
                ClientRecord.UNREACHABLE
                if isinstance(error, TransientError) and error.cause.outage
                else ClientRecord.OTHER
            )
    return ClientRecord.OTHER


def metadata_refresh_failed(cluster: Any) -> bool:
    """The client's last metadata refresh failed (every broker it knows, or the
    bootstrap servers, could not be reached). aiokafka keeps both times only in private
    fields (tests/unit/test_kafka_records.py pins them to the installed version)."""
    last = float(getattr(cluster, "_last_refresh_ms", 0))
    return last > float(getattr(cluster, "_last_successful_refresh_ms", 0))


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin client.
    Every Kafka client of the product is built with these, so this is where aiokafka's
    connection is made to fail as broken on a closed transport (worker/kafkaconn.py):
    once, at the first client, not at import."""
    kafkaconn.install()
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka.kafka_bootstrap_servers,
        "security_protocol": settings.kafka.kafka_security_protocol,
    }
    if settings.kafka.kafka_security_protocol in {"SSL", "SASL_SSL"}:
        context = create_ssl_context(
            cafile=str(settings.kafka.kafka_ssl_cafile)
            if settings.kafka.kafka_ssl_cafile
            else None,
            certfile=str(settings.kafka.kafka_ssl_certfile)
            if settings.kafka.kafka_ssl_certfile
            else None,
            keyfile=str(settings.kafka.kafka_ssl_keyfile)
            if settings.kafka.kafka_ssl_keyfile
            else None,
            password=(
                settings.kafka.kafka_ssl_key_password.get_secret_value()
                if settings.kafka.kafka_ssl_key_password
                else None
            ),
        )
        context.check_hostname = settings.kafka.kafka_ssl_check_hostname
        options["ssl_context"] = context
    if settings.kafka.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka.kafka_sasl_password is not None  # checked by Settings
        options.update(
            sasl_mechanism=settings.kafka.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka.kafka_sasl_username,
            sasl_plain_password=settings.kafka.kafka_sasl_password.get_secret_value(),
        )
    return options


# How long a cancelled client start may still take to finish (start_whole): a broker
# answers a bootstrap in milliseconds; one that does not within this is left behind.
START_GRACE_SECONDS = 5.0


async def start_whole(
    start: Callable[[], Awaitable[object]],
    close: Callable[[], Awaitable[object]],
    *,
    grace: float = START_GRACE_SECONDS,
) -> None:
    """``start()`` an aiokafka client so that a cancellation does not leak its socket.

    aiokafka 0.14's bootstrap closes its bootstrap connection only when the metadata
    request fails with a Kafka error or a timeout: cancelled while the answer is
    awaited (a process stopped in its first second, or a start given up), the
    connection is left open, and asyncio reports "Unclosed AIOKafkaConnection" when it
    is collected, after the process said it stopped. So a start in flight is never
    cancelled midway: on cancellation it may finish (at most ``grace`` seconds), the
    client is then closed with ``close()`` (at most ``grace`` seconds more: stopping a
    client whose start was cut short can wait for ever), and the cancellation goes on."""
    starting = asyncio.ensure_future(start())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        await _close_after_start(starting, close, grace)
        raise


async def _close_after_start(
    starting: asyncio.Future[object], close: Callable[[], Awaitable[object]], grace: float
) -> None:
    with contextlib.suppress(BaseException):
        await asyncio.wait({starting}, timeout=grace)
    if not starting.done():
        starting.cancel()
    elif not starting.cancelled():
        starting.exception()  # retrieved: a failed start is not reported twice
    # a second cancellation while closing ends the wait; the first is raised after it
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(close(), grace)


def classify_kafka_error(
    exc: BaseException, what: str, *, component: str = "the worker"
) -> Exception:
    """Bad credentials or permissions stop the process; a broker that is away or slow is
    retried; anything else is a problem with this one piece of work. ``what`` is what
    the caller was doing ("publishing outcomes"), ``component`` who it is ("ingest")."""
    if isinstance(exc, MessageSizeTooLargeError):
        return MessageTooLargeError(f"{what}: {describe(exc)}")
    if isinstance(exc, _FATAL):
        return FatalError(
            f"Kafka refused {component} while {what}: {exc} (check KAFKA_BOOTSTRAP_SERVERS "
            "and the OCITAG_KAFKA_SASL_*/OCITAG_KAFKA_SSL_* settings)"
        )
    if isinstance(
        exc,
        KafkaTimeoutError
        | KafkaConnectionError
        | NoBrokersAvailable
        | NodeNotReadyError
        | asyncio.TimeoutError
        | OSError,
    ) or (isinstance(exc, KafkaError) and exc.retriable):
        return TransientError(_cause(exc), f"{what}: {describe(exc)}")
    return PermanentError(f"{what}: {describe(exc)}")


def _cause(exc: BaseException) -> Cause:
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError | asyncio.TimeoutError):
        return Cause.KAFKA_TIMEOUT
    return Cause.KAFKA_UNAVAILABLE


async def check_connection(settings: Settings) -> None:
    """Connect and authenticate to one bootstrap server directly. The clients' own
    bootstrap turns an authentication failure into a generic connection error, which
    would be retried until the start-up timeout: this tells the two apart."""
    options = client_options(settings)
    last: BaseException | None = None
    for server in settings.kafka.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                ssl_context=options.get("ssl_context"),
                security_protocol=settings.kafka.kafka_security_protocol,
                sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
                request_timeout_ms=10_000,
            )
        except Exception as exc:
            if isinstance(classify_kafka_error(exc, "connecting"), FatalError):
                raise classify_kafka_error(exc, "authenticating") from exc
            last = exc
            continue
        conn.close()
        return
    raise KafkaConnectionError(f"no bootstrap server answered: {last}")


async def missing_topics(settings: Settings, names: Sequence[str]) -> list[str]:
    """Which of the topics the cluster does not have."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15_000)
    try:
        await start_whole(admin.start, admin.close)
        existing = set(await admin.list_topics())
        return [name for name in names if name not in existing]
    finally:
        await admin.close()


async def require_topics(settings: Settings, fields: Sequence[str]) -> None:
    """FatalError naming the first topic setting (``input_topic``, ``outcome_topic``)
    whose topic the cluster lacks: for commands that never create topics."""
    names = {settings.value(field): field for field in fields}
    missing = await missing_topics(settings, list(names))
    if missing:
        raise FatalError(
            f"topic {missing[0]} does not exist: start the worker (it creates its topics) "
            f"or create it, or set {env_name(names[missing[0]])}"
        )


async def ensure_topics(
    settings: Settings,
    names: Sequence[str],
    *,
    partitions: int | None = None,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create missing topics (OCITAG_CREATE_TOPICS) or name the missing one, with
    ``partitions`` (default OCITAG_TOPIC_PARTITIONS) and topic ``configs``. Returns the
    topics created."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15_000)
    try:
        await start_whole(admin.start, admin.close)
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if not missing:
            return []
        if not settings.topics.create_topics:
            raise FatalError(
                f"topic {missing[0]} does not exist and OCITAG_CREATE_TOPICS is off: create "
                "it, or point the topic setting at an existing one"
            )
        replication = settings.topics.topic_replication_factor
        if replication < 1:
            # "the cluster's choice": three copies, or as many as there are brokers
            brokers = (await admin.describe_cluster()).get("brokers") or [None]
            replication = min(3, len(brokers))
        count = partitions or settings.topics.topic_partitions
        extra = dict(configs or {})
        response = await admin.create_topics(
            [NewTopic(name, count, replication, topic_configs=extra) for name in missing]
        )
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise FatalError(
                    f"could not create topic {topic}: error {code} {rest[0] if rest else ''}"
                )
        log.info(
            "topics_created",
            topics=missing,
            partitions=count,
            replication_factor=replication,
            configs=dict(configs or {}),
        )
        return missing
    finally:
        await admin.close()


async def max_message_bytes(settings: Settings, topic: str) -> int | None:
    """The topic's ``max.message.bytes``, capped by what the producer sends in one
    request; None when it cannot be read (no DescribeConfigs right, broker away)."""
    value = await topic_config(settings, topic, "max.message.bytes")
    return None if value is None else min(int(value), MAX_REQUEST_BYTES)


async def topic_config(settings: Settings, topic: str, config: str) -> str | None:
    """One configuration value of a topic; None when it cannot be read (no
    DescribeConfigs right, broker away)."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15_000)
    try:
        await start_whole(admin.start, admin.close)
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {config: None})
        for response in await admin.describe_configs([resource]):
            for code, _, _, _, entries in response.resources:
                for name, value, *_ in entries if code == 0 else ():
                    if name == config and value is not None:
                        return str(value)
        return None
    except Exception as exc:
        log.warning("topic_config_unreadable", topic=topic, config=config, error=str(exc)[:300])
        return None
    finally:
        await admin.close()


async def partition_count(settings: Settings, topic: str) -> int | None:
    """How many partitions ``topic`` has; None if the cluster does not know it."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15_000)
    try:
        await start_whole(admin.start, admin.close)
        for described in await admin.describe_topics([topic]):
            if described.get("error_code", 0) == 0 and described.get("partitions"):
                return len(described["partitions"])
        return None
    finally:
        await admin.close()


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """Idempotent, acks=all: a message is acknowledged only once it is on every in-sync
    replica, and a retried send is not written twice."""
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=262_144,
        request_timeout_ms=settings.kafka.kafka_request_timeout_ms,
        client_id=f"{settings.kafka.group_id}-outcomes",
    )


class Producer:
    """The producer of one command (the worker's outcomes and dead letters, or the input
    events of ingest, the api and reconcile), replaced when it gets stuck (sends time out
    again and again: an idempotent producer whose sequence state went bad never recovers
    by itself). Its errors name ``component`` and ``action``: "Kafka refused ingest while
    publishing input events"."""

    def __init__(
        self, settings: Settings, *, component: str, action: str, stuck_after: int = 3
    ) -> None:
        self._settings = settings
        self._component = component
        self._action = action
        self._producer = new_producer(settings)
        self._stuck_after = stuck_after
        self._failures = 0
        self._lock = asyncio.Lock()
        self._delivery_timeout = delivery_timeout(settings.kafka.kafka_request_timeout_ms)
        #: replaced producers being retired (``_retire``), by the task retiring each
        self._retired: dict[asyncio.Task[None], AIOKafkaProducer] = {}
        self._stopping = False
        self._packer = Packer()

    async def start(self) -> None:
        await start_whole(self._producer.start, self._producer.stop)

    async def stop(self) -> None:
        """Stop as a replaced producer is stopped (``_close``), within STOP_SECONDS
        (aborted after, at most three times STOP_SECONDS in all): aiokafka's own ``stop()``
        delivers everything first for as long as that takes, and a wedged producer held
        the command's shutdown until it was killed. What is aborted was acknowledged to
        nobody: the worker's uncommitted batches are redelivered, ingest's and the api's
        senders were answered with a timeout and retry. Each command stops its producer
        after its own waits: the worker after its drain (OCITAG_SHUTDOWN_GRACE_SECONDS,
        20 s) and its consumer's stop (7 s at most: worker/consumerstop.py), ingest after its
        server's (the same) and its sends' 5 s, the api after its requests' 10 s, its
        publishes' 5 s and its two consumers' stops (4 s each at most); 6 s more stays
        within each Deployment's terminationGracePeriodSeconds (45, 45, 30 s) and
        compose's 30 s (the api's whole stop: 10 + 5 + 4 + 4 + 6 = 29 s). A producer
        stopping is not replaced (a send it fails is retried by nobody).

        Producers still being retired (replaced less than RETIRE_SECONDS ago, 10 s, and
        up to 20 s more of abort) are aborted beside it, within the same bound: waited
        for, one replaced just before a shutdown added up to 30 s to it."""
        self._stopping = True
        await asyncio.gather(
            self._close(
                self._producer,
                ProducerClosed("stopping: not delivered in time"),
                within=STOP_SECONDS,
            ),
            self._abort_retiring(),
        )

    async def _abort_retiring(self) -> None:
        """Cancel the retiring of replaced producers (at most STOP_SECONDS to end) and
        abort those it had not closed yet (at most twice STOP_SECONDS): a stop cut short
        cannot be resumed (a second aiokafka ``stop()`` does nothing). A retiring
        cancelled inside its abort has its abort run again, which does what is left."""
        retiring = dict(self._retired)
        if not retiring:
            return
        for task in retiring:
            task.cancel()
        await asyncio.wait(retiring, timeout=STOP_SECONDS)
        left = [old for task, old in retiring.items() if task.cancelled() or not task.done()]
        error = "stopping: replaced, not delivered in time"
        await asyncio.gather(
            *(
                self._close(old, ProducerClosed(error), within=STOP_SECONDS, flush=False)
                for old in left
            )
        )

    async def send_all(self, messages: Sequence[Message]) -> None:
        """Send (topic, key, value, headers), in order per partition, and wait for every
        acknowledgement. Messages are packed into one record batch per partition, which
        costs about half of what one ``send()`` per message does."""
        await self._send(messages, alone=False)

    async def send_alone(self, messages: Sequence[Message]) -> None:
        """As ``send_all``, each message in a record batch of its own: what the broker
        holds against a topic's max.message.bytes is then that message alone."""
        await self._send(messages, alone=True)

    async def _send(self, messages: Sequence[Message], *, alone: bool) -> None:
        producer = self._producer

        async def enqueue(messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
            futures: list[asyncio.Future[Any]] = []
            for topic in dict.fromkeys(m.topic for m in messages):
                same = [m for m in messages if m.topic == topic]
                futures.extend(await self._packer.send_topic(producer, topic, same, alone))
            return futures

        await self._traced(producer, messages, enqueue)

    async def send_each(self, messages: Sequence[Message]) -> None:
        """``send_all`` for small sends from many concurrent callers (ingest's
        deliveries): each message goes through the producer's accumulator, so the
        records of concurrent calls share batches, where ``send_all`` would make one
        batch per call and (idempotent) one produce request per partition at a time."""
        producer = self._producer

        async def enqueue(messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
            return [
                await producer.send(m.topic, m.value, key=m.key, headers=m.headers)
                for m in messages
            ]

        await self._traced(producer, messages, enqueue)

    async def _traced(
        self,
        producer: AIOKafkaProducer,
        messages: Sequence[Message],
        enqueue: Callable[[Sequence[Message]], Awaitable[list[asyncio.Future[Any]]]],
    ) -> None:
        """The one place every record of the product leaves from: while tracing is on,
        inside a ``send`` span whose context (or the record's own) each record carries
        as its ``traceparent`` header (worker/tracing_sdk.py)."""
        tracer = tracing.current()
        if tracer is None:
            await self._acknowledged(producer, messages, enqueue)
            return
        with tracer.sending(messages) as traced:
            await self._acknowledged(producer, traced, enqueue)

    async def _acknowledged(
        self,
        producer: AIOKafkaProducer,
        messages: Sequence[Message],
        enqueue: Callable[[Sequence[Message]], Awaitable[list[asyncio.Future[Any]]]],
    ) -> None:
        """Enqueue, wait for every acknowledgement, and say what a failure means."""
        try:
            futures = await enqueue(messages)
            results = await acknowledged(futures, self._delivery_timeout)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
        except Exception as exc:
            if isinstance(exc, DeliveryTimeoutError):
                log.warning("delivery_timed_out", error=str(exc), messages=len(messages))
            if isinstance(exc, _STUCK):
                await self._maybe_recreate(producer, exc)
                timeout = isinstance(exc, KafkaTimeoutError)
                cause = Cause.KAFKA_TIMEOUT if timeout else Cause.KAFKA_PRODUCER
                raise TransientError(cause, describe(exc)) from exc
            raise classify_kafka_error(exc, self._action, component=self._component) from exc
        if producer is self._producer:  # a replaced one's late success says nothing of it
            self._failures = 0

    async def _maybe_recreate(self, failed: AIOKafkaProducer, exc: BaseException) -> None:
        """Replace the producer after repeated timeouts, or at once when its idempotence
        state is broken (sequence or epoch errors, closed) or a send of it was not
        acknowledged in time (worker/delivery.py). The new one is started before it
        takes over; if it cannot start (the broker is away) the old one stays and the
        caller retries later. Only the current producer's failures count: a replaced
        one's late failures (sends of it still waited for when a concurrent batch
        replaced it) would push its successor towards replacement."""
        if failed is not self._producer or self._stopping:
            return  # a concurrent batch replaced it already, or the command is stopping
        self._failures += 1
        undelivered = isinstance(exc, DeliveryTimeoutError)
        broken = undelivered or not isinstance(exc, KafkaTimeoutError)
        if not broken and self._failures < self._stuck_after:
            return
        async with self._lock:
            if self._producer is not failed:
                return  # a concurrent batch replaced it already
            fresh = new_producer(self._settings)
            try:
                await start_whole(fresh.start, fresh.stop)
            except Exception as start_error:
                log.warning("producer_restart_failed", error=str(start_error))
                with contextlib.suppress(Exception):
                    await fresh.stop()
                return
            self._producer, self._failures = fresh, 0
            log.warning("producer_recreated", error=str(exc)[:300])
            metrics.PRODUCER_RECREATED.inc()
        retiring = asyncio.create_task(self._retire(failed, exc, flush=not undelivered))
        self._retired[retiring] = failed
        retiring.add_done_callback(self._retired_done)

    def _retired_done(self, retiring: asyncio.Task[None]) -> None:
        self._retired.pop(retiring, None)

    async def _retire(self, old: AIOKafkaProducer, exc: BaseException, *, flush: bool) -> None:
        """Stop a replaced producer within RETIRE_SECONDS (``_close``): a producer whose
        send was not acknowledged in time is aborted at once, what it holds being sent
        again by its successor."""
        await self._close(
            old, ProducerClosed(f"replaced: {exc}"), within=RETIRE_SECONDS, flush=flush
        )

    @staticmethod
    async def _close(
        old: AIOKafkaProducer, error: BaseException, *, within: float, flush: bool = True
    ) -> None:
        """Every stop of a producer: what it holds delivered first (``flush``) for at
        most ``within`` seconds, else aborted (worker/delivery.py: what it holds fails
        with ``error``; at most twice ``within`` more), with one line saying how much
        was given up."""
        stopping: str | None = None
        if flush:
            try:
                await asyncio.wait_for(old.stop(), timeout=within)
                return
            except Exception as stop_error:
                stopping = describe(stop_error)
        given_up = await abort(old, error, within)
        log.warning(
            "producer_aborted",
            reason=str(error)[:300],
            stop_error=stopping,
            batches=given_up.batches,
            records=given_up.records,
        )

    async def ready(self) -> bool:
        """Usable: started, knows at least one broker, and its last try to reach the
        cluster (a metadata refresh: after any broken connection, and every
        metadata_max_age_ms) did not fail. The broker list alone is kept through an
        outage: it said "connected" while no broker answered."""
        try:
            cluster = self._producer.client.cluster
            return bool(cluster.brokers()) and not metadata_refresh_failed(cluster)
        except Exception:
            return False

    async def reachable(self, within: float, *, unknown: bool) -> bool:
        """``ready()``, or else whether a metadata refresh asked for now succeeds: a
        producer that gave up on the cluster refreshes again only when something asks
        (or metadata_max_age_ms later), and a caller turned away at once must not be
        turned away after the broker came back. ``unknown``: the answer when the refresh
        has not finished within ``within`` seconds (a slow handshake is not an outage)."""
        if await self.ready():
            return True
        try:
            refreshed = self._producer.client.force_metadata_update()
            await asyncio.wait_for(asyncio.shield(refreshed), timeout=within)
        except TimeoutError:
            return unknown
        except Exception:
            return False
        return await self.ready()
