"""The agent: reconcile continuously and carry rollouts on while nobody watches.

One *pass* visits each environment (those named, or every environment in the store):

1. **Claim** the environment. Under the environment's lease (held for a read and a write,
   never while sleeping or calling a provider) the agent reads the attachment ``agent.json``;
   when another agent's claim is still valid it leaves the environment alone this pass
   (*standby*), otherwise it writes its own claim (holder, pid, host, expiry). So two agents
   on one environment never both act in one pass, across hosts too, on every store backend.
   A claim lasts ``claim_ttl`` seconds and is renewed each pass; a claim left by a dead agent
   on this host (same holder, dead pid) is taken over at once, others when they expire.
2. **Repair drift**, as ``env reconcile`` does but only where the provider differs from the
   record: a ready revision that is not present and serving gets the provider's ``warm``
   again; a split the provider does not enforce as recorded gets ``apply_traffic_split``
   again. Each attempt is one audit event (actor ``agent@host``). A revision that is still not
   serving after ``max_attempts`` repairs is given up: recorded ``failed`` (drained by the
   provider) when no split routes it, else reported; it is not retried again until it serves
   or someone changes it.
3. **Carry rollouts on**: a detached apply (``apply --detach``) runs its next steps, and each
   progressing rollout the agent drives (or whose ``apply`` died) moves on when its pause has
   elapsed (:func:`greentic_core.rollout.advance`): analysis, abort, next step or completion.

A failure (a provider or store error) backs the environment off: ``interval * 2^n`` seconds
(at most ``MAX_BACKOFF``) before it is tried again. Everything the agent decides is recorded
before it acts on it, so SIGKILL loses nothing: the next agent resumes from the record. SIGTERM
lets the environment in progress finish, then the agent exits.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

import attrs

from . import rollout
from .codec import format_timestamp, parse_timestamp, utc_now
from .errors import GreenticError
from .spec import Lifecycle

#: The attachment holding the agent's claim and bookkeeping for one environment.
AGENT_ATTACHMENT = "agent.json"
AGENT_V1 = "greentic.agent.v1"
DEFAULT_INTERVAL = 10.0
DEFAULT_MAX_ATTEMPTS = 5
MAX_BACKOFF = 300.0
#: Seconds after which ``rollout status`` warns that no agent made a pass.
STALE_AFTER = 60.0


def host_name() -> str:
    from .store.contract import _host

    return _host()


def agent_actor() -> str:
    return f"agent@{host_name()}"


# --------------------------------------------------------------------------- bookkeeping


def load_record(store: Any, env_id: str) -> dict[str, Any]:
    raw = store.read_attachment(env_id, AGENT_ATTACHMENT)
    if raw is None:
        return {"schema": AGENT_V1}
    try:
        record = json.loads(raw)
    except ValueError:
        return {"schema": AGENT_V1}
    return record if isinstance(record, dict) else {"schema": AGENT_V1}


def save_record(store: Any, env_id: str, record: Mapping[str, Any]) -> None:
    store.write_attachment(env_id, AGENT_ATTACHMENT, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def last_pass(store: Any, env_id: str) -> dict[str, Any] | None:
    """Who made the last agent pass over ``env_id`` and when (``rollout status`` shows it)."""
    record = load_record(store, env_id)
    if not record.get("last_pass_at"):
        return None
    return {"holder": (record.get("claim") or {}).get("holder"), "at": record["last_pass_at"],
            "good_at": record.get("last_good_pass_at")}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_free(claim: Mapping[str, Any] | None, *, me: Mapping[str, Any], now: datetime) -> bool:
    """Whether an agent ``me`` may take an environment whose recorded claim is ``claim`` (pure
    but for the pid check of a claim made on this host)."""
    if not claim:
        return True
    if claim.get("agent_id") == me["agent_id"]:
        return True
    try:
        expired = parse_timestamp(claim["expires"]) <= now
    except (KeyError, GreenticError, TypeError, ValueError):
        return True
    if expired:
        return True
    # a claim made on this host by a process that is gone (an agent killed with SIGKILL)
    return claim.get("host") == me["host"] and not _pid_alive(claim.get("pid"))


# --------------------------------------------------------------------------- reports


@attrs.define
class EnvReport:
    env_id: str
    status: str = "ok"  # ok | standby | elsewhere | backoff | failed | gone
    repairs: list[dict[str, Any]] = attrs.field(factory=list)
    rollouts: list[dict[str, Any]] = attrs.field(factory=list)
    detached: dict[str, Any] | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class PassReport:
    started_at: str
    seconds: float = 0.0
    environments: list[EnvReport] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return all(e.status != "failed" for e in self.environments)

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "seconds": round(self.seconds, 3), "ok": self.ok,
                "environments": [e.to_json() for e in self.environments]}


# --------------------------------------------------------------------------- the agent


class Agent:
    """Passes over the environments of one store; see the module docstring.

    ``make_operator(actor)`` builds the :class:`~greentic_core.operator.Operator` the agent acts
    through (the CLI passes one bound to its store and registry); ``metrics`` (optional) is an
    :class:`AgentMetrics`.
    """

    def __init__(self, store: Any, make_operator: Callable[[], Any], *, env_ids: Iterable[str] = (),
                 interval: float = DEFAULT_INTERVAL, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 claim_ttl: float | None = None, metrics: "AgentMetrics | None" = None,
                 now: Callable[[], datetime] = utc_now, notifier_for: Callable[..., Any] | None = None) -> None:
        import uuid

        self.store = store
        self.make_operator = make_operator
        self.env_ids = tuple(env_ids)
        self.interval = interval
        self.max_attempts = max_attempts
        self.claim_ttl = claim_ttl if claim_ttl is not None else max(30.0, 3 * interval)
        self.metrics = metrics
        self.now = now
        self.stopping = threading.Event()
        self.holder = agent_actor()
        self.me = {"agent_id": uuid.uuid4().hex, "holder": self.holder, "pid": os.getpid(), "host": host_name()}
        self.notifier_for = notifier_for
        self.last_pass_at: float | None = None

    # ----------------------------------------------------------------- the loop

    def run(self, *, once: bool = False, on_pass: Callable[[PassReport], None] | None = None) -> PassReport:
        """Pass after pass until :meth:`stop` (or one pass with ``once``); the last report."""
        while True:
            report = self.run_pass()
            if on_pass is not None:
                on_pass(report)
            if once or self.stopping.wait(self.interval):
                self.release()
                return report

    def stop(self) -> None:
        """Finish the environment in progress, then return from :meth:`run` (SIGTERM)."""
        self.stopping.set()

    def environments(self) -> list[str]:
        return list(self.env_ids) if self.env_ids else self.store.list()

    def run_pass(self) -> PassReport:
        started = time.monotonic()
        report = PassReport(started_at=format_timestamp(self.now()))
        for env_id in self.environments():
            if self.stopping.is_set() and report.environments:
                break
            report.environments.append(self.pass_env(env_id))
        report.seconds = time.monotonic() - started
        self.last_pass_at = time.monotonic()
        if self.metrics is not None:
            self.metrics.record_pass(report)
        return report

    # ----------------------------------------------------------------- one environment

    def _claim(self, env_id: str) -> dict[str, Any] | None:
        """Claim ``env_id`` for this pass; its agent record, or None when another agent holds it."""
        now = self.now()
        with self.store.transaction(env_id, timeout=max(5.0, self.interval)):
            record = load_record(self.store, env_id)
            if not claim_free(record.get("claim"), me=self.me, now=now):
                return None
            record["schema"] = AGENT_V1
            record["claim"] = {**self.me, "expires": format_timestamp(now + timedelta(seconds=self.claim_ttl))}
            record["last_pass_at"] = format_timestamp(now)
            save_record(self.store, env_id, record)
        return record

    def release(self) -> None:
        """Give the claims up (an agent that stops cleanly lets another take over at once)."""
        for env_id in self.environments():
            try:
                with self.store.transaction(env_id, timeout=5.0):
                    record = load_record(self.store, env_id)
                    if (record.get("claim") or {}).get("agent_id") == self.me["agent_id"]:
                        record["claim"] = None
                        save_record(self.store, env_id, record)
            except GreenticError:
                continue

    def _elsewhere(self, op: Any, env_id: str) -> str | None:
        """Why another host's agent must act on ``env_id`` (its provider keeps host-local state
        that runs there, :mod:`greentic_core.host_state`), or None. Checked before claiming, so
        an agent on the wrong host never holds the claim the right host's agent needs."""
        from . import host_state

        env = self.store.load(env_id)
        bound = op.bind(env, change=False)
        if not host_state.applies(self.store, bound):
            return None
        owner = host_state.recorded(self.store, env_id)
        if owner is None or owner["host"] == host_state.this_host():
            return None
        return f"its {bound.name} state runs on host {owner['host']}: the agent there acts on it"

    def pass_env(self, env_id: str) -> EnvReport:
        report = EnvReport(env_id=env_id)
        op = self.make_operator()
        try:
            elsewhere = self._elsewhere(op, env_id)
            if elsewhere is not None:
                report.status, report.error = "elsewhere", elsewhere
                return report
            record = self._claim(env_id)
        except GreenticError as exc:
            if type(exc).__name__ == "EnvironmentNotFound":
                report.status = "gone"
            else:
                report.status, report.error = "failed", str(exc)
            return report
        if record is None:
            report.status = "standby"
            return report
        now = self.now()
        backoff_until = record.get("backoff_until")
        if backoff_until and parse_timestamp(backoff_until) > now:
            report.status = "backoff"
            return report
        try:
            self._repair(op, env_id, record, report)
            self._rollouts(op, env_id, report)
        except GreenticError as exc:
            failures = int(record.get("failures", 0)) + 1
            record["failures"] = failures
            delay = min(MAX_BACKOFF, self.interval * 2 ** (failures - 1))
            record["backoff_until"] = format_timestamp(self.now() + timedelta(seconds=delay))
            record["last_error"] = str(exc)[:500]
            report.status, report.error = "failed", str(exc)
            self._emit(op, env_id, "agent.failure", {"error": str(exc)[:500], "failures": failures,
                                                     "retry_in_seconds": delay})
        else:
            record["failures"] = 0
            record["backoff_until"] = None
            record["last_good_pass_at"] = format_timestamp(self.now())
        save_record(self.store, env_id, record)
        return report

    def _repair(self, op: Any, env_id: str, record: dict[str, Any], report: EnvReport) -> None:
        env = self.store.load(env_id)
        live = [r for r in env.revisions if r.lifecycle == Lifecycle.READY]
        if not live and not env.traffic_splits:
            return
        observation = op.observe(env_id)
        attempts: dict[str, int] = dict(record.get("attempts") or {})
        given_up: dict[str, str] = dict(record.get("given_up") or {})
        broken = []
        for revision in live:
            rid = revision.revision_id
            seen = observation.revision(rid)
            if seen.present and seen.serving:
                attempts.pop(rid, None)
                given_up.pop(rid, None)
            elif rid not in given_up:
                broken.append((rid, seen))
        for rid in list(attempts):  # forget revisions that left ready
            if env.revision(rid) is None or env.revision(rid).lifecycle != Lifecycle.READY:
                attempts.pop(rid, None)
                given_up.pop(rid, None)
        for rid, seen in broken:
            attempts[rid] = attempts.get(rid, 0) + 1
            why = seen.detail or f"present={seen.present}, serving={seen.serving}"
            if attempts[rid] > self.max_attempts:
                given_up[rid] = self._give_up(op, env_id, rid, why, attempts[rid] - 1)
                report.repairs.append({"revision_id": rid, "action": "give-up", "detail": given_up[rid]})
                continue
            action = {"revision_id": rid, "action": "warm", "attempt": attempts[rid], "detail": why}
            try:
                op.reconcile(env_id, revision_ids={rid}, deployment_ids=(), verb="agent.repair")
            except GreenticError as exc:
                action["outcome"] = "error"
                action["error"] = str(exc)[:300]
            else:
                action["outcome"] = "ok"
            report.repairs.append(action)
            self._emit(op, env_id, "agent.repair", action)
        bound = op.bind(env, change=False)
        if bound.descriptor.capabilities.observes_weights:
            for split in env.traffic_splits:
                recorded = {e.revision_id: e.weight_bps for e in split.entries if e.weight_bps > 0}
                seen_weights = {k: v for k, v in observation.weights(split.deployment_id).items() if v > 0}
                if seen_weights == recorded:
                    continue
                action = {"deployment_id": split.deployment_id, "action": "apply_traffic_split",
                          "detail": f"the provider enforces {seen_weights}, recorded {recorded}"}
                try:
                    op.reconcile(env_id, revision_ids=(), deployment_ids={split.deployment_id}, verb="agent.repair")
                except GreenticError as exc:
                    action["outcome"], action["error"] = "error", str(exc)[:300]
                else:
                    action["outcome"] = "ok"
                report.repairs.append(action)
                self._emit(op, env_id, "agent.repair", action)
        record["attempts"] = attempts
        record["given_up"] = given_up
        if self.metrics is not None:
            self.metrics.repairs(env_id, sum(1 for r in report.repairs if r.get("action") != "give-up"))

    def _give_up(self, op: Any, env_id: str, rid: str, why: str, attempts: int) -> str:
        """After ``max_attempts`` repairs: record the revision failed when nothing routes it."""
        env = self.store.load(env_id)
        revision = env.revision(rid)
        routed = revision is not None and any(
            e.revision_id == rid and e.weight_bps > 0
            for split in env.traffic_splits for e in split.entries)
        reason = f"not serving after {attempts} repair attempt(s) by the agent: {why}"
        if routed:
            outcome = reason + "; it carries traffic, so it is left ready: move its weight away"
        else:
            try:
                rollout.fail_revision(op, env_id, rid, reason)
            except GreenticError as exc:
                outcome = f"{reason}; recording it failed did not work: {exc}"
            else:
                outcome = f"recorded failed: {reason}"
        with self.store.transaction(env_id, timeout=max(5.0, self.interval)) as tx:
            tx.audit(op._event(verb="agent.give_up", outcome="error", revision_id=rid, reason=outcome[:500]))
        self._emit(op, env_id, "agent.failure", {"revision_id": rid, "reason": outcome[:500]})
        return outcome

    def _rollouts(self, op: Any, env_id: str, report: EnvReport) -> None:
        from .apply import advance_detached

        detached = advance_detached(op, env_id, holder=self.holder, now=self.now)
        if detached is not None:
            report.detached = detached
        for did, state in rollout.load_all(self.store, env_id).items():
            if state.phase != "progressing":
                continue
            outcome = rollout.advance(op, env_id, did, holder=self.holder, now=self.now)
            if outcome != "idle":
                report.rollouts.append({"deployment_id": did, "bundle_id": state.bundle_id, "outcome": outcome})
                if self.metrics is not None and outcome in ("stepped", "completed", "aborted", "paused"):
                    self.metrics.rollout_step(env_id, outcome)

    def _emit(self, op: Any, env_id: str, event: str, data: Mapping[str, Any]) -> None:
        if self.notifier_for is None:
            return
        try:
            for notifier in self.notifier_for(op, env_id):
                notifier.emit(event, data=dict(data))
        except Exception:  # noqa: BLE001 - a notification never fails a pass
            return


# --------------------------------------------------------------------------- metrics


class AgentMetrics:
    """The agent's Prometheus metrics (``prometheus_client``, its own registry)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.passes = Counter("greentic_agent_passes", "Passes the agent made.", registry=self.registry)
        self.repairs_total = Counter("greentic_agent_repairs", "Repairs (provider calls) the agent made.",
                                     ["environment"], registry=self.registry)
        self.failures = Counter("greentic_agent_failures", "Environment passes that failed.",
                                ["environment"], registry=self.registry)
        self.steps = Counter("greentic_agent_rollout_steps", "Rollout moves the agent made.",
                             ["environment", "outcome"], registry=self.registry)
        self.since_good = Gauge("greentic_agent_seconds_since_good_pass",
                                "Seconds since the last pass over the environment that succeeded.",
                                ["environment"], registry=self.registry)
        self.pass_seconds = Gauge("greentic_agent_last_pass_seconds", "How long the last pass took.",
                                  registry=self.registry)
        self._good: dict[str, float] = {}
        self._lock = threading.Lock()

    def record_pass(self, report: PassReport) -> None:
        now = time.monotonic()
        self.passes.inc()
        self.pass_seconds.set(report.seconds)
        with self._lock:
            for env in report.environments:
                if env.status == "ok":
                    self._good[env.env_id] = now
                elif env.status == "failed":
                    self.failures.labels(env.env_id).inc()
                if env.env_id in self._good:
                    self.since_good.labels(env.env_id).set_function(
                        lambda env_id=env.env_id: time.monotonic() - self._good[env_id])

    def repairs(self, env_id: str, count: int) -> None:
        if count:
            self.repairs_total.labels(env_id).inc(count)

    def rollout_step(self, env_id: str, outcome: str) -> None:
        self.steps.labels(env_id, outcome).inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --------------------------------------------------------------------------- --listen


def serve(agent: Agent, metrics: AgentMetrics, host: str, port: int, *, token: str | None = None):
    """Serve ``GET /healthz`` and ``GET /metrics`` in a daemon thread; the server (``.shutdown()``).

    ``/metrics`` needs ``Authorization: Bearer <token>`` when a token is set (Prometheus:
    ``authorization: {credentials_file: ...}``); ``/healthz`` says only whether passes happen
    (200, or 503 when none finished within three intervals) and needs none. Anything else: 404.
    """
    import hmac
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = "greentic-agent"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

        def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                fresh = agent.last_pass_at is not None and time.monotonic() - agent.last_pass_at <= 3 * agent.interval + 5
                self._send(200 if fresh else 503, b"ok\n" if fresh else b"no recent pass\n")
            elif path == "/metrics":
                given = self.headers.get("Authorization", "")
                if token is not None and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    self._send(401, b"a bearer token is required\n")
                    return
                from prometheus_client import CONTENT_TYPE_LATEST

                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n")

        do_HEAD = do_GET

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="greentic-agent-http", daemon=True).start()
    return server


def systemd_unit(env_ids: Iterable[str], *, interval: float, home: str | None = None, store_url: str | None = None,
                 listen: str | None = None) -> str:
    """A systemd service running the agent (``Restart=always``; SIGTERM lets a step finish)."""
    import shlex
    import sys

    args = [sys.executable, "-m", "greentic_core", "agent", *env_ids, "--interval", f"{interval:g}"]
    if listen:
        args += ["--listen", listen]
    lines = [
        "[Unit]",
        "Description=greentic-deployer agent (reconciles environments, carries rollouts on)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(shlex.quote(a) for a in args),
        "Restart=always",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=300",
        "UMask=0077",
    ]
    from .store.select import unit_environment

    lines += unit_environment(home, store_url)
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
