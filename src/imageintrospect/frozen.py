"""``@frozen``: a frozen dataclass that costs half as much to create.

``@dataclass(frozen=True)`` writes six methods of every class as source text and compiles
each (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``):
about 0.1 ms of ``compile`` per method, 0.6 ms per class, and a command's path creates some
thirty such classes (the answer's sections, the scanners' results), which made them the
largest single cost of ``imageintrospect info``'s start.  ``@frozen`` lets dataclasses
compile only the three methods that depend on the field names (``__init__`` and the two that
forbid assignment) and gives the class ``__eq__``, ``__hash__`` and ``__repr__`` written once
here, which behave as the generated ones do: equal when of the same class with equal compared
fields, hashed over the fields dataclasses would hash, shown as ``Name(field=value, ...)``.

Everything else is a dataclass as usual: ``dataclasses.fields``, ``replace``, ``asdict``,
``field(...)`` options and ``FrozenInstanceError``.  This module imports nothing from the
package, so any module may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Any:
        return lambda decorated: decorated


T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True)`` with ``__eq__``, ``__hash__`` and ``__repr__`` shared."""
    namespace = cls.__dict__
    # A method the class writes itself is kept, as dataclass keeps it; Python's own
    # ``__hash__ = None`` (for a class that writes ``__eq__``) is not one.
    own_hash = namespace.get("__hash__") is not None or "__eq__" not in namespace
    for name, method in (("__eq__", _eq), ("__hash__", _hash), ("__repr__", _repr)):
        if name not in namespace or (name == "__hash__" and not own_hash):
            setattr(cls, name, method)
    made = dataclass(frozen=True, repr=False, eq=False)(cls)
    every = fields(made)  # type: ignore[arg-type]  # made is a dataclass type
    made._frozen_compared = tuple(f.name for f in every if f.compare)  # type: ignore[attr-defined]
    made._frozen_hashed = tuple(  # type: ignore[attr-defined]
        f.name for f in every if (f.compare if f.hash is None else f.hash)
    )
    made._frozen_shown = tuple(f.name for f in every if f.repr)  # type: ignore[attr-defined]
    return made


def _eq(self: Any, other: Any) -> Any:  # bool, or NotImplemented for another class
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = self._frozen_compared
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, name) for name in self._frozen_hashed))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._frozen_shown)
    return f"{self.__class__.__qualname__}({shown})"
