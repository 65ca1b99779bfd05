"""Running the shipped suite against an installed stub, in a pytest subprocess (pytester)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from conformance_factory import make_dist
from conformance_stubs import GOOD_PATH, good_source


TESTS_DIR = Path(__file__).resolve().parent
CALL_LOG_ENV = "GREENTIC_CONFORMANCE_TEST_CALL_LOG"


class SuiteRun:
    """Install a stub and run the suite against it in a pytest subprocess."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.tmp_path = tmp_path
        self._sites = 0
        self._runs = 0
        monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
        for var in ("GREENTIC_DEPLOYERS", "GREENTIC_DISABLE_DEPLOYERS", "GREENTIC_CONFORMANCE_CORE_PATCH"):
            monkeypatch.delenv(var, raising=False)

    def install(self, extra: str = "", *, path: str = GOOD_PATH, version: str = "1.0.0") -> Path:
        """A fresh site directory holding the stub distribution; it goes on PYTHONPATH."""
        self._sites += 1
        site = self.tmp_path / f"site-{self._sites}"
        module = f"acme_stub_{self._sites}"
        make_dist(site, f"acme-deployer-stub-{self._sites}", version, {f"{module}.py": good_source(path, version, extra)},
                  {path: module})
        pythonpath = [str(site), str(TESTS_DIR)]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        self.monkeypatch.setenv("PYTHONPATH", os.pathsep.join(pythonpath))
        return site

    def run(self, *args: str, deployer: str | None = GOOD_PATH, autoload: bool = False,
            report: bool = True, core_patch: str | None = None) -> tuple[pytest.RunResult, dict[str, Any] | None]:
        """Run the suite; return pytest's result and the parsed JSON report."""
        argv: list[str] = ["-p", "no:cacheprovider"]
        if autoload:
            self.monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        else:  # faster and hermetic: only the conformance plugin
            self.monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
            argv += ["-p", "greentic_conformance.plugin"]
        if core_patch:
            self.monkeypatch.setenv("GREENTIC_CONFORMANCE_CORE_PATCH", core_patch)
            argv += ["-p", "conformance_core_patch"]
        self._runs += 1
        report_path = self.tmp_path / f"report-{self._runs}.json"
        if deployer is not None:
            argv += ["--deployer", deployer]
            if report:
                argv += ["--conformance-report", str(report_path)]
        result = self.pytester.runpytest_subprocess(*argv, *args, timeout=180)
        doc = json.loads(report_path.read_text()) if report_path.exists() else None
        return result, doc


def outcomes(doc: dict[str, Any]) -> dict[str, str]:
    return {row["id"]: row["outcome"] for row in doc["checks"]}


def not_passed(doc: dict[str, Any]) -> dict[str, str]:
    return {row["id"]: row["message"] for row in doc["checks"] if row["outcome"] != "passed"}


SUITE = ("--pyargs", "greentic_conformance.suite")
