"""The operator: sequences provider verbs with lifecycle and traffic records (library API, no CLI).

Every verb runs in one store transaction (the environment's exclusive lock is held from load
to save) in this order:

1. resolve the ids the user gave (full ids, unambiguous prefixes, ``latest``);
2. run the pure engine on the loaded environment, so a refused change (conflict, guard, bad
   weights) fails before any provider call;
3. call the provider through the bound deployer (which checks the contract preconditions);
4. only after the provider succeeded, save the engine's new environment.

A provider failure leaves ``environment.json`` byte-identical and appends an audit event
saying what failed. ``record_only`` skips step 3 and says so in the audit log. Secrets from
the answers never reach an audit event or a result.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import attrs

from . import lifecycle, traffic
from .codec import utc_now
from .contract import REDACTED, BoundDeployer, absolute_path_answers, redact_answers
from .errors import (
    DeployerError,
    GreenticError,
    bounded,
    PluginUnusable,
    ProviderError,
    ProviderTimeout,
    SpecError,
)
from .ids import PackDescriptor, mint_ulid, parse_env_id
from .outcomes import CheckStatus, Observation, PreflightCheck
from .projection import materialize_runtime_config
from .references import AmbiguousReference, InvalidInput, UnknownReference, resolve_deployment, resolve_revision
from .registry import Registry
from .routes import check_route_values
from .spec import (
    DEFAULT_LISTEN_ADDR,
    CapabilitySlot,
    Environment,
    EnvPackBinding,
    HostConfig,
    Lifecycle,
    Revision,
    RuntimeConfig,
    TrafficSplit,
    Workload,
)
from .store import StoreBackend
from .validation import validate_environment

ANSWERS_REF = "env-packs/deployer/answers.json"
Progress = Callable[[str], None]


class NoDeployerBinding(GreenticError):
    kind = "validation"
    exit_code = 2


@attrs.frozen
class VerbResult:
    """What a lifecycle verb did: the revision as recorded and the provider's outcome detail."""

    revision: Revision
    starting_lifecycle: Lifecycle
    record_only: bool
    outcome: Mapping[str, Any]
    generation: int


@attrs.frozen
class TrafficChange:
    split: TrafficSplit
    changed: bool
    record_only: bool
    outcome: Mapping[str, Any]
    generation: int


def _no_progress(message: str) -> None:
    pass


#: A provider that ignores ``timeout`` still cannot hold a command forever: after the timeout
#: (or this cap when none was given) plus a grace period, the command gives up on it.
DEFAULT_HARD_TIMEOUT = 3600.0
HANG_GRACE_SECONDS = 5.0
#: Overrides :data:`HANG_GRACE_SECONDS` (seconds, >= 0), read at each provider call; the
#: reliability tests set it to 0.5 so a hanging provider costs them seconds, not minutes.
HANG_GRACE_ENV = "GREENTIC_HANG_GRACE_SECONDS"


def _hang_grace() -> float:
    """The grace period after a provider call's timeout: ``$GREENTIC_HANG_GRACE_SECONDS`` when it
    is a finite number >= 0, else :data:`HANG_GRACE_SECONDS`."""
    raw = os.environ.get(HANG_GRACE_ENV, "").strip()
    try:
        value = float(raw) if raw else HANG_GRACE_SECONDS
    except ValueError:
        return HANG_GRACE_SECONDS
    return value if 0 <= value < float("inf") else HANG_GRACE_SECONDS


CANCEL_GRACE_SECONDS = 15.0
#: how long the undo of a failed call (e.g. archiving what a failed stage prepared) may take
#: when the command gave no timeout
UNDO_TIMEOUT = 30.0


class _Cancelled(KeyboardInterrupt):
    """Raised inside a provider call (from its ``progress`` callback) after Ctrl-C."""


def _call_with_deadline(call: Callable[[], Any], verb: str, timeout: float | None,
                        cancel: threading.Event | None = None) -> Any:
    """Run a provider call in a worker thread and stop waiting for it at the deadline.

    Python cannot kill the thread; it is a daemon, so a CLI process exits regardless, and
    nothing is recorded for the abandoned call (the caller raises before saving). On Ctrl-C
    the ``cancel`` event is set: the provider's next ``progress`` call raises
    KeyboardInterrupt inside the provider, which then undoes what it started; we wait for
    that (bounded) before passing the interrupt on.
    """
    limit = (timeout if timeout is not None else DEFAULT_HARD_TIMEOUT) + _hang_grace()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"greentic-provider-{verb}", daemon=True)
    worker.start()
    try:
        worker.join(limit)
    except KeyboardInterrupt:
        if cancel is not None:
            cancel.set()
            worker.join(CANCEL_GRACE_SECONDS)
        raise
    if worker.is_alive():
        raise ProviderTimeout(
            f"the provider did not return from {verb} within {limit:g}s; nothing was recorded",
            hint="check what the provider did with `greentic-deployer env observe ENV`, then retry "
                 "or run `greentic-deployer env reconcile ENV`",
            verb=verb, seconds=limit)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _outcome_detail(outcome: Any) -> dict[str, Any]:
    if outcome is None:
        return {}
    detail = dict(getattr(outcome, "detail", {}) or {})
    for key in ("provider_weights", "max_deviation_bps"):
        value = getattr(outcome, key, None)
        if value is not None:
            detail[key] = dict(value) if isinstance(value, Mapping) else value
    return detail


def _secret_values(bound: BoundDeployer) -> tuple[str, ...]:
    secrets = bound.descriptor.secret_keys()
    values = {str(v) for k, v in bound.answers.items() if k in secrets and v not in (None, "")}
    # longest first, so a secret that contains another is replaced whole
    return tuple(sorted((v for v in values if len(v) >= 3), key=len, reverse=True))


def _whole(exc: BaseException) -> str:
    """An error's whole text, to scrub before anything cuts it (``str()`` of ours is cut)."""
    return exc.message if isinstance(exc, GreenticError) else str(exc)


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value


def _scrub_error(exc: GreenticError, secrets: Sequence[str]) -> None:
    """Remove secret answer values from an error before it is printed or audited, and from the
    exceptions chained to it (a raw plugin exception quoting a secret is the ``__cause__`` of
    the ProviderError, and ``--debug`` prints the chain)."""
    if not secrets:
        return
    exc.message = _scrub(exc.message, secrets)
    exc.args = (exc.message, *exc.args[1:])
    if exc.hint:
        exc.hint = _scrub(exc.hint, secrets)
    exc.details = _scrub(dict(exc.details), secrets)
    link: BaseException = exc
    seen = {id(exc)}
    while True:
        chained = link.__cause__ if link.__cause__ is not None else link.__context__
        if chained is None or id(chained) in seen:
            return
        seen.add(id(chained))
        if isinstance(chained, GreenticError):
            chained.message = _scrub(chained.message, secrets)
            chained.hint = _scrub(chained.hint, secrets) if chained.hint else chained.hint
            chained.details = _scrub(dict(chained.details), secrets)
        try:
            chained.args = tuple(_scrub(arg, secrets) for arg in chained.args)
            text = str(chained)
        except Exception:  # an exception type whose args or __str__ we cannot use
            text = secrets[0]
        if any(secret in text for secret in secrets):  # cannot be cleaned: cut it from the chain
            link.__cause__ = None
            link.__context__ = None
            link.__suppress_context__ = True
            return
        link = chained


# --------------------------------------------------------------------------- references


def _resolve_in(env: Environment, revision_ref: str, deployment_ref: str | None) -> str:
    """A revision id, searched in one deployment when ``deployment_ref`` is given."""
    deployment_id = resolve_deployment(env, deployment_ref) if deployment_ref else None
    return resolve_revision(env, revision_ref, deployment_id)


# --------------------------------------------------------------------------- the operator


class Operator:
    """Runs the deployer commands against a store and the installed plugins."""

    def __init__(self, store: StoreBackend, registry: Registry, *, actor: str, command: str = "",
                 progress: Progress | None = None, clock: Callable[[], Any] = utc_now) -> None:
        self.store = store
        self.registry = registry
        self.actor = actor
        self.command = command
        self._user_progress = progress or _no_progress
        self._cancel = threading.Event()
        self.clock = clock

    # -- helpers ----------------------------------------------------------------------------

    def progress(self, message: str) -> None:
        """What providers call during waits: shows progress, and is where Ctrl-C reaches them."""
        if self._cancel.is_set():
            raise _Cancelled()
        self._user_progress(message)

    @property
    def updated_by(self) -> str:
        return f"operator://local/{self.actor}"

    def _event(self, **fields: Any) -> dict[str, Any]:
        event = {"actor": self.actor, "command": self.command}
        event.update({k: v for k, v in fields.items() if v is not None})
        return event

    def deployer_binding(self, env: Environment) -> EnvPackBinding:
        binding = env.pack_for_slot(CapabilitySlot.DEPLOYER)
        if binding is None:
            raise NoDeployerBinding(
                f"environment {env.environment_id!r} has no deployer binding",
                hint="create environments with `greentic-deployer env init ENV --deployer PATH@VERSION`")
        return binding

    def load_answers(self, env: Environment) -> dict[str, Any]:
        binding = self.deployer_binding(env)
        if not binding.answers_ref:
            return {}
        path = f"{self.store.location(env.environment_id)}/{binding.answers_ref}"
        raw = self.store.read_attachment(env.environment_id, binding.answers_ref)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidInput(f"cannot read deployer answers {path}: {exc}",
                               hint="fix or remove the answers file") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"deployer answers {path} must be a JSON object")
        return data

    def bind(self, env: Environment, *, change: bool = True) -> BoundDeployer:
        """The environment's deployer, bound to its answers and state directory.

        ``change``: the caller will change something through the provider. For a provider with
        host-local state on a shared store, that is refused from any host but the one that runs
        the environment (:mod:`greentic_core.host_state`); reads pass ``change=False``.
        """
        binding = self.deployer_binding(env)
        bound = self.registry.bind(binding.kind, self.load_answers(env), self.store.state_dir(env.environment_id))
        if change:
            from . import host_state

            if host_state.applies(self.store, bound):
                host_state.check(self.store, env.environment_id, actor=self.actor, deployer=bound.descriptor.path)
        self._secrets = _secret_values(bound)
        return bound

    def _scrub(self, value: Any) -> Any:
        """``value`` with every secret answer value replaced (a provider may quote one)."""
        return _scrub(value, getattr(self, "_secrets", ()))

    def _detail(self, outcome: Any) -> dict[str, Any]:
        return self._scrub(_outcome_detail(outcome))

    def _provider_call(self, tx, verb: str, call: Callable[[], Any], *, subject: dict[str, Any],
                       op: str | None = None, audit_ok: bool = False, timeout: float | None = None,
                       undo: tuple[str, Callable[[], Any]] | None = None) -> Any:
        """Run one provider verb; on failure audit it (nothing else changes) and re-raise.

        ``op`` is the operation's audit verb (``revision.warm``), so a failed attempt is listed
        under the same verb as a successful one; ``provider_verb`` says which call failed.
        A successful call is audited by the caller's save event, or here with ``audit_ok``
        (calls that record nothing, e.g. reconcile). ``undo`` = ``(name, call)``: after a failure
        (not Ctrl-C, where the provider undoes its own work), a best-effort provider call that
        removes what the failed call may have left behind; its result is in the audit event.
        """
        started = time.monotonic()
        try:
            self._cancel.clear()
            result = _call_with_deadline(call, verb, timeout, self._cancel)
            if audit_ok:
                tx.audit(self._event(verb=op or verb, provider_verb=verb, outcome="ok",
                                     duration_ms=round((time.monotonic() - started) * 1000), **subject))
            return result
        except (DeployerError, KeyboardInterrupt) as exc:
            outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            if isinstance(exc, GreenticError):
                _scrub_error(exc, getattr(self, "_secrets", ()))
            error = "interrupted" if isinstance(exc, KeyboardInterrupt) else bounded(str(exc))  # scrubbed, then cut
            undone = None
            if undo is not None and not isinstance(exc, KeyboardInterrupt):
                try:
                    _call_with_deadline(undo[1], undo[0], timeout if timeout is not None else UNDO_TIMEOUT)
                    undone = f"{undo[0]} ok"
                except DeployerError as undo_exc:
                    undone = f"{undo[0]} failed: {bounded(self._scrub(undo_exc.message))}"
            try:
                tx.audit(self._event(verb=op or verb, provider_verb=verb, outcome=outcome, error=error,
                                     duration_ms=round((time.monotonic() - started) * 1000), undo=undone,
                                     **subject))
            except GreenticError:
                pass  # the provider error is the one to report
            if isinstance(exc, ProviderError) and exc.hint is None:
                exc.hint = f"fix the cause and run the command again; `greentic-deployer env doctor {tx.env_id}` checks the setup"
            raise
        finally:
            self._last_duration_ms = round((time.monotonic() - started) * 1000)

    # -- environments -----------------------------------------------------------------------

    def init_env(self, env_id: str, deployer: str, *, answers: Mapping[str, Any] | None = None,
                 listen_addr: str | None = None, name: str | None = None) -> Environment:
        parse_env_id(env_id)
        self.store.check_env_id(env_id)  # refuses ids unsafe as a directory name
        kind = self._pin(deployer)
        bound = self.registry.bind(kind, dict(answers or {}), None)  # validates answers first
        bound.answers = absolute_path_answers(bound.descriptor, bound.answers)
        host = HostConfig(env_id=env_id, listen_addr=listen_addr)
        env = Environment(
            environment_id=env_id, name=name or env_id, host_config=host,
            packs=(EnvPackBinding(slot=CapabilitySlot.DEPLOYER, kind=kind,
                                  pack_ref=f"pack-{kind.path}", answers_ref=ANSWERS_REF, generation=1),),
        )
        validate_environment(env)
        stored = self.store.create(env, audit_event=self._event(
            verb="env.init", outcome="ok", deployer=str(kind),
            answers=redact_answers(bound.descriptor, bound.answers)))
        self.store.write_attachment(env_id, ANSWERS_REF, (json.dumps(bound.answers, indent=2) + "\n").encode())
        return stored

    def _pin(self, deployer: str) -> PackDescriptor:
        """``path@version`` as given, or ``path`` pinned to the installed plugin's version."""
        if "@" in deployer:
            return PackDescriptor.parse(deployer)
        record = self.registry.record(deployer)
        if not record.ok or record.descriptor is None:
            raise PluginUnusable(f"deployer plugin {deployer} is {record.status}: {record.reason}",
                                 hint=record.hint or f"see `greentic-deployer plugins show {deployer}`")
        return PackDescriptor.parse(f"{deployer}@{record.descriptor.version}")

    def history(self, env_id: str) -> list[dict[str, Any]]:
        return list(reversed(self.store.audit_events(env_id)))

    # -- deployments ------------------------------------------------------------------------

    def add_deployment(self, env_id: str, bundle_id: str, *, hosts: Sequence[str] = (),
                       path_prefixes: Sequence[str] = ()):
        check_route_values(f"of bundle {bundle_id}", hosts, path_prefixes)  # the shared rules, before the store is touched
        with self.store.transaction(env_id) as tx:
            env, deployment = lifecycle.add_deployment(tx.env, bundle_id, hosts=tuple(hosts),
                                                       path_prefixes=tuple(path_prefixes), now=self.clock())
            self._check_routes(env, deployment.deployment_id)  # the provider's rules, before it is recorded
            tx.save(env, audit_event=self._event(verb="deployment.add", outcome="ok",
                                                 deployment_id=deployment.deployment_id, bundle_id=bundle_id))
            return deployment

    def _check_routes(self, env: Environment, deployment_id: str) -> None:
        """The deployment's routes against the shared rules and, when its plugin is installed, the provider's.

        Pure (no provider call). An environment whose plugin cannot be bound here (not
        installed, answers invalid) gets the shared rules only; the provider's rules run again
        before every stage, warm and traffic change, which need the plugin anyway.
        """
        try:
            bound = self.bind(env, change=False)
        except GreenticError:
            deployment = env.deployment(deployment_id)
            if deployment is not None:
                check_route_values(deployment_id, deployment.route_binding.hosts,
                                   deployment.route_binding.path_prefixes)
            return
        bound.validate_routes(env, deployment_id)

    # -- revisions --------------------------------------------------------------------------

    def stage(self, env_id: str, deployment_ref: str, *, workload: Workload | None = None,
              drain_seconds: int = 30, bundle_digest: str = "sha256:00", record_only: bool = False,
              timeout: float | None = None) -> VerbResult:
        with self.store.transaction(env_id) as tx:
            deployment_id = resolve_deployment(tx.env, deployment_ref)
            result = lifecycle.stage_revision(tx.env, deployment_id, workload=workload,
                                              drain_seconds=drain_seconds, bundle_digest=bundle_digest,
                                              now=self.clock())
            rid = result.revision.revision_id
            self._check_routes(result.env, deployment_id)  # routes recorded earlier, before any provider call
            outcome = None
            if not record_only:
                bound = self.bind(result.env)
                # A failed stage is never recorded, so nothing would ever archive what it prepared
                # (the retry stages a new revision id): undo it now.
                outcome = self._provider_call(
                    tx, "stage", lambda: bound.stage(result.env, rid, progress=self.progress, timeout=timeout),
                    subject={"revision_id": rid, "deployment_id": deployment_id}, op="revision.stage", timeout=timeout,
                    undo=("archive", lambda: bound.archive(result.env, rid, progress=self.progress, timeout=timeout)))
            stored = tx.save(result.env, audit_event=self._event(
                verb="revision.stage", outcome="ok", revision_id=rid, deployment_id=deployment_id,
                record_only=record_only or None, duration_ms=None if record_only else self._last_duration_ms))
            return VerbResult(stored.revision(rid), result.starting_lifecycle, record_only, self._detail(outcome),
                              stored.generation)

    def warm(self, env_id: str, revision_ref: str, *, deployment_ref: str | None = None, record_only: bool = False,
             timeout: float | None = None) -> VerbResult:
        with self.store.transaction(env_id) as tx:
            env = tx.env
            rid = _resolve_in(env, revision_ref, deployment_ref)
            now = self.clock()
            lifecycle.warm_revision(env, rid, now=now)  # refused transitions fail before the provider
            self._check_routes(env, env.revision(rid).deployment_id)
            outcome, gate = None, None
            if not record_only:
                bound = self.bind(env)
                outcome = self._provider_call(
                    tx, "warm", lambda: bound.warm(env, rid, progress=self.progress, timeout=timeout),
                    subject={"revision_id": rid}, op="revision.warm", timeout=timeout)
                gate = self._health_gate(bound, rid)
            event = self._event(verb="revision.warm", revision_id=rid, record_only=record_only or None,
                                duration_ms=None if record_only else self._last_duration_ms)
            try:
                result = lifecycle.warm_revision(env, rid, now=now, health_gate=gate)
            except lifecycle.HealthGateFailed as exc:
                tx.save(exc.environment, audit_event={**event, "outcome": "health_gate_failed", "error": bounded(str(exc))})
                raise
            stored = tx.save(result.env, audit_event={**event, "outcome": "ok"})
            return VerbResult(stored.revision(rid), result.starting_lifecycle, record_only,
                              self._detail(outcome), stored.generation)

    def _health_gate(self, bound: BoundDeployer, rid: str):
        """After a successful warm, the provider's own observation must say the revision serves."""

        def gate(env: Environment, revision: Revision):
            try:
                observed = bound.observe(env).revision(rid)
            except DeployerError as exc:
                return lifecycle.HealthGateFailure(failed_checks=("provider-health",),
                                                   message=bounded(f"observe failed after warm: {self._scrub(_whole(exc))}"))
            if observed.present and observed.serving:
                return None
            return lifecycle.HealthGateFailure(
                failed_checks=("provider-health",),
                message=f"provider reports revision {rid} present={observed.present} serving={observed.serving}"
                        + (f" ({self._scrub(observed.detail)})" if observed.detail else ""))

        return gate

    def drain(self, env_id: str, revision_ref: str, *, deployment_ref: str | None = None, record_only: bool = False,
              timeout: float | None = None) -> VerbResult:
        with self.store.transaction(env_id) as tx:
            env = tx.env
            rid = _resolve_in(env, revision_ref, deployment_ref)
            now = self.clock()
            drained = lifecycle.drain_revision(env, rid, now=now)  # StillRouted / Conflict before the provider
            outcome = None
            if not record_only:
                bound = self.bind(env)
                outcome = self._provider_call(
                    tx, "drain", lambda: bound.drain(env, rid, progress=self.progress, timeout=timeout),
                    subject={"revision_id": rid}, op="revision.drain", timeout=timeout)
            # The provider has finished draining and stopped the revision: record it inactive.
            done = lifecycle.complete_drain(drained.env, rid, now=now)
            stored = tx.save(done.env, audit_event=self._event(
                verb="revision.drain", outcome="ok", revision_id=rid, record_only=record_only or None,
                duration_ms=None if record_only else self._last_duration_ms))
            return VerbResult(stored.revision(rid), drained.starting_lifecycle, record_only,
                              self._detail(outcome), stored.generation)

    def archive(self, env_id: str, revision_ref: str, *, deployment_ref: str | None = None, record_only: bool = False,
                timeout: float | None = None) -> VerbResult:
        with self.store.transaction(env_id) as tx:
            env = tx.env
            rid = _resolve_in(env, revision_ref, deployment_ref)
            result = lifecycle.archive_revision(env, rid, now=self.clock())  # guard before the provider
            outcome = None
            if not record_only:
                bound = self.bind(env)
                outcome = self._provider_call(
                    tx, "archive", lambda: bound.archive(env, rid, progress=self.progress, timeout=timeout),
                    subject={"revision_id": rid}, op="revision.archive", timeout=timeout)
            stored = tx.save(result.env, audit_event=self._event(
                verb="revision.archive", outcome="ok", revision_id=rid, record_only=record_only or None,
                duration_ms=None if record_only else self._last_duration_ms))
            return VerbResult(stored.revision(rid), result.starting_lifecycle, record_only,
                              self._detail(outcome), stored.generation)

    # -- traffic ----------------------------------------------------------------------------

    def traffic_set(self, env_id: str, deployment_ref: str, weights: str | Sequence[tuple[str, int]], *,
                    idempotency_key: str | None = None, record_only: bool = False,
                    timeout: float | None = None) -> TrafficChange:
        pairs = traffic.parse_weights(weights) if isinstance(weights, str) else list(weights)
        with self.store.transaction(env_id) as tx:
            env = tx.env
            deployment_id = resolve_deployment(env, deployment_ref)
            resolved = [(resolve_revision(env, rev, deployment_id), bps) for rev, bps in pairs]
            result = traffic.set_traffic_split(
                env, deployment_id, resolved, idempotency_key=idempotency_key or f"set-{mint_ulid()}",
                updated_by=self.updated_by, now=self.clock())
            return self._apply_split(tx, result, deployment_id, "traffic.set", record_only, timeout)

    def traffic_rollback(self, env_id: str, deployment_ref: str, *, steps: int = 1, record_only: bool = False,
                         timeout: float | None = None) -> TrafficChange:
        with self.store.transaction(env_id) as tx:
            deployment_id = resolve_deployment(tx.env, deployment_ref)
            result = traffic.rollback_traffic_split(tx.env, deployment_id, steps=steps,
                                                    updated_by=self.updated_by, now=self.clock())
            return self._apply_split(tx, result, deployment_id, "traffic.rollback", record_only, timeout,
                                     steps=steps)

    def _apply_split(self, tx, result, deployment_id: str, verb: str, record_only: bool,
                     timeout: float | None, **extra: Any) -> TrafficChange:
        self._check_routes(result.env, deployment_id)  # before any provider call and before anything is recorded
        outcome = None
        if not record_only:
            bound = self.bind(result.env)
            # Applied on a replay too, so a provider left behind by a failed call is repaired.
            outcome = self._provider_call(
                tx, "apply_traffic_split",
                lambda: bound.apply_traffic_split(result.env, deployment_id, progress=self.progress, timeout=timeout),
                subject={"deployment_id": deployment_id}, op=verb, timeout=timeout)
        weights = {e.revision_id: e.weight_bps for e in result.split.entries}
        if result.changed:
            stored = tx.save(result.env, audit_event=self._event(
                verb=verb, outcome="ok", deployment_id=deployment_id, split_generation=result.split.generation,
                weights=weights, record_only=record_only or None,
                duration_ms=None if record_only else self._last_duration_ms, **extra))
            split = stored.split_for(deployment_id)
        else:
            tx.refresh_runtime_config()
            tx.audit(self._event(verb=verb, outcome="replayed", deployment_id=deployment_id,
                                 split_generation=result.split.generation, weights=weights))
            stored, split = tx.env, result.split
        assert split is not None
        return TrafficChange(split, result.changed, record_only, self._detail(outcome), stored.generation)

    # -- inspection and repair ---------------------------------------------------------------

    def observe(self, env_id: str) -> Observation:
        env = self.store.load(env_id)
        bound = self.bind(env, change=False)
        try:
            return bound.observe(env)
        except DeployerError as exc:
            _scrub_error(exc, self._secrets)
            raise

    def render(self, env_id: str, deployment_ref: str | None = None) -> list[dict[str, Any]]:
        """The provider's dry run (``greentic_render``): what it would apply for ``env`` as recorded.

        Routes are checked first; nothing is recorded and the provider is not contacted.
        """
        env = self.store.load(env_id)
        deployment_id = resolve_deployment(env, deployment_ref) if deployment_ref is not None else None
        bound = self.bind(env, change=False)
        if not bound.implements("greentic_render"):
            raise InvalidInput(f"deployer plugin {bound.name} has no dry run (it implements no greentic_render)",
                               hint=f"see `greentic-deployer plugins show {bound.name}`")
        try:
            objects = bound.render(env, deployment_id)
        except DeployerError as exc:
            _scrub_error(exc, self._secrets)
            raise
        return self._scrub(list(objects or []))

    def logs(self, env_id: str, revision_ref: str, *, stream: str = "stdout", replica: int = 0,
             lines: int | None = None, follow: bool = False) -> Any:
        """A revision's log lines from its provider (``greentic_revision_logs``), secrets scrubbed."""
        env = self.store.load(env_id)
        revision_id = resolve_revision(env, revision_ref)
        bound = self.bind(env, change=False)
        if not bound.implements("greentic_revision_logs"):
            raise InvalidInput(f"deployer plugin {bound.name} keeps no logs the deployer can read "
                               "(it implements no greentic_revision_logs)",
                               hint="read them where the provider keeps them")
        produced = bound.logs(env, revision_id, stream=stream, replica=replica, lines=lines, follow=follow)
        if produced is None:
            raise InvalidInput(f"deployer plugin {bound.name} has no logs for revision {revision_id}")
        try:
            for line in produced:
                yield self._scrub(line)
        except DeployerError as exc:
            _scrub_error(exc, self._secrets)
            raise

    def runtime_config(self, env_id: str) -> RuntimeConfig:
        env = self.store.load(env_id)
        reported = None
        try:
            reported = self.bind(env, change=False).report_runtime_config(env)
        except GreenticError:
            reported = None
        return reported or materialize_runtime_config(env)

    def doctor(self, env_id: str) -> list[PreflightCheck]:
        """Is this environment workable? Each check passes, fails or is skipped, with a message."""
        checks: list[PreflightCheck] = []

        def add(name: str, status: CheckStatus, message: str = "") -> None:
            checks.append(PreflightCheck(name=name, status=status, message=message))

        try:
            env = self.store.load(env_id)
            add("environment-valid", CheckStatus.PASS, f"generation {env.generation}")
        except GreenticError as exc:
            add("environment-valid", CheckStatus.FAIL, str(exc))
            return checks
        try:
            binding = self.deployer_binding(env)
        except GreenticError as exc:
            add("deployer-binding", CheckStatus.FAIL, str(exc))
            return checks
        record = None
        try:
            record = self.registry.record(binding.kind.path)
            status = CheckStatus.PASS if record.ok else CheckStatus.FAIL
            add("plugin-installed", status, f"{record.distribution} {record.dist_version} is {record.status}"
                + (f": {record.reason}" if record.reason else ""))
        except GreenticError as exc:
            add("plugin-installed", CheckStatus.FAIL, f"{exc}" + (f" ({exc.hint})" if exc.hint else ""))
        if record is None or not record.ok:
            for name in ("version-pin", "answers-valid", "preflight"):
                add(name, CheckStatus.SKIP, "plugin not usable")
            return checks
        try:
            self.registry.resolve(binding.kind)
            add("version-pin", CheckStatus.PASS, f"{binding.kind} satisfied by {record.descriptor.version}")
        except GreenticError as exc:
            add("version-pin", CheckStatus.FAIL, str(exc))
            add("answers-valid", CheckStatus.SKIP, "version pin not satisfied")
            add("preflight", CheckStatus.SKIP, "version pin not satisfied")
            return checks
        try:
            bound = self.bind(env, change=False)
            add("answers-valid", CheckStatus.PASS, "answers match the plugin's schema")
        except GreenticError as exc:
            add("answers-valid", CheckStatus.FAIL, str(exc))
            add("preflight", CheckStatus.SKIP, "answers invalid")
            return checks
        try:
            stored = self.store.load_runtime_config(env_id)
            expected = materialize_runtime_config(env)
            if (stored or None) == (expected if expected.revisions else None):
                add("runtime-config", CheckStatus.PASS, "runtime-config.json matches the environment")
            else:
                add("runtime-config", CheckStatus.FAIL, "runtime-config.json is stale; `env reconcile` rewrites it")
        except GreenticError as exc:
            add("runtime-config", CheckStatus.FAIL, str(exc))
        bad_routes = []
        for deployment in env.bundles:
            try:
                bound.validate_routes(env, deployment.deployment_id)
            except DeployerError as exc:
                bad_routes.append(str(exc))
        if bad_routes:
            add("routes", CheckStatus.FAIL, "; ".join(bad_routes))
        else:
            add("routes", CheckStatus.PASS, f"the routes of {len(env.bundles)} deployment(s) meet the shared and "
                                            "the provider's rules")
        if bound.implements("greentic_preflight"):
            try:
                for check in bound.preflight(env):
                    checks.append(attrs.evolve(check, name=f"preflight:{check.name}",
                                               message=bounded(self._scrub(check.message))))
            except DeployerError as exc:
                add("preflight", CheckStatus.FAIL, bounded(self._scrub(_whole(exc))))
        else:
            add("preflight", CheckStatus.SKIP, "the plugin has no preflight checks")
        return checks

    def reconcile(self, env_id: str, *, timeout: float | None = None, revision_ids: Collection[str] | None = None,
                  deployment_ids: Collection[str] | None = None, verb: str = "env.reconcile") -> dict[str, Any]:
        """Re-run the idempotent provider verbs so the provider matches what is recorded.

        ``revision_ids`` / ``deployment_ids`` limit it to those revisions and splits (the
        agent repairs only what drifted); None means all. ``verb`` names it in the audit log.
        """
        actions: list[dict[str, Any]] = []
        with self.store.transaction(env_id) as tx:
            env = tx.env
            bound = self.bind(env)
            for revision in env.revisions:
                rid, state = revision.revision_id, revision.lifecycle
                if revision_ids is not None and rid not in revision_ids:
                    continue
                if state in (Lifecycle.READY, Lifecycle.WARMING):
                    provider_verb, call = "warm", bound.warm
                elif state == Lifecycle.STAGED:
                    provider_verb, call = "stage", bound.stage
                elif state == Lifecycle.ARCHIVED:
                    provider_verb, call = "archive", bound.archive
                else:  # inactive, draining, failed: nothing may run
                    provider_verb, call = "drain", bound.drain
                self._provider_call(tx, provider_verb, lambda: call(env, rid, progress=self.progress, timeout=timeout),
                                    subject={"revision_id": rid}, op=verb, audit_ok=True, timeout=timeout)
                actions.append({"verb": provider_verb, "revision_id": rid, "lifecycle": state.value})
            for split in env.traffic_splits:
                if deployment_ids is not None and split.deployment_id not in deployment_ids:
                    continue
                self._provider_call(
                    tx, "apply_traffic_split",
                    lambda: bound.apply_traffic_split(env, split.deployment_id, progress=self.progress, timeout=timeout),
                    subject={"deployment_id": split.deployment_id}, op=verb, audit_ok=True, timeout=timeout)
                actions.append({"verb": "apply_traffic_split", "deployment_id": split.deployment_id})
            rewritten = tx.refresh_runtime_config()
            if revision_ids is None and deployment_ids is None:
                tx.audit(self._event(verb=verb, outcome="ok", actions=len(actions)))
        return {"actions": actions, "runtime_config_rewritten": rewritten}
