"""``greentic-deployer conformance NAME``: run the suite against an installed deployer.

Registered through the CLI's ``greentic.commands`` entry-point group (loaded only when the
command runs). It runs pytest in a subprocess, hermetically: its own empty ``pytest.ini`` in a
temporary directory (so the project's pytest configuration, ``conftest.py`` files and cache in
the current directory play no part), third-party pytest plugins not autoloaded, and the
conformance plugin loaded explicitly. The exit status is pytest's:

====  ==========================================================
0     every check passed (or was skipped: waived or not applicable)
1     at least one check failed
2     interrupted
3     internal pytest error
4     usage error (e.g. no deployer plugin of that name is installed)
5     no checks were collected
====  ==========================================================
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click


def pytest_command(name: str, *, answers: Path | None = None, junitxml: Path | None = None,
                   report: Path | None = None, strict: bool = False, extra: tuple[str, ...] = (),
                   ini: Path | None = None) -> list[str]:
    """The argv that runs the suite (paths must already be absolute)."""
    cmd = [sys.executable, "-m", "pytest"]
    if ini is not None:
        cmd += ["-c", str(ini), "--rootdir", str(ini.parent)]
    cmd += ["-p", "no:cacheprovider", "-p", "greentic_conformance.plugin",
            "--deployer", name, "--pyargs", "greentic_conformance.suite", "-rfE"]
    if answers is not None:
        cmd += ["--deployer-answers", str(answers)]
    if junitxml is not None:
        cmd += ["--junitxml", str(junitxml)]
    if report is not None:
        cmd += ["--conformance-report", str(report)]
    if strict:
        cmd.append("--conformance-strict")
    return cmd + list(extra)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser().resolve()


@click.command("conformance", context_settings={"help_option_names": ["-h", "--help"],
                                               "ignore_unknown_options": True})
@click.argument("name", required=False)
@click.option("--store", "store_url", metavar="URL",
              help="Run the store contract suite against this store instead (it must be initialised).")
@click.option("--answers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON answers for real infrastructure (default: the deployer's own sandbox).")
@click.option("--junitxml", type=click.Path(dir_okay=False, path_type=Path),
              help="Write JUnit XML (one test case per check) to this file.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON conformance report to this file.")
@click.option("--strict", is_flag=True, help="Fail every check the deployer waives.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def conformance(name: str | None, store_url: str | None, answers: Path | None, junitxml: Path | None,
                report: Path | None, strict: bool, pytest_args: tuple[str, ...]) -> None:
    """Run the conformance checks against the installed deployer NAME (its entry-point name).

    Other arguments go to pytest unchanged (e.g. `-- -k warm -v`). Exits with pytest's
    status: 0 all checks passed, 1 a check failed, 4 usage error, 5 nothing collected.
    """
    if (name is None) == (store_url is None):
        raise click.UsageError("name a deployer (NAME) or a store (--store URL), one of the two")
    with tempfile.TemporaryDirectory(prefix="greentic-conformance-") as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\njunit_suite_name = greentic-conformance\n")
        env = dict(os.environ)
        if store_url is not None:  # the store contract suite: no deployer involved
            cmd = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", tmp, "-p", "no:cacheprovider",
                   "--pyargs", "greentic_conformance.store_suite", "-rfE"]
            if junitxml is not None:
                cmd += ["--junitxml", str(_absolute(junitxml))]
            cmd += list(pytest_args)
            env["GREENTIC_CONFORMANCE_STORE"] = store_url  # not in argv: the URL may carry a password
        else:
            cmd = pytest_command(name, answers=_absolute(answers), junitxml=_absolute(junitxml),
                                 report=_absolute(report), strict=strict, extra=pytest_args, ini=ini)
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the conformance plugin, whatever else is installed
        env.pop("PYTEST_ADDOPTS", None)
        proc = subprocess.Popen(cmd, cwd=tmp, env=env)
        try:
            status = proc.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT: let it clean up (archive, sandbox)
            status = proc.wait()
    click.get_current_context().exit(status)
