"""Starting, reloading, querying and stopping an environment's router process.

The router (``python -m greentic_local_process.router``) is one process per environment, a
child of the environment's supervisor (:mod:`greentic_local_process.supervisor`), which starts
it when asked here and restarts it when it dies. Its files live in ``<root>/router/``:
``router-table.json`` (written here, atomically), ``router.json`` (written by the router once
it listens: pid, addresses, generation), ``owner.json`` (pid and kernel start time recorded by
whoever spawned it, so a recycled pid is never signalled), ``router-admin.token`` and
``router.log``.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from greentic_core import Environment, ProviderError, ProviderTimeout
from greentic_core.spec import DEFAULT_LISTEN_ADDR

from . import files, procinfo, processes

Progress = Callable[[str], None]
START_TIMEOUT = 15.0


def router_dir(root: Path) -> Path:
    return root / "router"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from the router directory (checked: no symlink), None when absent or bad."""
    if files.existing_private_dir(path.parent.parent, path.parent.name) is None:
        return None
    return files.read_json(path)


def listen_addr(env: Environment, override: str | None) -> str:
    return override or env.host_config.listen_addr or DEFAULT_LISTEN_ADDR


# --------------------------------------------------------------------------- table


def read_table(root: Path) -> dict[str, Any] | None:
    return _read_json(router_dir(root) / "router-table.json")


def deployment_entry(env: Environment, root: Path, deployment_id: str) -> dict[str, Any] | None:
    """The router-table entry of one deployment, from its recorded split and running processes."""
    split = env.split_for(deployment_id)
    deployment = env.deployment(deployment_id)
    if split is None or deployment is None:
        return None
    backends = []
    for entry in split.entries:
        addresses = running_addresses(root, entry.revision_id)
        backends.append({"revision_id": entry.revision_id, "weight_bps": entry.weight_bps,
                         "address": addresses[0] if addresses else None, "addresses": addresses})
    return {
        "deployment_id": deployment_id, "bundle_id": deployment.bundle_id, "split_generation": split.generation,
        "hosts": list(deployment.route_binding.hosts), "path_prefixes": list(deployment.route_binding.path_prefixes),
        "backends": backends,
    }


def build_table(env: Environment, root: Path, listen: str, *, only: str | None = None,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The next table. With ``only``, every other deployment keeps exactly what the router had.

    Addresses of revisions that stopped are cleared everywhere (a stopped process serves nothing).
    """
    previous = previous or {}
    by_id = {d["deployment_id"]: d for d in previous.get("deployments", []) if isinstance(d, dict)}
    order = [d["deployment_id"] for d in previous.get("deployments", []) if isinstance(d, dict)]
    for split in env.traffic_splits:
        # With ``only``, a recorded split the router does not have yet stays unapplied (it was
        # recorded with --record-only): applying one deployment must not route another.
        if split.deployment_id not in by_id and (only is None or split.deployment_id == only):
            order.append(split.deployment_id)
    deployments = []
    for deployment_id in order:
        if only is None or deployment_id == only:
            entry = deployment_entry(env, root, deployment_id)
        else:
            entry = dict(by_id[deployment_id])
            entry["backends"] = [_with_addresses(root, b) for b in entry.get("backends", [])]
        if entry is not None:
            deployments.append(entry)
    return {"generation": int(previous.get("generation", 0)) + 1, "env_id": env.environment_id,
            "listen": listen, "deployments": deployments}


def running_addresses(root: Path, revision_id: str) -> list[str]:
    """Where the revision's running replicas listen (in replica order)."""
    indexes = processes.replica_indexes(root, revision_id)
    records = processes.running_records(root, revision_id, max(indexes) + 1) if indexes else []
    return [r.address for r in records if r is not None]


def _with_addresses(root: Path, backend: dict[str, Any]) -> dict[str, Any]:
    addresses = running_addresses(root, backend["revision_id"])
    return {**backend, "address": addresses[0] if addresses else None, "addresses": addresses}


def write_table(root: Path, table: dict[str, Any]) -> None:
    from greentic_core.store import atomic_write

    directory = files.private_dir(root, "router")
    atomic_write(directory / "router-table.json", (json.dumps(table, indent=2) + "\n").encode())


# --------------------------------------------------------------------------- process


def running_router(root: Path) -> dict[str, Any] | None:
    """``router.json`` of a live router that we started, else None."""
    owner = _read_json(router_dir(root) / "owner.json")
    state = _read_json(router_dir(root) / "router.json")
    if not owner or not state or owner.get("pid") != state.get("pid"):
        return None
    procinfo.reap(owner["pid"])
    if not procinfo.is_ours(owner.get("pid"), owner.get("start_time")):
        return None
    return state


def admin_token(directory: Path) -> str:
    """The running router's admin token (``router-admin.token``, never through a symlink)."""
    try:
        return files.read_text(directory / "router-admin.token").strip()
    except OSError as exc:
        raise ProviderError(f"cannot read the router's admin token: {exc.strerror or exc}",
                            hint="the router writes it at start; restart the router") from None


def admin_request(state: dict[str, Any], method: str, path: str, timeout: float = 5.0, *,
                  directory: Path) -> dict[str, Any]:
    request = urllib.request.Request(f"http://{state['admin']}{path}", method=method,
                                     data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {admin_token(directory)}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        raise ProviderError(f"router admin {method} {path} answered {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ProviderError(f"router admin {method} {path} failed: {exc}",
                            hint="the router may have died; the next traffic command restarts it") from None


def status(root: Path) -> dict[str, Any] | None:
    state = running_router(root)
    if state is None:
        return None
    try:
        return admin_request(state, "GET", "/status", timeout=2.0, directory=router_dir(root))
    except ProviderError:
        return None


def _log_tail(root: Path) -> str:
    try:
        lines = files.read_text(router_dir(root) / "router.log").splitlines()
    except OSError:
        return "(no router log)"
    return " | ".join(line for line in lines[-8:] if line.strip()) or "(empty router log)"


def router_argv(root: Path, max_body_bytes: int, admin_port: int = 0) -> list[str]:
    # --shutdown-timeout: on SIGTERM the router waits for requests in flight and open tunnels as
    # long as it is let; whoever stops it bounds that (`router stop`: drain_seconds; SIGKILL after)
    return [sys.executable, "-m", "greentic_local_process.router", "--state-dir", str(router_dir(root)),
            "--max-body-bytes", str(max_body_bytes), "--shutdown-timeout", "3600", "--admin-port", str(admin_port)]


def start_router(root: Path, *, max_body_bytes: int, progress: Progress, admin_port: int = 0) -> dict[str, Any]:
    """Have the environment's supervisor run the router (it restarts it whenever it exits), and
    wait until it listens."""
    from . import supervision

    files.private_dir(root, "router")
    argv = router_argv(root, max_body_bytes, admin_port)
    supervision.update(root, lambda want: want.__setitem__("router", {"argv": argv}), progress)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = running_router(root)
        current = (supervision.status(root) or {}).get("router") or {}
        if state is not None and current.get("state") == "running":
            return state  # listening, and the supervisor knows: from now on it restarts it
        if current.get("state") in ("unhealthy", "stopped") and current.get("last_exit"):
            raise ProviderError(f"the router exited at start ({current['last_exit']}): {_log_tail(root)}",
                                hint="is the listen address taken? `greentic-deployer env doctor ENV` checks it")
        progress("starting the router")
        time.sleep(0.05)
    raise ProviderTimeout(f"the router did not start within {START_TIMEOUT:g}s: {_log_tail(root)}")


def apply_table(root: Path, table: dict[str, Any], *, max_body_bytes: int, progress: Progress, admin_port: int = 0,
                timeout: float = 10.0) -> dict[str, Any]:
    """Write the table, make the router (started on first need) load it, wait for its generation."""
    write_table(root, table)
    state = running_router(root)
    if state is not None and state.get("listen") != table["listen"]:
        stop_router(root, grace_seconds=5.0)  # the listen address changed: restart
        state = None
    if state is None:
        state = start_router(root, max_body_bytes=max_body_bytes, progress=progress, admin_port=admin_port)
    else:
        admin_request(state, "POST", "/reload", directory=router_dir(root))
    deadline = time.monotonic() + timeout
    while True:
        current = admin_request(state, "GET", "/status", directory=router_dir(root))
        if int(current.get("generation", -1)) >= table["generation"]:
            return current
        if time.monotonic() > deadline:
            raise ProviderTimeout(f"the router did not load table generation {table['generation']} "
                                  f"within {timeout:g}s (it reports {current.get('generation')})")
        progress(f"waiting for the router to load generation {table['generation']}")
        time.sleep(0.05)


def refresh(root: Path, env: Environment, listen: str, *, max_body_bytes: int, progress: Progress,
            admin_port: int = 0) -> None:
    """Rewrite addresses after a process started or stopped (only when a router runs)."""
    if running_router(root) is None:
        return
    table = build_table(env, root, listen, only="", previous=read_table(root))
    apply_table(root, table, max_body_bytes=max_body_bytes, progress=progress, admin_port=admin_port)


def stop_router(root: Path, grace_seconds: float = 10.0) -> str:
    """Stop supervising the router, then stop it (graceful: SIGTERM lets requests in flight
    finish, SIGKILL after ``grace_seconds``)."""
    from . import supervision

    if files.existing_private_dir(root, "supervisor") is not None:
        supervision.update(root, lambda want: want.__setitem__("router", None), lambda _m: None, start=False)
    owner = _read_json(router_dir(root) / "owner.json")
    if not owner:
        return "not-running"
    result = procinfo.terminate_group(owner.get("pid") or 0, owner.get("start_time") or "", grace_seconds)
    (router_dir(root) / "router.json").unlink(missing_ok=True)
    return result
