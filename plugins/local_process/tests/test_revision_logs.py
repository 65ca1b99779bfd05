"""``greentic-deployer revision logs``: a revision's stdout/stderr, its tail, a follow across a rotation.

The logs are the real files of real processes; the supervisor rotates them by size while the
process runs (copy-and-truncate), and a follow goes on across that rotation.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from greentic_core import ProviderError, Workload
from greentic_core.cli import cli
from test_provider import ENV_ID, LP

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def chatty(tmp_path: Path) -> Iterator[tuple[LP, str]]:
    lp = LP(tmp_path, log_max_bytes=4096)
    try:
        workload = Workload(command=(sys.executable, str(HERE / "chatty_app.py")),
                            env={"GREENTIC_TEST_MARKER": lp.marker}, health_path="/healthz")
        rid = lp.op.stage(ENV_ID, lp.dep, workload=workload).revision.revision_id
        lp.op.warm(ENV_ID, rid)
        yield lp, rid
    finally:
        assert not lp.close()


def numbers(lines: list[str], prefix: str) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(prefix + " ")]


def test_tail_stderr_and_a_missing_replica(chatty: tuple[LP, str]) -> None:
    lp, rid = chatty
    last = list(lp.op.logs(ENV_ID, rid[:12], lines=5))
    assert len(last) == 5 and all(line.startswith("line ") for line in last)
    seen = numbers(last, "line")
    assert seen == list(range(seen[0], seen[0] + 5))  # the last five, in order
    errors = list(lp.op.logs(ENV_ID, rid, stream="stderr", lines=3))
    assert len(errors) == 3 and all(line.startswith("err ") for line in errors)
    with pytest.raises(ProviderError, match=r"has no stdout-2.log here") as caught:
        list(lp.op.logs(ENV_ID, rid, replica=2))
    assert "stdout.log" in (caught.value.hint or "")


def test_follow_goes_on_across_a_rotation(chatty: tuple[LP, str]) -> None:
    lp, rid = chatty
    seen: list[str] = []
    stop = threading.Event()

    def follow() -> None:
        for line in lp.op.logs(ENV_ID, rid, lines=0, follow=True):
            seen.append(line)
            if stop.is_set():
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    rotated = lp.revision_dir(rid) / "stdout.log.1"
    deadline = time.monotonic() + 20
    while not (rotated.exists() and rotated.stat().st_mtime_ns and len(seen) > 300):
        assert time.monotonic() < deadline, "no rotation seen"
        time.sleep(0.05)
    first_rotation = rotated.stat().st_mtime
    count_at_rotation = len(seen)
    while len(seen) < count_at_rotation + 300:  # lines written after the rotation keep coming
        assert time.monotonic() < deadline, f"the follow stopped at the rotation ({len(seen)} lines)"
        time.sleep(0.05)
    stop.set()
    got = numbers(seen, "line")
    assert got == sorted(got), "lines out of order"
    assert rotated.stat().st_mtime >= first_rotation and (lp.revision_dir(rid) / "stdout.log").stat().st_size < 4096 * 4


def test_revision_logs_command(tmp_path: Path) -> None:
    from greentic_local_process.sandbox import cleanup
    from test_reliability_local import LocalCli

    lc = LocalCli(tmp_path)
    try:
        [rid] = lc.setup(1)
        doc = lc.json("revision", "logs", "dev", rid[:10])
        assert doc["lines"] == [f"sample app {rid} listening on {doc['lines'][0].rsplit(' ', 1)[1]}"]
        assert lc.json("revision", "logs", "dev", "latest", "--stderr")["lines"] == []
        result = lc.runner.invoke(cli, ["--home", str(lc.home), "revision", "logs", "dev", rid, "-n", "1"],
                                  env=lc.env)
        assert result.exit_code == 0 and result.stdout.startswith(f"sample app {rid} listening on 127.0.0.1:")
        result = lc.runner.invoke(cli, ["--home", str(lc.home), "revision", "logs", "dev", rid, "--replica", "3"],
                                  env=lc.env)
        assert result.exit_code == 1 and "has no stdout-3.log here" in result.stderr
    finally:
        cleanup(lc.state, 2.0)
