"""Hook implementations of the local-process deployer: thin, they translate and delegate.

Importing this module imports nothing heavy (no aiohttp): the router runs in its own process.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from greentic_core import (
    ArchiveOutcome,
    Capabilities,
    CheckStatus,
    DeployerDescriptor,
    DeploymentObservation,
    DrainOutcome,
    Observation,
    PreflightCheck,
    ProviderError,
    RevisionObservation,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
    hookimpl,
)

from . import __version__, files
from .answers import ANSWERS_SCHEMA, Answers

PATH = "greentic.deployer.local-process"


@hookimpl
def greentic_deployer_descriptor():
    return DeployerDescriptor(
        path=PATH,
        version=__version__,
        requires_core=">=0.1,<0.2",
        summary="Runs each revision as a local process behind a weighted HTTP router on this host.",
        capabilities=Capabilities(weight_resolution_bps=1, drain_slack_seconds=12.0, observes_weights=True,
                                  host_local_state=True),  # its processes run where the command runs
        answers_schema=ANSWERS_SCHEMA,
    )


def _root(answers, state_dir) -> tuple[Answers, Path]:
    parsed = Answers.parse(answers)
    return parsed, parsed.root(state_dir)


@hookimpl
def greentic_stage_revision(env, revision_id, answers, state_dir):
    from . import processes

    parsed, root = _root(answers, state_dir)
    directory = processes.prepare(root, env.revision(revision_id), parsed.pass_env)
    passed = sorted(processes.recorded_environment(root, revision_id))
    return StageOutcome(detail={"directory": str(directory), "environment": passed})


def _replicas(revision) -> int:
    return max(1, int(getattr(revision.workload, "replicas", 1) or 1)) if revision.workload else 1


@hookimpl
def greentic_warm_revision(env, revision_id, answers, state_dir, progress, timeout):
    from . import processes, supervision

    parsed, root = _root(answers, state_dir)
    revision = env.revision(revision_id)
    replicas = _replicas(revision)
    health_path = revision.workload.health_path if revision.workload else "/healthz"
    existing = processes.running_records(root, revision_id, replicas)
    entry = supervision.desired(root).get("revisions", {}).get(revision_id)
    if (entry is not None and entry.get("supervise") and len(entry.get("ports", [])) == replicas
            and all(r is not None and processes.health_ok(r.port, health_path) for r in existing)):
        first = existing[0]
        assert first is not None
        return WarmOutcome(detail={"pid": first.pid, "port": first.port, "replicas": replicas,
                                   "already_running": True})
    # (re)start under the supervisor: same ports as before when the replica count is unchanged
    processes.stop(root, revision_id, parsed.stop_grace_seconds)
    ports = list(entry["ports"]) if entry is not None and len(entry.get("ports", [])) == replicas else []
    while len(ports) < replicas:
        port = processes.free_port()
        if port not in ports:
            ports.append(port)
    spec = processes.desired_spec(root, revision, env.environment_id, ports=ports, log_max_bytes=parsed.log_max_bytes,
                                  stop_grace_seconds=parsed.stop_grace_seconds, pass_env=parsed.pass_env)
    spec["warm"] = uuid.uuid4().hex  # each warm starts afresh (the supervisor restarts on a changed spec)
    started = time.monotonic()
    budget = timeout if timeout is not None else parsed.warm_timeout_seconds
    try:
        supervision.update(root, lambda want: want["revisions"].__setitem__(revision_id, spec), progress)
        records = []
        for index in range(replicas):
            record = processes.read_record(root, revision_id, index)
            if record is None:
                raise ProviderError(f"revision {revision_id} could not be started: "
                                    f"{(supervision.revision_status(root, revision_id) or {}).get('replicas')}",
                                    hint="check the revision's command and working directory")
            processes.wait_healthy(root, record, health_path, progress=progress, timeout=budget,
                                   deadline=started + budget, index=index)
            records.append(record)
        _until_supervised(root, revision_id, progress, deadline=time.monotonic() + 2.0)
    except BaseException:  # timeout, early exit or Ctrl-C: leave nothing running or supervised
        _unsupervise(root, revision_id, lambda _message: None)  # (progress may be what raised)
        processes.stop(root, revision_id, min(parsed.stop_grace_seconds, 2.0))
        raise
    return WarmOutcome(detail={"pid": records[0].pid, "port": records[0].port, "replicas": replicas,
                               "ports": [r.port for r in records], "already_running": False})


def _until_supervised(root, revision_id, progress, *, deadline: float) -> None:
    """Wait (briefly) until the supervisor saw every replica healthy too: from then on a crash
    or failed health probes restart it (before that, a failure is warm's to report)."""
    from . import supervision

    while time.monotonic() < deadline:
        entry = supervision.revision_status(root, revision_id) or {}
        if entry.get("replicas") and all(r.get("state") == "running" for r in entry["replicas"]):
            return
        progress("waiting for the supervisor to see it healthy")
        time.sleep(0.05)


def _unsupervise(root, revision_id, progress, *, remove: bool = True) -> None:
    """Stop supervising a revision first (drain, archive, a failed warm): the supervisor would
    otherwise restart what we are about to stop. ``remove``: forget it entirely (its processes
    are stopped by the supervisor when still running)."""
    from . import supervision

    entry = supervision.desired(root).get("revisions", {}).get(revision_id)
    if entry is None:
        return

    def change(want):
        if remove:
            want["revisions"].pop(revision_id, None)
        else:
            want["revisions"][revision_id]["supervise"] = False

    supervision.update(root, change, progress, start=False)


@hookimpl
def greentic_drain_revision(env, revision_id, answers, state_dir, progress, timeout):
    from . import processes, router_control

    parsed, root = _root(answers, state_dir)
    files.existing_private_dir(root, "revisions", revision_id)  # a planted symlink: refused before any change
    revision = env.revision(revision_id)
    budget = float(revision.drain_seconds) if timeout is None else min(float(revision.drain_seconds), timeout)
    started = time.monotonic()
    waited_for = 0
    _unsupervise(root, revision_id, progress, remove=False)
    if any(r is not None for r in processes.running_records(root, revision_id, _replicas(revision))):
        while True:
            status = router_control.status(root)
            in_flight = 0
            if status is not None:
                in_flight = int(status.get("revisions", {}).get(revision_id, {}).get("in_flight", 0))
            elapsed = time.monotonic() - started
            if in_flight == 0 or elapsed >= budget:
                waited_for = in_flight
                break
            progress(f"{in_flight} request(s) in flight ({elapsed:.1f}s of {budget:g}s)")
            time.sleep(0.05)
    stopped = processes.stop(root, revision_id, parsed.stop_grace_seconds)
    _unsupervise(root, revision_id, progress)
    listen = router_control.listen_addr(env, parsed.listen_addr)
    router_control.refresh(root, env, listen, max_body_bytes=parsed.router_max_body_bytes, progress=progress,
                           admin_port=parsed.router_admin_port)
    return DrainOutcome(detail={"stopped": stopped, "waited_seconds": round(time.monotonic() - started, 3),
                                "in_flight_at_stop": waited_for})


@hookimpl
def greentic_archive_revision(env, revision_id, answers, state_dir, progress):
    from . import processes, router_control

    parsed, root = _root(answers, state_dir)
    files.existing_private_dir(root, "revisions", revision_id)  # a planted symlink: refused before any change
    _unsupervise(root, revision_id, progress, remove=False)
    stopped = processes.stop(root, revision_id, parsed.stop_grace_seconds)
    _unsupervise(root, revision_id, progress)
    processes.remove(root, revision_id, keep_logs=parsed.keep_logs)
    if stopped != "not-running":
        listen = router_control.listen_addr(env, parsed.listen_addr)
        router_control.refresh(root, env, listen, max_body_bytes=parsed.router_max_body_bytes, progress=progress,
                           admin_port=parsed.router_admin_port)
    return ArchiveOutcome(detail={"stopped": stopped})


@hookimpl
def greentic_apply_traffic_split(env, deployment_id, answers, state_dir, progress, timeout):
    from . import router_control

    parsed, root = _root(answers, state_dir)
    split = env.split_for(deployment_id)
    for entry in split.entries:
        if entry.weight_bps > 0 and not router_control.running_addresses(root, entry.revision_id):
            raise ProviderError(
                f"revision {entry.revision_id} would get {entry.weight_bps} bps but its process is not running",
                hint=f"warm it again (`greentic-deployer env reconcile {env.environment_id}`) or give it weight 0")
    from . import supervision

    if supervision.desired(root).get("generation"):
        supervision.ensure(root, progress)  # a supervisor that died: the next one adopts what runs
    listen = router_control.listen_addr(env, parsed.listen_addr)
    table = router_control.build_table(env, root, listen, only=deployment_id, previous=router_control.read_table(root))
    status = router_control.apply_table(root, table, max_body_bytes=parsed.router_max_body_bytes, progress=progress,
                                        admin_port=parsed.router_admin_port,
                                        timeout=timeout if timeout is not None else 10.0)
    enforced = status.get("deployments", {}).get(deployment_id, {}).get("weights", {})
    return TrafficSplitOutcome(
        applied_deployment_id=deployment_id, applied_entries=split.entries,
        provider_weights={k: int(v) for k, v in enforced.items()}, max_deviation_bps=0,
        detail={"router": status.get("listen", listen), "table_generation": table["generation"]},
    )


def _restarts(reported):
    """Restarts the supervisor made, over all replicas (None when it never supervised it)."""
    replicas = reported.get("replicas") or []
    if not replicas:
        return None
    latest = max(replicas, key=lambda r: r.get("last_restart_at") or "")
    return {"count": sum(int(r.get("restarts", 0)) for r in replicas), "last_exit": latest.get("last_exit"),
            "last_restart_at": latest.get("last_restart_at")}


@hookimpl
def greentic_observe(env, answers, state_dir):
    from . import processes, router_control, supervision

    _, root = _root(answers, state_dir)
    revisions = {}
    supervised = (supervision.status(root) or {}).get("revisions") or {}
    for revision in env.revisions:
        rid = revision.revision_id
        replicas = _replicas(revision)
        records = processes.running_records(root, rid, replicas)
        reported = supervised.get(rid) or {}
        restarts = _restarts(reported)
        if reported.get("reason"):  # crash-looping: the supervisor gave up on it
            revisions[rid] = RevisionObservation(
                revision_id=rid, present=any(records), serving=False, ready_replicas=0, desired_replicas=replicas,
                detail=f"unhealthy: {reported['reason']}; {reported.get('log_tail', '')}", restarts=restarts)
            continue
        alive = [r for r in records if r is not None]
        if not alive:
            revisions[rid] = RevisionObservation(revision_id=rid, present=False, serving=False, detail="no process",
                                                 restarts=restarts)
            continue
        path = revision.workload.health_path if revision.workload else "/healthz"
        ready = sum(1 for r in alive if processes.health_ok(r.port, path))
        detail = ", ".join(f"pid {r.pid} port {r.port}" for r in alive)
        if restarts and restarts["count"]:
            detail += f"; {restarts['count']} restart(s), last exit {restarts['last_exit']} at {restarts['last_restart_at']}"
        revisions[rid] = RevisionObservation(
            revision_id=rid, present=True, serving=ready > 0, ready_replicas=ready, desired_replicas=replicas,
            detail=detail, restarts=restarts)
    deployments = {}
    status = router_control.status(root)
    if status is not None:
        for deployment_id, info in status.get("deployments", {}).items():
            deployments[deployment_id] = DeploymentObservation(
                deployment_id=deployment_id, weights={k: int(v) for k, v in info.get("weights", {}).items()},
                generation=info.get("split_generation"), detail=f"router {status.get('listen', '')}")
    return Observation(revisions=revisions, deployments=deployments)


@hookimpl
def greentic_revision_metrics(env, answers, state_dir):
    """The router's cumulative per-revision counters (None when no router runs).

    ``requests`` = answered + failed requests (``completed`` + ``errors``); ``errors`` = requests
    the router could not get an answer for (``errors``: connect failures, timeouts, broken
    responses) + 5xx answers of the revision (``upstream_5xx``). ``p99_ms`` is the router's p99
    over every request the revision answered since the router first routed it (the router
    keeps a histogram, not a window). Counters begin again at 0 when the router restarts or
    forgets an idle revision that left its table.
    """
    from . import router_control

    _, root = _root(answers, state_dir)
    status = router_control.status(root)
    if status is None:
        return None
    metrics = {}
    for revision_id, info in (status.get("revisions") or {}).items():
        completed, errors = int(info.get("completed", 0) or 0), int(info.get("errors", 0) or 0)
        metrics[revision_id] = {
            "requests": completed + errors,
            "errors": errors + int(info.get("upstream_5xx", 0) or 0),
            "p99_ms": info.get("p99_ms"),
        }
    return metrics


@hookimpl
def greentic_revision_logs(env, revision_id, answers, state_dir, stream, replica, lines, follow):
    """The revision's stdout or stderr log on this host (see :mod:`greentic_local_process.logs`)."""
    from . import logs

    _, root = _root(answers, state_dir)
    return logs.lines(root, revision_id, stream=stream, replica=replica, last=lines, follow=follow)


@hookimpl
def greentic_preflight(env, answers, state_dir):
    import os
    import socket

    from . import router_control

    parsed, root = _root(answers, state_dir)
    checks = []
    listen = router_control.listen_addr(env, parsed.listen_addr)
    host, _, port = listen.rpartition(":")
    if router_control.running_router(root) is not None:
        checks.append(PreflightCheck(name="listen-address", status=CheckStatus.PASS,
                                     message=f"{listen} is served by this environment's router"))
    else:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host.strip("[]"), int(port)))
                checks.append(PreflightCheck(name="listen-address", status=CheckStatus.PASS,
                                             message=f"{listen} is free"))
            except OSError as exc:
                checks.append(PreflightCheck(name="listen-address", status=CheckStatus.FAIL,
                                             message=f"{listen} cannot be bound: {exc.strerror}"))
    from .files import make_private

    make_private(root)
    writable = os.access(root, os.W_OK)
    checks.append(PreflightCheck(name="state-directory", status=CheckStatus.PASS if writable else CheckStatus.FAIL,
                                 message=f"{root} is {'writable' if writable else 'not writable'}"))
    return checks


@hookimpl
def greentic_conformance_sandbox(workdir):
    from .sandbox import sandbox

    return sandbox(Path(workdir))

