"""No body, however shaped, makes a mapper raise anything but MappingError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.ingest.kinds import KINDS
from worker.ingest.mapping import Handshake, Ignored, MappingError, TagChange

_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
_KEYS = st.sampled_from(
    ["events", "action", "target", "tag", "digest", "repository", "request", "host", "id",
     "timestamp", "mediaType", "url", "type", "specversion", "source", "time", "data",
     "name", "reference", "artifact", "subject", "push", "delete"]
) | st.text(max_size=8)  # fmt: skip
_JSON: Any = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=6),
    max_leaves=25,
)
_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            ["application/json", "application/cloudevents+json",
             "application/cloudevents-batch+json", "text/plain"]
        ),
        "ce-specversion": st.sampled_from(["1.0", "0.3"]),
        "ce-type": st.sampled_from(["zotregistry.image.updated", "ocitag.moved.v1", "x"]),
        "ce-id": st.text(max_size=5),
        "ce-time": st.text(max_size=25),
        "ce-source": st.text(max_size=10),
        "x-ocitag-registry": st.text(max_size=10),
    },
)  # fmt: skip


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=300, deadline=None)
@given(value=_JSON, headers=_HEADERS)
def test_mappers_only_raise_mapping_error(kind: str, value: Any, headers: dict[str, str]) -> None:
    try:
        result = KINDS[kind].map_delivery(json.dumps(value).encode(), headers)
    except MappingError:
        return
    assert all(isinstance(entry, TagChange | Ignored | Handshake) for entry in result)
