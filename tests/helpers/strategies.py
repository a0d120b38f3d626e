"""Hypothesis strategies for valid and hostile inputs."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from worker.decision import TagRecord
from worker.events import TagDeleted, TagEvent, TagMoved
from worker.timefmt import format_rfc3339

HOSTS = [
    "docker.io/",
    "ghcr.io/",
    "localhost:5000/",
    "public.ecr.aws/",
    "Registry.Example.com:443/",
    "index.docker.io/",
    "127.0.0.1:5000/",
]
component = st.from_regex(r"[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}", fullmatch=True)
paths = st.lists(component, min_size=1, max_size=3).map("/".join)
# without a host, a first component with a '.' would be read as a host (docker's rule)
repositories = st.one_of(
    st.builds(lambda h, p: h + p, st.sampled_from(HOSTS), paths),
    paths.filter(lambda p: "." not in p.split("/")[0]),
)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,30}", fullmatch=True)
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
hex128 = st.binary(min_size=64, max_size=64).map(bytes.hex)
digests = st.one_of(hex64, hex64.map("sha256:".__add__), hex128.map("sha512:".__add__))
BASE = datetime(2026, 1, 1, tzinfo=UTC)
times = st.integers(min_value=0, max_value=10**12).map(lambda us: BASE + timedelta(microseconds=us))
offsets = st.sampled_from(["Z", "+00:00", "+01:00", "-05:30", "+14:00", "z"])


def rfc3339(moment: datetime, offset: str) -> str:
    """The instant written with the given offset and nanosecond-looking precision."""
    if offset.lower() == "z":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000" + offset
    sign = 1 if offset[0] == "+" else -1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    local = (moment + delta).replace(tzinfo=None)
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + offset


@st.composite
def cloud_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid structured tag-moved CloudEvent (as a JSON object)."""
    repository, tag = draw(repositories), draw(tags)
    data: dict[str, Any] = {"repository": repository, "tag": tag, "artifact": draw(digests)}
    if draw(st.booleans()):
        data["actor"] = draw(
            st.text(min_size=1, max_size=20).filter(
                lambda s: "\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
            )
        )
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": draw(
            st.text(
                alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
            )
        ),
        "source": draw(
            st.sampled_from(
                ["https://registry.example.com/webhook", "/webhooks/harbor", "urn:registry:quay"]
            )
        ),
        "type": "ocitag.moved.v1",
        "time": rfc3339(draw(times), draw(offsets)),
        "data": data,
    }
    if draw(st.booleans()):
        event["subject"] = f"{repository}:{tag}"
    if draw(st.booleans()):
        event["myextension"] = "ignored"
    return event


def make_event(
    tag: str,
    artifact: str,
    time: datetime,
    *,
    source: str = "https://registry.example.com/webhook",
    event_id: str | None = None,
    actor: str = "alice",
    previous_artifact: str | None = None,
    expected_version: int | None = None,
    repository: str = "docker.io/library/app",
) -> TagMoved:
    """A decoded event, fingerprinted from its content as decode would tell them apart."""
    event_id = event_id or hashlib.sha1(f"{tag}{artifact}{time}".encode()).hexdigest()[:12]
    content = [
        source,
        event_id,
        format_rfc3339(time),
        repository,
        tag,
        artifact,
        actor,
        previous_artifact,
        expected_version,
    ]
    fingerprint = hashlib.sha256(json.dumps(content).encode()).digest()
    return TagMoved(
        source,
        event_id,
        fingerprint,
        time,
        repository,
        tag,
        artifact,
        actor,
        previous_artifact,
        expected_version,
    )


def make_deletion(
    tag: str,
    time: datetime,
    *,
    source: str = "https://registry.example.com/webhook",
    event_id: str | None = None,
    actor: str = "alice",
    previous_artifact: str | None = None,
    expected_version: int | None = None,
    repository: str = "docker.io/library/app",
) -> TagDeleted:
    """A decoded tag-deleted event, fingerprinted like ``make_event`` (the type is part
    of the content, so a move and a deletion never share a fingerprint)."""
    event_id = event_id or hashlib.sha1(f"{tag}-deleted-{time}".encode()).hexdigest()[:12]
    content = [
        "ocitag.deleted.v1",
        source,
        event_id,
        format_rfc3339(time),
        repository,
        tag,
        actor,
        previous_artifact,
        expected_version,
    ]
    fingerprint = hashlib.sha256(json.dumps(content).encode()).digest()
    return TagDeleted(
        source,
        event_id,
        fingerprint,
        time,
        repository,
        tag,
        actor,
        previous_artifact,
        expected_version,
    )


def digest(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@st.composite
def histories(draw: st.DrawFn, max_events: int = 30, deletions: bool = True) -> list[TagEvent]:
    """Event histories over a few tags: moves and (unless ``deletions`` is False) about
    one deletion in four, with random times (with ties), artifacts, actors,
    preconditions, duplicates and id reuse (also across a move and a deletion)."""
    count = draw(st.integers(min_value=1, max_value=max_events))
    events: list[TagEvent] = []
    for n in range(count):
        roll = draw(st.integers(0, 9))
        if events and roll == 0:  # duplicate delivery
            events.append(draw(st.sampled_from(events)))
            continue
        tag = draw(st.sampled_from(["a", "b", "c"]))
        event_id = draw(st.sampled_from(events)).id if events and roll == 1 else f"e{n}"  # id reuse
        previous = draw(st.sampled_from([None, digest(0), digest(1)])) if roll == 2 else None
        expected = draw(st.integers(0, 3)) if roll == 3 else None
        time = BASE + timedelta(seconds=draw(st.integers(0, 20)))
        source = draw(st.sampled_from(["s1", "s2"]))
        actor = draw(st.sampled_from(["alice", "bob"]))
        if deletions and draw(st.integers(0, 3)) == 0:
            events.append(
                make_deletion(
                    tag,
                    time,
                    event_id=event_id,
                    source=source,
                    actor=actor,
                    previous_artifact=previous,
                    expected_version=expected,
                )
            )
            continue
        events.append(
            make_event(
                tag,
                digest(draw(st.integers(0, 3))),
                time,
                event_id=event_id,
                source=source,
                actor=actor,
                previous_artifact=previous,
                expected_version=expected,
            )
        )
    return events


def tag_record(tag: str = "1.0", version: int = 1, **changes: Any) -> TagRecord:
    """A row of docker.io/library/app at ``version``: moved at BASE + version seconds by
    event ``e<version>`` of ``urn:test``; ``changes`` override any field."""
    values: dict[str, Any] = {
        "repository": "docker.io/library/app",
        "tag": tag,
        "artifact": digest(version),
        "created_by": "alice",
        "created_on": BASE,
        "last_modified_by": "bob",
        "last_modified_on": BASE + timedelta(seconds=version),
        "version": version,
        "last_event_source": "urn:test",
        "last_event_id": f"e{version}",
    }
    values.update(changes)
    return TagRecord(**values)
