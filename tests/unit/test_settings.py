from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr

from tests.helpers.contract import pydantic_phrases
from tests.helpers.docs import page
from worker.errors import SettingsError
from worker.settings import SECRET_FIELDS, Settings, env_name, flag_name, load_settings


def test_defaults_are_the_spec_names_and_values() -> None:
    s = load_settings(environ={})
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.database_url.get_secret_value() == "postgresql://postgres@localhost:5432/ocitags"
    assert (s.input_topic, s.outcome_topic, s.dlq_topic) == (
        "ocitag.events",
        "ocitag.outcomes",
        "ocitag.events.dlq",
    )
    assert (s.group_id, s.http_port) == ("ocitag-worker", 9400)
    assert s.shutdown_grace_seconds < 30  # below Kubernetes' default grace


def test_environment_and_flags_flags_win() -> None:
    env = {
        "OCITAG_INPUT_TOPIC": "from-env",
        "KAFKA_BOOTSTRAP_SERVERS": "k:1",
        "OCITAG_HTTP_PORT": "9500",
    }
    s = load_settings({"input_topic": "from-flag"}, environ=env)
    assert (s.input_topic, s.kafka_bootstrap_servers, s.http_port) == ("from-flag", "k:1", 9500)


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
        s.kafka_sasl_password is not None and s.kafka_sasl_password.get_secret_value() == "s3cr3t"
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
    masked = load_settings(environ={"DATABASE_URL": url}).masked()["database_url"]
    assert masked == shown


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="OCITAG_DB_PASSWORD_FILE: cannot read"):
        load_settings(environ={"OCITAG_DB_PASSWORD_FILE": str(tmp_path / "missing")})


def test_db_password_is_applied_to_the_url() -> None:
    s = load_settings(
        environ={"DATABASE_URL": "postgresql://app@db:5432/x", "OCITAG_DB_PASSWORD": "p@ss"}
    )
    assert s.dsn() == "postgresql://app:p%40ss@db:5432/x"


def test_invalid_secret_value_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"DATABASE_URL": "mysql://user:hunter2@h/db"})
    assert "hunter2" not in str(caught.value)


def test_the_settings_page_documents_every_setting_with_its_default() -> None:
    table = page("settings.md")
    for name, field in Settings.model_fields.items():
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
    assert Settings().input_topic == "from-process"
    assert Settings(environ={}).input_topic == "ocitag.events"
    assert Settings(environ={}, input_topic="from-flag").input_topic == "from-flag"
    assert load_settings().input_topic == "from-process"


def test_the_secret_list_is_every_secret_typed_setting() -> None:
    typed = {
        name
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr or SecretStr in get_args(field.annotation)
    }
    # the registry endpoints are parsed at start (RegistryEndpoints), credentials inside
    assert typed | {"ingest_registry_endpoints"} == SECRET_FIELDS


@pytest.mark.parametrize("field", sorted(SECRET_FIELDS))
def test_every_secret_comes_from_a_file_and_is_masked(field: str, tmp_path: Path) -> None:
    value = {
        "database_url": "postgresql://app:hunter2@db:5432/x",
        "ingest_registry_endpoints": "r.example=https://app:hunter2@r.example",
    }.get(field, "hunter2")
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    s = load_settings(environ={env_name(field) + "_FILE": str(secret)})
    loaded = getattr(s, field)
    if field != "ingest_registry_endpoints":  # parsed at start: credentials inside
        assert isinstance(loaded, SecretStr) and loaded.get_secret_value() == value
    assert "hunter2" not in repr(s.masked())
    assert "hunter2" not in repr(s)
