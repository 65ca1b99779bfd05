"""Execute a plan through the operator: one recorded transaction per step, resumable.

:func:`apply` loads the environment and the rollout states, computes the plan
(:func:`~greentic_core.plan.compute_plan`) and runs its steps in order through the
:class:`~greentic_core.operator.Operator`. Every step is one operator verb, so one store
transaction: the provider runs first and the change is recorded only once it succeeded. The
first failure stops the run; what earlier steps did is recorded, the failed step changed
nothing (a warm whose health gate failed records the revision ``failed``, as ``revision warm``
does), so the environment is always in a consistent recorded state.

Resumable: running :func:`apply` again computes a new plan from what is recorded, and that
plan is exactly the rest of the interrupted one. Traffic steps carry deterministic
idempotency keys (:func:`~greentic_core.plan.step_key`), so a step whose split was recorded
before the interruption is a replay (no new split generation; the provider is asked to
enforce it again). A canary rollout continues after its last step that passed analysis
(:mod:`greentic_core.rollout`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import attrs

from . import rollout
from .desired import DesiredState, check_environment
from .errors import GreenticError
from .operator import Operator, resolve_deployment
from .plan import Action, Plan, Step, compute_plan, resolve_ref, resolve_weights, step_key
from .store.contract import DETACHED_ATTACHMENT

#: ``on_step(index, total, step, phase)``; phase is ``"start"`` or ``"done"`` (or ``"skipped"``).
StepCallback = Callable[[int, int, Step, str], None]


@attrs.frozen(kw_only=True)
class StepResult:
    index: int
    step: Step
    outcome: str  # "done" | "replayed" | "skipped" | "passed" | "completed"
    detail: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.index + 1, **self.step.to_json(), "outcome": self.outcome, "detail": self.detail}


@attrs.frozen(kw_only=True)
class ApplyResult:
    plan: Plan
    results: tuple[StepResult, ...]

    @property
    def complete(self) -> bool:
        return not self.plan.blocked

    def to_json(self) -> dict[str, Any]:
        return {"env_id": self.plan.env_id, "complete": self.complete, "steps_total": len(self.plan.steps),
                "steps": [r.to_json() for r in self.results], "blocked": [b.to_json() for b in self.plan.blocked],
                "warnings": list(self.plan.warnings), "notes": list(self.plan.notes)}


def current_plan(op: Operator, env_id: str, desired: DesiredState) -> Plan:
    """The plan from what is recorded now (environment and rollout states) to ``desired``."""
    check_environment(desired, env_id)
    env = op.store.load(env_id)
    return compute_plan(env, desired, rollouts=rollout.load_all(op.store, env_id))


def apply(op: Operator, env_id: str, desired: DesiredState, *, on_step: StepCallback | None = None,
          timeout: float | None = None, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> ApplyResult:
    """Bring ``env_id`` to ``desired``; see the module docstring.

    Raises the failing step's error (its message says which step; ``details`` carry
    ``apply_step`` and ``apply_steps``), :class:`~greentic_core.rollout.RolloutAborted` when a
    canary analysis failed (the abort is done), :class:`~greentic_core.rollout.RolloutPaused`
    when a rollout is paused, and :class:`~greentic_core.rollout.RolloutBlocked` at the end
    when a deployment was left alone (its earlier rollout was aborted).
    """
    plan = current_plan(op, env_id, desired)
    notify = on_step or (lambda index, total, step, phase: None)
    total = len(plan.steps)
    results: list[StepResult] = []
    finished_rollouts: set[str] = set()  # bundles whose rollout completed (promoted) during this run
    for index, step in enumerate(plan.steps):
        if step.action == Action.TRAFFIC and step.canary is not None and step.bundle_id in finished_rollouts:
            notify(index, total, step, "skipped")
            results.append(StepResult(index=index, step=step, outcome="skipped",
                                      detail={"why": "the rollout was promoted"}))
            continue
        notify(index, total, step, "start")
        try:
            outcome, detail = _run(op, env_id, step, plan, timeout=timeout, sleep=sleep, clock=clock,
                                   notify=tuple(getattr(desired, "notify", ()) or ()))
        except GreenticError as exc:
            _annotate(exc, index, total, step)
            raise
        if outcome == "completed" and step.canary is not None and not step.canary.final:
            finished_rollouts.add(step.bundle_id)
        results.append(StepResult(index=index, step=step, outcome=outcome, detail=detail))
        notify(index, total, step, "done")
    result = ApplyResult(plan=plan, results=tuple(results))
    if plan.blocked:
        first = plan.blocked[0]
        raise rollout.RolloutBlocked(
            f"deployment {first.bundle_id} was left as it is: {first.reason}"
            + (f" (and {len(plan.blocked) - 1} more)" if len(plan.blocked) > 1 else ""),
            hint=first.hint, blocked=[b.to_json() for b in plan.blocked], steps_done=len(results))
    return result


def _annotate(exc: GreenticError, index: int, total: int, step: Step) -> None:
    prefix = f"step {index + 1}/{total} ({step.describe()}): "
    if not exc.message.startswith("step "):
        exc.message = prefix + exc.message
        exc.args = (exc.message, *exc.args[1:])
    exc.details.setdefault("apply_step", index + 1)
    exc.details.setdefault("apply_steps", total)
    if exc.hint is None:
        exc.hint = "fix the cause and run apply again: it continues from what is recorded"


def _deployment(op: Operator, env_id: str, step: Step) -> str:
    if step.deployment_id is not None:
        return step.deployment_id
    return resolve_deployment(op.store.load(env_id), step.bundle_id)


def _run(op: Operator, env_id: str, step: Step, plan: Plan, *, timeout: float | None,
         sleep: Callable[[float], None], clock: Callable[[], float],
         notify: tuple[Any, ...] = ()) -> tuple[str, dict[str, Any]]:
    if step.action == Action.ADD_DEPLOYMENT:
        deployment = op.add_deployment(env_id, step.bundle_id, hosts=step.hosts, path_prefixes=step.path_prefixes)
        return "done", {"deployment_id": deployment.deployment_id}
    did = _deployment(op, env_id, step)
    if step.action == Action.STAGE:
        staged = op.stage(env_id, did, workload=step.workload, drain_seconds=step.drain_seconds, timeout=timeout)
        return "done", {"revision_id": staged.revision.revision_id}
    if step.action == Action.TRAFFIC:
        if step.canary is not None:
            rollout_steps = [s for s in plan.steps if s.action == Action.TRAFFIC and s.bundle_id == step.bundle_id
                             and s.canary is not None]
            outcome = rollout.run_canary_step(op, env_id, step, rollout_steps, progress=op.progress,
                                              sleep=sleep, clock=clock, notify=notify)
            state = rollout.load_state(op.store, env_id, did)
            detail: dict[str, Any] = {"phase": state.phase if state else None}
            if state is not None and state.analyses and state.analyses[-1].get("step") == step.canary.index + 1:
                detail["analysis"] = state.analyses[-1]
            return outcome, detail
        env = op.store.load(env_id)
        pairs = resolve_weights(env, did, step.weights)
        change = op.traffic_set(env_id, did, pairs, idempotency_key=step_key(env_id, did, pairs), timeout=timeout)
        return ("done" if change.changed else "replayed"), {"generation": change.split.generation}
    assert step.revision is not None
    rid = resolve_ref(op.store.load(env_id), did, step.revision)
    verb = {Action.WARM: op.warm, Action.DRAIN: op.drain, Action.ARCHIVE: op.archive}[step.action]
    result = verb(env_id, rid, timeout=timeout)
    return "done", {"revision_id": rid, "lifecycle": result.revision.lifecycle.value}


# --------------------------------------------------------------------------- detached applies

#: Where ``apply --detach`` records the desired state for the agent (an environment attachment).
DETACHED = DETACHED_ATTACHMENT
DETACHED_V1 = "greentic.detached-apply.v1"
#: Re-plans one :func:`advance_detached` call may make (each follows a step that changed something).
MAX_ROUNDS = 50


def load_detached(store: Any, env_id: str) -> dict[str, Any] | None:
    import json

    raw = store.read_attachment(env_id, DETACHED)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        raise GreenticError(f"the detached apply recorded for {env_id} is not JSON",
                            hint=f"run `greentic-deployer apply --detach -f FILE {env_id}` again to replace it") from None
    return record if isinstance(record, dict) else None


def save_detached(store: Any, env_id: str, record: dict[str, Any]) -> None:
    import json

    store.write_attachment(env_id, DETACHED, (json.dumps(record, indent=2) + "\n").encode())


def detach(op: Operator, env_id: str, text: bytes, *, source: str) -> Plan:
    """``apply --detach``: check the desired state, record it for the agent, return the plan.

    Nothing runs here: the file is parsed and planned (so a bad file or a conflict is refused
    now, changing nothing), then stored with the environment; the agent's next pass carries
    it on (:func:`advance_detached`).
    """
    from .codec import format_timestamp, utc_now
    from .desired import loads

    wanted = loads(text, name=source)
    plan = current_plan(op, env_id, wanted)
    record = {"schema": DETACHED_V1, "source": source, "text": text.decode(), "status": "pending", "reason": "",
              "recorded_at": format_timestamp(utc_now()), "recorded_by": op.actor, "steps_total": len(plan.steps),
              "updated_at": format_timestamp(utc_now())}
    save_detached(op.store, env_id, record)
    with op.store.transaction(env_id) as tx:
        tx.audit(op._event(verb="apply.detach", outcome="ok", source=source, steps=len(plan.steps)))
    return plan


def advance_detached(op: Operator, env_id: str, *, holder: str,
                     now: Callable[[], Any] | None = None) -> dict[str, Any] | None:
    """The agent's share of a detached apply: run the plan's steps that need no waiting.

    Stage, warm, drain and archive run as ``apply`` runs them (one recorded transaction each);
    a canary rollout is started or moved on by :func:`rollout.start_detached` /
    :func:`rollout.advance`, which never wait out a pause: the deployment's later steps wait
    for a later pass. Returns ``{"status", "steps"}`` (steps run now), or None when nothing is
    recorded or the recorded apply is finished.
    """
    from .codec import format_timestamp, utc_now
    from .desired import loads

    record = load_detached(op.store, env_id)
    if record is None or record.get("status") != "pending":
        return None
    wanted = loads(record["text"].encode(), name=record.get("source", "desired state"))
    ran = 0
    status = "pending"
    for _ in range(MAX_ROUNDS):
        plan = current_plan(op, env_id, wanted)
        if plan.empty:
            status = "blocked" if plan.blocked else "done"
            if plan.blocked:
                record["reason"] = "; ".join(f"{b.bundle_id}: {b.reason}" for b in plan.blocked)
            break
        progressed = False
        waiting: set[str] = set()
        for step in plan.steps:
            if step.bundle_id in waiting:
                continue
            if step.action == Action.TRAFFIC and step.canary is not None:
                waiting.add(step.bundle_id)  # its later steps follow the rollout, on a later round or pass
                rollout_steps = [s for s in plan.steps if s.action == Action.TRAFFIC and s.bundle_id == step.bundle_id
                                 and s.canary is not None]
                if step.canary.index == 0 and not step.canary.resumed:
                    outcome = rollout.start_detached(op, env_id, step, rollout_steps, holder=holder,
                                                     notify=tuple(getattr(wanted, "notify", ()) or ()),
                                                     **({"now": now} if now is not None else {}))
                else:
                    outcome = rollout.advance(op, env_id, _deployment(op, env_id, step), holder=holder,
                                              **({"now": now} if now is not None else {}))
                if outcome in ("stepped", "completed", "aborted"):
                    ran += 1
                progressed = progressed or outcome in ("completed", "aborted")
                continue
            _run(op, env_id, step, plan, timeout=None, sleep=time.sleep, clock=time.monotonic)
            ran += 1
            progressed = True
        if not progressed:
            break
    if status != "pending" or ran:
        record["status"] = status
        record["updated_at"] = format_timestamp(utc_now())
        save_detached(op.store, env_id, record)
    return {"status": status, "steps": ran}
