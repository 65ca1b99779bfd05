"""``apply`` against the recording test deployer (a real installed distribution).

Every test that uses the ``world`` fixture runs on each store backend (file, PostgreSQL,
S3: see ``store_backends``), through the store contract only.

The central property: an apply interrupted at any step (the provider fails at step k, or the
process dies right after step k, or dies during a canary pause) leaves a consistent recorded
environment, and running apply again reaches the very end state an uninterrupted apply
reaches, without staging anything twice and with a replayed traffic step being a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import recording_plugin
from greentic_core import desired, rollout
from greentic_core.apply import apply, current_plan
from greentic_core.cli import cli
from greentic_core.errors import GreenticError, ProviderError
from greentic_core.operator import Operator
from greentic_core.plan import Action, revision_name
from greentic_core.registry import Registry
from greentic_core.spec import Lifecycle
from greentic_core.store import Store, StoreOptions, open_store
from store_backends import BACKENDS, Backend, make_backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

ENV = "dev"

START = """
environment: dev
deployments:
  - bundle: shop
    hosts: [shop.test]
    revisions:
      - name: v1
        workload: {image: "shop:1"}
      - name: old
        workload: {image: "shop:0"}
    traffic: {v1: 90%, old: 10%}
"""

TARGET = """
environment: dev
deployments:
  - bundle: shop
    hosts: [shop.test]
    revisions:
      - name: v1
        workload: {image: "shop:1"}
      - name: v2
        drain_seconds: 5
        workload: {image: "shop:2", env: {COLOR: blue}}
    traffic: {v2: 100%}
    strategy:
      type: canary
      steps: [10%, 50%]
      pause_seconds: 5
  - bundle: api
    path_prefixes: [/api]
    revisions:
      - name: a1
        workload: {image: "api:1"}
      - name: a2
        workload: {image: "api:2"}
    traffic: {a1: 33.33%, a2: 66.67%}
"""

VERB = {"stage": "stage", "warm": "warm", "traffic": "apply_traffic_split", "drain": "drain", "archive": "archive"}


class Crash(Exception):
    """Stands for the process dying between two instructions."""


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.on_sleep = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep()
        self.now += seconds


class World:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: Backend | None = None) -> None:
        self.tmp = tmp_path
        self.home = backend.home if backend is not None else tmp_path / "home"
        self.store_args = ["--store", backend.url] if backend is not None else []
        self.fail_file = tmp_path / "fail"
        self.log = tmp_path / "calls.jsonl"
        monkeypatch.setenv(recording_plugin.FAIL_FILE_ENV, str(self.fail_file))
        monkeypatch.setenv(recording_plugin.LOG_ENV, str(self.log))
        monkeypatch.delenv(recording_plugin.FAIL_ENV, raising=False)
        monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
        self.store = (open_store(backend.url, home=self.home, options=StoreOptions(actor="tester", command="test"))
                      if backend is not None else Store(self.home / "environments"))
        self.op = Operator(self.store, Registry(use_cache=False), actor="tester", command="test")
        self.time = FakeTime()
        self.op.init_env(ENV, recording_plugin.NAME, answers={"region": "eu"})

    def apply(self, text: str, **kwargs: Any):
        return apply(self.op, ENV, desired.loads(text), sleep=self.time.sleep, clock=self.time.clock, **kwargs)

    def fail(self, verb: str) -> None:
        self.fail_file.write_text(verb)

    def heal(self) -> None:
        self.fail_file.unlink(missing_ok=True)

    def env(self):
        return self.store.load(ENV)

    def provider(self) -> dict[str, Any]:
        return json.loads((self.store.state_dir(ENV) / recording_plugin.STATE_FILE).read_text())

    def hooks(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def summary(self) -> dict[str, Any]:
        """The end state with ids replaced by names (ids differ from run to run)."""
        env = self.env()
        names = {r.revision_id: revision_name(r) or r.revision_id for r in env.revisions}
        out: dict[str, Any] = {}
        routes = self.provider()["routes"]
        for bundle in env.bundles:
            did = bundle.deployment_id
            revisions = sorted((names[r.revision_id], r.lifecycle.value, r.drain_seconds)
                               for r in env.revisions if r.deployment_id == did)
            split = env.split_for(did)
            state = rollout.load_state(self.store, ENV, did)
            out[bundle.bundle_id] = {
                "routes": (list(bundle.route_binding.hosts), list(bundle.route_binding.path_prefixes)),
                "revisions": revisions,
                "split": sorted((names[e.revision_id], e.weight_bps) for e in split.entries) if split else None,
                "provider_routes": sorted((names[r], w) for r, w in routes.get(did, {}).items()),
                "rollout": None if state is None else (state.phase, state.passed_steps, len(state.steps)),
            }
        return out


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recording_plugin.install(tmp_path_factory.mktemp("site"))


@pytest.fixture(params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path: Path, plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.syspath_prepend(str(plugin_site))
    return World(tmp_path, monkeypatch, make_backend(request.param, request, tmp_path, monkeypatch))


def assert_consistent(w: World) -> None:
    """What a reader may rely on whatever happened: valid, and weight only on ready revisions."""
    env = w.env()  # the store validates on load
    for split in env.traffic_splits:
        assert sum(e.weight_bps for e in split.entries) == 10_000
        for entry in split.entries:
            if entry.weight_bps:
                assert env.revision(entry.revision_id).lifecycle == Lifecycle.READY, entry


# --------------------------------------------------------------------------- the reference run


def reference(tmp_path: Path, plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list]:
    w = World(tmp_path / "reference", monkeypatch)
    w.apply(START)
    plan = current_plan(w.op, ENV, desired.loads(TARGET))
    w.apply(TARGET)
    return w.summary(), list(plan.steps)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory, plugin_site: Path) -> tuple[dict[str, Any], list]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_site))
        return reference(tmp_path_factory.mktemp("ref"), plugin_site, mp)


#: The steps of the reference plan (``traffic+pause``: a canary step that pauses).
STEPS = [
    "stage", "warm", "traffic+pause", "traffic+pause", "traffic", "drain", "archive",  # shop: canary, retire `old`
    "add-deployment", "stage", "stage", "warm", "warm", "traffic",  # api: new
]
STEP_COUNT = len(STEPS)
INTERRUPTIONS = [(k, mode) for k, action in enumerate(STEPS) for mode in ("provider-fails", "crash-after",
                                                                            "crash-in-pause")
                 if not (mode == "provider-fails" and action == "add-deployment")  # no provider call
                 and not (mode == "crash-in-pause" and not action.endswith("+pause"))]


def test_reference_end_state(expected: tuple[dict[str, Any], list]) -> None:
    summary, steps = expected
    assert [s.action.value + ("+pause" if s.canary and s.canary.pause_seconds else "") for s in steps] == STEPS
    shop, api = summary["shop"], summary["api"]
    assert shop["revisions"] == [("old", "archived", 30), ("v1", "ready", 30), ("v2", "ready", 5)]
    assert shop["split"] == [("v2", 10_000)] == shop["provider_routes"]
    assert shop["rollout"] == ("completed", 3, 3)
    assert api["split"] == [("a1", 3333), ("a2", 6667)] == api["provider_routes"]
    assert api["routes"] == ([], ["/api"])


@pytest.mark.parametrize("k, mode", INTERRUPTIONS)
def test_interrupted_apply_resumes_to_the_same_end_state(world: World, expected, k: int, mode: str) -> None:
    summary, steps = expected
    assert len(steps) == STEP_COUNT
    step = steps[k]
    world.apply(START)
    generations: dict[str, int] = {}

    def on_step(index: int, total: int, current, phase: str) -> None:
        if index != k:
            return
        if phase == "start" and mode == "provider-fails":
            world.fail(VERB[current.action.value])
        if phase == "start" and mode == "crash-in-pause":
            def die() -> None:
                world.time.on_sleep = None
                env = world.env()
                generations["split"] = env.split_for(env.bundles[0].deployment_id).generation
                raise Crash()
            world.time.on_sleep = die
        if phase == "done" and mode == "crash-after":
            raise Crash()

    with pytest.raises((ProviderError, Crash)) as caught:
        world.apply(TARGET, on_step=on_step)
    if mode == "provider-fails":
        assert "recording provider refused" in str(caught.value) and f"step {k + 1}/" in str(caught.value)
        assert caught.value.details["apply_step"] == k + 1
    assert_consistent(world)
    world.heal()

    remaining = current_plan(world.op, ENV, desired.loads(TARGET))
    if mode == "crash-after":  # the plan is exactly the rest of the interrupted one
        assert [s.describe() for s in remaining.steps] == [s.describe() for s in steps[k + 1:]] or \
            steps[k].action == Action.STAGE  # a new revision's id is known now, its name was before
    result = world.apply(TARGET)
    assert world.summary() == summary
    if mode == "crash-in-pause":  # the step whose pause was interrupted is replayed: same key, no new split
        replayed = result.results[0]
        assert replayed.step.canary is not None and replayed.step.canary.index == step.canary.index
        env = world.env()
        if step.canary.final:
            assert env.split_for(env.bundles[0].deployment_id).generation == generations["split"]
        audit = world.store.audit_events(ENV)
        assert any(e.get("verb") == "traffic.set" and e.get("outcome") == "replayed" for e in audit)
    # and once there, nothing more to do
    assert current_plan(world.op, ENV, desired.loads(TARGET)).empty
    assert world.apply(TARGET).results == ()


# --------------------------------------------------------------------------- behaviour


def test_apply_is_idempotent_and_plan_json(world: World) -> None:
    first = world.apply(START)
    assert [r.outcome for r in first.results] == ["done"] * len(first.results)
    before = world.env().generation
    assert world.apply(START).results == ()
    assert world.env().generation == before
    world.log.unlink(missing_ok=True)
    assert current_plan(world.op, ENV, desired.loads(START)).empty
    assert [h["hook"] for h in world.hooks()] == []  # planning never calls the provider


def test_traffic_is_moved_before_drain_and_warm_before_drain(world: World) -> None:
    world.apply(START)
    world.log.unlink(missing_ok=True)
    world.apply(TARGET)
    calls = [(h["hook"], h.get("revision_id") or h.get("deployment_id")) for h in world.hooks()
             if h["hook"] != "observe"]
    env = world.env()
    ids = {revision_name(r): r.revision_id for r in env.revisions}
    order = [c for c in calls if c[1] in (ids["v2"], ids["old"], env.bundles[0].deployment_id)]
    warm_v2 = order.index(("warm", ids["v2"]))
    drain_old = order.index(("drain", ids["old"]))
    last_route = max(i for i, c in enumerate(order) if c[0] == "apply_traffic_split")
    assert warm_v2 < drain_old and last_route < drain_old < order.index(("archive", ids["old"]))
    # every split the provider was asked to enforce sums to 10000 and routes only ready revisions
    for hook in world.hooks():
        if hook["hook"] == "apply_traffic_split":
            assert sum(hook["weights"].values()) == 10_000


def test_changed_workload_under_a_recorded_name_is_a_conflict(world: World) -> None:
    world.apply(START)
    changed = START.replace('"shop:1"', '"shop:1b"')
    with pytest.raises(GreenticError) as caught:
        world.apply(changed)
    assert caught.value.kind == "conflict" and "immutable" in caught.value.message
    assert "new name" in caught.value.hint


def test_analysis_without_metrics_pauses_then_promote(world: World) -> None:
    world.apply(START)
    text = TARGET.replace("pause_seconds: 5", "pause_seconds: 5\n      analysis: {max_error_rate: 0.1, min_requests: 5}")
    with pytest.raises(rollout.RolloutPaused) as caught:
        world.apply(text)
    assert "no request metrics" in caught.value.message
    did = world.env().bundles[0].deployment_id
    state = rollout.load_state(world.store, ENV, did)
    assert state.phase == "paused" and state.passed_steps == 0 and state.analyses[0]["verdict"] == "inconclusive"
    assert world.env().split_for(did).entries[-1].weight_bps == 1000  # held at the first step
    plan = current_plan(world.op, ENV, desired.loads(text))
    assert any("paused" in note for note in plan.notes)
    with pytest.raises(rollout.RolloutPaused):  # apply does not run over a pause
        world.apply(text)
    promoted = rollout.promote(world.op, ENV, "shop")
    assert promoted.phase == "completed" and promoted.promoted
    result = world.apply(text)  # the rest: drain and archive `old`, then the api deployment
    assert [r.step.action.value for r in result.results][:2] == ["drain", "archive"]
    assert world.summary()["shop"]["split"] == [("v2", 10_000)]


def test_abort_blocks_the_target_until_resume(world: World) -> None:
    world.apply(START)
    text = TARGET.replace("pause_seconds: 5", "pause_seconds: 5\n      analysis: {min_requests: 5}")
    with pytest.raises(rollout.RolloutPaused):
        world.apply(text)
    state = rollout.abort(world.op, ENV, "shop", reason="looks wrong")
    assert state.phase == "aborted" and state.reason == "looks wrong"
    env = world.env()
    did = env.bundles[0].deployment_id
    names = {r.revision_id: revision_name(r) for r in env.revisions}
    assert sorted((names[e.revision_id], e.weight_bps) for e in env.split_for(did).entries) == \
        [("old", 1000), ("v1", 9000)]  # the stable revisions at their baseline weights
    assert {names[r.revision_id]: r.lifecycle for r in env.revisions}["v2"] == Lifecycle.FAILED
    audit = world.store.audit_events(ENV)
    assert any(e["verb"] == "revision.fail" and e["reason"] == "looks wrong" for e in audit)
    with pytest.raises(rollout.RolloutBlocked) as caught:
        world.apply(text)
    assert "aborted" in caught.value.message and "rollout resume" in caught.value.hint
    assert world.summary()["api"]["split"] == [("a1", 3333), ("a2", 6667)]  # the other deployment went on
    rollout.resume(world.op, ENV, "shop")
    retry = text.replace("min_requests: 5}", "min_requests: 5, on_inconclusive: pass}")
    world.apply(retry)  # warms the failed canary again and rolls out
    assert world.summary()["shop"]["split"] == [("v2", 10_000)]


# --------------------------------------------------------------------------- the CLI


def test_cli_plan_apply_and_rollout_status(world: World, tmp_path: Path) -> None:
    runner = CliRunner()
    start, target = tmp_path / "start.yaml", tmp_path / "target.json"
    start.write_text(START)
    doc = desired.unstructure(desired.loads(TARGET.replace("pause_seconds: 5", "pause_seconds: 0")))
    target.write_text(json.dumps(doc))

    def run(*args: str, code: int = 0):
        result = runner.invoke(cli, ["--home", str(world.home), *world.store_args, "--actor", "tester", *args],
                               catch_exceptions=False)
        assert result.exit_code == code, result.stdout + result.stderr
        return result

    assert "6 step(s)" in run("plan", "-f", str(start), ENV).stdout
    run("apply", "-f", str(start), ENV)
    human = run("plan", "-f", str(start), ENV).stdout
    assert "matches" in human and "nothing to do" in human
    shown = run("plan", "-f", str(target), ENV).stdout
    assert "canary 1/3" in shown and "drain" in shown and "add-deployment" in shown
    planned = json.loads(run("--json", "plan", "-f", str(target), ENV).stdout)
    assert planned["ok"] and len(planned["plan"]["steps"]) == STEP_COUNT
    applied = json.loads(run("--json", "apply", "-f", str(target), ENV).stdout)
    assert applied["complete"] and len(applied["steps"]) == STEP_COUNT
    status = json.loads(run("--json", "rollout", "status", ENV, "shop").stdout)
    assert status["rollout"]["phase"] == "completed"
    assert "completed" in run("rollout", "status", ENV, "shop").stdout
    again = json.loads(run("--json", "apply", "-f", str(target), ENV).stdout)
    assert again["steps"] == []
    refused = json.loads(run("--json", "rollout", "pause", ENV, "shop", code=3).stdout)
    assert refused["ok"] is False and refused["kind"] == "conflict"
    schema = json.loads(run("schema", "deploy").stdout)
    assert schema["title"] == "greentic.desired-state.v1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments: [{bundle: x, revisons: []}]")
    error = json.loads(run("--json", "plan", "-f", str(bad), ENV, code=2).stdout)
    assert "revisons" in error["message"]


# --------------------------------------------------------------------------- the analysis (pure)


def test_analysis_verdicts() -> None:
    from greentic_core.desired import Analysis

    gate = Analysis(max_error_rate=0.05, max_p99_ms=200, min_requests=10)
    start = {"c": {"requests": 100, "errors": 1, "p99_ms": 10.0}}

    def judge(requests: int, errors: int, p99: float = 10.0, **kwargs: Any):
        end = {"c": {"requests": 100 + requests, "errors": 1 + errors, "p99_ms": p99}}
        return rollout.analyse(kwargs.pop("analysis", gate), canary=["c"], start=start, end=end, **kwargs)

    assert judge(50, 2).verdict == "pass"  # 4% over the window (the 1 error before it does not count)
    failed = judge(50, 3)
    assert failed.verdict == "fail" and failed.error_rate == 0.06 and "above 5.0%" in failed.reasons[0]
    assert judge(50, 0, p99=250).verdict == "fail"
    assert judge(5, 0).verdict == "inconclusive"  # too few requests to judge
    assert judge(5, 0, p99=900).verdict == "inconclusive"  # p99 of 5 requests is not judged either
    assert judge(5, 1).verdict == "fail"  # 1 failure > 5% of 10: no 10 requests can pass any more
    # counters that went back (the router restarted) count from zero
    restarted = rollout.analyse(gate, canary=["c"], start=start, end={"c": {"requests": 20, "errors": 0}})
    assert restarted.verdict == "pass" and restarted.requests == 20
    # no metrics at all: inconclusive when the analysis needs numbers
    assert rollout.analyse(gate, canary=["c"], start=None, end=None).verdict == "inconclusive"
    assert rollout.analyse(Analysis(), canary=["c"], start=None, end=None).verdict == "pass"

    class Seen:
        def __init__(self, serving: bool) -> None:
            self.present, self.serving, self.detail = True, serving, ""

    class Observation:
        def __init__(self, serving: bool) -> None:
            self.serving = serving

        def revision(self, rid: str) -> Seen:
            return Seen(self.serving)

    assert judge(50, 0, observation=Observation(False)).verdict == "fail"
    wrong = judge(50, 0, observation=Observation(True), expected={"s": 9000, "c": 1000},
                  observed_weights={"s": 10_000, "c": 0})
    assert wrong.verdict == "fail" and "enforces" in wrong.reasons[0]
