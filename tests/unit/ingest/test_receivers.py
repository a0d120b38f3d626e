"""Named receivers (OCITAG_INGEST_RECEIVERS): the document's rules, each broken one named
by its JSON place; host patterns (exact, or '*' for one DNS label); over HTTP, a delivery
naming a host outside its receiver's list is refused whole (403 host-not-allowed, every
entry named, nothing sent); and an unknown name costs and answers what a wrong secret
does (the same number of comparisons, over inputs of the same length)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.helpers.cli import run_cli
from tests.helpers.ingest import load_delivery
from tests.helpers.registry import free_port
from worker.documents import DocumentError
from worker.errors import SettingsError
from worker.ingest.app import enabled_kinds
from worker.ingest.auth import SLOTS
from worker.ingest.gate import Enabled
from worker.ingest.kinds import KINDS
from worker.ingest.receivers import hosts_of, parse_receivers
from worker.ingest.server import IngestServer, Limits
from worker.settings import load_settings

PROD = "Bearer prod-secret-0123456789"
DEV = "Bearer dev-secret-0123456789"
BATCH = load_delivery("distribution", "batch-push")[0]  # tags on 127.0.0.1:45285


def _no_files(path: str) -> str:
    raise FileNotFoundError(2, "No such file or directory")


def receivers(document: Any, read: Callable[[str], str] = _no_files) -> Any:
    return parse_receivers(json.dumps(document), read)


GOOD = {"name": "prod", "kind": "distribution", "secret": PROD, "hosts": ["r.example.com"]}


def test_a_document_of_receivers() -> None:
    (prod, dev) = receivers(
        [
            GOOD,
            {"name": "dev-1", "kind": "quay", "secret_file": "/s", "hosts": ["*.dev.example.com"]},
        ],
        lambda path: "old-secret\nnew-secret\n",
    )
    assert (prod.name, prod.kind, prod.secrets) == ("prod", "distribution", (PROD.encode(),))
    assert dev.secrets == (b"old-secret", b"new-secret")
    assert dev.hosts.allows("a.dev.example.com") and not dev.hosts.allows("r.example.com")


@pytest.mark.parametrize(
    ("document", "where", "rule"),
    [
        ({}, "$", "a list of receivers"),
        ([{**GOOD, "name": "Prod"}], "$[0].name", "[a-z0-9][a-z0-9-]{0,62}"),
        ([{**GOOD, "name": "a" * 64}], "$[0].name", "[a-z0-9][a-z0-9-]{0,62}"),
        ([GOOD, GOOD], "$[1].name", '"prod" names another receiver already'),
        ([{**GOOD, "kind": "dockerhubb"}], "$[0].kind", 'unknown kind "dockerhubb"'),
        ([{**GOOD, "extra": 1}], "$[0].extra", "unknown member"),
        ([{k: v for k, v in GOOD.items() if k != "hosts"}], "$[0].hosts", "is required"),
        ([{**GOOD, "hosts": []}], "$[0].hosts", "non-empty list"),
        ([{**GOOD, "hosts": ["ok.example.com", "bad host"]}], "$[0].hosts[1]", "host"),
        ([{**GOOD, "hosts": ["*.*x.example.com"]}], "$[0].hosts[0]", "one whole label"),
        ([{**GOOD, "secret": ""}], "$[0].secret", "holds no secret"),
        ([{**GOOD, "secret": ["a", 1]}], "$[0].secret[1]", "a string"),
        ([{**GOOD, "secret": ["a"] * (SLOTS + 1)}], "$[0].secret", f"more than {SLOTS}"),
        ([{**GOOD, "secret_file": "/s"}], "$[0]", 'exactly one of "secret" and "secret_file"'),
        (
            [{"name": "p", "kind": "zot", "secret_file": "/nope", "hosts": ["h.example.com"]}],
            "$[0].secret_file",
            "cannot read /nope",
        ),
    ],
)
def test_each_broken_rule_is_named_by_its_place(document: Any, where: str, rule: str) -> None:
    with pytest.raises(DocumentError) as caught:
        receivers(document)
    assert caught.value.where == where
    assert rule in str(caught.value)
    assert PROD not in str(caught.value)  # never a secret


@pytest.mark.parametrize(
    ("patterns", "host", "allowed"),
    [
        (["registry.prod.example.com"], "registry.prod.example.com", True),
        (["Registry.Prod.Example.com"], "registry.prod.example.com", True),
        (["registry.prod.example.com"], "registry.prod.example.com:5000", False),
        (["registry.prod.example.com:5000"], "registry.prod.example.com", False),
        (["index.docker.io"], "docker.io", True),
        (["*.dev.example.com:5000"], "a1.dev.example.com:5000", True),
        (["*.dev.example.com:5000"], "a.b.dev.example.com:5000", False),
        (["*.dev.example.com:5000"], "a.dev.example.com", False),
        (["*.dev.example.com"], "dev.example.com", False),
        (["*.dev.example.com"], "adev.example.com", False),
        (["r.example.com"], "rxexample.com", False),  # '.' is itself
        (["a.example.com", "b.example.com"], "b.example.com", True),
    ],
)
def test_host_patterns(patterns: list[str], host: str, allowed: bool) -> None:
    assert hosts_of(patterns).allows(host) is allowed


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(LABEL, LABEL)
def test_a_star_is_one_label_never_two(first: str, second: str) -> None:
    hosts = hosts_of(["*.dev.example.com"])
    assert hosts.allows(f"{first}.dev.example.com")
    assert not hosts.allows(f"{first}.{second}.dev.example.com")


def _limits() -> Limits:
    return Limits("ocitag.events", 8192, 5.0, 0.3, 7, "https://ocitag-worker.dev/problems/")


class Sink:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_all(self, messages: Any) -> None:
        self.sent.extend(messages)


class Resolver:
    async def resolve_digest(self, repository: str, tag: str) -> str | None:
        return None


class Counting:
    """The comparator, counted: how many comparisons and of which lengths."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((len(a), len(b)))
        return a == b


class Setup:
    def __init__(self, client: TestClient[Any, Any], sink: Sink, compare: Counting) -> None:
        self.client, self.sink, self.compare = client, sink, compare

    async def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, list[tuple[int, int]]]:
        self.compare.calls.clear()
        response = await self.client.post(path, data=body, headers=headers)
        return response.status, await response.read(), list(self.compare.calls)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    prod, dev, quay, gh = receivers(
        [
            {**GOOD, "hosts": ["127.0.0.1:45285"]},
            {"name": "dev", "kind": "distribution", "secret": DEV, "hosts": ["*.dev.example"]},
            {"name": "q", "kind": "quay", "secret": "path-secret-0123", "hosts": ["quay.io"]},
            {"name": "gh", "kind": "github", "secret": "gh-secret-0123", "hosts": ["ghcr.io"]},
        ]
    )
    served = {
        r.name: Enabled(KINDS[r.kind], r.secrets, hosts=r.hosts) for r in (prod, dev, quay, gh)
    }
    sink, compare = Sink(), Counting()
    server = IngestServer(served, sink, Resolver(), _limits(), compare=compare)
    async with TestClient(TestServer(server.app())) as client:
        yield Setup(client, sink, compare)


async def test_the_prod_receiver_publishes_its_own_hosts(setup: Setup) -> None:
    status, body, _ = await setup.post("/webhooks/prod", BATCH, {"Authorization": PROD})
    assert status == 200, body
    assert len(setup.sink.sent) == 2


async def test_a_host_outside_the_list_refuses_the_whole_delivery(setup: Setup) -> None:
    status, body, _ = await setup.post("/webhooks/dev", BATCH, {"Authorization": DEV})
    problem = json.loads(body)
    assert status == 403
    assert problem["type"] == "https://ocitag-worker.dev/problems/host-not-allowed"
    events = json.loads(BATCH)["events"]
    tagged = [i for i, e in enumerate(events) if e["action"] == "push" and e["target"].get("tag")]
    assert [e["location"] for e in problem["errors"]] == [
        f"entries[{i}].repository" for i in tagged
    ]
    assert {e["value"] for e in problem["errors"]} == {"127.0.0.1:45285/team/app"}
    assert setup.sink.sent == []


@pytest.mark.parametrize(
    ("unknown", "wrong", "other"),
    [
        (  # header kinds: an unknown name, a wrong secret, another receiver's right secret
            ("/webhooks/nope", {"Authorization": PROD}),
            ("/webhooks/prod", {"Authorization": "Bearer wrong"}),
            ("/webhooks/prod", {"Authorization": DEV}),
        ),
        (  # path kinds
            ("/webhooks/nope/path-secret-0123", {}),
            ("/webhooks/q/wrong", {}),
            ("/webhooks/q/" + DEV.replace(" ", "%20"), {}),
        ),
        (  # signature kinds
            ("/webhooks/nope", {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
            ("/webhooks/gh", {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
            ("/webhooks/gh", {"X-Hub-Signature-256": "sha256=" + "1" * 64}),
        ),
    ],
)
async def test_an_unknown_name_and_a_wrong_secret_answer_and_cost_alike(
    setup: Setup, unknown: Any, wrong: Any, other: Any
) -> None:
    answers = [await setup.post(path, BATCH, headers) for path, headers in (unknown, wrong, other)]
    assert {(status, body) for status, body, _ in answers} == {
        (401, b'{"title":"Unauthorized","status":401}')
    }
    assert [calls for _, _, calls in answers] == [[(32, 32)] * SLOTS] * 3
    assert setup.sink.sent == []


def test_receivers_and_kind_secrets_are_served_together(tmp_path: Any) -> None:
    secret = tmp_path / "dev-secret"
    secret.write_text(DEV + "\n")
    document = [
        {**GOOD, "hosts": ["r.example.com"]},
        {"name": "dev", "kind": "zot", "secret_file": str(secret), "hosts": ["*.dev.example"]},
    ]
    settings = load_settings(
        environ={
            "OCITAG_INGEST_RECEIVERS": json.dumps(document),
            "OCITAG_INGEST_GITHUB_SECRET": "gh",
        }
    )
    with capture_logs() as logs:
        served = enabled_kinds(settings)
    assert {name: e.spec.name for name, e in served.items()} == {
        "github": "github",
        "prod": "distribution",
        "dev": "zot",
    }
    assert served["dev"].secrets == (DEV.encode(),)
    assert served["github"].hosts.unbound and not served["prod"].hosts.unbound
    assert [line["receiver"] for line in logs if line["event"] == "ingest_unbound_receiver"] == [
        "github"
    ]


def test_a_receiver_named_like_a_served_kind_stops_start_up() -> None:
    settings = load_settings(
        environ={
            "OCITAG_INGEST_RECEIVERS": json.dumps([{**GOOD, "name": "github"}]),
            "OCITAG_INGEST_GITHUB_SECRET": "gh",
        }
    )
    with pytest.raises(SettingsError, match="receiver github is also served by"):
        enabled_kinds(settings)


def test_the_cli_exits_2_naming_the_setting_and_the_place() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCITAG_INGEST_")}
    env["OCITAG_INGEST_RECEIVERS"] = json.dumps([{**GOOD, "hosts": ["bad host"]}])
    done = run_cli(["ingest", "--ingest-port", str(free_port())], env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "invalid setting OCITAG_INGEST_RECEIVERS: $[0].hosts[0]:" in done.stderr
    assert PROD not in done.stderr + done.stdout  # never the secret
