"""What the core's attrs value classes (spec, outcomes) share, in a module that imports nothing:
the plugin machinery loads the outcome types without the spec's."""

from __future__ import annotations


class ValueRepr:
    """attrs' ``__repr__``, written once and inherited (``repr=False`` on the classes).

    attrs generates and compiles a ``__repr__`` for every class when its module is imported
    (about 0.13 ms a class; every command imports some 30 of them). The output is the same:
    ``ClassName(field=value!r, ...)`` over the fields whose ``repr`` is true, in order."""

    __slots__ = ()

    def __repr__(self) -> str:
        cls = type(self)
        inner = ", ".join(f"{a.name}={getattr(self, a.name)!r}" for a in cls.__attrs_attrs__ if a.repr)  # type: ignore[attr-defined]
        return f"{cls.__qualname__.rsplit('>.', 1)[-1]}({inner})"
