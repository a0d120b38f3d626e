"""Planning a delivery: identifiers normalised and checked, duplicates folded, events
built by the one builder, the 2xx body."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.ingest.delivery import accepted_body, cloud_event, messages, plan
from worker.ingest.mapping import (
    Handshake,
    Ignored,
    MappingError,
    TagChange,
    body_event_id,
    ingest_source,
)

ART = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
T = datetime(2026, 1, 2, 3, 4, 5, 600000, UTC)


def event(**change: object) -> TagChange:
    values: dict[str, object] = {
        "action": "moved",
        "repository": "index.docker.io/nginx",
        "tag": "1.27",
        "digest": f"sha256:{ART}",
        "event_id": "e-1",
        "time": T,
        "source": ingest_source("dockerhub", "docker.io"),
        "actor": "alice",
    }
    values.update(change)
    return TagChange(**values)  # type: ignore[arg-type]


def test_normalises_repository_and_digest() -> None:
    decided = plan([Ignored("pull"), event(), event(event_id="e-2", action="deleted", digest=None)])
    assert [e.repository for e in decided.events] == ["docker.io/library/nginx"] * 2
    assert decided.events[0].digest == ART
    assert decided.ignored == ((0, Ignored("pull")),)


def test_the_same_event_twice_is_published_once() -> None:
    assert len(plan([event(), event()]).events) == 1


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"repository": "Bad Repo"}, "entries[1].repository"),
        ({"tag": "-x"}, "entries[1].tag"),
        ({"digest": "sha256:abc"}, "entries[1].digest"),
        ({"previous_artifact": "md5:1"}, "entries[1].previous_artifact"),
    ],
)
def test_broken_identifiers_are_named(change: dict[str, object], location: str) -> None:
    with pytest.raises(MappingError) as caught:
        plan([Ignored("blob"), event(**change)])
    assert caught.value.location == location


def test_handshake_is_picked_out() -> None:
    assert plan([Handshake({"validationResponse": "x"})]).handshake == Handshake(
        {"validationResponse": "x"}
    )


def test_cloud_event_and_record() -> None:
    [normalised] = plan([event()]).events
    built = cloud_event(normalised)
    assert built == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "urn:ocitag:ingest:dockerhub:docker.io",
        "type": "ocitag.moved.v1",
        "time": "2026-01-02T03:04:05.600000Z",
        "subject": "docker.io/library/nginx:1.27",
        "datacontenttype": "application/json",
        "data": {
            "repository": "docker.io/library/nginx",
            "tag": "1.27",
            "artifact": ART,
            "actor": "alice",
        },
    }
    [(topic, key, value, headers)] = messages("ocitag.events", [built])
    assert (topic, key) == ("ocitag.events", b"docker.io/library/nginx:1.27")
    assert value is not None and json.loads(value) == built
    assert headers == [("content-type", b"application/cloudevents+json")]
    deleted = cloud_event(plan([event(action="deleted", digest=None)]).events[0])
    assert deleted["type"] == "ocitag.deleted.v1" and "artifact" not in deleted["data"]


def test_an_unresolved_move_is_never_built() -> None:
    with pytest.raises(ValueError, match="resolved"):
        cloud_event(event(digest=None))


def test_accepted_body() -> None:
    built = cloud_event(plan([event()]).events[0])
    assert accepted_body([built], [(1, Ignored("pull")), (2, Ignored("blob", "mount"))]) == {
        "published": [
            {
                "id": "e-1",
                "source": "urn:ocitag:ingest:dockerhub:docker.io",
                "type": "ocitag.moved.v1",
                "subject": "docker.io/library/nginx:1.27",
            }
        ],
        "ignored": [
            {"entry": 1, "reason": "pull"},
            {"entry": 2, "reason": "blob", "detail": "mount"},
        ],
    }


@given(body=st.binary(max_size=256), index=st.integers(0, 1000))
def test_body_event_id_is_stable_and_distinct(body: bytes, index: int) -> None:
    assert body_event_id(body, index) == body_event_id(body, index)
    assert body_event_id(body, index) != body_event_id(body, index + 1)
    assert body_event_id(body, index) != body_event_id(body + b" ", index)


@pytest.mark.parametrize("host", ["registry", "zot", "harbor-core"])
def test_a_registry_host_that_would_read_as_a_docker_hub_path_is_refused(host: str) -> None:
    """``http://registry/`` (an in-cluster Service): docker's rule would file its tags
    under docker.io/registry/…, another registry's names."""
    moved = event(repository=f"{host}/team/app", source=ingest_source("distribution", host))
    with pytest.raises(MappingError) as caught:
        plan([moved])
    assert caught.value.location == "entries[0].repository"
    assert f"registry host '{host}'" in caught.value.message


@pytest.mark.parametrize(
    ("repository", "canonical"),
    [
        ("registry:5000/team/app", "registry:5000/team/app"),
        ("localhost/team/app", "localhost/team/app"),
        ("registry.internal/team/app", "registry.internal/team/app"),
        ("docker.io/team/app", "docker.io/team/app"),
        ("index.docker.io/nginx", "docker.io/library/nginx"),
    ],
)
def test_qualified_registry_hosts_are_kept(repository: str, canonical: str) -> None:
    assert plan([event(repository=repository)]).events[0].repository == canonical


def test_the_cloudevents_kind_names_repositories_as_docker_pull_does() -> None:
    moved = event(repository="istio/pilot", source="urn:my:pipeline")
    assert plan([moved], hosted=False).events[0].repository == "docker.io/istio/pilot"
