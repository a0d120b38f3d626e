"""A cheaper ``__init__`` for the frozen, slotted dataclasses made once per event.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` refuses), a global lookup and a generic
attribute call per field: in a drain the worker builds about ten such objects per event
(the record, the event, the item, tag records, the decision, the processed row, the
outcome, the state record), and their ``__init__`` were 8-9 % of the worker's CPU
(py-spy, docs/scaling.md). ``fast_init`` replaces that ``__init__`` by one that sets
each field through its slot's descriptor directly, with the same parameters, defaults
and order: about 0.6x the cost, and the object is the same (still frozen, equal and
hashed as before; ``tests/unit/test_frozen.py`` holds each decorated class to what
``dataclasses`` builds). No maintained library does this; ``attrs`` would, at the price
of rewriting every record class.

Only for the simple case, checked when the class is decorated: every field in
``__init__``, no ``default_factory``, no keyword-only field, no ``__post_init__``, and
every field in a slot. A field inherited from a base dataclass is set through the slot
that holds it (the base's, or the class's own when the base has none), found when the
class is decorated: no work per call.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Decorate a ``@dataclass(frozen=True, slots=True)`` class (put it above that)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init needs @dataclass(frozen=True, slots=True)")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: fast_init does not run __post_init__")
    namespace: dict[str, Any] = {}
    arguments, body = [], []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: fast_init takes plain fields only")
        name = field.name
        namespace[f"_set_{name}"] = _slot_setter(cls, name)
        if field.default is dataclasses.MISSING:
            arguments.append(name)
        else:
            namespace[f"_default_{name}"] = field.default
            arguments.append(f"{name}=_default_{name}")
        body.append(f"    _set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # noqa: S102 - the source is built from the class's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def _slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None]:
    """What sets field ``name`` of a ``cls`` instance: the slot attribute lookup finds
    (``cls``'s own, or that of the base the field is inherited from); a TypeError naming
    the class, the field and why when that is no slot (a class attribute that hides it:
    the dataclass's own ``__init__`` fails on it too, at each call)."""
    slot = inspect.getattr_static(cls, name, None)
    if not isinstance(slot, types.MemberDescriptorType):
        raise TypeError(
            f"{cls.__name__}.{name}: fast_init sets each field through its slot, and a "
            f"class attribute hides it ({slot!r})"
        )
    setter: Callable[[Any, Any], None] = slot.__set__
    return setter
