"""Small builders for the lifecycle and traffic engine tests (pure values, no store)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs

from greentic_core import lifecycle, traffic
from greentic_core.ids import PackDescriptor
from greentic_core.spec import (
    CapabilitySlot,
    Environment,
    EnvPackBinding,
    HostConfig,
    Lifecycle,
    TrafficSplit,
    TrafficSplitEntry,
)

NOW = datetime(2026, 5, 19, 12, 0, tzinfo=timezone.utc)
ACTOR = "operator://local/test"


def at(minutes: int) -> datetime:
    return NOW + timedelta(minutes=minutes)


def empty_env(env_id: str = "local") -> Environment:
    return Environment(
        environment_id=env_id,
        name=env_id,
        host_config=HostConfig(env_id=env_id),
        packs=(
            EnvPackBinding(
                slot=CapabilitySlot.DEPLOYER,
                kind=PackDescriptor.parse("greentic.deployer.local-process@1.0.0"),
                pack_ref="pack-deployer-local",
            ),
        ),
    )


def with_deployment(env: Environment, bundle_id: str = "shop", **kwargs) -> tuple[Environment, str]:
    env, deployment = lifecycle.add_deployment(env, bundle_id, now=NOW, **kwargs)
    return env, deployment.deployment_id


def set_lifecycle(env: Environment, revision_id: str, state: Lifecycle | str) -> Environment:
    """Force a recorded lifecycle (test setup only: bypasses the matrix)."""
    return attrs.evolve(
        env,
        revisions=tuple(
            attrs.evolve(r, lifecycle=Lifecycle(state)) if r.revision_id == revision_id else r for r in env.revisions
        ),
    )


def with_revision(
    env: Environment, deployment_id: str, state: Lifecycle | str = Lifecycle.READY
) -> tuple[Environment, str]:
    result = lifecycle.stage_revision(env, deployment_id, now=NOW)
    rid = result.revision.revision_id
    return set_lifecycle(result.env, rid, state), rid


def put_split(env: Environment, deployment_id: str, entries: list[tuple[str, int]], **fields) -> Environment:
    """Record a split directly (test setup only: skips admission), replacing any existing one."""
    deployment = env.deployment(deployment_id)
    assert deployment is not None
    split = TrafficSplit(
        env_id=env.environment_id,
        deployment_id=deployment_id,
        bundle_id=deployment.bundle_id,
        generation=fields.pop("generation", 0),
        entries=tuple(TrafficSplitEntry(revision_id=r, weight_bps=w) for r, w in entries),
        updated_at=fields.pop("updated_at", NOW),
        updated_by=fields.pop("updated_by", ACTOR),
        idempotency_key=fields.pop("idempotency_key", "setup"),
        authorization_ref=fields.pop("authorization_ref", "auth.json"),
        **fields,
    )
    others = tuple(s for s in env.traffic_splits if s.deployment_id != deployment_id)
    return attrs.evolve(env, traffic_splits=(*others, split))


def canary_env(
    states: tuple[Lifecycle | str, ...] = (Lifecycle.READY, Lifecycle.READY),
) -> tuple[Environment, str, list[str]]:
    """An env with one deployment and one revision per state given."""
    env, did = with_deployment(empty_env())
    rids = []
    for state in states:
        env, rid = with_revision(env, did, state)
        rids.append(rid)
    return env, did, rids


def set_split(env: Environment, deployment_id: str, entries, key: str, minute: int = 1, **kwargs):
    return traffic.set_traffic_split(
        env, deployment_id, entries, idempotency_key=key, updated_by=ACTOR, now=at(minute), **kwargs
    )
