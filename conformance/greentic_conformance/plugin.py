"""The pytest plugin (entry point ``pytest11``): inert unless ``--deployer NAME`` is given.

Without ``--deployer`` this module only adds its command-line options: it defines no fixture,
changes no collection and writes no report, so installing greentic-conformance does not change
any other test run. With ``--deployer NAME`` it registers a :class:`ConformanceSession` plugin
that

* collects the suite (``greentic_conformance/suite``) when no test paths are given on the
  command line (``pytest --deployer NAME --pyargs greentic_conformance.suite`` names it
  explicitly and is the documented form);
* applies the deployer's waivers (skip with the written reason; ``--conformance-strict``
  turns each into a failure);
* prints one row per check at the end, writes ``--conformance-report PATH`` (JSON) and adds
  the deployer, its distribution and the core version to JUnit XML (``--junitxml``) as
  test-suite properties and each check's id and title as test-case properties.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from . import __version__
from .checks import BY_ID, CHECKS, check_id_of

SESSION_PLUGIN = "greentic-conformance-session"
SUITE_DIR = Path(__file__).resolve().parent / "suite"
REPORT_SCHEMA = "greentic.conformance-report.v1"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("greentic-conformance", "Greentic deployer conformance")
    group.addoption("--deployer", metavar="NAME", default=None,
                    help="run the Greentic deployer conformance suite against the installed deployer NAME "
                         "(its entry-point name, e.g. greentic.deployer.local-process)")
    group.addoption("--deployer-answers", metavar="FILE", default=None,
                    help="JSON answers for real infrastructure instead of the deployer's own sandbox")
    group.addoption("--conformance-report", metavar="PATH", default=None,
                    help="write the conformance result as JSON to PATH")
    group.addoption("--conformance-strict", action="store_true", default=False,
                    help="treat every waiver in the deployer's descriptor as a failure")
    group.addoption("--deployer-call-timeout", metavar="S", type=float, default=None,
                    help="seconds a provider call other than drain may take before its check fails "
                         "(default 300, or $GREENTIC_CONFORMANCE_CALL_TIMEOUT); drain: its drain_seconds "
                         "+ the descriptor's drain_slack_seconds + 10")


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("deployer", None)
    if not name:
        for option in ("--deployer-answers", "--conformance-report", "--conformance-strict", "--deployer-call-timeout"):
            if config.getoption(option.lstrip("-").replace("-", "_"), None):
                raise pytest.UsageError(f"{option} needs --deployer NAME")
        return
    session = ConformanceSession(config, name)
    config.pluginmanager.register(session, SESSION_PLUGIN)


def get_session(config: pytest.Config) -> "ConformanceSession | None":
    return config.pluginmanager.get_plugin(SESSION_PLUGIN)


# --------------------------------------------------------------------------- the active session


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, lineno, reason)
        text = str(longrepr[2])
    elif hasattr(longrepr, "reprcrash") and getattr(longrepr, "reprcrash", None) is not None:
        text = longrepr.reprcrash.message  # type: ignore[union-attr]
    else:
        text = str(longrepr)
    text = text.strip()
    for prefix in ("Skipped: ", "Failed: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


class ConformanceSession:
    """Registered only with ``--deployer``: waivers, per-check results, the report."""

    def __init__(self, config: pytest.Config, name: str) -> None:
        from greentic_core import __version__ as core_version
        from greentic_core.errors import GreenticError

        from .harness import make_registry

        self.config = config
        self.name = name
        self.strict = bool(config.getoption("conformance_strict"))
        from .bounds import call_timeout_from

        timeout = config.getoption("deployer_call_timeout")
        if timeout is not None and not timeout > 0:
            raise pytest.UsageError(f"--deployer-call-timeout {timeout:g}: must be more than 0 seconds")
        self.call_timeout = call_timeout_from(timeout)
        answers = config.getoption("deployer_answers")
        self.answers_file = Path(answers).resolve() if answers else None
        report = config.getoption("conformance_report")
        self.report_path = Path(report).resolve() if report else None
        self.core_version = core_version
        self.started = time.monotonic()
        self.started_at = _now()
        self.registry = make_registry()
        try:
            self.record = self.registry.record(name)
        except GreenticError as exc:
            hint = f" ({exc.hint})" if getattr(exc, "hint", None) else ""
            raise pytest.UsageError(f"--deployer {name}: {exc}{hint}") from None
        self.harness: Any = None
        self.results: dict[str, dict[str, Any]] = {}
        self.collected: dict[str, str] = {}  # nodeid -> check id
        if self.answers_file is not None and not self.answers_file.is_file():
            raise pytest.UsageError(f"--deployer-answers {self.answers_file}: no such file")
        if config.args_source != pytest.Config.ArgsSource.ARGS:
            # `pytest --deployer NAME` alone runs the suite (not the project's own testpaths).
            config.args = [str(SUITE_DIR)]

    # -- metadata ------------------------------------------------------------------------

    @property
    def waivers(self) -> dict[str, str]:
        descriptor = self.record.descriptor
        return dict(descriptor.waivers) if descriptor is not None else {}

    def metadata(self) -> dict[str, str]:
        descriptor = self.record.descriptor
        return {
            "greentic.conformance.version": __version__,
            "greentic.core.version": self.core_version,
            "greentic.deployer.name": self.name,
            "greentic.deployer.distribution": self.record.distribution or "",
            "greentic.deployer.distribution_version": self.record.dist_version or "",
            "greentic.deployer.descriptor_version": descriptor.version if descriptor else "",
            "greentic.conformance.target": "answers-file" if self.answers_file else "sandbox",
            "greentic.conformance.strict": "true" if self.strict else "false",
        }

    # -- hooks ---------------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        record = self.record
        target = f"answers file {self.answers_file}" if self.answers_file else "the deployer's sandbox"
        return [
            f"greentic-conformance {__version__}: deployer {self.name} "
            f"({record.distribution} {record.dist_version}, {record.status}), greentic-core {self.core_version}",
            f"greentic-conformance: target {target}; waivers {len(self.waivers)}"
            + (" (strict: waivers fail)" if self.strict else ""),
        ]

    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        for item in items:
            check_id = check_id_of(item)
            if check_id is not None:
                self.collected[item.nodeid] = check_id
                spec = BY_ID[check_id]
                item.user_properties.append(("check_id", spec.id))
                item.user_properties.append(("check_title", spec.title))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        check_id = check_id_of(item)
        if check_id in self.waivers and not self.strict:
            pytest.skip(f"waived by {self.name}: {self.waivers[check_id]}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> None:
        check_id = check_id_of(pyfuncitem)
        if check_id in self.waivers and self.strict:
            pytest.fail(f"[{check_id}] waived by {self.name} ({self.waivers[check_id]}) but "
                        "--conformance-strict allows no waivers", pytrace=False)

    @pytest.hookimpl(wrapper=True, specname="pytest_pyfunc_call")
    def pytest_pyfunc_call_bounded(self, pyfuncitem: pytest.Function):
        """A provider call past its deadline that the check did not catch: fail it with the check's id
        and rule, as every other failure."""
        from .bounds import CallDidNotReturn

        try:
            return (yield)
        except CallDidNotReturn as exc:
            check_id = check_id_of(pyfuncitem)
            if check_id is None:
                raise
            raise pytest.fail.Exception(f"[{check_id}] {exc.msg} -- rule: {BY_ID[check_id].rule}",
                                        pytrace=False) from None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        check_id = self.collected.get(report.nodeid)
        if check_id is None:
            return
        entry = self.results.setdefault(check_id, {"outcome": "not-run", "message": "", "duration_seconds": 0.0,
                                                   "nodeid": report.nodeid})
        entry["duration_seconds"] = round(entry["duration_seconds"] + report.duration, 3)
        if report.when == "setup":
            if report.skipped:
                entry["outcome"], entry["message"] = "skipped", _message(report)
            elif report.failed:
                entry["outcome"], entry["message"] = "error", _message(report)
        elif report.when == "call":
            if report.passed:
                entry["outcome"], entry["message"] = "passed", ""
            elif report.skipped:
                entry["outcome"], entry["message"] = "skipped", _message(report)
            else:
                entry["outcome"], entry["message"] = "failed", _message(report)
        elif report.when == "teardown" and report.failed and entry["outcome"] in ("passed", "skipped", "not-run"):
            entry["outcome"], entry["message"] = "error", "teardown: " + _message(report)

    # -- the result ----------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for spec in CHECKS:
            result = self.results.get(spec.id, {"outcome": "not-run", "message": "not collected (deselected?)",
                                                "duration_seconds": 0.0, "nodeid": None})
            rows.append({
                "id": spec.id, "title": spec.title, "rule": spec.rule,
                "core_enforced": spec.core_enforced or None,
                "outcome": result["outcome"], "message": result["message"],
                "waiver": self.waivers.get(spec.id),
                "nodeid": result["nodeid"], "duration_seconds": result["duration_seconds"],
            })
        return rows

    def document(self, exitstatus: int | None = None) -> dict[str, Any]:
        record = self.record
        descriptor = record.descriptor
        rows = self.rows()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        harness = self.harness
        return {
            "schema": REPORT_SCHEMA,
            "suite": {"name": "greentic-conformance", "version": __version__},
            "deployer": {
                "name": self.name,
                "distribution": record.distribution,
                "distribution_version": record.dist_version,
                "descriptor_version": descriptor.version if descriptor else None,
                "status": record.status,
                "reason": record.reason,
                "waivers": self.waivers,
            },
            "core_version": self.core_version,
            "python": platform.python_version(),
            "target": "answers-file" if self.answers_file else "sandbox",
            "environment_id": harness.env_id if harness is not None else None,
            "strict": self.strict,
            "started_at": self.started_at,
            "duration_seconds": round(time.monotonic() - self.started, 3),
            "ok": counts.get("failed", 0) == 0 and counts.get("error", 0) == 0 and counts.get("passed", 0) > 0,
            "pytest_exit_status": int(exitstatus) if exitstatus is not None else None,
            "summary": {k: counts.get(k, 0) for k in ("passed", "failed", "error", "skipped", "not-run")},
            "checks": rows,
            "cleanup_problems": list(harness.cleanup_problems) if harness is not None else [],
        }

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.report_path is None:
            return
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.report_path.with_name(self.report_path.name + ".tmp")
        tmp.write_text(json.dumps(self.document(exitstatus), indent=2) + "\n")
        tmp.replace(self.report_path)

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        record = self.record
        tr = terminalreporter
        tr.write_sep("=", f"greentic conformance: {self.name} ({record.distribution} {record.dist_version})")
        width = max(len(spec.id) for spec in CHECKS)
        labels = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "not-run": "----"}
        colours = {"passed": {"green": True}, "failed": {"red": True}, "error": {"red": True},
                   "skipped": {"yellow": True}, "not-run": {}}
        for row in self.rows():
            text = f"{labels[row['outcome']]:<5} {row['id']:<{width}}  {row['title']}"
            if row["message"] and row["outcome"] != "passed":
                message = row["message"].splitlines()[0]
                text += f"\n{'':<6}{'':<{width}}  -> {message}"
            tr.write_line(text, **colours[row["outcome"]])
        doc = self.document(exitstatus)
        counts = ", ".join(f"{v} {k}" for k, v in doc["summary"].items() if v)
        tr.write_line(f"greentic-core {self.core_version}, greentic-conformance {__version__}: {counts}")
        for problem in doc["cleanup_problems"]:
            tr.write_line(f"cleanup: {problem}", yellow=True)
        if self.report_path is not None:
            tr.write_line(f"report written to {self.report_path}")
