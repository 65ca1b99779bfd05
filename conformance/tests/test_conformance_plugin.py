"""The pytest plugin itself: inert without --deployer, waivers, reports, sandbox and answers modes."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from importlib import metadata

from greentic_conformance import __version__
from greentic_conformance.checks import BY_ID, CHECKS

from conformance_helpers import CALL_LOG_ENV, SUITE, not_passed, outcomes
from conformance_stubs import BAD, GOOD_PATH

WAIVER = "our sandbox answers health checks before the app is up"


def test_entry_points_are_declared():
    dist = metadata.distribution("greentic-conformance")
    eps = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert eps[("pytest11", "greentic_conformance")] == "greentic_conformance.plugin"
    assert eps[("greentic.commands", "conformance")] == "greentic_conformance.command:conformance"


def test_check_ids_are_stable_kebab_case_and_each_has_one_test():
    import re

    from greentic_conformance.suite import test_contract

    for spec in CHECKS:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", spec.id), spec.id
        assert spec.title and spec.rule
    implemented = [getattr(f, "__greentic_check__", None) for name, f in vars(test_contract).items()
                   if name.startswith("test_")]
    assert sorted(i for i in implemented if i) == sorted(BY_ID)


def test_inert_without_deployer(suite):
    """Autoloaded into an ordinary run it adds no fixture, item, summary or report."""
    suite.install()
    suite.pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result, _ = suite.run("-v", deployer=None, autoload=True)
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "greentic conformance:" not in out  # no summary
    assert "greentic-conformance 0.1.0: deployer" not in out  # no report header
    assert "greentic-conformance-0.1.0" in out  # but pytest did load it
    fixtures, _ = suite.run("--fixtures", deployer=None, autoload=True)
    listed = fixtures.stdout.str()
    for name in ("harness", "world", "conformance_session"):
        assert f"\n{name}" not in listed
    assert "--deployer=NAME" in suite.run("--help", deployer=None, autoload=True)[0].stdout.str()
    assert not list(suite.pytester.path.glob("*.json"))


def test_conformance_options_need_deployer(suite):
    suite.install()
    result, _ = suite.run("--conformance-strict", deployer=None)
    assert result.ret == 4
    assert "--conformance-strict needs --deployer NAME" in result.stderr.str()


def test_suite_without_deployer_skips_with_instructions(suite):
    suite.install()
    result, _ = suite.run(*SUITE, "-rs", deployer=None)
    result.assert_outcomes(skipped=len(CHECKS))
    assert "runs only with --deployer NAME" in result.stdout.str()


def test_unknown_deployer_is_a_usage_error(suite):
    suite.install()
    result, doc = suite.run(*SUITE, deployer="acme.deployer.nope")
    assert result.ret == 4
    assert "no deployer plugin named 'acme.deployer.nope'" in result.stderr.str()
    assert doc is None


def test_deployer_alone_collects_the_suite(suite):
    """`pytest --deployer NAME` with no paths runs the suite, not the project's own tests."""
    suite.install()
    suite.pytester.makepyfile(test_project="def test_project():\n    assert False\n")
    result, doc = suite.run()
    result.assert_outcomes(passed=len(CHECKS))
    assert doc["ok"] is True


def test_waiver_skips_with_reason_and_strict_fails_it(suite):
    suite.install(textwrap.dedent(BAD["warm-serves"]) + f"\nWAIVERS = {{'warm-serves': {WAIVER!r}}}\n")
    result, doc = suite.run(*SUITE, "-rs")
    result.assert_outcomes(passed=len(CHECKS) - 1, skipped=1)
    assert result.ret == 0
    row = next(r for r in doc["checks"] if r["id"] == "warm-serves")
    assert row["outcome"] == "skipped" and row["waiver"] == WAIVER
    assert WAIVER in row["message"] and GOOD_PATH in row["message"]
    assert doc["ok"] is True
    out = result.stdout.str()
    assert "SKIP  warm-serves" in out and WAIVER in out

    strict, doc = suite.run(*SUITE, "--conformance-strict")
    assert strict.ret == 1
    failing = not_passed(doc)
    assert set(failing) == {"warm-serves"}
    assert "--conformance-strict allows no waivers" in failing["warm-serves"] and WAIVER in failing["warm-serves"]
    assert doc["strict"] is True


def test_waiver_of_a_check_that_passes_is_still_a_failure_in_strict_mode(suite):
    suite.install("WAIVERS = {'happy-path': 'not sure yet'}\n")
    result, doc = suite.run(*SUITE, "--conformance-strict")
    assert set(not_passed(doc)) == {"happy-path"}


def test_report_terminal_summary_and_junit(suite):
    suite.install(BAD["split-enforced"])
    junit = suite.tmp_path / "junit.xml"
    result, doc = suite.run(*SUITE, f"--junitxml={junit}")
    # JSON report
    assert doc["schema"] == "greentic.conformance-report.v1"
    assert doc["suite"] == {"name": "greentic-conformance", "version": __version__}
    assert doc["deployer"]["name"] == GOOD_PATH
    assert doc["deployer"]["distribution"].startswith("acme-deployer-stub-")
    assert doc["deployer"]["distribution_version"] == "1.0.0"
    assert doc["core_version"]
    assert doc["target"] == "sandbox" and doc["environment_id"].startswith("conformance-")
    assert [row["id"] for row in doc["checks"]] == [spec.id for spec in CHECKS]
    assert doc["summary"] == {"passed": len(CHECKS) - 1, "failed": 1, "error": 0, "skipped": 0, "not-run": 0}
    row = next(r for r in doc["checks"] if r["id"] == "split-enforced")
    assert row["title"] == BY_ID["split-enforced"].title and row["rule"] == BY_ID["split-enforced"].rule
    assert "observed 3300 bps, recorded 3333 bps" in row["message"]
    # terminal: one row per check
    out = result.stdout.str()
    for spec in CHECKS:
        label = "FAIL" if spec.id == "split-enforced" else "PASS"
        assert f"{label:<5} {spec.id}" in out
    # JUnit XML: suite metadata and per-check properties
    tree = ET.parse(junit)
    props = {p.get("name"): p.get("value") for p in tree.iter("property")}
    assert props["greentic.deployer.name"] == GOOD_PATH
    assert props["greentic.deployer.distribution_version"] == "1.0.0"
    assert props["greentic.conformance.version"] == __version__
    assert props["greentic.core.version"] == doc["core_version"]
    cases = {c.get("name"): c for c in tree.iter("testcase")}
    case = cases["test_split_enforced"]
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["check_id"] == "split-enforced"
    assert case.find("failure") is not None


def test_deselected_checks_are_reported_not_run(suite):
    suite.install()
    result, doc = suite.run(*SUITE, "-k", "happy_path")
    result.assert_outcomes(passed=1)
    assert outcomes(doc)["happy-path"] == "passed"
    assert outcomes(doc)["warm-serves"] == "not-run"
    assert doc["ok"] is True


def test_no_sandbox_and_no_answers_errors_every_check_with_a_hint(suite):
    suite.install("del greentic_conformance_sandbox\n")
    result, doc = suite.run(*SUITE)
    assert result.ret == 1
    rows = outcomes(doc)
    assert rows["descriptor-well-formed"] == "passed"  # needs no target
    assert rows["runtime-config-matches-projection"] == "error"
    assert "has no greentic_conformance_sandbox hook" in not_passed(doc)["happy-path"]
    assert "--deployer-answers FILE" in not_passed(doc)["happy-path"]


def test_answers_mode_uses_unique_env_ids_and_archives_everything_even_on_failure(suite):
    """With --deployer-answers (real infrastructure) every revision the suite created is archived."""
    suite.install(BAD["warm-serves"])
    answers = suite.tmp_path / "answers.json"
    answers.write_text(json.dumps({"region": "eu-test-1"}))
    log = suite.tmp_path / "calls.jsonl"
    suite.monkeypatch.setenv(CALL_LOG_ENV, str(log))
    result, doc = suite.run(*SUITE, "--deployer-answers", str(answers))
    assert set(not_passed(doc)) == {"warm-serves"}
    assert doc["target"] == "answers-file"
    first = [json.loads(line) for line in log.read_text().splitlines()]
    _assert_all_archived(first)
    log.unlink()
    suite.run(*SUITE, "--deployer-answers", str(answers))
    second = [json.loads(line) for line in log.read_text().splitlines()]
    env_ids = {c["env_id"] for c in first}, {c["env_id"] for c in second}
    assert len(env_ids[0]) == 1 and len(env_ids[1]) == 1 and env_ids[0] != env_ids[1]


def _assert_all_archived(calls):
    last_start: dict[str, int] = {}
    last_archive: dict[str, int] = {}
    for index, call in enumerate(calls):
        rid = call.get("revision_id")
        if call["hook"] in ("stage", "warm"):
            last_start[rid] = index
        elif call["hook"] == "archive":
            last_archive[rid] = index
    assert last_start, "the stub logged nothing"
    leftovers = [rid for rid, started in last_start.items() if last_archive.get(rid, -1) < started]
    assert not leftovers, f"never archived after their last stage/warm: {leftovers}"


def test_bad_answers_file_errors_every_check(suite):
    suite.install()
    answers = suite.tmp_path / "answers.json"
    answers.write_text(json.dumps({"region": 12}))
    result, doc = suite.run(*SUITE, "--deployer-answers", str(answers))
    assert result.ret == 1
    assert "cannot bind acme.deployer.memory with answers file" in not_passed(doc)["happy-path"]
