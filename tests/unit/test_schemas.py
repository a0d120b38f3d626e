"""The contract documents in schemas/ and docs/: generated schemas in sync with the
models, the seed's OCITag and ErrorModel kept, the problem catalogue complete, and the
AsyncAPI document's channels, messages and examples consistent with the schema files.
(Full AsyncAPI validation, with the reference parser, is ``make check-schemas``.)

The registry and validators are in tests/helpers/contract.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.helpers.contract import (
    ASYNCAPI,
    REPO,
    SCHEMAS,
    SEED,
    asyncapi_validator,
    errors_of,
    load_yaml,
    schema_file,
    schema_validator,
    seed_components,
    seed_validator,
)
from worker.models import (
    SCHEMA_BASE_URI,
    RejectedOutcome,
    RemovedOutcome,
    StateRecord,
    TagDeletedData,
    TagDeletedEvent,
    TagMovedData,
    TagMovedEvent,
    UpdatedOutcome,
)
from worker.problems import ProblemKind
from worker.schemas import DRAFT, generate, render

PROBLEMS = REPO / "docs" / "problems.md"
PROBLEM_BASE = "https://ocitag-worker.dev/problems/"
# the OpenAPI block of the seed page ("Update Tag", PUT /ocitags/{tag}/) as vendored
SEED_SHA256 = "0f65bfb47b963011f1f2b4464bd4e3feccef62758257ee23182bbef5aa089a5a"
SEED_SCHEMA_FILES = {"OCITag": "ocitag.schema.json", "ErrorModel": "error-model.schema.json"}
CHANNELS = {
    "ocitag.events": {
        "ocitag.moved.v1.structured",
        "ocitag.moved.v1.binary",
        "ocitag.deleted.v1.structured",
        "ocitag.deleted.v1.binary",
    },
    "ocitag.outcomes": {"ocitag.updated.v1", "ocitag.removed.v1", "ocitag.rejected.v1"},
    "ocitag.events.dlq": {"ocitag.dead-letter"},
    "ocitag.state": {"ocitag.state.upsert", "ocitag.state.tombstone"},
}


# ---- generated schema files


def test_schema_files_are_in_sync_with_the_models() -> None:
    stale = [
        name
        for name, schema in generate().items()
        if not (SCHEMAS / name).is_file()
        or (SCHEMAS / name).read_text(encoding="utf-8") != render(schema)
    ]
    assert not stale, f"{', '.join(stale)} out of date with worker/models.py: run make schemas"
    generated = {path.name for path in SCHEMAS.glob("*.schema.json")}
    assert generated == set(generate()), "schemas/ holds a schema file the models do not make"


def test_generation_is_deterministic() -> None:
    assert {n: render(s) for n, s in generate().items()} == {
        n: render(s) for n, s in generate().items()
    }


@pytest.mark.parametrize("name", sorted(generate()))
def test_each_schema_file_is_a_draft_2020_12_schema_with_id_title_description(
    name: str,
) -> None:
    schema = schema_file(name)
    assert schema["$schema"] == DRAFT
    assert schema["$id"] == SCHEMA_BASE_URI + name
    assert schema["title"]
    assert schema["description"]
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("component", "name"), sorted(SEED_SCHEMA_FILES.items()))
def test_seed_records_keep_the_seed_members_required_list_and_closed_objects(
    component: str, name: str
) -> None:
    seed = seed_components()[component]
    ours = schema_file(name)
    assert set(ours["properties"]) == set(seed["properties"])
    assert ours.get("required", []) == seed.get("required", [])
    assert ours["additionalProperties"] is False
    assert seed["additionalProperties"] is False
    assert ours["type"] == seed["type"] == "object"
    for member, spec in seed["properties"].items():
        for keyword in ("type", "format", "readOnly", "default"):
            assert ours["properties"][member].get(keyword) == spec.get(keyword), (
                component,
                member,
                keyword,
            )


def test_the_schema_member_is_named_dollar_schema_read_only_uri_and_optional() -> None:
    for name in SEED_SCHEMA_FILES.values():
        member = schema_file(name)["properties"]["$schema"]
        assert (member["type"], member["format"], member["readOnly"]) == ("string", "uri", True)
        assert "$schema" not in schema_file(name).get("required", [])


def test_error_detail_keeps_the_seed_members() -> None:
    seed = seed_components()["ErrorDetail"]
    ours = schema_file("error-model.schema.json")["$defs"]["ErrorDetail"]
    assert set(ours["properties"]) == set(seed["properties"])
    assert ours["additionalProperties"] is False
    assert ours.get("required", []) == seed.get("required", [])
    errors = schema_file("error-model.schema.json")["properties"]["errors"]
    assert errors["type"] == ["array", "null"]
    assert errors["items"] == {"$ref": "#/$defs/ErrorDetail"}


def test_outcome_schemas_embed_the_seed_records() -> None:
    updated = schema_file("outcome-updated.schema.json")
    rejected = schema_file("outcome-rejected.schema.json")
    assert updated["properties"]["data"] == {"$ref": "#/$defs/OCITag"}
    assert rejected["properties"]["data"] == {"$ref": "#/$defs/ErrorModel"}
    ocitag = {k: v for k, v in schema_file("ocitag.schema.json").items() if not k.startswith("$")}
    assert {k: v for k, v in updated["$defs"]["OCITag"].items() if k not in {"description"}} == {
        k: v for k, v in ocitag.items() if k not in {"description"}
    }


def test_the_schemas_reject_what_the_contract_rejects() -> None:
    ocitag = {
        "artifact": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "repository": "docker.io/istio/pilot",
        "tag": "1.3.0",
        "created_by": "alice",
        "created_on": "2026-11-28T15:00:00Z",
        "last_modified_by": "alice",
        "last_modified_on": "2026-11-28T15:00:00Z",
    }
    for check in (schema_validator("ocitag.schema.json"), seed_validator("OCITag")):
        assert errors_of(check, ocitag) == []
        assert errors_of(check, {**ocitag, "$schema": SCHEMA_BASE_URI + "ocitag.schema.json"}) == []
        assert errors_of(check, {**ocitag, "version": 1})  # closed
        assert errors_of(check, {k: v for k, v in ocitag.items() if k != "created_by"})
        assert errors_of(check, {**ocitag, "created_on": "yesterday"})  # formats are checked
    problem = {"type": PROBLEM_BASE + "superseded", "status": 409, "errors": None}
    for check in (schema_validator("error-model.schema.json"), seed_validator("ErrorModel")):
        assert errors_of(check, problem) == []
        assert errors_of(check, {**problem, "errors": [{"location": "body", "extra": 1}]})
        assert errors_of(check, {**problem, "status": "409"})


# ---- the vendored seed


def test_the_vendored_seed_is_the_seed_pages_openapi_block() -> None:
    assert hashlib.sha256(SEED.read_bytes()).hexdigest() == SEED_SHA256, (
        "schemas/seed/ocitag-api.yaml is the seed's OpenAPI block, verbatim: do not edit it"
    )


def test_the_vendored_seed_has_the_three_records() -> None:
    assert set(seed_components()) >= {"OCITag", "ErrorModel", "ErrorDetail"}


# ---- the problem catalogue


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^### (\S+)\s*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_every_problem_kind_is_in_the_catalogue() -> None:
    text = PROBLEMS.read_text(encoding="utf-8")
    sections = _sections(text)
    assert set(sections) == {kind.slug for kind in ProblemKind}, "one section per ProblemKind"
    for kind in ProblemKind:
        body = sections[kind.slug]
        assert f"**Type:** `{PROBLEM_BASE}{kind.slug}`" in body, kind
        assert f"**Status:** {kind.status}\n" in body, kind
        assert f"**Title:** {kind.title}\n" in body, kind
        dead = "yes" if kind.dead_letter else "no"
        assert f"**Dead-lettered:** {dead}\n" in body, kind
        assert "**When.**" in body
        assert "**Producer.**" in body
        assert "**Operator.**" in body
        assert f"| [{kind.slug}](#{kind.slug}) | {kind.status} | {kind.title} |" in text, kind


def test_the_catalogue_explains_locations_and_instance() -> None:
    text = PROBLEMS.read_text(encoding="utf-8")
    for needle in (
        "## Error locations",
        "## instance",
        "`body.data.<member>`",
        "`body.<attribute>`",
        "`headers.ce_<attribute>`",
        "`headers.content-type`",
        "`body.<member>`",
        "urn:kafka:<topic>:<partition>:<offset>",
        "OCITAG_PROBLEM_BASE_URI",
    ):
        assert needle in text, needle


# ---- the AsyncAPI document


def _messages(doc: dict[str, Any], channel: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, ref in channel["messages"].items():
        name = ref["$ref"].removeprefix("#/components/messages/")
        out[key] = doc["components"]["messages"][name]
    return out


def test_asyncapi_channels_and_messages_cover_the_three_topics() -> None:
    doc = load_yaml(ASYNCAPI)
    assert doc["asyncapi"] == "3.0.0"
    channels = {c["address"]: _messages(doc, c) for c in doc["channels"].values()}
    assert {address: {m["name"] for m in msgs.values()} for address, msgs in channels.items()} == (
        CHANNELS
    )
    for address, messages in channels.items():
        for message in messages.values():
            assert message["examples"], message["name"]
            assert "key" in message["bindings"]["kafka"], message["name"]
        kafka = next(c for c in doc["channels"].values() if c["address"] == address)["bindings"]
        assert kafka["kafka"]["topic"] == address


def test_asyncapi_operations_receive_input_and_send_outcomes_and_dead_letters() -> None:
    doc = load_yaml(ASYNCAPI)
    actions = {
        doc["channels"][op["channel"]["$ref"].removeprefix("#/channels/")]["address"]: op["action"]
        for op in doc["operations"].values()
    }
    assert actions == {
        "ocitag.events": "receive",
        "ocitag.outcomes": "send",
        "ocitag.events.dlq": "send",
        "ocitag.state": "send",
    }


def test_asyncapi_payloads_are_the_schema_files() -> None:
    messages = load_yaml(ASYNCAPI)["components"]["messages"]
    payloads = {m["name"]: m["payload"].get("$ref") for m in messages.values()}
    assert payloads == {
        "ocitag.moved.v1.structured": "./tag-moved-event.schema.json",
        "ocitag.moved.v1.binary": "./tag-moved-data.schema.json",
        "ocitag.deleted.v1.structured": "./tag-deleted-event.schema.json",
        "ocitag.deleted.v1.binary": "./tag-deleted-data.schema.json",
        "ocitag.updated.v1": "./outcome-updated.schema.json",
        "ocitag.removed.v1": "./outcome-removed.schema.json",
        "ocitag.rejected.v1": "./outcome-rejected.schema.json",
        "ocitag.dead-letter": None,
        "ocitag.state.upsert": "./state-record.schema.json",
        "ocitag.state.tombstone": None,
    }


def _message_examples() -> list[tuple[str, str, dict[str, Any]]]:
    messages = load_yaml(ASYNCAPI)["components"]["messages"]
    return [
        (key, example["name"], example)
        for key, message in messages.items()
        for example in message["examples"]
    ]


@pytest.mark.parametrize(
    ("message", "example"),
    [(key, example) for key, _, example in _message_examples()],
    ids=[f"{key}-{name}" for key, name, _ in _message_examples()],
)
def test_asyncapi_examples_match_their_schemas(message: str, example: dict[str, Any]) -> None:
    pointer = f"/components/messages/{message}"
    assert errors_of(asyncapi_validator(pointer + "/payload"), example["payload"]) == []
    assert errors_of(asyncapi_validator(pointer + "/headers"), example["headers"]) == []


def test_asyncapi_examples_are_accepted_by_the_models() -> None:
    """The single source of truth agrees with its documentation."""
    examples = {key: ex for key, _, ex in _message_examples()}
    TagMovedEvent.model_validate(examples["tagMovedStructured"]["payload"])
    TagMovedData.model_validate(examples["tagMovedBinary"]["payload"])
    TagDeletedEvent.model_validate(examples["tagDeletedStructured"]["payload"])
    TagDeletedData.model_validate(examples["tagDeletedBinary"]["payload"])
    UpdatedOutcome.model_validate(examples["tagUpdated"]["payload"])
    RemovedOutcome.model_validate(examples["tagRemoved"]["payload"])
    StateRecord.model_validate(examples["stateUpsert"]["payload"])
    for _, name, example in _message_examples():
        if name == "not-found":
            RejectedOutcome.model_validate(example["payload"])
    RejectedOutcome.model_validate(examples["tagRejected"]["payload"])


def test_asyncapi_headers_schemas_reject_wrong_headers() -> None:
    binary = asyncapi_validator("/components/messages/tagMovedBinary/headers")
    good = {
        "ce_specversion": "1.0",
        "ce_id": "e",
        "ce_source": "s",
        "ce_type": "ocitag.moved.v1",
        "ce_time": "2026-11-28T15:00:00Z",
    }
    assert errors_of(binary, good) == []
    assert errors_of(binary, {**good, "ce_type": "other"})
    assert errors_of(binary, {k: v for k, v in good.items() if k != "ce_id"})
    dead = asyncapi_validator("/components/messages/deadLetter/headers")
    assert errors_of(dead, {"ocitag_dlq_topic": "t", "ocitag_dlq_offset": "1"})


def test_input_schema_states_the_digest_and_tag_patterns() -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / "tag-moved-data.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"repository": "nginx", "tag": "1.0", "artifact": "sha256:" + "a" * 64}
    assert not list(validator.iter_errors(good))
    for bad in (
        {"artifact": "sha256:xyz"},
        {"artifact": "A" * 64},
        {"tag": ".x"},
        {"previous_artifact": "x"},
    ):
        assert list(validator.iter_errors({**good, **bad})), bad
