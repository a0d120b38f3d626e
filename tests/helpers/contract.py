"""The contract documents as test fixtures: the schema files (by their $id), the vendored
seed's OpenAPI document and the AsyncAPI document in one offline registry, and
validators for any schema in them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from worker.models import SCHEMA_BASE_URI
from worker.schemas import DRAFT, generate

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
SEED = SCHEMAS / "seed" / "ocitag-api.yaml"
ASYNCAPI = SCHEMAS / "asyncapi.yaml"
#: where the seed and the AsyncAPI document live for $ref resolution
SEED_URI = "urn:ocitag-worker:seed:ocitag-api"
ASYNCAPI_URI = SCHEMA_BASE_URI + "asyncapi.yaml"


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def schema_file(name: str) -> dict[str, Any]:
    loaded = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), name
    return loaded


def seed_components() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = load_yaml(SEED)["components"]["schemas"]
    return schemas


@cache
def registry() -> Registry[Any]:
    """The schema files (by their $id), the seed's OpenAPI document and the AsyncAPI
    document, so that every $ref of any of them resolves offline. The AsyncAPI document
    sits beside the schema files, so its relative file references land on their $ids."""
    resources = [
        (schema["$id"], DRAFT202012.create_resource(schema))
        for schema in (schema_file(name) for name in generate())
    ]
    resources.append((SEED_URI, DRAFT202012.create_resource(load_yaml(SEED))))
    resources.append((ASYNCAPI_URI, DRAFT202012.create_resource(load_yaml(ASYNCAPI))))
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry.crawl()


@cache
def validator(ref: str) -> Draft202012Validator:
    """A validator (formats checked) for the schema at an absolute URI, e.g.
    ``SCHEMA_BASE_URI + "ocitag.schema.json"`` or ``SEED_URI + "#/components/schemas/OCITag"``."""
    return Draft202012Validator(
        {"$schema": DRAFT, "$ref": ref},
        registry=registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def schema_validator(name: str) -> Draft202012Validator:
    return validator(SCHEMA_BASE_URI + name)


def seed_validator(component: str) -> Draft202012Validator:
    return validator(f"{SEED_URI}#/components/schemas/{component}")


def asyncapi_validator(pointer: str) -> Draft202012Validator:
    """For a schema inside the AsyncAPI document, e.g. ``/components/messages/x/payload``."""
    return validator(f"{ASYNCAPI_URI}#{pointer}")


def errors_of(validator: Draft202012Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


#: pydantic's own phrasing, which must not reach a problem detail (the project words its
#: rules itself: worker.models.rule_message)
PYDANTIC_PHRASES = ("Input should", "String should", "should be a valid", "Value error")


def pydantic_phrases(text: str) -> list[str]:
    """The pydantic phrases in ``text`` (none, in a problem the project worded)."""
    return [phrase for phrase in PYDANTIC_PHRASES if phrase in text]
