"""beadm.record behaves as ``dataclass(frozen=True)`` where beadm relies on it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from beadm.record import FrozenInstanceError, field, record, replace
from worlds import REPO

SRC = REPO / "src"


@record
class Rec:
    name: str
    size: int = 0
    tags: list[str] = field(default_factory=list)
    LIMIT: ClassVar[int] = 3

    @property
    def big(self) -> bool:
        return self.size > self.LIMIT


@dataclasses.dataclass(frozen=True)
class Ref:
    name: str
    size: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)
    LIMIT: ClassVar[int] = 3


@record
class Other:
    name: str
    size: int = 0
    tags: list[str] = field(default_factory=list)


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a",), {}),
    (("a", 5), {}),
    (("a",), {"tags": ["x"]}),
    ((), {"name": "b", "size": 2}),
    (("a", 1, ["t"]), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_same_fields_equality_hash_and_repr_as_a_frozen_dataclass(
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    mine, ref = Rec(*args, **kwargs), Ref(*args, **kwargs)
    assert repr(mine) == repr(ref).replace("Ref(", "Rec(")
    assert mine == Rec(*args, **kwargs) and mine != Other(*args, **kwargs)
    assert mine != ref  # another class, as dataclasses
    assert (mine.name, mine.size, mine.tags) == (ref.name, ref.size, ref.tags)
    with pytest.raises(TypeError, match="unhashable"):  # a list field, as dataclasses
        hash(mine)
    with pytest.raises(TypeError, match="unhashable"):
        hash(ref)


def test_hash_follows_the_fields() -> None:
    assert hash(Other("a", 1, ())) == hash(Other("a", 1, ()))  # type: ignore[arg-type]
    assert {Other("a", 1, ()), Other("a", 1, ())} == {Other("a", 1, ())}  # type: ignore[arg-type]
    assert len({Other("a", 1, ()), Other("a", 2, ())}) == 2  # type: ignore[arg-type]


def test_factory_default_is_new_for_each_instance_and_not_a_class_attribute() -> None:
    a, b = Rec("a"), Rec("b")
    assert a.tags == [] and a.tags is not b.tags
    assert "tags" not in Rec.__dict__
    assert Rec.LIMIT == 3 and Rec("x", 4).big and not Rec("x", 3).big


@pytest.mark.parametrize("change", [
    lambda r: setattr(r, "size", 1),
    lambda r: setattr(r, "new", 1),
    lambda r: delattr(r, "name"),
])
def test_assignment_and_deletion_are_refused(change: Any) -> None:
    r = Rec("a", 1)
    with pytest.raises(FrozenInstanceError):
        change(r)
    assert r == Rec("a", 1)
    assert issubclass(FrozenInstanceError, AttributeError)


@pytest.mark.parametrize(("args", "kwargs", "words"), [
    ((), {}, "missing 'name'"),
    (("a", 1, [], 4), {}, "takes 3 arguments, 4 given"),
    (("a",), {"name": "b"}, "two values for 'name'"),
    (("a",), {"colour": 1}, "unexpected 'colour'"),
])
def test_bad_calls_fail_as_a_dataclass_does(
        args: tuple[Any, ...], kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(TypeError, match=words):
        Rec(*args, **kwargs)
    with pytest.raises(TypeError):
        Ref(*args, **kwargs)


def test_replace() -> None:
    r = Rec("a", 1, ["t"])
    assert replace(r, size=2) == Rec("a", 2, ["t"]) and r.size == 1
    assert replace(r) == r and replace(r) is not r
    with pytest.raises(TypeError, match="no field 'colour'"):
        replace(r, colour=1)


def test_what_it_does_not_support_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        @record
        class Order:
            a: int = 0
            b: int

    with pytest.raises(TypeError, match="__post_init__"):
        @record
        class Post:
            a: int

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError, match="inherits"):
        @record
        class Child(Rec):
            extra: int = 0


def test_beadm_list_imports_no_dataclasses() -> None:
    """The point of beadm.record (issue 15): what every command imports stays without
    dataclasses and inspect."""
    code = ("import sys, beadm.cli, beadm.be, beadm.registry, beadm.sdboot.backend, "
            "beadm.detect, beadm.esp.host, beadm.grub.backend; "
            "print(sorted(m for m in ('dataclasses', 'inspect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(SRC)!r}); {code}"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_class_variables_are_not_fields_without_future_annotations() -> None:
    import typing

    ns: dict[str, object] = {"__annotations__": {"a": int, "LIMIT": ClassVar[int],
                                                 "PLAIN": typing.ClassVar},
                             "LIMIT": 3, "PLAIN": 4}
    cls = record(type("Plain", (), ns))
    assert cls(1) == cls(a=1) and cls.LIMIT == 3  # type: ignore[call-arg,attr-defined]
    with pytest.raises(TypeError, match="takes 1 arguments"):
        cls(1, 2)
