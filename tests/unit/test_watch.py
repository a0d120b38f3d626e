"""``ocitag-worker outcomes`` on a terminal: one readable line per outcome."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.events import HEX
from worker.watch import describe

PROBLEMS = "https://x/problems/"


@pytest.mark.parametrize(
    ("outcome", "line"),
    [
        (
            {
                "status": 200,
                "change": "created",
                "subject": "docker.io/a/b:1",
                "resourceversion": 1,
                "causationid": "e1",
                "data": {"artifact": HEX, "last_modified_by": "alice"},
            },
            f"200 created docker.io/a/b:1 -> {HEX} v1 by alice (event e1)",
        ),
        (
            {
                "status": 200,
                "type": "ocitag.removed.v1",
                "change": "deleted",
                "subject": "docker.io/a/b:1",
                "resourceversion": 4,
                "causationid": "e3",
                "causationsource": "urn:x",
                "data": {"artifact": HEX, "last_modified_by": "alice"},
            },
            f"200 deleted docker.io/a/b:1 (was {HEX}) v4 (event e3 from urn:x)",
        ),
        (
            {
                "status": 404,
                "subject": "docker.io/a/b:1",
                "causationid": "e4",
                "data": {"type": PROBLEMS + "not-found", "detail": "gone", "errors": []},
            },
            "404 not-found docker.io/a/b:1: gone (event e4)",
        ),
        (
            {
                "status": 422,
                "causationid": "e2",
                "data": {
                    "type": PROBLEMS + "invalid-data",
                    "detail": "bad",
                    "errors": [{"location": "body.data.tag", "message": "must match"}],
                },
            },
            "422 invalid-data: bad (event e2)\n    body.data.tag: must match",
        ),
        # not an event at all: no subject, no event id; the record is named instead of
        # printing "-" and "(event None)"
        (
            {
                "status": 400,
                "data": {
                    "type": PROBLEMS + "undecodable",
                    "detail": "the record value is not JSON",
                    "instance": "urn:kafka:ocitag.events:2:41",
                    "errors": [],
                },
            },
            "400 undecodable: the record value is not JSON (record urn:kafka:ocitag.events:2:41)",
        ),
        # an envelope broken past its source and id: the event is named, the subject not
        (
            {
                "status": 400,
                "causationid": "e5",
                "causationsource": "urn:x",
                "data": {
                    "type": PROBLEMS + "invalid-envelope",
                    "detail": "the CloudEvents envelope breaks a rule",
                    "instance": "urn:kafka:ocitag.events:0:7",
                    "errors": [],
                },
            },
            "400 invalid-envelope: the CloudEvents envelope breaks a rule (event e5)",
        ),
    ],
)
def test_each_outcome_is_one_readable_line(outcome: dict[str, Any], line: str) -> None:
    assert describe(outcome) == line
