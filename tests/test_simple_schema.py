"""The answers check's fast path never disagrees with jsonschema.

``simple_schema.surely_valid`` may only say True where jsonschema finds no error; it may say
False anywhere (the caller then runs jsonschema). Random schemas of the subset it knows, and
keywords it does not, against random JSON values; and the real plugins' schemas, where it must
answer without jsonschema for the answers `env init` records."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greentic_core.simple_schema import surely_valid

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5) | st.sampled_from([3.0, 0.0, float("nan")])
    | st.text(st.sampled_from("ab1_ *"), max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=8,
)
TYPES = st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "null", "strng"])
NUM = st.integers(-3, 3) | st.sampled_from([0.5, -1.5, True])


def schemas(depth: int = 2):
    sub = st.just(True) | st.just(False) if depth == 0 else schemas(depth - 1) | st.booleans()
    keywords = {
        "type": TYPES | st.lists(TYPES, min_size=1, max_size=2),
        "enum": st.lists(st.sampled_from(["a", "b", 1, 2, None, True, 1.0]), min_size=1, max_size=3),
        "const": st.sampled_from(["a", 1, None, False]),
        "minimum": NUM, "maximum": NUM, "exclusiveMinimum": NUM, "exclusiveMaximum": NUM,
        "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3),
        "pattern": st.sampled_from(["^a", "b$", "[0-9]", "^[A-Za-z_][A-Za-z0-9_]*\\*?$"]),
        "minItems": st.integers(0, 3), "maxItems": st.integers(0, 3), "uniqueItems": st.booleans(),
        "items": sub,
        "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), sub, max_size=3),
        "additionalProperties": sub,
        "required": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True),
        "description": st.just("d"), "default": JSON, "format": st.sampled_from(["path", "uri", "email"]),
        "writeOnly": st.booleans(),
        "not": sub, "$ref": st.just("#"), "minProperties": st.integers(0, 2), "x-secret": st.booleans(),
    }
    return st.fixed_dictionaries({}, optional=keywords)


DIALECTS = st.sampled_from([None, "https://json-schema.org/draft/2020-12/schema",
                            "http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-04/schema#"])


def jsonschema_valid(schema, instance) -> bool:
    try:
        cls = jsonschema.validators.validator_for(schema)
        return next(iter(cls(schema).iter_errors(instance)), None) is None
    except Exception:  # a schema jsonschema cannot use: the fast path must not vouch for it
        return False


@settings(max_examples=3000, deadline=None)
@given(schema=schemas(), dialect=DIALECTS, instance=JSON)
def test_surely_valid_only_where_jsonschema_finds_no_error(schema, dialect, instance) -> None:
    if dialect is not None:
        schema = {"$schema": dialect, **schema}
    if surely_valid(schema, instance):
        assert jsonschema_valid(schema, instance), (schema, instance)


@settings(max_examples=500, deadline=None)
@given(schema=schemas(), instance=st.dictionaries(st.sampled_from(["a", "b", "c"]), JSON, max_size=3))
def test_objects_against_object_schemas(schema, instance) -> None:
    schema = {**schema, "type": "object"}
    if surely_valid(schema, instance):
        assert jsonschema_valid(schema, instance), (schema, instance)


def _plugin_schemas():
    from greentic_aws.answers import ANSWERS_SCHEMA as aws
    from greentic_k8s.answers import ANSWERS_SCHEMA as k8s
    from greentic_local_process.answers import ANSWERS_SCHEMA as local

    return {"local-process": local, "k8s": k8s, "aws": aws}


def test_the_local_process_defaults_are_answered_without_jsonschema() -> None:
    schema = _plugin_schemas()["local-process"]
    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    assert jsonschema_valid(schema, defaults)
    assert surely_valid(schema, defaults)
    assert not surely_valid(schema, {**defaults, "no_such_answer": 1})  # additionalProperties: false


def test_local_process_answers_edge_cases_agree_with_jsonschema() -> None:
    schema = _plugin_schemas()["local-process"]
    for answers in ({}, {"warm_timeout_seconds": 0}, {"warm_timeout_seconds": 0.5}, {"log_max_bytes": 1023},
                    {"log_max_bytes": 2048.0}, {"keep_logs": 1}, {"listen_addr": "127.0.0.1:80"},
                    {"listen_addr": "x y:80"}, {"pass_env": ["PATH", "PATH"]}, {"pass_env": ["LC_*"]},
                    {"state_dir": ""}, {"stop_grace_seconds": True}):
        if surely_valid(schema, answers):
            assert jsonschema_valid(schema, answers), answers
    assert surely_valid(schema, {"warm_timeout_seconds": 0.5, "pass_env": ["LC_*"], "listen_addr": "127.0.0.1:80"})
