"""The greentic conformance suite against this provider's own sandbox (the kmock emulator)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("greentic_conformance", reason="greentic-conformance is not installed "
                                                   "(pip install -e conformance)")


def test_the_conformance_suite_passes_against_the_sandbox(tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "greentic_core", "conformance", "greentic.deployer.k8s", "--report", str(report),
         "--", "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    document = json.loads(report.read_text())
    assert document["ok"] and document["target"] == "sandbox"
    failed = [c["id"] for c in document["checks"] if c["outcome"] not in ("passed", "skipped")]
    assert failed == []
    assert document["cleanup_problems"] == []
    skipped = {c["id"]: c["message"] for c in document["checks"] if c["outcome"] == "skipped"}
    # The only check that may skip: this provider serves the core's runtime-config projection.
    assert set(skipped) <= {"runtime-config-matches-projection"}, skipped
