"""Hook implementations of the local-process deployer: thin, they translate and delegate.

Importing this module imports nothing heavy (no aiohttp): the router runs in its own process.
"""

from __future__ import annotations

import time
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

from . import __version__
from .answers import ANSWERS_SCHEMA, Answers

PATH = "greentic.deployer.local-process"


@hookimpl
def greentic_deployer_descriptor():
    return DeployerDescriptor(
        path=PATH,
        version=__version__,
        requires_core=">=0.1,<0.2",
        summary="Runs each revision as a local process behind a weighted HTTP router on this host.",
        capabilities=Capabilities(weight_resolution_bps=1, drain_slack_seconds=12.0, observes_weights=True),
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


@hookimpl
def greentic_warm_revision(env, revision_id, answers, state_dir, progress, timeout):
    from . import processes

    parsed, root = _root(answers, state_dir)
    revision = env.revision(revision_id)
    existing = processes.running_record(root, revision_id)
    health_path = revision.workload.health_path if revision.workload else "/healthz"
    if existing is not None and processes.health_ok(existing.port, health_path):
        return WarmOutcome(detail={"pid": existing.pid, "port": existing.port, "already_running": True})
    if existing is not None:  # ours but unhealthy: replace it
        processes.stop(root, revision_id, parsed.stop_grace_seconds)
    record = processes.start(root, revision, env.environment_id, log_max_bytes=parsed.log_max_bytes,
                             pass_env=parsed.pass_env)
    try:
        processes.wait_healthy(root, record, health_path,
                               timeout=timeout if timeout is not None else parsed.warm_timeout_seconds,
                               progress=progress)
    except BaseException:  # timeout, early exit or Ctrl-C: leave nothing running
        processes.stop(root, revision_id, min(parsed.stop_grace_seconds, 2.0))
        raise
    return WarmOutcome(detail={"pid": record.pid, "port": record.port, "already_running": False})


@hookimpl
def greentic_drain_revision(env, revision_id, answers, state_dir, progress, timeout):
    from . import processes, router_control

    parsed, root = _root(answers, state_dir)
    revision = env.revision(revision_id)
    budget = float(revision.drain_seconds) if timeout is None else min(float(revision.drain_seconds), timeout)
    started = time.monotonic()
    waited_for = 0
    if processes.running_record(root, revision_id) is not None:
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
    listen = router_control.listen_addr(env, parsed.listen_addr)
    router_control.refresh(root, env, listen, max_body_bytes=parsed.router_max_body_bytes, progress=progress)
    return DrainOutcome(detail={"stopped": stopped, "waited_seconds": round(time.monotonic() - started, 3),
                                "in_flight_at_stop": waited_for})


@hookimpl
def greentic_archive_revision(env, revision_id, answers, state_dir, progress):
    from . import processes, router_control

    parsed, root = _root(answers, state_dir)
    stopped = processes.stop(root, revision_id, parsed.stop_grace_seconds)
    processes.remove(root, revision_id, keep_logs=parsed.keep_logs)
    if stopped != "not-running":
        listen = router_control.listen_addr(env, parsed.listen_addr)
        router_control.refresh(root, env, listen, max_body_bytes=parsed.router_max_body_bytes, progress=progress)
    return ArchiveOutcome(detail={"stopped": stopped})


@hookimpl
def greentic_apply_traffic_split(env, deployment_id, answers, state_dir, progress, timeout):
    from . import processes, router_control

    parsed, root = _root(answers, state_dir)
    split = env.split_for(deployment_id)
    for entry in split.entries:
        if entry.weight_bps > 0 and processes.running_record(root, entry.revision_id) is None:
            raise ProviderError(
                f"revision {entry.revision_id} would get {entry.weight_bps} bps but its process is not running",
                hint=f"warm it again (`greentic-deployer env reconcile {env.environment_id}`) or give it weight 0")
    listen = router_control.listen_addr(env, parsed.listen_addr)
    table = router_control.build_table(env, root, listen, only=deployment_id, previous=router_control.read_table(root))
    status = router_control.apply_table(root, table, max_body_bytes=parsed.router_max_body_bytes, progress=progress,
                                        timeout=timeout if timeout is not None else 10.0)
    enforced = status.get("deployments", {}).get(deployment_id, {}).get("weights", {})
    return TrafficSplitOutcome(
        applied_deployment_id=deployment_id, applied_entries=split.entries,
        provider_weights={k: int(v) for k, v in enforced.items()}, max_deviation_bps=0,
        detail={"router": status.get("listen", listen), "table_generation": table["generation"]},
    )


@hookimpl
def greentic_observe(env, answers, state_dir):
    from . import processes, router_control

    _, root = _root(answers, state_dir)
    revisions = {}
    for revision in env.revisions:
        record = processes.running_record(root, revision.revision_id)
        if record is None:
            revisions[revision.revision_id] = RevisionObservation(
                revision_id=revision.revision_id, present=False, serving=False, detail="no process")
            continue
        path = revision.workload.health_path if revision.workload else "/healthz"
        healthy = processes.health_ok(record.port, path)
        revisions[revision.revision_id] = RevisionObservation(
            revision_id=revision.revision_id, present=True, serving=healthy, ready_replicas=1 if healthy else 0,
            desired_replicas=1, detail=f"pid {record.pid} port {record.port}")
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

