"""The grant matcher and its document: '*' never crosses '/' or ':', '**' crosses
anything, every other character is itself (no regular expression in disguise), the
repository part is normalised like a repository; a broken document names its place."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.cli import run_cli
from worker.api.access import access_from_settings
from worker.api.grants import Grants, matches, may_read, normalize_pattern, parse_grants
from worker.documents import DocumentError
from worker.errors import SettingsError
from worker.settings import load_settings


@pytest.mark.parametrize(
    ("pattern", "canonical"),
    [
        ("istio/**", "docker.io/istio/**"),
        ("nginx:*", "docker.io/library/nginx:*"),
        ("index.docker.io/istio/pilot:1.*", "docker.io/istio/pilot:1.*"),
        ("Registry.Example.com/team-a/**", "registry.example.com/team-a/**"),
        ("registry.example.com/**:v*", "registry.example.com/**:v*"),
        ("localhost:5000/**", "localhost:5000/**"),
        ("**", "**"),
        ("**:latest", "**:latest"),
        ("*.example.com/app:*", "*.example.com/app:*"),
        ("docker.io/*:latest", "docker.io/library/*:latest"),
        ("docker.io/**", "docker.io/**"),
    ],
)
def test_patterns_are_normalised_like_repositories(pattern: str, canonical: str) -> None:
    assert normalize_pattern(pattern) == canonical


@pytest.mark.parametrize(
    ("pattern", "tag", "allowed"),
    [
        ("registry.example.com/team-a/**", "registry.example.com/team-a/app:v1", True),
        ("registry.example.com/team-a/**", "registry.example.com/team-a/sub/app:v1", True),
        ("registry.example.com/team-a/**", "registry.example.com/team-b/app:v1", False),
        ("registry.example.com/team-a/*", "registry.example.com/team-a/app:v1", False),
        ("registry.example.com/team-a/*:*", "registry.example.com/team-a/app:v1", True),
        ("registry.example.com/team-a/*:*", "registry.example.com/team-a/x/app:v1", False),
        ("registry.example.com/**:v*", "registry.example.com/a/b:v2.1", True),
        ("registry.example.com/**:v*", "registry.example.com/a/b:latest", False),
        ("istio/**", "docker.io/istio/pilot:1.3.0", True),
        ("nginx:*", "docker.io/library/nginx:1.25", True),
        ("*.dev.example.com/**", "a.dev.example.com/app:v1", True),
        ("*.dev.example.com/**", "a.b.dev.example.com/app:v1", True),  # '.' is no separator
        ("*/app:v1", "localhost:5000/app:v1", False),  # '*' stops at ':'
        ("registry.example.com/app:1.0", "registry.example.com/app:1x0", False),  # '.' literal
        ("registry.example.com/app:v?", "registry.example.com/app:v1", False),  # '?' literal
        ("registry.example.com/app:[v]1", "registry.example.com/app:v1", False),  # '[' literal
        ("**", "anything.example/at/all:v1", True),
    ],
)
def test_the_matcher(pattern: str, tag: str, allowed: bool) -> None:
    assert matches(normalize_pattern(pattern), tag) is allowed


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="*"), max_size=30)


@given(TEXT)
def test_a_pattern_without_wildcards_matches_only_itself(text: str) -> None:
    assert matches(text, text)
    assert not matches(text, text + "x")
    assert not matches(text + "x", text)


@given(TEXT, TEXT, st.text(alphabet="/:", min_size=1, max_size=3), TEXT)
def test_star_never_crosses_a_slash_or_colon(
    before: str, middle: str, separator: str, after: str
) -> None:
    tag = before + middle + separator + after
    assert not matches(re.sub(r"\*+", "", before) + "*" + after, tag) or (
        separator in after or separator in before
    )
    assert matches(before + "**" + after, tag)


@given(st.text(alphabet="abc./:", max_size=20), st.text(alphabet="abc./:", max_size=20))
def test_star_matches_exactly_a_run_without_separators(run: str, rest: str) -> None:
    assert matches("x*y", f"x{run}y") is ("/" not in run and ":" not in run)
    assert matches("x**y", f"x{run}{rest}y")


@pytest.mark.parametrize(
    ("document", "where", "rule"),
    [
        ("[]", "$", "an object from caller to a list of grants"),
        ("{", "$", "not a JSON document"),
        ('{"ci-team-a": {}}', '$["ci-team-a"]', "a list of grants"),
        (
            '{"ci-team-a": [{"actions": ["read", "writ"], "tags": ["**"]}]}',
            '$["ci-team-a"][0].actions[1]',
            'unknown action "writ"',
        ),
        ('{"bot": [{"actions": [], "tags": ["**"]}]}', "$.bot[0].actions", "non-empty"),
        ('{"bot": [{"actions": ["read"]}]}', "$.bot[0].tags", "is required"),
        ('{"bot": [{"actions": ["read"], "tags": ["**"], "x": 1}]}', "$.bot[0].x", "unknown"),
        ('{"bot": [{"actions": ["read"], "tags": ["a b"]}]}', "$.bot[0].tags[0]", "white space"),
        ('{"bot": [{"actions": ["read"], "tags": ["***"]}]}', "$.bot[0].tags[0]", "'***'"),
        ('{"bot": [{"actions": ["read"], "tags": ["team/App:y"]}]}', "$.bot[0].tags[0]", "lower"),
        ('{"bot": [{"actions": ["read"], "tags": [""]}]}', "$.bot[0].tags[0]", "empty"),
        ('{"b t": []}', '$["b t"]', "caller name"),
    ],
)
def test_a_broken_document_names_its_place(document: str, where: str, rule: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_grants(document)
    assert caught.value.where == where
    assert rule in str(caught.value)


def test_start_up_names_the_setting_and_the_place() -> None:
    settings = load_settings(
        environ={"OCITAG_API_GRANTS": '{"ci-team-a": [{"actions": ["writ"], "tags": ["**"]}]}'}
    )
    with pytest.raises(SettingsError) as caught:
        access_from_settings(settings, lambda: 0.0)
    assert str(caught.value) == (
        'invalid setting OCITAG_API_GRANTS: $["ci-team-a"][0].actions[0]: unknown action '
        '"writ" (actions: read, write, delete)'
    )


SPEC_EXAMPLE = {
    "ci-team-a": [
        {"actions": ["read", "write", "delete"], "tags": ["registry.example.com/team-a/**"]}
    ],
    "release-bot": [{"actions": ["write"], "tags": ["registry.example.com/**:v*"]}],
    "auditor": [{"actions": ["read"], "tags": ["**"]}],
}


@pytest.mark.parametrize(
    ("caller", "action", "tag", "allowed"),
    [
        ("ci-team-a", "write", "registry.example.com/team-a/app:main", True),
        ("ci-team-a", "delete", "registry.example.com/team-a/app:main", True),
        ("ci-team-a", "write", "registry.example.com/team-b/app:main", False),
        ("release-bot", "write", "registry.example.com/team-b/app:v1.2", True),
        ("release-bot", "write", "registry.example.com/team-b/app:main", False),
        ("release-bot", "read", "registry.example.com/team-b/app:v1.2", False),
        ("release-bot", "delete", "registry.example.com/team-b/app:v1.2", False),
        ("auditor", "read", "docker.io/library/nginx:1", True),
        ("auditor", "write", "docker.io/library/nginx:1", False),
        ("stranger", "read", "docker.io/library/nginx:1", False),
    ],
)
def test_the_specs_example(caller: str, action: str, tag: str, allowed: bool) -> None:
    grants = parse_grants(json.dumps(SPEC_EXAMPLE))
    assert grants.allows(caller, action, tag) is allowed  # type: ignore[arg-type]
    if action == "read":
        assert may_read(grants, caller)(tag) is allowed


def test_without_the_setting_everyone_may_do_everything() -> None:
    grants = Grants.everyone()
    assert grants.allows("anyone", "delete", "docker.io/library/nginx:1")
    assert may_read(grants, "anyone")("x:y")


def test_the_grants_may_come_from_a_file(tmp_path: Any) -> None:
    path = tmp_path / "grants.json"
    path.write_text(json.dumps(SPEC_EXAMPLE))
    settings = load_settings(environ={"OCITAG_API_GRANTS_FILE": str(path)})
    grants = access_from_settings(settings, lambda: 0.0).grants
    assert grants.allows("auditor", "read", "docker.io/library/nginx:1")


def test_the_cli_exits_2_naming_the_setting_and_the_place() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCITAG_")}
    env["OCITAG_API_TOKENS"] = "ci-team-a:a-token-of-16-chars"
    env["OCITAG_API_GRANTS"] = '{"ci-team-a": [{"actions": ["read", "writ"], "tags": ["**"]}]}'
    done = run_cli(["api", "--api-port", "0", "--http-port", "0"], env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert (
        'invalid setting OCITAG_API_GRANTS: $["ci-team-a"][0].actions[1]: unknown action "writ"'
        in done.stderr
    )
