"""``plugins install`` (a safe wrapper around pip) and ``plugins doctor`` (is each plugin usable?).

``plugins install`` runs ``python -m pip install`` with the interpreter running the CLI, so a
plugin lands next to the core that will load it, also when the CLI was installed with pipx.
It never uses a shell: the arguments go to pip as a list, and anything that looks like an
option is refused (only the options of this command reach pip). Outside a virtual
environment it refuses to run unless ``--force``: installing into a system Python is rarely
what anyone wants. Short names (``local-process``, ``k8s``, ``aws``, ``conformance``) stand for
this project's distributions; anything else is handed to pip as it is (a requirement, a path,
a URL).

``plugins doctor`` checks, for each installed plugin, what ``plugins list`` checks (it imports,
it keeps the contract, its ``requires_core`` admits this core) plus what pip installed: every
requirement its distribution declares is installed in a matching version. A missing
conformance sandbox and an unfinished scaffold are warnings. Exit status 1 when any plugin
fails.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

from ..errors import GreenticError

if TYPE_CHECKING:  # subprocess and tempfile are imported when a command runs: `plugins list` never pays
    import subprocess

#: Short names accepted by ``plugins install`` -> this project's distribution names.
SHORT_NAMES = {
    "local-process": "greentic-deployer-local-process",
    "k8s": "greentic-deployer-k8s",
    "aws": "greentic-deployer-aws",
    "conformance": "greentic-conformance",
}
#: Descriptor paths of this project's deployers, accepted as well.
SHORT_NAMES.update({
    "greentic.deployer.local-process": SHORT_NAMES["local-process"],
    "greentic.deployer.k8s": SHORT_NAMES["k8s"],
    "greentic.deployer.aws-ecs": SHORT_NAMES["aws"],
})


class InstallRefused(GreenticError):
    """``plugins install`` will not run as asked (outside a venv, an option-like argument)."""

    kind = "usage"
    exit_code = 2


class InstallFailed(GreenticError):
    """pip ran and failed."""

    kind = "plugin"
    exit_code = 7


def running_in_venv() -> bool:
    """True inside a virtual environment (venv, virtualenv, pipx, uv): ``sys.prefix`` differs from the base."""
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def map_requirement(text: str) -> str:
    """A short name (``k8s``, ``k8s[sandbox]>=0.1``) becomes our distribution name; the rest is unchanged."""
    from packaging.requirements import InvalidRequirement, Requirement

    if text in SHORT_NAMES:
        return SHORT_NAMES[text]
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return text  # a path or a URL: pip decides
    if req.name not in SHORT_NAMES or req.url:
        return text
    return SHORT_NAMES[req.name] + text.strip()[len(req.name):]


def pip_install_argv(requirements: Sequence[str], *, editable: Sequence[str] = (), upgrade: bool = False,
                     dry_run: bool = False, report: str | None = None, python: str | None = None) -> list[str]:
    """The pip command line (a list: no shell ever parses it)."""
    for item in [*requirements, *editable]:
        if not item or item.startswith("-"):
            raise InstallRefused(f"refusing {item!r}: only requirements, paths and URLs are accepted, not pip options",
                                 hint="use the options of `plugins install` (--upgrade, --editable, --dry-run)")
    if not requirements and not editable:
        raise InstallRefused("nothing to install", hint="e.g. `greentic-deployer plugins install k8s`")
    argv = [python or sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if upgrade:
        argv.append("--upgrade")
    if dry_run:
        argv.append("--dry-run")
    if report:
        argv += ["--report", report]
    for path in editable:
        argv += ["--editable", path]
    argv += [map_requirement(r) for r in requirements]
    return argv


def install_plugins(requirements: Sequence[str], *, editable: Sequence[str] = (), upgrade: bool = False,
                    dry_run: bool = False, force: bool = False, in_venv: bool | None = None,
                    stdout: Any = None, run: "Callable[..., subprocess.CompletedProcess] | None" = None) -> dict[str, Any]:
    """Run pip for ``plugins install``; return what pip installed (or would install).

    ``in_venv`` is detected (:func:`running_in_venv`) unless given. Outside a virtual environment
    nothing runs unless ``force``. ``run`` runs pip (default :func:`subprocess.run`). Raises
    :class:`InstallRefused` or :class:`InstallFailed`.
    """
    import subprocess
    import tempfile

    inside = running_in_venv() if in_venv is None else in_venv
    if not inside and not force:
        raise InstallRefused(
            f"not in a virtual environment ({sys.prefix}): refusing to pip install into this Python",
            hint="create and activate one (python -m venv .venv && . .venv/bin/activate), "
                 "or pass --force to install here anyway",
        )
    with tempfile.TemporaryDirectory(prefix="greentic-install-") as tmp:
        report_path = os.path.join(tmp, "report.json")
        argv = pip_install_argv(requirements, editable=editable, upgrade=upgrade, dry_run=dry_run, report=report_path)
        completed = (run or subprocess.run)(argv, stdout=stdout, stdin=subprocess.DEVNULL, check=False)
        if completed.returncode != 0:
            raise InstallFailed(f"pip install failed (exit {completed.returncode}); see pip's messages",
                                hint="check the names (`greentic-deployer plugins install k8s|aws|local-process`)",
                                argv=argv)
        try:
            report = json.loads(Path(report_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = {}
    items = [item.get("metadata", {}) for item in report.get("install", [])]
    at = argv.index("--report")
    return {
        "command": argv[:at] + argv[at + 2:],  # as run, without the temporary report file
        "dry_run": dry_run,
        "in_venv": inside,
        ("would_install" if dry_run else "installed"): [f"{m.get('name')}=={m.get('version')}" for m in items],
    }


# --------------------------------------------------------------------------- doctor

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


def _check(name: str, status: str, message: str) -> dict[str, str]:
    return {"check": name, "status": status, "message": message}


def dependency_problems(distribution: str) -> tuple[int, list[str]]:
    """(number of runtime requirements, problems) of an installed distribution's ``Requires-Dist``."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requires = metadata.distribution(distribution).requires or []
    except metadata.PackageNotFoundError:
        return 0, [f"distribution {distribution} is not installed (its metadata is gone)"]
    problems, count = [], 0
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            problems.append(f"unparsable requirement {text!r}")
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or another platform's
        count += 1
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req} is not installed")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{req} is required, {req.name} {installed} is installed")
    return count, problems


def doctor_record(record: Any) -> dict[str, Any]:
    """The doctor's checks of one plugin record (from :class:`~greentic_core.registry.Registry`)."""
    from .. import __version__ as core_version
    from ..registry import BROKEN, CONFLICT, DISABLED, INCOMPATIBLE, INVALID, OK
    from ..scaffold import SCAFFOLD_NOTE, is_scaffold

    checks: list[dict[str, str]] = []
    status, reason = record.status, record.reason or ""
    if status == DISABLED:
        checks.append(_check("loaded", SKIP, reason))
    elif status == CONFLICT:
        checks.append(_check("loaded", FAIL, reason))
    else:
        import_failed = status == BROKEN and reason.startswith("import of")
        checks.append(_check("import", FAIL if import_failed else PASS,
                             reason if import_failed else f"{record.value} imports"))
        if not import_failed:
            if status in (INVALID, BROKEN):
                checks.append(_check("contract", FAIL, reason))
            else:
                checks.append(_check("contract", PASS, "descriptor valid, every required hook implemented"))
            if status == INCOMPATIBLE:
                checks.append(_check("core version", FAIL, reason))
            elif record.descriptor is not None:
                checks.append(_check("core version", PASS,
                                     f"requires greentic-core {record.descriptor.requires_core}, running {core_version}"))
    if record.distribution and status != DISABLED:  # disabled: not loaded on purpose, nothing to check
        count, problems = dependency_problems(record.distribution)
        checks.append(_check("dependencies", FAIL if problems else PASS,
                             "; ".join(problems) if problems else f"{count} requirement{'' if count == 1 else 's'} of {record.distribution} satisfied"))
    if status == OK:
        checks.append(_check("conformance sandbox", PASS if record.has_sandbox else WARN,
                             "greentic_conformance_sandbox implemented" if record.has_sandbox else
                             "no greentic_conformance_sandbox: the conformance suite needs --deployer-answers"))
        if is_scaffold(record):
            checks.append(_check("scaffold", WARN, SCAFFOLD_NOTE))
        for warning in record.warnings:
            checks.append(_check("warning", WARN, warning))
    failed = any(c["status"] == FAIL for c in checks)
    return {
        "name": record.name, "distribution": record.distribution, "version": record.dist_version,
        "status": status, "ok": not failed, "checks": checks,
    }


def register(cli: click.Group) -> None:
    plugins = cli.commands["plugins"]  # the group plugins_commands registered
    assert isinstance(plugins, click.Group)

    @plugins.command("install")
    @click.argument("requirements", nargs=-1)
    @click.option("--editable", "-e", multiple=True, metavar="PATH", help="Install a local project in editable mode.")
    @click.option("--upgrade", "-U", is_flag=True, help="Upgrade what is already installed.")
    @click.option("--dry-run", is_flag=True, help="Only show what pip would install (pip --dry-run).")
    @click.option("--force", is_flag=True, help="Install even when not running in a virtual environment.")
    @click.pass_obj
    def install(obj, requirements: tuple[str, ...], editable: tuple[str, ...], upgrade: bool, dry_run: bool,
                force: bool) -> None:
        """Install deployer plugins into the environment running greentic-deployer (pip), then list plugins.

        REQUIREMENTS are short names (local-process, k8s, aws, conformance), any pip requirement
        (`greentic-deployer-k8s[sandbox]>=0.1`), a path or a URL. Runs `python -m pip install`
        with this interpreter, never through a shell; refuses outside a virtual environment
        unless --force.
        """
        import subprocess

        # pip talks to the terminal; with --json its output goes to stderr so stdout stays one document
        result = install_plugins(requirements, editable=editable, upgrade=upgrade, dry_run=dry_run, force=force,
                                 stdout=sys.stderr if obj.json_mode else None)
        # A fresh process lists the plugins: only it sees .pth files (editable installs) pip just wrote.
        argv = [sys.executable, "-m", "greentic_core"]
        for name in obj.no_plugin:
            argv += ["--no-plugin", name]
        if obj.json_mode:
            listed = subprocess.run([*argv, "--json", "plugins", "list"], capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL, check=False)
            try:
                result["plugins"] = json.loads(listed.stdout).get("plugins", [])
            except ValueError:  # the install worked; say why the listing did not
                result["plugins"] = None
                result["list_error"] = (listed.stderr or listed.stdout).strip()[-2000:]
            obj.out.result({"ok": True, **result})
            return
        key = "would_install" if dry_run else "installed"
        what = ", ".join(result[key]) or "nothing new"
        obj.out.info(("pip would install: " if dry_run else "installed: ") + what)
        sys.stdout.flush()
        subprocess.run([*argv, "plugins", "list"], stdin=subprocess.DEVNULL, check=False)

    @plugins.command("doctor")
    @click.pass_obj
    def doctor(obj) -> None:
        """Check every installed plugin: imports, keeps the contract, admits this core, dependencies installed.

        A missing conformance sandbox and an unfinished scaffold are warnings. Exit status 1
        when any plugin fails a check.
        """
        from .plugins_commands import NO_PLUGINS_HINT

        reports = [doctor_record(record) for record in obj.registry().records()]
        ok = all(r["ok"] for r in reports)
        data: dict[str, Any] = {"ok": ok, "plugins": reports}
        if not reports:
            data["hint"] = NO_PLUGINS_HINT

        def human(console) -> None:
            if not reports:
                console.print(NO_PLUGINS_HINT, markup=False)
                return
            width = max(len(c["check"]) for r in reports for c in r["checks"])
            for r in reports:
                verdict = "ok" if r["ok"] else "FAILED"
                console.print(f"{r['name']}  ({r['distribution'] or '-'} {r['version'] or '-'}): {verdict}", markup=False)
                for c in r["checks"]:
                    label = c["status"].upper() if c["status"] == FAIL else c["status"]
                    console.print(f"  {label:<4}  {c['check']:<{width}}  {c['message']}", markup=False)
            failed = [r["name"] for r in reports if not r["ok"]]
            if failed:
                console.print(f"{len(failed)} of {len(reports)} plugins failed: {', '.join(failed)}", markup=False)
            else:
                console.print(f"all {len(reports)} plugins ok", markup=False)

        obj.out.result(data, human)
        if not ok:
            raise click.exceptions.Exit(1)
