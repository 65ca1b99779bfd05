"""``greentic-deployer router status|stop|unit ENV`` through the CLI, on a real environment."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from greentic_core.cli import cli
from greentic_local_process import router_control, supervision
from greentic_local_process.sandbox import cleanup
from router_helpers import http_request, wait_for
from test_reliability_local import LocalCli

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def lc(tmp_path: Path) -> Iterator[LocalCli]:
    harness = LocalCli(tmp_path)
    try:
        yield harness
    finally:
        cleanup(harness.state, 2.0)


def run(lc: LocalCli, *args: str) -> tuple[int, str]:
    result = lc.runner.invoke(cli, ["--home", str(lc.home), *args], env=lc.env)
    return result.exit_code, result.stdout + result.stderr


def test_router_status_stop_and_unit(lc: LocalCli) -> None:
    [rid] = lc.setup(1)
    lc.json("traffic", "set", "dev", "web", f"{rid}=10000")
    code, out = run(lc, "--json", "router", "status", "dev")
    status = json.loads(out)
    assert code == 0 and status["running"] is True and status["listen"] == lc.listen
    assert status["generation"] >= 1 and status["restarts"] == 0 and status["uptime_seconds"] >= 0
    assert status["supervisor_pid"] == supervision.running(lc.state)["pid"]
    code, out = run(lc, "router", "status", "dev")
    assert code == 0 and f"listening on {lc.listen}" in out

    code, out = run(lc, "--json", "router", "stop", "dev")
    assert code == 0 and json.loads(out)["stopped"] == "terminated"
    assert router_control.running_router(lc.state) is None
    time.sleep(0.3)  # (a supervisor would have restarted it within this: it must not)
    assert router_control.running_router(lc.state) is None
    assert json.loads(run(lc, "--json", "router", "status", "dev")[1])["running"] is False
    with pytest.raises(OSError):
        http_request(f"http://{lc.listen}/", timeout=2)
    lc.json("traffic", "set", "dev", "web", f"{rid}=10000")  # the next traffic command starts it again
    assert lc.get() == (200, rid)

    code, unit = run(lc, "router", "unit", "dev")
    assert code == 0
    assert f"-m greentic_local_process.supervisor --state-dir {lc.state}" in unit
    for line in ("Restart=always", "KillMode=process", "UMask=0077", "[Install]"):
        assert line in unit.splitlines()


def test_router_commands_name_a_missing_environment(lc: LocalCli) -> None:
    code, out = run(lc, "router", "status", "missing")
    assert code != 0 and "missing" in out and "Traceback" not in out


def test_the_supervisor_ends_when_its_state_directory_is_removed(tmp_path: Path) -> None:
    import shutil

    from test_provider import LP, wait_dead

    lp = LP(tmp_path)
    lp.warmed()
    assert supervision.running(lp.state) is not None
    lp.close()  # stops the processes (and this supervisor)
    assert supervision.running(lp.state) is None
    # a supervisor whose directory is deleted under it (a removed environment) exits by itself
    supervision.update(lp.state, lambda want: None, lambda _m: None)
    pid = supervision.running(lp.state)["pid"]
    shutil.rmtree(lp.state)
    wait_dead(pid, timeout=10)


def test_a_fixed_admin_port_survives_a_router_restart(tmp_path: Path) -> None:
    import os
    import signal

    from router_helpers import free_port
    from test_provider import LP

    port = free_port()
    lp = LP(tmp_path, router_admin_port=port)
    try:
        rid = lp.warmed()
        lp.traffic((rid, 10000))
        first = lp.router_state()
        assert first["admin"] == f"127.0.0.1:{port}"
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(lambda: (lp.router_state() or {}).get("pid") not in (None, first["pid"]), 10, "the restarted router")
        assert lp.router_state()["admin"] == f"127.0.0.1:{port}"  # a static scrape config keeps working
    finally:
        assert not lp.close()
