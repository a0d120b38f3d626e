"""The one problem catalogue: its page (docs/problems.md) lists exactly its kinds, and its
renderer gives the seed's ErrorModel for every sender."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import outcomes_reference
from worker.problems import (
    ErrorItem,
    Problem,
    ProblemKind,
    Sender,
    about_blank,
    breaks_rules,
    error_model,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "problems.md"
_ROW = re.compile(r"^\| \[([a-z-]+)\]\(#([a-z-]+)\) \| (\d+) \| ([^|]+) \| ([^|]+) \|$")


def _senders(kind: ProblemKind) -> str:
    return ", ".join(sender.value for sender in Sender if sender in kind.senders)


def _catalogue_rows() -> list[tuple[str, str, str, str, str]]:
    return [
        (kind.slug, kind.slug, str(kind.status), kind.title, _senders(kind)) for kind in ProblemKind
    ]


def _page_rows(text: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            slug, anchor, status, title, senders = match.groups()
            rows.append((slug, anchor, status, title.strip(), senders.strip()))
    return rows


def test_the_page_table_is_the_catalogue_in_order_with_no_extra_row() -> None:
    assert _page_rows(PAGE.read_text(encoding="utf-8")) == _catalogue_rows()


def test_every_section_names_its_senders() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for kind in ProblemKind:
        section = text.split(f"\n### {kind.slug}\n", 1)[1].split("\n## ", 1)[0]
        section = section.split("\n### ", 1)[0]
        assert f"- **Sent by:** {_senders(kind)}\n" in section, kind


def test_one_type_per_meaning_and_no_look_alike_slugs() -> None:
    slugs = [kind.slug for kind in ProblemKind]
    assert len(set(slugs)) == len(slugs)
    # "internal" beside "internal-error" read as one type with two spellings
    look_alikes = [(a, b) for a in slugs for b in slugs if b.startswith(a + "-")]
    assert look_alikes == []


def test_every_kind_has_a_sender_and_only_the_workers_400s_are_dead_lettered() -> None:
    for kind in ProblemKind:
        assert kind.senders
        assert kind.dead_letter == (Sender.WORKER in kind.senders and kind.status == 400)


# ---- the renderer


def test_a_published_problem_renders_byte_for_byte() -> None:
    problem = Problem(
        ProblemKind.INVALID_DATA,
        "the tag-moved data breaks 1 rule: body.data.tag is required",
        (ErrorItem("body.data.tag", "is required"),),
    )
    body = error_model(problem, "https://p.example/", "urn:kafka:t:0:7")
    assert orjson.dumps(body) == (
        b'{"type":"https://p.example/invalid-data","title":"Invalid tag event data",'
        b'"status":422,"detail":"the tag-moved data breaks 1 rule: body.data.tag is required",'
        b'"instance":"urn:kafka:t:0:7","errors":[{"location":"body.data.tag",'
        b'"message":"is required","value":null}]}'
    )


def test_a_terse_kind_says_nothing_beyond_its_status() -> None:
    body = error_model(Problem(ProblemKind.UNAUTHORIZED, "secret"), "urn:p:", "urn:x")
    assert body == {"type": "urn:p:unauthorized", "title": "Unauthorized", "status": 401}
    assert [kind for kind in ProblemKind if kind.terse] == [ProblemKind.UNAUTHORIZED]


@pytest.mark.parametrize(
    ("status", "title", "expected"),
    [
        (401, None, {"title": "Unauthorized", "status": 401}),
        (404, None, {"title": "Not Found", "status": 404}),
        (405, None, {"title": "Method Not Allowed", "status": 405}),
        (408, None, {"title": "Request Timeout", "status": 408}),
        (500, None, {"title": "Internal Server Error", "status": 500}),
        (400, "Origin is required", {"title": "Origin is required", "status": 400}),
    ],
)
def test_an_answer_without_a_type_is_its_status_phrase(
    status: int, title: str | None, expected: dict[str, object]
) -> None:
    assert about_blank(status, title) == expected


_A = ErrorItem("body.id", "is required")
_B = ErrorItem("body.time", "must be RFC 3339", "noon")


@pytest.mark.parametrize(
    ("items", "numbered", "expected"),
    [
        ((_A,), False, "the x breaks a rule: body.id is required"),
        ((_A,), True, "the x breaks 1 rule: body.id is required"),
        ((_A, _B), False, "the x breaks 2 rules: body.id is required; body.time must be RFC 3339"),
        ((_A, _B), True, "the x breaks 2 rules: body.id is required; body.time must be RFC 3339"),
    ],
)
def test_the_broken_rules_sentence(
    items: tuple[ErrorItem, ...], numbered: bool, expected: str
) -> None:
    assert breaks_rules("x", items, numbered=numbered) == expected


_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=()), max_size=250)  # lone surrogates too
    | st.builds(
        str.__add__, st.text(max_size=3), st.integers(197, 202).map("a".__mul__)
    )  # at and past the cut
    | st.binary(max_size=250)
    | st.lists(st.text(max_size=30), max_size=12)
    | st.dictionaries(st.text(max_size=10), st.integers(), max_size=12)
)


@given(
    st.sampled_from(list(ProblemKind)),
    st.text(max_size=40),
    st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20), _VALUES), max_size=3),
)
def test_the_renderer_gives_what_it_gave_member_by_member(
    kind: ProblemKind, detail: str, items: list[tuple[str, str, object]]
) -> None:
    """The one-literal renderer and the ASCII fast path of ``shorten`` (a late event's
    409 is a third of a drain's outcomes) change no document."""
    problem = Problem(kind, detail, tuple(ErrorItem(*item) for item in items))
    assert error_model(problem, "urn:p:", "urn:x") == outcomes_reference.error_model(
        problem, "urn:p:", "urn:x"
    )


@pytest.mark.parametrize(
    "value",
    [
        "a" * 199, "a" * 200, "a" * 201, "é" * 200, "é" * 201, "x\ud800y", "\udfff" * 70,
        "2026-01-02T03:04:05.678901Z", "", b"\xff\xfe", b"a" * 201, 2**70, 1.5, True, None,
        {"k": "\ud800"}, ["a" * 300],
    ],
)  # fmt: skip
def test_each_edge_value_is_rendered_as_member_by_member(value: object) -> None:
    problem = Problem(ProblemKind.INVALID_DATA, "d", (ErrorItem("body.x", "m", value),))
    assert error_model(problem, "urn:p:", "urn:x") == outcomes_reference.error_model(
        problem, "urn:p:", "urn:x"
    )
