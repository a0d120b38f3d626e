"""Every kind mapper of this module's table: whatever the body (and the headers the kind
reads), it returns mapped entries or raises MappingError, never anything else; and the
same delivery always maps to the same result (identity from the delivery)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.ingest_fixtures import MapDelivery, fixture, fixture_names
from worker.ingest import acr, artifactory, dockerhub, ecr, gar, github, harbor, quay
from worker.ingest.mapping import MappingError

KINDS: dict[str, MapDelivery] = {
    "harbor": harbor.map_delivery,
    "dockerhub": dockerhub.map_delivery,
    "github": github.map_delivery,
    "ecr": ecr.map_delivery,
    "gar": gar.map_delivery,
    "acr": acr.map_delivery,
    "quay": quay.map_delivery,
    "artifactory": artifactory.map_delivery,
}
#: headers each kind reads, with a realistic value, for the fixtures
HEADERS: dict[str, dict[str, str]] = {
    "github": {"x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
    "quay": {"x-ocitag-received-at": "2025-01-21T08:03:21.250Z"},
    "artifactory": {"x-ocitag-received-at": "2025-01-21T08:03:21Z"},
    "gar": {
        "x-goog-pubsub-message-id": "9001",
        "x-goog-pubsub-publish-time": "2024-05-01T12:00:00.5Z",
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
header_values = st.dictionaries(
    st.sampled_from(
        [
            "x-github-event",
            "x-github-delivery",
            "x-ocitag-received-at",
            "x-ocitag-registry",
            "x-goog-pubsub-message-id",
            "x-goog-pubsub-publish-time",
            "aeg-event-type",
            "content-type",
        ]
    ),
    st.text(max_size=40),
)
FIXTURE_CASES = [(kind, name) for kind in KINDS for name in fixture_names(kind)]


def _map_or_mapping_error(kind: str, body: bytes, headers: dict[str, str]) -> None:
    location = "unset"
    try:
        KINDS[kind](body, headers)
    except MappingError as exc:
        location = exc.location
    assert location  # every error names where


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(body=st.binary(max_size=300), headers=header_values)
@settings(max_examples=100, deadline=None)
def test_arbitrary_bytes_raise_only_mapping_error(
    kind: str, body: bytes, headers: dict[str, str]
) -> None:
    _map_or_mapping_error(kind, body, headers)


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(value=json_values, headers=header_values)
@settings(max_examples=100, deadline=None)
def test_arbitrary_json_raises_only_mapping_error(
    kind: str, value: Any, headers: dict[str, str]
) -> None:
    _map_or_mapping_error(kind, orjson.dumps(value), headers)


@pytest.mark.parametrize(("kind", "name"), FIXTURE_CASES)
@given(data=st.data(), replacement=json_values)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fixture_with_any_member_replaced_raises_only_mapping_error(
    kind: str, name: str, data: st.DataObject, replacement: Any
) -> None:
    payload = orjson.loads(fixture(kind, name))
    paths = _paths(payload)
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    _map_or_mapping_error(kind, orjson.dumps(payload), HEADERS.get(kind, {}))


@pytest.mark.parametrize(("kind", "name"), FIXTURE_CASES)
def test_the_same_delivery_maps_to_the_same_events(kind: str, name: str) -> None:
    body = fixture(kind, name)
    headers = HEADERS.get(kind, {})
    try:
        first = KINDS[kind](body, headers)
    except MappingError:
        return
    assert KINDS[kind](body, headers) == first
