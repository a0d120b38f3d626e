"""The API's pure rules: tokens, request parsing, replies from outcomes, waiters."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.contract import pydantic_phrases
from worker.api import replies, requests
from worker.api.auth import parse_tokens
from worker.api.cursors import CursorSeal
from worker.api.problems import ApiProblem
from worker.api.waiters import Waiters
from worker.errors import SettingsError
from worker.problems import ProblemKind

A = "a" * 64
TAG = "docker.io/team/app:1"

# ---- tokens


def test_tokens_name_callers_and_rotate() -> None:
    tokens = parse_tokens("ci:old-token-0123456789, ci:new-token-0123456789,bare-token-0123456789")
    assert tokens.caller("Bearer old-token-0123456789") == "ci"
    assert tokens.caller("bearer new-token-0123456789") == "ci"
    bare = tokens.caller("Bearer bare-token-0123456789")
    assert bare is not None and bare.startswith("token-") and "bare" not in bare
    for header in (None, "", "Bearer", "Basic old-token-0123456789", "Bearer old-token"):
        assert tokens.caller(header) is None


@pytest.mark.parametrize(
    ("raw", "rule"),
    [("ci:short", "at least 16"), ("bad name:0123456789abcdefgh", "caller name"), ("x y" * 9, "")],
)
def test_bad_token_settings_name_the_setting_never_the_token(raw: str, rule: str) -> None:
    with pytest.raises(SettingsError, match="OCITAG_API_TOKENS") as caught:
        parse_tokens(raw)
    assert rule in str(caught.value)
    assert "0123456789abcdefgh" not in str(caught.value)


def test_no_tokens_means_nobody() -> None:
    assert parse_tokens(None).caller("Bearer anything-at-all-123456") is None


# ---- requests


def located(call: Any) -> set[str]:
    with pytest.raises(ApiProblem) as caught:
        call()
    return {item.location for item in caught.value.errors}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"artifact": "x"}', {"body.artifact"}),
        (b"{}", {"body.artifact"}),
        (b'{"artifact": null}', {"body.artifact"}),
        (b'{"artifact": "' + A.encode() + b'", "actor": ""}', {"body.actor"}),
        (b'{"artifact": "' + A.encode() + b'", "version": 1}', {"body.version"}),
        (
            b'{"artifact": "' + A.encode() + b'", "previous_artifact": 1}',
            {"body.previous_artifact"},
        ),
        (b"[]", {"body"}),
        (b'"x"', {"body"}),
    ],
)
def test_put_body_rules(body: bytes, where: set[str]) -> None:
    assert located(lambda: requests.put_body(body, "application/json", TAG)) == where


def test_put_body_normalises_digests() -> None:
    put = requests.put_body(b'{"artifact": "sha256:' + A.encode() + b'", "actor": "me"}', None, TAG)
    assert (put.artifact, put.actor, put.previous_artifact) == (A, "me", None)


def test_put_body_not_json_is_400_and_wrong_type_415() -> None:
    with pytest.raises(ApiProblem) as caught:
        requests.put_body(b"{", "application/json", TAG)
    assert caught.value.status == 400
    with pytest.raises(ApiProblem) as caught:
        requests.put_body(b"{}", "text/plain", TAG)
    assert caught.value.status == 415


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("nginx:1", "docker.io/library/nginx:1"),
        ("index.docker.io/istio/pilot:1.3.0", "docker.io/istio/pilot:1.3.0"),
        ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
    ],
)
def test_ocitag_ids_are_normalised(raw: str, canonical: str) -> None:
    assert requests.ocitag_id(raw) == canonical


@pytest.mark.parametrize("raw", ["", "nginx", "Nginx:1", "nginx@sha256:" + A, "a/b:-x", "a b:1"])
def test_bad_ocitag_ids_are_path_tag(raw: str) -> None:
    assert located(lambda: requests.ocitag_id(raw)) == {"path.tag"}


@pytest.mark.parametrize(
    ("if_match", "if_none_match", "expected"),
    [(None, None, None), ('"3"', None, 3), (' "0" ', None, 0), (None, "*", 0)],
)
def test_conditional_headers(
    if_match: str | None, if_none_match: str | None, expected: int | None
) -> None:
    assert requests.expected_version(if_match, if_none_match) == expected


@pytest.mark.parametrize(
    ("if_match", "if_none_match", "where"),
    [
        ("3", None, "header.if-match"),
        ('W/"3"', None, "header.if-match"),
        ("*", None, "header.if-match"),
        ('"1", "2"', None, "header.if-match"),
        ('"01"', None, "header.if-match"),
        ('"99999999999999999999"', None, "header.if-match"),
        (None, '"3"', "header.if-none-match"),
        ('"1"', "*", "header.if-none-match"),
    ],
)
def test_bad_conditional_headers(
    if_match: str | None, if_none_match: str | None, where: str
) -> None:
    assert located(lambda: requests.expected_version(if_match, if_none_match)) == {where}


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_if_match_takes_any_version_its_etag_gives(version: int) -> None:
    assert requests.expected_version(replies.etag(version), None) == version
    assert requests.etag_matches(replies.etag(version), version)
    assert requests.etag_matches(f'"x", W/{replies.etag(version)}', version)
    assert not requests.etag_matches(replies.etag(version + 1), version)


def test_idempotency_keys() -> None:
    assert requests.idempotency_key("deploy-42") == "deploy-42"
    for bad in ("", "a b", "x" * 257, "é"):
        assert located(lambda bad=bad: requests.idempotency_key(bad)) == {"header.idempotency-key"}


SEAL = CursorSeal.from_tokens("ci:token-1")


@given(st.text(min_size=1, max_size=128))
def test_cursors_round_trip_and_belong_to_their_repository(tag: str) -> None:
    cursor = requests.encode_cursor("docker.io/a/b", tag, SEAL)
    assert requests.decode_cursor(cursor, "docker.io/a/b", SEAL) == tag
    assert requests.decode_cursor(cursor, "docker.io/a/c", SEAL) is None
    # sealed: another deployment's key cannot open it
    other = CursorSeal.from_tokens("ci:token-2")
    assert requests.decode_cursor(cursor, "docker.io/a/b", other) is None


def test_a_forged_plain_cursor_is_refused() -> None:
    """The cursor of before (base64 JSON) names the tag; one written by a caller to page
    through a repository it may not read is not a cursor this API gave."""
    forged = base64.urlsafe_b64encode(b'["docker.io/a/b","rc4"]').rstrip(b"=").decode()
    assert requests.decode_cursor(forged, "docker.io/a/b", SEAL) is None
    # and the one it gives does not name the tag examined last
    given = requests.encode_cursor("docker.io/a/b", "secret-release-candidate", SEAL)
    assert b"secret-release" not in base64.urlsafe_b64decode(given + "=" * (-len(given) % 4))


@given(st.text(max_size=50))
def test_any_cursor_text_is_decoded_or_refused_never_raises(text: str) -> None:
    requests.decode_cursor(text, "docker.io/a/b", SEAL)


def test_list_query_rules() -> None:
    query = requests.list_query({"repository": "nginx"}, SEAL)
    assert (query.repository, query.limit, query.after) == ("docker.io/library/nginx", 100, None)
    assert located(lambda: requests.list_query({}, SEAL)) == {"query.repository"}
    assert located(
        lambda: requests.list_query({"repository": "x", "limit": "0", "cursor": "!"}, SEAL)
    ) == {"query.limit", "query.cursor"}
    for watch in ("1", "yes", "True", ""):  # not read as false: a page is not a watch
        assert located(
            lambda watch=watch: requests.list_query({"repository": "x", "watch": watch}, SEAL)
        ) == {"query.watch"}
    assert requests.list_query({"repository": "x", "watch": "false"}, SEAL).limit == 100


# ---- replies


def outcome(status: int, **more: Any) -> dict[str, Any]:
    return {"status": status, "causationsource": "s", "causationid": "i", **more}


def test_a_200_outcome_is_the_record_with_its_etag() -> None:
    data = {"artifact": A, "repository": "docker.io/team/app", "tag": "1"}
    reply = replies.from_outcome(outcome(200, resourceversion=7, data=data))
    assert (reply.status, reply.content_type, reply.headers) == (
        200,
        "application/json",
        {"ETag": '"7"'},
    )
    assert json.loads(reply.body) == data


@pytest.mark.parametrize(
    ("location", "header", "expected"),
    [
        ("body.data.expected_version", "if-match", "header.if-match"),
        ("body.data.expected_version", "if-none-match", "header.if-none-match"),
        ("body.data.previous_artifact", "if-match", "body.previous_artifact"),
        ("body.data.tag", "if-match", "path.tag"),
        ("body.time", "if-match", "body.time"),
        ("body.id", "if-match", "header.idempotency-key"),
    ],
)
def test_problem_outcomes_name_where_the_caller_put_the_value(
    location: str, header: str, expected: str
) -> None:
    data = {"type": "t", "status": 412, "errors": [{"location": location, "message": "m"}]}
    reply = replies.from_outcome(outcome(412, data=data), version_header=header)
    assert (reply.status, reply.content_type) == (412, "application/problem+json")
    assert json.loads(reply.body)["errors"][0]["location"] == expected


def test_a_401_says_nothing_more() -> None:
    reply = replies.problem(
        ApiProblem(ProblemKind.UNAUTHORIZED, "secret detail"),
        base_uri="urn:p:",
        instance="urn:x",
    )
    assert json.loads(reply.body) == {
        "type": "urn:p:unauthorized",
        "title": "Unauthorized",
        "status": 401,
    }
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_503_says_when_to_retry() -> None:
    reply = replies.problem(
        ApiProblem(ProblemKind.UNAVAILABLE), base_uri="urn:p:", instance="urn:x", retry_after=3
    )
    assert (reply.status, reply.headers["Retry-After"]) == (503, "3")


def test_locations_are_the_path_templates_form() -> None:
    assert replies.tag_location("localhost:5000/a/b:1") == "/ocitags/localhost:5000%2Fa%2Fb:1/"


# ---- waiters


async def test_waiters_get_their_outcome_and_only_theirs() -> None:
    waiters = Waiters()
    with waiters.expect(("s", "i")) as mine, waiters.expect(("s", "i")) as twin:
        with waiters.expect(("s", "other")) as other:
            assert not waiters.deliver(orjson.dumps(outcome(200, causationid="nobody")))
            assert waiters.deliver(orjson.dumps(outcome(200)))
            assert (await mine)["status"] == (await twin)["status"] == 200
            assert not other.done()
        assert len(waiters) == 2
    assert len(waiters) == 0


@pytest.mark.parametrize("value", [None, b"", b"{", b"[]", b'{"causationid": 1}', b"\xff"])
async def test_waiters_ignore_what_is_not_an_outcome(value: bytes | None) -> None:
    waiters = Waiters()
    with waiters.expect(("s", "i")) as future:
        assert not waiters.deliver(value)
        await asyncio.sleep(0)
        assert not future.done()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(["artifact", "actor", "previous_artifact", "other"]) | st.text(),
        _JSON | st.just(A),
        max_size=4,
    )
)
def test_any_json_body_is_a_put_or_a_422_naming_body_members(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    if (
        set(body) <= set(requests.PUT_MEMBERS)
        and body.get("artifact") == A
        and all(body.get(name, A) == A for name in ("previous_artifact",))
        # null is "no actor" (the data rules' reading of an optional member)
        and (body.get("actor") is None or (body["actor"] and isinstance(body["actor"], str)))
    ):
        assert requests.put_body(raw, "application/json", TAG).artifact == A
        return
    with pytest.raises(ApiProblem) as caught:
        requests.put_body(raw, "application/json", TAG)
    assert caught.value.status == 422
    assert caught.value.errors
    assert all(e.location.startswith("body.") for e in caught.value.errors)
    assert not pydantic_phrases(str(caught.value.detail))


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        # the example: the project's words for the digest, and now for the actor too
        (
            {"artifact": "sha256:abcdefabcdef", "actor": 5},
            "the request breaks 2 rules: body.artifact sha256 digest must be 64 lower-case hex "
            "characters (got 12); body.actor must be a string",
        ),
        ({"artifact": 12}, "the request breaks a rule: body.artifact must be a string"),
        ({}, "the request breaks a rule: body.artifact is required"),
        ({"artifact": A, "actor": ""}, "the request breaks a rule: body.actor must not be empty"),
        (
            {"artifact": A, "actor": "x" * 257},
            "the request breaks a rule: body.actor must be at most 256 characters",
        ),
    ],
)
def test_a_put_body_422_is_in_the_projects_words(body: dict[str, Any], detail: str) -> None:
    with pytest.raises(ApiProblem) as caught:
        requests.put_body(json.dumps(body).encode(), "application/json", TAG)
    assert caught.value.detail == detail
