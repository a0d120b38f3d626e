from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr, ValidationError

from tests.helpers.contract import pydantic_phrases
from tests.helpers.docs import page
from tests.helpers.registry import free_port
from worker import cli
from worker.errors import SettingsError
from worker.ingest.kinds import KINDS
from worker.settings import (
    COMMAND_SETTINGS,
    FIELDS,
    GROUP_OF,
    GROUPS,
    INGEST_KINDS,
    RENAMED,
    SECRET_FIELDS,
    Renamed,
    Settings,
    env_name,
    flag_name,
    load_settings,
)


def test_defaults_are_the_spec_names_and_values() -> None:
    s = load_settings(environ={})
    assert s.kafka.kafka_bootstrap_servers == "localhost:9092"
    assert (
        s.database.database_url.get_secret_value() == "postgresql://postgres@localhost:5432/ocitags"
    )
    assert (s.topics.input_topic, s.topics.outcome_topic, s.topics.dlq_topic) == (
        "ocitag.events",
        "ocitag.outcomes",
        "ocitag.events.dlq",
    )
    assert (s.kafka.group_id, s.probes.http_port) == ("ocitag-worker", 9400)
    assert s.lifecycle.shutdown_grace_seconds < 30  # below Kubernetes' default grace


def test_environment_and_flags_flags_win() -> None:
    env = {
        "OCITAG_INPUT_TOPIC": "from-env",
        "KAFKA_BOOTSTRAP_SERVERS": "k:1",
        "OCITAG_HTTP_PORT": "9500",
    }
    s = load_settings({"input_topic": "from-flag"}, environ=env)
    assert (s.topics.input_topic, s.kafka.kafka_bootstrap_servers, s.probes.http_port) == (
        "from-flag",
        "k:1",
        9500,
    )


def test_names() -> None:
    assert env_name("input_topic") == "OCITAG_INPUT_TOPIC"
    assert env_name("database_url") == "DATABASE_URL"
    assert flag_name("input_topic") == "--input-topic"
    assert flag_name("kafka_bootstrap_servers") == "--kafka-bootstrap-servers"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"OCITAG_HTTP_PORT": "70000"},
            "OCITAG_HTTP_PORT (--http-port): must be 65535 or less (got '70000')",
        ),
        ({"OCITAG_HTTP_PORT": "nine"}, "OCITAG_HTTP_PORT (--http-port)"),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "nohost"},
            "KAFKA_BOOTSTRAP_SERVERS (--kafka-bootstrap-servers): 'nohost' is not host:port",
        ),
        (
            {"DATABASE_URL": "mysql://x/y"},
            "DATABASE_URL (--database-url): must be a postgresql:// URL",
        ),
        ({"OCITAG_INPUT_TOPIC": "bad topic"}, "OCITAG_INPUT_TOPIC"),
        ({"OCITAG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "set OCITAG_KAFKA_SASL_USERNAME"),
        (
            {"OCITAG_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "OCITAG_KAFKA_SSL_CAFILE (--kafka-ssl-cafile): no such file",
        ),
        ({"OCITAG_LOG_LEVEL": "loud"}, "OCITAG_LOG_LEVEL"),
        (
            {"OCITAG_UNKNOWN": "1", "OCITAG_DB_POOL_MIN_SIZE": "5", "OCITAG_DB_POOL_MAX_SIZE": "2"},
            "OCITAG_DB_POOL_MIN_SIZE must not exceed",
        ),
    ],
)
def test_invalid_setting_fails_with_one_line_naming_it(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=env)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message


# One row per kind of pydantic error a setting can raise: the project's words after the
# setting's names, none of pydantic's ("Input should be a valid integer, unable to …").
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OCITAG_HTTP_PORT": "nine"}, "OCITAG_HTTP_PORT (--http-port): must be an integer"),
        ({"OCITAG_HTTP_PORT": "-5"}, "OCITAG_HTTP_PORT (--http-port): must be 0 or more"),
        (
            {"OCITAG_RETRY_BACKOFF_INITIAL_SECONDS": "soon"},
            "OCITAG_RETRY_BACKOFF_INITIAL_SECONDS (--retry-backoff-initial-seconds): must be a "
            "number",
        ),
        (
            {"OCITAG_RETRY_BACKOFF_INITIAL_SECONDS": "0"},
            "OCITAG_RETRY_BACKOFF_INITIAL_SECONDS (--retry-backoff-initial-seconds): must be "
            "more than 0",
        ),
        (
            {"OCITAG_CREATE_TOPICS": "maybe"},
            "OCITAG_CREATE_TOPICS (--create-topics): must be true or false",
        ),
        (
            {"OCITAG_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "OCITAG_KAFKA_SECURITY_PROTOCOL (--kafka-security-protocol): must be 'PLAINTEXT', "
            "'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'",
        ),
        (
            {"OCITAG_INPUT_TOPIC": "bad topic"},
            "OCITAG_INPUT_TOPIC (--input-topic): must match ^[A-Za-z0-9._-]{1,249}$",
        ),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": ""},
            "KAFKA_BOOTSTRAP_SERVERS (--kafka-bootstrap-servers): must not be empty",
        ),
    ],
)
def test_a_bad_setting_is_in_the_projects_words(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=env)
    assert str(caught.value).startswith(f"invalid setting {message} (got "), caught.value
    assert not pydantic_phrases(str(caught.value))


def test_secret_from_file_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t\n")
    env = {
        "OCITAG_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "OCITAG_KAFKA_SASL_USERNAME": "ocitag",
        "OCITAG_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "DATABASE_URL": "postgresql://app:dbpass@db:5432/ocitags",
    }
    s = load_settings(environ=env)
    assert (
        s.kafka.kafka_sasl_password is not None
        and s.kafka.kafka_sasl_password.get_secret_value() == "s3cr3t"
    )
    shown = repr(s.masked())
    assert "s3cr3t" not in shown and "dbpass" not in shown
    assert "app:****@db:5432" in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app@db/x?password=dbpass&sslmode=require",
            "postgresql://app@db/x?password=****&sslmode=require",
        ),
        (
            "postgresql://app:dbpass@db/x?sslpassword=dbpass&sslrootcert=/etc/ca.pem",
            "postgresql://app:****@db/x?sslpassword=****&sslrootcert=/etc/ca.pem",
        ),
        ("postgresql://app@db/x?sslmode=verify-full", "postgresql://app@db/x?sslmode=verify-full"),
    ],
)
def test_a_password_in_the_url_query_is_masked_too(url: str, shown: str) -> None:
    """libpq and asyncpg take ``password`` (and ``sslpassword``) as query parameters."""
    masked = load_settings(environ={"DATABASE_URL": url}).masked()["database"]["database_url"]
    assert masked == shown


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="OCITAG_DB_PASSWORD_FILE: cannot read"):
        load_settings(environ={"OCITAG_DB_PASSWORD_FILE": str(tmp_path / "missing")})


def test_db_password_is_applied_to_the_url() -> None:
    s = load_settings(
        environ={"DATABASE_URL": "postgresql://app@db:5432/x", "OCITAG_DB_PASSWORD": "p@ss"}
    )
    assert s.database.dsn() == "postgresql://app:p%40ss@db:5432/x"


def test_invalid_secret_value_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"DATABASE_URL": "mysql://user:hunter2@h/db"})
    assert "hunter2" not in str(caught.value)


def test_the_settings_page_documents_every_setting_with_its_default() -> None:
    table = page("settings.md")
    for name, field in Settings.FIELDS.items():
        row = next(
            (line for line in table.splitlines() if line.startswith(f"| `{env_name(name)}` |")),
            None,
        )
        assert row is not None, f"{env_name(name)} is not in docs/settings.md's table"
        default = field.default
        if (
            isinstance(default, int | float | str)
            and not isinstance(default, bool)
            and name != "database_url"
        ):
            assert f"`{default}`" in row, (name, row)


def test_settings_read_the_process_environment_unless_given_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCITAG_INPUT_TOPIC", "from-process")
    assert Settings().topics.input_topic == "from-process"
    assert Settings(environ={}).topics.input_topic == "ocitag.events"
    assert Settings(environ={}, input_topic="from-flag").topics.input_topic == "from-flag"
    assert load_settings().topics.input_topic == "from-process"


def test_the_secret_list_is_every_secret_typed_setting() -> None:
    typed = {
        name
        for name, field in Settings.FIELDS.items()
        if field.annotation is SecretStr or SecretStr in get_args(field.annotation)
    }
    # the registry endpoints are parsed at start (RegistryEndpoints), credentials inside
    assert typed | {"registry_endpoints"} == SECRET_FIELDS


@pytest.mark.parametrize("field", sorted(SECRET_FIELDS))
def test_every_secret_comes_from_a_file_and_is_masked(field: str, tmp_path: Path) -> None:
    value = {
        "database_url": "postgresql://app:hunter2@db:5432/x",
        "registry_endpoints": "r.example=https://app:hunter2@r.example",
    }.get(field, "hunter2")
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    s = load_settings(environ={env_name(field) + "_FILE": str(secret)})
    loaded = s.value(field)
    if field != "registry_endpoints":  # parsed at start: credentials inside
        assert isinstance(loaded, SecretStr) and loaded.get_secret_value() == value
    assert "hunter2" not in repr(s.masked())
    assert "hunter2" not in repr(s)


# ---- groups, the renamed registry endpoints, the one list of ingest kinds

ENDPOINTS = "r.example=https://app:hunter2@r.example"


def test_every_field_is_in_one_group_and_reached_through_it() -> None:
    counts: dict[str, int] = {}
    for model in GROUPS.values():
        for name in model.model_fields:
            counts[name] = counts.get(name, 0) + 1
    assert [name for name, n in counts.items() if n > 1] == []
    assert set(Settings.model_fields) == set(GROUPS)
    s = load_settings(environ={})
    for name in FIELDS:
        assert s.value(name) is getattr(getattr(s, GROUP_OF[name]), name)


@pytest.mark.parametrize(
    ("env", "group", "field", "value"),
    [
        ({"OCITAG_INPUT_TOPIC": "t.in"}, "topics", "input_topic", "t.in"),
        ({"OCITAG_API_PORT": "8123"}, "api", "api_port", 8123),
        ({"OCITAG_REGISTRY_CONCURRENCY": "3"}, "registry", "registry_concurrency", 3),
        ({"OCITAG_SESSION_TIMEOUT_MS": "20000"}, "consumer", "session_timeout_ms", 20_000),
        ({"OCITAG_LOG_LEVEL": "debug"}, "process", "log_level", "debug"),
    ],
)
def test_a_flat_environment_name_sets_its_groups_field(
    env: dict[str, str], group: str, field: str, value: object
) -> None:
    assert getattr(getattr(load_settings(environ=env), group), field) == value
    assert getattr(getattr(load_settings({field: str(value)}, environ={}), group), field) == value


def test_settings_and_groups_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(ValidationError):
        s.topics.input_topic = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.topics = s.topics  # type: ignore[misc]


def test_an_unknown_flat_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="invalid settings"):
        load_settings({"no_such_setting": "1"}, environ={})


def test_updated_replaces_flat_fields_in_their_groups() -> None:
    s = load_settings(environ={})
    copy = s.updated({"http_port": 1234, "input_topic": "t"})
    assert (copy.probes.http_port, copy.topics.input_topic) == (1234, "t")
    assert (s.probes.http_port, s.topics.input_topic) == (9400, "ocitag.events")
    assert copy.kafka is s.kafka


def test_masked_is_by_group_and_only_the_names_asked() -> None:
    s = load_settings(environ={"OCITAG_API_TOKENS": "caller:hunter2"})
    shown = s.masked(COMMAND_SETTINGS["migrate"])
    assert set(shown) == {"process", "database", "lifecycle"}
    assert shown["lifecycle"] == {"startup_timeout_seconds": 60.0}
    everything = s.masked()
    assert list(everything) == list(GROUPS)
    assert everything["api"]["api_tokens"] == "****"


def test_registry_endpoints_have_a_name_without_ingest() -> None:
    assert env_name("registry_endpoints") == "OCITAG_REGISTRY_ENDPOINTS"
    assert flag_name("registry_endpoints") == "--registry-endpoints"
    s = load_settings(environ={"OCITAG_REGISTRY_ENDPOINTS": ENDPOINTS})
    assert s.registry.endpoints.for_host("r.example") is not None
    assert s.renamed == ()


@pytest.mark.parametrize("file", [False, True])
def test_the_old_registry_endpoints_name_still_works_with_a_warning(
    file: bool, tmp_path: Path
) -> None:
    old = "OCITAG_INGEST_REGISTRY_ENDPOINTS"
    environ = {old: ENDPOINTS}
    if file:
        (tmp_path / "endpoints").write_text(ENDPOINTS + "\n")
        environ = {old + "_FILE": str(tmp_path / "endpoints")}
    s = load_settings(environ=environ)
    assert s.registry.registry_endpoints is not None
    assert s.registry.registry_endpoints.get_secret_value() == ENDPOINTS
    assert s.renamed == (Renamed(old, "OCITAG_REGISTRY_ENDPOINTS"),)
    assert RENAMED[old] == "registry_endpoints"


def test_the_new_registry_endpoints_name_wins_over_the_old() -> None:
    s = load_settings(
        environ={
            "OCITAG_REGISTRY_ENDPOINTS": ENDPOINTS,
            "OCITAG_INGEST_REGISTRY_ENDPOINTS": "old.example=https://old.example",
        }
    )
    assert s.registry.registry_endpoints is not None
    assert s.registry.registry_endpoints.get_secret_value() == ENDPOINTS
    assert len(s.renamed) == 1  # still warned: the old one is ignored


def test_a_bad_value_under_the_old_name_is_named_by_the_new() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"OCITAG_INGEST_REGISTRY_ENDPOINTS": "a.io=ftp://u:hunter2@a.io"})
    assert "OCITAG_REGISTRY_ENDPOINTS (--registry-endpoints)" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv_settings", "environ", "old"),
    [
        ([], {"OCITAG_INGEST_REGISTRY_ENDPOINTS": ENDPOINTS}, "OCITAG_INGEST_REGISTRY_ENDPOINTS"),
        (["--ingest-registry-endpoints", ENDPOINTS], {}, "--ingest-registry-endpoints"),
    ],
)
def test_start_up_warns_naming_the_old_and_the_new_name(
    argv_settings: list[str],
    environ: dict[str, str],
    old: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Run for real: reconcile against a Kafka and PostgreSQL that are not there."""
    for name in ("OCITAG_REGISTRY_ENDPOINTS", "OCITAG_INGEST_REGISTRY_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    argv = [
        "reconcile",
        "--registry",
        "r.example",
        "--kafka-bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--database-url",
        f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        "--log-format",
        "json",
        *argv_settings,
    ]
    assert cli.main(argv) == cli.EXIT_FATAL
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    warned = [line for line in lines if line["event"] == "setting_renamed"]
    new = "OCITAG_REGISTRY_ENDPOINTS" if old.startswith("OCITAG") else "--registry-endpoints"
    assert [(w["old"], w["new"], w["level"]) for w in warned] == [(old, new, "warning")]
    assert "hunter2" not in repr(lines)


def test_ingest_kinds_are_one_list() -> None:
    """The settings' secrets name the kinds; ingest maps exactly those (no runtime check
    keeps two lists in step any more)."""
    assert list(INGEST_KINDS) == list(KINDS)
    assert {f"ingest_{kind}_secret" for kind in INGEST_KINDS} <= set(FIELDS)


def test_a_start_up_line_shows_what_differs_from_the_defaults() -> None:
    """The info line a person reads at start: the settings changed, secrets masked; the
    whole set is the debug line's."""
    settings = load_settings(
        {"input_topic": "team.events", "api_tokens": "ci:secret-token-0123456789"}, environ={}
    )
    changed = settings.masked(changed=True)
    named = {name for group in changed.values() for name in group}
    assert {"input_topic", "api_tokens"} <= named
    assert "outcome_topic" not in named and "max_batch_records" not in named
    assert "secret-token" not in str(changed)
    everything = {name for group in settings.masked().values() for name in group}
    assert everything == set(Settings.FIELDS)
