"""Shell completion: the scripts ``completion SHELL`` prints, and what each argument completes to
(environments, deployments, revisions and their prefixes, plugins, desired-state files)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import BashComplete, FishComplete, ZshComplete
from click.testing import CliRunner

import recording_plugin
from greentic_core.cli import cli
from greentic_core.cli.completion import COMPLETE_VAR

PLUGIN = recording_plugin.NAME


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """Environments ``dev`` (deployments ``shop`` with two revisions, ``web`` with one) and ``qa``."""
    root = tmp_path_factory.mktemp("completion")
    site = recording_plugin.install(root / "site")
    sys.path.insert(0, str(site))
    env = {"GREENTIC_HOME": str(root / "home"), "GREENTIC_CACHE_DIR": str(root / "cache")}
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    run("env", "init", "dev", "--deployer", PLUGIN)
    run("env", "init", "qa", "--deployer", PLUGIN)
    shop = run("deployment", "add", "dev", "shop")
    web = run("deployment", "add", "dev", "web")
    revisions = {"shop": [run("revision", "stage", "dev", "shop", "--record-only") for _ in range(2)],
                 "web": [run("revision", "stage", "dev", "web", "--record-only")]}
    yield {"root": root, "site": site, "env": env, "deployments": {"shop": shop, "web": web}, "revisions": revisions}
    sys.path.remove(str(site))


def complete(store, words: list[str], incomplete: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name, value in store["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GREENTIC_STORE", raising=False)
    completer = BashComplete(cli, {}, "greentic-deployer", COMPLETE_VAR)
    return [item.value for item in completer.get_completions(words, incomplete)]


def test_environment_names(store, monkeypatch):
    assert complete(store, ["revision", "list"], "", monkeypatch) == ["dev", "qa"]
    assert complete(store, ["env", "show"], "q", monkeypatch) == ["qa"]


def test_environment_names_from_the_home_given_on_the_command_line(store, monkeypatch, tmp_path):
    assert complete(store, ["--home", str(tmp_path), "env", "show"], "", monkeypatch) == []
    home = str(store["root"] / "home")
    assert complete(store, ["env", "show", "--home", str(tmp_path)], "", monkeypatch) == []  # after: the same
    assert complete(store, ["--home", home, "env", "show"], "", monkeypatch) == ["dev", "qa"]


def test_deployments_by_bundle_name_and_id(store, monkeypatch):
    deps = store["deployments"]
    assert set(complete(store, ["traffic", "set", "dev"], "", monkeypatch)) == {"shop", "web", *deps.values()}
    assert complete(store, ["traffic", "set", "dev"], "we", monkeypatch) == ["web"]
    assert complete(store, ["revision", "list", "dev", "--deployment"], "sh", monkeypatch) == ["shop"]


def test_revision_ids_prefixes_in_either_case_and_latest(store, monkeypatch):
    shop, web = store["revisions"]["shop"], store["revisions"]["web"]
    everything = complete(store, ["revision", "warm", "dev"], "", monkeypatch)
    assert set(everything) == {*shop, *web, "latest"}
    prefix = shop[1][:-3].lower()  # a typed prefix, lower case: completes to the canonical id
    assert complete(store, ["revision", "show", "dev"], prefix, monkeypatch) == [shop[1]]
    assert complete(store, ["revision", "drain", "dev", "--deployment", "web"], "", monkeypatch) == [*web, "latest"]
    assert complete(store, ["revision", "show", "dev"], "la", monkeypatch) == ["latest"]


def test_plugin_names(store, monkeypatch):
    assert PLUGIN in complete(store, ["plugins", "show"], "", monkeypatch)
    assert complete(store, ["env", "init", "x", "--deployer"], PLUGIN[:-2], monkeypatch) == [PLUGIN]


def test_desired_state_file_is_left_to_the_shells_file_completion(store, monkeypatch):
    completer = BashComplete(cli, {}, "greentic-deployer", COMPLETE_VAR)
    items = completer.get_completions(["apply", "dev", "-f"], "dep")
    assert [(i.type, i.value) for i in items] == [("file", "dep")]


def test_unknown_environment_completes_nothing_and_prints_nothing(store, monkeypatch, capsys):
    assert complete(store, ["revision", "show", "nope"], "", monkeypatch) == []
    assert capsys.readouterr().err == ""


def test_command_names(store, monkeypatch):
    assert complete(store, [], "rev", monkeypatch) == ["revision"]
    assert "completion" in complete(store, [], "", monkeypatch)


@pytest.mark.parametrize("shell, cls", [("bash", BashComplete), ("zsh", ZshComplete), ("fish", FishComplete)])
def test_completion_prints_clicks_script_for_the_shell(shell, cls):
    result = CliRunner().invoke(cli, ["completion", shell], prog_name="greentic-deployer")
    assert result.exit_code == 0
    assert result.stdout == cls(cli, {}, "greentic-deployer", COMPLETE_VAR).source()
    assert f"{COMPLETE_VAR}={shell}_complete" in result.stdout


def test_unknown_shell_is_a_usage_error():
    result = CliRunner().invoke(cli, ["completion", "tcsh"], prog_name="greentic-deployer")
    assert result.exit_code == 2 and "'tcsh' is not one of" in result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_script_completes_revision_prefixes_end_to_end(store):
    """The printed script sourced in a real bash, calling the real console script."""
    exe = Path(sys.executable).parent / "greentic-deployer"
    if not exe.exists():
        pytest.skip("greentic-deployer console script not installed next to this interpreter")
    shop = store["revisions"]["shop"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    env.update(store["env"], PATH=f"{exe.parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(store["site"]), env.get("PYTHONPATH")])))
    script = (f'source <(greentic-deployer completion bash)\n'
              f'COMP_WORDS=(greentic-deployer revision show dev {shop[0][:-2].lower()}); COMP_CWORD=4\n'
              f'_greentic_deployer_completion greentic-deployer\n'
              f'printf "%s\\n" "${{COMPREPLY[@]}}"\n')
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [shop[0]]
