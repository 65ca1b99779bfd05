"""Canary rollouts: step through weights, pause, analyse, and abort or promote.

A rollout moves one deployment from the split recorded before it (the *baseline*) to the
target split of the desired state through the canary steps of its strategy. Its state lives
in ``<env_dir>/rollouts/<deployment_id>.json`` (``greentic.rollout.v1``, written with
:func:`~greentic_core.store.atomic_write`): phase, baseline, target, the resolved steps, how
many passed their analysis, the analysis results and, after an abort, why.

Phases: ``progressing`` (a driver is stepping, or the next ``apply`` continues it), ``paused``
(held by ``rollout pause`` or an inconclusive analysis; ``rollout resume`` lets ``apply``
continue), ``aborting`` / ``aborted`` (an analysis failed or ``rollout abort`` ran: traffic is
back on the stable revisions and the canary revisions are recorded ``failed``), ``completed``
(every step passed, or ``rollout promote`` jumped to the target).

One step, as :func:`run_canary_step` drives it (for ``apply``):

1. under the rollout's lock: check the phase (a pause, abort or promote from another terminal
   wins), set the step's weights through :meth:`Operator.traffic_set` with the step's
   deterministic idempotency key (a replay after a crash is a no-op), take a metrics reading
   and record the step in the rollout state;
2. pause ``pause_seconds``, watching the state file (pause / abort / promote end the wait);
3. analysis: the provider observation (:meth:`Operator.observe`: every canary revision present
   and serving, the weights enforced) and the difference of two metrics readings
   (``greentic_revision_metrics``): error rate and request count over the window, the p99 the
   provider reports; thresholds from the desired state;
4. under the lock: a failed analysis aborts (weights back to the stable revisions: their
   baseline weights scaled to 10000, usually the stable revision at 100%; then each canary
   revision is drained by the provider and recorded ``ready -> failed``); otherwise the step
   is recorded as passed (``completed`` after the last one).

The lock (``rollouts/<deployment_id>.lock``, ``flock``) is held only while weights and the
state change, never across a pause, so ``rollout abort`` cannot race a step: whichever takes
the lock second sees what the first did.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from . import lifecycle
from .codec import format_timestamp, utc_now
from .desired import Analysis, OnInconclusive, _FAST as _DESIRED, largest_remainder
from .errors import DeployerError, EngineError, GreenticError
from .operator import Operator, _scrub_error, resolve_deployment
from .plan import CanaryContext, Step, canary_material, resolve_weights, revision_name, rollout_identity, step_key
from .spec import Lifecycle
from .store import Store, atomic_write

ROLLOUT_V1 = "greentic.rollout.v1"
POLL_SECONDS = 0.2
ACTIVE = ("progressing", "paused")

Progress = Callable[[str], None]


class RolloutAborted(EngineError):
    """The canary rollout was aborted: traffic is back on the stable revisions."""

    kind = "rollout_aborted"


class RolloutPaused(EngineError):
    """The canary rollout is paused; ``rollout resume`` lets ``apply`` continue."""

    kind = "rollout_paused"


class RolloutBlocked(EngineError):
    """A deployment's rollout was aborted earlier and is not retried without a person."""

    kind = "rollout_blocked"


class NoRollout(EngineError):
    kind = "not_found"
    exit_code = 4


class RolloutBusy(EngineError):
    """Another live process is driving this rollout."""


# --------------------------------------------------------------------------- the state


@attrs.define(kw_only=True)
class RolloutState:
    schema: str = ROLLOUT_V1
    env_id: str
    deployment_id: str
    bundle_id: str
    phase: str = "progressing"
    reason: str = ""
    baseline: list[list[Any]] = attrs.field(factory=list)  # [[revision_id, bps], ...]
    target: list[list[Any]] = attrs.field(factory=list)
    canary: list[str] = attrs.field(factory=list)  # revision ids that gain weight
    names: dict[str, str] = attrs.field(factory=dict)  # revision id -> desired-state name
    steps: list[dict[str, Any]] = attrs.field(factory=list)  # fraction_bps, weights, pause_seconds, analysis
    current_step: int = -1  # the step whose weights were last set
    passed_steps: int = 0
    promoted: bool = False
    window: dict[str, Any] | None = None  # {"step", "started_at", "metrics"}
    analyses: list[dict[str, Any]] = attrs.field(factory=list)
    driver: dict[str, Any] | None = None  # {"pid"} of the process stepping it
    started_at: str = ""
    updated_at: str = ""
    updated_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RolloutState":
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def identity(self) -> dict[str, Any]:
        return rollout_identity([tuple(p) for p in self.baseline], [tuple(p) for p in self.target])

    def label(self, revision_id: str) -> str:
        name = self.names.get(revision_id)
        return f"{name} ({revision_id})" if name else revision_id


def rollouts_dir(store: Store, env_id: str) -> Path:
    return store.state_dir(env_id) / "rollouts"


def state_path(store: Store, env_id: str, deployment_id: str) -> Path:
    return rollouts_dir(store, env_id) / f"{deployment_id}.json"


def load_state(store: Store, env_id: str, deployment_id: str) -> RolloutState | None:
    try:
        data = json.loads(state_path(store, env_id, deployment_id).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GreenticError(f"cannot read the rollout state of {deployment_id}: {exc}",
                            hint=f"remove {state_path(store, env_id, deployment_id)} to forget the rollout") from None
    return RolloutState.from_json(data)


def load_all(store: Store, env_id: str) -> dict[str, RolloutState]:
    directory = rollouts_dir(store, env_id)
    if not directory.is_dir():
        return {}
    states = {}
    for path in sorted(directory.glob("*.json")):
        state = load_state(store, env_id, path.stem)
        if state is not None:
            states[state.deployment_id] = state
    return states


def save_state(store: Store, state: RolloutState, *, actor: str = "") -> None:
    state.updated_at = format_timestamp(utc_now())
    if actor:
        state.updated_by = actor
    atomic_write(state_path(store, state.env_id, state.deployment_id),
                 (json.dumps(state.to_json(), indent=2) + "\n").encode())


@contextlib.contextmanager
def rollout_lock(store: Store, env_id: str, deployment_id: str, timeout: float = 30.0) -> Iterator[None]:
    """Exclusive ``flock`` on ``rollouts/<deployment_id>.lock`` (held while weights change)."""
    directory = rollouts_dir(store, env_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / f"{deployment_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RolloutBusy(f"the rollout of {deployment_id} is locked by another command",
                                      hint="wait for it to finish and try again") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _alive(driver: Mapping[str, Any] | None) -> bool:
    if not driver or not isinstance(driver.get("pid"), int):
        return False
    if driver["pid"] == os.getpid():
        return False  # ourselves (an earlier, interrupted call in this process)
    try:
        os.kill(driver["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- analysis


@attrs.frozen(kw_only=True)
class AnalysisResult:
    verdict: str  # "pass" | "fail" | "inconclusive"
    reasons: tuple[str, ...] = ()
    requests: int | None = None
    errors: int | None = None
    error_rate: float | None = None
    p99_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "requests": self.requests,
                "errors": self.errors, "error_rate": self.error_rate, "p99_ms": self.p99_ms}

    def summary(self) -> str:
        parts = []
        if self.requests is not None:
            parts.append(f"{self.requests} requests")
        if self.error_rate is not None:
            parts.append(f"error rate {self.error_rate:.1%}")
        if self.p99_ms is not None:
            parts.append(f"p99 {self.p99_ms:g} ms")
        text = ", ".join(parts) or "no metrics"
        return text + (f": {'; '.join(self.reasons)}" if self.reasons else "")


def read_metrics(op: Operator, env_id: str) -> dict[str, dict[str, Any]] | None:
    """The provider's cumulative per-revision counters, or None when it has none."""
    env = op.store.load(env_id)
    bound = op.bind(env)
    try:
        return bound.metrics(env)
    except DeployerError as exc:
        _scrub_error(exc, op._secrets)
        raise


def _try_metrics(op: Operator, env_id: str) -> dict[str, dict[str, Any]] | None:
    try:
        return read_metrics(op, env_id)
    except DeployerError:
        return None  # the window then has no start reading: the analysis is inconclusive


def analyse(analysis: Analysis, *, canary: list[str], start: Mapping[str, Any] | None,
            end: Mapping[str, Any] | None, observation: Any = None, expected: Mapping[str, int] | None = None,
            observed_weights: Mapping[str, int] | None = None, labels: Mapping[str, str] | None = None) -> AnalysisResult:
    """Judge one window (pure): the observation first, then the metrics differences.

    ``start`` / ``end`` are two readings of :func:`read_metrics` (None: no metrics). Counters
    that went down (the provider restarted) count from 0. Fewer than ``min_requests`` requests
    make the window inconclusive, unless the failures alone already exceed ``max_error_rate``
    of ``min_requests`` (then it fails: more requests could not bring the rate back under).
    ``max_p99_ms`` is checked only on a window with enough requests.
    """
    labels = labels or {}
    failures: list[str] = []
    if observation is not None:
        for rid in canary:
            seen = observation.revision(rid)
            if not (seen.present and seen.serving):
                failures.append(f"canary {labels.get(rid, rid)} is not serving (present={seen.present}, "
                                f"serving={seen.serving}{', ' + seen.detail if seen.detail else ''})")
    if expected is not None and observed_weights is not None:
        positive = {k: v for k, v in observed_weights.items() if v > 0}
        if positive != {k: v for k, v in expected.items() if v > 0}:
            failures.append(f"the provider enforces {positive}, expected {dict(expected)}")
    if start is None or end is None:
        if failures:
            return AnalysisResult(verdict="fail", reasons=tuple(failures))
        if analysis.max_error_rate is None and analysis.max_p99_ms is None and not analysis.min_requests:
            return AnalysisResult(verdict="pass")
        return AnalysisResult(verdict="inconclusive", reasons=("the provider reports no request metrics",))
    requests = errors = 0
    p99s = []
    for rid in canary:
        before, after = start.get(rid) or {}, end.get(rid) or {}
        r0, r1 = int(before.get("requests", 0)), int(after.get("requests", 0))
        e0, e1 = int(before.get("errors", 0)), int(after.get("errors", 0))
        if r1 < r0 or e1 < e0:  # counters restarted
            r0 = e0 = 0
        requests += r1 - r0
        errors += e1 - e0
        if after.get("p99_ms") is not None and r1 > r0:
            p99s.append(float(after["p99_ms"]))
    rate = errors / requests if requests else 0.0
    p99 = max(p99s) if p99s else None
    enough = requests >= analysis.min_requests
    if analysis.max_error_rate is not None and requests:
        if enough and rate > analysis.max_error_rate:
            failures.append(f"error rate {rate:.1%} ({errors} of {requests}) is above {analysis.max_error_rate:.1%}")
        elif not enough and errors > analysis.max_error_rate * analysis.min_requests:
            # too few requests to measure a rate, but already too many failures: even if the
            # requests still missing up to min_requests all succeeded, the rate would be too high
            failures.append(f"{errors} of {requests} requests failed: above {analysis.max_error_rate:.1%} of "
                            f"min_requests {analysis.min_requests} already")
    if enough and analysis.max_p99_ms is not None and p99 is not None and p99 > analysis.max_p99_ms:
        failures.append(f"p99 {p99:g} ms is above {analysis.max_p99_ms:g} ms")
    numbers = {"requests": requests, "errors": errors, "error_rate": round(rate, 6), "p99_ms": p99}
    if failures:
        return AnalysisResult(verdict="fail", reasons=tuple(failures), **numbers)
    if not enough:
        return AnalysisResult(verdict="inconclusive",
                              reasons=(f"only {requests} canary requests in the window (min_requests "
                                       f"{analysis.min_requests})",), **numbers)
    return AnalysisResult(verdict="pass", **numbers)


# --------------------------------------------------------------------------- driving a step


def measure(op: Operator, env_id: str, state: RolloutState, analysis: Analysis,
            pairs: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> AnalysisResult:
    """Judge the window of ``state`` (opened by the step that set ``pairs``): observe the
    provider, read the metrics at the window's end and :func:`analyse` them.

    Shared by ``apply`` (which waits the pause out) and the agent (which comes back when it
    has elapsed); a provider that cannot be read makes the window inconclusive.
    """
    did = state.deployment_id
    try:
        observation = op.observe(env_id)
        end = read_metrics(op, env_id)
        observes = op.bind(op.store.load(env_id)).descriptor.capabilities.observes_weights
    except DeployerError as exc:
        return AnalysisResult(verdict="inconclusive", reasons=(f"the provider could not be read: {exc}",))
    return analyse(analysis, canary=state.canary, start=(state.window or {}).get("metrics"),
                   end=_subset(end, state.canary), observation=observation,
                   expected=dict(pairs), observed_weights=observation.weights(did) if observes else None,
                   labels={rid: state.label(rid) for rid in state.canary})




def _new_state(op: Operator, env_id: str, did: str, step: Step, material: Mapping[str, Any],
               env: Any) -> RolloutState:
    ctx = step.canary
    assert ctx is not None
    baseline, target = material["baseline"], material["target"]
    base = dict(baseline)
    names = {}
    for rid, _ in [*baseline, *target]:
        revision = env.revision(rid)
        name = revision_name(revision) if revision is not None else None
        if name is not None:
            names[rid] = name
    return RolloutState(
        env_id=env_id, deployment_id=did, bundle_id=step.bundle_id,
        baseline=[list(p) for p in baseline], target=[list(p) for p in target],
        canary=[rid for rid, w in target if w > base.get(rid, 0)], names=names,
        steps=[],  # filled by the caller from the plan
        started_at=format_timestamp(utc_now()), updated_by=op.actor,
    )


def _check_phase(state: RolloutState, *, identity: Mapping[str, Any]) -> str | None:
    """What a driver must do when someone else changed the rollout: None = carry on."""
    if state.identity() != identity:
        return "replaced"
    if state.phase == "paused":
        return "paused"
    if state.phase in ("aborting", "aborted"):
        return "aborted"
    if state.phase == "completed":
        return "completed"
    return None


def _raise_for(outcome: str, state: RolloutState, env_id: str) -> str:
    if outcome == "paused":
        raise RolloutPaused(
            f"the rollout of {state.bundle_id} is paused at step {state.passed_steps + 1} of {len(state.steps)}"
            + (f": {state.reason}" if state.reason else ""),
            hint=f"`greentic-deployer rollout resume {env_id} {state.bundle_id}`, then apply again; or "
                 f"`rollout promote` / `rollout abort`", deployment_id=state.deployment_id)
    if outcome == "aborted":
        raise RolloutAborted(
            f"the rollout of {state.bundle_id} was aborted: {state.reason or 'no reason recorded'}; "
            "traffic is back on the stable revision(s)",
            hint="fix the canary and give it a new name in the desired state, then apply again",
            deployment_id=state.deployment_id, reason=state.reason)
    if outcome == "replaced":
        raise RolloutBusy(f"the rollout of {state.bundle_id} was replaced by another one while this step ran",
                          hint="compute the plan again (`greentic-deployer plan`)")
    return outcome  # "completed"


def run_canary_step(op: Operator, env_id: str, step: Step, plan_steps: list[Step], *,
                    progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> str:
    """Drive one canary traffic step (see the module docstring); ``"passed"`` or ``"completed"``.

    ``plan_steps`` are all traffic steps of this rollout in the plan (to record the whole
    rollout in a fresh state). Raises :class:`RolloutAborted` (the analysis failed: the abort
    is done), :class:`RolloutPaused`, or the operator's error when a verb failed.
    """
    say = progress or (lambda message: None)
    ctx = step.canary
    assert ctx is not None
    env = op.store.load(env_id)
    did = step.deployment_id or resolve_deployment(env, step.bundle_id)
    material = canary_material(env, did, ctx)
    identity = {"baseline": material["baseline"], "target": material["target"]}
    pairs = resolve_weights(env, did, step.weights)
    key = step_key(env_id, did, pairs, material)

    # ---- 1. set the weights (under the lock)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        same = state is not None and state.identity() == identity
        fresh = not ctx.resumed and ctx.index == 0
        if same and state.phase in ("aborting", "aborted", "paused"):
            return _raise_for("aborted" if state.phase != "paused" else "paused", state, env_id)
        if same and state.phase == "completed" and not fresh:
            return "completed"  # promoted while this apply was planning or pausing
        if same and state.phase == "progressing":
            if _alive(state.driver):
                raise RolloutBusy(f"process {state.driver['pid']} is driving the rollout of {step.bundle_id}",
                                  hint="wait for it, or stop it; `greentic-deployer rollout status` shows the state")
        elif fresh:
            state = _new_state(op, env_id, did, step, material, env)
            state.steps = [_step_record(s, env, did) for s in plan_steps]
        else:
            return _raise_for("replaced", state or _new_state(op, env_id, did, step, material, env), env_id)
        assert state is not None
        state.driver = {"pid": os.getpid()}
        state.phase = "progressing"
        state.reason = ""
        state.current_step = ctx.index
        state.window = None
        # recorded before the weights change, so a crash in between resumes this rollout
        # (same baseline, same keys) instead of starting one from the half-moved split
        save_state(op.store, state, actor=op.actor)
        say(f"step {ctx.index + 1}/{ctx.count}: " + " ".join(f"{state.label(r)}={w / 100:g}%" for r, w in pairs))
        op.traffic_set(env_id, did, pairs, idempotency_key=key)
        start = _try_metrics(op, env_id) if ctx.analysis is not None else None
        state.window = {"step": ctx.index, "started_at": format_timestamp(utc_now()),
                        "metrics": _subset(start, state.canary)}
        save_state(op.store, state, actor=op.actor)

    # ---- 2. pause, watching for pause / abort / promote
    deadline = clock() + ctx.pause_seconds
    while True:
        left = deadline - clock()
        if left <= 0:
            break
        say(f"step {ctx.index + 1}/{ctx.count}: pausing, {left:.0f}s left")
        sleep(min(POLL_SECONDS, left))
        current = load_state(op.store, env_id, did)
        outcome = "replaced" if current is None else _check_phase(current, identity=identity)
        if outcome is not None:
            return _raise_for(outcome, current or state, env_id)

    # ---- 3. analysis (outside the lock: it reads the provider)
    result = None
    if ctx.analysis is not None:
        say(f"step {ctx.index + 1}/{ctx.count}: analysing")
        result = measure(op, env_id, state, ctx.analysis, pairs)
        say(f"step {ctx.index + 1}/{ctx.count}: analysis {result.verdict} ({result.summary()})")

    # ---- 4. record the verdict (under the lock)
    with rollout_lock(op.store, env_id, did):
        current = load_state(op.store, env_id, did)
        outcome = "replaced" if current is None else _check_phase(current, identity=identity)
        if outcome is not None:
            return _raise_for(outcome, current or state, env_id)
        state = current
        if result is not None:
            state.analyses.append({"step": ctx.index + 1, "at": format_timestamp(utc_now()), **result.to_json()})
        verdict = result.verdict if result is not None else "pass"
        if verdict == "inconclusive":
            assert ctx.analysis is not None
            if ctx.analysis.on_inconclusive == OnInconclusive.FAIL:
                verdict = "fail"
            elif ctx.analysis.on_inconclusive == OnInconclusive.PASS:
                verdict = "pass"
        if verdict == "fail":
            assert result is not None
            reason = f"step {ctx.index + 1} analysis failed: {result.summary()}"
            _abort_locked(op, env_id, state, reason)
            return _raise_for("aborted", state, env_id)
        if verdict == "inconclusive":
            assert result is not None
            state.phase, state.reason, state.driver = "paused", f"step {ctx.index + 1} inconclusive: {result.summary()}", None
            save_state(op.store, state, actor=op.actor)
            return _raise_for("paused", state, env_id)
        state.passed_steps = ctx.index + 1
        state.window = None
        if state.passed_steps >= len(state.steps):
            state.phase, state.driver = "completed", None
        save_state(op.store, state, actor=op.actor)
        return "completed" if state.phase == "completed" else "passed"


def _step_record(step: Step, env: Any, did: str) -> dict[str, Any]:
    ctx = step.canary
    assert ctx is not None
    weights = []
    for ref, w in step.weights:
        try:
            weights.append([resolve_weights(env, did, ((ref, w),))[0][0], w])
        except GreenticError:
            weights.append([ref.label(), w])
    return {"index": ctx.index, "fraction_bps": ctx.fraction_bps, "weights": weights,
            "pause_seconds": ctx.pause_seconds,
            "analysis": None if ctx.analysis is None else _DESIRED.unstructure(ctx.analysis)}


def _subset(metrics: Mapping[str, Any] | None, revisions: list[str]) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {rid: dict(metrics.get(rid) or {"requests": 0, "errors": 0, "p99_ms": None}) for rid in revisions}


# --------------------------------------------------------------------------- abort / promote


def _stable_split(state: RolloutState) -> list[tuple[str, int]]:
    """The baseline without the canary revisions, scaled to 10000 (largest remainder)."""
    from fractions import Fraction

    stable = [(rid, Fraction(w)) for rid, w in state.baseline if rid not in state.canary and w > 0]
    if not stable:  # cannot happen for a real rollout (some revision must lose weight)
        stable = [(rid, Fraction(w)) for rid, w in state.baseline if w > 0]
    return [(rid, w) for rid, w in largest_remainder(stable) if w > 0]


def _abort_locked(op: Operator, env_id: str, state: RolloutState, reason: str) -> None:
    """Weights back to the stable revisions, then each canary revision drained and recorded failed."""
    state.phase, state.reason = "aborting", reason
    save_state(op.store, state, actor=op.actor)
    stable = _stable_split(state)
    op.traffic_set(env_id, state.deployment_id, stable,
                   idempotency_key=step_key(env_id, state.deployment_id, stable, {**state.identity(), "abort": True}))
    for rid in state.canary:
        revision = op.store.load(env_id).revision(rid)
        if revision is not None and revision.lifecycle == Lifecycle.READY:
            fail_revision(op, env_id, rid, reason)
    state.phase, state.driver, state.window = "aborted", None, None
    save_state(op.store, state, actor=op.actor)


def fail_revision(op: Operator, env_id: str, revision_id: str, reason: str) -> None:
    """Record ``ready -> failed`` (an edge of the matrix) after the provider drained the revision.

    One transaction, as every operator verb: refused before the provider when the revision
    still has weight; the provider stops it; only then the new state is saved.
    """
    with op.store.transaction(env_id) as tx:
        env = tx.env
        result = lifecycle.walk_revision_chain(env, revision_id, ((Lifecycle.READY, Lifecycle.FAILED),))
        if not result.changed:
            return
        split = env.split_for(result.revision.deployment_id)
        if split is not None and any(e.revision_id == revision_id and e.weight_bps > 0 for e in split.entries):
            lifecycle.drain_revision(env, revision_id, now=op.clock())  # raises StillRouted
        bound = op.bind(env)
        op._provider_call(tx, "drain", lambda: bound.drain(env, revision_id, progress=op.progress),
                          subject={"revision_id": revision_id}, op="revision.fail")
        tx.save(result.env, audit_event=op._event(verb="revision.fail", outcome="ok", revision_id=revision_id,
                                                  reason=reason[:500]))


def _active_state(op: Operator, env_id: str, deployment_ref: str) -> tuple[str, RolloutState]:
    env = op.store.load(env_id)
    did = resolve_deployment(env, deployment_ref)
    state = load_state(op.store, env_id, did)
    if state is None:
        raise NoRollout(f"deployment {did} has no canary rollout recorded",
                        hint="rollouts start with `greentic-deployer apply -f FILE ENV` and a canary strategy")
    return did, state


def status(op: Operator, env_id: str, deployment_ref: str) -> dict[str, Any]:
    did, state = _active_state(op, env_id, deployment_ref)
    env = op.store.load(env_id)
    split = env.split_for(did)
    doc = state.to_json()
    doc["current_split"] = [[e.revision_id, e.weight_bps] for e in split.entries] if split else []
    doc["driver_alive"] = _alive(state.driver) or bool(state.driver and state.driver.get("pid") == os.getpid())
    return doc


def pause(op: Operator, env_id: str, deployment_ref: str) -> RolloutState:
    did, _ = _active_state(op, env_id, deployment_ref)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        assert state is not None
        if state.phase not in ACTIVE:
            raise EngineError(f"the rollout of {state.bundle_id} is {state.phase}; only a progressing one can pause")
        state.phase, state.reason = "paused", f"paused by {op.actor}"
        save_state(op.store, state, actor=op.actor)
        return state


def resume(op: Operator, env_id: str, deployment_ref: str) -> RolloutState:
    """A paused rollout: progressing again (the next ``apply`` continues it). An aborted one:
    its abort is forgotten, so the next ``apply`` warms the canary again and retries."""
    did, _ = _active_state(op, env_id, deployment_ref)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        assert state is not None
        if state.phase == "paused":
            state.phase, state.reason = "progressing", ""
        elif state.phase == "aborted":
            state.phase, state.reason = "retry", f"abort cleared by {op.actor} for a retry"
        elif state.phase != "progressing":
            raise EngineError(f"the rollout of {state.bundle_id} is {state.phase}; nothing to resume",
                              hint="an aborting rollout is finished with `rollout abort`")
        save_state(op.store, state, actor=op.actor)
        return state


def abort(op: Operator, env_id: str, deployment_ref: str, *, reason: str | None = None) -> RolloutState:
    """Abort now: weights back to the stable revisions, canary revisions recorded failed."""
    did, _ = _active_state(op, env_id, deployment_ref)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        assert state is not None
        if state.phase not in (*ACTIVE, "aborting"):
            raise EngineError(f"the rollout of {state.bundle_id} is {state.phase}; nothing to abort",
                              hint="to go back after a completed rollout, use `greentic-deployer traffic rollback`")
        _abort_locked(op, env_id, state, reason or state.reason or f"aborted by {op.actor}")
        return state


def promote(op: Operator, env_id: str, deployment_ref: str) -> RolloutState:
    """Skip the remaining steps and analyses: the target split now, the rollout completed."""
    did, _ = _active_state(op, env_id, deployment_ref)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        assert state is not None
        if state.phase not in ACTIVE:
            raise EngineError(f"the rollout of {state.bundle_id} is {state.phase}; only a progressing or paused "
                              "one can be promoted")
        target = [(rid, w) for rid, w in state.target]
        material = {**state.identity(), "index": len(state.steps) - 1}
        op.traffic_set(env_id, did, target, idempotency_key=step_key(env_id, did, target, material))
        state.phase, state.promoted, state.reason = "completed", True, f"promoted by {op.actor}"
        state.passed_steps, state.driver, state.window = len(state.steps), None, None
        save_state(op.store, state, actor=op.actor)
        return state


assert CanaryContext  # re-exported for type checkers
