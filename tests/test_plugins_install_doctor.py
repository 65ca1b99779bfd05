"""``plugins install`` (a safe pip wrapper) and ``plugins doctor`` (is each plugin usable?).

``plugins install`` is exercised for real with ``--dry-run``: pip resolves the local example
distribution (and a short name) in this virtual environment and reports what it would
install, and nothing is installed. The refusal outside a virtual environment is shown twice:
through the command function's explicit ``in_venv=False`` parameter (in a ``python -c``
subprocess, with a runner that records instead of running pip) and through the real CLI run by
this venv's *base* interpreter, where ``sys.prefix == sys.base_prefix`` is simply true.

``plugins doctor`` runs in a subprocess against real installed test distributions
(:mod:`plugin_factory`) whose declared requirements are satisfied, missing or at the wrong
version, plus a broken and an incompatible plugin. The allow list keeps the developer's own
installed plugins out of the verdict (they show as disabled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from greentic_core.cli.install_commands import (
    SHORT_NAMES,
    InstallRefused,
    install_plugins,
    map_requirement,
    pip_install_argv,
)
from plugin_factory import good_plugin_source, make_dist

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "greentic-deployer-example"


def _env(tmp_path: Path, site: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    env.update(GREENTIC_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="250", **extra)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greentic_core", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- install: the pip command


@pytest.mark.parametrize("given, expected", [
    ("local-process", "greentic-deployer-local-process"),
    ("k8s", "greentic-deployer-k8s"),
    ("aws", "greentic-deployer-aws"),
    ("conformance", "greentic-conformance"),
    ("greentic.deployer.aws-ecs", "greentic-deployer-aws"),
    ("k8s[sandbox]>=0.1", "greentic-deployer-k8s[sandbox]>=0.1"),
    ("aws==0.1.0", "greentic-deployer-aws==0.1.0"),
    ("acme-deployer-nomad>=1.2", "acme-deployer-nomad>=1.2"),
    ("./examples/greentic-deployer-example", "./examples/greentic-deployer-example"),
    ("git+https://example.com/acme/nomad.git", "git+https://example.com/acme/nomad.git"),
    ("k8s @ https://example.com/k8s.whl", "k8s @ https://example.com/k8s.whl"),  # an explicit URL wins
])
def test_short_names_map_to_our_distributions(given: str, expected: str) -> None:
    assert map_requirement(given) == expected


def test_the_pip_command_is_an_argument_list_for_this_interpreter() -> None:
    argv = pip_install_argv(["k8s", "weird; rm -rf / #"], editable=["./here"], upgrade=True, dry_run=True)
    assert argv[:4] == [sys.executable, "-m", "pip", "install"]
    assert argv[4:] == ["--disable-pip-version-check", "--no-input", "--upgrade", "--dry-run",
                        "--editable", "./here", "greentic-deployer-k8s", "weird; rm -rf / #"]  # one argument, no shell


@pytest.mark.parametrize("requirements, editable", [
    (["--index-url=https://evil.example.com/simple"], []),
    (["k8s", "-r"], []),
    ([], ["--no-deps"]),
    ([""], []),
    ([], []),
])
def test_options_and_empty_arguments_never_reach_pip(requirements, editable) -> None:
    with pytest.raises(InstallRefused):
        pip_install_argv(requirements, editable=editable)


def test_install_runs_pip_once_without_a_shell_and_reads_its_report() -> None:
    seen = []

    def runner(argv, **kwargs):
        seen.append((argv, kwargs))
        report = argv[argv.index("--report") + 1]
        Path(report).write_text(json.dumps({"install": [{"metadata": {"name": "greentic-deployer-aws", "version": "0.1.0"}}]}))
        return subprocess.CompletedProcess(argv, 0)

    result = install_plugins(["aws"], dry_run=True, in_venv=True, run=runner)
    [(argv, kwargs)] = seen
    assert "shell" not in kwargs and isinstance(argv, list)
    assert result == {"command": [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                                  "--dry-run", "greentic-deployer-aws"],
                      "dry_run": True, "in_venv": True, "would_install": ["greentic-deployer-aws==0.1.0"]}


# --------------------------------------------------------------------------- install: outside a venv


REFUSAL_PROBE = textwrap.dedent("""
    import json, sys
    from greentic_core.cli.install_commands import InstallRefused, install_plugins

    calls = []
    def runner(argv, **kwargs):
        calls.append(argv)
        raise SystemExit("pip must not run")

    out = {}
    try:
        install_plugins(["aws"], in_venv=False, run=runner)
    except InstallRefused as exc:
        out["refused"] = {"kind": exc.kind, "exit_code": exc.exit_code, "message": exc.message, "hint": exc.hint}

    def fake_pip(argv, **kwargs):
        calls.append(argv)
        return __import__("subprocess").CompletedProcess(argv, 0)

    out["forced"] = install_plugins(["aws"], in_venv=False, force=True, dry_run=True, run=fake_pip)
    out["calls"] = calls
    print(json.dumps(out))
""")


def test_outside_a_venv_install_refuses_unless_forced(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", REFUSAL_PROBE], capture_output=True, text=True, timeout=60,
                            env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    refused = out["refused"]
    assert (refused["kind"], refused["exit_code"]) == ("usage", 2)
    assert "not in a virtual environment" in refused["message"] and "--force" in refused["hint"]
    # only the forced call ran (the fake) pip
    assert len(out["calls"]) == 1 and "--dry-run" in out["calls"][0]
    assert out["forced"]["in_venv"] is False and out["forced"]["would_install"] == []


def test_the_real_cli_refuses_under_an_interpreter_outside_any_venv(tmp_path: Path) -> None:
    """This venv's base interpreter, given the venv's packages on PYTHONPATH, is not in a venv."""
    if sys.prefix == sys.base_prefix:
        pytest.fail("the test suite is expected to run inside a virtual environment (python3 dev.py test)")
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert base.is_file(), base
    site_packages = sysconfig.get_paths()["purelib"]
    env = _env(tmp_path, PYTHONPATH=os.pathsep.join([str(REPO), site_packages]))
    probe = subprocess.run([str(base), "-c", "import sys; print(sys.prefix == sys.base_prefix)"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert probe.stdout.strip() == "True"
    result = subprocess.run([str(base), "-m", "greentic_core", "--json", "plugins", "install", "aws"],
                            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["kind"] == "usage" and "not in a virtual environment" in doc["message"]


# --------------------------------------------------------------------------- install: for real, --dry-run


def test_install_dry_run_of_the_example_distribution(tmp_path: Path) -> None:
    result = _cli("--json", "plugins", "install", "--dry-run", str(EXAMPLE), env=_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)  # pip's own output went to stderr
    assert doc["ok"] and doc["dry_run"] and doc["in_venv"]
    assert doc["command"][:3] == [sys.executable, "-m", "pip"] and "--dry-run" in doc["command"]
    assert doc["command"][-1] == str(EXAMPLE)
    assert "greentic-deployer-example==1.0.0" in doc["would_install"]
    # a dry run installs nothing: the re-listed plugins do not include the example
    assert doc["plugins"] is not None
    assert "acme.deployer.files" not in {p["name"] for p in doc["plugins"]}
    assert "Would install" in result.stderr


def test_install_dry_run_of_a_short_name_then_lists_plugins(tmp_path: Path) -> None:
    # greentic-conformance is installed in this venv already, so pip resolves it without an index
    result = _cli("plugins", "install", "--dry-run", "conformance", env=_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    # pip talks to the terminal first ("Requirement already satisfied: greentic-conformance ..."),
    # then the summary (stderr) and the plugins table, re-listed afterwards (stdout)
    pip_said, _, table = result.stdout.partition("NAME")
    assert "Requirement already satisfied: greentic-conformance" in pip_said
    assert "pip would install: nothing new" in result.stderr
    assert "STATUS" in table and "greentic.deployer" in table


def test_install_refuses_pip_options_from_the_command_line(tmp_path: Path) -> None:
    result = _cli("--json", "plugins", "install", "--", "--index-url=https://evil.example.com/simple",
                  env=_env(tmp_path), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not pip options" in json.loads(result.stdout)["message"]


def test_every_short_name_is_one_of_our_distributions() -> None:
    ours = {"greentic-deployer-local-process", "greentic-deployer-k8s", "greentic-deployer-aws", "greentic-conformance"}
    assert set(SHORT_NAMES.values()) == ours
    for dist_dir in ("plugins/local_process", "plugins/k8s", "plugins/aws", "conformance"):
        text = (REPO / dist_dir / "pyproject.toml").read_text()
        assert any(f'name = "{name}"' in text for name in ours), dist_dir


# --------------------------------------------------------------------------- doctor


def _with_requirements(info: Path, *requirements: str) -> None:
    """Declare ``Requires-Dist`` in a test distribution's METADATA, as pip would have written it."""
    metadata = info / "METADATA"
    metadata.write_text(metadata.read_text() + "".join(f"Requires-Dist: {r}\n" for r in requirements))


@pytest.fixture(scope="module")
def doctor_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("doctor-site")
    good = make_dist(site, "acme-good", "1.0.0", {"acme_good.py": good_plugin_source("acme.deployer.good")},
                     {"acme.deployer.good": "acme_good"})
    _with_requirements(good, "greentic-core>=0.1", "pluggy>=1", "pytest>=1; extra == 'test'",
                       "nonexistent-greentic-package>=1; sys_platform == 'never'")
    missing = make_dist(site, "acme-missing", "1.0.0",
                        {"acme_missing.py": good_plugin_source("acme.deployer.missing")},
                        {"acme.deployer.missing": "acme_missing"})
    _with_requirements(missing, "greentic-core>=0.1", "nonexistent-greentic-package>=1")
    wrong = make_dist(site, "acme-wrong", "1.0.0", {"acme_wrong.py": good_plugin_source("acme.deployer.wrong")},
                      {"acme.deployer.wrong": "acme_wrong"})
    _with_requirements(wrong, "pluggy<0.1")
    make_dist(site, "acme-broken", "1.0.0", {"acme_broken.py": "import nonexistent_greentic_module\n"},
              {"acme.deployer.broken": "acme_broken"})
    make_dist(site, "acme-old", "1.0.0",
              {"acme_old.py": good_plugin_source("acme.deployer.old", requires_core=">=9,<10")},
              {"acme.deployer.old": "acme_old"})
    nosandbox = good_plugin_source("acme.deployer.nosandbox", extra="del greentic_conformance_sandbox\n")
    make_dist(site, "acme-nosandbox", "1.0.0", {"acme_nosandbox.py": nosandbox},
              {"acme.deployer.nosandbox": "acme_nosandbox"})
    return site


def _doctor(tmp_path: Path, site: Path, *names: str, json_mode: bool = True) -> subprocess.CompletedProcess[str]:
    env = _env(tmp_path, site, GREENTIC_DEPLOYERS=",".join(names))
    return _cli(*(["--json"] if json_mode else []), "plugins", "doctor", env=env, timeout=120)


def _reports(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    doc = json.loads(result.stdout)
    return {p["name"]: p for p in doc["plugins"] if p["status"] != "disabled"}


def _checks(report: dict) -> dict[str, tuple[str, str]]:
    return {c["check"]: (c["status"], c["message"]) for c in report["checks"]}


def test_doctor_passes_a_healthy_plugin(tmp_path: Path, doctor_site: Path) -> None:
    result = _doctor(tmp_path, doctor_site, "acme.deployer.good")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    checks = _checks(_reports(result)["acme.deployer.good"])
    assert {k: v[0] for k, v in checks.items()} == {"import": "pass", "contract": "pass", "core version": "pass",
                                                    "dependencies": "pass", "conformance sandbox": "pass"}
    assert checks["dependencies"][1] == "2 requirements of acme-good satisfied"  # the extra's and the marker's are not
    # plugins outside the allow list are reported as skipped, never as failures
    skipped = [p for p in doc["plugins"] if p["status"] == "disabled"]
    assert all(p["ok"] and p["checks"][0]["status"] == "skip" for p in skipped)


def test_doctor_fails_on_a_missing_or_mismatched_dependency(tmp_path: Path, doctor_site: Path) -> None:
    result = _doctor(tmp_path, doctor_site, "acme.deployer.missing", "acme.deployer.wrong", "acme.deployer.good")
    assert result.returncode == 1, result.stdout + result.stderr
    reports = _reports(result)
    assert json.loads(result.stdout)["ok"] is False
    assert reports["acme.deployer.good"]["ok"]
    missing = _checks(reports["acme.deployer.missing"])["dependencies"]
    assert missing == ("fail", "nonexistent-greentic-package>=1 is not installed")
    status, message = _checks(reports["acme.deployer.wrong"])["dependencies"]
    assert status == "fail" and message.startswith("pluggy<0.1 is required, pluggy ") and message.endswith(" is installed")
    # the plugin itself loads fine: only the dependency check fails
    assert _checks(reports["acme.deployer.wrong"])["import"][0] == "pass"


def test_doctor_fails_on_a_broken_and_an_incompatible_plugin(tmp_path: Path, doctor_site: Path) -> None:
    result = _doctor(tmp_path, doctor_site, "acme.deployer.broken", "acme.deployer.old")
    assert result.returncode == 1, result.stdout + result.stderr
    reports = _reports(result)
    broken = _checks(reports["acme.deployer.broken"])
    assert broken["import"][0] == "fail" and "nonexistent_greentic_module" in broken["import"][1]
    assert "contract" not in broken  # nothing more can be said about a module that does not import
    old = _checks(reports["acme.deployer.old"])
    assert old["contract"][0] == "pass"
    assert old["core version"][0] == "fail" and "requires greentic-core >=9,<10" in old["core version"][1]


def test_doctor_warns_about_a_missing_sandbox_in_words(tmp_path: Path, doctor_site: Path) -> None:
    result = _doctor(tmp_path, doctor_site, "acme.deployer.nosandbox", "acme.deployer.broken", json_mode=False)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "acme.deployer.nosandbox  (acme-nosandbox 1.0.0): ok" in out
    assert "warn  conformance sandbox" in out and "--deployer-answers" in out
    assert "acme.deployer.broken  (acme-broken 1.0.0): FAILED" in out
    assert "FAIL  import" in out
    assert "1 of " in out and "plugins failed: acme.deployer.broken" in out
