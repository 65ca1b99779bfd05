"""End-to-end tests of the ``greentic-deployer`` CLI against real installed plugins.

Most tests drive :data:`greentic_core.cli.cli` through click's ``CliRunner`` against the
recording deployer of :mod:`recording_plugin`, installed as a real distribution (module +
``.dist-info``) in a directory put on ``sys.path``. Its hooks append every call to a JSON-lines
log, including what ``environment.json`` held *while the provider ran*, which is how these
tests prove the order precondition -> provider -> record. A few tests run real subprocesses
(``python -m greentic_core``), and one runs two revisions of a real app through the real
local-process provider and its router.

Every test of the ``gd``/``shop`` harness runs on every store backend (``--store``): the file
store, a real PostgreSQL cluster and a real moto S3 server (tests/store_backends.py), except
the few in :data:`FILE_ONLY`, which are about the file store's own layout. The harness reads
what was stored through the store contract, so the same assertions hold on every backend.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner, Result

import recording_plugin
from greentic_core.cli import cli
from greentic_core.store import StoreBackend, open_store, redact_url
from store_backends import BACKENDS, make_backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

SECRET = "tok-S3CRET-9f2c4e1b77"
CLICK_USAGE_ERRORS = ("UsageError", "MissingParameter", "NoSuchCommand", "BadParameter", "BadArgumentUsage",
                      "BadOptionUsage", "NoSuchOption")
PLUGIN = recording_plugin.NAME
REPO = Path(__file__).resolve().parents[1]

#: tests of the harness that run on the file store only, and why (every other one runs on each
#: backend of store_backends.BACKENDS). Outside the harness, the real local-process test at the end
#: runs on the default file store only: it takes 8-10 s (two real revisions and the router), and the
#: local-process provider's state is local whatever the store.
FILE_ONLY = {
    "test_store_errors_exit_5": "breaks the file layout itself (a directory where environment.json belongs)",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames and metafunc.function.__name__ not in FILE_ONLY:
        metafunc.parametrize("backend_name", [b for b in BACKENDS if b != "external"])


@pytest.fixture
def backend_name() -> str:
    return "file"  # FILE_ONLY tests


# --------------------------------------------------------------------------- harness


class Deployer:
    """Runs the CLI in-process against one temporary store, collecting every output."""

    def __init__(self, tmp_path: Path, site: Path, store_url: str | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        self.tmp = tmp_path
        self.site = site
        self.home = tmp_path / "home"
        #: None: the default file store at --home (no --store given); else the backend's URL
        self.store_url = store_url
        self.secrets = secrets
        self._store: StoreBackend | None = None
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "calls.jsonl"
        self.fail_file = tmp_path / "fail-verbs"
        self.outputs: list[str] = []
        self.runner = CliRunner()

    # -- environment of every run ----------------------------------------------------------

    def env_vars(self, **extra: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "GREENTIC_CACHE_DIR": str(self.cache),
            recording_plugin.LOG_ENV: str(self.log),
            recording_plugin.FAIL_FILE_ENV: str(self.fail_file),
            recording_plugin.FAIL_ENV: None,
            "GREENTIC_HOME": None,
            "GREENTIC_STORE": None,
            "GREENTIC_REC_STORE": self.store_url,  # where the recording deployer reads the stored document
            "GREENTIC_DEPLOYERS": None,
            "GREENTIC_DISABLE_DEPLOYERS": None,
        }
        env.update(extra)
        return env

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
        env.update({k: v for k, v in self.env_vars().items() if v is not None})
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(extra)
        return env

    # -- running -------------------------------------------------------------------------------

    def global_args(self) -> list[str]:
        """``--home HOME`` and, on a backend other than the default file store, ``--store URL``."""
        return ["--home", str(self.home)] + (["--store", self.store_url] if self.store_url else [])

    def command_line(self, *args: str) -> str:
        """The command line as the audit log records it (the store URL's password hidden)."""
        shown = [redact_url(a) if a == self.store_url else a for a in self.global_args()]
        return shlex.join(["greentic-deployer", *shown, *args])

    def run(self, *args: str, code: int = 0, json_mode: bool = True, actor: str | None = "tester",
            env: dict[str, str | None] | None = None) -> Result:
        argv = self.global_args()
        if actor is not None:
            argv += ["--actor", actor]
        if json_mode:
            argv.append("--json")
        argv += [str(a) for a in args]
        result = self.runner.invoke(cli, argv, env=self.env_vars(**(env or {})), catch_exceptions=False)
        self.outputs.append(result.stdout + result.stderr)
        assert result.exit_code == code, (
            f"{' '.join(args)}: exit {result.exit_code}, expected {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def json(self, *args: str, code: int = 0, **kwargs: Any) -> dict[str, Any]:
        result = self.run(*args, code=code, **kwargs)
        doc = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
        if code == 0:
            assert doc.get("ok", True) is True, doc
        else:
            assert doc["ok"] is False and doc["kind"] and doc["message"], doc
        return doc

    def error(self, *args: str, code: int, kind: str, **kwargs: Any) -> dict[str, Any]:
        doc = self.json(*args, code=code, **kwargs)
        assert doc["kind"] == kind, doc
        return doc

    def sub(self, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        """``python -m greentic_core --home HOME ARGS`` in a real subprocess."""
        proc = subprocess.run([sys.executable, "-m", "greentic_core", *self.global_args(), *args],
                              env=self.subprocess_env(**extra), capture_output=True, text=True, timeout=timeout)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    # -- what happened -------------------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def hooks(self) -> list[str]:
        return [c["hook"] for c in self.calls() if c.get("phase") is None]

    def clear_calls(self) -> None:
        self.log.unlink(missing_ok=True)

    def fail(self, *verbs: str) -> None:
        self.fail_file.write_text(",".join(verbs))

    def heal(self) -> None:
        self.fail_file.unlink(missing_ok=True)

    def store(self) -> StoreBackend:
        """The store the commands use, for reading what they stored (through the contract)."""
        if self._store is None:
            self._store = open_store(self.store_url or f"file://{self.home}", home=self.home)
        return self._store

    def env_dir(self, env_id: str = "dev") -> Path:
        """The environment's directory in the file store (FILE_ONLY tests)."""
        return self.home / "environments" / env_id

    def env_bytes(self, env_id: str = "dev") -> bytes:
        return self.store().export(env_id).document

    def runtime_config_bytes(self, env_id: str = "dev") -> bytes | None:
        return self.store().export(env_id).runtime_config

    def drop_runtime_config(self, env_id: str = "dev") -> None:
        """Remove the published runtime-config behind the commands' back (as if lost)."""
        if self.store_url is None:
            (self.env_dir(env_id) / "runtime-config.json").unlink()
            return
        store = self.store()  # a shared store: replaced as stored, but without it
        store.import_snapshot(attrs.evolve(store.export(env_id), runtime_config=None), replace=True)

    def env_doc(self, env_id: str = "dev") -> dict[str, Any]:
        return json.loads(self.env_bytes(env_id))

    def lifecycle(self, rid: str, env_id: str = "dev") -> str:
        return next(r["lifecycle"] for r in self.env_doc(env_id)["revisions"] if r["revision_id"] == rid)

    def audit(self, env_id: str = "dev") -> list[dict[str, Any]]:
        return self.store().audit_events(env_id)

    def provider_state_file(self, env_id: str = "dev") -> Path:
        return self.store().state_dir(env_id) / recording_plugin.STATE_FILE

    def provider_state(self, env_id: str = "dev") -> dict[str, Any]:
        return json.loads(self.provider_state_file(env_id).read_text())

    # -- set-ups ---------------------------------------------------------------------------------

    def init(self, env_id: str = "dev", answers: dict[str, Any] | None = None) -> dict[str, Any]:
        path = self.tmp / f"answers-{env_id}.json"
        path.write_text(json.dumps({"region": "eu-west-1", "token": SECRET} if answers is None else answers))
        return self.json("env", "init", env_id, "--deployer", PLUGIN, "--answers", path)

    def add(self, bundle: str = "shop", env_id: str = "dev") -> str:
        return self.json("deployment", "add", env_id, bundle)["deployment_id"]

    def stage(self, deployment: str = "shop", env_id: str = "dev", *extra: str) -> str:
        return self.json("revision", "stage", env_id, deployment, *extra)["revision_id"]

    def ready(self, deployment: str = "shop", env_id: str = "dev") -> str:
        rid = self.stage(deployment, env_id)
        assert self.json("revision", "warm", env_id, rid)["lifecycle"] == "ready"
        return rid


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recording_plugin.install(tmp_path_factory.mktemp("site"))


@pytest.fixture
def gd(tmp_path: Path, plugin_site: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
       backend_name: str) -> Iterator[Deployer]:
    monkeypatch.syspath_prepend(str(plugin_site))
    if backend_name == "file":
        deployer = Deployer(tmp_path, plugin_site)
    else:
        backend = make_backend(backend_name, request, tmp_path, monkeypatch)
        assert backend.home == tmp_path / "home"
        deployer = Deployer(tmp_path, plugin_site, backend.url, backend.secrets)
    yield deployer
    if deployer._store is not None:
        deployer._store.close()
    for secret in deployer.secrets:  # the store URL's password or the S3 key: never printed
        assert all(secret not in out for out in deployer.outputs)


@pytest.fixture
def shop(gd: Deployer) -> Deployer:
    """An environment ``dev`` (recording deployer, secret token) with a deployment ``shop``."""
    gd.init()
    gd.dep = gd.add("shop")
    return gd


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


# --------------------------------------------------------------------------- order: precondition -> provider -> record


def test_stage_and_warm_call_the_provider_before_recording(shop: Deployer) -> None:
    shop.clear_calls()
    rid = shop.stage()
    [call] = shop.calls()
    assert call["hook"] == "stage" and call["revision_id"] == rid
    assert call["stored_lifecycle"] == "absent"  # the provider ran before the revision was recorded
    assert call["has_token"] is True  # the bound answers reached the provider
    assert shop.lifecycle(rid) == "staged"

    shop.clear_calls()
    doc = shop.json("revision", "warm", "dev", rid)
    assert (doc["from"], doc["lifecycle"], doc["record_only"]) == ("staged", "ready", False)
    warm, observe = shop.calls()
    assert (warm["hook"], warm["revision_id"], warm["stored_lifecycle"]) == ("warm", rid, "staged")
    assert observe["hook"] == "observe"  # the health gate asks the provider after warm
    assert shop.lifecycle(rid) == "ready"
    assert shop.provider_state()["revisions"][rid] == {"present": True, "serving": True}


def test_traffic_set_applies_through_the_provider_then_records(shop: Deployer) -> None:
    a, b = shop.ready(), shop.ready()
    assert shop.runtime_config_bytes() is None  # nothing is live yet
    shop.clear_calls()
    doc = shop.json("traffic", "set", "dev", "shop", f"{a}=90%,{b}=1000")
    assert doc["changed"] is True and doc["split"]["generation"] == 0
    [apply] = shop.calls()
    assert apply["hook"] == "apply_traffic_split" and apply["deployment_id"] == shop.dep
    assert apply["weights"] == {a: 9000, b: 1000}
    assert apply["stored_weights"] is None  # recorded only after the provider applied it
    split = shop.env_doc()["traffic_splits"][0]
    assert {e["revision_id"]: e["weight_bps"] for e in split["entries"]} == {a: 9000, b: 1000}
    config = json.loads(shop.runtime_config_bytes())
    assert config["schema"] == "greentic.runtime-config.v1"
    assert config == shop.json("runtime-config", "dev")

    shop.clear_calls()
    shop.json("traffic", "set", "dev", shop.dep[:14], f"{a}=12.5%,{b}=87.5%")
    assert shop.calls()[0]["stored_weights"] == {a: 9000, b: 1000}
    config = json.loads(shop.runtime_config_bytes())
    assert sorted(w for block in config["revisions"] for w in [block["weight_bps"]]) == [1250, 8750]
    assert shop.provider_state()["routes"][shop.dep] == {a: 1250, b: 8750}
    observed = shop.json("env", "observe", "dev")
    assert observed["deployments"][shop.dep]["weights"] == {a: 1250, b: 8750}


@pytest.mark.parametrize("args, code, kind", [
    (("revision", "warm", "dev", "7ZZZZZZZZZ"), 4, "not_found"),
    (("revision", "drain", "dev", "latest"), 3, "conflict"),  # staged -> draining is not an edge
    (("revision", "archive", "dev", "NOPE!"), 4, "not_found"),
    (("traffic", "set", "dev", "shop", "latest=10000"), 3, "conflict"),  # staged, not ready
    (("traffic", "set", "dev", "shop", "latest=9000"), 2, "usage"),  # does not sum to 10000
    (("traffic", "rollback", "dev", "shop"), 4, "not_found"),  # no split yet
    (("revision", "stage", "dev", "no-such-bundle"), 4, "not_found"),
])
def test_a_refused_precondition_never_reaches_the_provider(shop: Deployer, args, code, kind) -> None:
    shop.stage()
    before = shop.env_bytes()
    shop.clear_calls()
    shop.error(*args, code=code, kind=kind)
    assert shop.calls() == []  # not even the plugin's observe
    assert shop.env_bytes() == before


# --------------------------------------------------------------------------- provider failures


def _prepared(shop: Deployer) -> dict[str, str]:
    """dev/shop with: staged S, ready A (weight 10000), ready B (weight 0), inactive I."""
    ids = {"A": shop.ready(), "B": shop.ready(), "I": shop.ready()}
    shop.json("traffic", "set", "dev", "shop", f"{ids['A']}=5000,{ids['B']}=5000")
    shop.json("traffic", "set", "dev", "shop", f"{ids['A']}=10000,{ids['B']}=0")
    shop.json("revision", "drain", "dev", ids["I"])
    ids["S"] = shop.stage()
    return ids


@pytest.mark.parametrize("verb, args", [
    ("stage", lambda ids: ("revision", "stage", "dev", "shop")),
    ("warm", lambda ids: ("revision", "warm", "dev", ids["S"])),
    ("drain", lambda ids: ("revision", "drain", "dev", ids["B"])),
    ("archive", lambda ids: ("revision", "archive", "dev", ids["I"])),
    ("apply_traffic_split", lambda ids: ("traffic", "set", "dev", "shop", f"{ids['A']}=5000,{ids['B']}=5000")),
    ("apply_traffic_split", lambda ids: ("traffic", "rollback", "dev", "shop")),
])
def test_a_failing_provider_leaves_the_environment_byte_identical(shop: Deployer, verb, args) -> None:
    ids = _prepared(shop)
    env_before = shop.env_bytes()
    config_before = shop.runtime_config_bytes()
    events_before = len(shop.audit())
    shop.fail(verb)
    shop.clear_calls()

    result = shop.run(*args(ids), code=1, json_mode=False)
    assert f"error: recording provider refused {verb}" in result.stderr
    assert f"hint: remove {verb} from GREENTIC_REC_FAIL and retry" in result.stderr
    assert "Traceback" not in result.output
    assert verb in shop.hooks()  # the provider was called ...
    assert shop.env_bytes() == env_before  # ... and nothing was recorded
    assert shop.runtime_config_bytes() == config_before
    events = shop.audit()
    assert len(events) == events_before + 1
    event = events[-1]
    assert (event["outcome"], event["provider_verb"]) == ("error", verb)
    assert event["generation_before"] == event["generation_after"] == shop.env_doc()["generation"]
    assert "recording provider refused" in event["error"] and event["duration_ms"] >= 0
    assert event["verb"] == {"revision": "revision.", "traffic": "traffic."}[args(ids)[0]] + args(ids)[1]

    # JSON mode: the same failure as one document with a stable kind
    doc = shop.error(*args(ids), code=1, kind="provider")
    assert doc["error"] == "ProviderError" and doc["hint"]
    # fixed provider: the same command succeeds and records
    shop.heal()
    shop.json(*args(ids))
    assert shop.env_bytes() != env_before


def test_a_crashing_provider_is_reported_in_one_line_with_a_hint(shop: Deployer) -> None:
    rid = shop.stage()
    before = shop.env_bytes()
    shop.fail("warm:raw")
    result = shop.run("revision", "warm", "dev", rid, code=1, json_mode=False)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: plugin test.deployer.recording (greentic-test-recording) failed in "
                               "greentic_warm_revision: RuntimeError: boom in warm")
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert shop.env_bytes() == before
    # --debug shows the provider's traceback
    result = shop.run("--debug", "revision", "warm", "dev", rid, code=1, json_mode=False)
    assert "Traceback" in result.stderr and "RuntimeError: boom in warm" in result.stderr


def test_health_gate_failure_records_failed(shop: Deployer) -> None:
    rid = shop.stage()
    shop.fail("warm:unhealthy")
    doc = shop.error("revision", "warm", "dev", rid, code=3, kind="health_gate_failed")
    assert "provider-health" in doc["message"] and "serving=False" in doc["message"]
    assert f"greentic-deployer revision warm dev {rid}" in doc["hint"]
    assert shop.lifecycle(rid) == "failed"
    event = shop.audit()[-1]
    assert (event["verb"], event["outcome"]) == ("revision.warm", "health_gate_failed")
    assert event["generation_after"] == event["generation_before"] + 1  # the one failure that records

    # an observe that fails after warm also fails the gate
    shop.fail("observe")
    shop.error("revision", "warm", "dev", rid, code=3, kind="health_gate_failed")
    assert shop.lifecycle(rid) == "failed"
    # retry once healthy: failed -> staged -> warming -> ready
    shop.heal()
    doc = shop.json("revision", "warm", "dev", rid)
    assert (doc["from"], doc["lifecycle"]) == ("failed", "ready")


def test_provider_timeout_has_its_own_kind_and_exit_code(shop: Deployer) -> None:
    rid = shop.stage()
    before = shop.env_bytes()
    shop.fail("warm:timeout")
    doc = shop.error("revision", "warm", "dev", rid, "--timeout", "0.5", code=6, kind="timeout")
    assert doc["hint"] == "retry with a longer --timeout"
    assert shop.env_bytes() == before


# --------------------------------------------------------------------------- --record-only


def test_record_only_never_calls_the_provider_and_says_so(shop: Deployer) -> None:
    shop.clear_calls()
    rid = shop.json("revision", "stage", "dev", "shop", "--record-only")["revision_id"]
    doc = shop.json("revision", "warm", "dev", rid, "--record-only")
    assert (doc["lifecycle"], doc["record_only"], doc["provider"]) == ("ready", True, {})
    shop.json("traffic", "set", "dev", "shop", f"{rid}=10000", "--record-only")
    result = shop.run("traffic", "set", "dev", "shop", f"{rid}=100%", "--record-only",
                      "--idempotency-key", "k1", json_mode=False)
    assert "applied" in result.stdout
    rid2 = shop.json("revision", "stage", "dev", "shop", "--record-only")["revision_id"]
    shop.json("revision", "warm", "dev", rid2, "--record-only")
    shop.json("traffic", "set", "dev", "shop", f"{rid2}=10000,{rid}=0", "--record-only")
    result = shop.run("revision", "drain", "dev", rid, "--record-only", json_mode=False)
    assert "recorded only; provider not called" in result.stdout
    assert shop.json("traffic", "rollback", "dev", "shop", "--record-only", code=3)["kind"] == "conflict"
    assert shop.calls() == []
    events = [e for e in shop.audit() if e["verb"] != "env.init" and e["verb"] != "deployment.add"]
    assert events and all(e.get("record_only") is True for e in events), events
    assert all("duration_ms" not in e for e in events)


# --------------------------------------------------------------------------- references


def test_revision_prefixes_and_latest(shop: Deployer) -> None:
    ids = [shop.stage() for _ in range(4)]
    shared = _common_prefix(ids[0], ids[-1])
    assert shared  # ULIDs minted within seconds share (most of) their time prefix
    doc = shop.error("revision", "show", "dev", shared.lower(), code=2, kind="usage")
    assert "ambiguous" in doc["message"] and ids[0] in doc["message"]
    assert doc["hint"] == "give more characters of the id"

    for rid in ids:
        others = [o for o in ids if o != rid]
        n = max(len(_common_prefix(rid, o)) for o in others) + 1
        assert shop.json("revision", "show", "dev", rid[:n].lower())["revision"]["revision_id"] == rid
    assert shop.json("revision", "show", "dev", "latest")["revision"]["revision_id"] == ids[-1]
    assert shop.json("revision", "warm", "dev", "LATEST")["revision_id"] == ids[-1]
    # the shortest prefix that names ids[0] alone (computed for ids[0], not the loop's last id)
    n = max(len(_common_prefix(ids[0], o)) for o in ids[1:]) + 1
    shop.json("revision", "warm", "dev", ids[0][:n])
    doc = shop.json("traffic", "set", "dev", "shop", f"latest=30%,{ids[0][:n].lower()}=70%")
    assert {e["revision_id"]: e["weight_bps"] for e in doc["split"]["entries"]} == {ids[-1]: 3000, ids[0]: 7000}
    shop.error("revision", "show", "dev", "0000", code=4, kind="not_found")

    # `latest` needs one deployment; --deployment names it
    other = shop.add("cart")
    cart_rev = shop.stage("cart")
    doc = shop.error("revision", "warm", "dev", "latest", code=2, kind="usage")
    assert "--deployment" in doc["hint"]
    assert shop.json("revision", "warm", "dev", "latest", "--deployment", "cart")["revision_id"] == cart_rev
    assert shop.json("revision", "show", "dev", "latest", "--deployment", other[:20])["revision"]["revision_id"] \
        == cart_rev
    # revision list --deployment by prefix
    assert [r["revision_id"] for r in shop.json("revision", "list", "dev", "--deployment", "cart")["revisions"]] \
        == [cart_rev]


def test_deployment_prefixes_and_bundle_names(gd: Deployer) -> None:
    gd.init()
    deps = [gd.add(f"bundle-{i}") for i in range(3)]
    shared = _common_prefix(deps[0], deps[-1])
    doc = gd.error("revision", "stage", "dev", shared, code=2, kind="usage")
    assert "deployment prefix" in doc["message"] and "ambiguous" in doc["message"]
    for dep in deps:
        n = max(len(_common_prefix(dep, o)) for o in deps if o != dep) + 1
        rid = gd.stage(dep[:n].lower())
        assert gd.json("revision", "show", "dev", rid)["revision"]["deployment_id"] == dep
    rid = gd.stage("bundle-1")
    assert gd.json("revision", "show", "dev", rid)["revision"]["deployment_id"] == deps[1]
    gd.error("revision", "stage", "dev", "bundle-9", code=4, kind="not_found")


# --------------------------------------------------------------------------- drain, archive, rollback


def test_drain_is_refused_while_weighted_and_names_the_fix(shop: Deployer) -> None:
    a, b = shop.ready(), shop.ready()
    shop.json("traffic", "set", "dev", "shop", f"{a}=9000,{b}=1000")
    before = shop.env_bytes()
    shop.clear_calls()
    doc = shop.error("revision", "drain", "dev", b, code=3, kind="conflict")
    assert f"still receives 1000bps (10%) in the traffic split of deployment {shop.dep}" in doc["message"]
    assert "generation 0" in doc["message"]
    command = doc["details"]["command"]
    assert command == f"greentic-deployer traffic set dev {shop.dep} {a}=10000,{b}=0"
    assert command in doc["hint"]
    assert shop.calls() == [] and shop.env_bytes() == before

    result = shop.run("revision", "drain", "dev", b, code=3, json_mode=False)
    assert result.stderr.count("\n") == 2 and "hint: move its weight away first" in result.stderr

    # the command from the hint works, and then the drain does
    shop.json(*shlex.split(command)[1:])
    shop.clear_calls()
    doc = shop.json("revision", "drain", "dev", b)
    assert (doc["from"], doc["lifecycle"]) == ("ready", "inactive")
    assert shop.hooks() == ["drain"] and shop.calls()[0]["stored_lifecycle"] == "ready"
    assert shop.provider_state()["revisions"][b]["serving"] is False


def test_archive_keeps_the_spec_guard(shop: Deployer) -> None:
    a, b = shop.ready(), shop.ready()
    shop.json("traffic", "set", "dev", "shop", f"{a}=10000,{b}=0")
    shop.json("revision", "drain", "dev", b)
    shop.clear_calls()
    doc = shop.error("revision", "archive", "dev", b, code=3, kind="conflict")
    assert shop.calls() == []  # refused before the provider: the split still names it
    assert doc["message"]
    shop.json("traffic", "set", "dev", "shop", f"{a}=10000")
    doc = shop.json("revision", "archive", "dev", b)
    assert (doc["from"], doc["lifecycle"]) == ("inactive", "archived")
    assert shop.hooks() == ["apply_traffic_split", "archive"]
    assert b not in shop.provider_state()["revisions"]
    # archiving again is an idempotent retry; a staged revision may be archived directly
    shop.json("revision", "archive", "dev", b)
    s = shop.stage()
    assert shop.json("revision", "archive", "dev", s)["lifecycle"] == "archived"


def test_traffic_rollback_two_steps(shop: Deployer) -> None:
    a, b = shop.ready(), shop.ready()
    shop.json("traffic", "set", "dev", "shop", f"{a}=10000,{b}=0")
    shop.json("traffic", "set", "dev", "shop", f"{a}=5000,{b}=5000")
    shop.json("traffic", "set", "dev", "shop", f"{a}=0,{b}=10000")
    assert shop.json("traffic", "show", "dev", "shop")["splits"][0]["rollback_depth"] == 2
    shop.clear_calls()
    doc = shop.json("traffic", "rollback", "dev", "shop", "--steps", "2")
    weights = {e["revision_id"]: e["weight_bps"] for e in doc["split"]["entries"]}
    assert weights == {a: 10000, b: 0} and doc["split"]["generation"] == 3
    [apply] = shop.calls()
    assert apply["weights"] == weights and apply["stored_weights"] == {a: 0, b: 10000}
    assert shop.provider_state()["routes"][shop.dep] == weights
    event = shop.audit()[-1]
    assert (event["verb"], event["steps"], event["weights"]) == ("traffic.rollback", 2, weights)
    shop.error("traffic", "rollback", "dev", "shop", code=3, kind="conflict")  # nothing left to undo
    shop.error("traffic", "rollback", "dev", "shop", "--steps", "0", code=2, kind="usage")


def test_traffic_set_replay_with_the_same_key_is_a_no_op(shop: Deployer) -> None:
    a = shop.ready()
    first = shop.json("traffic", "set", "dev", "shop", f"{a}=10000", "--idempotency-key", "deploy-42")
    generation = shop.env_doc()["generation"]
    again = shop.json("traffic", "set", "dev", "shop", f"{a}=100%", "--idempotency-key", "deploy-42")
    assert (first["changed"], again["changed"]) == (True, False)
    assert shop.env_doc()["generation"] == generation
    assert shop.audit()[-1]["outcome"] == "replayed"


# --------------------------------------------------------------------------- --json everywhere


def test_every_command_prints_one_json_document(shop: Deployer, tmp_path: Path) -> None:
    env_file = tmp_path / "environment.json"  # a document file, as `--file` takes it
    env_file.write_bytes(shop.env_bytes())
    seen: Counter[str] = Counter()

    def ok(*args: str) -> dict[str, Any]:
        seen[" ".join(a for a in args[:2] if not a.startswith("-"))] += 1
        return shop.json(*args)

    ok("env", "list")
    ok("env", "show", "dev")
    ok("env", "validate", "dev")
    ok("env", "validate", "--file", str(env_file))
    a = ok("revision", "stage", "dev", "shop", "--command", "python -m http.server", "--env", "A=1")["revision_id"]
    b = ok("revision", "stage", "dev", shop.dep)["revision_id"]
    ok("revision", "warm", "dev", a)
    ok("revision", "warm", "dev", b)
    ok("traffic", "set", "dev", "shop", f"{a}=50%,{b}=50%")
    ok("traffic", "set", "dev", "shop", f"{a}=100%,{b}=0%")
    ok("traffic", "rollback", "dev", "shop")
    ok("traffic", "set", "dev", "shop", f"{a}=100%,{b}=0%")
    ok("traffic", "show", "dev")
    ok("traffic", "show", "dev", "shop")
    ok("revision", "drain", "dev", b)
    ok("traffic", "set", "dev", "shop", f"{a}=100%")
    ok("revision", "archive", "dev", b)
    ok("revision", "list", "dev")
    ok("revision", "show", "dev", a)
    ok("deployment", "add", "dev", "cart", "--host", "cart.example.com", "--path-prefix", "/cart")
    deployments = ok("deployment", "list", "dev")["deployments"]
    ok("env", "doctor", "dev")
    ok("env", "reconcile", "dev")
    history = ok("env", "history", "dev", "--limit", "3")
    ok("env", "observe", "dev")
    config = ok("runtime-config", "dev")
    ok("runtime-config", "--file", str(env_file))
    ok("schema", "environment")
    plugins = ok("plugins", "list")
    ok("plugins", "show", PLUGIN)
    ok("env", "init", "other", "--deployer", f"{PLUGIN}@1.0.0")

    assert set(seen) == {
        "env list", "env show", "env validate", "env doctor", "env reconcile", "env history", "env observe",
        "env init", "deployment add", "deployment list", "revision stage", "revision warm", "revision drain",
        "revision archive", "revision list", "revision show", "traffic set", "traffic rollback", "traffic show",
        "runtime-config dev", "runtime-config", "schema environment", "plugins list", "plugins show",
    }
    assert [d["bundle_id"] for d in deployments] == ["shop", "cart"]
    assert deployments[1]["hosts"] == ["cart.example.com"] and deployments[1]["path_prefixes"] == ["/cart"]
    assert len(history["events"]) == 3 and history["events"][0]["verb"] == "env.reconcile"
    assert config["env_id"] == "dev"
    assert any(p["name"] == PLUGIN and p["status"] == "ok" for p in plugins["plugins"])


@pytest.mark.parametrize("args, code, kind", [
    (("env", "show", "nope"), 4, "not_found"),
    (("env", "history", "nope"), 4, "not_found"),
    (("env", "init", "dev", "--deployer", PLUGIN), 3, "conflict"),
    (("env", "init", "x", "--deployer", "acme.deployer.nothing"), 7, "plugin"),
    (("env", "init", "x", "--deployer", f"{PLUGIN}@2.0.0"), 7, "plugin"),
    (("env", "init", "bad/id", "--deployer", PLUGIN), 2, "validation"),
    (("env", "init", "x", "--deployer", PLUGIN, "--listen", "nowhere"), 2, "usage"),
    (("env", "validate"), 2, "usage"),
    (("revision", "warm", "dev"), 2, "usage"),
    (("revision", "stage", "dev", "shop", "--image", "x", "--command", "y"), 2, "usage"),
    (("revision", "stage", "dev", "shop", "--health-path", "healthz"), 2, "usage"),
    (("revision", "show", "dev", "latest"), 4, "not_found"),
    (("traffic", "set", "dev", "shop", "A=5000,B=4000"), 2, "usage"),
    (("traffic", "set", "dev", "shop", "A=12.555%,B=87.445%"), 2, "usage"),
    (("traffic", "show", "dev", "shop"), 4, "not_found"),
    (("deployment", "add", "dev", "shop"), 3, "conflict"),
    (("deployment", "add", "dev", "web", "--path-prefix", "api"), 2, "validation"),
    (("deployment", "add", "dev", "web", "--host", "Web.Example.com:8080"), 2, "validation"),
    (("plugins", "show", "acme.deployer.nothing"), 7, "plugin"),
    (("no-such-command",), 2, "usage"),
    (("schema", "nothing"), 2, "usage"),
])
def test_errors_are_one_json_document_with_kind_and_exit_code(shop: Deployer, args, code, kind) -> None:
    doc = shop.error(*args, code=code, kind=kind)
    assert set(doc) >= {"ok", "kind", "message"}
    result = shop.run(*args, code=code, json_mode=False)  # and one line (plus a hint) for people
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if doc["error"] in CLICK_USAGE_ERRORS:  # click's own usage message
        assert lines[0].startswith("Usage: ") and lines[-1].startswith("Error: ")
    else:
        assert lines[0] == f"error: {doc['message']}" and len(lines) <= 2
        assert lines[1:] == ([f"hint: {doc['hint']}"] if doc.get("hint") else [])


def test_invalid_answers_are_refused_without_quoting_the_secret(gd: Deployer) -> None:
    doc = gd.error("env", "init", "dev", "--deployer", PLUGIN,
                   "--answers", _write(gd.tmp / "a.json", {"token": SECRET, "extra": 1}), code=2, kind="validation")
    assert "additional" in doc["message"].lower()
    doc = gd.error("env", "init", "dev", "--deployer", PLUGIN,
                   "--answers", _write(gd.tmp / "b.json", {"token": 12345}), code=2, kind="validation")
    assert "12345" not in json.dumps(doc)
    gd.error("env", "init", "dev", "--deployer", PLUGIN, "--answers", _write(gd.tmp / "c.json", [1]),
             code=2, kind="usage")
    assert not gd.store().exists("dev")
    assert all(SECRET not in out and "12345" not in out for out in gd.outputs)


def test_store_errors_exit_5(shop: Deployer) -> None:
    broken = shop.home / "environments" / "broken"
    (broken / "environment.json").mkdir(parents=True)
    shop.error("env", "show", "broken", code=5, kind="store")


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- audit log and secrets


def test_one_audit_event_per_mutation_and_the_secret_never_leaks(gd: Deployer) -> None:
    gd.init()
    gd.add("shop")
    a = gd.stage()
    b = gd.stage("shop", "dev", "--env", "MODE=canary")
    gd.json("revision", "warm", "dev", a)
    gd.json("revision", "warm", "dev", b, actor="alice")
    gd.json("traffic", "set", "dev", "shop", f"{a}=9000,{b}=1000")
    gd.json("traffic", "set", "dev", "shop", f"{a}=0,{b}=10000")
    gd.json("traffic", "rollback", "dev", "shop")
    gd.json("traffic", "set", "dev", "shop", f"{a}=0,{b}=10000")
    gd.json("revision", "drain", "dev", a)
    gd.json("traffic", "set", "dev", "shop", f"{b}=10000")
    gd.json("revision", "archive", "dev", a)
    gd.fail("warm:leak")  # a provider quoting the token in its error
    c = gd.stage()
    leak = gd.error("revision", "warm", "dev", c, code=1, kind="provider")
    assert "credentials *** rejected" in leak["message"] and leak["hint"] == "check the token ***"
    gd.run("revision", "warm", "dev", c, code=1, json_mode=False)
    gd.heal()
    gd.json("env", "reconcile", "dev")
    # reads: no events
    for args in (("env", "show", "dev"), ("env", "history", "dev"), ("revision", "list", "dev"),
                 ("env", "doctor", "dev"), ("env", "observe", "dev"), ("plugins", "show", PLUGIN)):
        gd.json(*args)
    gd.run("env", "show", "dev", json_mode=False)
    gd.run("env", "history", "dev", json_mode=False)

    events = gd.audit()
    verbs = [e["verb"] for e in events]
    assert verbs == [
        "env.init", "deployment.add", "revision.stage", "revision.stage", "revision.warm", "revision.warm",
        "traffic.set", "traffic.set", "traffic.rollback", "traffic.set", "revision.drain", "traffic.set",
        "revision.archive", "revision.stage", "revision.warm", "revision.warm",
        "env.reconcile", "env.reconcile", "env.reconcile", "env.reconcile", "env.reconcile",
    ]
    # reconcile: one event per provider call, then the summary
    assert [(e.get("provider_verb"), e.get("revision_id") or e.get("deployment_id")) for e in events[-5:]] == [
        ("archive", a), ("warm", b), ("stage", c), ("apply_traffic_split", events[1]["deployment_id"]), (None, None)]
    assert events[-1]["actions"] == 4
    for previous, event in zip(events, events[1:]):
        assert event["generation_before"] == previous["generation_after"]
    for event in events:
        assert {"time", "actor", "command", "verb", "outcome", "generation_before", "generation_after"} <= set(event)
        assert event["command"].startswith("greentic-deployer ")
        changed = event["generation_after"] - event["generation_before"]
        assert changed == (1 if event["outcome"] == "ok" and event["verb"] != "env.reconcile" else 0), event
        if event["verb"].startswith(("revision.", "traffic.")):
            assert isinstance(event["duration_ms"], int)
    assert events[0]["answers"] == {"region": "eu-west-1", "token": "***"}
    assert events[0]["actor"] == "tester" and events[5]["actor"] == "alice"
    assert events[5]["command"] == gd.command_line("--actor", "alice", "--json", "revision", "warm", "dev", b)
    assert [e["outcome"] for e in events[-7:-5]] == ["error", "error"]
    assert all(e["provider_verb"] == "warm" for e in events[-7:-5])

    # grep the whole home and every output for the secret: only the stored answers hold it
    holders = [p for p in gd.home.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    if gd.store_url is None:  # the file store: the answers file, private
        answers = gd.env_dir() / "env-packs" / "deployer" / "answers.json"
        assert holders == [answers]
        assert stat.S_IMODE(answers.stat().st_mode) == 0o600
    else:  # a shared store: nothing on this machine
        assert holders == []
    assert json.loads(gd.store().read_attachment("dev", "env-packs/deployer/answers.json"))["token"] == SECRET
    assert SECRET not in json.dumps(gd.audit())
    assert all(SECRET not in out for out in gd.outputs)
    assert SECRET not in gd.log.read_text()
    assert all(c["has_token"] for c in gd.calls() if "has_token" in c)  # but the provider got it


def test_the_actor_defaults_to_the_os_user(gd: Deployer) -> None:
    gd.init()
    gd.json("deployment", "add", "dev", "shop", actor=None)
    assert gd.audit()[-1]["actor"] == getpass.getuser()


# --------------------------------------------------------------------------- doctor and reconcile


def test_env_doctor_passes_then_fails_when_the_plugin_is_uninstalled(shop: Deployer) -> None:
    doc = shop.json("env", "doctor", "dev")
    assert {c["name"]: c["status"] for c in doc["checks"]} == {
        "environment-valid": "pass", "plugin-installed": "pass", "version-pin": "pass",
        "answers-valid": "pass", "runtime-config": "pass", "routes": "pass", "preflight:recording": "pass"}

    shop.fail("preflight")
    doc = shop.error("env", "doctor", "dev", code=1, kind="check_failed")
    assert "preflight:recording" in doc["message"]
    shop.heal()

    # uninstalled: a real process whose path lacks the plugin's site directory
    env = shop.subprocess_env()
    env["PYTHONPATH"] = ""
    proc = subprocess.run([sys.executable, "-m", "greentic_core", *shop.global_args(), "env", "doctor", "dev"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "plugin-installed" in proc.stdout and "fail" in proc.stdout
    assert f"no deployer plugin named '{PLUGIN}' is installed" in proc.stdout
    assert "1 check(s) failed" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "greentic_core", *shop.global_args(), "--json",
                           "revision", "stage", "dev", "shop"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7 and json.loads(proc.stdout)["kind"] == "plugin"


def test_env_reconcile_recalls_warm_for_ready_revisions_and_apply_for_splits(shop: Deployer) -> None:
    a, b = shop.ready(), shop.ready()
    staged = shop.stage()
    shop.json("traffic", "set", "dev", "shop", f"{a}=7500,{b}=2500")
    # the provider lost everything (a host restart)
    shop.provider_state_file().unlink()
    shop.drop_runtime_config()
    observed = shop.json("env", "observe", "dev")
    assert observed["revisions"] == {} and observed["deployments"] == {}
    doctor = shop.error("env", "doctor", "dev", code=1, kind="check_failed")
    assert "runtime-config" in doctor["message"]

    generation = shop.env_doc()["generation"]
    shop.clear_calls()
    doc = shop.json("env", "reconcile", "dev")
    assert doc["runtime_config_rewritten"] is True
    assert {(c["hook"], c.get("revision_id") or c.get("deployment_id")) for c in shop.calls()} == {
        ("warm", a), ("warm", b), ("stage", staged), ("apply_traffic_split", shop.dep)}
    assert {(x["verb"], x.get("revision_id") or x.get("deployment_id")) for x in doc["actions"]} == {
        ("warm", a), ("warm", b), ("stage", staged), ("apply_traffic_split", shop.dep)}
    observed = shop.json("env", "observe", "dev")
    assert observed["revisions"][a]["serving"] and observed["revisions"][b]["serving"]
    assert observed["deployments"][shop.dep]["weights"] == {a: 7500, b: 2500}
    assert shop.env_doc()["generation"] == generation  # reconcile records nothing new
    events = shop.audit()[-5:]
    assert [e["verb"] for e in events] == ["env.reconcile"] * 5
    assert sorted(e.get("provider_verb") or "" for e in events) == ["", "apply_traffic_split", "stage", "warm", "warm"]
    assert all(e["outcome"] == "ok" and e["generation_before"] == e["generation_after"] for e in events)
    shop.json("env", "doctor", "dev")

    # a failing provider during reconcile: reported, nothing recorded
    before = shop.env_bytes()
    shop.fail("apply_traffic_split")
    shop.error("env", "reconcile", "dev", code=1, kind="provider")
    assert shop.env_bytes() == before
    assert (shop.audit()[-1]["verb"], shop.audit()[-1]["outcome"]) == ("env.reconcile", "error")


# --------------------------------------------------------------------------- real subprocesses


def test_subprocess_json_exit_codes_and_audited_command_line(shop: Deployer) -> None:
    proc = shop.sub("--json", "--actor", "ci-bot", "revision", "stage", "dev", "shop")
    assert proc.returncode == 0, proc.stderr
    rid = json.loads(proc.stdout)["revision_id"]
    event = shop.audit()[-1]
    assert event["actor"] == "ci-bot"
    assert event["command"] == shop.command_line("--json", "--actor", "ci-bot", "revision", "stage", "dev", "shop")

    proc = shop.sub("revision", "warm", "dev", rid, GREENTIC_REC_FAIL="warm")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: recording provider refused warm (GREENTIC_REC_FAIL)",
                                        "hint: remove warm from GREENTIC_REC_FAIL and retry"]
    proc = shop.sub("--json", "revision", "show", "dev", "ZZZZ")
    assert proc.returncode == 4 and json.loads(proc.stdout)["kind"] == "not_found"
    proc = shop.sub("--json", "revision", "warm", "dev", rid)
    assert proc.returncode == 0 and json.loads(proc.stdout)["lifecycle"] == "ready"


def test_ctrl_c_during_a_provider_wait_leaves_the_state_unchanged(shop: Deployer) -> None:
    rid = shop.stage()
    before = shop.env_bytes()
    shop.clear_calls()
    proc = subprocess.Popen(
        [sys.executable, "-m", "greentic_core", *shop.global_args(), "revision", "warm", "dev", rid],
        env=shop.subprocess_env(GREENTIC_REC_FAIL="warm:slow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while not any(c.get("phase") == "waiting" for c in shop.calls()):
            assert time.monotonic() < deadline and proc.poll() is None, "the provider never started waiting"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted; the recorded state is unchanged" in err and "Traceback" not in err
    assert shop.env_bytes() == before
    event = shop.audit()[-1]
    assert (event["verb"], event["outcome"], event["revision_id"]) == ("revision.warm", "interrupted", rid)
    assert event["generation_before"] == event["generation_after"]
    # nothing is left locked: the next command runs
    assert shop.json("revision", "warm", "dev", rid)["lifecycle"] == "ready"


# --------------------------------------------------------------------------- the real local-process provider


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, str | None, dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("X-Greentic-Revision"), json.loads(response.read())


def test_two_revisions_through_the_local_process_provider(tmp_path: Path) -> None:
    pytest.importorskip("greentic_local_process.router")
    from greentic_local_process.sandbox import cleanup

    home, state = tmp_path / "home", tmp_path / "lp-state"
    listen = f"127.0.0.1:{_free_port()}"
    answers = _write(tmp_path / "answers.json", {"listen_addr": listen, "state_dir": str(state),
                                                 "stop_grace_seconds": 2})
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    env["GREENTIC_CACHE_DIR"] = str(tmp_path / "cache")
    app = f"{shlex.quote(sys.executable)} -m greentic_local_process.sample_app"

    script = Path(sys.executable).parent / "greentic-deployer"  # the installed console script
    command = [str(script)] if script.exists() else [sys.executable, "-m", "greentic_core"]

    def gd(*args: str, code: int = 0) -> dict[str, Any]:
        proc = subprocess.run([*command, "--home", str(home), "--json", *args],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, f"{args}: {proc.stdout}{proc.stderr}"
        return json.loads(proc.stdout)

    try:
        gd("env", "init", "lp", "--deployer", "greentic.deployer.local-process", "--answers", str(answers))
        gd("deployment", "add", "lp", "web")
        r1 = gd("revision", "stage", "lp", "web", "--command", app, "--drain-seconds", "1")["revision_id"]
        assert gd("revision", "warm", "lp", r1)["lifecycle"] == "ready"
        gd("traffic", "set", "lp", "web", f"{r1}=100%")
        status, served_by, body = _get(f"http://{listen}/")
        assert (status, served_by, body["revision"]) == (200, r1, r1)

        r2 = gd("revision", "stage", "lp", "web", "--command", app, "--drain-seconds", "1")["revision_id"]
        assert gd("revision", "warm", "lp", "latest")["revision_id"] == r2
        gd("traffic", "set", "lp", "web", f"{r1}=5000,{r2}=5000")
        seen = Counter(_get(f"http://{listen}/")[1] for _ in range(40))
        assert set(seen) == {r1, r2}, seen

        refused = gd("revision", "drain", "lp", r1, code=3)
        assert refused["kind"] == "conflict" and "traffic set" in refused["hint"]
        gd("traffic", "set", "lp", "web", f"{r1}=0,{r2}=100%")
        assert {_get(f"http://{listen}/")[1] for _ in range(10)} == {r2}
        assert gd("revision", "drain", "lp", r1)["lifecycle"] == "inactive"
        observed = gd("env", "observe", "lp")
        assert observed["revisions"][r1]["serving"] is False and observed["revisions"][r2]["serving"] is True
        gd("traffic", "set", "lp", "web", f"{r2}=10000")
        assert gd("revision", "archive", "lp", r1)["lifecycle"] == "archived"
        assert _get(f"http://{listen}/")[1] == r2
        assert gd("env", "doctor", "lp")["ok"] is True
        events = [e["verb"] for e in gd("env", "history", "lp")["events"]]
        assert events[0] == "revision.archive" and events[-1] == "env.init"
    finally:
        cleanup(state, 2.0)
