"""A JSON Schema subset checked without jsonschema: the answers check's fast path.

Every command that binds a deployer (every mutation, ``--record-only`` too) checks the
recorded answers against the plugin's answers schema. Importing jsonschema costs about 40 ms,
more than the rest of such a command's own work; the answers schemas of our plugins (and most
others) use only the plain keywords below. :func:`surely_valid` says True only when it checked
every keyword of the schema and the instance passed them all, with jsonschema's meaning
(draft 6 and later, formats not asserted, as ``contract.validate_answers`` runs it); for
anything else (an unknown keyword, a ``$ref``, a float where the meaning differs between
drafts) it says False and the caller runs jsonschema, which also words any error. It never
says "invalid": a False is "ask jsonschema".
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Dialects whose meaning of the keywords below is the one implemented here (an absent
#: ``$schema`` means jsonschema's latest, 2020-12).
_DIALECTS = frozenset({
    "https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema",
    "http://json-schema.org/draft-06/schema#", "http://json-schema.org/draft-06/schema",
})
#: Keywords that assert nothing (formats are annotations: no format checker is passed).
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "format", "readOnly", "writeOnly",
                          "deprecated", "$comment"})
_KEYWORDS = frozenset({"type", "properties", "additionalProperties", "required", "enum", "const", "minimum",
                       "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
                       "items", "minItems", "maxItems", "uniqueItems"}) | _ANNOTATIONS


class _Unsure(Exception):
    """Only jsonschema can say."""


def surely_valid(schema: Any, instance: Any) -> bool:
    """True when ``instance`` is certainly valid against ``schema``; False means "ask jsonschema"."""
    if not isinstance(schema, dict) or schema.get("$schema", "https://json-schema.org/draft/2020-12/schema") not in _DIALECTS:
        return False
    try:
        return _valid({k: v for k, v in schema.items() if k != "$schema"}, instance)
    except (_Unsure, re.error, TypeError, ValueError, RecursionError):
        return False


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and not (type(value) is float and not math.isfinite(value))


def _has_type(value: Any, name: Any) -> bool:
    if name == "string":
        return type(value) is str
    if name == "integer":
        if type(value) is float:
            raise _Unsure  # 3.0 is an integer since draft 6; let jsonschema decide such cases
        return type(value) is int
    if name == "number":
        return _is_number(value)
    if name == "boolean":
        return type(value) is bool
    if name == "object":
        return type(value) is dict
    if name == "array":
        return type(value) is list
    if name == "null":
        return value is None
    raise _Unsure


def _scalar(value: Any) -> bool:
    """Values whose JSON equality is Python's ``==`` without the bool/number trap."""
    return type(value) in (str, int) or value is None


def _valid(schema: Any, value: Any) -> bool:
    if schema is True:
        return True
    if type(schema) is not dict or not _KEYWORDS.issuperset(schema):
        raise _Unsure
    if "type" in schema:
        types = schema["type"]
        types = [types] if type(types) is str else types
        if type(types) is not list or not any(_has_type(value, t) for t in types):
            return False
    for key in ("enum", "const"):
        if key in schema:
            allowed = schema[key] if key == "enum" else [schema[key]]
            if type(allowed) is not list or not _scalar(value) or not all(_scalar(a) for a in allowed):
                raise _Unsure
            if not any(type(a) is type(value) and a == value for a in allowed):
                return False
    if _is_number(value) and type(value) is not bool:
        for key, ok in (("minimum", lambda b: value >= b), ("maximum", lambda b: value <= b),
                        ("exclusiveMinimum", lambda b: value > b), ("exclusiveMaximum", lambda b: value < b)):
            if key in schema:
                bound = schema[key]
                if not _is_number(bound):
                    raise _Unsure  # e.g. draft 4's boolean exclusiveMinimum
                if not ok(bound):
                    return False
    if type(value) is str:
        for key, ok in (("minLength", lambda n: len(value) >= n), ("maxLength", lambda n: len(value) <= n)):
            if key in schema:
                if type(schema[key]) is not int:
                    raise _Unsure
                if not ok(schema[key]):
                    return False
        if "pattern" in schema:
            if type(schema["pattern"]) is not str:
                raise _Unsure
            if re.search(schema["pattern"], value) is None:
                return False
    if type(value) is list:
        for key, ok in (("minItems", lambda n: len(value) >= n), ("maxItems", lambda n: len(value) <= n)):
            if key in schema:
                if type(schema[key]) is not int:
                    raise _Unsure
                if not ok(schema[key]):
                    return False
        if schema.get("uniqueItems") is True:
            if not all(type(item) is str for item in value):
                raise _Unsure
            if len(set(value)) != len(value):
                return False
        elif schema.get("uniqueItems", False) is not False:
            raise _Unsure
        if "items" in schema:
            if type(schema["items"]) not in (dict, bool):
                raise _Unsure  # a list of schemas means different things in different drafts
            if schema["items"] is False and value:
                return False
            if not all(_valid(schema["items"], item) for item in value):
                return False
    if type(value) is dict:
        properties = schema.get("properties", {})
        if type(properties) is not dict:
            raise _Unsure
        required = schema.get("required", [])
        if type(required) is not list or not all(type(r) is str for r in required):
            raise _Unsure
        if not all(r in value for r in required):
            return False
        extra_schema = schema.get("additionalProperties", True)
        if type(extra_schema) not in (dict, bool):
            raise _Unsure
        for key, item in value.items():
            sub = properties[key] if key in properties else extra_schema
            if sub is False:
                return False
            if not _valid(sub, item):
                return False
    return True
