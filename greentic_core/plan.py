"""From what is recorded to what the desired-state file says: an ordered plan (pure).

:func:`compute_plan` compares an :class:`~greentic_core.spec.Environment` with a
:class:`~greentic_core.desired.DesiredState` and returns the steps that take one to the
other: ``add-deployment``, ``stage``, ``warm``, ``traffic``, ``drain``, ``archive``. Nothing
here reads a clock, a file or the network; the rollout states it may be given are values.

Ordering rules (each prevents a known kind of outage):

* **ready before weight**: every revision of the target split is warmed (new capacity is
  ready) before any traffic step of its deployment;
* **weight before drain**: a revision is drained only after the last traffic step moved its
  weight away, and only revisions the file no longer lists are drained;
* **no archive while routed**: a retired revision is archived only after the final split
  leaves it out entirely (zero-weight entries are dropped from every split the plan writes);
* **warm before drain**: per deployment, every warm step comes before every drain step, so
  old capacity is removed only once the new capacity serves.

Idempotent: an environment that already matches the file gives an empty plan. Rounding:
weights become basis points by the largest-remainder method, so every split a step writes
sums to exactly 10000, and the last traffic step of a deployment is exactly its target.

Revisions are referred to by :class:`RevRef` (name and/or id): a revision the plan stages has
no id until ``apply`` stages it, so steps are resolved against the recorded environment when
they run (:func:`resolve_ref`). :func:`simulate` runs a plan through the pure engines.
"""

from __future__ import annotations

import enum
import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import attrs

from . import lifecycle, traffic
from .desired import (
    NAME_KEY,
    Analysis,
    DesiredDeployment,
    DesiredRevision,
    DesiredState,
    interpolate,
    weight_bps,
)
from .errors import EngineError
from .spec import TOTAL_BPS, Environment, Lifecycle, Revision, Workload

if TYPE_CHECKING:  # pragma: no cover
    from .rollout import RolloutState

__all__ = [
    "Action",
    "Blocked",
    "CanaryContext",
    "Plan",
    "PlanConflict",
    "RevRef",
    "Step",
    "compute_plan",
    "revision_name",
    "resolve_ref",
    "simulate",
    "step_key",
]


class PlanConflict(EngineError):
    """The desired state cannot be reached from what is recorded without a decision by a person."""


class Action(str, enum.Enum):
    ADD_DEPLOYMENT = "add-deployment"
    STAGE = "stage"
    WARM = "warm"
    TRAFFIC = "traffic"
    DRAIN = "drain"
    ARCHIVE = "archive"


@attrs.frozen(order=True)
class RevRef:
    """A revision by its name in the file, its recorded id, or both."""

    name: str | None = None
    revision_id: str | None = None

    def label(self) -> str:
        if self.name and self.revision_id:
            return f"{self.name} ({self.revision_id})"
        return self.name or self.revision_id or "?"

    def short(self) -> str:
        return self.name or (self.revision_id or "?")[:10]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "revision_id": self.revision_id}


Entries = tuple[tuple[RevRef, int], ...]


@attrs.frozen(kw_only=True)
class CanaryContext:
    """Where a traffic step sits in a canary rollout and what checks it before the next one."""

    index: int  # 0-based, among all the rollout's steps
    count: int
    fraction_bps: int  # how far from baseline to target this step goes (10000 = the target)
    pause_seconds: float
    analysis: Analysis | None
    baseline: Entries
    target: Entries
    canary: tuple[RevRef, ...]  # the revisions that gain weight
    resumed: bool = False  # continuing a rollout recorded in the rollout state

    @property
    def final(self) -> bool:
        return self.index == self.count - 1


@attrs.frozen(kw_only=True)
class Step:
    action: Action
    bundle_id: str
    deployment_id: str | None = None
    revision: RevRef | None = None
    weights: Entries = ()
    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    workload: Workload | None = None  # stage: as recorded (the name under NAME_KEY)
    drain_seconds: int = 30
    from_lifecycle: str | None = None
    canary: CanaryContext | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line for people: ``traffic shop: v1=95% v2=5% (canary 1/4)``."""
        what = f"{self.action.value} {self.bundle_id}"
        if self.action == Action.ADD_DEPLOYMENT:
            routes = [*self.hosts, *self.path_prefixes]
            return what + (f" ({', '.join(routes)})" if routes else "")
        if self.action == Action.TRAFFIC:
            text = f"{what}: " + " ".join(f"{ref.short()}={_pct(w)}" for ref, w in self.weights)
            if self.canary is not None:
                text += f" (canary step {self.canary.index + 1}/{self.canary.count}"
                if self.canary.pause_seconds:
                    text += f", pause {self.canary.pause_seconds:g}s"
                if self.canary.analysis is not None:
                    text += ", analysis"
                text += ")"
            return text
        assert self.revision is not None
        text = f"{what} {self.revision.short()}"
        if self.from_lifecycle:
            text += f" ({self.from_lifecycle})"
        return text

    def to_json(self) -> dict[str, Any]:
        from . import codec, desired

        doc: dict[str, Any] = {"action": self.action.value, "bundle_id": self.bundle_id,
                               "deployment_id": self.deployment_id}
        if self.revision is not None:
            doc["revision"] = self.revision.to_json()
        if self.from_lifecycle:
            doc["from_lifecycle"] = self.from_lifecycle
        if self.action == Action.ADD_DEPLOYMENT:
            doc.update(hosts=list(self.hosts), path_prefixes=list(self.path_prefixes))
        if self.action == Action.STAGE:
            doc.update(workload=codec.unstructure(self.workload), drain_seconds=self.drain_seconds)
        if self.action == Action.TRAFFIC:
            doc["weights"] = [{**ref.to_json(), "weight_bps": w} for ref, w in self.weights]
            if self.canary is not None:
                c = self.canary
                doc["canary"] = {
                    "step": c.index + 1, "steps": c.count, "fraction_bps": c.fraction_bps,
                    "pause_seconds": c.pause_seconds, "resumed": c.resumed,
                    "analysis": None if c.analysis is None else desired._FAST.unstructure(c.analysis),
                    "canary_revisions": [r.to_json() for r in c.canary],
                }
        if self.reason:
            doc["reason"] = self.reason
        return doc


@attrs.frozen(kw_only=True)
class Blocked:
    """A deployment the plan leaves alone until a person decides (e.g. an aborted rollout)."""

    bundle_id: str
    deployment_id: str | None
    reason: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Plan:
    env_id: str
    steps: tuple[Step, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    def to_json(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "empty": self.empty, "steps": [s.to_json() for s in self.steps],
                "blocked": [b.to_json() for b in self.blocked], "warnings": list(self.warnings),
                "notes": list(self.notes)}


def _pct(bps: int) -> str:
    return f"{bps / 100:g}%"


# --------------------------------------------------------------------------- references


def revision_name(revision: Revision) -> str | None:
    """The desired-state name a revision was staged with (``None`` for one staged by hand)."""
    if revision.workload is None:
        return None
    name = revision.workload.extra.get(NAME_KEY)
    return name if isinstance(name, str) else None


def _ref(revision: Revision) -> RevRef:
    return RevRef(name=revision_name(revision), revision_id=revision.revision_id)


def _live(env: Environment, deployment_id: str) -> list[Revision]:
    return [r for r in env.revisions if r.deployment_id == deployment_id and r.lifecycle != Lifecycle.ARCHIVED]


def resolve_ref(env: Environment, deployment_id: str, ref: RevRef) -> str:
    """The recorded revision id of ``ref`` (by id when known, else by name among live revisions)."""
    if ref.revision_id is not None:
        if env.revision(ref.revision_id) is None:
            raise PlanConflict(f"revision {ref.label()} is no longer recorded",
                               hint="compute the plan again (`greentic-deployer plan`)")
        return ref.revision_id
    matches = [r for r in _live(env, deployment_id) if revision_name(r) == ref.name]
    if len(matches) != 1:
        raise PlanConflict(f"revision {ref.name!r} of deployment {deployment_id} is "
                           + ("not recorded" if not matches else f"recorded {len(matches)} times"),
                           hint="compute the plan again (`greentic-deployer plan`)")
    return matches[0].revision_id


def step_key(env_id: str, deployment_id: str, pairs: Sequence[tuple[str, int]],
             canary: Mapping[str, Any] | None = None) -> str:
    """A deterministic idempotency key for a traffic step (a replay of the same step is a no-op).

    Derived from the environment, the deployment, the resolved weights and, for a canary step,
    the rollout it belongs to (resolved baseline and target) and its index.
    """
    material = {"env": env_id, "deployment": deployment_id, "weights": sorted(pairs)}
    if canary is not None:
        material["canary"] = canary
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"apply-{digest[:24]}"


def rollout_identity(baseline: Sequence[tuple[str, int]], target: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {"baseline": sorted(baseline), "target": sorted(target)}


# --------------------------------------------------------------------------- the planner


def compute_plan(env: Environment, desired: DesiredState, *,
                 rollouts: Mapping[str, "RolloutState"] | None = None) -> Plan:
    """The ordered steps from ``env`` (as recorded) to ``desired`` (see the module docstring).

    ``rollouts`` maps deployment ids to their recorded canary rollout state: a rollout in
    progress with the same target continues after its last passed step; an aborted one with
    the same target blocks its deployment (it is not retried without a person).
    Raises :class:`PlanConflict` for what no plan can do (a changed workload under a recorded
    name, a listed revision that is draining or inactive, an ambiguous bundle id).
    """
    rollouts = rollouts or {}
    steps: list[Step] = []
    blocked: list[Blocked] = []
    warnings: list[str] = []
    notes: list[str] = []
    listed = {d.bundle for d in desired.deployments}
    for bundle in env.bundles:
        if bundle.bundle_id not in listed:
            warnings.append(f"deployment {bundle.bundle_id} ({bundle.deployment_id}) is not in the desired state; "
                            "left as it is")
    for d in desired.deployments:
        _plan_deployment(env, d, rollouts, steps, blocked, warnings, notes)
    return Plan(env_id=env.environment_id, steps=tuple(steps), blocked=tuple(blocked),
                warnings=tuple(warnings), notes=tuple(notes))


def _plan_deployment(env: Environment, d: DesiredDeployment, rollouts: Mapping[str, Any], steps: list[Step],
                     blocked: list[Blocked], warnings: list[str], notes: list[str]) -> None:
    matches = [b for b in env.bundles if b.bundle_id == d.bundle]
    if len(matches) > 1:
        raise PlanConflict(f"bundle {d.bundle!r} has {len(matches)} deployments in {env.environment_id!r}",
                           hint="the desired state names deployments by bundle id; keep one per bundle")
    deployment = matches[0] if matches else None
    out: list[Step] = []
    did = deployment.deployment_id if deployment else None
    target_names = d.target_bps()

    if deployment is None:
        out.append(Step(action=Action.ADD_DEPLOYMENT, bundle_id=d.bundle, hosts=d.hosts,
                        path_prefixes=d.path_prefixes))
        live: list[Revision] = []
    else:
        binding = deployment.route_binding
        if tuple(binding.hosts) != d.hosts or tuple(binding.path_prefixes) != d.path_prefixes:
            warnings.append(
                f"deployment {d.bundle}: recorded routes (hosts {list(binding.hosts)}, path prefixes "
                f"{list(binding.path_prefixes)}) differ from the file ({list(d.hosts)}, {list(d.path_prefixes)}); "
                "routes cannot be changed by apply")
        live = _live(env, deployment.deployment_id)

    # ---- match the file's revisions to recorded ones, by name
    by_name: dict[str, Revision] = {}
    for revision in live:
        name = revision_name(revision)
        if name is None or d.revision(name) is None:
            continue
        if name in by_name:
            raise PlanConflict(f"deployment {d.bundle}: revision name {name!r} is recorded twice "
                               f"({by_name[name].revision_id}, {revision.revision_id})",
                               hint="archive one of them with `greentic-deployer revision archive`")
        by_name[name] = revision
    refs: dict[str, RevRef] = {}
    pending: list[Step] = []
    for want in d.revisions:
        have = by_name.get(want.name)
        if have is None:
            refs[want.name] = RevRef(name=want.name)
            pending.append(Step(action=Action.STAGE, bundle_id=d.bundle, deployment_id=did,
                                revision=refs[want.name], workload=want.recorded_workload(),
                                drain_seconds=want.drain_seconds))
            continue
        refs[want.name] = _ref(have)
        _check_same(d, want, have)
        if have.lifecycle in (Lifecycle.DRAINING, Lifecycle.INACTIVE):
            raise PlanConflict(
                f"deployment {d.bundle}: revision {want.name!r} ({have.revision_id}) is {have.lifecycle.value} "
                "and cannot serve again",
                hint="give the revision a new name in the file (a new revision is staged), "
                     "or remove it so that it is archived")
    warm = [Step(action=Action.WARM, bundle_id=d.bundle, deployment_id=did, revision=refs[w.name],
                 from_lifecycle=by_name[w.name].lifecycle.value if w.name in by_name else "staged")
            for w in d.revisions if w.name not in by_name or by_name[w.name].lifecycle != Lifecycle.READY]

    # ---- what is retired: every live revision the file does not list
    kept = {r.revision_id for r in by_name.values()}
    retired = [r for r in live if r.revision_id not in kept]

    # ---- traffic
    split = env.split_for(did) if did else None
    current: Entries = tuple((_ref(env.revision(e.revision_id)) if env.revision(e.revision_id) else
                              RevRef(revision_id=e.revision_id), e.weight_bps) for e in split.entries) if split else ()
    traffic_steps: list[Step] = []
    if target_names is None:
        routed = {e.revision_id for e in split.entries} if split else set()
        stuck = [r for r in retired if r.revision_id in routed]
        if stuck:
            raise PlanConflict(
                f"deployment {d.bundle}: revision {_ref(stuck[0]).label()} is to be retired but the recorded split "
                "still names it, and the file gives no traffic target",
                hint="add a `traffic` target to the deployment in the file")
    else:
        target: Entries = tuple((refs[name], bps) for name, bps in target_names)
        state = rollouts.get(did) if did else None
        same_state = state is not None and _same_target(state, target)
        if same_state and state.phase in ("aborted", "aborting"):
            finishing = state.phase == "aborting"
            blocked.append(Blocked(
                bundle_id=d.bundle, deployment_id=did,
                reason=f"the canary rollout to this target was {'being ' if finishing else ''}aborted: "
                       f"{state.reason or 'no reason recorded'}",
                hint=(f"finish the abort with `greentic-deployer rollout abort {env.environment_id} {d.bundle}`"
                      if finishing else
                      "give the failed revision a new name in the file (a new revision is staged), or run "
                      f"`greentic-deployer rollout resume {env.environment_id} {d.bundle}` to retry the same target")))
            return
        in_progress = same_state and state.phase in ("progressing", "paused")
        if in_progress and state.phase == "paused":
            notes.append(f"deployment {d.bundle}: the rollout is paused at step {state.passed_steps + 1}"
                         + (f" ({state.reason})" if state.reason else "")
                         + f"; `greentic-deployer rollout resume {env.environment_id} {d.bundle}` lets apply continue")
        if in_progress:
            traffic_steps = _resumed_canary(d, did, state, refs, current, target, notes)
        elif _as_set(current) != _as_set(target):
            baseline = tuple((ref, w) for ref, w in current if w > 0)
            shifts = _as_set(baseline) != _as_set(target)
            if d.strategy is not None and baseline and shifts:
                traffic_steps = _fresh_canary(d, did, baseline, target)
            else:
                reason = "first split" if not split else ("drop zero-weight entries" if not shifts else "")
                traffic_steps = [Step(action=Action.TRAFFIC, bundle_id=d.bundle, deployment_id=did,
                                      weights=target, reason=reason)]

    drains = [Step(action=Action.DRAIN, bundle_id=d.bundle, deployment_id=did, revision=_ref(r),
                   from_lifecycle=r.lifecycle.value, reason="not in the desired state")
              for r in retired if r.lifecycle in (Lifecycle.READY, Lifecycle.DRAINING)]
    archives = [Step(action=Action.ARCHIVE, bundle_id=d.bundle, deployment_id=did, revision=_ref(r),
                     from_lifecycle="inactive" if r.lifecycle in (Lifecycle.READY, Lifecycle.DRAINING)
                     else r.lifecycle.value, reason="not in the desired state")
                for r in retired]
    steps.extend([*out, *pending, *warm, *traffic_steps, *drains, *archives])


def _check_same(d: DesiredDeployment, want: DesiredRevision, have: Revision) -> None:
    recorded = have.workload
    assert recorded is not None
    bare = attrs.evolve(recorded, extra={k: v for k, v in recorded.extra.items() if k != NAME_KEY})
    differences = [f.name for f in attrs.fields(Workload) if getattr(bare, f.name) != getattr(want.workload, f.name)]
    if have.drain_seconds != want.drain_seconds:
        differences.append("drain_seconds")
    if differences:
        raise PlanConflict(
            f"deployment {d.bundle}: revision {want.name!r} ({have.revision_id}) was staged with another "
            f"{', '.join(differences)}; revisions are immutable",
            hint=f"give the changed revision a new name (e.g. {want.name}-2): it is staged, and the old one retired")


def _as_set(entries: Iterable[tuple[RevRef, int]]) -> set[tuple[str, int]]:
    return {(ref.revision_id or f"name:{ref.name}", w) for ref, w in entries}


def _same_target(state: Any, target: Entries) -> bool:
    if any(ref.revision_id is None for ref, _ in target):
        return False
    return sorted((ref.revision_id, w) for ref, w in target) == sorted(tuple(p) for p in state.target)


def _canary_refs(baseline: Entries, target: Entries) -> tuple[RevRef, ...]:
    base = {ref: w for ref, w in baseline}
    return tuple(ref for ref, w in target if w > base.get(ref, 0))


def _fresh_canary(d: DesiredDeployment, did: str | None, baseline: Entries, target: Entries) -> list[Step]:
    assert d.strategy is not None
    plan_steps = d.strategy.resolved_steps()
    canary = _canary_refs(baseline, target)
    out = []
    for index, step in enumerate(plan_steps):
        fraction = weight_bps(step.weight)
        weights = interpolate(baseline, target, fraction)
        ctx = CanaryContext(index=index, count=len(plan_steps), fraction_bps=fraction,
                            pause_seconds=float(step.pause_seconds or 0.0), analysis=step.analysis,
                            baseline=baseline, target=target, canary=canary)
        out.append(Step(action=Action.TRAFFIC, bundle_id=d.bundle, deployment_id=did, weights=tuple(weights),
                        canary=ctx))
    return out


def _resumed_canary(d: DesiredDeployment, did: str | None, state: Any, refs: Mapping[str, RevRef],
                    current: Entries, target: Entries, notes: list[str]) -> list[Step]:
    from .desired import _FAST

    by_id = {ref.revision_id: ref for ref in [*refs.values(), *(r for r, _ in current)] if ref.revision_id}
    baseline: Entries = tuple((by_id.get(rid, RevRef(revision_id=rid)), w) for rid, w in state.baseline)
    canary = _canary_refs(baseline, target)
    out = []
    count = len(state.steps)
    for index in range(state.passed_steps, count):
        recorded = state.steps[index]
        analysis = None if recorded.get("analysis") is None else _FAST.structure(recorded["analysis"], Analysis)
        fraction = int(recorded["fraction_bps"])
        ctx = CanaryContext(index=index, count=count, fraction_bps=fraction,
                            pause_seconds=float(recorded.get("pause_seconds") or 0.0), analysis=analysis,
                            baseline=baseline, target=target, canary=canary, resumed=True)
        out.append(Step(action=Action.TRAFFIC, bundle_id=d.bundle, deployment_id=did,
                        weights=tuple(interpolate(baseline, target, fraction)), canary=ctx))
    if out:
        notes.append(f"deployment {d.bundle}: continuing the recorded canary rollout at step "
                     f"{state.passed_steps + 1} of {count}")
    return out


# --------------------------------------------------------------------------- simulation


def resolve_weights(env: Environment, deployment_id: str, weights: Entries) -> list[tuple[str, int]]:
    return [(resolve_ref(env, deployment_id, ref), w) for ref, w in weights]


def canary_material(env: Environment, deployment_id: str, ctx: CanaryContext) -> dict[str, Any]:
    """The resolved identity of a canary step, for its idempotency key and the rollout state."""
    return {**rollout_identity(resolve_weights(env, deployment_id, ctx.baseline),
                               resolve_weights(env, deployment_id, ctx.target)), "index": ctx.index}


def simulate(env: Environment, plan: Plan, *, now: datetime, actor: str = "operator://local/plan") -> Environment:
    """Run ``plan`` through the pure engines (every canary analysis passes); return the result.

    Each step is checked by the same engine function the operator uses, so a plan that would
    route a revision that is not ready, drain a routed one or archive a referenced one fails
    here with the engine's error.
    """
    for step in plan.steps:
        env = simulate_step(env, step, now=now, actor=actor)
    return env


def simulate_step(env: Environment, step: Step, *, now: datetime, actor: str = "operator://local/plan") -> Environment:
    did = _deployment_id(env, step)
    if step.action == Action.ADD_DEPLOYMENT:
        env, _ = lifecycle.add_deployment(env, step.bundle_id, hosts=step.hosts, path_prefixes=step.path_prefixes,
                                          now=now)
        return env
    assert did is not None
    if step.action == Action.STAGE:
        return lifecycle.stage_revision(env, did, workload=step.workload, drain_seconds=step.drain_seconds,
                                        now=now).env
    if step.action == Action.TRAFFIC:
        pairs = resolve_weights(env, did, step.weights)
        material = canary_material(env, did, step.canary) if step.canary else None
        return traffic.set_traffic_split(env, did, pairs, idempotency_key=step_key(env.environment_id, did, pairs,
                                                                                   material),
                                         updated_by=actor, now=now).env
    assert step.revision is not None
    rid = resolve_ref(env, did, step.revision)
    if step.action == Action.WARM:
        return lifecycle.warm_revision(env, rid, now=now).env
    if step.action == Action.DRAIN:
        drained = lifecycle.drain_revision(env, rid, now=now).env
        return lifecycle.complete_drain(drained, rid, now=now).env
    if step.action == Action.ARCHIVE:
        return lifecycle.archive_revision(env, rid, now=now).env
    raise AssertionError(step.action)  # pragma: no cover


def _deployment_id(env: Environment, step: Step) -> str | None:
    if step.deployment_id is not None:
        return step.deployment_id
    found = [b.deployment_id for b in env.bundles if b.bundle_id == step.bundle_id]
    return found[0] if len(found) == 1 else None


def final_weights(plan: Plan, bundle_id: str) -> Entries | None:
    """The weights of the last traffic step of a deployment (None when the plan sets none)."""
    last = [s for s in plan.steps if s.action == Action.TRAFFIC and s.bundle_id == bundle_id]
    return last[-1].weights if last else None


assert TOTAL_BPS == 10_000
