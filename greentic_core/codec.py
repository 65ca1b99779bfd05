"""JSON codec for the spec types: the one place that knows the upstream wire rules.

Rules (upstream-spec section 0): keys in declaration order; optional fields left out when
unset (never ``null``); defaulted lists always written; RFC 3339 UTC timestamps with a ``Z``
and fractional seconds only when non-zero; pretty JSON with a 2-space indent and a trailing
newline. Unknown keys on any modelled object are kept in its ``extra`` and written back.

Scalars are strict: a string where a number belongs, a float where an integer belongs, a
negative count or a duplicated key is a :class:`~greentic_core.errors.DecodeError` with one
line naming the JSON path. Decoding runs a fast converter first and, only when it fails, a
detailed one to say exactly where.
"""

from __future__ import annotations

import contextlib
import functools
import types
import typing
import gc
import json
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, TypeVar

from .errors import DecodeError, SpecError

if TYPE_CHECKING:  # imported with the first converter: ``utc_now`` and the timestamp helpers need none
    import cattrs

    from . import spec

T = TypeVar("T")

_MAX_U64 = 2**64 - 1

# Fields written only when set (upstream "skip if None" / "skip if empty"). Everything else
# is always written.
_OMIT_WHEN_DEFAULT = {
    "region", "tenant_org_id", "listen_addr", "public_base_url", "gui_enabled",
    "answers_ref", "previous_binding_ref", "credentials_ref", "usage", "config_overrides",
    "source_uri", "bundle_source_uri", "staged_at", "warmed_at", "workload",
    "previous_split_ref", "history", "image", "command", "working_dir",
    "Environment.generation",
}

def _spec_classes() -> tuple[type, ...]:
    from . import spec

    return (
        spec.HostConfig, spec.EnvPackBinding, spec.TenantSelector, spec.RouteBinding,
        spec.RevenueShare, spec.BundleDeployment, spec.PackListEntry, spec.Workload,
        spec.Revision, spec.TrafficSplitEntry, spec.SplitHistoryItem, spec.TrafficSplit,
        spec.Environment, spec.RevisionRuntimeBlock, spec.RuntimeConfig,
    )


# --------------------------------------------------------------------------- timestamps


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC with ``Z``; fraction of 0, 3 or 6 digits as chrono's AutoSi writes it."""
    value = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    # not strftime("%Y"): it does not zero-pad years below 1000, which would not parse back
    base = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    micro = value.microsecond
    if micro == 0:
        return base + "Z"
    if micro % 1000 == 0:
        return f"{base}.{micro // 1000:03d}Z"
    return f"{base}.{micro:06d}Z"


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


# UTC with "Z", seconds and at most 6 fraction digits: fromisoformat reads it exactly as is.
_CANONICAL_UTC = re.compile(r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?Z", re.ASCII)


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 with seconds and an offset; converted to UTC, fractions beyond µs truncated.

    ``datetime.fromisoformat`` alone is far more lenient (no seconds, basic format, comma
    fractions), so the shape is checked first; a date that converts outside years 1..9999
    is a DecodeError too, never an OverflowError.
    """
    if type(value) is str and _CANONICAL_UTC.fullmatch(value):  # what we (and upstream) write
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # e.g. February 30th: the slow path below words the error
    if not isinstance(value, str):
        raise DecodeError(f"timestamp must be an RFC 3339 string, got {type(value).__name__}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise DecodeError(f"timestamp {value[:64]!r} is not RFC 3339 (e.g. 2026-05-19T12:00:00Z)")
    date, time, fraction, offset = match.groups()
    text = f"{date}T{time}"
    if fraction:
        # Python keeps microseconds: longer fractions (nanoseconds) are truncated, not rejected.
        text += "." + fraction[:6].ljust(6, "0")
    text += "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise DecodeError(f"timestamp {value[:64]!r} is not a valid date and time in years 1..9999") from None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- strict scalars


def _strict_str(value: Any, _: Any = None) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: Any = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"expected a whole number, got {type(value).__name__}")
    if value < 0 or value > _MAX_U64:
        raise DecodeError(f"number {value if abs(value) < 10**30 else '(huge)'} is out of range 0..2^64-1")
    return value


def _strict_bool(value: Any, _: Any = None) -> bool:
    if not isinstance(value, bool):
        raise DecodeError(f"expected true or false, got {type(value).__name__}")
    return value


def _strict_enum(value: Any, cls: Any) -> Any:
    # The spec enums subclass ``str``; without their own hook the ``str`` hook above would
    # accept any string (e.g. ``"lifecycle": "bogus"``) and hand back a plain str.
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {type(value).__name__}")
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise DecodeError(f"{value[:80]!r} is not a valid {cls.__name__} (one of {allowed})") from None


def _json_object(value: Any, _: Any = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _json_objects(value: Any, _: Any = None) -> tuple:
    if not isinstance(value, list):
        raise DecodeError(f"expected a JSON array, got {type(value).__name__}")
    for item in value:
        _json_object(item)
    return tuple(value)


def _optional_json_object(value: Any, _: Any = None) -> dict[str, Any] | None:
    return None if value is None else _json_object(value)


def _str_map(value: Any, _: Any = None) -> dict[str, str]:
    obj = _json_object(value)
    for key, item in obj.items():
        if not isinstance(item, str):
            raise DecodeError(f"value of {key!r} must be a string, got {type(item).__name__}")
    return dict(obj)


def _is_simple_optional(tp: Any) -> bool:
    args = getattr(tp, "__args__", ())
    return (
        getattr(tp, "__origin__", None) in (typing.Union, types.UnionType) or isinstance(tp, types.UnionType)
    ) and len(args) == 2 and type(None) in args and tp != (dict[str, Any] | None)


def _is_homogeneous_tuple(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) is tuple and len(tp.__args__) == 2 and tp.__args__[1] is Ellipsis


# --------------------------------------------------------------------------- converter


def _make_converter(detailed: bool) -> cattrs.Converter:
    import cattrs
    from cattrs.errors import IterableValidationError, IterableValidationNote

    from . import ids, spec

    conv = cattrs.Converter(detailed_validation=detailed)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(bool, _strict_bool)
    for enum_cls in (spec.CapabilitySlot, spec.Lifecycle, spec.BundleStatus):
        conv.register_structure_hook(enum_cls, _strict_enum)
        conv.register_unstructure_hook(enum_cls, lambda member: member.value)
    conv.register_structure_hook(ids.EnvId, lambda v, _: ids.parse_env_id(v))
    conv.register_structure_hook(ids.RevisionId, lambda v, _: ids.parse_ulid(v, "RevisionId"))
    conv.register_structure_hook(ids.DeploymentId, lambda v, _: ids.parse_ulid(v, "DeploymentId"))
    conv.register_structure_hook(ids.BundleId, _strict_str)
    conv.register_structure_hook(ids.PackDescriptor, lambda v, _: ids.PackDescriptor.parse(v))
    conv.register_unstructure_hook(ids.PackDescriptor, str)
    conv.register_structure_hook(datetime, lambda v, _: parse_timestamp(v))
    conv.register_unstructure_hook(datetime, format_timestamp)
    conv.register_structure_hook_func(lambda t: t == dict[str, Any], _json_object)
    conv.register_structure_hook_func(lambda t: t == (dict[str, Any] | None), _optional_json_object)
    conv.register_structure_hook_func(lambda t: t == dict[str, str], _str_map)

    def tuple_hook(tp: Any) -> Any:
        item_type = tp.__args__[0]
        if item_type is dict[str, Any]:
            return _json_objects
        item_hook = conv.get_structure_hook(item_type)

        def structure_list(value: Any, _: Any) -> tuple:
            if not isinstance(value, list):
                raise DecodeError(f"expected a JSON array, got {type(value).__name__}")
            return tuple([item_hook(item, item_type) for item in value])

        def structure_list_detailed(value: Any, _: Any) -> tuple:
            if not isinstance(value, list):
                raise DecodeError(f"expected a JSON array, got {type(value).__name__}")
            result, errors = [], []
            for index, item in enumerate(value):
                try:
                    result.append(item_hook(item, item_type))
                except Exception as exc:  # collected and re-raised with its index, as cattrs does
                    note = IterableValidationNote(f"Structuring {tp} @ index {index}", index, item_type)
                    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
            return tuple(result)

        return structure_list_detailed if detailed else structure_list

    conv.register_structure_hook_factory(_is_homogeneous_tuple, tuple_hook)

    def optional_hook(tp: Any) -> Any:
        # cattrs' generic Optional handling re-dispatches on every value; resolve it once.
        inner_type = next(a for a in tp.__args__ if a is not type(None))
        inner = conv.get_structure_hook(inner_type)
        return lambda value, _: None if value is None else inner(value, inner_type)

    conv.register_structure_hook_factory(_is_simple_optional, optional_hook)
    conv.register_unstructure_hook_factory(_is_homogeneous_tuple, lambda tp: _unstructure_tuple(conv, tp))

    for cls in _spec_classes():
        _register_class(conv, cls, detailed)
    return conv


def _unstructure_tuple(conv: cattrs.Converter, tp: Any) -> Any:
    from . import ids

    item_type = tp.__args__[0]
    if item_type in (str, ids.RevisionId, ids.DeploymentId, dict[str, Any]):
        return list
    item_hook = conv.get_unstructure_hook(item_type)
    return lambda value: [item_hook(item) for item in value]


def _field_hooks() -> dict[tuple[type, str], Any]:
    """Fields whose plain ``str`` type carries a wire format upstream checks while reading."""
    from . import ids, spec

    return {
        # PackListEntry.version is a SemVer upstream (the --bundle sentinel is "0.0.0").
        (spec.PackListEntry, "version"): lambda v, _: ids.parse_semver(_strict_str(v), "pack_list version"),
    }


def _register_class(conv: cattrs.Converter, cls: type, detailed: bool) -> None:
    import attrs
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    fields = attrs.fields(cls)
    names = [f.name for f in fields if f.name != "extra"]
    known = frozenset(names)
    required = [f.name for f in fields if f.default is attrs.NOTHING or f.name == "schema"]
    required_keys = frozenset(required)
    omit = {
        n: override(omit_if_default=True)
        for n in names
        if (n in _OMIT_WHEN_DEFAULT and n != "generation") or f"{cls.__name__}.{n}" in _OMIT_WHEN_DEFAULT
    }
    field_hooks = {
        name: override(struct_hook=hook) for (owner, name), hook in _field_hooks().items() if owner is cls
    }
    base_structure = make_dict_structure_fn(cls, conv, extra=override(omit=True), **field_hooks)
    type_name = cls.__name__

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise DecodeError(f"{type_name} must be a JSON object, got {type(value).__name__}")
        if not value.keys() >= required_keys:
            missing = next(key for key in required if key not in value)
            raise DecodeError(f"{type_name} is missing required key {missing!r}")
        obj = base_structure(value, cls)
        if not known.issuperset(value):
            object.__setattr__(obj, "extra", {k: v for k, v in value.items() if k not in known})
        return obj

    has_schema = "schema" in known

    def structure_fast(value: Any, _: Any) -> Any:
        # The fast converter's path: a missing key without a default already fails inside
        # the generated code (KeyError), and any failure is re-run through ``structure``
        # above by the detailed converter, which words it. Only ``schema`` (defaulted in the
        # class, required on the wire) needs its own check here.
        if type(value) is not dict or (has_schema and "schema" not in value):
            raise DecodeError(type_name)
        obj = base_structure(value, cls)
        if not known.issuperset(value):
            object.__setattr__(obj, "extra", {k: v for k, v in value.items() if k not in known})
        return obj

    def unstructure_hook(_: Any) -> Any:
        # generated when the first object of the class is written: a read never writes
        base_unstructure = make_dict_unstructure_fn(cls, conv, extra=override(omit=True), **omit)

        def unstructure(obj: Any) -> dict[str, Any]:
            out = base_unstructure(obj)
            if omit:  # cattrs appends omittable keys last; restore declaration order
                out = {key: out[key] for key in names if key in out}
            if obj.extra:
                for key, item in obj.extra.items():
                    out.setdefault(key, item)
            return out

        return unstructure

    conv.register_structure_hook(cls, structure if detailed else structure_fast)
    # a subclass is written as its class, as a hook registered for the class would do
    conv.register_unstructure_hook_factory(lambda t: isinstance(t, type) and issubclass(t, cls), unstructure_hook)


@functools.cache
def _converter(detailed: bool) -> cattrs.Converter:
    """Built on first use, not at import: generating the hooks of every spec class costs tens of
    ms, which commands that never decode a document (``--help``, ``plugins list``) must not pay,
    and the detailed converter is needed only to word an error."""
    return _make_converter(detailed)


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, SpecError):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"missing required key {exc.args[0]!r}" if exc.args else "missing required key"
    if isinstance(exc, ValueError) and type_ is not None and isinstance(type_, type):
        return f"invalid value for {getattr(type_, '__name__', type_)}: {exc}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- public API


def _plain_structurer(cls: type) -> Any:
    from . import plain_codec

    return plain_codec.structurer_or_none(cls)


def _plain_unstructurer(cls: type) -> Any:
    from . import plain_codec

    return plain_codec.unstructurer_or_none(cls)


def structure(data: Any, cls: type[T]) -> T:
    """Turn parsed JSON into a spec object, or raise one :class:`DecodeError` naming the path.

    The spec classes go through :mod:`greentic_core.plain_codec` (no cattrs to import);
    anything else, and every document that fails there, through the cattrs converters,
    the detailed one wording the error."""
    plain = _plain_structurer(cls)
    try:
        if plain is not None:
            return plain(data)
        return _converter(False).structure(data, cls)
    except Exception:
        pass
    import cattrs

    try:
        return _converter(True).structure(data, cls)
    except (cattrs.BaseValidationError, SpecError, ValueError, TypeError, KeyError) as exc:
        messages = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        first = messages[0] if messages else str(exc)
        raise DecodeError(f"{cls.__name__} document is malformed: {first}") from None


def unstructure(obj: Any) -> Any:
    plain = _plain_unstructurer(type(obj))
    if plain is not None:
        return plain(obj)
    return _converter(False).unstructure(obj)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DecodeError(f"duplicate key {key[:80]!r} in JSON object")
            seen.add(key)
    return result


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses duplicate keys, NaN/Infinity, absurd nesting and bytes that are not
    UTF-8, with one-line errors. (``json.loads`` alone would take UTF-16/32 and decode encoded
    surrogates with ``surrogatepass``, letting characters in that no UTF-8 file can hold.)"""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8-sig")  # strict: invalid UTF-8 is a DecodeError below
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("JSON is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"document is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"{name} is not allowed in JSON documents")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Decoding allocates many small objects and frees none: collections there are pure cost."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def loads(text: str | bytes, cls: type[T]) -> T:
    with _gc_paused():
        return structure(parse_json(text), cls)


def dumps(obj: Any) -> str:
    """Pretty JSON (2-space indent) with a trailing newline, as the upstream store writes it."""
    return json.dumps(unstructure(obj), indent=2, ensure_ascii=False) + "\n"


def load_environment(text: str | bytes) -> spec.Environment:
    from . import spec

    return loads(text, spec.Environment)


def dump_environment(env: spec.Environment) -> str:
    return dumps(env)
