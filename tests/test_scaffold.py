"""``greentic-deployer plugins new NAME`` writes a third-party deployer that works as generated.

The scaffold is generated into a temporary directory, installed for real (``pip install
--no-deps --target``, so its metadata and entry point come from its own pyproject.toml), and
then used the way its author will use it: ``plugins list`` in a subprocess shows it ``ok`` with
the scaffold reminder, ``plugins doctor`` passes with a warning, its own generated test file
runs the conformance suite in a subprocess and fails exactly the checks that need a stubbed
hook (every failure says "... is not implemented yet"), and the distribution builds and passes
``twine check``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import greentic_core
from greentic_core.cli import _COMMAND_HOME, cli
from greentic_core.scaffold import FILES, NOT_IMPLEMENTED, SCAFFOLD_NOTE, names_for

NAME = "acme.deployer.nomad"
DIST = "acme-deployer-nomad"
PACKAGE = "acme_deployer_nomad"
EXPECTED_FILES = {
    "pyproject.toml", "README.md", "CHANGELOG.md", ".gitignore", ".github/workflows/test.yml",
    f"{PACKAGE}/__init__.py", f"{PACKAGE}/hooks.py", f"{PACKAGE}/py.typed", "tests/test_conformance.py",
}
#: Checks a fresh scaffold passes: they need no verb and no observe (every other one must fail).
NEEDS_NO_STUB = {"descriptor-well-formed", "errors-are-deployer-errors"}


def _new(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["--json", "plugins", "new", *args], catch_exceptions=False)
    return result.exit_code, json.loads(result.output)


def _env(site: Path, cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_") and k != "PYTEST_ADDOPTS"}
    env.update(PYTHONPATH=str(site), GREENTIC_CACHE_DIR=str(cache), COLUMNS="250", **extra)
    return env


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("scaffold") / DIST
    code, doc = _new(NAME, "--directory", str(directory), "--author", "Jane Doe <jane@example.com>")
    assert code == 0, doc
    return directory


@pytest.fixture(scope="module")
def installed(scaffold: Path, tmp_path_factory) -> Path:
    """What ``pip install`` of the scaffold leaves (without dependencies: the core is here already)."""
    target = tmp_path_factory.mktemp("scaffold-site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
         "--target", str(target), str(scaffold)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


# --------------------------------------------------------------------------- generating


def test_the_plugins_group_loads_the_scaffold_and_install_commands() -> None:
    assert {"scaffold_commands", "install_commands"} <= set(_COMMAND_HOME["plugins"])
    result = subprocess.run([sys.executable, "-m", "greentic_core", "plugins", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("list", "show", "new", "install", "doctor"):
        assert f"  {command} " in result.stdout, result.stdout


def test_new_writes_a_complete_distribution(scaffold: Path) -> None:
    written = {str(p.relative_to(scaffold)) for p in scaffold.rglob("*") if p.is_file()}
    assert written == EXPECTED_FILES == {out.replace("<<package>>", PACKAGE) for out in FILES}
    for path in scaffold.rglob("*"):
        if path.is_file():
            assert "<<" not in path.read_text(), f"unrendered placeholder in {path}"

    project = tomllib.loads((scaffold / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["entry-points"]["greentic.deployers"] == {NAME: f"{PACKAGE}.hooks"}
    major, minor = greentic_core.__version__.split(".")[:2]
    assert project["dependencies"] == [f"greentic-core~={major}.{minor}"]
    assert f"greentic-conformance~={major}.{minor}" in project["optional-dependencies"]["test"]
    assert project["authors"] == [{"name": "Jane Doe", "email": "jane@example.com"}]
    assert project["dynamic"] == ["version"]

    hooks = (scaffold / PACKAGE / "hooks.py").read_text()
    for path in scaffold.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # valid Python
    for hook in ("greentic_stage_revision", "greentic_warm_revision", "greentic_drain_revision",
                 "greentic_archive_revision", "greentic_apply_traffic_split", "greentic_observe"):
        assert f"def {hook}(" in hooks and f'raise _not_implemented("{hook}")' in hooks
    assert "def greentic_conformance_sandbox(workdir)" in hooks
    assert '"scaffold": True' in hooks
    assert f">={major}.{minor},<{int(major) + 1}" in hooks  # requires_core, the same line as the dependency

    test_file = (scaffold / "tests" / "test_conformance.py").read_text()
    assert '"--deployer", DEPLOYER, "--pyargs", "greentic_conformance.suite"' in test_file
    workflow = (scaffold / ".github" / "workflows" / "test.yml").read_text()
    assert "${{ matrix.python-version }}" in workflow  # GitHub's own placeholders survive rendering
    assert 'pip install -e ".[test]"' in workflow and "python -m pytest" in workflow
    if importlib.util.find_spec("yaml") is not None:
        import yaml

        jobs = yaml.safe_load(workflow)["jobs"]
        assert {"test", "build"} <= set(jobs)
    assert NAME in (scaffold / "README.md").read_text()


def test_new_refuses_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    code, doc = _new(NAME, "--directory", str(target))
    assert code == 3 and doc["kind"] == "conflict" and "not empty" in doc["message"], doc
    assert [p.name for p in target.iterdir()] == ["keep.txt"] and (target / "keep.txt").read_text() == "mine"

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, doc = _new(NAME, "--directory", str(a_file))
    assert code == 2 and a_file.read_text() == "x"  # click refuses a file for --directory

    empty = tmp_path / "empty"
    empty.mkdir()
    code, doc = _new(NAME, "--directory", str(empty))
    assert code == 0 and (empty / "pyproject.toml").is_file()


def test_new_defaults_to_the_distribution_name_in_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, doc = _new("acme.deployer.files-two")
    assert code == 0, doc
    assert doc["directory"] == str(tmp_path / "acme-deployer-files-two")
    assert (doc["distribution"], doc["package"]) == ("acme-deployer-files-two", "acme_deployer_files_two")


@pytest.mark.parametrize("bad, words", [
    ("nodot", "must contain a '.'"),
    ("Acme.Deployer", "invalid character"),
    ("acme..nomad", "empty segment"),
    ("9acme.nomad", "Python package name"),
    ("greentic.deployer.nomad", "belong to this project"),
])
def test_new_refuses_a_bad_name_and_writes_nothing(tmp_path: Path, bad: str, words: str) -> None:
    code, doc = _new(bad, "--directory", str(tmp_path / "out"))
    assert code == 2 and doc["kind"] == "usage" and words in doc["message"], doc
    assert not (tmp_path / "out").exists()


def test_names_follow_the_descriptor_path() -> None:
    names = names_for("acme.deployer.nomad-eu")
    assert (names.distribution, names.package, names.short) == ("acme-deployer-nomad-eu", "acme_deployer_nomad_eu",
                                                                "nomad-eu")
    assert names.author_name == "Your Name" and names.author_email == ""
    assert names_for("a.b", "jane@example.com").author_name == "jane@example.com"


# --------------------------------------------------------------------------- using it


def test_installed_scaffold_lists_ok_with_a_reminder(installed: Path, tmp_path: Path) -> None:
    env = _env(installed, tmp_path / "cache")
    listed = subprocess.run([sys.executable, "-m", "greentic_core", "--json", "plugins", "list"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == NAME)
    assert (row["status"], row["distribution"], row["version"]) == ("ok", DIST, "0.1.0"), row
    assert row["scaffold"] is True and SCAFFOLD_NOTE in row["warnings"]
    assert row["conformance_sandbox"] is True
    assert row["descriptor"]["capabilities"]["scaffold"] is True
    assert (installed / PACKAGE / "hooks.py").is_file()

    human = subprocess.run([sys.executable, "-m", "greentic_core", "plugins", "list"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert human.returncode == 0, human.stderr
    assert f"reminder: {NAME} is a scaffold" in human.stdout
    assert "not implemented" in next(line for line in human.stdout.splitlines() if line.startswith(NAME))


def test_installed_scaffold_passes_doctor_with_a_warning(installed: Path, tmp_path: Path) -> None:
    env = _env(installed, tmp_path / "cache", GREENTIC_DEPLOYERS=NAME)  # the others show as disabled
    result = subprocess.run([sys.executable, "-m", "greentic_core", "--json", "plugins", "doctor"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = next(p for p in json.loads(result.stdout)["plugins"] if p["name"] == NAME)
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert report["ok"] and statuses == {"import": "pass", "contract": "pass", "core version": "pass",
                                         "dependencies": "pass", "conformance sandbox": "pass", "scaffold": "warn"}


def test_generated_tests_run_the_conformance_suite_and_fail_exactly_on_the_stubs(
        scaffold: Path, installed: Path, tmp_path: Path) -> None:
    # The conformance suite ships in greentic-conformance, installed next to the core by dev.py.
    assert importlib.util.find_spec("greentic_conformance") is not None, "greentic-conformance is not installed"
    from greentic_conformance.checks import CHECKS

    junit = tmp_path / "results.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         str(scaffold / "tests")],
        cwd=scaffold, capture_output=True, text=True, timeout=600, env=_env(installed, tmp_path / "cache"),
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # 1: tests failed
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if error is not None:
            outcome, message = "error", error.get("message", "")
        elif failure is not None:
            outcome, message = "failed", failure.get("message", "")
        elif skipped is not None:
            outcome, message = "skipped", skipped.get("message", "")
        else:
            outcome, message = "passed", ""
        outcomes[case.get("name")] = (outcome, message)

    assert outcomes.pop("test_plugin_loads_ok")[0] == "passed"
    by_check = {name.removeprefix("test_conformance[").removesuffix("]"): v for name, v in outcomes.items()}
    assert set(by_check) == {c.id for c in CHECKS}, "one generated test per conformance check"
    failed = {cid for cid, (outcome, _) in by_check.items() if outcome == "failed"}
    assert not {cid for cid, (outcome, _) in by_check.items() if outcome == "error"}
    # every failure is a stub saying so, naming the hook to implement ...
    for cid in failed:
        message = by_check[cid][1]
        assert NOT_IMPLEMENTED in message and f"{NAME}: greentic_" in message, (cid, message)
    # ... and every check that needs a verb or observe fails; the others pass or are skipped
    assert {c.id for c in CHECKS} - failed - {cid for cid, (o, _) in by_check.items() if o == "skipped"} == NEEDS_NO_STUB
    for verb_check in ("happy-path", "idempotent-stage", "idempotent-warm", "idempotent-apply-split",
                       "idempotent-drain", "idempotent-archive", "warm-serves", "split-enforced",
                       "drain-stops-serving", "archive-removes"):
        assert verb_check in failed


def test_generated_distribution_builds_and_passes_twine_check(scaffold: Path, tmp_path: Path) -> None:
    for module in ("build", "twine", "hatchling"):
        assert importlib.util.find_spec(module) is not None, f"{module} missing: pip install -e '.[test]'"
    out = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(scaffold)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    artifacts = sorted(str(p) for p in out.iterdir())
    assert [Path(a).name for a in artifacts] == [f"{PACKAGE}-0.1.0-py3-none-any.whl", f"{PACKAGE}-0.1.0.tar.gz"]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *artifacts],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
