"""Write real installed distributions (``*.dist-info`` + modules) for plugin tests.

Nothing here mocks ``importlib.metadata``: :func:`make_dist` lays out exactly what ``pip
install --target DIR`` would leave behind, so a directory on ``sys.path`` (or on
``PYTHONPATH`` of a subprocess) makes the distribution visible to the registry's ordinary
discovery.

    root = tmp_path / "site"
    make_dist(root, "acme-deployer-test", "1.2.0",
              modules={"acme_good.py": good_plugin_source(version="1.2.0")},
              entry_points={"acme.deployer.test": "acme_good"})

:func:`good_plugin_source` returns the source of a complete, well-behaved in-memory deployer.
It records every hook call it receives in its module-level ``CALLS`` list and, when the
environment variable named by :data:`CALL_LOG_ENV` is set, also appends one JSON line per call
to that file (so a subprocess can be checked too). Tests prove a hook was or was not entered by
reading that record. The ``extra`` source is appended at the end of the module, so it can
replace a hook (define it again), remove one (``del greentic_drain_revision``) or add
import-time behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Iterable, Mapping

GROUP = "greentic.deployers"
CALL_LOG_ENV = "GREENTIC_TEST_CALL_LOG"
VERBS = (
    "greentic_stage_revision",
    "greentic_warm_revision",
    "greentic_drain_revision",
    "greentic_archive_revision",
    "greentic_apply_traffic_split",
    "greentic_observe",
    "greentic_report_runtime_config",
    "greentic_preflight",
    "greentic_render",
)


def normalize_dist_name(name: str) -> str:
    """The file-name form of a distribution name (``Acme.Deployer-X`` -> ``acme_deployer_x``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_line(relpath: str, data: bytes | None) -> str:
    if data is None:
        return f"{relpath},,"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{relpath},sha256={digest},{len(data)}"


def make_dist(
    root: Path,
    dist_name: str,
    version: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, str],
    group: str = GROUP,
    *,
    extra_groups: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Install a distribution into ``root`` the way pip would; return its ``.dist-info`` path.

    ``modules`` maps a file name relative to ``root`` (``"acme_good.py"``, ``"acme/__init__.py"``;
    ``.py`` is added when missing) to its source. ``entry_points`` maps entry-point names to
    values (``"module:obj"`` or ``"module"``) in ``group``; ``extra_groups`` adds other groups.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, bytes | None]] = []
    for filename, source in modules.items():
        rel = filename if filename.endswith(".py") else filename + ".py"
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = textwrap.dedent(source).encode()
        target.write_bytes(data)
        written.append((rel, data))

    info_name = f"{normalize_dist_name(dist_name)}-{version}.dist-info"
    info = root / info_name
    info.mkdir()
    groups: dict[str, Mapping[str, str]] = {group: entry_points} if entry_points else {}
    groups.update(extra_groups or {})
    ep_text = "".join(
        f"[{name}]\n" + "".join(f"{ep} = {value}\n" for ep, value in eps.items()) + "\n"
        for name, eps in groups.items()
    )
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
                    f"Summary: test distribution {dist_name}\n",
        "entry_points.txt": ep_text,
        "INSTALLER": "greentic-tests\n",
    }
    for name, text in files.items():
        data = text.encode()
        (info / name).write_bytes(data)
        written.append((f"{info_name}/{name}", data))
    written.append((f"{info_name}/RECORD", None))
    (info / "RECORD").write_text("".join(_record_line(rel, data) + "\n" for rel, data in written))
    return info


def module_names(modules: Iterable[str]) -> list[str]:
    """The importable names of ``make_dist`` module file names (to drop them from sys.modules)."""
    names = []
    for filename in modules:
        rel = filename[:-3] if filename.endswith(".py") else filename
        parts = rel.split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def forget_modules(prefixes: Iterable[str], under: Path | None = None) -> None:
    """Remove modules (and their submodules) from ``sys.modules`` so a later test imports afresh.

    ``under``: only the modules loaded from files in that directory. A test distribution may
    shadow a real package name (a fake ``botocore``); forgetting by name alone would also drop
    the real package's submodules, and a later import of them would make new exception classes
    that ``except`` clauses written against the old ones no longer catch."""
    prefixes = tuple(prefixes)
    root = str(under.resolve()) + "/" if under is not None else None
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            module = sys.modules[name]
            origin = getattr(module, "__file__", None) or ""
            if root is None or str(Path(origin).resolve()).startswith(root):
                del sys.modules[name]


def good_plugin_source(
    path: str = "acme.deployer.test",
    version: str = "1.0.0",
    requires_core: str = ">=0.1,<1",
    extra: str = "",
) -> str:
    """Source of a complete, well-behaved in-memory deployer plugin module.

    State lives in the module (``STATE``); every hook call is appended to ``CALLS`` as
    ``{"hook": name, ...identifying arguments}`` and, when ``$GREENTIC_TEST_CALL_LOG`` names a
    file, written there as a JSON line. Its answers schema accepts ``region`` (string) and
    ``token`` (a ``writeOnly`` secret that must start with ``tok-``) and no other key
    (``ANSWERS_SCHEMA``, which ``extra`` may change).
    """
    body = f'''
"""Test deployer {path} (generated by tests/plugin_factory.py)."""

import contextlib
import json
import os

from greentic_core import (
    ArchiveOutcome,
    Capabilities,
    CheckStatus,
    DeployerDescriptor,
    DeploymentObservation,
    DrainOutcome,
    Observation,
    PreflightCheck,
    RevisionObservation,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
    hookimpl,
)

PATH = {path!r}
VERSION = {version!r}
CALLS = []
STATE = {{"revisions": {{}}, "routes": {{}}}}
ANSWERS_SCHEMA = {{
    "type": "object",
    "properties": {{
        "region": {{"type": "string"}},
        "token": {{"type": "string", "pattern": "^tok-", "writeOnly": True}},
    }},
    "additionalProperties": False,
}}


def _record(hook, **info):
    entry = {{"hook": hook, "plugin": PATH, **info}}
    CALLS.append(entry)
    log = os.environ.get({CALL_LOG_ENV!r})
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\\n")


@hookimpl
def greentic_deployer_descriptor():
    _record("greentic_deployer_descriptor")
    return DeployerDescriptor(
        path=PATH,
        version=VERSION,
        requires_core={requires_core!r},
        summary="in-memory test deployer",
        capabilities=Capabilities(weight_resolution_bps=1, drain_slack_seconds=0.0),
        answers_schema=ANSWERS_SCHEMA,
    )


@hookimpl
def greentic_stage_revision(env, revision_id, answers):
    _record("greentic_stage_revision", revision_id=revision_id)
    STATE["revisions"].setdefault(revision_id, {{"serving": False}})
    return StageOutcome()


@hookimpl
def greentic_warm_revision(env, revision_id, answers, state_dir):
    _record("greentic_warm_revision", revision_id=revision_id, answers=dict(answers),
            state_dir=None if state_dir is None else str(state_dir))
    STATE["revisions"][revision_id] = {{"serving": True}}
    return WarmOutcome(detail={{"revision_id": revision_id}})


@hookimpl
def greentic_drain_revision(env, revision_id):
    _record("greentic_drain_revision", revision_id=revision_id)
    if revision_id in STATE["revisions"]:
        STATE["revisions"][revision_id] = {{"serving": False}}
    return DrainOutcome()


@hookimpl
def greentic_archive_revision(env, revision_id):
    _record("greentic_archive_revision", revision_id=revision_id)
    STATE["revisions"].pop(revision_id, None)
    return ArchiveOutcome()


@hookimpl
def greentic_apply_traffic_split(env, deployment_id, answers, progress):
    _record("greentic_apply_traffic_split", deployment_id=deployment_id)
    split = env.split_for(deployment_id)
    progress("routing " + deployment_id)
    STATE["routes"][deployment_id] = {{e.revision_id: e.weight_bps for e in split.entries}}
    return TrafficSplitOutcome(applied_deployment_id=deployment_id, applied_entries=split.entries)


@hookimpl
def greentic_observe(env, answers):
    _record("greentic_observe")
    return Observation(
        revisions={{
            rid: RevisionObservation(revision_id=rid, present=True, serving=s["serving"])
            for rid, s in STATE["revisions"].items()
        }},
        deployments={{
            did: DeploymentObservation(deployment_id=did, weights=dict(w))
            for did, w in STATE["routes"].items()
        }},
    )


@hookimpl
def greentic_preflight(env, answers):
    _record("greentic_preflight")
    return [PreflightCheck(name="memory", status=CheckStatus.PASS, message="always available")]


@hookimpl
def greentic_conformance_sandbox(workdir):
    _record("greentic_conformance_sandbox", workdir=str(workdir))

    @contextlib.contextmanager
    def sandbox():
        STATE["revisions"].clear()
        STATE["routes"].clear()
        yield {{"region": "sandbox"}}
        STATE["revisions"].clear()
        STATE["routes"].clear()

    return sandbox()
'''
    return body + ("\n# ---- extra\n" + textwrap.dedent(extra) + "\n" if extra else "")


def marker_source(marker: Path) -> str:
    """Extra module source that writes ``marker`` when the module is imported."""
    return f"import pathlib as _pathlib\n_pathlib.Path({str(marker)!r}).write_text('imported')\n"


def site_without_deployers(mirror: Path) -> list[str]:
    """An argv prefix running this interpreter on its own site-packages minus every deployer plugin.

    ``mirror`` receives symlinks to everything in the interpreter's site-packages except the
    distributions that declare a ``greentic.deployers`` entry point (and the files their RECORD
    lists), so a subprocess sees exactly this environment with no deployer installed, whatever
    else the developer has installed. Append the CLI arguments to the returned list.
    """
    import site

    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in site.getsitepackages() if Path(d).is_dir() and d in sys.path]
    for directory in dirs:
        excluded: set[str] = set()
        for info in directory.glob("*.dist-info"):
            eps = info / "entry_points.txt"
            if eps.is_file() and f"[{GROUP}]" in eps.read_text(errors="replace"):
                excluded.add(info.name)
                record = info / "RECORD"
                if record.is_file():
                    for line in record.read_text(errors="replace").splitlines():
                        top = line.split(",", 1)[0].split("/", 1)[0]
                        if top and not top.startswith(".."):
                            excluded.add(top)
        for entry in directory.iterdir():
            link = mirror / entry.name
            if entry.name in excluded or link.exists() or entry.name == "__pycache__":
                continue
            os.symlink(entry, link)
    boot = (
        "import runpy, site, sys; site.addsitedir(sys.argv.pop(1)); "
        "runpy.run_module('greentic_core', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-S", "-c", boot, str(mirror)]
