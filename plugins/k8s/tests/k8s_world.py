"""Environments for the k8s tests, built through greentic-core's own engines (as the operator does).

    world = World("shop")
    dep = world.deployment("shop", hosts=("shop.example.com",))
    r1 = world.revision(dep)                  # recorded staged, then ready
    world.split(dep, (r1, 10000))
    deployer.warm(world.env, r1)
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any

from greentic_core import Environment, HostConfig, PackDescriptor, Workload, mint_revision_id
from greentic_core import lifecycle, traffic
from greentic_core.spec import CapabilitySlot, EnvPackBinding, Lifecycle

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
KIND = "greentic.deployer.k8s@0.1.0"
IMAGE = "registry.example.com/shop/web:1.4.2"
BROKEN_IMAGE = "registry.invalid/shop/missing:0.0.0"  # the sandbox never makes it ready
_keys = itertools.count(1)


class World:
    """A mutable holder of one frozen :class:`Environment`, changed only through the core's engines."""

    def __init__(self, env_id: str = "shop") -> None:
        self.env = Environment(
            environment_id=env_id, name=env_id, host_config=HostConfig(env_id=env_id),
            packs=(EnvPackBinding(slot=CapabilitySlot.DEPLOYER, kind=PackDescriptor.parse(KIND), pack_ref="pack-k8s",
                                  answers_ref="deployer-answers.json", generation=1),))

    @property
    def env_id(self) -> str:
        return self.env.environment_id

    def deployment(self, bundle: str = "shop", *, hosts: tuple[str, ...] = (), prefixes: tuple[str, ...] = ()) -> str:
        self.env, dep = lifecycle.add_deployment(self.env, bundle, hosts=hosts, path_prefixes=prefixes, now=NOW)
        return dep.deployment_id

    def revision(self, deployment_id: str, *, ready: bool = True, drain_seconds: int = 0, image: str | None = IMAGE,
                 **workload: Any) -> str:
        result = lifecycle.stage_revision(
            self.env, deployment_id, revision_id=mint_revision_id(), drain_seconds=drain_seconds,
            pack_list_lock_ref="pack-list.lock", workload=Workload(image=image, **workload), now=NOW)
        self.env = result.env
        rid = result.revision.revision_id
        if ready:
            self.env = lifecycle.warm_revision(self.env, rid, now=NOW).env
        return rid

    def split(self, deployment_id: str, *weights: tuple[str, int]) -> None:
        self.env = traffic.set_traffic_split(self.env, deployment_id, list(weights),
                                             idempotency_key=f"test-{next(_keys)}", updated_by="operator://test/k8s",
                                             now=NOW).env

    def drained(self, revision_id: str) -> None:
        drained = lifecycle.drain_revision(self.env, revision_id, now=NOW).env
        self.env = lifecycle.complete_drain(drained, revision_id, now=NOW).env

    def archived(self, revision_id: str) -> None:
        self.env = lifecycle.archive_revision(self.env, revision_id, now=NOW).env

    def lifecycle(self, revision_id: str) -> Lifecycle:
        return self.env.revision(revision_id).lifecycle
