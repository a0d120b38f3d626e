"""The API's OpenAPI document: the seed's operation and schemas kept, the rest valid."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from tests.helpers.contract import SEED, load_yaml
from worker.api import requests
from worker.api.openapi import OCITAG_ID_PATTERN, document, extend, seed
from worker.api.problems import ApiProblem


def is_extension_of(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Where ``ours`` changes a value of ``theirs`` (objects may gain members)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return [
            problem
            for name, value in theirs.items()
            for problem in (
                [f"{where}/{name}: missing"]
                if name not in ours
                else is_extension_of(ours[name], value, f"{where}/{name}")
            )
        ]
    return [] if ours == theirs else [f"{where}: {ours!r} != {theirs!r}"]


def test_the_packaged_seed_is_the_vendored_seed() -> None:
    vendored = load_yaml(SEED)
    assert seed()["operation"] == vendored["paths"]["/ocitags/{tag}/"]["put"]
    assert seed()["schemas"] == vendored["components"]["schemas"]


def test_oci_tag_update_ocitag_and_error_model_equal_the_seeds() -> None:
    vendored = load_yaml(SEED)
    ours = document()
    put = ours["paths"]["/ocitags/{tag}/"]["put"]
    assert put["operationId"] == "oci-tag-update"
    assert is_extension_of(put, vendored["paths"]["/ocitags/{tag}/"]["put"]) == []
    for name in ("OCITag", "ErrorModel", "ErrorDetail"):
        assert ours["components"]["schemas"][name] == vendored["components"]["schemas"][name]


def test_every_operation_documents_its_statuses_and_headers() -> None:
    paths = document()["paths"]
    put = paths["/ocitags/{tag}/"]["put"]["responses"]
    assert {"200", "202", "400", "401", "409", "412", "413", "415", "422", "503", "default"} <= set(
        put
    )
    assert put["200"]["headers"]["ETag"]
    delete = paths["/ocitags/{tag}/"]["delete"]["responses"]
    assert {"200", "202", "401", "404", "409", "412", "422", "503"} <= set(delete)
    get = paths["/ocitags/{tag}/"]["get"]["responses"]
    assert {"200", "304", "401", "404", "422", "503"} <= set(get)
    assert {"200", "401", "422", "503"} <= set(paths["/ocitags/"]["get"]["responses"])
    ids = [
        op["operationId"] for item in paths.values() for k, op in item.items() if k != "parameters"
    ]
    assert len(ids) == len(set(ids))


def test_every_reference_resolves_and_every_schema_is_valid() -> None:
    doc = document()

    def walk(node: Any) -> list[str]:
        if isinstance(node, dict):
            refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return refs + [r for v in node.values() for r in walk(v)]
        if isinstance(node, list):
            return [r for v in node for r in walk(v)]
        return []

    for ref in walk(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(document())


def test_extend_refuses_to_change_a_seed_value() -> None:
    assert extend({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ValueError, match="/a/b"):
        extend({"a": {"b": 1}}, {"a": {"b": 2}})


@pytest.mark.parametrize(
    "ocitag_id",
    [
        "docker.io/istio/pilot:1.3.0",
        "nginx:latest",
        "localhost:5000/team/app:v2",
        "public.ecr.aws/bottlerocket/bottlerocket-operator:0.1",
        "[::1]:5000/a:b",
        "Registry.Example.com/a__b/c--d:_x",
    ],
)
def test_the_tag_pattern_takes_what_the_api_takes(ocitag_id: str) -> None:
    assert re.fullmatch(OCITAG_ID_PATTERN.strip("^$"), ocitag_id)
    assert requests.ocitag_id(ocitag_id)


@given(st.text(max_size=60))
def test_what_the_tag_pattern_refuses_the_api_refuses(raw: str) -> None:
    if re.fullmatch(OCITAG_ID_PATTERN.strip("^$"), raw) is None:
        with pytest.raises(ApiProblem):
            requests.ocitag_id(raw)
