"""Single-valued header fields (worker/headers.py): sent twice, or comma-joined, is
repeated; once, or not at all, is not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.headers import SINGLE_VALUED, repeated, repeated_item, sent_twice


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], False),
        (["Bearer abc"], False),
        ([""], False),
        (["Bearer abc", "Bearer abc"], True),
        (["Bearer abc", ""], True),
        (["Bearer abc, Bearer def"], True),
        (["sha256=00,"], True),
    ],
)
def test_repeated(values: list[str], expected: bool) -> None:
    assert repeated(values) is expected


_VALUE = st.text(st.characters(codec="ascii", exclude_characters=","), max_size=40)


@given(st.lists(_VALUE, max_size=4))
def test_without_commas_only_the_count_decides(values: list[str]) -> None:
    assert repeated(values) is (len(values) > 1)


@given(_VALUE, _VALUE)
def test_a_joined_pair_is_as_repeated_as_the_pair(first: str, second: str) -> None:
    assert repeated([f"{first},{second}"]) is repeated([first, second]) is True


def test_the_item_names_the_header_in_lower_case_and_never_its_value() -> None:
    item = repeated_item("Authorization")
    assert (item.location, item.message, item.value) == (
        "header.authorization",
        SINGLE_VALUED,
        None,
    )


@given(st.lists(st.text(st.characters(codec="ascii"), max_size=40), max_size=4))
def test_ingest_counts_fields_only(values: list[str]) -> None:
    """Ingest's rule: a comma in one value is not a second field."""
    assert sent_twice(values) is (len(values) > 1)
