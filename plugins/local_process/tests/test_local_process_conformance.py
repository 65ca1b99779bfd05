"""local-process passes the greentic-conformance suite (real processes, sockets and router).

Runs exactly what a third party runs in CI, `greentic-deployer conformance NAME`, in a
subprocess, against the plugin's own sandbox (a temporary state directory and a free port).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("greentic_conformance")

NAME = "greentic.deployer.local-process"


def test_local_process_passes_conformance(tmp_path):
    report = tmp_path / "conformance.json"
    junit = tmp_path / "conformance.xml"
    env = dict(os.environ, GREENTIC_CACHE_DIR=str(tmp_path / "cache"))
    for var in ("GREENTIC_DEPLOYERS", "GREENTIC_DISABLE_DEPLOYERS"):
        env.pop(var, None)
    result = subprocess.run(
        [sys.executable, "-m", "greentic_core", "conformance", NAME, "--report", str(report), "--junitxml", str(junit)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert doc["ok"] is True and doc["deployer"]["name"] == NAME
    assert doc["summary"]["failed"] == 0 and doc["summary"]["error"] == 0
    outcomes = {row["id"]: row["outcome"] for row in doc["checks"]}
    # the only check that may skip: local-process keeps the core's runtime-config projection
    assert {k for k, v in outcomes.items() if v != "passed"} <= {"runtime-config-matches-projection"}
    assert doc["cleanup_problems"] == []
