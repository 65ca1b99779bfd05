"""Properties of the planner over many generated desired states and recorded environments.

Recorded environments are built with the engines (then lifecycles forced), so they look like
what an operator could have left: every weighted split entry is ready, zero-weight leftovers
may name draining or inactive revisions, revisions may be unnamed (staged by hand), archived,
failed, half-warmed. Desired states name some of the same bundles and revisions (mostly with
the same workload), new ones, targets given in basis points or in percentages with three
decimals, and canary strategies.

For each pair the plan is run step by step through the pure engines, checking before each
step that it never routes traffic to a revision that is not ready at that point, never
drains or archives a revision that still has weight (or, for archive, any split entry), and
warms every new revision of a deployment before draining any old one; afterwards the
environment matches the file exactly and a new plan is empty.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from engine_helpers import NOW, empty_env, put_split, set_lifecycle, with_deployment
from greentic_core import desired as dsl
from greentic_core import lifecycle
from greentic_core.desired import NAME_KEY, interpolate, largest_remainder, to_basis_points
from greentic_core.plan import Action, PlanConflict, compute_plan, final_weights, resolve_ref, revision_name, simulate_step
from greentic_core.spec import Environment, Lifecycle, Workload

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUNDLES = ["shop", "api", "web"]
NAMES = ["v1", "v2", "v3", "v4", "v5"]
LIFECYCLES = [*Lifecycle, Lifecycle.READY, Lifecycle.READY, Lifecycle.READY]  # ready most often


def workload_for(bundle: str, tag: str) -> Workload:
    return Workload(image=f"{bundle}:{tag}", env={"TAG": tag})


# --------------------------------------------------------------------------- generators


@st.composite
def recorded_envs(draw: Any) -> Environment:
    env = empty_env("dev")
    for bundle in draw(st.lists(st.sampled_from(BUNDLES), unique=True, min_size=1, max_size=3)):
        env, did = with_deployment(env, bundle)
        names = draw(st.lists(st.sampled_from(NAMES) | st.none(), min_size=1, max_size=4))
        used: set[str] = set()
        for name in names:
            state = draw(st.sampled_from(LIFECYCLES))
            if name is not None and name in used and state != Lifecycle.ARCHIVED:
                name = None  # a name is live at most once (archived revisions may repeat it)
            if name is not None and state != Lifecycle.ARCHIVED:
                used.add(name)
            tag = name or f"hand-{draw(st.integers(0, 99))}"
            workload = workload_for(bundle, tag)
            if name is not None:
                workload = attrs.evolve(workload, extra={NAME_KEY: name})
            drain = 30 if draw(st.integers(0, 9)) else 0
            result = lifecycle.stage_revision(env, did, workload=workload, drain_seconds=drain, now=NOW)
            env = set_lifecycle(result.env, result.revision.revision_id, state)
        revisions = [r for r in env.revisions if r.deployment_id == did]
        ready = [r.revision_id for r in revisions if r.lifecycle == Lifecycle.READY]
        if ready and draw(st.integers(0, 4)):
            routed = draw(st.lists(st.sampled_from(ready), min_size=1, unique=True))
            cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(routed) - 1, max_size=len(routed) - 1)))
            weights = [b - a for a, b in zip([0, *cuts], [*cuts, 10_000])]
            entries = list(zip(routed, weights))
            leftovers = [r.revision_id for r in revisions
                         if r.lifecycle in (Lifecycle.DRAINING, Lifecycle.INACTIVE, Lifecycle.READY)
                         and r.revision_id not in routed]
            if leftovers:
                entries += [(rid, 0) for rid in draw(st.lists(st.sampled_from(leftovers), unique=True))]
            env = put_split(env, did, entries)
    return env


def _percentages(draw: Any, count: int) -> list[str]:
    """``count`` percentages with three decimals summing to exactly 100% (zeros allowed)."""
    cuts = sorted(draw(st.lists(st.integers(0, 100_000), min_size=count - 1, max_size=count - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100_000])]
    return [f"{p // 1000}.{p % 1000:03d}%" for p in parts]


@st.composite
def desired_for(draw: Any, env: Environment) -> dsl.DesiredState:
    deployments = []
    recorded = [b.bundle_id for b in env.bundles]
    bundles = draw(st.lists(st.sampled_from(recorded), unique=True, min_size=1)) if recorded else []
    bundles += [b for b in draw(st.lists(st.sampled_from(BUNDLES), unique=True, max_size=2)) if b not in bundles]
    for bundle in bundles:
        deployment = next((b for b in env.bundles if b.bundle_id == bundle), None)
        live_names = sorted({revision_name(r) for r in env.revisions
                             if deployment is not None and r.deployment_id == deployment.deployment_id
                             and r.lifecycle not in (Lifecycle.ARCHIVED, Lifecycle.DRAINING, Lifecycle.INACTIVE)
                             and revision_name(r)})
        names = draw(st.lists(st.sampled_from(live_names), unique=True)) if live_names else []
        names += [n for n in draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=0 if names else 1,
                                           max_size=2)) if n not in names]
        revisions = []
        drains = {revision_name(r): r.drain_seconds for r in env.revisions
                  if deployment is not None and r.deployment_id == deployment.deployment_id
                  and r.lifecycle != Lifecycle.ARCHIVED}
        for name in names:
            same = draw(st.integers(0, 19)) > 0  # mostly the recorded workload and drain
            tag = name if same else f"{name}-changed"
            drain = drains.get(name, 30) if same else draw(st.sampled_from([0, 30]))
            revisions.append({"name": name, "workload": {"image": f"{bundle}:{tag}", "env": {"TAG": tag}},
                              "drain_seconds": drain})
        doc: dict[str, Any] = {"bundle": bundle, "revisions": revisions}
        if names and draw(st.integers(0, 9)):
            routed = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
            if draw(st.booleans()):
                weights: list[Any] = _percentages(draw, len(routed))
            else:
                cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=len(routed) - 1,
                                            max_size=len(routed) - 1)))
                weights = [b - a for a, b in zip([0, *cuts], [*cuts, 10_000])]
            assume(any(w not in (0, "0.000%") for w in weights))
            doc["traffic"] = dict(zip(routed, weights))
            if draw(st.integers(0, 2)):
                steps = sorted(draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=4, unique=True)))
                doc["strategy"] = {
                    "type": "canary",
                    "steps": [f"{s / 100:g}%" if s % 10 == 0 else s for s in steps],
                    "pause_seconds": 1,
                    "analysis": {"max_error_rate": 0.05, "min_requests": 10},
                }
        deployments.append(doc)
    desired = dsl.structure({"environment": "dev", "deployments": deployments})
    dsl.validate(desired)
    return desired


@st.composite
def scenarios(draw: Any) -> tuple[Environment, dsl.DesiredState]:
    env = draw(recorded_envs())
    return env, draw(desired_for(env))


# --------------------------------------------------------------------------- what must conflict


def expected_conflict(env: Environment, desired: dsl.DesiredState) -> str | None:
    for d in desired.deployments:
        deployment = next((b for b in env.bundles if b.bundle_id == d.bundle), None)
        if deployment is None:
            continue
        live = [r for r in env.revisions
                if r.deployment_id == deployment.deployment_id and r.lifecycle != Lifecycle.ARCHIVED]
        listed = {r.name: r for r in d.revisions}
        for revision in live:
            name = revision_name(revision)
            if name not in listed:
                continue
            want = listed[name]
            if revision.workload != want.recorded_workload() or revision.drain_seconds != want.drain_seconds:
                return "changed"
            if revision.lifecycle in (Lifecycle.DRAINING, Lifecycle.INACTIVE):
                return "cannot serve again"
        if d.traffic is None:
            split = env.split_for(deployment.deployment_id)
            kept = {revision.revision_id for revision in live if revision_name(revision) in listed}
            if split is not None and any(e.revision_id not in kept for e in split.entries):
                return "no traffic target"
    return None


# --------------------------------------------------------------------------- the properties


def weight_of(env: Environment, revision_id: str) -> int | None:
    revision = env.revision(revision_id)
    split = env.split_for(revision.deployment_id)
    if split is None:
        return None
    return next((e.weight_bps for e in split.entries if e.revision_id == revision_id), None)


@SETTINGS
@given(scenarios())
def test_plans_are_safe_and_reach_the_desired_state(scenario: tuple[Environment, dsl.DesiredState]) -> None:
    env, desired = scenario
    conflict = expected_conflict(env, desired)
    if conflict is not None:
        event(f"conflict: {conflict}")
        with pytest.raises(PlanConflict):
            compute_plan(env, desired)
        return
    plan = compute_plan(env, desired)
    event(f"steps: {min(len(plan.steps), 12) // 4 * 4}+")
    if any(s.canary for s in plan.steps):
        event("canary")
    untouched = {b.deployment_id for b in env.bundles if desired.deployment(b.bundle_id) is None}
    before_untouched = ([r for r in env.revisions if r.deployment_id in untouched],
                        [s for s in env.traffic_splits if s.deployment_id in untouched])
    drained: dict[str, bool] = {}
    state = env
    for step in plan.steps:
        did = step.deployment_id or next((b.deployment_id for b in state.bundles if b.bundle_id == step.bundle_id), None)
        if step.action == Action.TRAFFIC:
            pairs = [(resolve_ref(state, did, ref), w) for ref, w in step.weights]
            assert sum(w for _, w in pairs) == 10_000
            assert all(w > 0 for _, w in pairs)  # the plan never writes zero-weight entries
            for rid, weight in pairs:
                assert state.revision(rid).lifecycle == Lifecycle.READY, "weight for a revision that is not ready"
        elif step.action == Action.WARM:
            assert not drained.get(step.bundle_id), "old capacity drained before new capacity was warm"
        elif step.action == Action.DRAIN:
            rid = resolve_ref(state, did, step.revision)
            assert not weight_of(state, rid), "drain of a revision that still has weight"
            drained[step.bundle_id] = True
        elif step.action == Action.ARCHIVE:
            rid = resolve_ref(state, did, step.revision)
            assert all(e.revision_id != rid for s in state.traffic_splits for e in s.entries), "archive while routed"
        state = simulate_step(state, step, now=NOW)  # the engines refuse what the rules forbid, too

    # the environment now matches the file, and says so
    assert compute_plan(state, desired).empty
    for d in desired.deployments:
        deployment = next(b for b in state.bundles if b.bundle_id == d.bundle)
        live = [r for r in state.revisions
                if r.deployment_id == deployment.deployment_id and r.lifecycle != Lifecycle.ARCHIVED]
        assert sorted(revision_name(r) or "" for r in live) == sorted(r.name for r in d.revisions)
        for revision in live:
            want = d.revision(revision_name(revision))
            assert revision.lifecycle == Lifecycle.READY
            assert revision.workload == want.recorded_workload() and revision.drain_seconds == want.drain_seconds
        target = d.target_bps()
        if target is not None:
            split = state.split_for(deployment.deployment_id)
            names = {r.revision_id: revision_name(r) for r in live}
            assert sorted((names[e.revision_id], e.weight_bps) for e in split.entries) == sorted(target)
            last = final_weights(plan, d.bundle)
            if last is not None:  # the final step reaches exactly the target
                assert sorted((ref.name, w) for ref, w in last) == sorted(target)
    after_untouched = ([r for r in state.revisions if r.deployment_id in untouched],
                       [s for s in state.traffic_splits if s.deployment_id in untouched])
    assert after_untouched == before_untouched


@SETTINGS
@given(scenarios())
def test_canary_steps_go_from_the_recorded_split_to_the_target(scenario) -> None:
    env, desired = scenario
    assume(expected_conflict(env, desired) is None)
    plan = compute_plan(env, desired)
    for d in desired.deployments:
        canary = [s for s in plan.steps if s.bundle_id == d.bundle and s.canary is not None]
        if not canary:
            continue
        event("canary")
        ctx = canary[0].canary
        assert [s.canary.index for s in canary] == list(range(len(canary))) and canary[-1].canary.final
        assert [s.canary.fraction_bps for s in canary] == sorted({s.canary.fraction_bps for s in canary})
        assert canary[-1].canary.fraction_bps == 10_000 and sorted(canary[-1].weights) == sorted(ctx.target)
        stable = [ref for ref, _ in ctx.baseline if ref not in ctx.canary]
        assert stable, "a rollout always has a stable revision to go back to"
        for step in canary:
            assert sum(w for _, w in step.weights) == 10_000
            canary_share = sum(w for ref, w in step.weights if ref in ctx.canary)
            base_share = sum(w for ref, w in ctx.baseline if ref in ctx.canary)
            target_share = sum(w for ref, w in ctx.target if ref in ctx.canary)
            exact = base_share + (target_share - base_share) * Fraction(step.canary.fraction_bps, 10_000)
            assert abs(canary_share - exact) < len(step.weights)  # rounding moves each entry < 1 bps


# --------------------------------------------------------------------------- rounding


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=8).filter(lambda xs: sum(xs) > 0))
def test_largest_remainder_sums_exactly_and_stays_within_one(raw: list[int]) -> None:
    total = sum(raw)
    exact = [(str(i), Fraction(x * 10_000, total)) for i, x in enumerate(raw)]
    rounded = largest_remainder(exact)
    assert sum(w for _, w in rounded) == 10_000
    for (_, want), (_, got) in zip(exact, rounded):
        assert int(want) <= got <= int(want) + 1
    assert rounded == largest_remainder(exact)  # deterministic


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_percentages_become_basis_points_summing_to_10000(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 7))
    written = _percentages(data.draw, count)
    pairs = to_basis_points([(f"r{i}", w) for i, w in enumerate(written)])
    assert sum(w for _, w in pairs) == 10_000
    for (_, text), (_, bps) in zip(zip(range(count), written), pairs):
        exact = Fraction(text.rstrip("%")) * 100
        assert abs(bps - exact) < 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=5), st.lists(st.integers(0, 10_000), min_size=1, max_size=5),
       st.integers(0, 10_000))
def test_interpolation_sums_to_10000_and_ends_exactly_at_the_target(base_raw, target_raw, fraction) -> None:
    assume(sum(base_raw) > 0 and sum(target_raw) > 0)
    baseline = [(k, w) for k, w in largest_remainder([(f"b{i}", Fraction(x)) for i, x in enumerate(base_raw)]) if w]
    shared_or_new = [(f"b{i}" if i % 2 else f"t{i}", Fraction(x)) for i, x in enumerate(target_raw)]
    target = [(k, w) for k, w in largest_remainder(shared_or_new) if w]
    step = interpolate(baseline, target, fraction)
    assert sum(w for _, w in step) == 10_000 and all(w > 0 for _, w in step)
    assert sorted(interpolate(baseline, target, 10_000)) == sorted(target)
    assert sorted(interpolate(baseline, target, 0)) == sorted(baseline)


def test_a_bare_hundred_is_refused_with_a_hint() -> None:
    with pytest.raises(dsl.DesiredStateError) as caught:
        dsl.loads("deployments: [{bundle: a, revisions: [{name: v1, workload: {image: 'a:1'}}], traffic: {v1: 100}}]")
    assert "100%" in caught.value.hint


def test_thirds_are_rounded_by_largest_remainder() -> None:
    assert to_basis_points([("a", "33.33%"), ("b", "33.33%"), ("c", "33.34%")]) == [("a", 3333), ("b", 3333),
                                                                                      ("c", 3334)]
    assert to_basis_points([("a", "33.333%"), ("b", "33.333%"), ("c", "33.333%")]) == [("a", 3334), ("b", 3333),
                                                                                         ("c", 3333)]


# --------------------------------------------------------------------------- rollout states


def test_a_recorded_rollout_is_continued_blocked_or_replaced() -> None:
    from greentic_core.plan import canary_material, resolve_weights, simulate
    from greentic_core.rollout import RolloutState

    start = dsl.loads("""
deployments:
  - bundle: shop
    revisions: [{name: v1, workload: {image: "shop:1"}}]
    traffic: {v1: 100%}
""")
    env = simulate(empty_env("dev"), compute_plan(empty_env("dev"), start), now=NOW)
    target_text = """
deployments:
  - bundle: shop
    revisions: [{name: v1, workload: {image: "shop:1"}}, {name: v2, workload: {image: "shop:2"}}]
    traffic: {v2: 100%}
    strategy: {steps: [10%, 50%], pause_seconds: 60, analysis: {max_error_rate: 0.01}}
"""
    target = dsl.loads(target_text)
    plan = compute_plan(env, target)
    assert [s.action for s in plan.steps] == [Action.STAGE, Action.WARM, Action.TRAFFIC, Action.TRAFFIC,
                                              Action.TRAFFIC]
    # run up to and including the first canary step, as an interrupted apply would have
    for step in plan.steps[:3]:
        env = simulate_step(env, step, now=NOW)
    did = env.bundles[0].deployment_id
    ctx = plan.steps[2].canary
    material = canary_material(env, did, ctx)
    state = RolloutState(env_id="dev", deployment_id=did, bundle_id="shop", phase="progressing",
                         baseline=[list(p) for p in material["baseline"]], target=[list(p) for p in material["target"]],
                         steps=[{"fraction_bps": s.canary.fraction_bps, "pause_seconds": s.canary.pause_seconds,
                                 "analysis": {"max_error_rate": 0.01} if s.canary.analysis else None}
                                for s in plan.steps[2:]],
                         passed_steps=1)
    resumed = compute_plan(env, target, rollouts={did: state})
    assert [(s.canary.index, s.canary.resumed) for s in resumed.steps] == [(1, True), (2, True)]
    assert [w for _, w in resumed.steps[0].weights] == [5000, 5000]
    assert resolve_weights(env, did, resumed.steps[-1].weights) == material["target"]
    # not yet passed: the interrupted step is planned again (its replay is a no-op)
    state.passed_steps = 0
    again = compute_plan(env, target, rollouts={did: state}).steps[0]
    assert resolve_weights(env, did, again.weights) == resolve_weights(env, did, plan.steps[2].weights)
    # paused: still planned, with a note
    state.phase = "paused"
    assert any("paused" in note for note in compute_plan(env, target, rollouts={did: state}).notes)
    # aborted: the deployment is left alone until someone decides
    state.phase, state.reason = "aborted", "error rate 60%"
    blocked = compute_plan(env, target, rollouts={did: state})
    assert blocked.empty and blocked.blocked[0].bundle_id == "shop" and "60%" in blocked.blocked[0].reason
    # another target: a new rollout from the split recorded now
    other = dsl.loads(target_text.replace("{v2: 100%}", "{v1: 50%, v2: 50%}"))
    fresh = compute_plan(env, other, rollouts={did: state})
    assert not fresh.blocked and fresh.steps[0].canary.index == 0 and not fresh.steps[0].canary.resumed
    assert resolve_weights(env, did, fresh.steps[0].canary.baseline) == resolve_weights(env, did, plan.steps[2].weights)
