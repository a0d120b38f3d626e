"""A fuzz run over random and mutated records: decoding always gives a decision and
never raises. 100,000 records by default (a few seconds); ``make fuzz`` runs more
(OCITAG_FUZZ_RECORDS, OCITAG_FUZZ_SEED)."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

from worker.decode import decode
from worker.events import Invalid, RawRecord, TagMoved, Undecodable

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
SEED_EVENT = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "https://registry.example.com/webhook",
    "type": "ocitag.moved.v1",
    "time": "2026-11-28T15:12:02.123+01:00",
    "subject": "docker.io/istio/pilot:1.3.0",
    "data": {
        "repository": "istio/pilot",
        "tag": "1.3.0",
        "artifact": "sha256:" + HEX,
        "actor": "alice",
        "previous_artifact": HEX,
        "expected_version": 3,
    },
}
INTERESTING = [
    b"\x00",
    b"\xff",
    b"\xc3",
    b'"',
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"NaN",
    b"9" * 30,
    b"\xf0\x9f\x92\xa9",
    b"%",
    b" ",
]
HEADER_NAMES = [
    "content-type",
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "ce_x",
]
STRUCTURED = ("content-type", b"application/cloudevents+json")


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 3:
            buf = buf[:pos]
        else:
            start = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[start : start + rng.randint(1, 16)]
    return bytes(buf)


def _record(rng: random.Random, seeds: list[bytes], n: int) -> RawRecord:
    kind = rng.randrange(10)
    headers: tuple[tuple[str, bytes], ...] = (STRUCTURED,)
    if kind == 0:
        value = rng.randbytes(rng.randint(0, 200))
        headers = tuple(
            (rng.choice(HEADER_NAMES), rng.randbytes(rng.randint(0, 12)))
            for _ in range(rng.randint(0, 4))
        )
    elif kind == 1:  # binary mode with mutated attributes
        data = json.dumps(SEED_EVENT["data"]).encode()
        headers = (
            *tuple(
                (
                    f"ce_{k}",
                    _mutate(rng, str(v).encode()) if rng.random() < 0.3 else str(v).encode(),
                )
                for k, v in SEED_EVENT.items()
                if k != "data"
            ),
            ("content-type", b"application/json"),
        )
        value = _mutate(rng, data) if rng.random() < 0.5 else data
    else:
        value = _mutate(rng, rng.choice(seeds))
    return RawRecord("fuzz", 0, n, 0, None, value, headers)


def test_fuzz_random_and_mutated_records_always_decide() -> None:
    count = int(os.environ.get("OCITAG_FUZZ_RECORDS", "100000"))
    rng = random.Random(int(os.environ.get("OCITAG_FUZZ_SEED", "20261128")))
    seeds = [json.dumps(SEED_EVENT).encode(), json.dumps(SEED_EVENT, indent=1).encode()]
    outcomes: Counter[str] = Counter()
    for n in range(count):
        decoded = decode(_record(rng, seeds, n), 65_536)
        assert isinstance(decoded, TagMoved | Invalid | Undecodable)
        if not isinstance(decoded, TagMoved):
            assert decoded.problem.detail and decoded.problem.status in (400, 422)
            assert "could not be decoded" not in decoded.problem.detail, (
                decoded
            )  # no stray exception
        outcomes[type(decoded).__name__] += 1
    assert sum(outcomes.values()) == count
    # the mutator reaches every branch: some survive, some break data, some the envelope
    assert min(outcomes[k] for k in ("TagMoved", "Invalid", "Undecodable")) > count // 100, outcomes
