"""Frozen record classes, as ``@dataclass(frozen=True)`` makes them, at a fraction of the cost.

``@record`` gives a class what ``dataclasses.dataclass(frozen=True)`` gives it for the way
beadm uses it: its fields are its annotations, in order; ``__init__`` takes them by position
or keyword, a class attribute is a field's default and ``field(default_factory=...)`` makes
one per instance; instances of the same class are equal when their fields are, hash by
their fields, show them in ``repr``, and refuse assignment (:class:`FrozenInstanceError`).
:func:`replace` is ``dataclasses.replace``. mypy checks them as dataclasses
(``typing.dataclass_transform``). Not supported (refused when a class asks for it):
inheriting fields, ``__post_init__``, a class's own ``__init__``, ``__eq__`` or ``__hash__``.

Why not :mod:`dataclasses` (issue 15): it writes the source of five methods per class and
compiles it with ``exec``, and it imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``).
In the Proxmox-like machine (one vCPU under emulation) importing it took 0.33-0.39 s and
making 25 frozen dataclasses 0.36-0.57 s, while every beadm command makes 25-45 of them:
about a quarter of ``beadm list``. Here each class gets the same few closures, made
without compiling anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast, dataclass_transform

T = TypeVar("T")

_FIELDS = "__record_fields__"
_MISSING = object()
_REFUSED = ("__init__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__post_init__")


class FrozenInstanceError(AttributeError):
    """An assignment to (or deletion of) an attribute of a record."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], T]) -> T:
    """A field whose default is made anew for each instance (``default_factory()``)."""
    return cast(T, _Factory(default_factory))


def _is_classvar(annotation: object) -> bool:
    if isinstance(annotation, str):  # from __future__ import annotations
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or getattr(annotation, "__origin__", None) is ClassVar


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen record (see the module's doc)."""
    name = cls.__qualname__
    own = cls.__dict__
    for refused in _REFUSED:
        if refused in own:
            raise TypeError(f"record {name} defines {refused}: not supported")
    if any(hasattr(base, _FIELDS) for base in cls.__mro__[1:]):
        raise TypeError(f"record {name} inherits from a record: not supported")
    fields = tuple(n for n, a in own.get("__annotations__", {}).items() if not _is_classvar(a))
    defaults: dict[str, object] = {}
    factories: dict[str, Callable[[], object]] = {}
    for f in fields:
        value = own.get(f, _MISSING)
        if isinstance(value, _Factory):
            factories[f] = value.make
            delattr(cls, f)
        elif value is not _MISSING:
            defaults[f] = value
        elif defaults or factories:
            raise TypeError(f"record {name}: field {f} without a default follows one with it")
    count = len(fields)
    setter = object.__setattr__

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if len(args) > count:
            raise TypeError(f"{name}() takes {count} arguments, {len(args)} given")
        for f, value in zip(fields, args, strict=False):
            if f in kwargs:
                raise TypeError(f"{name}() got two values for {f!r}")
            setter(self, f, value)
        for f in fields[len(args):]:
            if f in kwargs:
                value = kwargs.pop(f)
            elif f in defaults:
                value = defaults[f]
            elif f in factories:
                value = factories[f]()
            else:
                raise TypeError(f"{name}() is missing {f!r}")
            setter(self, f, value)
        if kwargs:
            raise TypeError(f"{name}() got unexpected {', '.join(map(repr, sorted(kwargs)))}")

    def values(self: object) -> tuple[object, ...]:
        return tuple([getattr(self, f) for f in fields])

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    def __hash__(self: object) -> int:
        return hash(values(self))

    def __repr__(self: object) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)
        return f"{self.__class__.__qualname__}({inner})"

    def __setattr__(self: object, attr: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {attr!r} of a {name}")

    def __delattr__(self: object, attr: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {attr!r} of a {name}")

    methods: dict[str, Callable[..., Any]] = {
        "__init__": __init__, "__eq__": __eq__, "__hash__": __hash__,
        "__setattr__": __setattr__, "__delattr__": __delattr__,
    }
    if "__repr__" not in own:
        methods["__repr__"] = __repr__
    for attr, fn in methods.items():
        fn.__qualname__ = f"{name}.{attr}"
        setattr(cls, attr, fn)
    setattr(cls, _FIELDS, fields)
    return cls


def replace(obj: T, /, **changes: object) -> T:
    """A copy of record ``obj`` with ``changes`` (``dataclasses.replace``)."""
    fields: tuple[str, ...] = getattr(obj.__class__, _FIELDS)
    unknown = set(changes) - set(fields)
    if unknown:
        raise TypeError(f"{obj.__class__.__qualname__} has no field {sorted(unknown)[0]!r}")
    values = {f: changes[f] if f in changes else getattr(obj, f) for f in fields}
    return obj.__class__(**values)
