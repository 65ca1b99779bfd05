"""Canary rollouts through the real local-process provider: real processes, the real router.

A revision whose sample app fails half of its requests (``SAMPLE_ERROR_RATE=0.5``) is rolled
out as a canary while a load generator thread sends requests through the router: the first
analysis sees the canary's error rate (from the router's per-revision counters, through the
``greentic_revision_metrics`` hook), the rollout is aborted on its own, traffic goes back to
the stable revision, the canary is recorded ``failed``, and the failures users saw stayed
within the canary's share of the traffic. Then a healthy canary is promoted to 100%.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from greentic_core import desired, rollout
from greentic_core.apply import apply, current_plan
from greentic_core.cli import cli
from greentic_core.operator import Operator
from greentic_core.plan import revision_name
from greentic_core.registry import Registry
from greentic_core.spec import Lifecycle
from greentic_core.store import Store

pytestmark = pytest.mark.timeout(120)

ENV = "lp"
CANARY_SHARE = 0.20


def app(version: str, **env: str) -> dict[str, Any]:
    return {"command": [sys.executable, "-m", "greentic_local_process.sample_app"],
            "env": {"VERSION": version, **env}}


def document(revisions: dict[str, dict[str, Any]], traffic: dict[str, str], *, canary: bool = True) -> str:
    doc: dict[str, Any] = {
        "environment": ENV,
        "deployments": [{
            "bundle": "web",
            "revisions": [{"name": name, "drain_seconds": 1, "workload": workload}
                          for name, workload in revisions.items()],
            "traffic": traffic,
        }],
    }
    if canary:
        doc["deployments"][0]["strategy"] = {
            "type": "canary",
            "steps": [f"{CANARY_SHARE:.0%}", "50%"],
            "pause_seconds": 2.5,
            "analysis": {"max_error_rate": 0.1, "max_p99_ms": 2000, "min_requests": 20, "on_inconclusive": "fail"},
        }
    return json.dumps(doc)


class Load:
    """Threads sending GET / through the router until stopped; counts what users saw."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.results: list[tuple[int, str | None]] = []  # (status, answering revision); 0 = no answer
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.results.append((response.status, response.headers.get("X-Greentic-Revision")))
            except urllib.error.HTTPError as exc:
                self.results.append((exc.code, exc.headers.get("X-Greentic-Revision")))
            except OSError:
                self.results.append((0, None))
            time.sleep(0.004)

    def failures(self) -> int:
        return sum(1 for status, _ in self.results if status == 0 or status >= 500)


def get(url: str) -> tuple[int, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get("X-Greentic-Revision")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Greentic-Revision")


@pytest.fixture
def lp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("greentic_local_process.router")
    from greentic_local_process import processes
    from greentic_local_process.sandbox import cleanup

    for name in ("GREENTIC_HOME", "GREENTIC_DEPLOYERS", "GREENTIC_DISABLE_DEPLOYERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
    home, state = tmp_path / "home", tmp_path / "lp-state"
    listen = f"127.0.0.1:{processes.free_port()}"
    store = Store(home / "environments")
    op = Operator(store, Registry(use_cache=False), actor="tester", command="test_rollout")
    try:
        op.init_env(ENV, "greentic.deployer.local-process",
                    answers={"listen_addr": listen, "state_dir": str(state), "stop_grace_seconds": 1,
                             "warm_timeout_seconds": 30})
        yield {"op": op, "store": store, "home": home, "url": f"http://{listen}/"}
    finally:
        cleanup(state, 2.0)


def by_name(store: Store) -> dict[str, Any]:
    env = store.load(ENV)
    return {revision_name(r): r for r in env.revisions}


def split_by_name(store: Store) -> list[tuple[str, int]]:
    env = store.load(ENV)
    names = {r.revision_id: revision_name(r) for r in env.revisions}
    return sorted((names[e.revision_id], e.weight_bps) for e in env.split_for(env.bundles[0].deployment_id).entries)


def test_failing_canary_is_aborted_and_a_healthy_one_promoted(lp: dict[str, Any]) -> None:
    op, store, url = lp["op"], lp["store"], lp["url"]
    runner = CliRunner()

    def cli_json(*args: str, code: int = 0) -> dict[str, Any]:
        result = runner.invoke(cli, ["--home", str(lp["home"]), "--json", *args], catch_exceptions=False)
        assert result.exit_code == code, result.stdout + result.stderr
        return json.loads(result.stdout)

    # ---- the stable revision (a first split: no canary)
    start = desired.loads(document({"v1": app("1")}, {"v1": "100%"}))
    apply(op, ENV, start)
    assert get(url) == (200, by_name(store)["v1"].revision_id)

    # ---- a canary that fails half of its requests, under load
    bad_doc = document({"v1": app("1"), "v2": app("2", SAMPLE_ERROR_RATE="0.5")}, {"v2": "100%"})
    bad = desired.loads(bad_doc)
    started = time.monotonic()
    with Load(url) as load:
        with pytest.raises(rollout.RolloutAborted) as caught:
            apply(op, ENV, bad)
        seen_during_canary = list(load.results)
        time.sleep(0.3)  # after the abort every request goes to the stable revision
        after_abort = load.results[len(seen_during_canary):]
    assert time.monotonic() - started < 30
    assert "error rate" in caught.value.message and "step 1 analysis failed" in caught.value.message

    revisions = by_name(store)
    v1, v2 = revisions["v1"].revision_id, revisions["v2"].revision_id
    assert revisions["v2"].lifecycle == Lifecycle.FAILED and revisions["v1"].lifecycle == Lifecycle.READY
    assert split_by_name(store) == [("v1", 10_000)]
    did = store.load(ENV).bundles[0].deployment_id
    state = rollout.load_state(store, ENV, did)
    assert state.phase == "aborted" and state.passed_steps == 0 and "error rate" in state.reason
    analysis = state.analyses[0]
    assert analysis["verdict"] == "fail" and analysis["requests"] >= 20 and analysis["error_rate"] > 0.2
    assert not op.observe(ENV).revision(v2).present  # the failed canary was stopped

    # what users saw while the canary ran: failures only from the canary, within its share
    total = len(seen_during_canary)
    failed = sum(1 for status, _ in seen_during_canary if status == 0 or status >= 500)
    served = Counter(revision for _, revision in seen_during_canary)
    assert total >= 100, f"the load generator sent only {total} requests"
    assert 0 < failed <= CANARY_SHARE * total, (failed, total)
    assert served[v2] <= CANARY_SHARE * total + 5, served
    assert all(revision in (v2, None) for status, revision in seen_during_canary if status >= 500 or status == 0)
    assert after_abort and all(result == (200, v1) for result in after_abort), Counter(after_abort)

    # the same target is not retried behind anyone's back
    planned = cli_json("plan", "-f", _write(lp["home"].parent / "bad.json", bad_doc), ENV)
    assert planned["plan"]["blocked"] and not planned["plan"]["steps"]
    status = cli_json("rollout", "status", ENV, "web")["rollout"]
    assert status["phase"] == "aborted" and status["current_split"] == [[v1, 10_000]]

    # ---- a healthy canary (v2 is dropped from the file: it is archived), promoted to 100%
    good = desired.loads(document({"v3": app("3")}, {"v3": "100%"}))
    assert [s.action.value for s in current_plan(op, ENV, good).steps] == [
        "stage", "warm", "traffic", "traffic", "traffic", "drain", "archive", "archive"]
    with Load(url) as load:
        result = apply(op, ENV, good)
    v3 = by_name(store)["v3"].revision_id
    assert load.results and load.failures() == 0, Counter(load.results)
    assert [r.outcome for r in result.results if r.step.canary] == ["passed", "passed", "completed"]
    assert split_by_name(store) == [("v3", 10_000)]
    assert {name: r.lifecycle for name, r in by_name(store).items()} == {
        "v1": Lifecycle.ARCHIVED, "v2": Lifecycle.ARCHIVED, "v3": Lifecycle.READY}
    state = rollout.load_state(store, ENV, did)
    assert state.phase == "completed" and [a["verdict"] for a in state.analyses] == ["pass", "pass"]
    assert all(a["requests"] >= 20 and a["error_rate"] == 0 for a in state.analyses)
    assert {get(url) for _ in range(5)} == {(200, v3)}
    assert current_plan(op, ENV, good).empty
    metrics = op.bind(store.load(ENV)).metrics(store.load(ENV))
    assert metrics[v3]["requests"] > 0 and metrics[v3]["errors"] == 0


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)
