"""Canary rollouts: step through weights, pause, analyse, and abort or promote.

A rollout moves one deployment from the split recorded before it (the *baseline*) to the
target split of the desired state through the canary steps of its strategy. Its state
(``greentic.rollout.v1``) is an attachment of the environment in its store,
``rollouts/<deployment_id>.json`` (in the file store, that file in the environment's
directory), so every operator and agent sharing the store sees it: phase, baseline, target,
the resolved steps, how many passed their analysis, the analysis results, who drives it (an
``apply`` in a terminal or the agent), its webhooks and, after an abort, why.

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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from . import lifecycle
from .codec import format_timestamp, parse_timestamp, utc_now
from .desired import Analysis, OnInconclusive, _FAST as _DESIRED, largest_remainder
from .errors import DeployerError, EngineError, GreenticError
from .operator import Operator, _scrub_error, resolve_deployment
from .plan import CanaryContext, Step, canary_material, resolve_weights, revision_name, rollout_identity, step_key
from .spec import Lifecycle
from .store import Store

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
    driver: dict[str, Any] | None = None  # who steps it: see apply_driver() / agent_driver()
    notify: list[dict[str, Any]] = attrs.field(factory=list)  # NotifyConfig records (webhooks)
    started_at: str = ""
    updated_at: str = ""
    updated_by: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored form (webhook secrets included: the store keeps it private)."""
        return attrs.asdict(self)

    def public_json(self) -> dict[str, Any]:
        """What may be printed: :meth:`to_json` with the webhooks' secrets redacted."""
        return {**self.to_json(), "notify": [_redacted(record) for record in self.notify]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RolloutState":
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def identity(self) -> dict[str, Any]:
        return rollout_identity([tuple(p) for p in self.baseline], [tuple(p) for p in self.target])

    def label(self, revision_id: str) -> str:
        name = self.names.get(revision_id)
        return f"{name} ({revision_id})" if name else revision_id


def attachment_name(deployment_id: str) -> str:
    """Where a rollout state is kept: an attachment of the environment in its store.

    In the file store that is ``<env_dir>/rollouts/<deployment_id>.json``, where it always was;
    in a shared store (PostgreSQL, S3) it is shared with the document, so every operator, CI
    runner and agent sees the same rollout.
    """
    return f"rollouts/{deployment_id}.json"


def rollouts_dir(store: Store, env_id: str) -> Path:
    """The local directory of the rollouts' ``flock`` files (in the file store, also of their states)."""
    return store.state_dir(env_id) / "rollouts"


def state_path(store: Store, env_id: str, deployment_id: str) -> Path:
    return rollouts_dir(store, env_id) / f"{deployment_id}.json"


def load_state(store: Store, env_id: str, deployment_id: str) -> RolloutState | None:
    name = attachment_name(deployment_id)
    try:
        raw = store.read_attachment(env_id, name)
        if raw is None:  # a state written before rollouts moved into the store (non-file backends)
            legacy = state_path(store, env_id, deployment_id)
            raw = legacy.read_bytes() if legacy.is_file() else None
        if raw is None:
            return None
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise GreenticError(f"cannot read the rollout state of {deployment_id}: {exc}",
                            hint=f"remove the attachment {name} of environment {env_id} to forget the rollout") from None
    return RolloutState.from_json(data)


def load_all(store: Store, env_id: str, env: Any = None) -> dict[str, RolloutState]:
    """The rollout state of every deployment of the environment that has one."""
    env = env if env is not None else store.load(env_id)
    states = {}
    for bundle in env.bundles:
        state = load_state(store, env_id, bundle.deployment_id)
        if state is not None:
            states[state.deployment_id] = state
    return states


def save_state(store: Store, state: RolloutState, *, actor: str = "") -> None:
    state.updated_at = format_timestamp(utc_now())
    if actor:
        state.updated_by = actor
    store.write_attachment(state.env_id, attachment_name(state.deployment_id),
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


def apply_driver() -> dict[str, Any]:
    """The driver record of an ``apply`` stepping a rollout in a terminal (this process)."""
    from .store.contract import _host

    return {"kind": "apply", "pid": os.getpid(), "host": _host()}


def agent_driver(holder: str | None = None) -> dict[str, Any]:
    """The driver record of a rollout the agent carries (``holder`` None: whichever agent
    claims the environment next, as ``apply --detach`` records it)."""
    from .store.contract import _host

    if holder is None:
        return {"kind": "agent", "holder": None}
    return {"kind": "agent", "holder": holder, "pid": os.getpid(), "host": _host()}


def describe_driver(driver: Mapping[str, Any] | None) -> str:
    if not driver:
        return "nobody"
    if driver.get("kind") == "agent":
        return f"the agent {driver['holder']}" if driver.get("holder") else "the agent (apply --detach)"
    host = f" on {driver['host']}" if driver.get("host") else ""
    return f"apply (process {driver.get('pid')}{host})"


def _alive(driver: Mapping[str, Any] | None) -> bool:
    """Whether an ``apply`` process drives the rollout now (agents are told apart by their
    claim on the environment, see :mod:`greentic_core.agent`)."""
    if not driver or driver.get("kind") == "agent" or not isinstance(driver.get("pid"), int):
        return False
    from .store.contract import _host

    if driver.get("host") not in (None, _host()):
        return True  # another machine's process: it cannot be checked from here
    if driver["pid"] == os.getpid():
        return False  # ourselves (an earlier, interrupted call in this process)
    try:
        os.kill(driver["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def agent_drives(state: RolloutState) -> bool:
    return bool(state.driver and state.driver.get("kind") == "agent")


# --------------------------------------------------------------------------- notifications


def notify_event(op: Operator, state: RolloutState, event: str, data: Mapping[str, Any]) -> None:
    """Send ``event`` to the rollout's webhooks; never blocks, never raises (see :mod:`.notify`)."""
    if not state.notify:
        return
    try:
        for record in state.notify:
            notifier = _notifier(op, state.env_id, record)
            notifier.emit(event, deployment={"id": state.deployment_id, "bundle": state.bundle_id}, data=dict(data))
    except Exception:  # noqa: BLE001 - a notification must never fail a rollout
        return


_NOTIFIERS: dict[tuple[str, str], Any] = {}


def _notifier(op: Operator, env_id: str, record: Mapping[str, Any]) -> Any:
    """One notifier per environment and webhook for the process's life, so events stay in order."""
    from . import notify

    key = (env_id, json.dumps(record, sort_keys=True))
    found = _NOTIFIERS.get(key)
    if found is None:
        config = notify.NotifyConfig.from_record(record)
        found = _NOTIFIERS[key] = notify.Notifier(config, env_id=env_id, actor=op.actor,
                                                  audit=notify.store_audit(op.store, env_id, op.actor, op.command))
    return found


def flush_notifications(timeout: float = 5.0) -> None:
    """Wait (bounded) for the webhooks' pending deliveries; called before a command exits."""
    import time as _time

    deadline = _time.monotonic() + timeout
    for notifier in list(_NOTIFIERS.values()):
        notifier.close(timeout=max(0.0, deadline - _time.monotonic()))
    _NOTIFIERS.clear()


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
    bound = op.bind(env, change=False)
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
    from .metrics_sources import MetricsUnavailable

    did = state.deployment_id
    unavailable = totals = end = None
    try:
        observation = op.observe(env_id)
        env = op.store.load(env_id)
        bound = op.bind(env, change=False)
        observes = bound.descriptor.capabilities.observes_weights
        try:
            totals = _window_totals(op, env, bound, state, analysis)
        except MetricsUnavailable as exc:
            unavailable = exc.message
        if totals is None and unavailable is None:
            end = read_metrics(op, env_id)
    except DeployerError as exc:
        return AnalysisResult(verdict="inconclusive", reasons=(f"the provider could not be read: {exc}",))

    def judge(start: Mapping[str, Any] | None, end: Mapping[str, Any] | None) -> AnalysisResult:
        return analyse(analysis, canary=state.canary, start=start, end=end, observation=observation,
                       expected=dict(pairs), observed_weights=observation.weights(did) if observes else None,
                       labels={rid: state.label(rid) for rid in state.canary})

    if unavailable is not None:  # the observation may still fail the step; else inconclusive, saying why
        result = judge(start=None, end=None)
        return attrs.evolve(result, reasons=(unavailable,)) if result.verdict == "inconclusive" else result
    if totals is not None:  # totals over the window: they count from zero
        return judge(start=_subset({}, state.canary), end=_subset(totals, state.canary))
    return judge(start=(state.window or {}).get("metrics"), end=_subset(end, state.canary))


def _window_totals(op: Operator, env: Any, bound: Any, state: RolloutState,
                   analysis: Analysis) -> dict[str, dict[str, Any]] | None:
    """The canary's totals over the window from the analysis's source, or None: use the
    provider's cumulative counters (source ``provider`` without a window hook, or one that
    cannot say). Raises :class:`~greentic_core.metrics_sources.MetricsUnavailable` (the window
    is inconclusive) or the provider's ``DeployerError``."""
    from .metrics_sources import DEFAULT_TIMEOUT_SECONDS, PROVIDER, MetricsUnavailable, WindowQuery, read_window

    source = analysis.source
    if source.type == PROVIDER and not bound.implements("greentic_revision_window_metrics"):
        return None
    try:
        start = parse_timestamp((state.window or {})["started_at"])
    except (KeyError, TypeError, GreenticError):
        if source.type == PROVIDER:
            return None
        raise MetricsUnavailable("the window has no recorded start time") from None
    end = max(utc_now(), start)
    if source.type == PROVIDER:
        try:
            return bound.window_metrics(env, list(state.canary), start, end)
        except DeployerError as exc:
            _scrub_error(exc, op._secrets)
            raise
    split = env.split_for(state.deployment_id)
    order = {e.revision_id: i for i, e in enumerate(split.entries)} if split is not None else {}
    query = WindowQuery(env=env, deployer=bound.name, answers=bound.answers, state_dir=bound.state_dir,
                        environment_id=env.environment_id, deployment_id=state.deployment_id,
                        bundle_id=state.bundle_id, revision_ids=tuple(state.canary), names=dict(state.names),
                        split_index=order, start=start, end=end,
                        timeout=source.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)
    try:
        return read_window(source, query)
    except MetricsUnavailable as exc:
        raise MetricsUnavailable(op._scrub(exc.message)) from None




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
                    clock: Callable[[], float] = time.monotonic, notify: tuple[Any, ...] = ()) -> str:
    """Drive one canary traffic step (see the module docstring); ``"passed"`` or ``"completed"``.

    ``plan_steps`` are all traffic steps of this rollout in the plan (to record the whole
    rollout in a fresh state); ``notify`` the desired state's webhooks (recorded with a fresh
    rollout, so whoever drives it later notifies them). Raises :class:`RolloutAborted` (the
    analysis failed: the abort is done), :class:`RolloutPaused`, or the operator's error when a
    verb failed.
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
            if agent_drives(state):
                raise RolloutBusy(f"{describe_driver(state.driver)} drives the rollout of {step.bundle_id}",
                                  hint="`greentic-deployer rollout status` shows when its next step is due; "
                                       "`rollout pause|resume|abort|promote` work as usual")
            if _alive(state.driver):
                raise RolloutBusy(f"{describe_driver(state.driver)} is driving the rollout of {step.bundle_id}",
                                  hint="wait for it, or stop it; `greentic-deployer rollout status` shows the state")
        elif fresh:
            state = _new_state(op, env_id, did, step, material, env)
            state.steps = [_step_record(s, env, did) for s in plan_steps]
        else:
            return _raise_for("replaced", state or _new_state(op, env_id, did, step, material, env), env_id)
        assert state is not None
        if fresh and notify:
            state.notify = [config.to_record() for config in notify]
        _open_window(op, env_id, state, ctx.index, pairs, key, driver=apply_driver(), fresh=fresh and not same,
                     say=say)

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
        outcome = _settle(op, env_id, current, ctx.index, result, ctx.analysis)
        if outcome in ("aborted", "paused"):
            return _raise_for(outcome, current, env_id)
        return outcome


def _open_window(op: Operator, env_id: str, state: RolloutState, index: int, pairs: list[tuple[str, int]],
                 key: str, *, driver: dict[str, Any], fresh: bool, say: Progress,
                 now: Callable[[], datetime] = utc_now) -> None:
    """Set step ``index``'s weights and open its analysis window (the rollout lock is held).

    The state is recorded before the weights change, so a crash in between resumes this
    rollout (same baseline, same idempotency keys) instead of starting one from the half-moved
    split; the window opens (start metrics, ``started_at``) once the provider enforces them.
    """
    state.driver = driver
    state.phase = "progressing"
    state.reason = ""
    state.current_step = index
    state.window = None
    save_state(op.store, state, actor=op.actor)
    if fresh:
        notify_event(op, state, "rollout.started", {"steps": len(state.steps), "baseline": state.baseline,
                                                    "target": state.target})
    count = len(state.steps)
    say(f"step {index + 1}/{count}: " + " ".join(f"{state.label(r)}={w / 100:g}%" for r, w in pairs))
    op.traffic_set(env_id, state.deployment_id, pairs, idempotency_key=key)
    analysis = _step_analysis(state, index)
    start = _try_metrics(op, env_id) if analysis is not None else None
    state.window = {"step": index, "started_at": format_timestamp(now()),
                    "metrics": _subset(start, state.canary)}
    save_state(op.store, state, actor=op.actor)
    notify_event(op, state, "rollout.step", {"step": index + 1, "steps": count, "weights": [list(p) for p in pairs],
                                             "pause_seconds": _step_pause(state, index)})


def _settle(op: Operator, env_id: str, state: RolloutState, index: int, result: AnalysisResult | None,
            analysis: Analysis | None) -> str:
    """Record step ``index``'s verdict (the rollout lock is held): ``"aborted"`` (the abort is
    done), ``"paused"`` (inconclusive), ``"passed"`` or ``"completed"``."""
    if result is not None:
        state.analyses.append({"step": index + 1, "at": format_timestamp(utc_now()), **result.to_json()})
    verdict = result.verdict if result is not None else "pass"
    if verdict == "inconclusive":
        assert analysis is not None
        if analysis.on_inconclusive == OnInconclusive.FAIL:
            verdict = "fail"
        elif analysis.on_inconclusive == OnInconclusive.PASS:
            verdict = "pass"
    if verdict == "fail":
        assert result is not None
        _abort_locked(op, env_id, state, f"step {index + 1} analysis failed: {result.summary()}",
                      analysis=result.to_json())
        return "aborted"
    if verdict == "inconclusive":
        assert result is not None
        state.phase, state.reason, state.driver = "paused", f"step {index + 1} inconclusive: {result.summary()}", None
        save_state(op.store, state, actor=op.actor)
        notify_event(op, state, "rollout.paused", {"step": index + 1, "reason": state.reason,
                                                   "analysis": result.to_json()})
        return "paused"
    state.passed_steps = index + 1
    state.window = None
    if state.passed_steps >= len(state.steps):
        state.phase, state.driver = "completed", None
    save_state(op.store, state, actor=op.actor)
    if state.phase == "completed":
        notify_event(op, state, "rollout.completed", {"steps": len(state.steps), "target": state.target})
        return "completed"
    return "passed"


def _step_analysis(state: RolloutState, index: int) -> Analysis | None:
    raw = state.steps[index].get("analysis") if 0 <= index < len(state.steps) else None
    return None if raw is None else _DESIRED.structure(raw, Analysis)


def _step_pause(state: RolloutState, index: int) -> float:
    return float(state.steps[index].get("pause_seconds") or 0) if 0 <= index < len(state.steps) else 0.0


def _step_pairs(state: RolloutState, index: int) -> list[tuple[str, int]]:
    return [(str(rid), int(w)) for rid, w in state.steps[index]["weights"]]


def _step_key(env_id: str, state: RolloutState, index: int, pairs: list[tuple[str, int]]) -> str:
    """The idempotency key ``apply`` gives the same step (so either driver's replay is a no-op)."""
    return step_key(env_id, state.deployment_id, pairs, {**state.identity(), "index": index})


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


# --------------------------------------------------------------------------- the agent's steps


def start_detached(op: Operator, env_id: str, step: Step, plan_steps: list[Step], *, holder: str,
                   notify: tuple[Any, ...] = (), now: Callable[[], datetime] = utc_now) -> str:
    """Begin a rollout the agent carries: record it and set its first step's weights (no wait).

    ``step`` is the plan's first canary step of a fresh rollout. Returns ``"stepped"``; the
    agent then calls :func:`advance` each pass.
    """
    ctx = step.canary
    assert ctx is not None and ctx.index == 0 and not ctx.resumed
    env = op.store.load(env_id)
    did = step.deployment_id or resolve_deployment(env, step.bundle_id)
    material = canary_material(env, did, ctx)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        if state is not None and state.identity() == {"baseline": material["baseline"], "target": material["target"]} \
                and state.phase != "retry":
            return "idle"  # recorded meanwhile: advance() carries it
        state = _new_state(op, env_id, did, step, material, env)
        state.steps = [_step_record(s, env, did) for s in plan_steps]
        state.notify = [config.to_record() for config in notify]
        pairs = _step_pairs(state, 0)
        _open_window(op, env_id, state, 0, pairs, _step_key(env_id, state, 0, pairs),
                     driver=agent_driver(holder), fresh=True, say=op.progress, now=now)
    return "stepped"


def due_at(state: RolloutState) -> datetime | None:
    """When the open window's pause ends (the next step is due), or None when none is open."""
    window = state.window
    if not window or state.phase != "progressing":
        return None
    return parse_timestamp(window["started_at"]) + timedelta(seconds=_step_pause(state, int(window["step"])))


def advance(op: Operator, env_id: str, deployment_id: str, *, holder: str,
            now: Callable[[], datetime] = utc_now) -> str:
    """Move a progressing rollout on as far as it can go without waiting (the agent's step).

    Takes over a rollout recorded for the agent or left by an ``apply`` that died; leaves one
    a live ``apply`` drives. Judges an open window whose pause has elapsed (as ``apply``
    does: :func:`measure`, then the verdict under the lock), then sets the next step's
    weights and opens its window. Returns what happened last: ``"idle"`` (nothing to do or
    not ours), ``"waiting"`` (a pause is running), ``"stepped"``, ``"paused"``, ``"aborted"``
    or ``"completed"``. Every decision is recorded before the next, so an agent killed at
    any point is resumed by the next one from the state, no step skipped or applied twice.
    """
    outcome = "idle"
    for _ in range(2 * MAX_STEPS):
        with rollout_lock(op.store, env_id, deployment_id):
            state = load_state(op.store, env_id, deployment_id)
            if state is None or state.phase != "progressing" or _alive(state.driver):
                return outcome
            if not state.driver or state.driver.get("holder") != holder:
                state.driver = agent_driver(holder)
                save_state(op.store, state, actor=op.actor)
            window = state.window
            if window is None or int(window["step"]) != state.current_step or state.current_step < state.passed_steps:
                index = state.passed_steps
                if index >= len(state.steps):
                    state.phase, state.driver = "completed", None
                    save_state(op.store, state, actor=op.actor)
                    return "completed"
                pairs = _step_pairs(state, index)
                _open_window(op, env_id, state, index, pairs, _step_key(env_id, state, index, pairs),
                             driver=agent_driver(holder), fresh=False, say=op.progress, now=now)
                outcome = "stepped"
                continue
            due = due_at(state)
            if due is not None and now() < due:
                return "waiting" if outcome == "idle" else outcome
            index, identity = state.current_step, state.identity()
        analysis = _step_analysis(state, index)
        result = measure(op, env_id, state, analysis, _step_pairs(state, index)) if analysis is not None else None
        with rollout_lock(op.store, env_id, deployment_id):
            current = load_state(op.store, env_id, deployment_id)
            if current is None or _check_phase(current, identity=identity) is not None \
                    or current.current_step != index or current.window is None:
                return "idle"  # paused, aborted or promoted meanwhile: theirs wins
            outcome = _settle(op, env_id, current, index, result, analysis)
            if outcome != "passed":
                return outcome
    return outcome


#: A bound on the steps one :func:`advance` takes (a rollout has at most this many).
MAX_STEPS = 100


# --------------------------------------------------------------------------- abort / promote


def _stable_split(state: RolloutState) -> list[tuple[str, int]]:
    """The baseline without the canary revisions, scaled to 10000 (largest remainder)."""
    from fractions import Fraction

    stable = [(rid, Fraction(w)) for rid, w in state.baseline if rid not in state.canary and w > 0]
    if not stable:  # cannot happen for a real rollout (some revision must lose weight)
        stable = [(rid, Fraction(w)) for rid, w in state.baseline if w > 0]
    return [(rid, w) for rid, w in largest_remainder(stable) if w > 0]


def _abort_locked(op: Operator, env_id: str, state: RolloutState, reason: str,
                  analysis: Mapping[str, Any] | None = None) -> None:
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
    notify_event(op, state, "rollout.aborted", {"reason": reason, "analysis": dict(analysis) if analysis else None,
                                                "split": [list(p) for p in stable]})


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
    doc = state.public_json()
    doc["current_split"] = [[e.revision_id, e.weight_bps] for e in split.entries] if split else []
    doc["driver_alive"] = _alive(state.driver) or bool(state.driver and state.driver.get("pid") == os.getpid())
    doc["driven_by"] = describe_driver(state.driver) if state.phase == "progressing" else None
    due = due_at(state)
    doc["next_step_due"] = format_timestamp(due) if due is not None else None
    doc["warnings"] = []
    if state.phase == "progressing" and (agent_drives(state) or not doc["driver_alive"]):
        from .agent import STALE_AFTER, last_pass

        seen = last_pass(op.store, env_id)
        doc["last_agent_pass"] = seen
        age = (utc_now() - parse_timestamp(seen["at"])).total_seconds() if seen else None
        if age is None or age > STALE_AFTER:
            doc["warnings"].append(("no agent has made a pass over this environment"
                                    if age is None else f"no agent has made a pass for {age:.0f}s")
                                   + f": start `greentic-deployer agent {env_id}` to carry this rollout on")
    return doc


def _redacted(record: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from . import notify

        return notify.NotifyConfig.from_record(record).redacted()
    except Exception:  # noqa: BLE001 - never print what could not be redacted
        return {"url": "***"}


def pause(op: Operator, env_id: str, deployment_ref: str) -> RolloutState:
    did, _ = _active_state(op, env_id, deployment_ref)
    with rollout_lock(op.store, env_id, did):
        state = load_state(op.store, env_id, did)
        assert state is not None
        if state.phase not in ACTIVE:
            raise EngineError(f"the rollout of {state.bundle_id} is {state.phase}; only a progressing one can pause")
        state.phase, state.reason = "paused", f"paused by {op.actor}"
        save_state(op.store, state, actor=op.actor)
        notify_event(op, state, "rollout.paused", {"step": state.passed_steps + 1, "reason": state.reason})
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
        notify_event(op, state, "rollout.promoted", {"target": state.target})
        return state


assert CanaryContext  # re-exported for type checkers
