"""Supervision: revisions and the router come back by themselves (real processes, real sockets).

One supervisor per environment (``greentic_local_process.supervisor``) owns the router and the
revision processes. Each test drives the provider through the operator (as the CLI does) and
kills processes behind its back with SIGKILL, under load where it matters:

* one revision at 100% killed: it serves again within 3 s with no command run, and requests fail
  only inside that window; two revisions at 50/50: at most 1% of requests fail;
* a revision that crashes at every start after it was healthy: marked unhealthy after the
  crash-loop limit, out of the router's table (the other revision takes all the traffic), its
  reason and log tail in ``observe``;
* a revision that stops answering its health path: restarted after K failed probes;
* the router killed under load: back within 3 s, enforcing the recorded split;
* 3 replicas, one killed under load: no request fails;
* drain and archive stop supervising first; the supervisor's own death leaves everything
  running, and the next command starts a new one that adopts the processes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from greentic_local_process import processes, router_control, supervision
from router_helpers import http_request, wait_for
from test_provider import ENV_ID, LP, alive, wait_dead

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LP]:
    env = LP(tmp_path)
    try:
        yield env
    finally:
        assert not env.close()


class Load:
    """Threads sending GET / through the router; every outcome kept with its time."""

    def __init__(self, listen: str, threads: int = 3) -> None:
        self.url = f"http://{listen}/"
        self.results: list[tuple[float, int, str | None]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, headers, _ = http_request(self.url, timeout=5)
                revision = headers.get("X-Greentic-Revision")
            except (OSError, http.client.HTTPException):  # cut mid-answer by a killed process
                status, revision = 0, None
            with self.lock:
                self.results.append((time.monotonic(), status, revision))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def wait_more(self, n: int, timeout: float = 10.0) -> None:
        target = self.count() + n
        wait_for(lambda: self.count() >= target, timeout, f"{n} more requests")

    def failures(self) -> list[tuple[float, int, str | None]]:
        with self.lock:
            return [r for r in self.results if r[1] != 200]


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def revision_status(lp: LP, rid: str) -> dict[str, Any]:
    return supervision.revision_status(lp.state, rid) or {}


# --------------------------------------------------------------------------- revisions


def test_a_killed_revision_at_100_percent_serves_again_within_3s_without_a_command(lp: LP) -> None:
    rid = lp.warmed()
    lp.traffic((rid, 10000))
    old = lp.pid(rid)
    with Load(lp.listen) as load:
        load.wait_more(50)
        killed_at = kill(old)
        wait_for(lambda: lp.record(rid) is not None and lp.record(rid).pid != old and lp.get()[0] == 200, 5,
                 "the revision to serve again")
        back_at = time.monotonic()
        load.wait_more(100)
    assert back_at - killed_at < 3, f"served again after {back_at - killed_at:.2f}s"
    failed = load.failures()
    assert all(killed_at - 0.05 <= t <= back_at + 0.5 for t, _, _ in failed), failed
    observed = lp.op.observe(ENV_ID).revision(rid)
    assert observed.serving and observed.restarts["count"] == 1
    assert observed.restarts["last_exit"] == "signal SIGKILL" and observed.restarts["last_restart_at"]
    print(f"\nkilled at 100%: serving again after {back_at - killed_at:.2f}s, {len(failed)} of "
          f"{len(load.results)} requests failed, all inside that window")


def test_a_killed_revision_at_50_50_fails_at_most_1_percent(lp: LP) -> None:
    a, b = lp.warmed(), lp.warmed()
    lp.traffic((a, 5000), (b, 5000))
    with Load(lp.listen, threads=4) as load:
        load.wait_more(100)
        kill(lp.pid(a))
        wait_for(lambda: revision_status(lp, a).get("restarts") == 1, 5, "the restart")
        load.wait_more(300)
    failed = load.failures()
    assert len(failed) <= len(load.results) / 100, (len(failed), len(load.results))
    served = {r for _, status, r in load.results[-100:] if status == 200}
    assert served == {a, b}


def test_a_crash_looping_revision_is_unhealthy_and_gets_no_traffic(lp: LP, tmp_path: Path) -> None:
    crash = tmp_path / "crash-now"
    a = lp.warmed(SAMPLE_EXIT_IF_EXISTS=str(crash))
    b = lp.warmed()
    lp.traffic((a, 5000), (b, 5000))
    crash.write_text("from now on every start fails")
    kill(lp.pid(a))
    wait_for(lambda: revision_status(lp, a).get("reason"), 30, "the crash-loop limit")
    entry = revision_status(lp, a)
    assert "given up" in entry["reason"] and "refusing to start" in entry["log_tail"]
    assert entry["replicas"][0]["state"] == "unhealthy" and entry["replicas"][0]["last_exit"] == "exit 4"
    observed = lp.op.observe(ENV_ID).revision(a)
    assert observed.serving is False and "unhealthy" in observed.detail and "refusing to start" in observed.detail
    # out of the router's table: every request goes to b, none is even tried on a
    table = router_control.read_table(lp.state)
    backend = [x for d in table["deployments"] for x in d["backends"] if x["revision_id"] == a][0]
    assert backend["address"] is None
    answers = [lp.get() for _ in range(40)]
    assert all(status == 200 and revision == b for status, revision, _ in answers)


def test_a_revision_that_stops_answering_its_health_path_is_restarted(lp: LP, tmp_path: Path) -> None:
    sick = tmp_path / "sick"
    rid = lp.warmed(SAMPLE_UNHEALTHY_IF_EXISTS=str(sick))
    old = lp.pid(rid)
    assert revision_status(lp, rid)["replicas"][0]["state"] == "running"  # warm waited for the supervisor
    sick.write_text("503 from now on")
    wait_for(lambda: revision_status(lp, rid).get("restarts", 0) >= 1, 15, "a restart after failed probes")
    sick.unlink()
    wait_for(lambda: lp.record(rid) is not None and lp.record(rid).pid != old
             and revision_status(lp, rid)["replicas"][0]["state"] == "running", 10, "the new process to be healthy")
    assert "failed health probes" in revision_status(lp, rid)["replicas"][0]["last_exit"]
    assert not alive(old)


# --------------------------------------------------------------------------- the router


def test_a_killed_router_is_back_within_3s_enforcing_the_recorded_split(lp: LP) -> None:
    a, b = lp.warmed(), lp.warmed()
    lp.traffic((a, 9000), (b, 1000))
    old = lp.router_state()["pid"]
    with Load(lp.listen) as load:
        load.wait_more(50)
        killed_at = kill(old)
        wait_for(lambda: (lp.router_state() or {}).get("pid") not in (None, old), 5, "a new router")
        wait_for(lambda: lp.get()[0] == 200, 5, "the router to serve")
        back_at = time.monotonic()
        load.wait_more(50)
    assert back_at - killed_at < 3, back_at - killed_at
    weights = lp.router_status()["deployments"][lp.dep]["weights"]
    assert {k: int(v) for k, v in weights.items()} == {a: 9000, b: 1000}
    assert dict(lp.op.observe(ENV_ID).deployments[lp.dep].weights) == {a: 9000, b: 1000}
    assert supervision.status(lp.state)["router"]["restarts"] == 1


# --------------------------------------------------------------------------- replicas


def test_three_replicas_one_killed_under_load_fail_no_request(tmp_path: Path) -> None:
    from greentic_core import Workload
    import sys

    lp = LP(tmp_path)
    try:
        workload = Workload(command=(sys.executable, "-m", "greentic_local_process.sample_app"),
                            env={"GREENTIC_TEST_MARKER": lp.marker}, health_path="/healthz", replicas=3)
        rid = lp.op.stage(ENV_ID, lp.dep, workload=workload).revision.revision_id
        warmed = lp.op.warm(ENV_ID, rid)
        assert len(warmed.outcome["ports"]) == 3
        lp.traffic((rid, 10000))
        observed = lp.op.observe(ENV_ID).revision(rid)
        assert (observed.ready_replicas, observed.desired_replicas) == (3, 3)
        pids = {json.loads(lp.get()[2])["pid"] for _ in range(30)}
        assert len(pids) == 3  # the router balances within the revision
        with Load(lp.listen, threads=4) as load:
            load.wait_more(100)
            victim = processes.read_record(lp.state, rid, 1)
            kill(victim.pid)
            wait_for(lambda: revision_status(lp, rid)["replicas"][1]["restarts"] == 1, 5, "the replica's restart")
            load.wait_more(300)
        assert load.failures() == []
        observed = lp.op.observe(ENV_ID).revision(rid)
        assert (observed.ready_replicas, observed.restarts["count"]) == (3, 1)
    finally:
        assert not lp.close()


# --------------------------------------------------------------------------- lifecycle of supervision


def test_drain_stops_supervising_first_and_nothing_comes_back(lp: LP) -> None:
    a, b = lp.warmed(drain_seconds=1), lp.warmed()
    lp.traffic((a, 0), (b, 10000))
    pid = lp.pid(a)
    lp.op.drain(ENV_ID, a)
    wait_dead(pid)
    assert a not in (supervision.status(lp.state) or {}).get("revisions", {})
    assert lp.record(a) is None and processes.running_records(lp.state, a, 1) == [None]


def test_the_supervisors_death_leaves_everything_running_and_the_next_one_adopts_it(lp: LP) -> None:
    rid = lp.warmed()
    lp.traffic((rid, 10000))
    info = supervision.running(lp.state)
    revision_pid, router_pid = lp.pid(rid), lp.router_state()["pid"]
    kill(info["pid"])
    wait_dead(info["pid"])
    assert alive(revision_pid) and alive(router_pid) and lp.get()[0] == 200
    lp.traffic((rid, 10000))  # the next command starts a supervisor; it adopts, it does not restart
    new = supervision.running(lp.state)
    assert new is not None and new["pid"] != info["pid"]
    assert lp.pid(rid) == revision_pid and lp.router_state()["pid"] == router_pid
    # and it supervises the adopted process: killed, it comes back
    kill(revision_pid)
    wait_for(lambda: lp.record(rid) is not None and lp.record(rid).pid != revision_pid and lp.get()[0] == 200, 5,
             "the adopted revision to come back")
    assert revision_status(lp, rid)["replicas"][0]["last_exit"].startswith("gone (adopted")


def test_revision_show_observe_reports_restarts(tmp_path: Path) -> None:
    from greentic_local_process.sandbox import cleanup
    from test_reliability_local import LocalCli

    lc = LocalCli(tmp_path)
    try:
        [rid] = lc.setup(1)
        pid = processes.read_record(lc.state, rid).pid
        kill(pid)
        wait_for(lambda: (supervision.revision_status(lc.state, rid) or {}).get("restarts") == 1
                 and supervision.revision_status(lc.state, rid)["replicas"][0]["state"] == "running", 10,
                 "the restart")
        shown = lc.json("revision", "show", "dev", rid, "--observe")
        assert shown["revision"]["revision_id"] == rid
        observed = shown["observed"]
        assert observed["serving"] is True and observed["restarts"]["count"] == 1
        assert observed["restarts"]["last_exit"] == "signal SIGKILL"
        assert "observed" not in lc.json("revision", "show", "dev", rid)  # not asked: the provider is not called
    finally:
        cleanup(lc.state, 2.0)
