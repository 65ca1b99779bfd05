"""The spec types to and from JSON values without cattrs: the codec's fast path.

Why: every command that reads or writes an environment paid for importing cattrs and building
its converter (about 15 ms of a 90 ms ``revision list``; the issue-17 start-up goals). The spec
uses a small, closed set of field types (strict scalars, the id types, timestamps, enums, raw
JSON objects, homogeneous tuples, ``X | None`` and the spec classes themselves), so one
closure per field built from ``attrs.fields`` does the same work.

The rules are the codec's, not new ones: the scalar hooks are :mod:`greentic_core.codec`'s own
functions, and a document these converters refuse is decoded again by the codec's detailed
cattrs converter, which words the error (so cattrs is imported only for a bad document).
``tests/test_codec.py`` holds both directions to the cattrs converters' results on generated
environments, on the upstream fixtures and on every malformed document it knows.

Only the codec's spec classes (``codec._spec_classes``) go through here; any other class, and
a field type outside that set (:class:`Unsupported`, raised while the converters are built),
goes to cattrs as before.
"""

from __future__ import annotations

import enum
import functools
import operator
import types
import typing
from datetime import datetime
from typing import Any, Callable

import attrs

from . import codec, ids
from .errors import DecodeError


class Unsupported(TypeError):
    """A field type these converters do not handle (the codec falls back to cattrs)."""


def _is_optional(tp: Any) -> bool:
    return (typing.get_origin(tp) in (typing.Union, types.UnionType)
            and len(tp.__args__) == 2 and type(None) in tp.__args__)


def _tuple_item(tp: Any) -> Any:
    if typing.get_origin(tp) is tuple and len(tp.__args__) == 2 and tp.__args__[1] is Ellipsis:
        return tp.__args__[0]
    return None


# --------------------------------------------------------------------------- structure


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    str: codec._strict_str,
    int: codec._strict_int,
    bool: codec._strict_bool,
    ids.EnvId: ids.parse_env_id,
    ids.RevisionId: lambda v: ids.parse_ulid(v, "RevisionId"),
    ids.DeploymentId: lambda v: ids.parse_ulid(v, "DeploymentId"),
    ids.BundleId: codec._strict_str,
    ids.PackDescriptor: ids.PackDescriptor.parse,
    datetime: codec.parse_timestamp,
}


def _structure_hook(tp: Any) -> Callable[[Any], Any]:
    hook = _SCALARS.get(tp)
    if hook is not None:
        return hook
    if tp == dict[str, Any]:
        return codec._json_object
    if tp == (dict[str, Any] | None):
        return codec._optional_json_object
    if tp == dict[str, str]:
        return codec._str_map
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda v: codec._strict_enum(v, tp)
    if isinstance(tp, type) and attrs.has(tp):
        return structurer(tp)
    item_type = _tuple_item(tp)
    if item_type is not None:
        if item_type == dict[str, Any]:
            return codec._json_objects
        item_hook = _structure_hook(item_type)

        def structure_list(value: Any) -> tuple:
            if not isinstance(value, list):
                raise DecodeError(f"expected a JSON array, got {type(value).__name__}")
            return tuple([item_hook(item) for item in value])

        return structure_list
    if _is_optional(tp):
        inner = _structure_hook(next(a for a in tp.__args__ if a is not type(None)))
        return lambda value: None if value is None else inner(value)
    raise Unsupported(f"no plain structure hook for {tp!r}")


def _field_hooks() -> dict[tuple[type, str], Callable[[Any], Any]]:
    """The codec's per-field hooks (a wire format on a plain ``str`` field), one argument each."""
    return {key: (lambda hook: lambda value: hook(value, None))(hook) for key, hook in codec._field_hooks().items()}


@functools.cache
def structurer(cls: type) -> Callable[[Any], Any]:
    """``dict -> cls``: each known key through its field's hook, required keys (and ``schema``,
    defaulted in the class but required on the wire) must be present, unknown keys go to
    ``extra``. Any failure is an exception; its wording is the detailed converter's job."""
    attrs.resolve_types(cls)
    special = _field_hooks()
    fields: list[tuple[str, Callable[[Any], Any], bool]] = []
    for field in attrs.fields(cls):
        if field.name == "extra":
            continue
        hook = special.get((cls, field.name)) or _structure_hook(field.type)
        fields.append((field.name, hook, field.default is attrs.NOTHING or field.name == "schema"))
    known = frozenset(name for name, _, _ in fields)
    type_name = cls.__name__

    def structure(value: Any) -> Any:
        if type(value) is not dict:
            raise DecodeError(type_name)
        kwargs = {}
        for name, hook, required in fields:
            if name in value:
                kwargs[name] = hook(value[name])
            elif required:
                raise KeyError(name)
        obj = cls(**kwargs)
        if not known.issuperset(value):
            object.__setattr__(obj, "extra", {k: v for k, v in value.items() if k not in known})
        return obj

    return structure


# --------------------------------------------------------------------------- unstructure


def _copy_json(value: Any) -> Any:
    """A fresh copy of a JSON value's containers (as cattrs' ``Any`` unstructuring makes), so
    changing an unstructured document never reaches into the frozen spec object."""
    if type(value) is dict:
        return {key: _copy_json(item) for key, item in value.items()}
    if type(value) is list or type(value) is tuple:
        return [_copy_json(item) for item in value]
    return value


def _unstructure_hook(tp: Any) -> Callable[[Any], Any] | None:
    """``None`` where the value is written as it is (strings, numbers, booleans, the id types)."""
    if tp in (str, int, bool, ids.EnvId, ids.RevisionId, ids.DeploymentId, ids.BundleId):
        return None
    if tp is ids.PackDescriptor:
        return str
    if tp is datetime:
        return codec.format_timestamp
    if tp in (dict[str, Any], dict[str, str]):
        return _copy_json
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda member: member.value
    if isinstance(tp, type) and attrs.has(tp):
        return unstructurer(tp)
    item_type = _tuple_item(tp)
    if item_type is not None:
        if item_type == dict[str, Any]:
            return _copy_json
        item_hook = _unstructure_hook(item_type)
        if item_hook is None:
            return list
        return lambda value: [item_hook(item) for item in value]
    if _is_optional(tp):  # as cattrs: None, or the value written as the declared inner type
        inner = _unstructure_hook(next(a for a in tp.__args__ if a is not type(None)))
        if inner is None:
            return None
        return lambda value: None if value is None else inner(value)
    raise Unsupported(f"no plain unstructure hook for {tp!r}")


@functools.cache
def unstructurer(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``cls -> dict`` in declaration order; the codec's omit-when-default fields left out when
    they hold their default; ``extra`` keys after the modelled ones (a modelled key wins)."""
    attrs.resolve_types(cls)
    names: list[str] = []
    plan: list[tuple[str, Callable[[Any], Any] | None, bool, Any]] = []
    for field in attrs.fields(cls):
        if field.name == "extra":
            continue
        omit = ((field.name in codec._OMIT_WHEN_DEFAULT and field.name != "generation")
                or f"{cls.__name__}.{field.name}" in codec._OMIT_WHEN_DEFAULT)
        default = field.default
        if omit and isinstance(default, attrs.Factory):
            if default.takes_self:
                raise Unsupported(f"{cls.__name__}.{field.name}: a default that takes self")
            default = default.factory()
        names.append(field.name)
        plan.append((field.name, _unstructure_hook(field.type), omit, default))
    values_of = operator.attrgetter(*names, "extra")  # every field in one call

    def unstructure(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        *values, extra = values_of(obj)
        for (name, hook, omit, default), value in zip(plan, values):
            if omit and value == default:
                continue
            out[name] = value if hook is None else hook(value)
        if extra:
            for key, item in extra.items():
                out.setdefault(key, item)
        return out

    return unstructure


@functools.cache
def structurer_or_none(cls: Any) -> Callable[[Any], Any] | None:
    """:func:`structurer` for the codec's spec classes, else ``None`` (remembered)."""
    if cls not in codec._spec_classes():
        return None
    try:
        return structurer(cls)
    except Unsupported:
        return None


@functools.cache
def unstructurer_or_none(cls: Any) -> Callable[[Any], dict[str, Any]] | None:
    """:func:`unstructurer` for the codec's spec classes, else ``None`` (remembered)."""
    if cls not in codec._spec_classes():
        return None
    try:
        return unstructurer(cls)
    except Unsupported:
        return None

