"""worker/frozen.py: a ``fast_init`` class builds the same object as the dataclass's own
``__init__`` would (same fields, defaults, order, errors), and stays frozen."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.decision import Applied, Rejected, TagRecord
from worker.events import RawRecord, TagDeleted, TagMoved
from worker.frozen import fast_init
from worker.history import Entry
from worker.outcomes import Outcome
from worker.plan import Item, ProcessedRow, Superseded
from worker.problems import ErrorItem, Problem
from worker.state import StateRecord


@dataclasses.dataclass(frozen=True, slots=True)
class _Base:
    a: int
    b: str = "b"


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Derived(_Base):
    b: str = "redeclared"
    c: int = 3


@dataclasses.dataclass(frozen=True)
class _Unslotted:
    a: int = 0


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class _DerivedFromUnslotted(_Unslotted):
    c: int = 3


DECORATED = (
    RawRecord, TagMoved, TagDeleted, Item, ProcessedRow, Superseded, TagRecord, Applied,
    Rejected, Outcome, StateRecord, Entry, Problem, ErrorItem,
    # inherited fields (before, one of a slotted base was a bare KeyError at decoration)
    _Derived, _DerivedFromUnslotted,
)  # fmt: skip


def _reference(cls: type[Any]) -> type[Any]:
    """The same fields through ``dataclasses``' own ``__init__``."""
    return dataclasses.make_dataclass(
        f"Reference{cls.__name__}",
        [(f.name, Any, dataclasses.field(default=f.default)) for f in dataclasses.fields(cls)],
        frozen=True,
        slots=True,
    )


@settings(max_examples=25, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_a_fast_init_class_is_built_as_dataclasses_builds_it(
    cls: type[Any], data: st.DataObject
) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    given_ = data.draw(st.integers(len(required), len(fields)))
    values = [data.draw(st.integers() | st.text(max_size=3) | st.none()) for _ in fields]
    by_keyword = data.draw(st.booleans())
    args: list[Any] = [] if by_keyword else values[:given_]
    kwargs = (
        {f.name: v for f, v in zip(fields[:given_], values, strict=False)} if by_keyword else {}
    )
    built, reference = cls(*args, **kwargs), _reference(cls)(*args, **kwargs)
    assert dataclasses.astuple(built) == dataclasses.astuple(reference)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, fields[0].name, 1)
    assert built == cls(*args, **kwargs)
    assert hash(built) == hash(cls(*args, **kwargs))


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_a_fast_init_class_refuses_what_dataclasses_refuses(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    with pytest.raises(TypeError):
        cls(*range(len(fields) + 1))
    with pytest.raises(TypeError):
        cls(**{f.name: 0 for f in fields}, unknown=0)
    if any(f.default is dataclasses.MISSING for f in fields):
        with pytest.raises(TypeError):
            cls()


def test_fast_init_takes_only_the_simple_frozen_slotted_case() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    for cls in (NoSlots, NotFrozen, Factory, PostInit, KeywordOnly):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)


def test_a_field_whose_slot_a_class_attribute_hides_is_refused_naming_it() -> None:
    """The dataclass's own __init__ fails on such a class at each call ("attribute 'a'
    is read-only"); fast_init says why when the class is decorated."""

    class Hiding:
        __slots__ = ()
        a = 1

    with pytest.raises(TypeError, match=r"Refused\.a: .*its slot, .*class attribute hides it"):

        @fast_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class Refused(Hiding, _Base):
            pass
