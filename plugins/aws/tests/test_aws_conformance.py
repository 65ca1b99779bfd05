"""The greentic conformance suite against this deployer's own sandbox (moto on 127.0.0.1).

Runs ``greentic-deployer conformance greentic.deployer.aws-ecs`` in a subprocess (the way a
plugin author runs it in CI) and reads its JSON report. Skipped when greentic-conformance is
not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest


def test_the_conformance_suite_passes_against_the_sandbox(tmp_path) -> None:
    try:
        metadata.version("greentic-conformance")
    except metadata.PackageNotFoundError:
        pytest.skip("greentic-conformance is not installed (pip install -e conformance)")
    report = tmp_path / "conformance.json"
    run = subprocess.run(
        [sys.executable, "-m", "greentic_core", "conformance", "greentic.deployer.aws-ecs", "--report", str(report)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(report.read_text())
    failed = {c["id"]: c["message"] for c in doc["checks"] if c["outcome"] not in ("passed", "skipped")}
    assert failed == {}, run.stdout[-3000:]
    assert run.returncode == 0
    assert doc["summary"]["failed"] == 0 and doc["summary"]["passed"] >= 20
    assert doc["cleanup_problems"] == []
    # nothing is waived: the only skip is the optional runtime-config hook this deployer does not implement
    assert {c["id"] for c in doc["checks"] if c["outcome"] == "skipped"} <= {"runtime-config-matches-projection"}
