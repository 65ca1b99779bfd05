"""Environments for the aws-ecs tests (plain helpers; the fixtures live in conftest.py).

A module of its own, with a unique name, so test modules can import it whatever other
``conftest`` modules the same pytest session has loaded.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

import attrs

from greentic_core import (
    Environment,
    HostConfig,
    Lifecycle,
    Revision,
    TrafficSplit,
    TrafficSplitEntry,
    Workload,
    mint_deployment_id,
    mint_revision_id,
)

NOW = datetime(2026, 5, 19, 12, 0, 0, tzinfo=timezone.utc)
KIND = "greentic.deployer.aws-ecs@0.1.0"


# --------------------------------------------------------------------------- environments


def revision(env_id: str, deployment_id: str, sequence: int = 1, *, image: str | None = None,
             drain_seconds: int = 0, lifecycle: Lifecycle = Lifecycle.READY) -> Revision:
    rid = mint_revision_id()
    return Revision(
        revision_id=rid, env_id=env_id, bundle_id="shop", deployment_id=deployment_id, sequence=sequence,
        created_at=NOW, bundle_digest="sha256:ab12", pack_list=(), pack_list_lock_ref=f"revisions/{rid}/pack-list.lock",
        config_digest="sha256:00", signature_sidecar_ref="rev.sig", lifecycle=lifecycle, staged_at=NOW,
        drain_seconds=drain_seconds, workload=Workload(image=image) if image else None,
    )


def split(env_id: str, deployment_id: str, weights: Iterable[tuple[Revision | str, int]]) -> TrafficSplit:
    entries = tuple(TrafficSplitEntry(revision_id=r if isinstance(r, str) else r.revision_id, weight_bps=w)
                    for r, w in weights)
    return TrafficSplit(env_id=env_id, deployment_id=deployment_id, bundle_id="shop", generation=1, entries=entries,
                        updated_at=NOW, updated_by="tests", idempotency_key="k", authorization_ref="auth.json")


@attrs.define
class World:
    """A mutable handle on a frozen environment, for tests that walk a scenario."""

    env: Environment

    @property
    def env_id(self) -> str:
        return self.env.environment_id

    def new_deployment(self, revisions: int = 1, **kwargs: Any) -> tuple[str, list[Revision]]:
        deployment_id = mint_deployment_id()
        revs = [revision(self.env_id, deployment_id, i + 1, **kwargs) for i in range(revisions)]
        self.env = attrs.evolve(self.env, revisions=self.env.revisions + tuple(revs))
        return deployment_id, revs

    def add_revision(self, deployment_id: str, **kwargs: Any) -> Revision:
        rev = revision(self.env_id, deployment_id, len(self.env.revisions) + 1, **kwargs)
        self.env = attrs.evolve(self.env, revisions=self.env.revisions + (rev,))
        return rev

    def set_split(self, deployment_id: str, weights: Iterable[tuple[Revision | str, int]]) -> None:
        others = tuple(s for s in self.env.traffic_splits if s.deployment_id != deployment_id)
        self.env = attrs.evolve(self.env, traffic_splits=others + (split(self.env_id, deployment_id, weights),))

    def set_lifecycle(self, rev: Revision, lifecycle: Lifecycle) -> None:
        self.env = attrs.evolve(self.env, revisions=tuple(
            attrs.evolve(r, lifecycle=lifecycle) if r.revision_id == rev.revision_id else r
            for r in self.env.revisions))


def make_world(env_id: str = "test-env") -> World:
    return World(Environment(environment_id=env_id, name=env_id, host_config=HostConfig(env_id=env_id), packs=()))
