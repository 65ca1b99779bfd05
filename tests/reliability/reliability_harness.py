"""The CLI harness of the reliability tests: one temporary store, the test deployers installed.

:class:`Cli` runs ``greentic-deployer`` in-process through click's ``CliRunner`` (and, for the
cases where a real process matters - a hang, a full disk, a killed writer - as a subprocess
``python -m greentic_core``), with the recording and fault-injecting deployers of this
directory installed as real distributions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

import fault_plugin
import recording_plugin
from greentic_core.cli import cli

#: the operator's grace after a provider call's timeout in these tests (GREENTIC_HANG_GRACE_SECONDS)
HANG_GRACE = 0.5
SECRET = "tok-R3L1ABLE-5ecret-77a1"
#: exit codes documented in greentic_core/cli/__init__.py (70 = internal error is never acceptable)
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 130}
CLICK_USAGE_ERRORS = ("UsageError", "MissingParameter", "NoSuchCommand", "BadParameter", "BadArgumentUsage",
                      "BadOptionUsage", "NoSuchOption")


def json_given(args: Any, json_mode: bool) -> bool:
    """Whether the CLI answers in JSON: ``--json`` given by the harness, or anywhere in the
    arguments before a ``--`` (global options may follow the command)."""
    words = [str(a) for a in args]
    return json_mode or "--json" in (words[:words.index("--")] if "--" in words else words)


def check_error_output(result: Result | subprocess.CompletedProcess, *, json_mode: bool) -> None:
    """A failed command said so in one line (plus a hint, or click's usage lines), no traceback."""
    stdout = result.stdout
    stderr = result.stderr
    assert "Traceback" not in stdout + stderr, stdout + stderr
    if json_mode:
        doc = json.loads(stdout)  # exactly one JSON document on stdout
        assert doc["ok"] is False and doc["kind"] and doc["message"], doc
        assert "\n" not in doc["message"], doc
        assert stderr == "", stderr
        return
    assert stdout == "", stdout
    lines = stderr.strip("\n").split("\n")  # line breaks as a terminal or a log sees them
    if lines and lines[0].startswith("Usage: "):  # click's own usage message (documented)
        assert sum(line.startswith("Error: ") for line in lines) == 1, lines
        return
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith("error: "), lines
    assert lines[1:] == [] or lines[1].startswith("hint: "), lines


class Cli:
    """``greentic-deployer`` against a store under ``tmp``, with the test deployers installed."""

    def __init__(self, tmp: Path, site: Path) -> None:
        self.tmp = tmp
        self.site = site
        self.home = tmp / "home"
        self.cache = tmp / "cache"
        self.fault_file = tmp / "faults"
        self.release = tmp / "release-hangs"
        self.fault_log = tmp / "fault-calls.jsonl"
        self.runner = CliRunner()
        self.outputs: list[str] = []

    # -- environment of every run ---------------------------------------------------------------

    def env_vars(self) -> dict[str, str | None]:
        return {
            "GREENTIC_CACHE_DIR": str(self.cache),
            "GREENTIC_HOME": None,
            "GREENTIC_DEPLOYERS": None,
            "GREENTIC_DISABLE_DEPLOYERS": None,
            recording_plugin.FAIL_ENV: None,
            recording_plugin.LOG_ENV: None,
            recording_plugin.FAIL_FILE_ENV: None,
            fault_plugin.FAULT_FILE_ENV: str(self.fault_file),
            fault_plugin.RELEASE_ENV: str(self.release),
            fault_plugin.LOG_ENV: str(self.fault_log),
            "GREENTIC_HANG_GRACE_SECONDS": str(HANG_GRACE),
        }

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
        env.update({k: v for k, v in self.env_vars().items() if v is not None})
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(extra)
        return env

    # -- running -----------------------------------------------------------------------------------

    def argv(self, args: tuple[Any, ...], json_mode: bool, actor: str | None) -> list[str]:
        argv = ["--home", str(self.home)]
        if actor is not None:
            argv += ["--actor", actor]
        if json_mode:
            argv.append("--json")
        return argv + [str(a) for a in args]

    def run(self, *args: Any, code: int | None = 0, json_mode: bool = True, actor: str | None = "tester") -> Result:
        result = self.runner.invoke(cli, self.argv(args, json_mode, actor), env=self.env_vars(),
                                    catch_exceptions=False)
        self.outputs.append(result.stdout + result.stderr)
        if code is not None:
            assert result.exit_code == code, (
                f"{' '.join(map(str, args))}: exit {result.exit_code}, expected {code}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}")
        if result.exit_code != 0 and "--debug" not in args:  # --debug prints the traceback on purpose
            check_error_output(result, json_mode=json_given(args, json_mode))
        return result

    def json(self, *args: Any, code: int = 0, **kwargs: Any) -> dict[str, Any]:
        result = self.run(*args, code=code, json_mode=True, **kwargs)
        return json.loads(result.stdout)

    def sub(self, *args: Any, json_mode: bool = False, timeout: float = 60,
            **extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """``python -m greentic_core`` in a real subprocess; returns (result, seconds it took)."""
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "greentic_core", *self.argv(args, json_mode, "tester")],
                              env=self.subprocess_env(**extra), capture_output=True, text=True, timeout=timeout)
        took = time.monotonic() - started
        self.outputs.append(proc.stdout + proc.stderr)
        if proc.returncode != 0 and "--debug" not in args:
            check_error_output(proc, json_mode=json_given(args, json_mode))
        return proc, took

    # -- faults --------------------------------------------------------------------------------

    def fault(self, *items: str) -> None:
        self.fault_file.write_text(",".join(items))

    def heal(self) -> None:
        self.fault_file.unlink(missing_ok=True)

    def release_hangs(self) -> None:
        self.release.touch()

    # -- what is stored ----------------------------------------------------------------------------

    def env_dir(self, env_id: str = "dev") -> Path:
        return self.home / "environments" / env_id

    def env_bytes(self, env_id: str = "dev") -> bytes:
        return (self.env_dir(env_id) / "environment.json").read_bytes()

    def env_doc(self, env_id: str = "dev") -> dict[str, Any]:
        return json.loads(self.env_bytes(env_id))

    def config_bytes(self, env_id: str = "dev") -> bytes | None:
        path = self.env_dir(env_id) / "runtime-config.json"
        return path.read_bytes() if path.exists() else None

    def audit(self, env_id: str = "dev") -> list[dict[str, Any]]:
        path = self.env_dir(env_id) / "audit" / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- set-ups -----------------------------------------------------------------------------------

    def init(self, deployer: str, env_id: str = "dev", answers: dict[str, Any] | None = None) -> None:
        path = self.tmp / f"answers-{env_id}.json"
        path.write_text(json.dumps({"region": "eu-west-1", "token": SECRET} if answers is None else answers))
        self.json("env", "init", env_id, "--deployer", deployer, "--answers", path)

    def stage(self, env_id: str = "dev", deployment: str = "shop", *extra: Any) -> str:
        return self.json("revision", "stage", env_id, deployment, *extra)["revision_id"]

    def ready(self, env_id: str = "dev", deployment: str = "shop") -> str:
        rid = self.stage(env_id, deployment)
        assert self.json("revision", "warm", env_id, rid)["lifecycle"] == "ready"
        return rid
