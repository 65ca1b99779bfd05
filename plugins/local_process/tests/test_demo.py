"""The README's first command: the demo runs real revisions behind the router with zero failures."""

import json
import os
import subprocess
import sys


def test_demo_shifts_traffic_and_drains_with_zero_failed_requests(tmp_path):
    env = {**os.environ, "GREENTIC_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "greentic_core", "--json", "demo"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["failures"] == 0
    assert summary["requests_sent"] > 100
    # both revisions really answered, and the final phase sent everything to v2
    assert summary["answered_by"]["v1"] > 0 and summary["answered_by"]["v2"] > 0
    final = summary["phases"][-1]
    assert final["target"] == {"v1": 0, "v2": 10000}
    assert final["observed_bps"]["v1"] == 0
    # the 90/10 phase is within a few percent of the target (a time window, not exact counts)
    first = summary["phases"][0]
    assert abs(first["observed_bps"]["v2"] - 1000) <= 300
    # it cleaned up after itself: no demo directory left behind
    assert not any(p.name.startswith("greentic-demo-") for p in tmp_path.iterdir())
