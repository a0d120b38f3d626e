"""The registry kinds ingest serves: each one's mapper and how its sender proves itself
(docs/contract.md "Ingest", the authentication table)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from worker.ingest import (
    acr,
    artifactory,
    cloudevents,
    distribution,
    dockerhub,
    ecr,
    gar,
    github,
    harbor,
    quay,
    zot,
)
from worker.ingest.mapping import Mapped

Mapper = Callable[[bytes, Mapping[str, str]], list[Mapped]]


class Auth(Enum):
    """How a delivery proves it comes from the holder of the kind's secret."""

    #: ``Authorization`` header equal to the secret (e.g. ``Bearer s3cret``)
    HEADER = "header"
    #: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` (GitHub)
    HUB_SIGNATURE = "hub-signature-256"
    #: ``X-JFrog-Event-Auth: <hex HMAC-SHA256 of the raw body>`` (Artifactory)
    JFROG_SIGNATURE = "jfrog-event-auth"
    #: the secret as the last path segment: ``POST /webhooks/<kind>/<secret>``
    PATH = "path"

    @property
    def needs_body(self) -> bool:
        return self in (Auth.HUB_SIGNATURE, Auth.JFROG_SIGNATURE)


#: every kind of the contract and its scheme, whether or not this build maps it yet
AUTH: dict[str, Auth] = {
    "distribution": Auth.HEADER,
    "harbor": Auth.HEADER,
    "dockerhub": Auth.PATH,
    "github": Auth.HUB_SIGNATURE,
    "ecr": Auth.HEADER,
    "gar": Auth.PATH,
    "acr": Auth.HEADER,
    "quay": Auth.PATH,
    "artifactory": Auth.JFROG_SIGNATURE,
    "zot": Auth.HEADER,
    "cloudevents": Auth.HEADER,
}


#: kinds whose payloads carry no time: their events take the delivery's arrival, and a
#: retry of a body keeps its first arrival's (worker/ingest/arrivals.py)
ARRIVAL_TIMED = frozenset({"quay", "artifactory"})


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str
    auth: Auth
    map_delivery: Mapper
    arrival_timed: bool = False
    #: the mapper's repositories start with the registry host (not cloudevents')
    hosted: bool = True


def _spec(name: str, mapper: Mapper, *, hosted: bool = True) -> KindSpec:
    return KindSpec(name, AUTH[name], mapper, name in ARRIVAL_TIMED, hosted)


KINDS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in (
        _spec("distribution", distribution.map_delivery),
        _spec("harbor", harbor.map_delivery),
        _spec("dockerhub", dockerhub.map_delivery),
        _spec("github", github.map_delivery),
        _spec("ecr", ecr.map_delivery),
        _spec("gar", gar.map_delivery),
        _spec("acr", acr.map_delivery),
        _spec("quay", quay.map_delivery),
        _spec("artifactory", artifactory.map_delivery),
        _spec("zot", zot.map_delivery),
        _spec("cloudevents", cloudevents.map_delivery, hosted=False),
    )
}
