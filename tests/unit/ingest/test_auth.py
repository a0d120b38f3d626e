"""Authenticity per the contract's table: header equality, GitHub and JFrog HMACs over
the raw body, the secret as the last path segment; several secrets valid at once."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.ingest.auth import authentic, split_secrets
from worker.ingest.kinds import AUTH, KINDS, Auth

SECRETS = (b"Bearer old", b"Bearer new")
BODY = b'{"events": []}'


def sig(secret: bytes, body: bytes = BODY) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("auth", "headers", "path", "body", "ok"),
    [
        (Auth.HEADER, {"authorization": "Bearer new"}, None, BODY, True),
        (Auth.HEADER, {"authorization": "Bearer old"}, None, BODY, True),
        (Auth.HEADER, {"authorization": "Bearer nope"}, None, BODY, False),
        (Auth.HEADER, {"authorization": "bearer new"}, None, BODY, False),
        (Auth.HEADER, {}, None, BODY, False),
        (Auth.HEADER, {"authorization": "Bearer new"}, "Bearer new", BODY, False),
        (Auth.PATH, {}, "Bearer old", BODY, True),
        (Auth.PATH, {}, "Bearer olx", BODY, False),
        (Auth.PATH, {"authorization": "Bearer old"}, None, BODY, False),
        (
            Auth.HUB_SIGNATURE,
            {"x-hub-signature-256": "sha256=" + sig(b"Bearer old")},
            None,
            BODY,
            True,
        ),
        (
            Auth.HUB_SIGNATURE,
            {"x-hub-signature-256": "sha256=" + sig(b"Bearer new").upper()},
            None,
            BODY,
            True,
        ),
        (
            Auth.HUB_SIGNATURE,
            {"x-hub-signature-256": "sha256=" + sig(b"Bearer new")},
            None,
            BODY + b" ",
            False,
        ),
        (Auth.HUB_SIGNATURE, {"x-hub-signature-256": sig(b"Bearer new")}, None, BODY, False),
        (
            Auth.HUB_SIGNATURE,
            {"x-hub-signature": "sha1=" + hmac.new(b"Bearer new", BODY, hashlib.sha1).hexdigest()},
            None,
            BODY,
            False,
        ),
        (Auth.JFROG_SIGNATURE, {"x-jfrog-event-auth": sig(b"Bearer new")}, None, BODY, True),
        (Auth.JFROG_SIGNATURE, {"x-jfrog-event-auth": sig(b"other")}, None, BODY, False),
        (Auth.JFROG_SIGNATURE, {}, None, BODY, False),
    ],
)
def test_table(
    auth: Auth, headers: dict[str, str], path: str | None, body: bytes, ok: bool
) -> None:
    assert authentic(auth, SECRETS, headers, body, path) is ok


def test_non_ascii_guesses_are_refused_not_raised() -> None:
    assert not authentic(Auth.HEADER, SECRETS, {"authorization": "Bearer n\u00e9w"}, BODY, None)
    assert not authentic(Auth.PATH, SECRETS, {}, BODY, "\udcff")


@given(
    secret=st.binary(min_size=1, max_size=64), body=st.binary(max_size=512), flip=st.integers(0, 63)
)
def test_hmac_accepts_exactly_the_signature(secret: bytes, body: bytes, flip: int) -> None:
    good = sig(secret, body)
    assert authentic(
        Auth.HUB_SIGNATURE, (secret,), {"x-hub-signature-256": "sha256=" + good}, body, None
    )
    position = flip % len(good)
    bad = good[:position] + ("0" if good[position] != "0" else "1") + good[position + 1 :]
    assert not authentic(Auth.JFROG_SIGNATURE, (secret,), {"x-jfrog-event-auth": bad}, body, None)


def test_split_secrets() -> None:
    assert split_secrets(" a , b,,c ") == (b"a", b"b", b"c")
    assert split_secrets(" , ") == ()


def test_every_contract_kind_has_a_scheme_and_every_served_kind_is_in_the_table() -> None:
    assert set(AUTH) == {
        "distribution", "harbor", "dockerhub", "github", "ecr", "gar", "acr", "quay",
        "artifactory", "zot", "cloudevents",
    }  # fmt: skip
    assert {name: spec.auth for name, spec in KINDS.items()} == {n: AUTH[n] for n in KINDS}
    assert AUTH["github"] is Auth.HUB_SIGNATURE and AUTH["artifactory"] is Auth.JFROG_SIGNATURE
    assert {n for n, a in AUTH.items() if a is Auth.PATH} == {"dockerhub", "quay", "gar"}
