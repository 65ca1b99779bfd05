"""JSON Schemas generated from the spec types (never written by hand).

Walks the attrs fields and their type hints, so a field added to :mod:`greentic_core.spec`
appears in the schema without anyone editing it. Unknown keys are allowed
(``additionalProperties: true``), as the codec carries them through.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import datetime
from typing import Any

import attrs

from . import desired, ids, notify, spec

DOCUMENTS: dict[str, type] = {
    "environment": spec.Environment,
    "revision": spec.Revision,
    "traffic-split": spec.TrafficSplit,
    "bundle-deployment": spec.BundleDeployment,
    "runtime-config": spec.RuntimeConfig,
    "deploy": desired.DesiredState,  # the desired-state file of `plan` / `apply`
    "notify-event": notify.NotifyEvent,  # the body of a webhook notification
}

_SCHEMA_IDS = {
    spec.Environment: spec.ENVIRONMENT_V1,
    spec.Revision: spec.REVISION_V1,
    spec.TrafficSplit: spec.TRAFFIC_SPLIT_V1,
    spec.BundleDeployment: spec.BUNDLE_DEPLOYMENT_V1,
    spec.RuntimeConfig: spec.RUNTIME_CONFIG_V1,
    desired.DesiredState: desired.DESIRED_STATE_V1,
    notify.NotifyEvent: notify.NOTIFY_EVENT_V1,
}
#: Classes read strictly (unknown keys refused) whose ``schema`` key may be left out.
_STRICT = frozenset((*desired._CLASSES, notify.NotifyConfig))
#: Classes a document may give as one object or as a list of them (``notify:``).
_ONE_OR_MANY = frozenset((notify.NotifyConfig,))

_ULID = {"type": "string", "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"}
_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
    float: {"type": "number", "minimum": 0},
    desired.Weight: {"anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 10000, "description": "basis points"},
        {"type": "string", "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*%|[0-9]+\\s*(bps)?)\\s*$",
         "description": "a percentage (12.5%) or basis points (1250bps)"},
    ]},
    bool: {"type": "boolean"},
    datetime: {"type": "string", "format": "date-time"},
    ids.EnvId: {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
    ids.RevisionId: _ULID,
    ids.DeploymentId: _ULID,
    notify.EventId: _ULID,
    ids.BundleId: {"type": "string"},
    ids.PackDescriptor: {"type": "string", "pattern": "^[a-z0-9.-]*\\.[a-z0-9.-]*@[0-9]+\\.[0-9]+\\.[0-9]+.*$"},
}


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if tp is Any:
        return {}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_schema(options[0], defs) if len(options) == 1 else {"anyOf": [_type_schema(a, defs) for a in options]}
    if origin is tuple:
        items = _type_schema(typing.get_args(tp)[0], defs)
        if typing.get_args(tp)[0] in _ONE_OR_MANY:
            return {"anyOf": [items, {"type": "array", "items": items}]}
        return {"type": "array", "items": items}
    if origin is dict:
        value = typing.get_args(tp)[1]
        return {"type": "object", "additionalProperties": _type_schema(value, defs) if value is not Any else True}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if attrs.has(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = _class_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema mapping for {tp!r}")


def _class_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        if field.name == "extra":
            continue
        prop = _type_schema(hints[field.name], defs)
        if field.name == "schema" and cls in _SCHEMA_IDS:
            prop = {"const": _SCHEMA_IDS[cls]}
        if field.default is attrs.NOTHING or (field.name == "schema" and cls not in _STRICT):
            required.append(field.name)
        properties[field.name] = prop
    doc: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": cls not in _STRICT}
    if required:
        doc["required"] = required
    if cls.__doc__:
        doc["description"] = " ".join(cls.__doc__.split("\n\n")[0].split())
    return doc


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a document: one of :data:`DOCUMENTS`."""
    if name not in DOCUMENTS:
        raise KeyError(name)
    cls = DOCUMENTS[name]
    defs: dict[str, Any] = {}
    body = _class_schema(cls, defs)
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://greentic.ai/schemas/{_SCHEMA_IDS[cls]}.json",
        "title": _SCHEMA_IDS[cls],
        **body,
    }
    if defs:
        doc["$defs"] = defs
    return doc
