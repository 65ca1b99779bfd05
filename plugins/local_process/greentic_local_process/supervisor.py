"""The environment's supervisor: it owns the router and the revision processes and restarts them.

Run as ``python -m greentic_local_process.supervisor --state-dir ROOT`` (the provider starts it
detached on first need; ``greentic-deployer router unit ENV`` prints a systemd unit for it).
It is the one process of an environment that nothing watches; everything else is its child.

What it runs is what the provider writes to ``ROOT/supervisor/desired.json`` (atomically; a
``SIGHUP`` makes it read the file again)::

    {"generation": 7,
     "router": {"argv": ["python", "-m", "greentic_local_process.router", ...]},
     "revisions": {"<revision id>": {"argv": [...], "cwd": null, "env": {...}, "ports": [41234],
                                     "health_path": "/healthz", "log_max_bytes": 5242880,
                                     "supervise": true}}}

Each revision runs one process per port (its replicas), each with ``PORT`` set; the router runs
with its log in ``ROOT/router/router.log``. Rules:

* A replica that has answered its health path once is *ready*. A ready replica whose process
  exits, or that fails :data:`PROBE_FAILURES` probes in a row (one per :data:`PROBE_INTERVAL`
  s), is restarted on the same port: the first time at once, then after 0.5, 1, 2, 4 ... s
  (at most :data:`BACKOFF_MAX`). A replica that stays up :data:`STABLE_SECONDS` s starts the
  count again. After :data:`CRASH_LOOP_LIMIT` quick restarts in a row it is *unhealthy*: not
  restarted again, its address taken out of the router's table (the split's other revisions
  take its share) and the reason and last log lines reported. A replica that exits before it
  was ever ready is not restarted (``warm`` reports that failure).
* The router is restarted the same way whenever it exits; it reads the current table at start.
* ``"supervise": false`` (drain, archive) stops restarts and probes; removing a revision from
  the file stops its processes (SIGTERM to the process group, SIGKILL after its grace).
* Logs of a running process are rotated by size (``log_max_bytes``; one old copy, ``.1``) by
  copy-and-truncate: the process keeps its file open (``O_APPEND``), so a supervisor restart
  never breaks a revision's output the way a pipe would.
* Its state is in ``ROOT/supervisor/status.json`` (replicas, pids, ports, restarts, last exit
  status or signal, last restart time) and its own pid in ``supervisor.json``. Stopping the
  supervisor (SIGTERM) ends supervision only: the processes keep running, and the next
  supervisor adopts them (it cannot know the exit status of a process that is not its child).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import files, procinfo, processes

log = logging.getLogger("greentic.supervisor")

DIRECTORY = "supervisor"
DESIRED_FILE = "desired.json"
STATUS_FILE = "status.json"
PID_FILE = "supervisor.json"
LOCK_FILE = "supervisor.lock"

TICK = 0.1  # seconds between looks at the children (an exit is seen within this)
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 0.8
PROBE_FAILURES = 3  # K: consecutive failed health probes that restart a ready replica
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_SECONDS = 10.0
CRASH_LOOP_LIMIT = 5
ROTATE_EVERY = 2.0
STOP_GRACE = 10.0


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_exit(code: int | None) -> str | None:
    """``exit 3``, ``signal SIGKILL``, or None while running."""
    if code is None:
        return None
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


class Child:
    """One supervised process (a revision replica or the router) and its restart bookkeeping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None  # when we started it
        self.pid: int | None = None
        self.start_time: str | None = None
        self.started_mono = 0.0
        self.ready = False  # answered its health path once: restarted whenever it exits from now on
        self.up = False  # answered its health path since its last start: failed probes count from then
        self.restarts = 0
        self.quick_failures = 0
        self.last_exit: str | None = None
        self.last_restart_at: str | None = None
        self.restart_due: float | None = None
        self.probe_failures = 0
        self.unhealthy: str | None = None
        self.probe: Future[bool] | None = None
        self.last_probe = 0.0

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.proc is not None:
            return self.proc.poll() is None
        procinfo.reap(self.pid)
        return procinfo.is_ours(self.pid, self.start_time)

    def exit_status(self) -> str:
        if self.proc is not None:
            return describe_exit(self.proc.poll()) or "running"
        return "gone (adopted: exit status unknown)"

    def snapshot(self) -> dict[str, Any]:
        if self.unhealthy:
            state = "unhealthy"
        elif self.restart_due is not None:
            state = "backoff"
        elif self.pid is not None and self.alive():
            state = "running" if self.up else "starting"
        else:
            state = "stopped"
        return {"pid": self.pid if state in ("running", "starting") else None, "state": state,
                "restarts": self.restarts, "last_exit": self.last_exit, "last_restart_at": self.last_restart_at,
                "reason": self.unhealthy}


class Supervisor:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = files.private_dir(root, DIRECTORY)
        self.desired: dict[str, Any] = {"generation": 0, "router": None, "revisions": {}}
        self.revisions: dict[str, list[Child]] = {}
        self.router = Child("router")  # ready once it wrote router.json (it listens)
        self.reload_wanted = True
        self.stopping = False
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.last_rotate = 0.0
        self.status_written = ""
        self.table_dirty = False
        self.released: list[subprocess.Popen[bytes]] = []  # children no longer supervised: reaped
        self.identity = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        """(device, inode) of the supervisor directory: another one, or none, means it was removed."""
        try:
            info = os.lstat(self.directory)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    # ----------------------------------------------------------------------- desired state

    def reload(self) -> None:
        try:
            data = json.loads(files.read_text(self.directory / DESIRED_FILE))
        except FileNotFoundError:
            data = {"generation": 0, "router": None, "revisions": {}}
        except (OSError, ValueError) as exc:
            log.error("cannot read %s: %s (keeping the previous one)", DESIRED_FILE, exc)
            return
        revisions = data.get("revisions") or {}
        for rid in [r for r in self.revisions if r not in revisions]:
            self._stop_revision(rid)
        for rid, spec in revisions.items():
            children = self.revisions.get(rid)
            ports = list(spec.get("ports") or [])
            if children is None or _what_runs(self._spec(rid)) != _what_runs(spec):
                if children is not None:  # a new warm, other ports or command: start afresh
                    self._stop_revision(rid)
                self.revisions[rid] = [self._adopt_or_start(rid, index, spec) for index in range(len(ports))]
            self.desired.setdefault("revisions", {})[rid] = spec
        self.desired = data
        if data.get("router") and not self.router.alive() and self.router.restart_due is None:
            self._adopt_router(data["router"])
        elif not data.get("router") and self.router.pid is not None:
            # released, not stopped: whoever asked (router stop) stops it with its own grace
            if self.router.proc is not None:
                self.released.append(self.router.proc)
            self.router = Child("router")
        log.info("desired generation %s: %d revisions%s", data.get("generation"), len(revisions),
                 ", router" if data.get("router") else "")

    def _spec(self, rid: str) -> dict[str, Any] | None:
        return (self.desired.get("revisions") or {}).get(rid)

    def _adopt_or_start(self, rid: str, index: int, spec: dict[str, Any]) -> Child:
        child = Child(f"{rid}#{index}")
        record = processes.read_record(self.root, rid, index)
        if record is not None and procinfo.is_ours(record.pid, record.start_time):
            child.pid, child.start_time = record.pid, record.start_time
            child.started_mono = time.monotonic()
            child.ready = child.up = processes.health_ok(record.port, spec.get("health_path") or "/healthz",
                                                         PROBE_TIMEOUT)
            return child
        self._spawn(rid, index, spec, child)
        return child

    def _spawn(self, rid: str, index: int, spec: dict[str, Any], child: Child) -> None:
        port = int(spec["ports"][index])
        try:
            proc, record = processes.spawn(self.root, rid, index, argv=spec["argv"], cwd=spec.get("cwd"),
                                           env={**spec.get("env", {}), "PORT": str(port)}, port=port,
                                           log_max_bytes=int(spec.get("log_max_bytes") or 0))
        except Exception as exc:  # noqa: BLE001 - reported, never fatal for the supervisor
            log.error("cannot start %s: %s", child.name, exc)
            child.pid = None
            child.last_exit = f"cannot start: {exc}"
            return
        child.proc, child.pid, child.start_time = proc, record.pid, record.start_time
        child.started_mono = time.monotonic()
        child.probe_failures = 0
        child.up = False

    def _adopt_router(self, spec: dict[str, Any]) -> None:
        owner = files.read_json(self.root / "router" / "owner.json")
        if owner and procinfo.is_ours(owner.get("pid"), owner.get("start_time")):
            self.router.pid, self.router.start_time = owner["pid"], owner["start_time"]
            self.router.started_mono = time.monotonic()
            self.router.ready = self.router.up = True
            return
        self._spawn_router(spec)

    def _spawn_router(self, spec: dict[str, Any]) -> None:
        from greentic_core.store import atomic_write

        directory = files.private_dir(self.root, "router")
        (directory / "router.json").unlink(missing_ok=True)
        with files.open_append(directory / "router.log") as out:
            proc = subprocess.Popen(list(spec["argv"]), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        started = procinfo.start_time(proc.pid) or ""
        atomic_write(directory / "owner.json", json.dumps({"pid": proc.pid, "start_time": started}).encode())
        child = self.router
        child.proc, child.pid, child.start_time = proc, proc.pid, started
        child.started_mono = time.monotonic()
        child.up = False

    def _stop_child(self, child: Child, *, grace: float) -> None:
        if child.pid is not None and child.start_time:
            procinfo.terminate_group(child.pid, child.start_time, grace)
        if child.proc is not None:
            try:
                child.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        child.pid = None
        child.proc = None
        child.restart_due = None

    def _stop_revision(self, rid: str) -> None:
        spec = self._spec(rid) or {}
        grace = float(spec.get("stop_grace_seconds", STOP_GRACE))
        for index, child in enumerate(self.revisions.pop(rid, [])):
            self._stop_child(child, grace=grace)
            processes.forget(self.root, rid, index)

    # ----------------------------------------------------------------------- the loop

    def tick(self) -> None:
        now = time.monotonic()
        self.released = [proc for proc in self.released if proc.poll() is None]
        for rid, children in self.revisions.items():
            spec = self._spec(rid) or {}
            supervised = bool(spec.get("supervise", True))
            for index, child in enumerate(children):
                self._watch(child, now, supervised, lambda c=child, i=index, r=rid, s=spec: self._spawn(r, i, s, c),
                            spec.get("health_path") or "/healthz", int(spec["ports"][index]))
        if self.desired.get("router"):
            self._watch(self.router, now, True, lambda: self._spawn_router(self.desired["router"]), None, None)
        if self.table_dirty:
            self._take_unhealthy_out_of_the_table()
        if now - self.last_rotate >= ROTATE_EVERY:
            self.last_rotate = now
            if self._identity() != self.identity:  # the state directory was removed (or replaced)
                log.warning("%s is gone: stopping supervision", self.directory)
                self.stopping = True
                return
            self._rotate_logs()
        self.write_status()

    def _watch(self, child: Child, now: float, supervised: bool, respawn: Any, health_path: str | None,
               port: int | None) -> None:
        if child.unhealthy:
            return
        if child.restart_due is not None:
            if now >= child.restart_due and supervised:
                child.restart_due = None
                child.restarts += 1
                child.last_restart_at = _now_iso()
                log.warning("restarting %s (restart %d)", child.name, child.restarts)
                respawn()
            return
        if child.pid is None:
            return
        if not child.alive():
            status = child.exit_status()
            child.last_exit = status
            child.pid = None
            if not supervised or not child.ready:
                log.info("%s exited (%s); not restarted (%s)", child.name, status,
                         "not supervised" if not supervised else "never became ready")
                return
            self._schedule_restart(child, now, f"exited ({status})")
            return
        if child.ready and now - child.started_mono >= STABLE_SECONDS:
            child.quick_failures = 0
        if child is self.router:
            if not child.up:  # listening once it wrote router.json with its pid
                state = files.read_json(self.root / "router" / "router.json")
                child.up = bool(state) and state.get("pid") == child.pid
                child.ready = child.ready or child.up
            return
        if health_path is None or port is None or not supervised:
            return
        if child.probe is not None and child.probe.done():
            ok = child.probe.result()
            child.probe = None
            if ok:
                child.ready = child.up = True
                child.probe_failures = 0
            elif child.up:
                child.probe_failures += 1
                if child.probe_failures >= PROBE_FAILURES:
                    log.warning("%s failed %d health probes in a row: restarting it", child.name, child.probe_failures)
                    if child.pid is not None and child.start_time:
                        procinfo.terminate_group(child.pid, child.start_time, 2.0)
                    child.last_exit = f"killed after {child.probe_failures} failed health probes"
                    child.pid = None
                    child.proc = None
                    self._schedule_restart(child, now, "failed its health probes")
                    return
        if child.probe is None and now - child.last_probe >= (PROBE_INTERVAL if child.up else 0.1):
            child.last_probe = now
            child.probe = self.pool.submit(processes.health_ok, port, health_path, PROBE_TIMEOUT)

    def _schedule_restart(self, child: Child, now: float, why: str) -> None:
        child.quick_failures += 1
        if child.quick_failures > CRASH_LOOP_LIMIT:
            child.unhealthy = f"restarted {CRASH_LOOP_LIMIT} times in a row and {why} again: given up"
            log.error("%s: %s", child.name, child.unhealthy)
            self.table_dirty = True
            return
        delay = 0.0 if child.quick_failures == 1 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (child.quick_failures - 2))
        child.restart_due = now + delay
        log.warning("%s %s: restart in %.1fs", child.name, why, delay)

    def _take_unhealthy_out_of_the_table(self) -> None:
        """Unhealthy replicas get no traffic: their addresses leave the router's table."""
        from . import router_control

        self.table_dirty = False
        try:
            table = router_control.read_table(self.root)
            if not table:
                return
            dead = {f"127.0.0.1:{int(self._spec(rid)['ports'][i])}"
                    for rid, children in self.revisions.items() for i, c in enumerate(children) if c.unhealthy}
            changed = False
            for deployment in table.get("deployments", []):
                for backend in deployment.get("backends", []):
                    addresses = backend.get("addresses") or ([backend["address"]] if backend.get("address") else [])
                    kept = [a for a in addresses if a not in dead]
                    if kept != addresses:
                        changed = True
                        backend["addresses"] = kept
                        backend["address"] = kept[0] if kept else None
            if not changed:
                return
            table["generation"] = int(table.get("generation", 0)) + 1
            router_control.write_table(self.root, table)
            state = router_control.running_router(self.root)
            if state is not None:
                router_control.admin_request(state, "POST", "/reload", directory=router_control.router_dir(self.root))
            log.warning("took unhealthy replicas out of the router's table (generation %s)", table["generation"])
        except Exception as exc:  # noqa: BLE001 - the next change retries
            log.error("could not update the router's table: %s", exc)
            self.table_dirty = True

    def _rotate_logs(self) -> None:
        for rid, children in self.revisions.items():
            limit = int((self._spec(rid) or {}).get("log_max_bytes") or 0)
            if limit <= 0:
                continue
            for index in range(len(children)):
                for stream in ("stdout", "stderr"):
                    processes.rotate_running(self.root, rid, processes.log_name(stream, index), limit)

    def write_status(self, force: bool = False) -> None:
        revisions = {}
        for rid, children in self.revisions.items():
            spec = self._spec(rid) or {}
            replicas = [{"index": i, "port": int(spec["ports"][i]), **c.snapshot()} for i, c in enumerate(children)]
            entry: dict[str, Any] = {"supervised": bool(spec.get("supervise", True)), "replicas": replicas,
                                     "restarts": sum(c.restarts for c in children)}
            unhealthy = [c for c in children if c.unhealthy]
            if unhealthy:
                entry["reason"] = unhealthy[0].unhealthy
                entry["log_tail"] = processes.log_tail(self.root, rid)
            revisions[rid] = entry
        status = {"pid": os.getpid(), "generation": self.desired.get("generation", 0),
                  "router": self.router.snapshot() if self.desired.get("router") else None, "revisions": revisions}
        text = json.dumps(status, indent=2, sort_keys=True)
        if text != self.status_written or force:
            from greentic_core.store import atomic_write

            atomic_write(self.directory / STATUS_FILE, (text + "\n").encode())
            self.status_written = text

    def run(self) -> int:
        from greentic_core.store import atomic_write

        # one supervisor per state directory: a second one (a systemd unit started while the
        # CLI's runs) waits for the first to end instead of supervising the same processes twice
        lock = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another supervisor runs for %s: waiting for it to end", self.root)
            fcntl.flock(lock, fcntl.LOCK_EX)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_wanted", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        atomic_write(self.directory / PID_FILE, json.dumps({
            "pid": os.getpid(), "start_time": procinfo.start_time(os.getpid()), "started_at": _now_iso()}).encode())
        log.info("supervisor pid %s for %s", os.getpid(), self.root)
        while not self.stopping:
            if self.reload_wanted:
                self.reload_wanted = False
                self.reload()
                self.write_status(force=True)
            self.tick()
            time.sleep(TICK)
        log.info("stopping supervision (the processes keep running)")
        self.pool.shutdown(wait=False, cancel_futures=True)
        try:
            data = json.loads(files.read_text(self.directory / PID_FILE))
            if data.get("pid") == os.getpid():
                os.unlink(self.directory / PID_FILE)
        except (OSError, ValueError):
            pass
        return 0


def _what_runs(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A revision's spec without what can change while its processes keep running."""
    return None if spec is None else {k: v for k, v in spec.items() if k != "supervise"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greentic_local_process.supervisor",
                                     description="Supervise an environment's router and revision processes.")
    parser.add_argument("--state-dir", required=True, help="the environment's local-process state directory")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s supervisor[%(process)d] %(levelname)s %(message)s")
    root = Path(args.state_dir)
    if not root.is_absolute():
        log.error("--state-dir must be absolute")
        return 2
    return Supervisor(root).run()


if __name__ == "__main__":
    sys.exit(main())
