"""Reliability of the local-process provider: dead revisions, a killed router, request bounds.

Driven through the real CLI (``greentic-deployer`` in-process with click's CliRunner) against a
temporary store, with real revision processes (``greentic_local_process.sample_app``), the real
router and real sockets on 127.0.0.1:

* with its supervisor gone too, a revision process that dies (SIGKILL behind our back): requests
  get a clean 502 at once, ``env observe`` reports it not present, ``env reconcile`` restarts it
  (and a supervisor) and traffic flows again;
* with its supervisor gone too, a router killed (SIGKILL) with requests in flight: each of them
  ends at once with a connection error (never a hang), new requests are refused at once,
  nothing stored changes (the document loads and validates, byte-identical), and the next
  ``traffic set`` starts a new router;
* the router bounds what a client sends: too many headers and an overlong request line are
  refused (hop-by-hop stripping, an oversized header and the body limit are covered in
  ``test_router.py``).

What ``test_provider.py`` already proves is not repeated (a killed revision observed not present
through the library API, the router restarted by the next traffic command, splits moved under
300 concurrent requests with none dropped).
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from greentic_core.cli import cli
from greentic_core.store import Store
from greentic_local_process import processes, router_control, supervision
from greentic_local_process.sandbox import cleanup
from router_helpers import RouterProcess, deployment, http_request, make_table, running_backends, wait_for

PLUGIN = "greentic.deployer.local-process"
pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCli:
    """``greentic-deployer`` against a temporary store, environment ``dev`` on local-process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.listen = f"127.0.0.1:{free_port()}"
        self.runner = CliRunner()
        self.env = {"GREENTIC_CACHE_DIR": str(tmp / "cache"), "GREENTIC_HOME": None, "GREENTIC_DEPLOYERS": None,
                    "GREENTIC_DISABLE_DEPLOYERS": None}
        self.marker = uuid.uuid4().hex

    def json(self, *args: str, code: int = 0) -> dict[str, Any]:
        result = self.runner.invoke(cli, ["--home", str(self.home), "--json", *args], env=self.env,
                                    catch_exceptions=False)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    @property
    def state(self) -> Path:
        return self.home / "environments" / "dev"

    def env_bytes(self) -> bytes:
        return (self.state / "environment.json").read_bytes()

    def setup(self, revisions: int) -> list[str]:
        answers = self.tmp / "answers.json"
        answers.write_text(json.dumps({"listen_addr": self.listen, "warm_timeout_seconds": 20,
                                       "stop_grace_seconds": 2}))
        self.json("env", "init", "dev", "--deployer", PLUGIN, "--answers", str(answers))
        self.json("deployment", "add", "dev", "web")
        command = shlex.join([sys.executable, "-m", "greentic_local_process.sample_app"])
        rids = []
        for _ in range(revisions):
            rid = self.json("revision", "stage", "dev", "web", "--command", command, "--drain-seconds", "1",
                            "--env", f"RELIABILITY_MARKER={self.marker}")["revision_id"]
            assert self.json("revision", "warm", "dev", rid)["lifecycle"] == "ready"
            rids.append(rid)
        return rids

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, str | None]:
        status, headers, _ = http_request(f"http://{self.listen}{path}", timeout=timeout)
        return status, headers.get("X-Greentic-Revision")


@pytest.fixture
def lc(tmp_path: Path) -> Iterator[LocalCli]:
    harness = LocalCli(tmp_path)
    try:
        yield harness
    finally:
        cleanup(harness.state, 2.0)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _gone(pid), 5, f"pid {pid} to die")


def _gone(pid: int) -> bool:
    from greentic_local_process import procinfo

    procinfo.reap(pid)
    return procinfo.start_time(pid) is None


def test_a_dead_revision_is_observed_and_reconcile_restarts_it(lc: LocalCli) -> None:
    [rid] = lc.setup(1)
    lc.json("traffic", "set", "dev", "web", f"{rid}=10000")
    assert lc.get() == (200, rid)
    old_pid = processes.read_record(lc.state, rid).pid
    supervision.stop(lc.state)  # (the supervisor would restart it: test_supervision.py)
    _kill(old_pid)

    started = time.monotonic()
    status, _ = lc.get()
    assert status == 502 and time.monotonic() - started < 5  # a clean error at once, not a hang
    observed = lc.json("env", "observe", "dev")["revisions"][rid]
    assert (observed["present"], observed["serving"]) == (False, False)
    doctor_before = lc.env_bytes()

    lc.json("env", "reconcile", "dev")
    assert lc.env_bytes() == doctor_before  # reconcile repairs the provider, records nothing
    new_pid = processes.read_record(lc.state, rid).pid
    assert new_pid != old_pid
    observed = lc.json("env", "observe", "dev")["revisions"][rid]
    assert (observed["present"], observed["serving"]) == (True, True)
    assert [lc.get() for _ in range(50)] == [(200, rid)] * 50
    assert lc.json("env", "observe", "dev")["deployments"][lc.json("revision", "show", "dev", rid)["revision"][
        "deployment_id"]]["weights"] == {rid: 10000}


def test_a_killed_router_fails_requests_in_flight_cleanly_and_the_next_traffic_command_restarts_it(
        lc: LocalCli) -> None:
    a, b = lc.setup(2)
    lc.json("traffic", "set", "dev", "web", f"{a}=5000,{b}=5000")
    env_before = lc.env_bytes()
    state = router_control.running_router(lc.state)
    assert state is not None
    host, port = lc.listen.rsplit(":", 1)

    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()
    killed_at: list[float] = []

    def slow_request() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            conn.request("GET", "/slow?seconds=8")
            response = conn.getresponse()
            response.read()
            outcome = f"status {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
        finally:
            conn.close()
        with lock:
            outcomes.append((outcome, time.monotonic()))

    threads = [threading.Thread(target=slow_request) for _ in range(16)]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(int(r.get("in_flight", 0)) for r in (router_control.status(lc.state) or {}).get(
        "revisions", {}).values()) >= 16, 10, "16 requests in flight")
    killed_at.append(time.monotonic())
    supervision.stop(lc.state)  # (the supervisor would restart it: test_supervision.py)
    _kill(state["pid"])
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a request in flight hung after the router died"
    assert len(outcomes) == 16
    waited = max(t for _, t in outcomes) - killed_at[0]
    assert waited < 3, f"requests in flight took {waited:.1f}s to fail"
    kinds = {o for o, _ in outcomes}
    assert kinds <= {"RemoteDisconnected", "ConnectionResetError", "IncompleteRead", "BrokenPipeError",
                     "ConnectionAbortedError", "status 502"}, kinds
    started = time.monotonic()
    with pytest.raises(OSError):  # new requests: refused at once
        http_request(f"http://{lc.listen}/", timeout=5)
    assert time.monotonic() - started < 3

    # nothing stored was touched, and it is still a valid document
    assert lc.env_bytes() == env_before
    assert lc.json("env", "validate", "dev")["valid"] is True
    Store(lc.home / "environments").load("dev")

    lc.json("traffic", "set", "dev", "web", f"{a}=9000,{b}=1000")  # the next traffic command restarts it
    restarted = router_control.running_router(lc.state)
    assert restarted is not None and restarted["pid"] != state["pid"]
    served = [lc.get() for _ in range(100)]
    assert all(status == 200 for status, _ in served)
    assert {rev for _, rev in served} == {a, b}
    assert sum(rev == a for _, rev in served) == 90  # the router's split is exact over 100 picks
    dep = lc.json("revision", "show", "dev", a)["revision"]["deployment_id"]
    assert lc.json("env", "observe", "dev")["deployments"][dep]["weights"] == {a: 9000, b: 1000}
    print(f"\nrouter killed with 16 requests in flight: all failed cleanly within {waited:.2f}s ({sorted(kinds)})")


def test_the_router_refuses_too_many_headers_and_an_overlong_request_line(tmp_path: Path) -> None:
    with running_backends(["rev-a"]) as backends:
        table = make_table([deployment("dep", [("rev-a", 10000, backends[0].address)])])
        with RouterProcess.start(tmp_path / "router", table) as router:
            host, port = router.listen.rsplit(":", 1)

            def raw(request: bytes) -> bytes:
                with socket.create_connection((host, int(port)), timeout=10) as sock:
                    sock.sendall(request)
                    data = b""
                    while b"\r\n" not in data:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    return data.split(b"\r\n", 1)[0]

            many = b"".join(b"X-H%d: v\r\n" % i for i in range(300))
            assert raw(b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n").split()[1] in (b"400", b"431")
            assert raw(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n").split()[1] in (b"400", b"414")
            assert raw(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").split()[1] == b"200"  # and it still serves
            assert router.revision("rev-a")["in_flight"] == 0
