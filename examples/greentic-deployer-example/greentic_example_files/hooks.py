"""The "files" deployer: every provider verb writes, reads or removes a JSON file.

Nothing runs and no traffic moves; the point is a complete, honest implementation of the
greentic deployer contract small enough to read in one go:

* warm writes ``<root>/<env>/revisions/<revision_id>.json`` (``"serving": true``),
* drain rewrites it with ``"serving": false``, archive removes it,
* apply-traffic-split writes ``<root>/<env>/routes/<deployment_id>.json`` with the weights,
* observe reads those files back (provider truth, not an echo of the environment).

``<root>`` is the ``root`` answer, or the environment's ``state_dir`` when no root is given.
Only the top-level ``greentic_core`` package is imported: it is the whole plugin API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from greentic_core import (
    ArchiveOutcome,
    Capabilities,
    CheckStatus,
    DeployerDescriptor,
    DeploymentObservation,
    DrainOutcome,
    Observation,
    PreflightCheck,
    ProviderError,
    RevisionObservation,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
    hookimpl,
)

from . import __version__

PATH = "acme.deployer.files"
REVISION_SCHEMA = "greentic.example-files.revision.v1"
ROUTE_SCHEMA = "greentic.example-files.route.v1"

ANSWERS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "root": {
            "type": "string",
            "minLength": 1,
            "description": "Directory the marker files go to (default: the environment's state directory).",
        },
    },
    "additionalProperties": False,
}


# --------------------------------------------------------------------------- helpers


def _env_dir(env, answers, state_dir) -> Path:
    root = answers.get("root")
    if root:
        base = Path(root)
    elif state_dir is not None:
        base = Path(state_dir) / "files-deployer"
    else:
        raise ProviderError(
            "the files deployer has no directory to write to",
            hint='set the answer {"root": "/some/dir"} in the environment\'s deployer binding',
        )
    return base / env.environment_id


def _write_json(path: Path, doc: dict) -> None:
    """Atomic write: a reader never sees half a file, a crash leaves the old one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ProviderError(f"cannot write {path}: {exc.strerror or exc}", hint="check the directory permissions") from exc


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProviderError(f"cannot read {path}: {exc}", hint="remove the file and warm again") from exc


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _revision_file(env, revision_id, answers, state_dir) -> Path:
    return _env_dir(env, answers, state_dir) / "revisions" / f"{revision_id}.json"


# --------------------------------------------------------------------------- hooks


@hookimpl
def greentic_deployer_descriptor():
    return DeployerDescriptor(
        path=PATH,
        version=__version__,
        requires_core=">=0.1,<1",
        summary="writes each warmed revision and each traffic split as a JSON file",
        capabilities=Capabilities(weight_resolution_bps=1, drain_slack_seconds=0.0, observes_weights=True),
        answers_schema=ANSWERS_SCHEMA,
    )


@hookimpl
def greentic_stage_revision(env, answers, state_dir):
    directory = _env_dir(env, answers, state_dir)
    try:
        (directory / "revisions").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProviderError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    return StageOutcome(detail={"directory": str(directory)})


@hookimpl
def greentic_warm_revision(env, revision_id, answers, state_dir, progress):
    path = _revision_file(env, revision_id, answers, state_dir)
    current = _read_json(path)
    if current is not None and current.get("serving"):
        return WarmOutcome(detail={"file": str(path), "already_serving": True})  # idempotent
    revision = env.revision(revision_id)
    progress(f"writing {path.name}")
    _write_json(path, {
        "schema": REVISION_SCHEMA,
        "env_id": env.environment_id,
        "revision_id": revision_id,
        "deployment_id": revision.deployment_id,
        "serving": True,
        "warmed_at": _now(),
    })
    return WarmOutcome(detail={"file": str(path)})


@hookimpl
def greentic_drain_revision(env, revision_id, answers, state_dir):
    path = _revision_file(env, revision_id, answers, state_dir)
    current = _read_json(path)
    if current is not None and current.get("serving"):
        _write_json(path, {**current, "serving": False, "drained_at": _now()})
    return DrainOutcome(detail={"file": str(path)})


@hookimpl
def greentic_archive_revision(env, revision_id, answers, state_dir):
    path = _revision_file(env, revision_id, answers, state_dir)
    try:
        path.unlink(missing_ok=True)  # idempotent: archiving twice, or a never-warmed revision, is fine
    except OSError as exc:
        raise ProviderError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    return ArchiveOutcome(detail={"removed": str(path)})


@hookimpl
def greentic_apply_traffic_split(env, deployment_id, answers, state_dir):
    split = env.split_for(deployment_id)  # the core checked it exists and sums to 10000
    path = _env_dir(env, answers, state_dir) / "routes" / f"{deployment_id}.json"
    weights = {entry.revision_id: entry.weight_bps for entry in split.entries}
    _write_json(path, {
        "schema": ROUTE_SCHEMA,
        "env_id": env.environment_id,
        "deployment_id": deployment_id,
        "generation": split.generation,
        "weights_bps": weights,
    })
    return TrafficSplitOutcome(
        applied_deployment_id=deployment_id,
        applied_entries=split.entries,
        provider_weights=weights,
        max_deviation_bps=0,
    )


@hookimpl
def greentic_observe(env, answers, state_dir):
    directory = _env_dir(env, answers, state_dir)
    revisions = {}
    for path in sorted((directory / "revisions").glob("*.json")):
        doc = _read_json(path)
        if doc is not None:
            rid = doc["revision_id"]
            revisions[rid] = RevisionObservation(revision_id=rid, present=True, serving=bool(doc.get("serving")),
                                                 detail=str(path))
    deployments = {}
    for path in sorted((directory / "routes").glob("*.json")):
        doc = _read_json(path)
        if doc is not None:
            did = doc["deployment_id"]
            deployments[did] = DeploymentObservation(deployment_id=did, weights=doc["weights_bps"],
                                                     generation=doc.get("generation"), detail=str(path))
    return Observation(revisions=revisions, deployments=deployments)


@hookimpl
def greentic_preflight(env, answers, state_dir):
    try:
        directory = _env_dir(env, answers, state_dir)
    except ProviderError as exc:
        return [PreflightCheck(name="directory", status=CheckStatus.FAIL, message=exc.message)]
    existing = next((p for p in [directory, *directory.parents] if p.exists()), None)
    if existing is not None and os.access(existing, os.W_OK):
        return [PreflightCheck(name="directory", status=CheckStatus.PASS, message=f"{directory} is writable")]
    return [PreflightCheck(name="directory", status=CheckStatus.FAIL, message=f"{directory} is not writable")]


@hookimpl
def greentic_conformance_sandbox(workdir):
    @contextlib.contextmanager
    def sandbox():
        root = Path(workdir) / "files-deployer-sandbox"
        root.mkdir(parents=True, exist_ok=True)
        try:
            yield {"root": str(root)}
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return sandbox()
