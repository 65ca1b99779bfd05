"""Helpers of the dashboard's tests (a module of its own, not conftest: several test directories
of the repository have a conftest.py, and ``from conftest import`` would pick any of them)."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("GREENTIC_UI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "test-token-0123456789abcdef"
ACTOR = "alice"  # the dashboard's --actor: actions are audited as ui:alice
SAMPLE_APP = (sys.executable, "-m", "greentic_local_process.sample_app")


# --------------------------------------------------------------------------- the dashboard


class Dashboard:
    """``python -m greentic_core --home HOME --actor alice ui --listen 127.0.0.1:0 ...``"""

    def __init__(self, home: Path, cache: Path, *, allow_actions: bool = True, token: str = TOKEN) -> None:
        cmd = [sys.executable, "-m", "greentic_core", "--home", str(home), "--actor", ACTOR, "ui",
               "--listen", "127.0.0.1:0", "--token", token]
        if allow_actions:
            cmd.append("--allow-actions")
        env = {k: v for k, v in os.environ.items() if k not in ("GREENTIC_STORE", "GREENTIC_DEPLOYERS",
                                                                 "GREENTIC_DISABLE_DEPLOYERS")}
        env["GREENTIC_CACHE_DIR"] = str(cache)
        self.token = token
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []  # everything it prints, for failure messages

        def read() -> None:
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"the dashboard did not start: {''.join(self.output)}")
            found = re.search(r"open (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self.base = self.url.split("/?", 1)[0]
                break

    def get(self, path: str, *, token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.base + path, headers=dict(headers or {}))
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def api(self, path: str) -> Any:
        status, _, body = self.get(path, token=self.token)
        assert status == 200, (status, body[:500])
        return json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- local-process environments


class LocalEnv:
    """A local-process environment with its own home, router port and state directory."""

    def __init__(self, root: Path, env_id: str = "shop") -> None:
        from greentic_core.operator import Operator
        from greentic_core.registry import Registry
        from greentic_core.store import Store
        from greentic_local_process import processes

        self.env_id = env_id
        self.root = root
        self.home = root / "home"
        self.cache = root / "cache"
        self.state = root / "lp-state"
        self.port = processes.free_port()
        self.router = f"http://127.0.0.1:{self.port}/"
        self.store = Store(self.home / "environments")
        self.op = Operator(self.store, Registry(use_cache=False), actor="tester", command="ui tests")
        self.op.init_env(env_id, "greentic.deployer.local-process",
                         answers={"listen_addr": f"127.0.0.1:{self.port}", "state_dir": str(self.state),
                                  "stop_grace_seconds": 1, "warm_timeout_seconds": 30})

    def revision(self, bundle: str, version: str, *, warm: bool = True, **env: str) -> str:
        from greentic_core.spec import Workload

        result = self.op.stage(self.env_id, bundle, workload=Workload(command=SAMPLE_APP,
                                                                       env={"VERSION": version, **env}),
                               drain_seconds=1)
        rid = result.revision.revision_id
        if warm:
            self.op.warm(self.env_id, rid)
        return rid

    def deployment_id(self, bundle: str) -> str:
        env = self.store.load(self.env_id)
        return next(b.deployment_id for b in env.bundles if b.bundle_id == bundle)

    def split(self, bundle: str) -> dict[str, int]:
        env = self.store.load(self.env_id)
        split = env.split_for(self.deployment_id(bundle))
        return {e.revision_id: e.weight_bps for e in split.entries} if split else {}

    def served_by(self, requests: int) -> Counter[str]:
        """Send ``requests`` GET / through the router; count the answering revisions."""
        seen: Counter[str] = Counter()
        for _ in range(requests):
            with urllib.request.urlopen(self.router, timeout=10) as response:
                seen[response.headers.get("X-Greentic-Revision")] += 1
        return seen

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, GREENTIC_CACHE_DIR=str(self.cache))
        result = subprocess.run([sys.executable, "-m", "greentic_core", "--home", str(self.home), *args],
                                capture_output=True, text=True, timeout=120, env=env)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def close(self) -> None:
        from greentic_local_process.sandbox import cleanup

        cleanup(self.state, 2.0)


def login(page: Any, board: Dashboard, path: str = "/") -> None:
    """Open the printed URL (with the token), then ``path`` with the session cookie."""
    page.goto(board.url)
    if path != "/":
        page.goto(board.base + path)
    page.wait_for_selector("#live-status:not(.off)")  # the event stream is connected
