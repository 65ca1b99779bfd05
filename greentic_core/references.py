"""Naming things on the command line: a deployment or revision from an id, a prefix, a bundle
id or ``latest``. Pure lookups in a loaded environment, apart from the operator so that read
commands (``revision show``, ``traffic show``) need not import the operator's machinery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .errors import GreenticError

if TYPE_CHECKING:
    from .spec import Environment


class AmbiguousReference(GreenticError):
    kind = "usage"
    exit_code = 2


class UnknownReference(GreenticError):
    kind = "not_found"
    exit_code = 4


class InvalidInput(GreenticError):
    kind = "usage"
    exit_code = 2


def resolve_deployment(env: Environment, ref: str) -> str:
    """A deployment id from a full id, a unique prefix, or a bundle id."""
    ref_upper = ref.upper()
    ids = [b.deployment_id for b in env.bundles]
    if ref_upper in ids:
        return ref_upper
    by_bundle = [b.deployment_id for b in env.bundles if b.bundle_id == ref]
    if len(by_bundle) == 1:
        return by_bundle[0]
    return _unique_prefix("deployment", ref, ids, env.environment_id,
                          hint="list deployments with `greentic-deployer deployment list ENV`")


def resolve_revision(env: Environment, ref: str, deployment_id: str | None = None) -> str:
    """A revision id from a full id, a unique prefix, or ``latest`` (newest of one deployment)."""
    if ref.lower() == "latest":
        if deployment_id is None:
            if len(env.bundles) != 1:
                raise AmbiguousReference(
                    "`latest` needs one deployment, and this environment has "
                    f"{len(env.bundles)}", hint="name the deployment with --deployment, or give a revision id or prefix")
            deployment_id = env.bundles[0].deployment_id
        candidates = [r for r in env.revisions if r.deployment_id == deployment_id]
        if not candidates:
            raise UnknownReference(f"deployment {deployment_id} has no revisions",
                                   hint="stage one with `greentic-deployer revision stage`")
        return max(candidates, key=lambda r: (r.sequence, r.revision_id)).revision_id
    pool = [r.revision_id for r in env.revisions if deployment_id is None or r.deployment_id == deployment_id]
    if ref.upper() in pool:
        return ref.upper()
    return _unique_prefix("revision", ref, pool, env.environment_id,
                          hint="list revisions with `greentic-deployer revision list ENV`")


def _unique_prefix(what: str, ref: str, pool: Sequence[str], env_id: str, *, hint: str) -> str:
    if not ref:
        raise InvalidInput(f"empty {what} id", hint=hint)
    prefix = ref.upper()
    matches = sorted({item for item in pool if item.startswith(prefix)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownReference(f"no {what} matches {ref!r} in environment {env_id!r}", hint=hint)
    shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
    raise AmbiguousReference(f"{what} prefix {ref!r} is ambiguous: matches {len(matches)} ({shown})",
                             hint="give more characters of the id")
