"""``greentic-deployer agent`` on local-process: real agent processes, real revisions, real router.

The supervisor is killed first wherever a test needs to prove that the *agent* repaired
something (the supervisor would otherwise bring a killed process back by itself).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from greentic_local_process import processes, router_control, supervision
from router_helpers import http_request, wait_for
from test_reliability_local import LocalCli
from greentic_local_process.sandbox import cleanup


class AgentProcess:
    """``python -m greentic_core agent dev --interval 1 --json`` with its pass reports."""

    def __init__(self, lc: LocalCli, *args: str, interval: float = 1.0) -> None:
        self.log = lc.tmp / f"agent-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
        env["GREENTIC_CACHE_DIR"] = str(lc.tmp / "cache")
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greentic_core", "--home", str(lc.home), "--json", "agent", "dev",
             "--interval", f"{interval:g}", *args],
            stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def passes(self) -> list[dict[str, Any]]:
        reports = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith('{"pass"'):
                reports.append(json.loads(line)["pass"])
        return reports

    def env_reports(self) -> list[dict[str, Any]]:
        return [e for p in self.passes() for e in p["environments"]]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def lc(tmp_path: Path) -> Iterator[LocalCli]:
    harness = LocalCli(tmp_path)
    agents: list[AgentProcess] = []
    harness.agents = agents  # type: ignore[attr-defined]
    try:
        yield harness
    finally:
        for agent in agents:
            agent.stop(signal.SIGKILL)
        cleanup(harness.state, 2.0)


def start_agent(lc: LocalCli, *args: str, interval: float = 1.0) -> AgentProcess:
    agent = AgentProcess(lc, *args, interval=interval)
    lc.agents.append(agent)  # type: ignore[attr-defined]
    return agent


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not processes.pid_alive(pid) if hasattr(processes, "pid_alive") else _gone(pid), 5,
             f"pid {pid} to die")


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def stop_supervision(lc: LocalCli) -> None:
    info = supervision.running(lc.state)
    assert info is not None, "no supervisor runs"
    kill(info["pid"])


def audit(lc: LocalCli) -> list[dict[str, Any]]:
    return lc.json("env", "history", "dev")["events"]


def serving(lc: LocalCli) -> bool:
    try:
        return lc.get(timeout=2)[0] == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- repairs


def test_the_agent_brings_back_a_killed_revision_and_router_within_two_passes(lc: LocalCli) -> None:
    rid = lc.setup(1)[0]
    lc.json("traffic", "set", "dev", "web", f"{rid}=10000")
    assert serving(lc)
    stop_supervision(lc)
    kill(processes.read_record(lc.state, rid).pid)
    kill(router_control.running_router(lc.state)["pid"])
    assert not serving(lc)

    agent = start_agent(lc)
    wait_for(lambda: serving(lc), 30, "the environment to serve again under the agent")
    wait_for(lambda: len(agent.passes()) >= 1, 10, "the agent's first pass report")
    first_two = agent.env_reports()[:2]
    repaired = [r for e in first_two for r in e["repairs"] if r.get("outcome") == "ok"]
    assert any(r.get("revision_id") == rid for r in repaired), agent.text()
    events = [e for e in audit(lc) if e.get("verb") == "agent.repair"]
    assert events and all(e["actor"].startswith("agent@") for e in events), events
    assert {e.get("revision_id") for e in events} >= {rid}
    # the environment stays healthy: later passes repair nothing
    count = len(agent.passes())
    wait_for(lambda: len(agent.passes()) >= count + 2, 10, "two more passes")
    assert all(not e["repairs"] for e in agent.env_reports()[count:]), agent.text()
    assert agent.stop() == 0


def test_a_router_table_edited_by_hand_is_enforced_again(lc: LocalCli) -> None:
    a, b = lc.setup(2)
    lc.json("traffic", "set", "dev", "web", f"{a}=9000,{b}=1000")
    stop_supervision(lc)
    table_path = next(lc.state.rglob("router-table.json"))
    table = json.loads(table_path.read_text())
    for deployment in table["deployments"]:
        for backend in deployment["backends"]:
            backend["weight_bps"] = 10000 if backend["revision_id"] == b else 0
    table_path.write_text(json.dumps(table))
    router = router_control.running_router(lc.state)
    token = (table_path.parent / "router-admin.token").read_text().strip()
    admin = router.get("admin") or router.get("admin_addr")
    status, _, _ = http_request(f"http://{admin}/reload", method="POST", body=b"",
                                headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    wait_for(lambda: {lc.get()[1] for _ in range(20)} == {b}, 5, "the hand-edited table to take effect")

    agent = start_agent(lc)
    wait_for(lambda: any(r.get("action") == "apply_traffic_split" and r.get("outcome") == "ok"
                         for e in agent.env_reports() for r in e["repairs"]), 20, "the agent to repair the split")
    observed = lc.json("env", "observe", "dev")
    weights = next(iter(observed["deployments"].values()))["weights"]
    assert {k: int(v) for k, v in weights.items() if int(v)} == {a: 9000, b: 1000}
    answered = [lc.get()[1] for _ in range(200)]
    assert answered.count(a) > 150 and b in answered


def test_a_revision_that_crashes_at_every_start_is_given_up_after_n_attempts(lc: LocalCli) -> None:
    stable = lc.setup(1)[0]
    lc.json("traffic", "set", "dev", "web", f"{stable}=10000")
    flag = lc.tmp / "crash"
    command = shlex.join([sys.executable, "-m", "greentic_local_process.sample_app"])
    bad = lc.json("revision", "stage", "dev", "web", "--command", command, "--drain-seconds", "1",
                  "--env", f"SAMPLE_EXIT_IF_EXISTS={flag}")["revision_id"]
    assert lc.json("revision", "warm", "dev", bad)["lifecycle"] == "ready"
    flag.write_text("crash")  # from now on it dies at every start
    stop_supervision(lc)
    kill(processes.read_record(lc.state, bad).pid)

    agent = start_agent(lc, "--max-attempts", "2")
    wait_for(lambda: any(e.get("verb") == "agent.give_up" for e in audit(lc)), 90,
             "the agent to give the crashing revision up")
    assert lc.json("revision", "show", "dev", bad)["revision"]["lifecycle"] == "failed"
    attempts = [e for e in audit(lc) if e.get("verb") == "agent.repair" and e.get("revision_id") == bad]
    assert len(attempts) == 2 and all(e["outcome"] == "error" for e in attempts), attempts
    gave_up = [e for e in audit(lc) if e.get("verb") == "agent.give_up"]
    assert len(gave_up) == 1 and gave_up[0]["revision_id"] == bad
    # no traffic moved to it, and the agent does not try again
    split = lc.json("traffic", "show", "dev", "web")
    assert json.dumps(split).count(bad) == 0 or all(
        e["weight_bps"] == 0 for e in split["split"]["entries"] if e["revision_id"] == bad)
    count = len(agent.passes())
    wait_for(lambda: len(agent.passes()) >= count + 2, 10, "two more passes")
    assert len([e for e in audit(lc) if e.get("verb") == "agent.repair" and e.get("revision_id") == bad]) == 2
    assert serving(lc) and lc.get()[1] == stable


# --------------------------------------------------------------------------- detached rollouts


def _canary_file(lc: LocalCli, name: str, *, error_rate: float, stable_env: dict[str, str],
                 pause: float = 2.0) -> Path:
    command = [sys.executable, "-m", "greentic_local_process.sample_app"]
    doc = {
        "environment": "dev",
        "deployments": [{
            "bundle": "web",
            "revisions": [
                {"name": "v1", "drain_seconds": 1, "workload": {"command": command, "env": stable_env}},
                {"name": name, "drain_seconds": 1, "workload": {
                    "command": command, "env": {**stable_env, "SAMPLE_ERROR_RATE": str(error_rate)}}},
            ],
            "traffic": {name: "100%"},
            "strategy": {"type": "canary", "steps": ["25%", "50%"], "pause_seconds": pause,
                         "analysis": {"max_error_rate": 0.1, "min_requests": 20, "on_inconclusive": "pause"}},
        }],
    }
    path = lc.tmp / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def _baseline(lc: LocalCli) -> dict[str, str]:
    stable_env = {"RELIABILITY_MARKER": lc.marker}
    command = [sys.executable, "-m", "greentic_local_process.sample_app"]
    first = lc.tmp / "v1.json"
    first.write_text(json.dumps({"deployments": [{"bundle": "web", "revisions": [
        {"name": "v1", "drain_seconds": 1, "workload": {"command": command, "env": stable_env}}],
        "traffic": {"v1": "100%"}}]}))
    answers = lc.tmp / "answers.json"
    answers.write_text(json.dumps({"listen_addr": lc.listen, "warm_timeout_seconds": 20, "stop_grace_seconds": 2}))
    lc.json("env", "init", "dev", "--deployer", "greentic.deployer.local-process", "--answers", str(answers))
    lc.json("apply", "-f", str(first), "dev")
    return stable_env


class Load:
    """Requests through the router in a thread until stopped (a canary needs traffic to judge)."""

    def __init__(self, lc: LocalCli) -> None:
        import threading

        self.lc, self.stopping = lc, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.lc.get(timeout=2)
            except OSError:
                self.stopping.wait(0.05)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def _traffic_events(lc: LocalCli) -> list[dict[str, Any]]:
    return [e for e in reversed(audit(lc)) if e.get("verb") == "traffic.set" and e.get("outcome") == "ok"]  # oldest first


def test_a_detached_failing_canary_is_aborted_by_the_agent(lc: LocalCli) -> None:
    stable_env = _baseline(lc)
    path = _canary_file(lc, "v2", error_rate=0.5, stable_env=stable_env)
    detached = lc.json("apply", "--detach", "-f", str(path), "dev")
    assert detached["detached"] is True and detached["plan"]["steps"]
    assert lc.json("revision", "list", "dev")  # nothing staged yet: the agent does it
    status = lc.json("env", "show", "dev")
    assert len(status["environment"]["revisions"]) == 1

    load = Load(lc)
    try:
        start_agent(lc)
        wait_for(lambda: _has_rollout(lc) and lc.json("rollout", "status", "dev", "web")["rollout"]["phase"]
                 == "aborted", 60, "the agent to abort the failing canary")
    finally:
        load.close()
    doc = lc.json("rollout", "status", "dev", "web")["rollout"]
    assert "analysis failed" in doc["reason"]
    v1 = doc["baseline"][0][0]
    assert doc["current_split"] == [[v1, 10000]]
    assert {lc.get()[1] for _ in range(20)} == {v1}


def _has_rollout(lc: LocalCli) -> bool:
    from greentic_core.cli import cli

    result = lc.runner.invoke(cli,
                              ["--home", str(lc.home), "--json", "rollout", "status", "dev", "web"], env=lc.env)
    return result.exit_code == 0


def test_two_agents_and_a_sigkill_carry_a_healthy_detached_canary_to_the_end_once(lc: LocalCli) -> None:
    stable_env = _baseline(lc)
    # pauses of 16 s: the two agents share the environment for more than 30 s
    path = _canary_file(lc, "v2", error_rate=0.0, stable_env=stable_env, pause=16.0)
    lc.json("apply", "--detach", "-f", str(path), "dev")
    started = time.monotonic()
    load = Load(lc)
    try:
        first = start_agent(lc)
        second = start_agent(lc)
        # SIGKILL the agent that drives it between two steps, start another one
        wait_for(lambda: _has_rollout(lc) and lc.json("rollout", "status", "dev", "web")["rollout"]["passed_steps"]
                 >= 1, 60, "the first canary step to pass")
        driver = lc.json("rollout", "status", "dev", "web")["rollout"]["driver"]
        victim = first if driver and driver.get("pid") == first.proc.pid else second
        victim.stop(signal.SIGKILL)
        start_agent(lc)
        wait_for(lambda: lc.json("rollout", "status", "dev", "web")["rollout"]["phase"] == "completed", 90,
                 "the rollout to complete")
        wait_for(lambda: len(lc.json("env", "show", "dev")["environment"]["revisions"]) == 2
                 and _detached_status(lc) == "done", 60, "the detached apply to retire v1")
    finally:
        load.close()
    assert time.monotonic() - started > 30
    doc = lc.json("rollout", "status", "dev", "web")["rollout"]
    v2 = doc["target"][0][0]
    assert doc["current_split"] == [[v2, 10000]]
    # every step's weights were set exactly once, in order: none skipped, none repeated
    splits = [tuple(sorted((r, int(w)) for r, w in ev["weights"].items() if int(w))) for ev in _traffic_events(lc)]
    steps = [tuple(sorted((str(r), int(w)) for r, w in step["weights"] if int(w))) for step in doc["steps"]]
    canary_sets = [s for s in splits if s in steps]
    assert canary_sets == steps, (canary_sets, steps)
    actors = {e["actor"] for e in audit(lc) if e.get("verb") == "traffic.set"}
    assert any(a.startswith("agent@") for a in actors)
    assert not [e for e in audit(lc) if e.get("outcome") == "conflict"]  # no write lost a compare-and-swap
    commands = {e.get("command", "") for e in audit(lc) if e.get("actor", "").startswith("agent@")}
    assert len(commands) >= 2, commands  # two agent processes acted (the command names the pid)


def _detached_status(lc: LocalCli) -> str | None:
    record = lc.home / "environments" / "dev" / "desired" / "detached.json"
    return json.loads(record.read_text())["status"] if record.is_file() else None
