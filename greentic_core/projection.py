"""The runtime-config projection (upstream-spec section 5): pure, total, no I/O.

One block per split entry, in split order then entry order, zero weights kept, no lifecycle
filter (filtering would break a deployment's 10000 sum downstream). References are joined
from the first revision whose revision id *and* deployment id match.
"""

from __future__ import annotations

from .spec import Environment, Revision, RevisionRuntimeBlock, RuntimeConfig


def materialize_runtime_config(env: Environment) -> RuntimeConfig:
    index: dict[tuple[str, str], Revision] = {}
    for revision in env.revisions:
        index.setdefault((revision.revision_id, revision.deployment_id), revision)
    blocks = []
    for split in env.traffic_splits:
        for entry in split.entries:
            revision = index.get((entry.revision_id, split.deployment_id))
            if revision is None:
                pack_list_refs: tuple[str, ...] = ()
                pack_config_refs: tuple[str, ...] = ()
            else:
                pack_list_refs = (revision.pack_list_lock_ref,) if revision.pack_list_lock_ref else ()
                pack_config_refs = revision.pack_config_refs
            blocks.append(
                RevisionRuntimeBlock(
                    deployment_id=split.deployment_id,
                    revision_id=entry.revision_id,
                    bundle_id=split.bundle_id,
                    pack_list_refs=pack_list_refs,
                    pack_config_refs=pack_config_refs,
                    weight_bps=entry.weight_bps,
                )
            )
    return RuntimeConfig(env_id=env.environment_id, revisions=tuple(blocks))
