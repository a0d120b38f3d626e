"""worker/oci.py against the real CNCF Distribution registry v3 with htpasswd auth,
images pushed, re-tagged and deleted by the real crane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.images import Crane
from tests.helpers.registry import Registry
from worker.oci import RegistryAuthError, RegistryClient, RepositoryNotFoundError
from worker.oci_config import parse_docker_config, parse_endpoints
from worker.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(registry_tools: Path) -> Iterator[Registry]:
    with Registry(users={"alice": "pa:ss,word"}) as registry:
        yield registry


@pytest.fixture
def crane(registry: Registry) -> Crane:
    return Crane(registry, "alice", "pa:ss,word")


def _client(
    registry: Registry, password: str = "pa%3Ass%2Cword", **options: object
) -> RegistryClient:
    endpoints = parse_endpoints(f"{registry.host}=http://alice:{password}@{registry.host}")
    return RegistryClient(endpoints, **options)  # type: ignore[arg-type]


async def test_resolves_manifests_and_indexes_lists_and_pages(
    registry: Registry, crane: Crane
) -> None:
    one = crane.push("team/app", "v1", "one")
    two = crane.push("team/app", "v2", "two")
    crane.tag("team/app", "v1", "latest")
    index = crane.index("team/app", "multi", ("team/app", "v1"), ("team/app", "v2"))
    crane.push("team/other", "x", "x")
    crane.push("solo", "1", "solo")
    assert len({one, two, index}) == 3

    async with _client(registry, page_size=2) as client:
        repository = f"{registry.host}/team/app"
        assert await client.resolve_digest(repository, "v1") == one
        assert await client.resolve_digest(repository, "latest") == one
        assert await client.resolve_digest(repository, "v2") == two
        assert await client.resolve_digest(repository, "multi") == index
        assert await client.resolve_digest(repository, "absent") is None
        assert sorted(await client.list_tags(repository)) == ["latest", "multi", "v1", "v2"]
        assert sorted(await client.catalog(registry.host)) == [
            f"{registry.host}/solo",
            f"{registry.host}/team/app",
            f"{registry.host}/team/other",
        ]
        with pytest.raises(RepositoryNotFoundError):
            await client.list_tags(f"{registry.host}/never/pushed")

        crane.delete_tag("team/app", "latest")
        crane.push("team/app", "v1", "moved")
        assert await client.resolve_digest(repository, "latest") is None
        assert await client.resolve_digest(repository, "v1") not in {None, one}


async def test_wrong_or_missing_credentials(registry: Registry, crane: Crane) -> None:
    crane.push("team/app", "v1")
    async with _client(registry, password="wrong") as client:
        with pytest.raises(RegistryAuthError) as caught:
            await client.list_tags(f"{registry.host}/team/app")
        assert "wrong" not in str(caught.value)
    async with RegistryClient(parse_endpoints(f"{registry.host}=http://{registry.host}")) as anon:
        with pytest.raises(RegistryAuthError):
            await anon.resolve_digest(f"{registry.host}/team/app", "v1")


async def test_credentials_from_docker_config_via_settings(
    registry: Registry, crane: Crane
) -> None:
    digest = crane.push("team/app", "v1")
    # crane's own login wrote this config.json: the same file docker login would
    auths = parse_docker_config(crane.docker_config.read_text())
    assert registry.host in auths
    settings = load_settings(
        environ={
            "OCITAG_REGISTRY_ENDPOINTS": f"{registry.host}=http://{registry.host}",
            "OCITAG_REGISTRY_DOCKER_CONFIG": str(crane.docker_config),
        }
    )
    async with RegistryClient.from_settings(settings) as client:
        assert await client.resolve_digest(f"{registry.host}/team/app", "v1") == digest
