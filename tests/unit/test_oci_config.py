"""OCITAG_REGISTRY_ENDPOINTS and Docker config.json parsing (pure)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import SettingsError
from worker.oci_config import (
    Credentials,
    Endpoint,
    EndpointsError,
    RegistryEndpoints,
    config_key_host,
    credentials_for,
    parse_docker_config,
    parse_endpoints,
)
from worker.settings import load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        (" , ", ()),
        (
            "docker.io=https://mirror.example.com/",
            (Endpoint("docker.io", "https://mirror.example.com"),),
        ),
        (
            "index.docker.io=https://mirror.example.com",
            (Endpoint("docker.io", "https://mirror.example.com"),),
        ),
        (
            "127.0.0.1:5000=http://127.0.0.1:5000, ghcr.io=https://ghcr.io/base",
            (
                Endpoint("127.0.0.1:5000", "http://127.0.0.1:5000"),
                Endpoint("ghcr.io", "https://ghcr.io/base"),
            ),
        ),
        (
            "quay.io=https://robot%24ci:p%40ss%2Cw%3Ard@quay.io",
            (Endpoint("quay.io", "https://quay.io", Credentials("robot$ci", "p@ss,w:rd")),),
        ),
        (
            "Registry.Example=https://r.example:8443",
            (Endpoint("registry.example", "https://r.example:8443"),),
        ),
    ],
)
def test_parse_endpoints(text: str, expected: tuple[Endpoint, ...]) -> None:
    assert parse_endpoints(text).entries == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("docker.io", "entry 1 must be host=url"),
        ("a.io=https://a.io,=https://b.io", "entry 2 must be host=url"),
        ("bad host=https://x", "is not a host name"),
        ("a.io=ftp://a.io", "http:// or https://"),
        ("a.io=https://a.io?x=1", "query or fragment"),
        ("a.io=https://user@a.io", "user:password@"),
        ("a.io=https://a.io:99999", "not valid"),
        ("a.io=https://a.io,a.io=https://b.io", "listed twice"),
    ],
)
def test_parse_endpoints_errors_name_the_entry_never_the_secret(text: str, message: str) -> None:
    with pytest.raises(EndpointsError, match=message) as caught:
        parse_endpoints(text)
    assert "secret" not in str(caught.value)


def test_bad_password_never_reaches_the_settings_error() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"OCITAG_REGISTRY_ENDPOINTS": "a.io=ftp://u:hunter2@a.io"})
    assert "OCITAG_REGISTRY_ENDPOINTS" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_endpoints_file_and_masking(tmp_path: Path) -> None:
    path = tmp_path / "endpoints"
    path.write_text("a.io=https://u:hunter2@a.io\n")
    settings = load_settings(environ={"OCITAG_REGISTRY_ENDPOINTS_FILE": str(path)})
    endpoint = settings.registry.endpoints.for_host("a.io")
    assert endpoint.credentials == Credentials("u", "hunter2")
    assert "hunter2" not in repr(settings.registry.endpoints)
    assert "hunter2" not in repr(endpoint)
    assert "hunter2" not in str(settings.masked())


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("docker.io", "https://registry-1.docker.io"),
        ("registry-1.docker.io", "https://registry-1.docker.io"),
        ("ghcr.io", "https://ghcr.io"),
        ("localhost:5000", "https://localhost:5000"),
    ],
)
def test_default_endpoint(host: str, url: str) -> None:
    assert RegistryEndpoints().for_host(host).base_url == url


@given(
    user=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20),
    password=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
)
def test_percent_encoded_credentials_round_trip(user: str, password: str) -> None:
    from urllib.parse import quote

    text = f"r.example=https://{quote(user, safe='')}:{quote(password, safe='')}@r.example"
    endpoint = parse_endpoints(text).for_host("r.example")
    assert endpoint.credentials == Credentials(user, password)
    assert endpoint.base_url == "https://r.example"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_docker_config() -> None:
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpass")},
            "ghcr.io": {"username": "gh", "password": "ghp_x"},
            "https://quay.io/": {"auth": _b64("robot:colon:in:pass")},
            "helper.example": {},  # credential helper: skipped
            "broken.example": {"auth": "!!!"},
            "token.example": {"identitytoken": "xyz"},
        },
        "credHelpers": {"gcr.io": "gcloud"},
    }
    found = parse_docker_config(json.dumps(config))
    assert found == {
        "docker.io": Credentials("hubuser", "hubpass"),
        "ghcr.io": Credentials("gh", "ghp_x"),
        "quay.io": Credentials("robot", "colon:in:pass"),
    }


@pytest.mark.parametrize("text", ["not json", '{"auths": []}', "[]"])
def test_docker_config_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"JSON|auths"):
        parse_docker_config(text)


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://Ghcr.io", "ghcr.io"),
        ("localhost:5000", "localhost:5000"),
    ],
)
def test_config_key_host(key: str, host: str) -> None:
    assert config_key_host(key) == host


def test_credentials_from_url_win_over_config() -> None:
    endpoints = parse_endpoints("a.io=https://u:p@a.io,b.io=https://b.io")
    auths = {"a.io": Credentials("cfg", "x"), "b.io": Credentials("cfg", "y")}
    assert credentials_for("a.io", endpoints, auths).credentials == Credentials("u", "p")
    assert credentials_for("b.io", endpoints, auths).credentials == Credentials("cfg", "y")
    assert credentials_for("c.io", endpoints, auths).credentials is None
