"""The local-process provider end to end: real revision processes, the real router, real sockets.

Every test drives the provider through ``greentic_core.operator.Operator`` (as the CLI does)
against a temporary store, a temporary state directory and a free loopback port. Each revision
process carries a unique marker in its environment, so a test can prove that nothing it
started is left running (``/proc/<pid>/environ``), and teardown kills any straggler.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from greentic_core import CheckStatus, ProviderError, ProviderTimeout, Workload
from greentic_core.lifecycle import Lifecycle
from greentic_core.operator import Operator
from greentic_core.registry import Registry
from greentic_core.store import Store
from greentic_local_process import procinfo, processes, router_control, supervision
from greentic_local_process.sandbox import cleanup

from router_helpers import http_request, wait_for

PLUGIN = "greentic.deployer.local-process"
ENV_ID = "lp"
MARKER_VAR = "GREENTIC_TEST_MARKER"
pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- harness


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pids_with_marker(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``MARKER_VAR=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and procinfo.start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    procinfo.reap(pid)
    return procinfo.start_time(pid) is not None


def wait_dead(pid: int, timeout: float = 5.0) -> None:
    wait_for(lambda: not alive(pid), timeout, f"pid {pid} to exit")


class LP:
    """One environment of the local-process provider in a temporary directory."""

    def __init__(self, tmp_path: Path, **answers: Any) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.marker = uuid.uuid4().hex
        self.store = Store(tmp_path / "store")
        self.registry = Registry(cache_dir=tmp_path / "cache")
        self.messages: list[str] = []
        self.on_progress: Callable[[str], None] | None = None
        self.op = self.operator()
        self.answers = {"listen_addr": self.listen, "state_dir": str(self.state), "warm_timeout_seconds": 5,
                        "stop_grace_seconds": 2, **answers}
        self.op.init_env(ENV_ID, PLUGIN, answers=self.answers, listen_addr=self.listen)
        self.dep = self.op.add_deployment(ENV_ID, "web").deployment_id

    def operator(self, progress: Callable[[str], None] | None = None) -> Operator:
        return Operator(self.store, self.registry, actor="test", command="test_provider",
                        progress=progress or self._progress)

    def _progress(self, message: str) -> None:
        self.messages.append(message)
        if self.on_progress is not None:
            self.on_progress(message)

    # -- revisions ---------------------------------------------------------------------------

    def stage(self, drain_seconds: int = 5, **env: str) -> str:
        workload = Workload(command=(sys.executable, "-m", "greentic_local_process.sample_app"),
                            env={MARKER_VAR: self.marker, **env}, health_path="/healthz")
        return self.op.stage(ENV_ID, self.dep, workload=workload, drain_seconds=drain_seconds).revision.revision_id

    def warmed(self, drain_seconds: int = 5, **env: str) -> str:
        rid = self.stage(drain_seconds, **env)
        assert self.op.warm(ENV_ID, rid).revision.lifecycle == Lifecycle.READY
        return rid

    def lifecycle(self, rid: str) -> Lifecycle:
        return self.store.load(ENV_ID).revision(rid).lifecycle

    def revision_dir(self, rid: str) -> Path:
        return processes.revision_dir(self.state, rid)

    def record(self, rid: str) -> processes.ProcessRecord | None:
        return processes.read_record(self.state, rid)

    def pid(self, rid: str) -> int:
        record = self.record(rid)
        assert record is not None, f"{rid} has no process.json"
        return record.pid

    def traffic(self, *weights: tuple[str, int], **kwargs: Any) -> Any:
        return self.op.traffic_set(ENV_ID, self.dep, list(weights), **kwargs)

    # -- the router --------------------------------------------------------------------------

    def router_state(self) -> dict[str, Any] | None:
        return router_control.running_router(self.state)

    def router_status(self) -> dict[str, Any]:
        status = router_control.status(self.state)
        assert status is not None, "no router is running"
        return status

    def get(self, path: str = "/", timeout: float = 10.0) -> tuple[int, str | None, bytes]:
        status, headers, body = http_request(f"http://{self.listen}{path}", timeout=timeout)
        return status, headers.get("X-Greentic-Revision"), body

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> list[int]:
        """Stop everything; return the marker processes that were still alive afterwards (killed)."""
        cleanup(self.state, 2.0)
        leftover = pids_with_marker(self.marker)
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftover


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[LP]:
    env = LP(tmp_path)
    try:
        yield env
    finally:
        leftover = env.close()
        assert not leftover, f"revision processes still running after cleanup: {leftover}"


# --------------------------------------------------------------------------- warm failures


def test_warm_of_an_app_that_never_becomes_healthy_times_out_and_leaves_nothing(lp: LP) -> None:
    rid = lp.stage(SAMPLE_UNHEALTHY="1")
    seen_pids: set[int] = set()

    def note_pid(_message: str) -> None:
        record = lp.record(rid)
        if record is not None:
            seen_pids.add(record.pid)

    lp.on_progress = note_pid
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        lp.op.warm(ENV_ID, rid, timeout=1.5)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "did not answer GET /healthz with 2xx within 1.5s" in message
    assert f"sample app {rid} listening on" in message  # the log tail is quoted
    assert caught.value.hint and "warm_timeout_seconds" in caught.value.hint
    assert any("waiting for GET /healthz" in m for m in lp.messages)
    # nothing left running: the process we saw is gone, and no process carries our marker
    assert len(seen_pids) == 1
    assert not alive(seen_pids.pop())
    assert pids_with_marker(lp.marker) == []
    assert lp.record(rid) is None
    # the recorded state did not move: the revision is still staged
    assert lp.lifecycle(rid) == Lifecycle.STAGED
    events = lp.store.audit_events(ENV_ID)
    assert events[-1]["verb"] == "revision.warm" and events[-1]["outcome"] == "error"


def test_warm_of_an_app_that_exits_at_start_quotes_its_stderr(lp: LP) -> None:
    rid = lp.stage(SAMPLE_EXIT_AT_START="1")
    with pytest.raises(ProviderError) as caught:
        lp.op.warm(ENV_ID, rid)
    assert not isinstance(caught.value, ProviderTimeout)
    message = str(caught.value)
    assert "sample app: refusing to start (SAMPLE_EXIT_AT_START=1)" in message
    assert "stderr.log" in message
    assert pids_with_marker(lp.marker) == []
    assert lp.lifecycle(rid) == Lifecycle.STAGED
    assert "refusing to start" in (lp.revision_dir(rid) / "stderr.log").read_text()


def test_ctrl_c_during_warm_leaves_nothing_running(lp: LP) -> None:
    rid = lp.stage(SAMPLE_UNHEALTHY="1")
    seen: list[int] = []

    def interrupt(message: str) -> None:
        if not message.startswith("waiting for GET"):
            return  # (the supervisor starting): interrupt while the revision's process waits for health
        record = lp.record(rid)
        assert record is not None and alive(record.pid)
        seen.append(record.pid)
        raise KeyboardInterrupt

    op = lp.operator(progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        op.warm(ENV_ID, rid, timeout=10)
    assert len(seen) == 1
    assert not alive(seen[0])
    assert pids_with_marker(lp.marker) == []
    assert lp.record(rid) is None
    assert lp.lifecycle(rid) == Lifecycle.STAGED
    assert lp.store.audit_events(ENV_ID)[-1]["outcome"] == "interrupted"


def test_warm_is_idempotent(lp: LP) -> None:
    rid = lp.stage()
    first = lp.op.warm(ENV_ID, rid)
    pid = lp.pid(rid)
    assert first.outcome["pid"] == pid and first.outcome["already_running"] is False
    second = lp.op.warm(ENV_ID, rid)
    assert second.outcome["already_running"] is True
    assert second.outcome["pid"] == pid == lp.pid(rid)
    assert pids_with_marker(lp.marker) == [pid]
    assert lp.lifecycle(rid) == Lifecycle.READY


# --------------------------------------------------------------------------- observation


def test_an_unsupervised_revision_killed_behind_our_back_is_observed_not_present(lp: LP) -> None:
    rid = lp.warmed()
    observed = lp.op.observe(ENV_ID).revision(rid)
    assert observed.present and observed.serving and observed.ready_replicas == 1
    supervision.stop(lp.state)  # (with its supervisor it comes back: test_supervision.py)
    pid = lp.pid(rid)
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    observed = lp.op.observe(ENV_ID).revision(rid)
    assert observed.present is False and observed.serving is False
    assert observed.detail == "no process"
    # the provider does not pretend it can route to it either
    with pytest.raises(ProviderError, match="process is not running"):
        lp.traffic((rid, 10000))


def test_observe_reports_the_weights_the_router_enforces(lp: LP) -> None:
    v1, v2 = lp.warmed(), lp.warmed()
    assert lp.op.observe(ENV_ID).deployments == {}  # no router yet: nothing enforced
    change = lp.traffic((v1, 9000), (v2, 1000))
    observed = lp.op.observe(ENV_ID).deployments[lp.dep]
    assert dict(observed.weights) == {v1: 9000, v2: 1000}
    assert observed.generation == change.split.generation
    assert lp.listen in observed.detail
    router = lp.router_status()["deployments"][lp.dep]
    assert {k: int(v) for k, v in router["weights"].items()} == {v1: 9000, v2: 1000}
    # a split recorded but not applied is not what the router enforces: observe tells the truth
    lp.traffic((v1, 5000), (v2, 5000), record_only=True)
    assert dict(lp.op.observe(ENV_ID).deployments[lp.dep].weights) == {v1: 9000, v2: 1000}
    applied = lp.traffic((v1, 5000), (v2, 5000))
    observed = lp.op.observe(ENV_ID).deployments[lp.dep]
    assert dict(observed.weights) == {v1: 5000, v2: 5000}
    assert observed.generation == applied.split.generation


# --------------------------------------------------------------------------- the router


def test_router_is_started_on_first_need_and_restarted_after_it_dies(lp: LP) -> None:
    rid = lp.warmed()
    assert lp.router_state() is None  # warm alone does not start it
    assert not (lp.state / "router" / "router.json").exists()
    lp.traffic((rid, 10000))
    state = lp.router_state()
    assert state is not None and state["listen"] == lp.listen
    status, served_by, body = lp.get("/")
    assert (status, served_by, json.loads(body)["revision"]) == (200, rid, rid)

    router_pid = state["pid"]
    supervision.stop(lp.state)  # no supervisor to restart it (that case: test_supervision.py)
    os.kill(router_pid, signal.SIGKILL)
    wait_dead(router_pid)
    assert lp.router_state() is None
    with pytest.raises(OSError):
        http_request(f"http://{lp.listen}/", timeout=2)

    lp.traffic((rid, 10000))  # the next command brings it back
    state = lp.router_state()
    assert state is not None and state["pid"] != router_pid
    status, served_by, _ = lp.get("/")
    assert (status, served_by) == (200, rid)
    assert lp.router_status()["deployments"][lp.dep]["weights"] == {rid: 10000}


def test_split_change_under_concurrent_load_drops_no_request(lp: LP) -> None:
    v1, v2 = lp.warmed(), lp.warmed()
    lp.traffic((v1, 10000))
    load = Load(lp.listen, concurrency=300)
    load.start()
    try:
        wait_for(lambda: load.completed >= 300, 20, "the load to get going", interval=0.05)
        moved_at = 0.0
        for weights in (((v1, 9000), (v2, 1000)), ((v1, 5000), (v2, 5000)), ((v1, 0), (v2, 10000))):
            lp.traffic(*weights)
            moved_at = time.monotonic()
            time.sleep(1.0)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    assert load.max_in_flight >= 250, load.max_in_flight
    assert load.completed >= 1000
    kinds = Counter(path for path, _, _ in load.results)
    assert kinds["/"] > 0 and kinds["/slow?seconds=0.3"] > 0
    by_revision = Counter(rev for _, rev, _ in load.results)
    assert by_revision[v1] > 0 and by_revision[v2] > 0
    # every request that started after the last change completed went to v2 only
    late = [rev for _, rev, started in load.results if started > moved_at]
    assert late and set(late) == {v2}
    counters = lp.router_status()["revisions"]
    assert counters[v1]["errors"] == 0 and counters[v2]["errors"] == 0


def test_drain_waits_for_a_slow_request_then_stops_the_process(lp: LP) -> None:
    v1, v2 = lp.warmed(drain_seconds=5), lp.warmed()
    v1_pid = lp.pid(v1)
    lp.traffic((v1, 10000))

    slow: dict[str, Any] = {}

    def slow_request() -> None:
        slow["result"] = lp.get("/slow?seconds=1.5")
        slow["finished"] = time.monotonic()

    slow_thread = threading.Thread(target=slow_request)
    slow_thread.start()
    wait_for(lambda: lp.router_status()["revisions"].get(v1, {}).get("in_flight") == 1, 5, "the slow request")
    lp.traffic((v1, 0), (v2, 10000))

    draining = threading.Event()
    lp.on_progress = lambda m: draining.set() if "in flight" in m else None
    drained: dict[str, Any] = {}

    def drain() -> None:
        try:
            drained["result"] = lp.op.drain(ENV_ID, v1)
        except BaseException as exc:  # reported below
            drained["error"] = exc
        drained["finished"] = time.monotonic()

    drain_thread = threading.Thread(target=drain)
    drain_thread.start()
    try:
        assert draining.wait(5), "drain never reported waiting for the in-flight request"
        # a request started after the drain began is answered by the other revision
        status, served_by, body = lp.get("/")
        assert (status, served_by, json.loads(body)["revision"]) == (200, v2, v2)
        assert alive(v1_pid)  # still draining: v1 is not stopped under the slow request
    finally:
        slow_thread.join(10)
        drain_thread.join(15)
    assert "error" not in drained, drained.get("error")
    status, served_by, body = slow["result"]
    assert (status, served_by, json.loads(body)["revision"]) == (200, v1, v1)
    assert drained["finished"] >= slow["finished"] - 0.05
    outcome = drained["result"].outcome
    assert outcome["in_flight_at_stop"] == 0 and outcome["stopped"] in ("terminated", "killed")
    assert 0.5 <= outcome["waited_seconds"] < 5
    assert drained["result"].revision.lifecycle == Lifecycle.INACTIVE
    assert not alive(v1_pid)
    assert lp.op.observe(ENV_ID).revision(v1).present is False
    assert lp.get("/")[:2] == (200, v2)


def test_drain_gives_up_waiting_after_drain_seconds(lp: LP) -> None:
    v1, v2 = lp.warmed(drain_seconds=1), lp.warmed()
    lp.traffic((v1, 10000))
    slow: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            slow["result"] = lp.get("/slow?seconds=3")
        except OSError as exc:
            slow["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: lp.router_status()["revisions"].get(v1, {}).get("in_flight") == 1, 5, "the slow request")
    lp.traffic((v1, 0), (v2, 10000))
    started = time.monotonic()
    result = lp.op.drain(ENV_ID, v1)
    assert 0.9 <= time.monotonic() - started < 5
    assert result.outcome["in_flight_at_stop"] == 1
    thread.join(10)
    assert not thread.is_alive()
    # the request cut off by the stop is not left hanging: the router answers it, with a 502 or
    # (a GET without a body, retried once after the disconnect) from the other revision
    assert "result" in slow, slow
    status, served_by, _ = slow["result"]
    assert status == 502 or (status, served_by) == (200, v2)
    assert alive(lp.pid(v2))


# --------------------------------------------------------------------------- ownership and archive


def test_pid_reuse_never_signals_a_foreign_process(lp: LP) -> None:
    rid = lp.warmed()
    supervision.stop(lp.state)  # the record is tampered with below: no supervisor rewriting it
    real = lp.pid(rid)
    os.kill(real, signal.SIGKILL)
    wait_dead(real)
    foreign = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # process.json now names a live process that is not ours (as if the pid were recycled)
        record = json.loads((lp.revision_dir(rid) / "process.json").read_text())
        record.update(pid=foreign.pid, start_time=str(int(procinfo.start_time(foreign.pid) or "0") + 1))
        (lp.revision_dir(rid) / "process.json").write_text(json.dumps(record))
        assert lp.op.observe(ENV_ID).revision(rid).present is False
        drained = lp.op.drain(ENV_ID, rid)
        assert drained.outcome["stopped"] == "not-running"
        assert foreign.poll() is None
        # the same again through archive, with the record written back
        (lp.revision_dir(rid) / "process.json").write_text(json.dumps(record))
        archived = lp.op.archive(ENV_ID, rid)
        assert archived.outcome["stopped"] == "not-running"
        time.sleep(0.2)
        assert foreign.poll() is None and alive(foreign.pid)
        # its process group was not signalled either (the foreign process leads its own group)
        assert procinfo.start_time(foreign.pid) is not None
    finally:
        foreign.kill()
        foreign.wait()


def test_archive_twice_succeeds_and_keeps_logs(lp: LP) -> None:
    rid = lp.warmed()
    pid = lp.pid(rid)
    first = lp.op.archive(ENV_ID, rid)
    assert first.revision.lifecycle == Lifecycle.ARCHIVED
    assert first.outcome["stopped"] in ("terminated", "killed")
    assert not alive(pid)
    directory = lp.revision_dir(rid)
    assert not (directory / "process.json").exists()
    assert (directory / "stdout.log").exists()  # keep_logs defaults to true
    second = lp.op.archive(ENV_ID, rid)
    assert second.revision.lifecycle == Lifecycle.ARCHIVED
    assert second.outcome["stopped"] == "not-running"
    assert pids_with_marker(lp.marker) == []


def test_logs_are_written_to_the_revision_dir_and_rotated_on_start(tmp_path: Path) -> None:
    env = LP(tmp_path, log_max_bytes=1024)
    try:
        rid = env.warmed()
        directory = env.revision_dir(rid)
        first_port = env.record(rid).port  # type: ignore[union-attr]
        stdout = directory / "stdout.log"
        assert f"sample app {rid} listening on 127.0.0.1:{first_port}" in stdout.read_text()
        assert (directory / "stderr.log").exists()
        with stdout.open("a") as handle:  # as if the app had logged a lot
            handle.write("filler line\n" * 200)
        assert stdout.stat().st_size > 1024
        pid = env.pid(rid)
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        env.op.warm(ENV_ID, rid)  # the next start rotates the oversized log
        second_port = env.record(rid).port  # type: ignore[union-attr]
        rotated = directory / "stdout.log.1"
        assert rotated.exists() and "filler line" in rotated.read_text()
        assert f"listening on 127.0.0.1:{first_port}" in rotated.read_text()
        current = stdout.read_text()
        assert "filler line" not in current
        assert f"sample app {rid} listening on 127.0.0.1:{second_port}" in current
        assert not (directory / "stderr.log.1").exists()  # small logs are left alone
    finally:
        assert env.close() == []


# --------------------------------------------------------------------------- preflight


def test_preflight_reports_the_listen_address_taken(lp: LP) -> None:
    def listen_check() -> Any:
        checks = {c.name: c for c in lp.op.doctor(ENV_ID)}
        return checks["preflight:listen-address"]

    check = listen_check()
    assert check.status == CheckStatus.PASS and f"{lp.listen} is free" in check.message
    holder = socket.socket()
    holder.bind(("127.0.0.1", lp.port))
    holder.listen(1)
    try:
        check = listen_check()
        assert check.status == CheckStatus.FAIL
        assert lp.listen in check.message and "cannot be bound" in check.message
        rid = lp.warmed()
        with pytest.raises(ProviderError) as caught:  # the router cannot start there either
            lp.traffic((rid, 10000))
        assert "router exited at start" in str(caught.value) and "cannot listen" in str(caught.value)
    finally:
        holder.close()
    lp.traffic((rid, 10000))
    check = listen_check()
    assert check.status == CheckStatus.PASS and "served by this environment's router" in check.message


# --------------------------------------------------------------------------- load generator


class Load:
    """``concurrency`` aiohttp clients in one thread, each sending requests back to back.

    Half the clients ask for ``/slow?seconds=0.3``, half for ``/``. Every answer other than
    200 with an ``X-Greentic-Revision`` header, and every exception, is a failure.
    """

    PATHS = ("/slow?seconds=0.3", "/")

    def __init__(self, listen: str, concurrency: int) -> None:
        self.base = f"http://{listen}"
        self.concurrency = concurrency
        self.results: list[tuple[str, str, float]] = []  # (path, revision, monotonic start)
        self.failures: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def completed(self) -> int:
        return len(self.results)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load generator did not stop"

    async def _main(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
            await asyncio.gather(*(self._client(session, self.PATHS[i % 2]) for i in range(self.concurrency)))

    async def _client(self, session: Any, path: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                async with session.get(self.base + path) as response:
                    await response.read()
                    revision = response.headers.get("X-Greentic-Revision")
                    if response.status != 200 or not revision:
                        self.failures.append(f"{path}: HTTP {response.status} from {revision}")
                    else:
                        self.results.append((path, revision, started))
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
            finally:
                self.in_flight -= 1
