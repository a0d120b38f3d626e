"""What the api's doors cost per request, measured apart (``make bench-api`` prints it
beside the measured CPU of one PUT): the grant check (``Grants.allows`` on a document of
``CALLERS`` callers with several patterns each, the bench caller's own among them) and
the rate limiter's bucket. Pure CPU: ``time.process_time`` over ``ROUNDS`` calls, the
best of three, so a busy machine shows as little as it can in the figure."""

from __future__ import annotations

import json
import time
from typing import Any

from worker.api.grants import parse_grants
from worker.api.ratelimit import RateLimiter, parse_rate_limit

CALLER = "bench"
CALLERS = 20
ROUNDS = 200_000


def grants_document() -> str:
    """The bench caller may write its repository's tags; nineteen other callers hold
    three grants each (so the caller's lookup is among many), and the bench caller has
    patterns that do not match before the one that does."""
    document: dict[str, Any] = {
        f"team-{n}": [
            {"actions": ["read", "write"], "tags": [f"registry.example.com/team-{n}/**"]},
            {"actions": ["delete"], "tags": [f"registry.example.com/team-{n}/**:tmp-*"]},
            {"actions": ["read"], "tags": ["**"]},
        ]
        for n in range(CALLERS - 1)
    }
    document[CALLER] = [
        {"actions": ["write"], "tags": ["registry.example.com/**:v*", "other.example/app:*"]},
        {"actions": ["read", "write", "delete"], "tags": ["bench.example.com/team/**"]},
    ]
    return json.dumps(document)


def _best(work: Any, rounds: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        work(rounds)
        best = min(best, (time.process_time() - started) / rounds)
    return best


def check_seconds(rounds: int = ROUNDS) -> dict[str, float]:
    """CPU seconds of one grant check and one rate-limit take, each alone."""
    grants = parse_grants(grants_document())
    tags = [f"bench.example.com/team/app:t{n}" for n in range(1000)]
    limiter = RateLimiter(parse_rate_limit("1000000000/1"), time.monotonic)

    def allows(n: int) -> None:
        for i in range(n):
            if not grants.allows(CALLER, "write", tags[i % 1000]):
                raise AssertionError("the bench caller must be allowed")

    def takes(n: int) -> None:
        for _ in range(n):
            limiter.wait(CALLER)

    return {"grant_check_s": _best(allows, rounds), "rate_limit_s": _best(takes, rounds)}
