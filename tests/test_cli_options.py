"""Global options stand before or after the command, with the same meaning; every usage error
click raises is printed in the documented format (Usage line, hint line, Error line) or, with
``--json`` anywhere, as one JSON document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import recording_plugin
from greentic_core.cli import cli

PLUGIN = recording_plugin.NAME


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recording_plugin.install(tmp_path_factory.mktemp("site"))


@pytest.fixture
def run(tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch):
    """``run(*args, code=0)``: the CLI in-process with a clean environment (no GREENTIC_HOME)."""
    monkeypatch.syspath_prepend(str(site))
    for name in [n for n in os.environ if n.startswith("GREENTIC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(recording_plugin.LOG_ENV, str(tmp_path / "calls.jsonl"))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(cli, [str(a) for a in args], prog_name="greentic-deployer", catch_exceptions=False)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        return result

    return invoke


def _env(run, home: Path, *where: str) -> str:
    """Environment ``dev`` with deployment ``shop`` and one staged revision (record-only)."""
    run("--home", home, "env", "init", "dev", "--deployer", PLUGIN)
    run("--home", home, "deployment", "add", "dev", "shop")
    return run("--home", home, "revision", "stage", "dev", "shop", "--record-only").stdout.strip()


@pytest.mark.parametrize("place", ["before", "after"])
def test_json_and_home_mean_the_same_before_and_after_the_command(run, tmp_path, place):
    home = tmp_path / "home"
    rid = _env(run, home)
    opts = ["--json", "--home", str(home)]
    args = [*opts, "revision", "list", "dev"] if place == "before" else ["revision", "list", "dev", *opts]
    doc = json.loads(run(*args).stdout)  # exactly one JSON document
    assert doc["ok"] is True and [r["revision_id"] for r in doc["revisions"]] == [rid]


def test_json_after_a_subgroup_name_and_after_the_arguments(run, tmp_path):
    home = tmp_path / "home"
    _env(run, home)
    assert json.loads(run("revision", "--json", "list", "dev", "--home", home).stdout)["ok"] is True
    assert json.loads(run("plugins", "list", "--json").stdout)["ok"] is True


def test_store_url_after_the_command_selects_that_store(run, tmp_path):
    home = tmp_path / "home"
    _env(run, home)
    doc = json.loads(run("env", "list", "--json", "--store", f"file://{home}").stdout)
    assert [e["environment_id"] for e in doc["environments"]] == ["dev"]
    empty = json.loads(run("env", "list", "--json", "--store", f"file://{tmp_path / 'other'}").stdout)
    assert empty["environments"] == []


def test_actor_after_the_command_is_recorded_in_the_audit(run, tmp_path):
    home = tmp_path / "home"
    _env(run, home)
    run("deployment", "add", "dev", "web", "--home", home, "--actor", "carol")
    events = [json.loads(line) for line in (home / "environments" / "dev" / "audit" / "events.jsonl").read_text()
              .splitlines() if line.strip()]
    assert events[-1]["actor"] == "carol"


def test_later_option_wins_when_given_before_and_after(run, tmp_path):
    _env(run, tmp_path / "a")
    doc = json.loads(run("--home", tmp_path / "b", "--json", "env", "list", "--home", tmp_path / "a").stdout)
    assert [e["environment_id"] for e in doc["environments"]] == ["dev"]


def test_debug_after_the_command_shows_the_traceback(run, tmp_path):
    result = run("env", "show", "nope", "--home", tmp_path, "--debug", code=4)
    assert "Traceback" in result.stderr and "error: environment 'nope' not found" in result.stderr
    plain = run("env", "show", "nope", "--home", tmp_path, code=4)
    assert "Traceback" not in plain.stderr


@pytest.mark.parametrize("option", ["--lock-ttl", "--lock-timeout"])
def test_lease_options_after_the_command_are_checked_like_before(run, tmp_path, option):
    _env(run, tmp_path)
    doc = json.loads(run("env", "list", "--json", "--home", tmp_path, option, "-1", code=2).stdout)
    assert doc["kind"] == "usage" and option in doc["message"]
    assert json.loads(run("env", "list", "--json", "--home", tmp_path, option, "5").stdout)["ok"] is True


# --------------------------------------------------------------------------- usage errors

USAGE_ERRORS = [  # (args, click's exception class): every kind click's parser and types raise
    (("revision", "list", "dev", "--bogus"), "NoSuchOption"),
    (("revision", "warm", "dev"), "MissingParameter"),
    (("revision", "stage", "dev", "shop", "--port", "eighty"), "BadParameter"),
    (("revision", "list", "dev", "--deployment"), "BadOptionUsage"),
    (("traffic", "set", "dev", "shop", "A=10000", "--help="), "BadOptionUsage"),
    (("revision", "list", "dev", "--json=yes"), "BadOptionUsage"),
    (("revision", "list", "dev", "extra"), "UsageError"),
    (("revision", "nothing"), "NoSuchCommand"),
    (("nothing",), "NoSuchCommand"),
    (("schema", "nothing"), "BadParameter"),
    (("--lock-ttl", "0", "env", "list"), "BadParameter"),
    (("env", "validate"), "UsageError"),
]


@pytest.mark.parametrize("args, error", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_every_click_usage_error_has_the_documented_format(run, tmp_path, args, error):
    result = run("--home", tmp_path, *args, code=2)
    lines = result.stderr.strip().splitlines()
    assert result.stdout == ""
    assert lines[0].startswith("Usage: greentic-deployer"), lines
    assert any(line.startswith("Try 'greentic-deployer") and line.endswith("for help.") for line in lines), lines
    assert lines[-1].startswith("Error: ") and len(lines[-1]) > len("Error: "), lines


#: ``--json`` after the command, except where nothing after it is read as an option: after
#: ``--help=`` (click stops there) and after an option that takes the next word as its value.
JSON_CASES = [(args, error, place) for args, error in USAGE_ERRORS for place in ("before", "after")
              if place == "before" or args[-1] not in ("--help=", "--deployment")]


@pytest.mark.parametrize("args, error, place", JSON_CASES, ids=[f"{p}-{' '.join(a)}" for a, _, p in JSON_CASES])
def test_every_click_usage_error_is_one_json_document_with_json(run, tmp_path, args, error, place):
    argv = ["--json", *args] if place == "before" else [*args, "--json"]
    result = run("--home", tmp_path, *argv, code=2)
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["kind"] == "usage" and doc["message"], doc
    assert issubclass(getattr(click.exceptions, doc["error"]), getattr(click.exceptions, error)), doc
