from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given

from tests.helpers.strategies import digests, repositories, tags
from worker.identifiers import (
    DIGEST_PATTERN,
    OCITAG_ID_PATTERN,
    TAG_PATTERN,
    InvalidIdentifierError,
    anchored,
    canonical_host,
    normalize_digest,
    normalize_ocitag_id,
    normalize_repository,
    split_ocitag_id,
    validate_tag,
)

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HEX512 = "ab" * 64


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("istio/pilot", "docker.io/istio/pilot"),
        ("docker.io/istio/pilot", "docker.io/istio/pilot"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("index.docker.io/istio/pilot", "docker.io/istio/pilot"),
        ("registry-1.docker.io/library/nginx", "docker.io/library/nginx"),
        ("index.docker.io/nginx", "docker.io/library/nginx"),
        (
            "public.ecr.aws/bottlerocket/bottlerocket-operator",
            "public.ecr.aws/bottlerocket/bottlerocket-operator",
        ),
        ("localhost:5000/team/app", "localhost:5000/team/app"),
        ("localhost/app", "localhost/app"),
        ("ghcr.io/a/b/c/d", "ghcr.io/a/b/c/d"),
        ("Registry.Example.COM:443/team/app", "Registry.Example.COM:443/team/app"),
        # docker reads an upper-case first component as a registry host
        ("Istio/pilot", "Istio/pilot"),
        ("a__b/c--d/e.f_g", "docker.io/a__b/c--d/e.f_g"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x"),
        ("[::1]:5000/x", "[::1]:5000/x"),
    ],
)
def test_repository_is_normalised_like_docker_pull(raw: str, canonical: str) -> None:
    assert normalize_repository(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("", "must not be empty"),
        ("istio/Pilot", "lower-case"),
        ("ghcr.io/Team/app", "lower-case"),
        ("istio/pilot:1.3", "must not contain a tag"),
        ("istio/pilot@sha256:" + HEX, "digest"),
        ("istio//pilot", "lower-case components"),
        ("istio/pilot/", "lower-case components"),
        ("-istio/pilot", "lower-case components"),
        ("istio/pi..lot", "lower-case components"),
        ("istio/pi___lot", "lower-case components"),
        ("docker.io/", "must have a path"),
        ("istio pilot", "white space"),
        ("bad_host.io:x/app", "valid host"),
        ("ghcr.io/" + "a" * 250, "at most 255"),
    ],
)
def test_repository_rule_broken_is_named(raw: str, rule: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=rule):
        normalize_repository(raw)


def test_repository_length_counts_the_normalised_form() -> None:
    # 245 characters given, 255 once 'docker.io/' is added: still valid
    assert len(normalize_repository("a/" + "b" * 243)) == 255
    with pytest.raises(InvalidIdentifierError, match="at most 255"):
        normalize_repository("a/" + "b" * 244)


@pytest.mark.parametrize("tag", ["1.3.0", "latest", "_x", "A" * 128, "v1.0-rc.1_b"])
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "rule"),
    [
        ("", "must match"),
        (".hidden", "must match"),
        ("-x", "must match"),
        ("a" * 129, "at most 128"),
        ("a/b", "must match"),
        ("a:b", "must match"),
        ("sha256:" + HEX, "digest is not a tag"),
    ],
)
def test_invalid_tags(tag: str, rule: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=rule):
        validate_tag(tag)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (HEX, HEX),
        ("sha256:" + HEX, HEX),
        ("sha512:" + HEX512, "sha512:" + HEX512),
    ],
)
def test_digests_are_stored_in_the_seed_form(raw: str, stored: str) -> None:
    assert normalize_digest(raw) == stored


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (HEX.upper(), "lower-case"),
        ("sha256:" + HEX.upper(), "lower-case"),
        ("sha256:" + HEX[:-1], "64 lower-case hex"),
        ("sha256:" + HEX + "0", "64 lower-case hex"),
        (HEX[:-1], "64 lower-case hex"),
        ("sha512:" + HEX, "128 lower-case hex"),
        ("md5:abc", "sha256 or sha512"),
        ("", "64 lower-case hex"),
        ("sha256:" + "g" * 64, "64 lower-case hex"),
    ],
)
def test_invalid_digests(raw: str, rule: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=rule):
        normalize_digest(raw)


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("docker.io/istio/pilot:1.3.0", ("docker.io/istio/pilot", "1.3.0")),
        ("localhost:5000/team/app:v2", ("localhost:5000/team/app", "v2")),
        ("nginx:latest", ("nginx", "latest")),
    ],
)
def test_ocitag_id_splits_at_the_last_colon_after_the_last_slash(
    raw: str, parts: tuple[str, str]
) -> None:
    assert split_ocitag_id(raw) == parts


@pytest.mark.parametrize("raw", ["localhost:5000/team/app", "nginx", "app@sha256:" + HEX])
def test_ocitag_id_without_tag_is_refused(raw: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        split_ocitag_id(raw)


@given(repositories)
def test_repository_normalisation_is_idempotent(raw: str) -> None:
    once = normalize_repository(raw)
    assert normalize_repository(once) == once


@given(repositories, tags)
def test_ocitag_id_round_trips(repository: str, tag: str) -> None:
    canonical = normalize_ocitag_id(f"{repository}:{tag}")
    assert split_ocitag_id(canonical) == (normalize_repository(repository), tag)
    assert normalize_ocitag_id(canonical) == canonical


@given(digests)
def test_digest_normalisation_is_idempotent(raw: str) -> None:
    once = normalize_digest(raw)
    assert normalize_digest(once) == once


def test_a_numeric_first_component_is_a_path_not_a_host() -> None:
    assert normalize_repository("123/app") == "docker.io/123/app"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("ghcr.io", "ghcr.io"),
        ("Registry.Example.COM:5000", "registry.example.com:5000"),
        ("registry-1.docker.io", "docker.io"),
        ("INDEX.docker.io", "docker.io"),
        ("localhost:5000", "localhost:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ("myhost", "myhost"),
    ],
)
def test_canonical_host_is_lower_case_with_docker_hub_aliases_folded(
    raw: str, canonical: str
) -> None:
    assert canonical_host(raw) == canonical


@pytest.mark.parametrize("raw", ["", "a b", "-bad.io", "ghcr.io/team", "host:port", "a_b.io"])
def test_canonical_host_refuses_what_is_not_a_host(raw: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="not a valid host name"):
        canonical_host(raw)


@pytest.mark.parametrize(
    ("pattern", "check", "samples"),
    [
        (TAG_PATTERN, validate_tag, ["v1", "_x", ".x", "-x", "a" * 128, "a" * 129, "a:b"]),
        (
            DIGEST_PATTERN,
            normalize_digest,
            ["a" * 64, "sha256:" + "a" * 64, "sha512:" + "b" * 128, "A" * 64, "md5:" + "a" * 32],
        ),
    ],
)
def test_published_patterns_accept_what_the_checks_accept(
    pattern: str, check: Callable[[str], str], samples: list[str]
) -> None:
    """The schema patterns are built from the same strings the checks compile."""
    published = re.compile(anchored(pattern))
    for sample in samples:
        try:
            check(sample)
            accepted = True
        except InvalidIdentifierError:
            accepted = False
        assert (published.search(sample) is not None) == accepted, sample


@given(repositories, tags)
def test_every_valid_ocitag_id_matches_the_published_pattern(repository: str, tag: str) -> None:
    assert re.search(anchored(OCITAG_ID_PATTERN), f"{repository}:{tag}")
