"""``greentic-deployer demo``: two real revisions behind the router, a traffic shift and a drain.

Everything happens in a throw-away store (a temp directory) on a free loopback port, and is
removed at the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import http.client
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from greentic_core import Workload
from greentic_core.operator import Operator
from greentic_core.registry import Registry
from greentic_core.store import Store, environments_root

from . import processes
from .sandbox import cleanup

PLUGIN = "greentic.deployer.local-process"
PHASE_SECONDS = 2.5
SETTLE_SECONDS = 0.5


class LoadGenerator:
    """Sends real requests through the router from a few threads and counts who answered."""

    def __init__(self, host: str, port: int, threads: int = 4) -> None:
        self.host, self.port, self.threads = host, port, threads
        self.lock = threading.Lock()
        self.window: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=5)

    def take_window(self) -> Counter[str]:
        with self.lock:
            window, self.window = self.window, Counter()
            return window

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": "hello.local"})
                response = conn.getresponse()
                response.read()
                revision = response.getheader("X-Greentic-Revision") or "?"
                ok = response.status == 200
                with self.lock:
                    self.sent += 1
                    if ok:
                        self.window[revision] += 1
                        self.total[revision] += 1
                    else:
                        self.failures.append(f"HTTP {response.status} from {revision}")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.sent += 1
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            time.sleep(0.002)
        conn.close()


def run_demo(console: Console, *, say: Callable[[str], None]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="greentic-demo-"))
    store = Store(environments_root(home))
    port = processes.free_port()
    listen = f"127.0.0.1:{port}"
    env_id = "demo"
    op = Operator(store, Registry(), actor="demo", command="greentic-deployer demo")
    load: LoadGenerator | None = None
    started = time.monotonic()
    phases: list[dict[str, Any]] = []
    try:
        say(f"environment {env_id!r} in {home} (router on http://{listen})")
        op.init_env(env_id, PLUGIN, answers={"warm_timeout_seconds": 30, "stop_grace_seconds": 3}, listen_addr=listen)
        deployment = op.add_deployment(env_id, "hello").deployment_id
        app = Workload(command=(sys.executable, "-m", "greentic_local_process.sample_app"), health_path="/healthz")

        v1 = op.stage(env_id, deployment, workload=app, drain_seconds=5).revision.revision_id
        say(f"staged v1 {v1}; warming (starts the process, waits for /healthz)")
        op.warm(env_id, v1)
        op.traffic_set(env_id, deployment, [(v1, 10000)], idempotency_key="demo-v1")
        say("v1 is ready and gets 100% of the traffic")

        load = LoadGenerator("127.0.0.1", port)
        load.start()
        v2 = op.stage(env_id, deployment, workload=app, drain_seconds=5).revision.revision_id
        say(f"staged v2 {v2}; warming while v1 keeps serving")
        op.warm(env_id, v2)
        load.take_window()

        for v1_bps, v2_bps in ((9000, 1000), (5000, 5000), (0, 10000)):
            op.traffic_set(env_id, deployment, [(v1, v1_bps), (v2, v2_bps)], idempotency_key=f"demo-{v2_bps}")
            time.sleep(SETTLE_SECONDS)  # requests routed before the switch may still be answering
            load.take_window()
            time.sleep(PHASE_SECONDS)
            window = load.take_window()
            seen = sum(window.values()) or 1
            phase = {"target": {"v1": v1_bps, "v2": v2_bps},
                     "observed_bps": {"v1": round(window[v1] * 10000 / seen), "v2": round(window[v2] * 10000 / seen)},
                     "requests": sum(window.values())}
            phases.append(phase)
            say(f"split v1={v1_bps / 100:g}% v2={v2_bps / 100:g}%: observed v1={phase['observed_bps']['v1'] / 100:.1f}% "
                f"v2={phase['observed_bps']['v2'] / 100:.1f}% over {phase['requests']} requests")

        op.traffic_set(env_id, deployment, [(v2, 10000)], idempotency_key="demo-v2-only")
        say("v1 is out of the split; draining it (waits for its in-flight requests, then stops it)")
        op.drain(env_id, v1)
        op.archive(env_id, v1)
        time.sleep(0.5)
        load.stop()
        failures = list(load.failures)
        summary = {
            "ok": not failures, "requests_sent": load.sent, "failures": len(failures),
            "failure_examples": failures[:5], "answered_by": {"v1": load.total[v1], "v2": load.total[v2]},
            "phases": phases, "seconds": round(time.monotonic() - started, 1),
            "revisions": {"v1": v1, "v2": v2},
            "audit_events": len(store.audit_events(env_id)),
        }
        table = Table(title="demo summary", box=None)
        table.add_column("what")
        table.add_column("value")
        table.add_row("requests sent", str(summary["requests_sent"]))
        table.add_row("failed requests", str(summary["failures"]))
        table.add_row("answered by v1 / v2", f"{load.total[v1]} / {load.total[v2]}")
        table.add_row("audit events", str(summary["audit_events"]))
        table.add_row("time", f"{summary['seconds']} s")
        console.print(table)
        return summary
    finally:
        if load is not None:
            load.stop()
        env_dir = store.root / env_id
        if env_dir.exists():
            cleanup(env_dir, 2.0)
        shutil.rmtree(home, ignore_errors=True)
