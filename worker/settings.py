"""The one settings object: read once at start, frozen, typed, grouped by concern.

Every setting comes from an environment variable (the names of the contract,
docs/contract.md "Interfaces") and has a command-line flag of the same name on the
commands that use it (``OCITAG_INPUT_TOPIC`` ↔ ``--input-topic``; ``COMMAND_SETTINGS``).
Secrets may also come from a file named by ``<NAME>_FILE`` (how container platforms
mount them). An invalid value fails start-up with one line naming the variable, the
flag and the rule.

``Settings`` holds one frozen sub-model per concern (``settings.kafka``,
``settings.database``, ``settings.ingest``, …); a field keeps its flat name inside its
group (``settings.topics.input_topic``), so that its environment variable and flag are
derived from that name alone and ``load_settings`` takes flat names as before.

These are plain frozen pydantic models rather than pydantic-settings' ``BaseSettings``:
the variable names are not one prefix plus the field name, secrets have ``_FILE``
variants, a renamed variable keeps its old name with a warning, and the environment must
be an argument (tests pass their own), none of which that class's sources do without a
custom source and a module-level slot. Building ``Settings`` always reads an
environment, so a default-only object cannot be made by mistake.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from worker.errors import SettingsError
from worker.history import DEFAULT_IMMUTABLE_TAGS
from worker.models import rule_message
from worker.oci_config import RegistryEndpoints, parse_endpoints

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
EventLoop = Literal["uvloop", "asyncio"]

MASK = "****"

#: OCITAG_TOMBSTONE_RETENTION_SECONDS's default (also a store's built without settings)
TOMBSTONE_RETENTION_SECONDS = 2_592_000


def env_name(field: str) -> str:
    """The environment variable of a field: the contract's names for the two services,
    ``OCITAG_`` for the rest."""
    if field in {"kafka_bootstrap_servers", "database_url"} or field.startswith("otel_"):
        return field.upper()  # the OpenTelemetry SDK's own names for tracing
    return "OCITAG_" + field.upper()


def flag_name(field: str) -> str:
    """The command-line flag of a field: ``--input-topic`` for ``OCITAG_INPUT_TOPIC``."""
    return env_flag(env_name(field))


def env_flag(name: str) -> str:
    """The command-line flag of an environment variable."""
    return "--" + name.lower().removeprefix("ocitag_").replace("_", "-")


#: OTEL_TRACES_SAMPLER's values (the SDK's names); the ratio ones read the argument
TracesSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


#: renamed settings, old environment variable → the field: the old name still works
#: (its ``_FILE`` and flag too), with a warning naming both at start-up
RENAMED = {"OCITAG_INGEST_REGISTRY_ENDPOINTS": "registry_endpoints"}


class SettingsGroup(BaseModel):
    """One concern's settings (a sub-model of ``Settings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _readable_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"no such file: {value}")
    return value


#: a path that must name a readable file when set
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


class ProcessSettings(SettingsGroup):
    """What every command reads before running: logs and the runtime."""

    log_level: LogLevel = Field("info", description="debug, info, warning or error")
    log_format: LogFormat = Field(
        "auto", description="auto (console on a terminal, JSON lines otherwise), json or console"
    )
    event_loop: EventLoop = Field(
        "uvloop",
        description="uvloop (libuv: less CPU per socket read and callback) or asyncio "
        "(the standard library's loop)",
    )
    gc_tuning: bool = Field(
        True,
        description="Freeze start-up objects and collect the young generation every 200,000 "
        "(the worker) or 50,000 (the api) allocations instead of 700 (far fewer collector "
        "pauses)",
    )


class KafkaSettings(SettingsGroup):
    """A Kafka client's connection and identity (worker/kafka.py)."""

    kafka_bootstrap_servers: str = Field(
        "localhost:9092", min_length=1, description="Kafka brokers, host:port[,host:port…]"
    )
    group_id: str = Field("ocitag-worker", min_length=1, description="Kafka consumer group")
    kafka_request_timeout_ms: int = Field(
        30_000,
        ge=1_000,
        description="Timeout of one Kafka request; a producer that times out 3 times in a "
        "row is replaced, and at once when a send is not acknowledged within 3 timeouts",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret)")
    kafka_ssl_cafile: ReadableFile | None = Field(
        None, description="CA certificate(s) to verify the brokers (PEM)"
    )
    kafka_ssl_certfile: ReadableFile | None = Field(
        None, description="Client certificate for mutual TLS (PEM)"
    )
    kafka_ssl_keyfile: ReadableFile | None = Field(
        None, description="Client private key for mutual TLS (PEM)"
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of the client key (secret)"
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Verify the broker's host name against its certificate"
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{server}' is not host:port (a comma-separated list)")
        return value

    @model_validator(mode="after")
    def _sasl_credentials(self) -> KafkaSettings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "OCITAG_KAFKA_SECURITY_PROTOCOL is SASL: set OCITAG_KAFKA_SASL_USERNAME and "
                "OCITAG_KAFKA_SASL_PASSWORD (or OCITAG_KAFKA_SASL_PASSWORD_FILE)"
            )
        return self


class TopicSettings(SettingsGroup):
    """The topics, and whether and how missing ones are created at start."""

    input_topic: str = Field(
        "ocitag.events", pattern=r"^[A-Za-z0-9._-]{1,249}$", description="Topic of tag-moved events"
    )
    outcome_topic: str = Field(
        "ocitag.outcomes",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Topic the outcomes are published to",
    )
    dlq_topic: str = Field(
        "ocitag.events.dlq",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Dead-letter topic for undecodable records (400)",
    )
    state_topic: str = Field(
        "ocitag.state",
        pattern=r"^[A-Za-z0-9._-]{0,249}$",
        description="Compacted topic of every tag's current record (docs/subscribers.md); "
        "empty turns it off",
    )
    state_min_compaction_lag_ms: int = Field(
        3_600_000,
        ge=0,
        description="min.compaction.lag.ms of a state topic the worker creates: every change "
        "stays readable at least this long before compaction may drop it",
    )
    state_delete_retention_ms: int = Field(
        604_800_000,
        ge=0,
        description="delete.retention.ms of a state topic the worker creates: how long a "
        "deletion's tombstone stays readable after compaction",
    )
    create_topics: bool = Field(
        True, description="Create missing topics at start (else fail naming the missing one)"
    )
    topic_partitions: int = Field(
        6, ge=1, le=10_000, description="Partitions of topics the worker creates"
    )
    topic_replication_factor: int = Field(
        -1,
        ge=-1,
        le=32,
        description="Replication factor of created topics; -1 = 3, or the number of brokers "
        "if fewer",
    )


class ConsumerSettings(SettingsGroup):
    """The worker's consumer: throughput, flow control and group membership."""

    max_batch_records: int = Field(
        2_000,
        ge=1,
        le=10_000,
        description="Most records fetched per poll (and so per run: a fetch's small "
        "partition batches together, a large one alone)",
    )
    max_in_flight_records: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="Cap on fetched records not yet published; fetching pauses above it",
    )
    apply_transactions: int = Field(
        0,
        ge=0,
        le=100,
        description="Most transactions of small runs (under 100 events, while no "
        "larger one is in flight) in "
        "flight at once: those that arrive meanwhile wait (20 ms at most) and are applied "
        "together in the next one (group commit: fewer, larger transactions at low rates, "
        "docs/scaling.md: CPU saved, the tail not); 0, the default: every batch its own "
        "transaction, all at once",
    )
    fetch_max_bytes: int = Field(16_777_216, ge=65_536, description="Consumer fetch.max.bytes")
    max_partition_fetch_bytes: int = Field(
        1_048_576, ge=65_536, description="Consumer max.partition.fetch.bytes"
    )
    fetch_min_bytes: int = Field(
        1,
        ge=1,
        le=16_777_216,
        description="Consumer fetch.min.bytes: the broker holds a fetch until it has this "
        "many bytes or OCITAG_FETCH_MAX_WAIT_MS passed; with a short wait, fewer and larger "
        "batches at low rates (latency traded for CPU, docs/scaling.md); 1 answers at once",
    )
    fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        le=10_000,
        description="Longest a fetch waits at the broker for data (aiokafka's default 500 "
        "delays partitions resumed meanwhile)",
    )
    poll_timeout_ms: int = Field(
        200, ge=1, le=10_000, description="Longest wait of one poll when there is nothing to fetch"
    )
    commit_interval_ms: int = Field(
        100,
        ge=0,
        le=60_000,
        description="Least time between the starts of two offset commits: done batches "
        "meanwhile share the next one (fewer commit requests at low rates; a stop or "
        "revocation does not wait for it); 0 commits as soon as a batch is done",
    )
    session_timeout_ms: int = Field(10_000, ge=1_000, description="Consumer group session timeout")
    heartbeat_interval_ms: int = Field(
        3_000, ge=100, description="Consumer group heartbeat interval"
    )
    max_poll_interval_ms: int = Field(
        300_000, ge=1_000, description="Consumer max.poll.interval.ms (the loop polls continuously)"
    )

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> ConsumerSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("OCITAG_HEARTBEAT_INTERVAL_MS must be below OCITAG_SESSION_TIMEOUT_MS")
        return self


class ContractSettings(SettingsGroup):
    """What the published contract carries: outcome source, problem types, event size."""

    worker_source: str = Field(
        "urn:ocitag-worker",
        min_length=1,
        description="CloudEvents `source` of outcomes (keep it stable: replays must be identical)",
    )
    problem_base_uri: str = Field(
        "https://ocitag-worker.dev/problems/",
        min_length=1,
        description="Base of problem `type` URIs (the slug is appended)",
    )
    immutable_tags: str = Field(
        DEFAULT_IMMUTABLE_TAGS,
        description="Release tags that should never move: comma-separated globs over the "
        "tag alone; a move of one elsewhere is applied and flagged `repointed`; empty "
        "disables",
    )
    max_event_bytes: int = Field(
        65_536,
        ge=1_024,
        le=1_048_576,
        description="Largest record value accepted; larger ones are rejected (400)",
    )

    @field_validator("problem_base_uri", "worker_source")
    @classmethod
    def _absolute_uri(cls, value: str) -> str:
        if ":" not in value or any(c.isspace() for c in value):
            raise ValueError("must be an absolute URI")
        return value


class LifecycleSettings(SettingsGroup):
    """Start-up, faults and shutdown."""

    retry_backoff_initial_seconds: float = Field(
        0.2, gt=0, le=60, description="First backoff after a transient fault"
    )
    retry_backoff_max_seconds: float = Field(
        30.0, gt=0, le=600, description="Cap of the exponential backoff (with jitter)"
    )
    shutdown_grace_seconds: float = Field(
        20.0,
        gt=0,
        le=3_600,
        description="Time SIGTERM gives in-flight batches to finish and commit",
    )
    startup_timeout_seconds: float = Field(
        60.0,
        ge=0,
        le=3_600,
        description="How long start-up waits for Kafka and PostgreSQL before failing",
    )


class ProbeSettings(SettingsGroup):
    """/metrics, /healthz and /readyz (worker/http.py)."""

    http_host: str = Field(
        "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        description="Address of the HTTP server (/metrics, /healthz, /readyz)",
    )
    http_port: int = Field(
        9400, ge=0, le=65535, description="Port of the HTTP server; 0 turns it off"
    )
    liveness_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="/healthz fails when a part the command watches (the worker's poll "
        "loop, the HTTP loop, the api's outcome listener) has not run for this long",
    )


class DatabaseSettings(SettingsGroup):
    """PostgreSQL: where, who, and the connection pool."""

    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@localhost:5432/ocitags"),
        description="PostgreSQL URL (libpq form; sslmode/sslrootcert go in its query string)",
    )
    db_password: SecretStr | None = Field(
        None, description="PostgreSQL password, replacing the one in DATABASE_URL (secret)"
    )
    db_pool_min_size: int = Field(2, ge=1, le=100, description="Connections kept open")
    db_pool_max_size: int = Field(
        10, ge=1, le=100, description="Most connections (one per run in flight)"
    )
    db_command_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of one SQL statement"
    )
    db_idle_in_transaction_timeout_seconds: float = Field(
        15.0,
        ge=1,
        description="PostgreSQL ends a session idle in a transaction this long "
        "(a frozen worker's locks are freed)",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in {"postgresql", "postgres"}:
            raise ValueError("must be a postgresql:// URL")
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("must name a host")
        return value

    @model_validator(mode="after")
    def _pool_sizes(self) -> DatabaseSettings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("OCITAG_DB_POOL_MIN_SIZE must not exceed OCITAG_DB_POOL_MAX_SIZE")
        return self

    def dsn(self) -> str:
        """The database URL with OCITAG_DB_PASSWORD applied, for asyncpg."""
        url = self.database_url.get_secret_value()
        if self.db_password is None:
            return url
        parts = urlsplit(url)
        user = parts.username or "postgres"
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(self.db_password.get_secret_value(), safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))


class RetentionSettings(SettingsGroup):
    """How long the idempotency records and the tombstones are kept."""

    processed_retention_seconds: int = Field(
        604_800, ge=60, description="How long processed-event records (idempotency) are kept"
    )
    processed_partition_seconds: int = Field(
        86_400,
        ge=60,
        description="Period of one partition of the processed-event records: expiry drops "
        "a whole partition, so a record is kept between the retention and the retention "
        "plus this",
    )
    prune_interval_seconds: float = Field(
        300.0,
        gt=0,
        description="How often the processed-event partitions are rotated and expired ones "
        "dropped, and expired tombstones deleted",
    )
    tombstone_retention_seconds: int = Field(
        TOMBSTONE_RETENTION_SECONDS,
        ge=60,
        description="How long a deleted tag's tombstone is kept (from when it was last "
        "recorded); an older move arriving later can bring a pruned tag back. Every worker "
        "on one database must use the same value (a shorter one elsewhere pages "
        "OcitagStoreRegressed falsely)",
    )
    history_retention_seconds: int = Field(
        0,
        ge=0,
        description="How long history entries are kept (whole partitions, each "
        "OCITAG_PROCESSED_PARTITION_SECONDS long, are dropped); 0 keeps them forever",
    )


class RegistrySettings(SettingsGroup):
    """The registry client (worker/oci.py: ingest's digest look-ups, reconcile)."""

    registry_endpoints: SecretStr | None = Field(
        None,
        description="Registry API base URL per host, comma-separated host=url; credentials "
        "as the URL's user-info, percent-encoded (secret). Unlisted hosts: https://<host>, "
        "docker.io: https://registry-1.docker.io",
    )
    registry_docker_config: ReadableFile | None = Field(
        None,
        description="A Docker config.json whose 'auths' give registry credentials (hosts "
        "without credentials in OCITAG_REGISTRY_ENDPOINTS)",
    )
    registry_ca_file: ReadableFile | None = Field(
        None, description="CA certificate(s) to verify registries with (PEM); default: system"
    )
    registry_tls_verify: bool = Field(
        True, description="Verify registries' TLS certificates (false only for testing)"
    )
    registry_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Timeout of one registry request"
    )
    registry_concurrency: int = Field(
        8, ge=1, le=256, description="Most registry requests in flight at once"
    )
    registry_page_size: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Page size (n=) of tags/list and _catalog; default: the registry's",
    )
    registry_rate_limit_retries: int = Field(
        4, ge=0, le=20, description="Retries of a request the registry answered 429 (Retry-After)"
    )

    @field_validator("registry_endpoints")
    @classmethod
    def _endpoints(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_endpoints(value.get_secret_value())  # EndpointsError names the entry
        return value

    @cached_property
    def endpoints(self) -> RegistryEndpoints:
        """OCITAG_REGISTRY_ENDPOINTS parsed (checked at load, parsed once)."""
        value = self.registry_endpoints
        return parse_endpoints(value.get_secret_value()) if value else RegistryEndpoints()


class IngestSettings(SettingsGroup):
    """``ocitag-worker ingest``: registry webhooks → tag events. A kind is served when
    its ``ingest_<kind>_secret`` is set: these fields are the one list of kinds
    (``INGEST_KINDS``)."""

    ingest_host: str = Field(
        "0.0.0.0",  # noqa: S104 - registries post from outside the pod
        description="Address the webhook receiver listens on",
    )
    ingest_port: int = Field(
        8080, ge=1, le=65535, description="Port of POST /webhooks/<kind>[/<secret>]"
    )
    ingest_distribution_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/distribution: its secret(s), comma-separated (secret)",
    )
    ingest_harbor_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/harbor: its secret(s), comma-separated (secret)",
    )
    ingest_dockerhub_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/dockerhub: its secret(s), comma-separated (secret)",
    )
    ingest_github_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/github: its secret(s), comma-separated (secret)",
    )
    ingest_ecr_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/ecr: its secret(s), comma-separated (secret)",
    )
    ingest_gar_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/gar: its secret(s), comma-separated (secret)",
    )
    ingest_acr_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/acr: its secret(s), comma-separated (secret)",
    )
    ingest_quay_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/quay: its secret(s), comma-separated (secret)",
    )
    ingest_artifactory_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/artifactory: its secret(s), comma-separated (secret)",
    )
    ingest_zot_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/zot: its secret(s), comma-separated (secret)",
    )
    ingest_cloudevents_secret: SecretStr | None = Field(
        None,
        description="Enables /webhooks/cloudevents: its secret(s), comma-separated (secret)",
    )
    ingest_gar_oidc_audience: str | None = Field(
        None,
        min_length=1,
        description="Also accept gar deliveries with a Pub/Sub OIDC token for this audience "
        "(POST /webhooks/gar, no path secret)",
    )
    ingest_gar_oidc_email: str | None = Field(
        None,
        min_length=1,
        description="The service account the Pub/Sub OIDC token must be for (verified email)",
    )
    ingest_gar_oidc_jwks_url: str = Field(
        "https://www.googleapis.com/oauth2/v3/certs",
        pattern=r"^https?://",
        description="Where Google's token signing keys (JWKS) are fetched",
    )
    ingest_max_body_bytes: int = Field(
        1_048_576, ge=1_024, le=67_108_864, description="Largest delivery accepted (else 413)"
    )
    ingest_read_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Longest a delivery's body may take to arrive (else 408)"
    )
    ingest_deadline_seconds: float = Field(
        0.8,
        gt=0,
        le=60,
        description="Longest from body read to answer (digest look-ups and Kafka acks); keep "
        "it under the senders' timeouts (distribution's default is 1 s). Past it: 503",
    )
    ingest_retry_after_seconds: int = Field(
        5, ge=1, le=3_600, description="Retry-After of a 503 while Kafka is unavailable"
    )
    ingest_receivers: SecretStr | None = Field(
        None,
        description="JSON list of named receivers {name, kind, secret | secret_file, hosts}, "
        "each served at /webhooks/<name> and speaking only for its hosts "
        "(docs/authorization.md; secret)",
    )


class ApiSettings(SettingsGroup):
    """``ocitag-worker api``: the seed's HTTP operation over the event path."""

    api_host: str = Field(
        "0.0.0.0",  # noqa: S104 - the API is called from outside the pod
        description="Address the API listens on",
    )
    api_port: int = Field(
        8081, ge=0, le=65535, description="Port of the API (0: any free port, for tests)"
    )
    api_tokens: SecretStr | None = Field(
        None,
        description="Bearer tokens the API accepts, comma-separated `caller:token` (or a bare "
        "token); several per caller for rotation (secret); unset: every call is 401",
    )
    api_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a write waits for its outcome before answering 202",
    )
    api_retry_after_seconds: int = Field(
        2, ge=1, le=600, description="Retry-After of the API's 503 answers"
    )
    api_max_body_bytes: int = Field(
        16_384, ge=1_024, le=1_048_576, description="Largest request body the API reads (413)"
    )
    api_max_watches: int = Field(
        2_000,
        ge=0,
        le=1_000_000,
        description="Concurrent watches (`GET /ocitags/?watch=true`) one api process serves; "
        "past it 429 (0: the watch is off)",
    )
    api_max_watches_per_caller: int = Field(
        100, ge=1, le=1_000_000, description="Concurrent watches of one caller per api process"
    )
    api_watch_queue_events: int = Field(
        10_000,
        ge=10,
        le=10_000_000,
        description="Changes queued for one watcher at most; a watcher that falls further "
        "behind is disconnected (reason too_slow)",
    )
    api_watch_heartbeat_seconds: float = Field(
        15.0,
        gt=0,
        le=15,
        description="Longest a watch goes without a comment line (keeps idle connections open)",
    )
    api_watch_snapshot_page: int = Field(
        1_000,
        ge=1,
        le=100_000,
        description="Records per PostgreSQL read of a watch's snapshot",
    )
    api_watch_stall_seconds: float = Field(
        30.0,
        gt=0,
        le=3_600,
        description="Longest one write to a watcher may wait for the client to take it; "
        "past it the watcher is disconnected (reason too_slow), in the snapshot as live",
    )
    api_watch_settle_seconds: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="How long a watch keeps, once live, the versions its snapshot or replay "
        "sent (to skip a late record of a change the client already holds); then they "
        "are dropped",
    )
    api_grants: str | None = Field(
        None,
        description="JSON object from caller to grants [{actions, tags}] (docs/authorization.md; "
        "also _FILE); unset: every caller may do everything (warned at start)",
    )
    api_rate_limit: str = Field(
        "200/1",
        pattern=r"^(0|[1-9][0-9]*/[0-9]+(\.[0-9]+)?)$",
        description="Per-caller token bucket <requests>/<seconds> (burst = requests); over it "
        "429 with Retry-After; 0 turns it off",
    )


class TracingSettings(SettingsGroup):
    """OpenTelemetry tracing (worker/tracing.py), under the SDK's own variable names.
    These decide whether tracing is on and what is sampled, so they are checked here
    (a bad value stops start-up naming the variable); where the spans go and what they
    say about the process (OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES) is read by the SDK itself when tracing starts
    (docs/tracing.md)."""

    otel_traces_exporter: Literal["none", "otlp"] = Field(
        "none",
        description="otlp turns tracing on (spans sent to OTEL_EXPORTER_OTLP_ENDPOINT over "
        "OTLP/HTTP); none (the default) leaves the SDK unloaded",
    )
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = Field(
        "http/protobuf",
        description="OTLP transport: http/protobuf (the only one installed; a collector's "
        "port 4318)",
    )
    otel_traces_sampler: TracesSampler = Field(
        "parentbased_always_on",
        description="Which traces are kept: the SDK's sampler names; parentbased_* follow "
        "the caller's traceparent decision",
    )
    otel_traces_sampler_arg: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="The ratio of the traceidratio samplers (0.1: one trace in ten)",
    )

    @property
    def enabled(self) -> bool:
        return self.otel_traces_exporter != "none"


#: the registry kinds ingest serves (docs/contract.md "Ingest"), each enabled by its
#: secret: read off ``IngestSettings``' fields, the one list
INGEST_KINDS = tuple(
    name.removeprefix("ingest_").removesuffix("_secret")
    for name in IngestSettings.model_fields
    if name.endswith("_secret")
)
# The secrets, the one list: each may come from a file (``<NAME>_FILE``), and none is
# ever logged or echoed in an error (masked() and load_settings use this list).
SECRET_FIELDS = frozenset(
    {
        "database_url",
        "db_password",
        "kafka_sasl_password",
        "kafka_ssl_key_password",
        "registry_endpoints",
        "api_tokens",
        "ingest_receivers",
    }
    | {f"ingest_{kind}_secret" for kind in INGEST_KINDS}
)
#: what may come from a file (``<NAME>_FILE``): the secrets, and documents that are
#: not secret but long (the grants)
FILE_FIELDS = SECRET_FIELDS | {"api_grants"}

#: the SDK's own variables the product passes through unread (the SDK reads them when
#: tracing starts; docs/tracing.md): where spans go and what names them.
#: OTEL_EXPORTER_OTLP_HEADERS is not among them for deployments' config (it may hold a
#: token: mount it as a secret).
SDK_VARIABLES = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/HTTP base URL of the collector (the SDK adds /v1/traces)",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "Full OTLP/HTTP URL for traces (instead of the base)",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "Export timeout in milliseconds",
    "OTEL_SERVICE_NAME": "service.name of the spans (default: ocitag-<command>)",
    "OTEL_RESOURCE_ATTRIBUTES": "Resource attributes, key=value comma-separated",
}


@dataclass(frozen=True)
class Renamed:
    """A setting given under its old name (environment variable or flag)."""

    old: str
    new: str

    def warning(self) -> str:
        return f"{self.old} is deprecated and will be removed: use {self.new}"


def _lookup(name: str, secret: bool, environ: Mapping[str, str]) -> str | None:
    """The value of ``name``, or for a secret of ``name_FILE`` (read)."""
    if name in environ:
        return environ[name]
    file_var = name + "_FILE"
    if secret and file_var in environ:
        path = Path(environ[file_var])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"invalid setting {file_var}: cannot read {path}: {exc.strerror}"
            ) from exc
    return None


def _from_environment(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], list[Renamed]]:
    """The fields set in ``environ`` (``NAME``, or for secrets ``NAME_FILE``; a renamed
    one under its old name when the new one is not set), and the old names used."""
    old_of = {field: old for old, field in RENAMED.items()}
    values: dict[str, Any] = {}
    renamed: list[Renamed] = []
    for field in FIELDS:
        name = env_name(field)
        secret = field in FILE_FIELDS
        found = _lookup(name, secret, environ)
        old = old_of.get(field)
        if old is not None and (old in environ or old + "_FILE" in environ):
            renamed.append(Renamed(old, name))
            if found is None:
                found = _lookup(old, secret, environ)
        if found is not None:
            values[field] = found
    return values, renamed


class Settings(BaseModel):
    """Everything the worker can be told, one sub-model per concern. Defaults suit a
    local single-node setup.

    ``Settings()`` reads the process environment; ``Settings(environ={...})`` reads the
    given one instead; keyword arguments (the command-line flags, by flat field name)
    win over either. ``load_settings`` is the same with start-up's one-line error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: every field by its flat name (``FIELDS``, set below), for code that walks them all
    FIELDS: ClassVar[Mapping[str, FieldInfo]]

    process: ProcessSettings
    kafka: KafkaSettings
    topics: TopicSettings
    consumer: ConsumerSettings
    contract: ContractSettings
    lifecycle: LifecycleSettings
    probes: ProbeSettings
    database: DatabaseSettings
    retention: RetentionSettings
    registry: RegistrySettings
    ingest: IngestSettings
    api: ApiSettings
    tracing: TracingSettings

    _renamed: tuple[Renamed, ...] = PrivateAttr(default=())

    def __init__(self, /, environ: Mapping[str, str] | None = None, **flags: Any) -> None:
        values, renamed = _from_environment(os.environ if environ is None else environ)
        values.update({name: value for name, value in flags.items() if value is not None})
        super().__init__(**_nest(values))
        self._renamed = tuple(renamed)

    @property
    def renamed(self) -> tuple[Renamed, ...]:
        """The settings given under an old name (start-up warns about each)."""
        return self._renamed

    def value(self, name: str) -> Any:
        """The field of flat name ``name`` (``settings.value("input_topic")``), for code
        that walks fields by name."""
        return getattr(getattr(self, GROUP_OF[name]), name)

    def updated(self, update: Mapping[str, Any]) -> Settings:
        """A copy with the fields of flat names ``update`` replaced (not validated,
        as pydantic's ``model_copy``)."""
        parts: dict[str, dict[str, Any]] = {}
        for name, value in update.items():
            parts.setdefault(GROUP_OF[name], {})[name] = value
        copy = self.model_copy(
            update={group: getattr(self, group).model_copy(update=p) for group, p in parts.items()}
        )
        copy._renamed = self._renamed
        return copy

    def masked(
        self, names: Iterable[str] | None = None, *, changed: bool = False
    ) -> dict[str, dict[str, object]]:
        """The effective settings by group (``names``: those fields only, e.g. a
        command's ``COMMAND_SETTINGS``; ``changed``: only those that differ from their
        defaults, for a start-up line a person reads) for a log line, secrets masked."""
        wanted = set(FIELDS if names is None else names)
        out: dict[str, dict[str, object]] = {}
        for group, model in GROUPS.items():
            for name, info in model.model_fields.items():
                if name not in wanted:
                    continue  # unread: tests record which settings a command reads
                value = self.value(name)
                if not (changed and _is_default(info, value)):
                    out.setdefault(group, {})[name] = _shown(name, value)
        return out


def _group_model(info: FieldInfo) -> type[SettingsGroup]:
    model = info.annotation
    if not (isinstance(model, type) and issubclass(model, SettingsGroup)):
        raise TypeError(f"a field of Settings is not a group: {model}")
    return model


#: the groups, in ``Settings``' order (that of flags and start-up lines)
GROUPS: Mapping[str, type[SettingsGroup]] = {
    name: _group_model(info) for name, info in Settings.model_fields.items()
}
#: every field by its flat name (its environment variable's and flag's), groups' order
FIELDS: Mapping[str, FieldInfo] = {
    name: info for group in GROUPS.values() for name, info in group.model_fields.items()
}
Settings.FIELDS = FIELDS
#: the group each flat field name lives in
GROUP_OF: Mapping[str, str] = {
    name: group for group, model in GROUPS.items() for name in model.model_fields
}


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat field names → ``{group: {field: value}}``; an unknown name stays at the top,
    where ``extra="forbid"`` refuses it."""
    nested: dict[str, Any] = {group: {} for group in GROUPS}
    for name, value in values.items():
        if name in GROUP_OF:
            nested[GROUP_OF[name]][name] = value
        else:
            nested[name] = value
    return nested


def _is_default(info: FieldInfo, value: object) -> bool:
    default = info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr) and isinstance(value, SecretStr):
        return default.get_secret_value() == value.get_secret_value()
    return bool(value == default)


def _shown(name: str, value: object) -> object:
    if name in SECRET_FIELDS:
        return _mask(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _mask(value: object) -> str | None:
    """A secret as it may be shown: unset stays unset; a URL keeps all but its password
    (where the database is matters when reading a log); anything else is hidden whole."""
    if value is None:
        return None
    if not isinstance(value, SecretStr | str):
        return MASK  # a parsed secret (registry endpoints with credentials)
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    parts = urlsplit(text)
    if "://" not in text or not parts.scheme or not parts.netloc:
        return MASK  # not one URL (e.g. a list of host=url): hidden whole
    if parts.query:
        # libpq and asyncpg also take the password as a query parameter
        query = parse_qsl(parts.query, keep_blank_values=True)
        shown = [(k, MASK if k.lower() in _QUERY_SECRETS else v) for k, v in query]
        parts = parts._replace(query=urlencode(shown, safe="*/:"))
    if parts.password is None:
        return urlunsplit(parts)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))


#: query parameters of a connection URL that hold a secret (libpq's and asyncpg's names)
_QUERY_SECRETS = frozenset({"password", "sslpassword"})


@dataclass(frozen=True)
class _Located:
    field: str
    env: str
    flag: str


def _where(loc: tuple[int | str, ...]) -> _Located | None:
    """The field an error is about: ``(group, field)``; a group's own rule (its
    ``model_validator``) is about no one field."""
    name = loc[-1] if loc else None
    if isinstance(name, str) and name in FIELDS:
        return _Located(name, env_name(name), flag_name(name))
    return None


def load_settings(
    overrides: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings once, from ``environ`` (default: the process environment) and
    ``overrides`` (the flags by flat field name, which win), or raise SettingsError with
    one line naming the setting."""
    try:
        return Settings(environ, **dict(overrides or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _where(tuple(err["loc"]))
        message = rule_message(err)
        if where is None:
            raise SettingsError(f"invalid settings: {message}") from None
        shown = MASK if where.field in SECRET_FIELDS else err.get("input")
        raise SettingsError(
            f"invalid setting {where.env} ({where.flag}): {message} (got {shown!r})"
        ) from None


# ---- which command uses which settings: the one declaration
#
# Each command's fields, as a union of groups and a few single fields (a command may use
# part of a group, e.g. the api's retention): the command's flags (worker/cli.py) and its
# start-up line (info, by group) are these; the full set is logged at debug. Every
# command still reads the whole environment (one environment serves them all).


def _group(model: type[SettingsGroup]) -> frozenset[str]:
    return frozenset(model.model_fields)


PROCESS = _group(ProcessSettings) - {"gc_tuning"}
#: the producer's (worker/kafka.py ``Producer``: its client id is the group's)
PRODUCER = frozenset({"kafka_request_timeout_ms", "group_id"})
#: a Kafka client's connection (worker/kafka.py ``client_options``)
KAFKA = _group(KafkaSettings) - PRODUCER
#: topics created at start (worker/kafka.py ``ensure_topics``)
TOPIC_CREATION = _group(TopicSettings) - {
    "input_topic",
    "outcome_topic",
    "dlq_topic",
    "state_topic",
    "state_min_compaction_lag_ms",
    "state_delete_retention_ms",
}
DATABASE = _group(DatabaseSettings)
PROBES = _group(ProbeSettings)
#: the worker's consumer and its flow control
CONSUMER = _group(ConsumerSettings) | {"group_id"}
BACKOFF = frozenset({"retry_backoff_initial_seconds", "retry_backoff_max_seconds"})
RETENTION = _group(RetentionSettings)
REGISTRY_CLIENT = _group(RegistrySettings)
INGEST = _group(IngestSettings)
API = _group(ApiSettings)
#: every command that produces or serves: the four commands of the event path
TRACING = _group(TracingSettings)

COMMAND_SETTINGS: Mapping[str, frozenset[str]] = {
    "run": PROCESS
    | KAFKA
    | PRODUCER
    | _group(TopicSettings)
    | DATABASE
    | PROBES
    | CONSUMER
    | _group(ContractSettings)
    | _group(LifecycleSettings)
    | RETENTION
    | TRACING
    | {"gc_tuning"},
    "migrate": PROCESS | DATABASE | {"startup_timeout_seconds"},
    "history": PROCESS | DATABASE | {"startup_timeout_seconds"},
    "publish": PROCESS | KAFKA | {"input_topic"},
    "outcomes": PROCESS | KAFKA | {"outcome_topic"},
    # verify reads; backfill also produces
    "state": PROCESS | KAFKA | PRODUCER | DATABASE | {"state_topic", "startup_timeout_seconds"},
    "audit": PROCESS | KAFKA | DATABASE | {"outcome_topic"},
    "ingest": PROCESS
    | KAFKA
    | PRODUCER
    | TOPIC_CREATION
    | PROBES
    | BACKOFF
    | INGEST
    | REGISTRY_CLIENT
    | TRACING
    | {"input_topic", "problem_base_uri", "shutdown_grace_seconds"},
    "reconcile": PROCESS
    | KAFKA
    | PRODUCER
    | DATABASE
    | PROBES
    | REGISTRY_CLIENT
    | TRACING
    | {"input_topic"},
    "api": PROCESS
    | {"gc_tuning"}
    | KAFKA
    | PRODUCER
    | TOPIC_CREATION
    | DATABASE
    | PROBES
    | API
    | TRACING
    | {
        "input_topic",
        "outcome_topic",
        "state_topic",
        "problem_base_uri",
        "processed_retention_seconds",
        "prune_interval_seconds",
    },
}
