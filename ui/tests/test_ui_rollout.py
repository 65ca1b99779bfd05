"""A canary rollout watched live in the dashboard and aborted from it.

``greentic-deployer apply`` runs a canary (20% for 2 s, analysed, then 50% with a long pause)
in a subprocess while a load generator sends requests through the real router. The dashboard,
opened before the rollout starts, shows it appear, its first step pass with the analysis
window's numbers charted, and the second step start, all without a reload. The abort button
puts the traffic back on the stable revision: the running apply stops (exit 3), the router
sends everything to v1, the canary is recorded failed and the history names ``ui:alice``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from ui_helpers import ACTOR, SAMPLE_APP, Dashboard, LocalEnv, login

pytestmark = pytest.mark.timeout(150)


def desired(env: LocalEnv, revisions: list[str], traffic: dict[str, str], *, canary: bool) -> str:
    doc: dict[str, Any] = {"environment": env.env_id, "deployments": [{
        "bundle": "web",
        "revisions": [{"name": name, "drain_seconds": 1,
                       "workload": {"command": list(SAMPLE_APP), "env": {"VERSION": name}}} for name in revisions],
        "traffic": traffic,
    }]}
    if canary:
        doc["deployments"][0]["strategy"] = {
            "type": "canary",
            "steps": [{"weight": "20%", "pause_seconds": 2}, {"weight": "50%", "pause_seconds": 120}],
            "analysis": {"max_error_rate": 0.5, "max_p99_ms": 5000, "min_requests": 5, "on_inconclusive": "pass"},
        }
    path = env.root / f"desired-{len(revisions)}-{int(canary)}.json"
    path.write_text(json.dumps(doc))
    return str(path)


class Load:
    """A thread sending GET / through the router until stopped (the canary's analysis needs requests)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
            except (OSError, urllib.error.HTTPError):
                pass
            self.sent += 1
            self._stop.wait(0.01)


@pytest.fixture
def canary_env(tmp_path: Path) -> Iterator[LocalEnv]:
    env = LocalEnv(tmp_path, "canary")
    try:
        yield env
    finally:
        env.close()


def test_a_canary_is_watched_live_and_aborted_from_the_dashboard(canary_env: LocalEnv, page, screenshots) -> None:
    env = canary_env
    env.cli("--actor", "deployer-bot", "apply", "-f", desired(env, ["v1"], {"v1": "100%"}, canary=False), env.env_id)
    board = Dashboard(env.home, env.cache)
    apply: subprocess.Popen[str] | None = None
    try:
        login(page, board)
        page.evaluate("window.__samePage = true")
        with Load(env.router):
            apply = subprocess.Popen(
                [sys.executable, "-m", "greentic_core", "--home", str(env.home), "--actor", "deployer-bot", "apply",
                 "-f", desired(env, ["v1", "v2"], {"v2": "100%"}, canary=True), env.env_id],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**__import__("os").environ, "GREENTIC_CACHE_DIR": str(env.cache)})

            # the environments page shows the rollout in progress as soon as it starts
            link = page.locator('tr[data-env-row="canary"] a[href*="/rollout/"]')
            link.wait_for(timeout=30_000)
            assert page.evaluate("window.__samePage") is True
            link.click()
            page.wait_for_selector("#rollout")
            page.evaluate("window.__samePage = true")

            # step 1 passes its analysis and step 2 starts, live
            page.locator('li.step[data-step="1"][data-state="passed"]').wait_for(timeout=30_000)
            page.locator('li.step[data-step="2"][data-state="current"]').wait_for(timeout=15_000)
            assert page.evaluate("window.__samePage") is True
            step1 = page.inner_text('li.step[data-step="1"]')
            assert "pass" in step1 and "requests" in step1, step1
            assert page.locator("svg.chart").count() == 3  # requests, error rate, p99 with thresholds
            assert page.locator("svg.chart line.threshold").count() >= 2
            assert "deployer-bot" in page.inner_text("#rollout") or "apply" in page.inner_text("#rollout")
            assert "(in " in page.inner_text(".countdown")  # the next step is due in ~2 minutes
            page.screenshot(path=str(screenshots / "ui-rollout.png"), full_page=True)

            # abort from the dashboard (it asks first: traffic moves)
            page.fill(".abort-reason", "aborted from the dashboard test")
            page.click('button[data-verb="abort"]')
            assert "Traffic goes back" in page.inner_text("#confirm-text")
            page.click("#confirm-ok")
            page.wait_for_selector('#rollout[data-phase="aborted"]', timeout=30_000)
            assert "aborted from the dashboard test" in page.inner_text("#rollout-reason")

            # the apply that was driving the rollout notices and stops
            out, _ = apply.communicate(timeout=30)
            assert apply.returncode == 3, out
            assert "aborted" in out, out

        v1, v2 = (next(r.revision_id for r in env.store.load(env.env_id).revisions
                       if (r.workload.env or {}).get("VERSION") == name) for name in ("v1", "v2"))
        assert env.split("web") == {v1: 10_000}
        assert set(env.served_by(40)) == {v1}  # the router sends everything to the stable revision
        assert env.store.load(env.env_id).revision(v2).lifecycle.value == "failed"
        history = board.api(f"/api/environments/{env.env_id}/history?actor=ui:{ACTOR}")["events"]
        assert {"traffic.set", "revision.fail"} <= {e["verb"] for e in history}, history
        assert not page.dialogs and not page.console_errors
    finally:
        if apply is not None and apply.poll() is None:
            apply.kill()
            apply.wait(10)
        board.stop()
