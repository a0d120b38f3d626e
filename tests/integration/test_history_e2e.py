"""History end to end: random moves and deletions published to Kafka in shuffled random
batches over the partitions, applied by the running worker, asked of the running api —
its entries are the 200 outcomes that came out, version by version; ``?at=`` is the replay
of those applied events up to each instant; the digest query their intervals. Plus the
``repointed`` attribute on the wire and the ``history`` command."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.api import api_overrides, running_api
from tests.helpers.contract import errors_of, schema_validator
from tests.helpers.harness import Received, running_worker, structured
from tests.helpers.history import (
    expected_entries,
    instants,
    replay_at,
    replay_intervals,
    without_recorded_at,
)
from tests.helpers.model import Change, Model, Summary
from tests.helpers.strategies import BASE, digest, make_deletion, make_event
from worker.events import TagDeleted, TagEvent
from worker.history_command import history
from worker.settings import Settings
from worker.timefmt import format_rfc3339

pytestmark = pytest.mark.integration

REPO = "docker.io/library/app"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**api_overrides())


def random_history(rng: random.Random, count: int) -> list[TagEvent]:
    """Moves and deletions over four tags and three digests, times with ties, late
    events, duplicates and ids reused with other content by moves (a deletion's outcome
    does not say its time: each deletion has an id of its own, to be told by it)."""
    events: list[TagEvent] = []
    for n in range(count):
        roll = rng.randrange(10)
        if events and roll == 0:
            events.append(rng.choice(events))  # a duplicate delivery
            continue
        tag = rng.choice(["a", "b", "c", "v1.0.0"])
        when = BASE + timedelta(seconds=rng.randrange(30))
        actor = rng.choice(["ann", "bob"])
        if rng.randrange(4) == 0:
            events.append(make_deletion(tag, when, event_id=f"e{n}", actor=actor))
        else:
            artifact = digest(rng.randrange(3))
            event_id = rng.choice(events).id if events and roll == 1 else f"e{n}"
            events.append(make_event(tag, artifact, when, event_id=event_id, actor=actor))
    return events


def cloud_event(event: TagEvent) -> dict[str, Any]:
    data: dict[str, Any] = {"repository": event.repository, "tag": event.tag, "actor": event.actor}
    if not isinstance(event, TagDeleted):
        data["artifact"] = event.artifact
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": "ocitag.deleted.v1" if isinstance(event, TagDeleted) else "ocitag.moved.v1",
        "time": format_rfc3339(event.time),
        "data": data,
    }


def applied_model(events: list[TagEvent], outcomes: list[Received]) -> tuple[Model, set[str]]:
    """The 200 outcomes first given (a replay repeats one), per tag in version order, as
    the model's changes; and the (tag, version)s flagged ``repointed`` on the wire."""
    by_key: dict[tuple[str, str], list[TagEvent]] = {}
    for event in events:
        by_key.setdefault((event.source, event.id), []).append(event)
    model, flagged, seen = Model(), set(), set()
    for outcome in sorted(
        (o.body for o in outcomes if o.body["status"] == 200),
        key=lambda b: b["resourceversion"],
    ):
        key = (outcome["causationsource"], outcome["causationid"])
        if (key, outcome["subject"]) in seen:
            continue
        seen.add((key, outcome["subject"]))
        data = outcome["data"]
        deleted = outcome["change"] == "deleted"
        (event,) = {e for e in by_key[key] if _is(e, deleted, data)}
        summary = Summary(200, outcome["change"], outcome["resourceversion"], data["artifact"])
        model.changes.setdefault((event.repository, event.tag), []).append(Change(event, summary))
        if outcome.get("repointed"):
            flagged.add(f"{event.tag}@{outcome['resourceversion']}")
    return model, flagged


def _is(event: TagEvent, deleted: bool, data: dict[str, Any]) -> bool:
    """Whether ``event`` is the one a 200 outcome with this data says was applied."""
    if isinstance(event, TagDeleted) or deleted:
        return isinstance(event, TagDeleted) and deleted and event.tag == data["tag"]
    return (event.tag, event.artifact, event.actor, format_rfc3339(event.time)) == (
        data["tag"],
        data["artifact"],
        data["last_modified_by"],
        data["last_modified_on"],
    )


async def test_the_api_answers_history_from_what_the_worker_applied(settings: Settings) -> None:
    rng = random.Random(2222)
    events = random_history(rng, 80)
    order = events[:]
    rng.shuffle(order)
    async with running_worker(settings) as worker, running_api(settings) as api:
        position = 0
        while position < len(order):
            size = rng.randint(1, 12)
            batch = order[position : position + size]
            await worker.publish(
                [structured(cloud_event(e)) for e in batch], partition=rng.randrange(3)
            )
            position += size
        outcomes = await worker.outcomes(len(order), timeout=60)
        model, flagged = applied_model(events, outcomes)
        assert model.changes, "something was applied"

        page_schema = schema_validator("history-page.schema.json")
        tags_schema = schema_validator("artifact-tags-page.schema.json")
        for tag_key, changes in model.changes.items():
            ocitag = f"{tag_key[0]}:{tag_key[1]}"
            entries: list[dict[str, Any]] = []
            url = f"{api.base}/ocitags/{quote(ocitag, safe=':')}/history?limit=4"
            while url:
                answer = await api.call("GET", url)
                assert answer.status == 200, answer.raw
                assert errors_of(page_schema, answer.body) == []
                entries += answer.body["items"]
                cursor = answer.body["next"]
                url = f"{url.split('&cursor=', maxsplit=1)[0]}&cursor={cursor}" if cursor else ""
            repointed = {int(f.split("@")[1]) for f in flagged if f.startswith(f"{tag_key[1]}@")}
            assert without_recorded_at(entries) == expected_entries(changes, repointed), ocitag
            for instant in instants(model):
                answer = await api.call(
                    "GET", f"{api.tag_url(ocitag)}?at={quote(format_rfc3339(instant))}"
                )
                expected = replay_at(tag_key, changes, instant)
                if expected is None:
                    assert answer.status == 404, (ocitag, instant, answer.raw)
                else:
                    assert answer.status == 200, (ocitag, instant, answer.raw)
                    assert (answer.body, answer.headers["ETag"]) == (
                        expected[0],
                        f'"{expected[1]}"',
                    ), (ocitag, instant)
        for n in range(3):
            for with_history in (True, False):
                items: list[dict[str, Any]] = []
                # any spelling of the digest the contract accepts
                url = (
                    f"{api.base}/artifacts/sha256:{digest(n)}/tags"
                    f"?history={str(with_history).lower()}&limit=2"
                )
                while url:
                    answer = await api.call("GET", url)
                    assert answer.status == 200, answer.raw
                    assert errors_of(tags_schema, answer.body) == []
                    items += answer.body["items"]
                    cursor = answer.body["next"]
                    url = f"{url.split('&cursor=')[0]}&cursor={cursor}" if cursor else ""
                want = replay_intervals(model, digest(n), history=with_history)
                assert sorted(items, key=lambda i: (i["tag"], i["from_version"])) == want

        never = await api.call("GET", f"{api.base}/ocitags/docker.io/x/never:1/history")
        assert never.status == 404
        bad = await api.call("GET", f"{api.tag_url(f'{REPO}:a')}?at=yesterday")
        assert bad.status == 422 and bad.body["errors"][0]["location"] == "query.at"
        bad = await api.call("GET", f"{api.base}/artifacts/sha256:abc/tags")
        assert bad.status == 422 and bad.body["errors"][0]["location"] == "path.digest"


async def test_a_moved_release_tag_is_repointed_on_the_wire_and_in_the_command(
    settings: Settings,
) -> None:
    events = [
        make_event("v1.4.2", digest(1), BASE, event_id="r1", actor="ci"),
        make_event("v1.4.2", digest(2), BASE + timedelta(seconds=1), event_id="r2", actor="eve"),
        make_event("nightly", digest(1), BASE, event_id="n1"),
        make_event("nightly", digest(2), BASE + timedelta(seconds=1), event_id="n2"),
    ]
    async with running_worker(settings) as worker:
        await worker.publish([structured(cloud_event(e)) for e in events], partition=0)
        outcomes = {o.body["causationid"]: o.body for o in await worker.outcomes(4)}
    assert outcomes["r2"]["repointed"] is True
    assert all("repointed" not in outcomes[i] for i in ("r1", "n1", "n2"))

    out = io.StringIO()
    assert await history(settings, f"{REPO}:v1.4.2", limit=None, out=out, as_json=True) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["version"], e["change"], e["by"], e["repointed"]) for e in lines] == [
        (2, "updated", "eve", True),
        (1, "created", "ci", False),
    ]
    table = io.StringIO()
    assert await history(settings, f"{REPO}:v1.4.2", limit=1, out=table, as_json=False) == 0
    header, row = table.getvalue().splitlines()
    assert header.split() == ["version", "change", "artifact", "by", "at", "event", "repointed"]
    assert row.split()[:2] == ["2", "updated"] and row.split()[-1] == "REPOINTED"
    assert await history(settings, f"{REPO}:never", limit=None, out=io.StringIO()) == 3
