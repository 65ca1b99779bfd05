"""The JSON codec: upstream fixtures round-trip, the serde rules of upstream-spec section 0,
strict scalars with one-line errors, and a property test over generated valid environments."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from builders import NOW, add, make_canary_env, make_deployment, make_env, make_revision
from greentic_core import codec
from greentic_core.errors import DecodeError, SpecError, SpecFormatError
from greentic_core.projection import materialize_runtime_config
from greentic_core.spec import Environment, HostConfig, RuntimeConfig, SplitHistoryItem, Workload
from greentic_core.validation import InvalidListenAddr, validate_environment
from strategies import environments

FIXTURES = Path(__file__).parent / "fixtures"
ENV_FIXTURES = ["upstream-example", "upstream-minimal", "upstream-full"]


def fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def first_difference(a: Any, b: Any, path: str = "$") -> str | None:
    """The JSON path of the first place where ``a`` and ``b`` differ (key order included), or None."""
    if type(a) is not type(b):
        return f"{path}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            missing = [k for k in a if k not in b]
            added = [k for k in b if k not in a]
            if missing or added:
                return f"{path}: keys missing {missing}, added {added}"
            return f"{path}: key order {list(a)} != {list(b)}"
        for key in a:
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_first_difference_names_the_path():
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "$.a[1].b: 2 != 3"
    assert first_difference({"a": 1}, {"a": 1}) is None
    assert "keys missing ['x']" in first_difference({"x": 1}, {})
    assert "type" in first_difference({"a": 1}, {"a": True})


def decode_fails(text: str, cls: type = Environment) -> SpecError:
    with pytest.raises((DecodeError, SpecFormatError)) as info:
        codec.loads(text, cls)
    message = str(info.value)
    assert "\n" not in message, message
    assert message
    return info.value


# =========================================================================== fixtures


@pytest.mark.parametrize("name", ENV_FIXTURES)
def test_fixture_round_trips_key_by_key(name):
    text = fixture_text(name)
    original = json.loads(text)
    env = codec.load_environment(text)
    dumped = codec.dump_environment(env)
    again = json.loads(dumped)
    # everything the file had comes back with the same value, at the same place
    for key, value in original.items():
        assert key in again, f"$.{key} lost"
        assert first_difference(value, again[key], f"$.{key}") is None
    # and a second round trip is stable, as an object and as text
    assert codec.load_environment(dumped) == env
    assert codec.dump_environment(codec.load_environment(dumped)) == dumped


@pytest.mark.parametrize("name", ["upstream-example", "upstream-full"])
def test_fixture_round_trips_byte_identical(name):
    text = fixture_text(name)
    assert first_difference(json.loads(text), codec.unstructure(codec.load_environment(text))) is None
    assert codec.dump_environment(codec.load_environment(text)) == text


def test_minimal_fixture_gains_only_the_always_written_defaults():
    original = json.loads(fixture_text("upstream-minimal"))
    dumped = json.loads(codec.dump_environment(codec.load_environment(fixture_text("upstream-minimal"))))
    added = {k: v for k, v in dumped.items() if k not in original}
    assert added == {
        "bundles": [],
        "revisions": [],
        "traffic_splits": [],
        "messaging_endpoints": [],
        "extensions": [],
        "revocation": {"required": False},
        "retention": {},
        "health": {"state": "unknown"},
    }
    assert list(dumped)[:5] == ["schema", "environment_id", "name", "host_config", "packs"]


def test_runtime_config_fixture_round_trips_and_matches_projection():
    text = fixture_text("upstream-example.runtime-config")
    config = codec.loads(text, RuntimeConfig)
    assert codec.dumps(config) == text
    env = codec.load_environment(fixture_text("upstream-example"))
    assert materialize_runtime_config(env) == config


def test_runtime_config_with_empty_revisions_parses():
    config = codec.loads('{"schema": "greentic.runtime-config.v1", "env_id": "local", "revisions": []}', RuntimeConfig)
    assert config.revisions == ()
    decode_fails('{"schema": "greentic.runtime-config.v1", "env_id": "local"}', RuntimeConfig)


# =========================================================================== unknown keys


def _add_unknown_key_everywhere(node: Any, counter: list[int]) -> None:
    if isinstance(node, dict):
        for value in list(node.values()):
            _add_unknown_key_everywhere(value, counter)
        counter[0] += 1
        node[f"zz_unknown_{counter[0]}"] = "kept"
    elif isinstance(node, list):
        for item in node:
            _add_unknown_key_everywhere(item, counter)


@pytest.mark.parametrize("name", ENV_FIXTURES)
def test_unknown_keys_are_kept_at_every_level(name):
    doc = json.loads(fixture_text(name))
    counter = [0]
    _add_unknown_key_everywhere(doc, counter)
    assert counter[0] > 1
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    dumped = codec.dump_environment(codec.load_environment(text))
    again = json.loads(dumped)
    for key, value in doc.items():  # the minimal file also gains the always-written defaults
        difference = first_difference(value, again[key], f"$.{key}")
        assert difference is None, difference
    if name != "upstream-minimal":
        assert dumped == text


def test_unknown_keys_in_full_fixture_survive():
    dumped = json.loads(codec.dump_environment(codec.load_environment(fixture_text("upstream-full"))))
    assert dumped["host_config"]["future_flag"] is True
    assert dumped["bundles"][0]["x_unknown_bundle_field"] == "kept"
    assert dumped["revisions"][1]["future_revision_field"] == {"nested": [1, 2, 3]}
    assert dumped["x_future_top_level"] == {"anything": ["goes", 1, None, True]}


# =========================================================================== omitted / always written


def _nulls(node: Any, path: str = "$") -> list[str]:
    if node is None:
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _nulls(v, f"{path}[{i}]")]
    return []


def test_unset_optional_fields_are_left_out_never_null():
    env, dep, r1, _ = make_canary_env("local")
    doc = json.loads(codec.dump_environment(env))
    assert _nulls(doc) == []
    assert "credentials_ref" not in doc
    assert "generation" not in doc  # our counter, left out while 0 so upstream files round-trip
    assert list(doc["host_config"]) == ["env_id"]
    bundle = doc["bundles"][0]
    assert "usage" not in bundle and "config_overrides" not in bundle
    revision = doc["revisions"][0]
    for key in ("bundle_source_uri", "warmed_at", "workload"):
        assert key not in revision
    split = doc["traffic_splits"][0]
    assert "previous_split_ref" not in split and "history" not in split


def test_defaulted_fields_are_always_written():
    dep = make_deployment("local")
    rev = make_revision("local", dep, drain_seconds=0)
    doc = json.loads(codec.dump_environment(add(make_env("local"), dep, rev)))
    for key in ("bundles", "revisions", "traffic_splits", "messaging_endpoints", "extensions"):
        assert key in doc
    assert doc["traffic_splits"] == [] and doc["messaging_endpoints"] == [] and doc["extensions"] == []
    assert doc["revocation"] == {"required": False} and doc["retention"] == {} and doc["health"] == {"state": "unknown"}
    assert doc["bundles"][0]["current_revisions"] == []
    assert doc["bundles"][0]["route_binding"] == {
        "hosts": [], "path_prefixes": [], "tenant_selector": {"tenant": "default", "team": "default"}
    }
    revision = doc["revisions"][0]
    assert revision["pack_list"] == [] and revision["pack_config_refs"] == [] and revision["abort_metrics"] == []
    assert revision["drain_seconds"] == 0


def test_set_optional_fields_are_written_in_declaration_order():
    env, dep, r1, r2 = make_canary_env("local")
    host = HostConfig(env_id="local", region="eu", tenant_org_id="acme", listen_addr="0.0.0.0:9090",
                      public_base_url="https://x.example.com", gui_enabled=False)
    r1 = attrs.evolve(r1, bundle_source_uri="oci://x", warmed_at=NOW, workload=Workload(command=("run", "--fast")))
    split = attrs.evolve(
        env.traffic_splits[0],
        previous_split_ref="inline://e30",
        history=(SplitHistoryItem(generation=0, entries=(), idempotency_key="k-0", updated_at=NOW, updated_by="me"),),
    )
    env = attrs.evolve(env, host_config=host, credentials_ref="secret://local/credentials/admin", generation=7,
                       revisions=(r1, r2), traffic_splits=(split,))
    doc = json.loads(codec.dump_environment(env))
    assert list(doc["host_config"]) == ["env_id", "region", "tenant_org_id", "listen_addr", "public_base_url", "gui_enabled"]
    assert doc["host_config"]["gui_enabled"] is False  # an explicit false is written
    assert list(doc)[5] == "credentials_ref"
    assert doc["generation"] == 7
    revision = doc["revisions"][0]
    keys = list(revision)
    assert keys.index("bundle_source_uri") == keys.index("bundle_digest") + 1
    assert keys.index("warmed_at") == keys.index("staged_at") + 1
    assert revision["workload"]["command"] == ["run", "--fast"]
    assert "image" not in revision["workload"]
    assert list(doc["traffic_splits"][0])[-2:] == ["previous_split_ref", "history"]
    assert codec.load_environment(codec.dump_environment(env)) == env


def test_listen_addr_is_optional_and_defaults_to_none():
    env = codec.load_environment(fixture_text("upstream-minimal"))
    assert env.host_config.listen_addr is None
    assert "listen_addr" not in json.loads(codec.dump_environment(env))["host_config"]


def test_listen_addr_round_trips_when_set():
    env = codec.load_environment(fixture_text("upstream-example"))
    assert env.host_config.listen_addr == "127.0.0.1:8080"
    assert json.loads(codec.dump_environment(env))["host_config"]["listen_addr"] == "127.0.0.1:8080"


def test_listen_addr_rejects_malformed_string():
    # Upstream fails while deserializing; here the codec keeps the string and the
    # InvalidListenAddr rule of validate_environment rejects it (see docs/spec.md).
    doc = json.loads(fixture_text("upstream-minimal"))
    doc["host_config"]["listen_addr"] = "not-a-socket-addr"
    env = codec.load_environment(json.dumps(doc))
    with pytest.raises(InvalidListenAddr) as info:
        validate_environment(env)
    assert "not-a-socket-addr" in str(info.value)
    assert "\n" not in str(info.value)


def test_bundle_source_uri_left_out_when_none():
    dep = make_deployment("local")
    doc = codec.unstructure(make_revision("local", dep))
    assert "bundle_source_uri" not in doc


def test_explicit_null_for_optional_field_reads_as_unset():
    doc = json.loads(fixture_text("upstream-full"))
    doc["revisions"][0]["bundle_source_uri"] = None
    env = codec.load_environment(json.dumps(doc))
    assert env.revisions[0].bundle_source_uri is None
    assert "bundle_source_uri" not in json.loads(codec.dump_environment(env))["revisions"][0]


# =========================================================================== timestamps


@pytest.mark.parametrize(
    ("given_text", "written"),
    [
        ("2026-05-19T12:00:00Z", "2026-05-19T12:00:00Z"),
        ("2026-05-19T12:00:00.123Z", "2026-05-19T12:00:00.123Z"),
        ("2026-05-19T12:00:00.000Z", "2026-05-19T12:00:00Z"),
        ("2026-05-19T12:00:00.120Z", "2026-05-19T12:00:00.120Z"),
        ("2026-05-19T12:00:00.123456Z", "2026-05-19T12:00:00.123456Z"),
        ("2026-05-19T12:00:00.123456789Z", "2026-05-19T12:00:00.123456Z"),
        ("2026-05-19T12:00:00.999999999Z", "2026-05-19T12:00:00.999999Z"),
        ("2026-05-19T14:00:00+02:00", "2026-05-19T12:00:00Z"),
        ("2026-05-19T06:30:00.5-05:30", "2026-05-19T12:00:00.500Z"),
        ("2026-05-19t12:00:00z", "2026-05-19T12:00:00Z"),
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00Z"),
    ],
)
def test_timestamps(given_text, written):
    doc = json.loads(fixture_text("upstream-example"))
    doc["revisions"][0]["created_at"] = given_text
    env = codec.load_environment(json.dumps(doc))
    assert env.revisions[0].created_at.tzinfo == timezone.utc
    assert json.loads(codec.dump_environment(env))["revisions"][0]["created_at"] == written


def test_format_timestamp_converts_and_treats_naive_as_utc():
    aware = datetime(2026, 5, 19, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert codec.format_timestamp(aware) == "2026-05-19T12:00:00Z"
    assert codec.format_timestamp(datetime(2026, 5, 19, 12, 0, 0, 7)) == "2026-05-19T12:00:00.000007Z"


@pytest.mark.parametrize(
    "bad",
    [
        "2026-05-19T12:00:00",  # no offset
        "2026-05-19",  # no time
        "2026-05-19 12:00:00Z",  # not the RFC 3339 separator
        "2026-05-19T12:00Z",  # no seconds
        "20260519T120000Z",  # basic format
        "2026-05-19T12:00:00,5Z",
        "2026-02-30T00:00:00Z",  # not a date
        "9999-12-31T23:59:59-02:00",  # beyond year 9999 in UTC
        "0001-01-01T00:00:00+02:00",  # before year 1 in UTC
        "yesterday",
        1747656000,
    ],
)
def test_bad_timestamps_rejected(bad):
    doc = json.loads(fixture_text("upstream-example"))
    doc["revisions"][0]["created_at"] = bad
    err = decode_fails(json.dumps(doc))
    assert "$.revisions[0].created_at" in str(err)


# =========================================================================== strict scalars


def _apply(doc: Any, path: tuple, value: Any) -> Any:
    """A copy of ``doc`` with the node at ``path`` set to ``value`` (deleted for ``KeyError``)."""
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def _mutated(path: tuple, value: Any, name: str = "upstream-example") -> str:
    return json.dumps(_apply(json.loads(fixture_text(name)), path, value))


SEQ = ("revisions", 0, "sequence")


def json_path(path: tuple) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (SEQ, "1", "expected a whole number, got str"),
        (SEQ, 1.0, "expected a whole number, got float"),
        (SEQ, 1.5, "expected a whole number, got float"),
        (SEQ, True, "expected a whole number, got bool"),
        (SEQ, -1, "out of range"),
        (SEQ, 2**64, "out of range"),
        (SEQ, 10**40, "out of range"),
        (SEQ, None, "got NoneType"),
        (("traffic_splits", 0, "entries", 0, "weight_bps"), "9000", "got str"),
        (("packs", 0, "generation"), False, "got bool"),
        (("name",), 5, "expected a string, got int"),
        (("host_config", "gui_enabled"), "yes", "expected true or false"),
        (("host_config", "gui_enabled"), 1, "expected true or false"),
        (("revisions", 0, "lifecycle"), "bogus", "not a valid Lifecycle"),
        (("packs", 0, "slot"), "Deployer", "not a valid CapabilitySlot"),
        (("bundles", 0, "status"), "gone", "not a valid BundleStatus"),
        (("revisions", 0, "pack_list"), None, "expected a JSON array"),
        (("revisions", 0, "pack_list"), {}, "expected a JSON array"),
        (("host_config",), "local", "must be a JSON object"),
        (("messaging_endpoints",), [1], "expected a JSON object"),
        (("name",), KeyError, "missing required key 'name'"),
        (("revisions", 0, "schema"), KeyError, "missing required key 'schema'"),
        (("packs",), KeyError, "missing required key 'packs'"),
        (("traffic_splits", 0, "entries"), KeyError, "missing required key 'entries'"),
        (("environment_id",), "", "EnvId must not be empty"),
        (("environment_id",), "a/b", "EnvId"),
        (("revisions", 0, "revision_id"), "01JX3M0A1B2C3D4E5F6G7H8J9", "not a 26-character ULID"),
        (("revisions", 0, "revision_id"), "01JX3M0A1B2C3D4E5F6G7H8J9KK", "not a 26-character ULID"),
        (("revisions", 0, "revision_id"), "01JX3M0A1B2C3D4E5F6G7H8J9I", "not a 26-character ULID"),
        (("revisions", 0, "revision_id"), "81JX3M0A1B2C3D4E5F6G7H8J9K", "not a 26-character ULID"),
        (("bundles", 0, "deployment_id"), "not-a-ulid", "not a 26-character ULID"),
        (("bundles", 0, "current_revisions"), ["x"], "not a 26-character ULID"),
        (("packs", 0, "kind"), "greentic.deployer", "MissingVersion"),
        (("packs", 0, "kind"), "greentic.deployer@1.0.0@2", "MultipleAt"),
        (("packs", 0, "kind"), "@1.0.0", "EmptyPath"),
        (("packs", 0, "kind"), "greentic@1.0.0", "PathMissingDot"),
        (("packs", 0, "kind"), "Greentic.deployer@1.0.0", "InvalidPathChar"),
        (("packs", 0, "kind"), "greentic.deployer@1.0", "InvalidSemver"),
        (("revisions", 0, "pack_list", 0, "version"), "latest", "InvalidSemver"),
    ],
)
def test_strict_scalars_are_one_line_decode_errors(path, value, expected):
    err = decode_fails(_mutated(path, value))
    assert expected in str(err)
    where = json_path(path[:-1] if value is KeyError else path)
    assert f"@ {where}" in str(err), str(err)


def test_largest_u64_is_accepted():
    env = codec.load_environment(_mutated(SEQ, 2**64 - 1))
    assert env.revisions[0].sequence == 2**64 - 1


def test_lowercase_ulid_accepted_and_upper_cased():
    doc = json.loads(fixture_text("upstream-example"))
    rid = doc["revisions"][0]["revision_id"]
    doc["revisions"][0]["revision_id"] = rid.lower()
    doc["traffic_splits"][0]["entries"][0]["revision_id"] = rid.lower()
    doc["bundles"][0]["deployment_id"] = doc["bundles"][0]["deployment_id"].lower()
    env = codec.load_environment(json.dumps(doc))
    assert env.revisions[0].revision_id == rid
    assert env.traffic_splits[0].entries[0].revision_id == rid
    validate_environment(env)  # ids compare equal after normalisation
    assert codec.dump_environment(env) == fixture_text("upstream-example")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"schema": NaN}', "NaN"),
        ('{"schema": Infinity}', "Infinity"),
        ('{"schema": -Infinity}', "-Infinity"),
        ('{"schema": "a", "schema": "b"}', "duplicate key 'schema'"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"x":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"a": 1} trailing', "not valid JSON"),
        (b"\xff\xfe{", "not"),
        ("1" * 5000, "not valid JSON"),  # beyond Python's int digit limit
        ("[]", "must be a JSON object"),
    ],
    ids=["nan", "inf", "-inf", "duplicate-key", "deep-array", "deep-object", "truncated", "empty",
         "trailing", "not-utf8", "huge-int", "not-an-object"],
)
def test_malformed_json_is_a_one_line_decode_error(text, expected):
    err = decode_fails(text)
    assert expected in str(err)


def test_duplicate_key_deep_inside_is_rejected():
    text = fixture_text("upstream-example").replace('"bundle_digest": "sha256:ab12",', '"bundle_digest": "a", "bundle_digest": "b",', 1)
    assert "duplicate key 'bundle_digest'" in str(decode_fails(text))


def test_deep_nesting_inside_an_unknown_key_is_rejected():
    doc = fixture_text("upstream-minimal").rstrip().rstrip("}") + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert "nested too deeply" in str(decode_fails(doc))


# =========================================================================== property test


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(environments())
def test_generated_environments_round_trip_and_validate(env):
    validate_environment(env)
    text = codec.dump_environment(env)
    assert text.endswith("\n")
    # nulls only inside raw JSON values (unknown keys, config override values), never for an unset field
    assert [p for p in _nulls(json.loads(text)) if ".x_" not in p and ".config_overrides." not in p] == []
    loaded = codec.load_environment(text)
    assert loaded == env
    assert codec.dump_environment(loaded) == text
    validate_environment(loaded)


def test_minted_ulids_are_canonical_time_ordered_and_strictly_increasing():
    import time

    from ulid import ULID

    from greentic_core import ids

    before = time.time_ns() // 1_000_000
    minted = [ids.mint_ulid() for _ in range(5000)]  # many share a millisecond
    after = time.time_ns() // 1_000_000
    assert minted == sorted(minted) and len(set(minted)) == len(minted)
    for value in minted[:50] + minted[-50:]:
        assert ids.parse_ulid(value) == value and str(ULID.from_str(value)) == value  # the reference reads it back
        assert before <= ULID.from_str(value).milliseconds <= after
    assert len({value[10:] for value in minted}) == len(minted)  # the 80 random bits differ too


# =========================================================================== the plain converters
# codec.structure/unstructure take the spec classes through plain_codec (no cattrs import);
# these hold that path to the cattrs converters' results, which stay the authority.


def _cattrs_dumps(obj: Any) -> str:
    return json.dumps(codec._converter(False).unstructure(obj), indent=2, ensure_ascii=False) + "\n"


def _both_structure(data: Any, cls: type) -> tuple[Any, Any]:
    """(plain result or its exception type, cattrs fast result or its exception type)."""
    from greentic_core import plain_codec

    results = []
    for convert in (plain_codec.structurer(cls), lambda d: codec._converter(False).structure(d, cls)):
        try:
            results.append(convert(data))
        except Exception:  # compared below: both must refuse
            results.append(Exception)
    return results[0], results[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(environments())
def test_plain_converters_agree_with_cattrs_on_generated_environments(env):
    from greentic_core import plain_codec

    plain_doc = plain_codec.unstructurer(Environment)(env)
    assert json.dumps(plain_doc, indent=2, ensure_ascii=False) + "\n" == _cattrs_dumps(env)
    assert plain_doc == json.loads(_cattrs_dumps(env))
    plain, reference = _both_structure(json.loads(_cattrs_dumps(env)), Environment)
    assert plain == reference == env


@pytest.mark.parametrize("name", ENV_FIXTURES)
def test_plain_converters_agree_with_cattrs_on_the_fixtures(name):
    data = json.loads(fixture_text(name))
    plain, reference = _both_structure(data, Environment)
    assert plain is not Exception and plain == reference
    assert codec.dumps(plain) == _cattrs_dumps(reference)
    config = materialize_runtime_config(plain)
    assert codec.dumps(config) == _cattrs_dumps(config)
    assert _both_structure(json.loads(codec.dumps(config)), RuntimeConfig)[0] == config


def _every_mutation(node: Any, path: tuple = ()) -> Any:
    """(path, value) pairs replacing or deleting each node of a document with wrong values."""
    wrong = [KeyError, None, "x", 1, -1, 1.5, True, [], {}, ["x"], [{}], "2026-13-01T00:00:00Z"]
    if path:
        for value in wrong:
            yield path, value
    if isinstance(node, dict):
        for key, item in node.items():
            yield from _every_mutation(item, path + (key,))
    elif isinstance(node, list) and node:
        yield from _every_mutation(node[0], path + (0,))


@pytest.mark.parametrize("name", ["upstream-example", "upstream-full"])
def test_plain_converters_refuse_exactly_what_cattrs_refuses(name):
    """Every node of the fixture, deleted or replaced by each wrong value in turn: the plain
    structurer refuses the document exactly when the cattrs converter does, and otherwise
    builds the same environment."""
    doc = json.loads(fixture_text(name))
    checked = refused = 0
    for path, value in _every_mutation(doc):
        plain, reference = _both_structure(_apply(doc, path, value), Environment)
        assert (plain is Exception) == (reference is Exception), (path, value)
        assert plain == reference, (path, value)
        checked += 1
        refused += reference is Exception
    assert checked > 500 and 0 < refused < checked  # the mutations did reach both outcomes


def test_a_bad_document_is_still_worded_by_the_detailed_converter():
    err = decode_fails(_mutated(SEQ, "1"))
    assert "expected a whole number, got str @ $.revisions[0].sequence" in str(err)


def test_reading_an_environment_does_not_import_cattrs():
    code = ("import sys; from pathlib import Path; from greentic_core import codec; "
            f"env = codec.load_environment(Path({str(FIXTURES / 'upstream-full.json')!r}).read_text()); "
            "codec.dump_environment(env); print('cattrs' in sys.modules)")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("workload", [
    Workload(command="true"),  # a str where a tuple is declared: both write it as the declared type
    Workload(command=["python3", "-m", "app"]),  # a list where a tuple is declared
    Workload(command=None, env={"A": "1"}),
    Workload(image="nginx:1", replicas=3),
], ids=repr)
def test_plain_unstructure_writes_loosely_typed_values_as_cattrs_does(workload):
    from greentic_core import plain_codec

    assert plain_codec.unstructurer(Workload)(workload) == codec._converter(False).unstructure(workload)


def _attrs_repr(obj: Any) -> str:
    """The repr attrs would generate for obj's class (a copy of its fields with repr on)."""
    cls = type(obj)
    twin = attrs.make_class(cls.__name__, {a.name: attrs.field(repr=a.repr) for a in attrs.fields(cls)}, repr=True)
    return repr(twin(**{a.name: getattr(obj, a.name) for a in attrs.fields(cls)}))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(environments())
def test_value_repr_is_the_repr_attrs_would_generate(env):
    """spec and outcome classes inherit values.ValueRepr instead of a generated __repr__."""
    from greentic_core import outcomes

    objects = [env, env.host_config, *env.revisions, *env.bundles, *env.traffic_splits, *env.packs,
               materialize_runtime_config(env),
               outcomes.WarmOutcome(detail={"a": 1}), outcomes.PreflightCheck(name="n", status=outcomes.CheckStatus.PASS)]
    for obj in objects:
        assert repr(obj) == _attrs_repr(obj)
