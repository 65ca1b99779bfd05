"""Hostile input: fuzzed environment documents and fuzzed CLI arguments, never a crash.

Documents (hypothesis): the upstream fixtures with 1-4 mutations each - a value replaced by a
hostile one (wrong type, null, huge or negative numbers, floats, 100k-character and unicode
strings, deep nesting, empty containers), a key deleted, an unknown key added, an array element
duplicated - and raw-text attacks (duplicate keys, 10^5-deep nesting, 5000-digit and 1e400
numbers, NaN/Infinity, invalid UTF-8, a BOM, truncation). Each goes through

* ``codec.load_environment`` + ``validate_environment``: only :class:`GreenticError`
  subclasses, each with a one-line message of bounded length;
* ``greentic-deployer env validate --file`` in-process (CliRunner): an exit code of the
  documented set, never 70 (internal error), one error line (or one JSON document);
* the store: a decodable document saved through ``Transaction.save`` is refused with a
  ``GreenticError`` and ``environment.json`` stays byte-identical (no temp file left), or, if it
  is valid, it is stored and loads back equal;
* planted as a store's ``environment.json`` (a tampered file): ``env show``, ``env list``,
  ``env validate``, ``traffic set`` and ``revision stage`` fail cleanly and never rewrite it.

CLI arguments (hypothesis): every command with its ids, prefixes, weights, percentages, numbers,
paths and env ids drawn from hostile strings (``../x``, absolute paths, NUL, 10k characters,
unicode, option look-alikes, shell metacharacters) mixed with real ids, against a real store:
documented exit codes only, no exit 70, one error line on stderr (or click's usage message),
``environment.json`` unchanged by every rejected command, nothing created outside the store.

The number of inputs tried is printed by the last test (and recorded in docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import string
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recording_plugin
from greentic_core import codec
from greentic_core.errors import GreenticError
from greentic_core.store import Store
from greentic_core.validation import validate_environment
from reliability_harness import DOCUMENTED_EXIT_CODES, Cli, check_error_output, json_given

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASES = [
    (FIXTURES / "upstream-example.json").read_text().replace('"local"', '"dev"'),
    (FIXTURES / "upstream-full.json").read_text().replace('"prod-eu"', '"dev"'),
    (FIXTURES / "upstream-minimal.json").read_text(),
]
MAX_MESSAGE = 2000
TRIED: dict[str, int] = {"documents": 0, "raw_texts": 0, "huge_values": 0, "tampered_store_files": 0,
                         "cli_arguments": 0}
OUTCOMES: Counter[str] = Counter()
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])

pytestmark = pytest.mark.timeout(240)


# --------------------------------------------------------------------------- strategies


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


hostile_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 2**32, 2**63, 2**64, 2**64 - 1, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, -0.0, 1e308, 10000.0, 9999.999]),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
            max_size=20),
    st.sampled_from(["x" * 100_000, "\x00", "../../etc/passwd", "/etc/shadow", "2026-13-45T99:99:99Z",
                     "sha256:" + "g" * 64, "01JX3M0A1B2C3D4E5F6G7H8J9K", "ready", "archived", "", " ",
                     "\u202eevil", "a\nb", "greentic.environment.v2", "9" * 400]),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=4),
    st.dictionaries(st.text(max_size=10), hostile_scalars, max_size=4),
    st.sampled_from([[], {}, [[[]]], {"": None}, _nested(60), _nested(400)]),
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if len(prefix) >= 8:  # not into the deep values a previous mutation planted
        return found
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, prefix + (index,))
    return found


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _copy(value: Any) -> Any:
    """A fresh copy: drawn values (e.g. the sampled nested ones) are shared between examples."""
    return json.loads(json.dumps(value))


@st.composite
def hostile_documents(draw: Any) -> str:
    doc = json.loads(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths[1:] or paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "duplicate"]))
        if not path:
            break
        parent, last = _get(doc, path[:-1]), path[-1]
        if action == "replace":
            parent[last] = _copy(draw(hostile_values))
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["x_unknown", "", "schema", "generation", "é" * 3]))] = _copy(
                draw(hostile_values))
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[last])))
    return json.dumps(doc, ensure_ascii=draw(st.booleans()))


@st.composite
def raw_texts(draw: Any) -> bytes:
    base = draw(st.sampled_from(BASES))
    attack = draw(st.sampled_from(["duplicate_key", "deep", "big_int", "inf_float", "nan", "utf8", "bom",
                                   "truncate", "garbage", "empty", "scalar"]))
    if attack == "duplicate_key":
        key = draw(st.sampled_from(['"environment_id": "other"', '"schema": "greentic.environment.v1"',
                                    '"revisions": []', '"name": 1']))
        opening = [i for i, c in enumerate(base) if c == "{"]
        index = draw(st.sampled_from(opening))
        text = base[: index + 1] + key + "," + base[index + 1:]
        if draw(st.booleans()):  # a key twice in the top-level object
            text = base.replace('"name":', '"name": "a", "name":', 1)
        return text.encode()
    if attack == "deep":
        depth = draw(st.sampled_from([100, 1000, 10_000, 100_000]))
        return base.replace('"packs": [', '"packs": [' + "[" * depth + "]" * depth + ",", 1).encode()
    if attack == "big_int":
        digits = "9" * draw(st.sampled_from([20, 400, 5000]))
        field = draw(st.sampled_from(['"generation": 1', '"sequence": 1', '"basis_points": 10000']))
        return base.replace(field, field.split(":")[0] + ": " + digits, 1).encode()
    if attack == "inf_float":
        return base.replace("10000", draw(st.sampled_from(["1e400", "-1e400", "1e4", "10000.0", "1E+4"])),
                            1).encode()
    if attack == "nan":
        return base.replace("10000", draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])), 1).encode()
    if attack == "utf8":
        data = base.encode()
        cut = draw(st.integers(0, len(data) - 1))
        return data[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + data[cut:]
    if attack == "bom":
        return b"\xef\xbb\xbf" + base.encode()
    if attack == "truncate":
        return base.encode()[: draw(st.integers(0, len(base) - 1))]
    if attack == "garbage":
        return draw(st.binary(max_size=200))
    if attack == "empty":
        return b""
    return json.dumps(draw(hostile_values)).encode()


def _check_error(exc: BaseException) -> None:
    assert isinstance(exc, GreenticError), f"{type(exc).__name__} escaped: {exc!r}"[:500]
    message = str(exc)
    assert "\n" not in message and 0 < len(message) <= MAX_MESSAGE, message[:500]


def _decode_and_validate(data: str | bytes) -> Any:
    try:
        env = codec.load_environment(data)
    except BaseException as exc:  # noqa: BLE001 - the point is what escapes
        _check_error(exc)
        OUTCOMES["decode refused"] += 1
        return None
    try:
        validate_environment(env)
        OUTCOMES["decoded and valid"] += 1
    except BaseException as exc:  # noqa: BLE001
        _check_error(exc)
        OUTCOMES["decoded, validation refused"] += 1
    return env


# --------------------------------------------------------------------------- documents


@pytest.fixture
def doc_store(cli: Cli) -> Store:
    cli.init(recording_plugin.NAME, answers={"region": "eu-west-1"})
    cli.json("deployment", "add", "dev", "shop")
    cli.ready()
    return Store(cli.home / "environments")


def _through_cli_file(cli: Cli, data: bytes, json_mode: bool) -> None:
    path = cli.tmp / "hostile.json"
    path.write_bytes(data)
    for command in (("env", "validate", "--file", path), ("runtime-config", "--file", path)):
        result = cli.run(*command, code=None, json_mode=json_mode)
        assert result.exit_code in DOCUMENTED_EXIT_CODES - {130}, (result.exit_code, result.output[-800:])


def _through_store(cli: Cli, store: Store, env: Any) -> None:
    """Save a decoded hostile environment as `dev`: refused with nothing written, or stored whole."""
    before = cli.env_bytes()
    with store.transaction("dev") as tx:
        try:
            candidate = attrs.evolve(env, environment_id="dev")
            saved = tx.save(candidate, audit_event={"actor": "fuzz", "command": "fuzz", "verb": "fuzz.save",
                                                    "outcome": "ok"})
        except BaseException as exc:  # noqa: BLE001
            _check_error(exc)
            OUTCOMES["store save refused"] += 1
            assert cli.env_bytes() == before, "a refused save changed environment.json"
            assert not [n for n in os.listdir(cli.env_dir()) if n.endswith(".tmp")]
            return
    assert store.load("dev") == saved  # accepted: it was valid, and it is stored whole
    OUTCOMES["store save accepted (valid)"] += 1
    cli.env_dir().joinpath("environment.json").write_bytes(before)  # back to the base for the next input


@settings(max_examples=800, **SETTINGS)
@given(text=hostile_documents(), json_mode=st.booleans())
def test_hostile_documents_fail_cleanly_everywhere(cli: Cli, doc_store: Store, text: str, json_mode: bool) -> None:
    TRIED["documents"] += 1
    env = _decode_and_validate(text)
    _through_cli_file(cli, text.encode(), json_mode)
    if env is not None:
        _through_store(cli, doc_store, env)


@settings(max_examples=500, **SETTINGS)
@given(data=raw_texts(), json_mode=st.booleans())
def test_hostile_raw_texts_fail_cleanly(cli: Cli, doc_store: Store, data: bytes, json_mode: bool) -> None:
    TRIED["raw_texts"] += 1
    env = _decode_and_validate(data)
    _through_cli_file(cli, data, json_mode)
    if env is not None:
        _through_store(cli, doc_store, env)


HUGE = "x" * 100_000 + "\n\u202e\x00"


@pytest.mark.parametrize("base", range(len(BASES)))
def test_a_huge_value_in_every_field_gives_a_bounded_one_line_error(cli: Cli, base: int) -> None:
    """Hypothesis rarely lands its 100k-character string on each field: every leaf, in turn."""
    doc = json.loads(BASES[base])
    leaves = [path for path in _paths(doc) if path and not isinstance(_get(doc, path), (dict, list))]
    for path in leaves:
        for value in (HUGE, 2**70):
            TRIED["huge_values"] += 1
            mutated = json.loads(BASES[base])
            _get(mutated, path[:-1])[path[-1]] = value
            text = json.dumps(mutated)
            _decode_and_validate(text)
            json_mode = bool(TRIED["huge_values"] % 2)
            _through_cli_file(cli, text.encode(), json_mode=json_mode)
            for out in cli.outputs[-2:]:  # the error line stays readable (JSON `details` may carry the value)
                shown = json.loads(out).get("message", "") if json_mode else out
                assert len(shown) < 3 * MAX_MESSAGE, (path, shown[:300])


@settings(max_examples=250, **SETTINGS)
@given(data=st.one_of(hostile_documents().map(str.encode), raw_texts()), json_mode=st.booleans())
def test_a_tampered_environment_file_is_reported_never_rewritten(cli: Cli, doc_store: Store, data: bytes,
                                                                 json_mode: bool) -> None:
    TRIED["tampered_store_files"] += 1
    path = cli.env_dir() / "environment.json"
    original = path.read_bytes()
    rid = json.loads(original)["revisions"][0]["revision_id"]
    path.write_bytes(data)
    try:
        for command in (("env", "show", "dev"), ("env", "list"), ("env", "validate", "dev"),
                        ("traffic", "set", "dev", "shop", f"{rid}=10000"),
                        ("revision", "stage", "dev", "shop", "--record-only"), ("env", "history", "dev")):
            result = cli.run(*command, code=None, json_mode=json_mode)
            assert result.exit_code in DOCUMENTED_EXIT_CODES - {130}, (command, result.output[-800:])
            if result.exit_code == 0 and command[1] in ("set", "stage"):
                path.write_bytes(data)  # it was valid and the change went in: plant it again
            else:
                assert path.read_bytes() == data, f"{command} rewrote a document it refused"
    finally:
        path.write_bytes(original)


# --------------------------------------------------------------------------- CLI arguments


HOSTILE_TEXT = st.one_of(
    st.sampled_from(["", "../x", "../../x", "..", ".", "/", "/etc/passwd", "/tmp", "a/b", "a\\b", "x\x00y", "\x00",
                     "a" * 10_000, "é", "𝔘nicode-ünï", "\u202eltr", "-", "--", "--json", "-h", "--help", "$(id)",
                     "`id`", "; rm -rf /", "%s%n%x", "\n", "a\nb", "\r\n", "\t", "~", "~root", "*", "?", "CON",
                     "latest", "LATEST", "0", "-1", "1e9", "nan", "inf", "-inf", "99999999999999999999", "1.5",
                     "0x10", "１２", "10000", "10001", "100%", "12.5%", "0.001%", "%", "=", "==", ",", ",,",
                     "A=", "=5", "shop", "SHOP", "01", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "dev", "DEV"]),
    st.text(max_size=30),
    st.text(alphabet=string.printable, max_size=60),
)
NUMBERS = st.one_of(HOSTILE_TEXT, st.integers(-(2**66), 2**66).map(str), st.floats().map(str))


@st.composite
def weights_args(draw: Any, refs: list[str]) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        ref = draw(st.one_of(st.sampled_from(refs), HOSTILE_TEXT))
        weight = draw(st.one_of(NUMBERS, st.integers(-5, 10005).map(str),
                                st.decimals(-1, 101, places=3).map(lambda d: f"{d}%")))
        parts.append(draw(st.sampled_from([f"{ref}={weight}", f"{ref}:{weight}", f"{ref}={weight}=",
                                           f"{ref}", f"{ref}= {weight}"])))
    return draw(st.sampled_from([",", ", ", ";", ",,"])).join(parts)


@st.composite
def commands(draw: Any, ids: dict[str, str], tmp: Path) -> list[str]:
    refs = [ids["A"], ids["B"], ids["S"], ids["A"][:6], ids["A"].lower(), "latest", ids["dep"], "shop"]
    ref = st.one_of(st.sampled_from(refs), HOSTILE_TEXT)
    env = st.one_of(st.just("dev"), HOSTILE_TEXT)
    path = st.one_of(HOSTILE_TEXT, st.sampled_from([str(tmp / "nope.json"), str(tmp), "/dev/null", "/proc/self/mem",
                                                   "/etc/shadow", str(tmp / "home")]))
    kind = draw(st.sampled_from(["env_show", "env_validate", "history", "init", "dep_add", "stage", "verb",
                                 "rev_show", "set", "rollback", "traffic_show", "file", "home", "schema", "plugins",
                                 "observe", "runtime_config"]))
    if kind == "env_show":
        return ["env", "show", draw(env)]
    if kind == "env_validate":
        return ["env", "validate", draw(env)]
    if kind == "history":
        return ["env", "history", draw(env), "--limit", draw(NUMBERS)]
    if kind == "init":
        return ["env", "init", draw(env), "--deployer", draw(st.one_of(st.just(recording_plugin.NAME), HOSTILE_TEXT,
                                                                         st.just(recording_plugin.NAME + "@1.0.0"))),
                *draw(st.sampled_from([[], ["--listen", draw(HOSTILE_TEXT)], ["--name", draw(HOSTILE_TEXT)]]))]
    if kind == "dep_add":
        return ["deployment", "add", draw(env), draw(HOSTILE_TEXT), "--path-prefix", draw(HOSTILE_TEXT),
                "--host", draw(HOSTILE_TEXT)]
    if kind == "stage":
        extra = draw(st.lists(st.sampled_from(["--port", "--drain-seconds", "--replicas", "--command", "--image",
                                                "--health-path", "--env", "--digest", "--workdir", "--timeout"]),
                              max_size=3))
        argv = ["revision", "stage", draw(env), draw(ref), "--record-only"]
        for option in extra:
            argv += [option, draw(NUMBERS)]
        return argv
    if kind == "verb":
        return ["revision", draw(st.sampled_from(["warm", "drain", "archive"])), draw(env), draw(ref),
                *draw(st.sampled_from([[], ["--deployment", draw(ref)]])), "--timeout", draw(NUMBERS), "--record-only"]
    if kind == "rev_show":
        return ["revision", "show", draw(env), draw(ref)]
    if kind == "set":
        return ["traffic", "set", draw(env), draw(ref), draw(weights_args(refs)),
                *draw(st.sampled_from([[], ["--idempotency-key", draw(HOSTILE_TEXT)]])), "--record-only"]
    if kind == "rollback":
        return ["traffic", "rollback", draw(env), draw(ref), "--steps", draw(NUMBERS), "--record-only"]
    if kind == "traffic_show":
        return ["traffic", "show", draw(env), draw(ref)]
    if kind == "file":
        return [draw(st.sampled_from(["runtime-config", "env"])), *draw(st.sampled_from([[], ["validate"]])),
                "--file", draw(path)]
    if kind == "home":
        return ["--home", draw(path), "env", draw(st.sampled_from(["list", "show"])), "dev"][: draw(st.integers(4, 5))]
    if kind == "schema":
        return ["schema", draw(HOSTILE_TEXT)]
    if kind == "plugins":
        return ["plugins", "show", draw(HOSTILE_TEXT)]
    if kind == "observe":
        return ["env", "observe", draw(env)]
    return ["runtime-config", draw(env)]


@pytest.fixture
def arg_store(cli: Cli) -> dict[str, str]:
    cli.init(recording_plugin.NAME, answers={"region": "eu-west-1"})
    dep = cli.json("deployment", "add", "dev", "shop")["deployment_id"]
    a, b = cli.ready(), cli.ready()
    cli.json("traffic", "set", "dev", "shop", f"{a}=10000")
    return {"A": a, "B": b, "S": cli.stage(), "dep": dep}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_cli_arguments(cli: Cli, arg_store: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    outside = cli.tmp / "outside-watch"  # what a path escape would create is looked for here and in tmp
    outside.mkdir()
    monkeypatch.chdir(outside)  # relative paths land here, where anything created is seen
    top = {p.name for p in cli.tmp.iterdir()}

    @settings(max_examples=2000, **SETTINGS)
    @given(argv=commands(arg_store, cli.tmp), json_mode=st.booleans())
    def check(argv: list[str], json_mode: bool) -> None:
        TRIED["cli_arguments"] += 1
        env_before, config_before = cli.env_bytes(), cli.config_bytes()
        envs_before = set(os.listdir(cli.home / "environments"))
        result = cli.run(*argv, code=None, json_mode=json_mode)
        OUTCOMES[f"cli exit {result.exit_code}"] += 1
        shown = [a[:40] for a in argv]
        assert result.exit_code in DOCUMENTED_EXIT_CODES - {130}, (shown, result.exit_code, result.output[-800:])
        if result.exit_code != 0:
            check_error_output(result, json_mode=json_given(argv, json_mode))
            assert cli.env_bytes() == env_before, f"{shown} was refused but changed environment.json"
            assert cli.config_bytes() == config_before, f"{shown} was refused but changed runtime-config.json"
            assert set(os.listdir(cli.home / "environments")) == envs_before, shown
        assert {p.name for p in cli.tmp.iterdir()} <= top | {"hostile.json"}, shown
        assert list(outside.iterdir()) == []
        assert set(os.listdir(cli.home)) == {"environments"}, shown
        for name in set(os.listdir(cli.home / "environments")) - envs_before:  # a new env: only by a real init
            assert argv[:2] == ["env", "init"] and result.exit_code == 0 and argv[2] == name, shown
        assert [n for n in os.listdir(cli.env_dir()) if n.endswith(".tmp")] == []

    check()
    assert cli.json("env", "validate", "dev")["valid"] is True


def test_report_inputs_tried() -> None:
    """Prints how many hostile inputs the tests above tried (recorded in docs/reliability.md)."""
    print(f"\nhostile inputs tried: {sum(TRIED.values())} ({', '.join(f'{k} {v}' for k, v in TRIED.items())}); "
          f"outcomes: {', '.join(f'{k}: {v}' for k, v in sorted(OUTCOMES.items()))}; exit 70: 0")
