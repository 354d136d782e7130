"""``@frozen`` against ``@dataclass(frozen=True)``: the same class declared both ways must
compare, hash, show and refuse assignment alike."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest

from imageintrospect.frozen import frozen


def declare(decorate: Any) -> dict[str, type]:
    """The same classes, declared with ``decorate``."""

    @decorate
    class Plain:
        a: int
        b: str = "x"

    @decorate
    class Options:
        a: int
        hidden: list[int] = field(default_factory=list, repr=False)
        ignored: int = field(default=0, compare=False)
        hashed_only: int = field(default=0, compare=True, hash=False)

    @decorate
    class Child(Plain):
        c: tuple[int, ...] = ()

    @decorate
    class OwnEq:
        a: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, OwnEq) and abs(self.a - other.a) < 2

    @decorate
    class OwnHash:
        a: int

        def __hash__(self) -> int:
            return 7

    @decorate
    class Empty:
        pass

    return {c.__name__: c for c in (Plain, Options, Child, OwnEq, OwnHash, Empty)}


OURS, THEIRS = declare(frozen), declare(dataclass(frozen=True))
ARGS: dict[str, list[tuple[Any, ...]]] = {
    "Plain": [(1,), (1, "x"), (2, "y")],
    "Options": [(1,), (1, [5], 3, 4), (1, [6], 9, 4), (1, [], 0, 8)],
    "Child": [(1,), (1, "x", (2,)), (1, "x", (3,))],
    "OwnEq": [(1,), (2,), (5,)],
    "OwnHash": [(1,), (2,)],
    "Empty": [()],
}


def describe(obj: Any) -> tuple[str, int | None]:
    """repr with the class's module path cut (the twins are local classes), and hash."""
    try:
        hashed: int | None = hash(obj)
    except TypeError:
        hashed = None
    return repr(obj).split(".")[-1], hashed


@pytest.mark.parametrize("name", sorted(ARGS))
def test_same_behaviour_as_dataclass(name: str) -> None:
    ours, theirs = OURS[name], THEIRS[name]
    assert [f.name for f in dataclasses.fields(ours)] == [
        f.name for f in dataclasses.fields(theirs)
    ]
    made = [(ours(*args), theirs(*args)) for args in ARGS[name]]
    for mine, reference in made:
        assert describe(mine) == describe(reference)
        for other_mine, other_reference in made:
            assert (mine == other_mine) == (reference == other_reference)
            assert (mine != other_mine) == (reference != other_reference)
        # another class never equals, as with dataclasses
        assert mine != reference and (mine == 1) is False
        with pytest.raises(FrozenInstanceError):
            mine.a = 9  # type: ignore[attr-defined]
        assert dataclasses.replace(mine) == mine
        assert dataclasses.asdict(mine) == dataclasses.asdict(reference)


def test_every_frozen_record_of_the_package_is_a_frozen_dataclass() -> None:
    """Every ``@frozen`` class the package defines is a frozen dataclass whose shared
    methods use the fields dataclasses would use."""
    import importlib
    import pkgutil

    import imageintrospect

    skip = ("imageintrospect.audit", "imageintrospect.glance_plugin", "imageintrospect.compat")
    records = set()
    for info in pkgutil.walk_packages(imageintrospect.__path__, "imageintrospect."):
        if info.name.startswith(skip) or info.name == "imageintrospect.__main__":
            continue  # the integrations' extras may be missing; they hold few records
        module = importlib.import_module(info.name)
        records |= {
            v
            for v in vars(module).values()
            if isinstance(v, type) and "_frozen_compared" in vars(v)
        }
    assert len(records) >= 40
    for cls in records:
        params = cls.__dataclass_params__
        assert params.frozen and not params.eq and not params.repr, cls
        every = dataclasses.fields(cls)
        assert cls._frozen_compared == tuple(f.name for f in every if f.compare), cls
        assert cls._frozen_shown == tuple(f.name for f in every if f.repr), cls
