"""`greentic-deployer conformance NAME`: a subprocess of pytest on the suite, from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

from greentic_conformance.checks import CHECKS
from greentic_conformance.command import pytest_command

from conformance_factory import make_dist
from conformance_stubs import BAD, GOOD_PATH, good_source


def _cli(tmp_path, *args, extra: str = "", cwd=None):
    site = tmp_path / "site"
    if not site.exists():
        make_dist(site, "acme-deployer-cli-stub", "1.0.0", {"acme_cli_stub.py": good_source(extra=extra)},
                  {GOOD_PATH: "acme_cli_stub"})
    env = dict(os.environ, PYTHONPATH=str(site), GREENTIC_CACHE_DIR=str(tmp_path / "cache"))
    for var in ("GREENTIC_DEPLOYERS", "GREENTIC_DISABLE_DEPLOYERS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "greentic_core", "conformance", *args], cwd=cwd or tmp_path,
                          env=env, capture_output=True, text=True, timeout=180)


def _hostile_project(directory):
    """A project whose own pytest configuration would break any run that picked it up."""
    directory.mkdir()
    (directory / "pytest.ini").write_text("[pytest]\naddopts = --this-option-does-not-exist\n")
    (directory / "conftest.py").write_text("raise RuntimeError('the project conftest must not be loaded')\n")
    return directory


def test_passes_from_any_directory_and_writes_both_reports(tmp_path):
    project = _hostile_project(tmp_path / "project")
    result = _cli(tmp_path, GOOD_PATH, "--report", "out/report.json", "--junitxml", "out/junit.xml", cwd=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(CHECKS)} passed" in result.stdout
    doc = json.loads((project / "out" / "report.json").read_text())  # relative to the caller's directory
    assert doc["ok"] is True and doc["deployer"]["name"] == GOOD_PATH
    tree = ET.parse(project / "out" / "junit.xml")
    assert len(list(tree.iter("testcase"))) == len(CHECKS)
    assert not (project / ".pytest_cache").exists()


def test_failing_check_exits_1_and_strict_is_passed_on(tmp_path):
    extra = textwrap.dedent(BAD["drain-stops-serving"]) + "\nWAIVERS = {'archive-removes': 'kept for audits'}\n"
    result = _cli(tmp_path, GOOD_PATH, "--report", "r.json", "--strict", extra=extra)
    assert result.returncode == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    failing = {r["id"] for r in doc["checks"] if r["outcome"] == "failed"}
    assert failing == {"drain-stops-serving", "archive-removes"}
    assert "FAIL  drain-stops-serving" in result.stdout


def test_unknown_deployer_exits_4(tmp_path):
    result = _cli(tmp_path, "acme.deployer.nope")
    assert result.returncode == 4
    assert "no deployer plugin named 'acme.deployer.nope'" in result.stderr


def test_help_and_pytest_args(tmp_path):
    result = _cli(tmp_path, "--help")
    assert result.returncode == 0
    for option in ("--answers", "--junitxml", "--report", "--strict"):
        assert option in result.stdout
    only = _cli(tmp_path, GOOD_PATH, "--", "-k", "happy_path")
    assert only.returncode == 0 and "1 passed" in only.stdout


def test_pytest_command_shape(tmp_path):
    cmd = pytest_command("acme.deployer.x", answers=tmp_path / "a.json", report=tmp_path / "r.json", strict=True)
    assert cmd[:3] == [sys.executable, "-m", "pytest"]
    assert ["--deployer", "acme.deployer.x"] == cmd[cmd.index("--deployer"):cmd.index("--deployer") + 2]
    assert "--conformance-strict" in cmd and str(tmp_path / "a.json") in cmd
    assert ["--pyargs", "greentic_conformance.suite"] == cmd[cmd.index("--pyargs"):cmd.index("--pyargs") + 2]
