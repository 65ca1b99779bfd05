"""The plugin registry and the core side of the contract, against real installed distributions.

Every test installs distributions (``*.dist-info`` + modules, written by
:mod:`plugin_factory`) into a temporary directory on ``sys.path``; discovery goes through
``importlib.metadata`` as in production. Nothing is mocked: the cache tests only wrap the scan
function to prove when it runs (or make it fail, to prove it does not).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

import greentic_core.discovery as discovery_module
import greentic_core.registry as registry_module
from greentic_core import (
    DeployerError,
    InvalidAnswers,
    InvalidSplit,
    ProviderError,
    RevisionNotFound,
    SplitNotFound,
    WarmOutcome,
    __version__ as CORE_VERSION,
    hookimpl,
)
from greentic_core.codec import load_environment
from greentic_core.errors import PluginNotFound, PluginUnusable, VersionPinMismatch
from greentic_core.registry import GROUP, Registry, discover

from plugin_factory import (
    forget_modules,
    good_plugin_source,
    make_dist,
    marker_source,
    module_names,
    site_without_deployers,
)

FIXTURE = Path(__file__).parent / "fixtures" / "upstream-example.json"
R1 = "01JX3M0A1B2C3D4E5F6G7H8J9K"
R2 = "01JX3N5P7Q9R1S3T5V7W9X1Y3Z"
DEP = "01JX3K8M2N4P6Q8R0S2T4V6W8X"
UNKNOWN_REV = "01JX3Z9Z9Z9Z9Z9Z9Z9Z9Z9Z9Z"
TEST = "acme.deployer.test"


# --------------------------------------------------------------------------- fixtures


class Site:
    """A directory on ``sys.path`` that test distributions are installed into."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def add(self, dist_name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
        info = make_dist(self.root, dist_name, version, modules, entry_points)
        self.modules.extend(module_names(modules))
        importlib.invalidate_caches()  # the directory listing may be cached within one mtime tick
        return info

    def add_good(self, module: str = "acme_good", dist: str = "acme-deployer-test", version: str = "1.0.0",
                 name: str = TEST, **source_args) -> Path:
        source_args.setdefault("version", version)
        return self.add(dist, version, {f"{module}.py": good_plugin_source(path=name, **source_args)},
                        {name: module})


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for var in (registry_module.ALLOW_ENV, registry_module.DENY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(registry_module.CACHE_ENV, str(tmp_path / "default-cache"))


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    installed = Site(root)
    yield installed
    forget_modules(installed.modules, under=root)


@pytest.fixture
def registry(tmp_path):
    def build(**kwargs) -> Registry:
        return Registry(cache_dir=tmp_path / "cache", **kwargs)

    return build


@pytest.fixture(scope="module")
def env():
    return load_environment(FIXTURE.read_bytes())


def verb_calls(record) -> list[dict]:
    return [c for c in record.plugin.CALLS if c["hook"] != "greentic_deployer_descriptor"]


# --------------------------------------------------------------------------- loading


def test_good_plugin_is_ok_with_descriptor_hooks_and_callable_through_bind(site, registry, env, tmp_path):
    site.add_good()
    reg = registry()
    record = reg.record(TEST)

    assert record.status == "ok", record.reason
    assert (record.distribution, record.dist_version) == ("acme-deployer-test", "1.0.0")
    assert record.descriptor.path == TEST and record.descriptor.version == "1.0.0"
    assert {"greentic_warm_revision", "greentic_observe", "greentic_conformance_sandbox"} <= set(record.hooks)
    assert record.has_sandbox and record.warnings == []

    deployer = reg.bind(f"{TEST}@1.0.0", {"region": "eu"}, tmp_path / "state")
    outcome = deployer.warm(env, R1)

    assert outcome == WarmOutcome(detail={"revision_id": R1})
    assert verb_calls(record) == [{
        "hook": "greentic_warm_revision", "plugin": TEST, "revision_id": R1,
        "answers": {"region": "eu"}, "state_dir": str(tmp_path / "state"),
    }]
    assert deployer.observe(env).revision(R1).serving


BROKEN_MODULES = {
    "import_error": ("import acme_sdk_that_is_not_installed\n", "ModuleNotFoundError"),
    "syntax_error": ("def greentic_warm_revision(:\n    pass\n", "SyntaxError"),
    "raises_at_import": ("raise RuntimeError('cannot reach the control plane at import')\n", "RuntimeError"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_MODULES))
def test_plugin_failing_at_import_is_broken_with_its_distribution_and_others_still_load(site, registry, kind):
    source, error = BROKEN_MODULES[kind]
    site.add("acme-broken", "0.3.1", {"acme_broken_mod.py": source}, {"acme.deployer.broken": "acme_broken_mod"})
    site.add_good()

    records = {r.name: r for r in registry().records()}

    broken = records["acme.deployer.broken"]
    assert broken.status == "broken"
    assert (broken.distribution, broken.dist_version) == ("acme-broken", "0.3.1")
    assert error in broken.reason and "acme_broken_mod" in broken.reason
    assert "\n" not in broken.reason
    assert "acme-broken" in broken.hint
    assert records[TEST].status == "ok"


def test_plugin_missing_a_verb_is_invalid_and_names_the_verb(site, registry):
    site.add_good(extra="del greentic_drain_revision")

    record = registry().record(TEST)

    assert record.status == "invalid"
    assert "greentic_drain_revision" in record.reason


def test_misspelled_hookimpl_is_invalid_with_did_you_mean(site, registry):
    site.add_good(extra="""
        @hookimpl
        def greentic_warm_revison(env, revision_id):
            return WarmOutcome()
    """)

    record = registry().record(TEST)

    assert record.status == "invalid"
    assert "greentic_warm_revison" in record.reason
    assert "did you mean greentic_warm_revision" in record.reason


def test_unmarked_greentic_function_is_invalid(site, registry):
    site.add_good(extra="""
        def greentic_render(env, answers):
            return []
    """)

    record = registry().record(TEST)

    assert record.status == "invalid"
    assert "greentic_render is not marked with @hookimpl" in record.reason
    assert "hookimpl" in record.hint


def test_wrong_argument_name_is_invalid_with_pluggys_message(site, registry):
    site.add_good(extra="""
        @hookimpl
        def greentic_warm_revision(env, revision):
            return WarmOutcome()
    """)

    record = registry().record(TEST)

    assert record.status == "invalid"
    assert "greentic_warm_revision" in record.reason
    assert "Argument(s) {'revision'} are declared in the hookimpl but can not be found in the hookspec" in record.reason
    assert "\n" not in record.reason


def test_two_distributions_claiming_one_name_are_a_conflict_naming_both(site, registry):
    site.add_good(module="acme_one", dist="acme-one", version="1.0.0")
    site.add_good(module="acme_two", dist="acme-two", version="2.0.0")

    record = registry().record(TEST)

    assert record.status == "conflict"
    assert "acme-one 1.0.0" in record.reason and "acme-two 2.0.0" in record.reason
    assert not any(m in sys.modules for m in ("acme_one", "acme_two"))


def test_plugin_requiring_a_newer_core_is_incompatible_naming_both_versions(site, registry):
    site.add_good(requires_core=">=9.1,<10")

    record = registry().record(TEST)

    assert record.status == "incompatible"
    assert ">=9.1,<10" in record.reason and CORE_VERSION in record.reason
    with pytest.raises(PluginUnusable, match="incompatible"):
        registry().bind(f"{TEST}@1.0.0", {})


def test_plugin_importing_a_heavy_sdk_at_load_is_reported(site, registry, monkeypatch):
    monkeypatch.delitem(sys.modules, "botocore", raising=False)
    site.add("fake-botocore", "0.0.1", {"botocore/__init__.py": "LOADED = True\n"}, {})
    site.add_good(extra="import botocore")

    record = registry().record(TEST)

    assert record.status == "ok"
    assert len(record.warnings) == 1 and "botocore" in record.warnings[0]
    assert "inside the hooks" in record.warnings[0]


def test_descriptor_path_must_equal_the_entry_point_name(site, registry):
    site.add("acme-deployer-test", "1.0.0", {"acme_good.py": good_plugin_source(path="acme.deployer.other")},
             {TEST: "acme_good"})

    record = registry().record(TEST)

    assert record.status == "invalid"
    assert "'acme.deployer.other'" in record.reason and f"{TEST!r}" in record.reason


@pytest.mark.parametrize("how", ["deny_env", "allow_env", "deny_arg", "allow_arg"])
def test_disabled_plugin_is_never_imported(site, registry, monkeypatch, tmp_path, how):
    marker = tmp_path / "imported.marker"
    site.add_good(extra=marker_source(marker))
    site.add_good(module="acme_other", dist="acme-other", name="acme.deployer.other")
    kwargs = {}
    if how == "deny_env":
        monkeypatch.setenv(registry_module.DENY_ENV, f"foo.bar, {TEST}")
    elif how == "allow_env":
        monkeypatch.setenv(registry_module.ALLOW_ENV, "acme.deployer.other")
    elif how == "deny_arg":
        kwargs["deny"] = [TEST]
    else:
        kwargs["allow"] = ["acme.deployer.other"]
    reg = registry(**kwargs)

    records = {r.name: r for r in reg.records()}

    assert records[TEST].status == "disabled"
    assert ("allow-list" in records[TEST].reason) == how.startswith("allow")
    assert records["acme.deployer.other"].status == "ok"
    assert not marker.exists() and "acme_good" not in sys.modules
    with pytest.raises(PluginUnusable, match="disabled"):
        reg.bind(f"{TEST}@1.0.0", {})
    assert not marker.exists()


def test_version_pin_is_caret_compatible(site, registry):
    site.add_good(version="1.2.0")
    reg = registry()

    assert reg.bind(f"{TEST}@1.0.0", {}).descriptor.version == "1.2.0"
    with pytest.raises(VersionPinMismatch) as info:
        reg.bind(f"{TEST}@2.0.0", {})

    assert "2.0.0" in info.value.message and "1.2.0" in info.value.message
    assert "acme-deployer-test" in info.value.message


def test_unknown_plugin_is_not_found_with_an_install_hint(site, registry):
    site.add_good()
    reg = registry()

    with pytest.raises(PluginNotFound) as far:
        reg.bind("initech.nomad@1.0.0", {})
    with pytest.raises(PluginNotFound) as near:
        reg.bind("acme.deployer.tset@1.0.0", {})

    assert "initech.nomad" in far.value.message
    assert "pip install greentic-deployer-nomad" in far.value.hint
    assert f"did you mean {TEST}" in near.value.hint


# --------------------------------------------------------------------------- contract


@pytest.fixture
def bound(site, registry, tmp_path):
    site.add_good()
    reg = registry()
    return reg, reg.bind(f"{TEST}@1.0.0", {"region": "eu"}, tmp_path / "state")


def test_unknown_revision_is_refused_before_the_provider(bound, env):
    reg, deployer = bound

    for verb in (deployer.stage, deployer.warm, deployer.drain, deployer.archive):
        with pytest.raises(RevisionNotFound, match=UNKNOWN_REV):
            verb(env, UNKNOWN_REV)

    assert verb_calls(reg.record(TEST)) == []


def test_missing_split_is_refused_before_the_provider(bound, env):
    reg, deployer = bound
    no_splits = attrs.evolve(env, traffic_splits=())

    with pytest.raises(SplitNotFound, match=DEP):
        deployer.apply_traffic_split(no_splits, DEP)

    assert verb_calls(reg.record(TEST)) == []


@pytest.mark.parametrize("weights", [(9000, 500), (10001, 0)])
def test_invalid_split_is_refused_before_the_provider(bound, env, weights):
    reg, deployer = bound
    split = env.split_for(DEP)
    entries = tuple(attrs.evolve(e, weight_bps=w) for e, w in zip(split.entries, weights))
    broken = attrs.evolve(env, traffic_splits=(attrs.evolve(split, entries=entries),))

    with pytest.raises(InvalidSplit):
        deployer.apply_traffic_split(broken, DEP)

    assert verb_calls(reg.record(TEST)) == []


def test_valid_split_reaches_the_provider(bound, env):
    reg, deployer = bound

    outcome = deployer.apply_traffic_split(env, DEP)

    assert outcome.applied_deployment_id == DEP
    assert deployer.observe(env).weights(DEP) == {R1: 9000, R2: 1000}
    assert [c["hook"] for c in verb_calls(reg.record(TEST))] == ["greentic_apply_traffic_split", "greentic_observe"]


def test_answers_failing_the_schema_are_refused_before_any_hook(site, registry):
    site.add_good()
    reg = registry()

    with pytest.raises(InvalidAnswers) as unknown_key:
        reg.bind(f"{TEST}@1.0.0", {"regoin": "eu"})
    with pytest.raises(InvalidAnswers) as bad_secret:
        reg.bind(f"{TEST}@1.0.0", {"token": "hunter2-secret-value"})

    assert "regoin" in unknown_key.value.message
    assert ".token" in bad_secret.value.message
    assert "hunter2-secret-value" not in bad_secret.value.message
    assert "hunter2-secret-value" not in json.dumps(bad_secret.value.to_json())
    assert f"plugins show {TEST}" in bad_secret.value.hint
    assert verb_calls(reg.record(TEST)) == []


def test_secret_answer_value_never_appears_in_a_whole_object_error(site, registry):
    site.add_good(extra='ANSWERS_SCHEMA["maxProperties"] = 1')

    with pytest.raises(InvalidAnswers) as info:
        registry().bind(f"{TEST}@1.0.0", {"token": "tok-hunter2-secret", "region": "eu"})

    assert "tok-hunter2-secret" not in info.value.message
    assert "'eu'" in info.value.message  # non-secret values still help the reader


def test_raw_exception_from_a_hook_becomes_provider_error_naming_plugin_distribution_and_verb(site, registry, env):
    site.add_good(extra="""
        @hookimpl
        def greentic_warm_revision(revision_id):
            _record("greentic_warm_revision", revision_id=revision_id)
            raise KeyError("no capacity in pool 'blue'")
    """)
    reg = registry()
    deployer = reg.bind(f"{TEST}@1.0.0", {})

    with pytest.raises(ProviderError) as info:
        deployer.warm(env, R1)

    message = info.value.message
    assert TEST in message and "acme-deployer-test" in message and "greentic_warm_revision" in message
    assert "no capacity in pool" in message
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.details["verb"] == "greentic_warm_revision"
    assert [c["hook"] for c in verb_calls(reg.record(TEST))] == ["greentic_warm_revision"]


def test_deployer_error_from_a_hook_passes_through_unchanged(site, registry, env):
    site.add_good(extra="""
        from greentic_core import ProviderError

        @hookimpl
        def greentic_drain_revision(revision_id):
            raise ProviderError("drain of " + revision_id + " timed out at the load balancer", hint="retry")
    """)
    deployer = registry().bind(f"{TEST}@1.0.0", {})

    with pytest.raises(ProviderError) as info:
        deployer.drain(env, R1)

    assert info.value.message == f"drain of {R1} timed out at the load balancer"
    assert info.value.__cause__ is None


def test_hook_returning_the_wrong_type_becomes_provider_error(site, registry, env):
    site.add_good(extra="""
        @hookimpl
        def greentic_warm_revision(revision_id):
            return "warmed"
    """)
    deployer = registry().bind(f"{TEST}@1.0.0", {})

    with pytest.raises(ProviderError, match="returned str from greentic_warm_revision, expected WarmOutcome"):
        deployer.warm(env, R1)


class Audit:
    """A cross-cutting extension that wraps warm."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl(wrapper=True)
    def greentic_warm_revision(self, revision_id):
        self.seen.append(("before", revision_id))
        result = yield
        self.seen.append(("after", type(result).__name__))
        return result


@pytest.mark.parametrize("order", ["extension_first", "provider_first"])
def test_extension_may_wrap_a_verb(site, registry, env, order):
    site.add_good()
    reg = registry()
    audit = Audit()
    if order == "extension_first":
        reg.register_extension(audit, "audit")
        deployer = reg.bind(f"{TEST}@1.0.0", {})
    else:
        deployer = reg.bind(f"{TEST}@1.0.0", {})
        reg.register_extension(audit, "audit")

    deployer.warm(env, R1)

    assert audit.seen == [("before", R1), ("after", "WarmOutcome")]
    assert [c["hook"] for c in verb_calls(reg.record(TEST))] == ["greentic_warm_revision"]


def test_extension_implementing_a_verb_without_wrapper_is_refused(site, registry, env):
    site.add_good()
    reg = registry()
    deployer = reg.bind(f"{TEST}@1.0.0", {})

    class Hijack:
        @hookimpl
        def greentic_warm_revision(self, revision_id):
            return WarmOutcome(detail={"hijacked": True})

    with pytest.raises(PluginUnusable, match="without wrapper=True"):
        reg.register_extension(Hijack(), "hijack")

    assert deployer.warm(env, R1).detail == {"revision_id": R1}
    assert "hijack" not in dict(reg.pm.list_name_plugin())


@pytest.mark.parametrize("first", [TEST, "acme.deployer.other"])
def test_a_verb_reaches_only_the_bound_provider_whatever_the_load_order(site, registry, env, first):
    site.add_good()
    site.add_good(module="acme_other", dist="acme-other", name="acme.deployer.other")
    reg = registry()
    second = next(n for n in (TEST, "acme.deployer.other") if n != first)
    assert reg.record(first).ok and reg.record(second).ok

    reg.bind(f"{first}@1.0.0", {}).warm(env, R1)
    reg.bind(f"{second}@1.0.0", {}).drain(env, R2)

    assert [c["hook"] for c in verb_calls(reg.record(first))] == ["greentic_warm_revision"]
    assert [c["hook"] for c in verb_calls(reg.record(second))] == ["greentic_drain_revision"]


# --------------------------------------------------------------------------- discovery cache


def wait_for_fs_clock(directory: Path, deadline: float = 5.0) -> None:
    """Wait until a new file would get an mtime later than ``directory``'s (coarse fs clocks)."""
    before = os.stat(directory).st_mtime_ns
    probe = directory.parent / "mtime-probe"
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        probe.write_text("x")
        if os.stat(probe).st_mtime_ns > before:
            return
    raise AssertionError("the file-system clock did not advance")


def test_second_discover_returns_the_cached_result_without_scanning(site, tmp_path, monkeypatch):
    site.add_good()
    first = discover(GROUP, cache_dir=tmp_path / "cache")

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned although sys.path did not change")

    monkeypatch.setattr(discovery_module, "scan_entry_points", no_scan)
    second = discover(GROUP, cache_dir=tmp_path / "cache")

    assert second == first
    assert any(ep.name == TEST and ep.distribution == "acme-deployer-test" for ep in second)
    assert Registry(cache_dir=tmp_path / "cache").names() == sorted({ep.name for ep in first})


def test_installing_a_distribution_invalidates_the_cache(site, tmp_path, monkeypatch):
    site.add_good()
    discover(GROUP, cache_dir=tmp_path / "cache")
    scans = []
    real_scan = discovery_module.scan_entry_points
    monkeypatch.setattr(discovery_module, "scan_entry_points", lambda *a, **k: scans.append(1) or real_scan(*a, **k))

    wait_for_fs_clock(site.root)
    site.add_good(module="acme_new", dist="acme-new", name="acme.deployer.new")
    found = discover(GROUP, cache_dir=tmp_path / "cache")

    assert scans == [1]
    assert {"acme.deployer.new", TEST} <= {ep.name for ep in found}
    assert discover(GROUP, cache_dir=tmp_path / "cache") == found and scans == [1]


def test_registry_without_cache_always_scans(site, tmp_path, monkeypatch):
    site.add_good()
    discover(GROUP, cache_dir=tmp_path / "cache")  # a fresh cache that would be used
    scans = []
    real_scan = discovery_module.scan_entry_points
    monkeypatch.setattr(discovery_module, "scan_entry_points", lambda *a, **k: scans.append(1) or real_scan(*a, **k))

    assert TEST in Registry(use_cache=False, cache_dir=tmp_path / "cache").names()
    assert scans == [1]


def test_unreadable_cache_is_rebuilt(site, tmp_path):
    site.add_good()
    first = discover(GROUP, cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("entry-points-*.json")
    cache_file.write_text("{not json")

    assert discover(GROUP, cache_dir=tmp_path / "cache") == first
    assert json.loads(cache_file.read_text())["entry_points"]


# --------------------------------------------------------------------------- CLI (real subprocesses)


def run_cli(args, *, pythonpath: Path | None, cache: Path, argv: list[str] | None = None, extra_env=None):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", registry_module.ALLOW_ENV, registry_module.DENY_ENV)}
    environ.update({registry_module.CACHE_ENV: str(cache), "COLUMNS": "250", **(extra_env or {})})
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
    command = (argv or [sys.executable, "-m", "greentic_core"]) + list(args)
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120, cwd=cache.parent)


@pytest.fixture
def zoo(site, tmp_path):
    """One good plugin and one of every broken or invalid kind."""
    site.add_good()
    site.add("acme-import-error", "0.1.0", {"acme_ie.py": BROKEN_MODULES["import_error"][0]},
             {"acme.deployer.import-error": "acme_ie"})
    site.add("acme-syntax-error", "0.2.0", {"acme_se.py": BROKEN_MODULES["syntax_error"][0]},
             {"acme.deployer.syntax-error": "acme_se"})
    site.add("acme-raises", "0.3.0", {"acme_raises.py": BROKEN_MODULES["raises_at_import"][0]},
             {"acme.deployer.raises": "acme_raises"})
    site.add("acme-missing-verb", "0.4.0",
             {"acme_mv.py": good_plugin_source("acme.deployer.missing-verb", extra="del greentic_observe")},
             {"acme.deployer.missing-verb": "acme_mv"})
    site.add("acme-newer-core", "0.5.0",
             {"acme_nc.py": good_plugin_source("acme.deployer.newer-core", requires_core=">=5")},
             {"acme.deployer.newer-core": "acme_nc"})
    return site


EXPECTED_ZOO = {
    TEST: ("ok", "acme-deployer-test", "1.0.0", None),
    "acme.deployer.import-error": ("broken", "acme-import-error", "0.1.0", "ModuleNotFoundError"),
    "acme.deployer.syntax-error": ("broken", "acme-syntax-error", "0.2.0", "SyntaxError"),
    "acme.deployer.raises": ("broken", "acme-raises", "0.3.0", "RuntimeError"),
    "acme.deployer.missing-verb": ("invalid", "acme-missing-verb", "0.4.0", "greentic_observe"),
    "acme.deployer.newer-core": ("incompatible", "acme-newer-core", "0.5.0", ">=5"),
}


def test_cli_plugins_list_json_shows_every_plugin_with_status_distribution_and_reason(zoo, tmp_path):
    result = run_cli(["--json", "plugins", "list"], pythonpath=zoo.root, cache=tmp_path / "cli-cache")

    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    for name, (status, dist, version, reason) in EXPECTED_ZOO.items():
        plugin = listed[name]
        assert (plugin["status"], plugin["distribution"], plugin["version"]) == (status, dist, version), plugin
        if reason is None:
            assert plugin["reason"] is None and plugin["descriptor"]["path"] == name
        else:
            assert reason in plugin["reason"] and "\n" not in plugin["reason"], plugin
    assert result.stderr == ""


def test_cli_plugins_list_table_for_people(zoo, tmp_path):
    result = run_cli(["plugins", "list"], pythonpath=zoo.root, cache=tmp_path / "cli-cache")

    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name, (status, dist, version, _) in EXPECTED_ZOO.items():
        assert f"{dist}" in lines[name] and version in lines[name] and status in lines[name]


def test_cli_plugins_show(zoo, tmp_path):
    cache = tmp_path / "cli-cache"
    good = run_cli(["--json", "plugins", "show", TEST], pythonpath=zoo.root, cache=cache)
    broken = run_cli(["plugins", "show", "acme.deployer.raises"], pythonpath=zoo.root, cache=cache)
    missing = run_cli(["plugins", "show", "acme.deployer.tset"], pythonpath=zoo.root, cache=cache)

    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert doc["status"] == "ok" and doc["descriptor"]["answers_schema"]["additionalProperties"] is False
    assert "greentic_warm_revision" in doc["hooks"] and doc["conformance_sandbox"] is True
    assert broken.returncode == 0, broken.stderr
    assert "acme-raises 0.3.0" in broken.stdout and "status: broken" in broken.stdout
    assert "hint: reinstall or uninstall it" in broken.stdout
    assert missing.returncode == 7
    assert f"did you mean {TEST}" in missing.stderr


def test_cli_no_plugin_option_disables_without_importing(zoo, tmp_path):
    log = tmp_path / "calls.jsonl"
    result = run_cli(["--json", "--no-plugin", TEST, "plugins", "list"], pythonpath=zoo.root,
                     cache=tmp_path / "cli-cache", extra_env={"GREENTIC_TEST_CALL_LOG": str(log)})

    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed[TEST]["status"] == "disabled"
    entered = [json.loads(line)["plugin"] for line in log.read_text().splitlines()] if log.exists() else []
    assert TEST not in entered and "acme.deployer.newer-core" in entered  # descriptors log their call


def test_cli_with_no_plugins_says_how_to_install_one(tmp_path):
    argv = site_without_deployers(tmp_path / "plugin-free-site")

    as_json = run_cli(["--json", "plugins", "list"], pythonpath=None, cache=tmp_path / "cli-cache", argv=argv)
    for_people = run_cli(["plugins", "list"], pythonpath=None, cache=tmp_path / "cli-cache", argv=argv)

    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["plugins"] == []
    assert "pip install greentic-deployer-" in doc["hint"]
    assert for_people.returncode == 0, for_people.stderr
    assert "pip install greentic-deployer-" in for_people.stdout


def test_deployer_error_is_the_base_of_contract_errors():
    for cls in (RevisionNotFound, SplitNotFound, InvalidSplit, InvalidAnswers, ProviderError):
        assert issubclass(cls, DeployerError)


# --------------------------------------------------------------------------- version checks
# The registry decides the version pin and ``requires_core`` without importing semver or
# packaging (start-up time); these properties hold it to what those libraries decide.

from hypothesis import given, strategies as st  # noqa: E402

_NUMBER = st.sampled_from(["0", "1", "2", "3", "10", "01"]) | st.integers(0, 30).map(str)
_IDENT = st.sampled_from(["alpha", "rc", "1", "0", "x-y", "01"])
_SEMVERISH = st.builds(
    lambda major, minor, patch, pre, build: f"{major}.{minor}.{patch}" + (f"-{pre}" if pre else "") + (f"+{build}" if build else ""),
    _NUMBER, _NUMBER, _NUMBER, st.none() | st.lists(_IDENT, min_size=1, max_size=2).map(".".join),
    st.none() | st.sampled_from(["b1", "build.5"]),
) | st.text(alphabet="0123456789.-+ab", max_size=12)


def _semver_caret(pinned: str, installed: str) -> bool:
    """The check as it was written with the semver library."""
    import semver

    p, i = semver.Version.parse(pinned), semver.Version.parse(installed)
    if i < p.replace(prerelease=None, build=None) and not (i.major == p.major and i.minor == p.minor and i.patch == p.patch):
        return False
    if p.major != i.major:
        return False
    return p.major != 0 or p.minor == i.minor


@given(_SEMVERISH, _SEMVERISH)
def test_caret_compatible_agrees_with_the_semver_library(pinned, installed):
    try:
        expected = _semver_caret(pinned, installed)
    except ValueError:
        with pytest.raises(ValueError):
            registry_module.caret_compatible(pinned, installed)
        return
    assert registry_module.caret_compatible(pinned, installed) is expected


_VERSION = st.lists(st.integers(0, 12).map(str), min_size=1, max_size=4).map(".".join)
_CLAUSE = st.builds(
    lambda op, space, version: f"{op}{space}{version}",
    st.sampled_from([">=", "<=", "==", "!=", "<", ">", "~=", "===", "=", ""]),
    st.sampled_from(["", " ", "\t"]),
    _VERSION | st.sampled_from(["0.1.*", "1.0rc1", "0.2.dev0", "1.0+local", "1.0.post1", "a"]),
)
_SPECIFIER = st.lists(_CLAUSE, max_size=3).map(",".join) | st.text(alphabet="<>=!~0123456789., *", max_size=12)


@given(_SPECIFIER, _VERSION | st.sampled_from(["0.1.0", "0.2.0rc1", "1.0.post1", "0.1.0.dev1"]))
def test_core_requirement_agrees_with_packaging(specifier, version):
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    try:
        expected = SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except InvalidSpecifier:
        with pytest.raises(ValueError):
            registry_module.core_requirement_met(specifier, version)
        return
    assert registry_module.core_requirement_met(specifier, version) is expected


def test_the_shipped_plugins_requirement_is_decided_without_packaging():
    """The form every shipped plugin declares takes the fast path (no packaging import)."""
    assert registry_module._simple_contains(">=0.1,<0.2", "0.1.0") is True
    assert registry_module._simple_contains(">=0.1,<0.2", "0.2.0") is False
    assert registry_module._simple_contains("~=0.1", "0.1.0") is None
