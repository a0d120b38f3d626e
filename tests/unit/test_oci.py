"""The OCI client's pure parts (challenges, Link paging, Retry-After, scopes) and its
token flow, 429 handling and error translation against a fake registry
(``httpx.MockTransport``). The real registry is in tests/integration/test_oci.py."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.oci import (
    MANIFEST_ACCEPT,
    Challenge,
    RegistryAuthError,
    RegistryClient,
    RegistryRateLimitedError,
    RegistryResponseError,
    RegistryUnavailableError,
    RepositoryNotFoundError,
    next_page,
    parse_www_authenticate,
    request_scope,
    retry_after_seconds,
)
from worker.oci_config import parse_endpoints

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/nginx:pull"',
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/nginx:pull",
                },
            ),
        ),
        (
            'Bearer realm="https://ghcr.io/token", service="ghcr.io", '
            'scope="repository:org/app:pull,push"',
            Challenge(
                "bearer",
                {
                    "realm": "https://ghcr.io/token",
                    "service": "ghcr.io",
                    "scope": "repository:org/app:pull,push",
                },
            ),
        ),
        ('Basic realm="ocitag-test"', Challenge("basic", {"realm": "ocitag-test"})),
        ("basic", Challenge("basic", {})),
        (
            "BEARER Realm=https://a/token,Service=a",
            Challenge("bearer", {"realm": "https://a/token", "service": "a"}),
        ),
        ('Bearer realm="a\\"b"', Challenge("bearer", {"realm": 'a"b'})),
        ("", None),
        ("   ", None),
    ],
)
def test_parse_www_authenticate(header: str, expected: Challenge | None) -> None:
    assert parse_www_authenticate(header) == expected


@given(st.text(max_size=200))
def test_parse_www_authenticate_never_raises(header: str) -> None:
    parse_www_authenticate(header)


@given(
    realm=st.text(st.characters(exclude_characters='"\\', codec="ascii"), max_size=40),
    scope=st.text(st.characters(exclude_characters='"\\', codec="ascii"), max_size=40),
)
def test_parse_www_authenticate_round_trip(realm: str, scope: str) -> None:
    challenge = parse_www_authenticate(f'Bearer realm="{realm}",scope="{scope}"')
    assert challenge == Challenge("bearer", {"realm": realm, "scope": scope})


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v2/_catalog", "registry:catalog:*"),
        ("/v2/team/app/tags/list", "repository:team/app:pull"),
        ("/v2/library/nginx/manifests/1.2", "repository:library/nginx:pull"),
        ("/v2/a/manifests/b/manifests/c", "repository:a:pull"),
        ("/v2/", ""),
    ],
)
def test_request_scope(path: str, scope: str) -> None:
    assert request_scope(path) == scope


def _links(header: str | None) -> dict[str | None, dict[str, str]]:
    headers = {"link": header} if header is not None else {}
    return httpx.Response(200, headers=headers).links


@pytest.mark.parametrize(
    ("current", "header", "expected"),
    [
        (
            "http://r:5000/v2/a/tags/list?n=2",
            '</v2/a/tags/list?last=b&n=2>; rel="next"',
            "http://r:5000/v2/a/tags/list?last=b&n=2",
        ),
        (
            "https://r/v2/_catalog",
            '<https://r/v2/_catalog?last=x%2Fy&n=100>; rel="next"',
            "https://r/v2/_catalog?last=x%2Fy&n=100",
        ),
        ("https://r/v2/_catalog", None, None),
        ("https://r/v2/_catalog", '</v2/_catalog?last=x>; rel="prev"', None),
    ],
)
def test_next_page(current: str, header: str | None, expected: str | None) -> None:
    assert next_page(httpx.URL(current), _links(header)) == expected


@pytest.mark.parametrize(
    ("current", "header"),
    [
        ("https://r/v2/_catalog", '<https://evil.example/v2/_catalog?last=x>; rel="next"'),
        ("http://r/v2/_catalog", '<https://r/v2/_catalog?last=x>; rel="next"'),
        ("https://r/v2/_catalog?last=x", '</v2/_catalog?last=x>; rel="next"'),
    ],
)
def test_a_next_link_that_cannot_be_followed_is_an_error_not_the_end(
    current: str, header: str
) -> None:
    """Ending there would cut the listing short, and reconcile reads a missing tag as
    deleted."""
    with pytest.raises(ValueError, match="next page"):
        next_page(httpx.URL(current), _links(header))


NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1.5),
        ("7", 7.0),
        (" 0 ", 0.0),
        (format_datetime(datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC), usegmt=True), 30.0),
        (format_datetime(datetime(2026, 12, 1, 11, 0, 0, tzinfo=UTC), usegmt=True), 0.0),
        ("soon", 1.5),
        ("-3", 1.5),
    ],
)
def test_retry_after(value: str | None, expected: float) -> None:
    assert retry_after_seconds(value, NOW, 1.5) == expected


# --------------------------------------------------- against a fake registry -----

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, **options: object) -> tuple[RegistryClient, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = RegistryClient(
        parse_endpoints(
            "r.example=https://alice:s3cret@r.example,anon.example=https://anon.example"
        ),
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        **options,  # type: ignore[arg-type]
    )
    return client, slept


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_bearer_flow_fetches_one_token_per_scope_and_reuses_it() -> None:
    token_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            token_requests.append(request)
            scope = request.url.params["scope"]
            return httpx.Response(200, json={"token": f"T[{scope}]", "expires_in": 300})
        expected = f"Bearer T[{request_scope(request.url.path)}]"
        if request.headers.get("authorization") != expected:
            return httpx.Response(
                401,
                headers={
                    "www-authenticate": 'Bearer realm="https://auth.example/token",'
                    f'service="r.example",scope="{request_scope(request.url.path)}"'
                },
            )
        assert request.headers["accept"] == MANIFEST_ACCEPT
        return httpx.Response(200, headers={"docker-content-digest": DIGEST})

    client, _ = _client(handler)
    async with client:
        for _ in range(3):
            assert await client.resolve_digest("r.example/team/app", "v1") == DIGEST
        assert await client.resolve_digest("r.example/team/other", "v1") == DIGEST
    scopes = [r.url.params["scope"] for r in token_requests]
    assert scopes == ["repository:team/app:pull", "repository:team/other:pull"]
    assert all(r.headers["authorization"] == _basic("alice", "s3cret") for r in token_requests)
    assert token_requests[0].url.params["service"] == "r.example"
    assert token_requests[0].url.params["account"] == "alice"


async def test_anonymous_bearer_flow_and_token_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            if "authorization" in request.headers:
                return httpx.Response(500)
            if request.url.params["scope"].endswith("private:pull"):
                return httpx.Response(401)
            return httpx.Response(200, json={"access_token": "anon"})
        if request.headers.get("authorization") == "Bearer anon":
            return httpx.Response(200, headers={"docker-content-digest": DIGEST})
        return httpx.Response(
            401,
            headers={"www-authenticate": 'Bearer realm="https://auth.example/token",service="x"'},
        )

    client, _ = _client(handler)
    async with client:
        assert await client.resolve_digest("anon.example/library/nginx", "1") == DIGEST
        with pytest.raises(RegistryAuthError, match="token endpoint"):
            await client.resolve_digest("anon.example/private", "1")


async def test_basic_challenge_then_basic_up_front() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != _basic("alice", "s3cret"):
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="r"'})
        return httpx.Response(200, headers={"docker-content-digest": DIGEST})

    client, _ = _client(handler)
    async with client:
        assert await client.resolve_digest("r.example/a", "1") == DIGEST
        assert await client.resolve_digest("r.example/b", "1") == DIGEST
    assert seen == [None, _basic("alice", "s3cret"), _basic("alice", "s3cret")]


async def test_wrong_credentials_are_an_auth_error_without_the_password() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"www-authenticate": 'Basic realm="r"'})

    client, _ = _client(handler)
    async with client:
        with pytest.raises(RegistryAuthError) as caught:
            await client.list_tags("r.example/a")
        with pytest.raises(RegistryAuthError):
            await client.resolve_digest("anon.example/a", "1")
    assert "s3cret" not in str(caught.value)
    assert "r.example/v2/a/tags/list" in str(caught.value)


async def test_paging_by_link_and_page_size() -> None:
    pages = {
        None: (["a", "b"], '</v2/team/app/tags/list?last=b&n=2>; rel="next"'),
        "b": (["c", "d"], '</v2/team/app/tags/list?last=d&n=2>; rel="next"'),
        "d": (["e"], None),
    }
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        tags, link = pages[request.url.params.get("last")]
        headers = {"link": link} if link else {}
        return httpx.Response(200, json={"name": "team/app", "tags": tags}, headers=headers)

    client, _ = _client(handler, page_size=2)
    async with client:
        assert await client.list_tags("r.example/team/app") == ["a", "b", "c", "d", "e"]
    assert requested[0] == "https://r.example/v2/team/app/tags/list?n=2"
    assert len(requested) == 3


@pytest.mark.parametrize(
    "links",
    [
        # b -> d -> b: a registry whose cursor goes back
        {None: "b", "b": "d", "d": "b"},
        # a link to another host (where the token would go too)
        {None: "https://elsewhere.example/v2/team/app/tags/list?last=b"},
    ],
)
async def test_broken_paging_fails_the_listing_instead_of_ending_it(
    links: dict[str | None, str],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        last = request.url.params.get("last")
        target = links.get(last)
        if target is not None and "://" not in target:
            target = f"/v2/team/app/tags/list?last={target}"
        headers = {"link": f'<{target}>; rel="next"'} if target else {}
        return httpx.Response(200, json={"tags": [last or "first"]}, headers=headers)

    client, _ = _client(handler)
    async with client:
        with pytest.raises(RegistryResponseError, match="broken paging"):
            await client.list_tags("r.example/team/app")


async def test_catalog_names_repositories_with_the_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("last") == "b":
            return httpx.Response(200, json={"repositories": ["c/d"]})
        return httpx.Response(
            200,
            json={"repositories": ["a", "b"]},
            headers={"link": '</v2/_catalog?last=b&n=2>; rel="next"'},
        )

    client, _ = _client(handler)
    async with client:
        assert await client.catalog("r.example") == ["r.example/a", "r.example/b", "r.example/c/d"]


async def test_empty_tags_and_unknown_repository() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "gone" in request.url.path:
            return httpx.Response(
                404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "unknown"}]}
            )
        if "weird" in request.url.path:
            return httpx.Response(404, text="not here")
        return httpx.Response(200, json={"name": "x", "tags": None})

    client, _ = _client(handler)
    async with client:
        assert await client.list_tags("r.example/empty") == []
        with pytest.raises(RepositoryNotFoundError):
            await client.list_tags("r.example/gone")
        with pytest.raises(RegistryResponseError):
            await client.list_tags("r.example/weird")


async def test_missing_tag_is_none_and_missing_header_hashes_the_manifest() -> None:
    manifest = b'{"schemaVersion":2}'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/absent"):
            return httpx.Response(404)
        if request.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, content=manifest)

    client, _ = _client(handler)
    async with client:
        assert await client.resolve_digest("r.example/a", "absent") is None
        expected = "sha256:" + hashlib.sha256(manifest).hexdigest()
        assert await client.resolve_digest("r.example/a", "v1") == expected


async def test_429_waits_for_retry_after_then_gives_up() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if "always" in request.url.path or calls["n"] <= 2:
            return httpx.Response(429, headers={"retry-after": "3"})
        return httpx.Response(200, headers={"docker-content-digest": DIGEST})

    client, slept = _client(handler, rate_limit_retries=2)
    async with client:
        assert await client.resolve_digest("r.example/a", "1") == DIGEST
        assert slept == [3.0, 3.0]
        with pytest.raises(RegistryRateLimitedError):
            await client.resolve_digest("r.example/always", "1")


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (lambda r: httpx.Response(503), RegistryUnavailableError),
        (lambda r: httpx.Response(418), RegistryResponseError),
        (lambda r: httpx.Response(403), RegistryAuthError),
    ],
)
async def test_status_translation(handler: Handler, error: type[Exception]) -> None:
    client, _ = _client(handler)
    async with client:
        with pytest.raises(error):
            await client.resolve_digest("r.example/a", "1")


async def test_transport_errors_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for handler in (refuse, slow):
        client, _ = _client(handler)
        async with client:
            with pytest.raises(RegistryUnavailableError, match=r"r\.example/v2/a/manifests/1"):
                await client.resolve_digest("r.example/a", "1")


async def test_bad_json_is_a_response_error() -> None:
    client, _ = _client(lambda r: httpx.Response(200, json={"tags": [1, 2]}))
    async with client:
        with pytest.raises(RegistryResponseError, match="list of strings"):
            await client.list_tags("r.example/a")
    client, _ = _client(lambda r: httpx.Response(200, text="<html>"))
    async with client:
        with pytest.raises(RegistryResponseError, match="not the JSON"):
            await client.list_tags("r.example/a")
