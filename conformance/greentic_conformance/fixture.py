"""The fixture environments of the suite, built through greentic-core's pure engines.

Everything here goes through :mod:`greentic_core.lifecycle` and :mod:`greentic_core.traffic`,
so every environment handed to a provider validates exactly like one the operator would pass.
The only exceptions are the deliberately broken variants (:func:`with_invalid_split`,
:func:`without_split`), built with ``attrs.evolve`` because the engines refuse to produce them.

The workload of every fixture revision is :mod:`greentic_conformance.app`: a stdlib HTTP app
run with the current interpreter (``command``) that container providers find as ``image``.

:class:`World` plays the operator for one check: it records a change through the engines and
calls the bound provider with the environment the operator would pass, in the operator's
order (provider first, then record), and it remembers every revision it handed to the
provider so that they can all be archived afterwards.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs

from greentic_core import (
    BundleDeployment,
    CapabilitySlot,
    Environment,
    HostConfig,
    Observation,
    PackDescriptor,
    Workload,
    mint_revision_id,
)
from greentic_core import lifecycle, traffic
from greentic_core.errors import EngineError
from greentic_core.spec import EnvPackBinding, Lifecycle, TrafficSplitEntry

#: Timestamps are fixed: nothing in a fixture depends on the clock.
FIXED_NOW = datetime(2026, 1, 1, 0, 0, 0, tzinfo=timezone.utc)
#: The sentinel of upstream's bench: a well-formed revision id that no fixture ever contains.
UNKNOWN_REVISION_ID = "0000000000000000000000FFFF"
#: Default ``drain_seconds`` of fixture revisions (small: nothing is in flight in the suite).
DRAIN_SECONDS = 1

APP_IMAGE = "registry.example.com/greentic/conformance-app:1.0.0"
APP_WORKLOAD = Workload(
    image=APP_IMAGE,
    command=(sys.executable, "-m", "greentic_conformance.app"),
    port=8080,
    health_path="/healthz",
    replicas=1,
)
#: A workload that cannot run anywhere: the executable does not exist and the image registry
#: is under the reserved ``.invalid`` top-level domain (RFC 2606), so no pull can succeed.
BROKEN_WORKLOAD = Workload(
    image="registry.invalid/greentic/conformance-missing:0.0.0",
    command=("/nonexistent/greentic-conformance/no-such-binary",),
    port=8080,
    health_path="/healthz",
    replicas=1,
)


def new_environment(env_id: str, deployer: PackDescriptor | str, *, name: str | None = None) -> Environment:
    """An environment with nothing deployed, bound to ``deployer`` (``path@version``)."""
    kind = deployer if isinstance(deployer, PackDescriptor) else PackDescriptor.parse(deployer)
    from greentic_core.validation import validate_environment

    env = Environment(
        environment_id=env_id,
        name=name or env_id,
        host_config=HostConfig(env_id=env_id),
        packs=(EnvPackBinding(slot=CapabilitySlot.DEPLOYER, kind=kind, pack_ref=f"pack-{kind.path}",
                              answers_ref="deployer-answers.json", generation=1),),
    )
    validate_environment(env)
    return env


def add_deployment(env: Environment, label: str, *, now: datetime = FIXED_NOW) -> tuple[Environment, BundleDeployment]:
    """A deployment of bundle ``conformance.<label>`` with a host unique to it."""
    from greentic_core import mint_deployment_id

    did = mint_deployment_id()
    host = f"{label}-{did[-10:].lower()}.conformance.local"
    return lifecycle.add_deployment(env, f"conformance.{label}", customer_id="greentic-conformance",
                                    hosts=(host,), deployment_id=did, now=now)


def record_revision(env: Environment, deployment_id: str, *, workload: Workload | None = APP_WORKLOAD,
                    drain_seconds: int = DRAIN_SECONDS, now: datetime = FIXED_NOW) -> tuple[Environment, str]:
    """Record a new ``staged`` revision (no provider involved)."""
    result = lifecycle.stage_revision(env, deployment_id, revision_id=mint_revision_id(), workload=workload,
                                      drain_seconds=drain_seconds, pack_list_lock_ref="pack-list.lock",
                                      now=now)
    return result.env, result.revision.revision_id


def record_ready(env: Environment, revision_id: str, *, now: datetime = FIXED_NOW) -> Environment:
    return lifecycle.warm_revision(env, revision_id, now=now).env


_keys = iter(range(1, 1 << 62))


def record_split(env: Environment, deployment_id: str, weights: Iterable[tuple[str, int]], *,
                 now: datetime = FIXED_NOW) -> Environment:
    """Record a split through the traffic engine (every entry must be recorded ``ready``)."""
    return traffic.set_traffic_split(env, deployment_id, list(weights), idempotency_key=f"conformance-{next(_keys)}",
                                     updated_by="operator://conformance/greentic-conformance", now=now).env


@attrs.frozen
class FixtureEnv:
    """Upstream's fixture, our way: two deployments, two revisions each, all recorded ready.

    Splits: A = {a1: 3333, a2: 6667} (weights that are not round, so a provider that rounds
    is seen), B = {b1: 10000, b2: 0} (a zero-weight entry, kept by the projection).
    """

    env: Environment
    dep_a: str
    dep_b: str
    a1: str
    a2: str
    b1: str
    b2: str


def build_fixture_env(env_id: str, deployer: PackDescriptor | str, *, workload: Workload = APP_WORKLOAD,
                      drain_seconds: int = DRAIN_SECONDS, now: datetime = FIXED_NOW) -> FixtureEnv:
    env = new_environment(env_id, deployer)
    env, dep_a = add_deployment(env, "a", now=now)
    env, dep_b = add_deployment(env, "b", now=now)
    rids = []
    for dep in (dep_a.deployment_id, dep_a.deployment_id, dep_b.deployment_id, dep_b.deployment_id):
        env, rid = record_revision(env, dep, workload=workload, drain_seconds=drain_seconds, now=now)
        env = record_ready(env, rid, now=now)
        rids.append(rid)
    a1, a2, b1, b2 = rids
    env = record_split(env, dep_a.deployment_id, [(a1, 3333), (a2, 6667)], now=now)
    env = record_split(env, dep_b.deployment_id, [(b1, 10000), (b2, 0)], now=now)
    return FixtureEnv(env, dep_a.deployment_id, dep_b.deployment_id, a1, a2, b1, b2)


def with_invalid_split(env: Environment, deployment_id: str, entries: Sequence[tuple[str, int]]) -> Environment:
    """``env`` with the split of ``deployment_id`` replaced by ``entries`` as given (not validated)."""
    splits = tuple(
        attrs.evolve(s, entries=tuple(TrafficSplitEntry(revision_id=r, weight_bps=w) for r, w in entries))
        if s.deployment_id == deployment_id else s
        for s in env.traffic_splits
    )
    return attrs.evolve(env, traffic_splits=splits)


def without_split(env: Environment, deployment_id: str) -> Environment:
    return attrs.evolve(env, traffic_splits=tuple(s for s in env.traffic_splits if s.deployment_id != deployment_id))


# --------------------------------------------------------------------------- observation


@attrs.frozen
class Snapshot:
    """The part of an observation the rules talk about, restricted to one world's ids.

    ``revisions``: revision id -> (present, serving). ``weights``: deployment id -> the
    non-zero weights the provider enforces (a provider may or may not list zero weights).
    """

    revisions: Mapping[str, tuple[bool, bool]]
    weights: Mapping[str, Mapping[str, int]]

    def revision(self, revision_id: str) -> tuple[bool, bool]:
        return self.revisions.get(revision_id, (False, False))

    def diff(self, other: "Snapshot") -> str:
        """A one-line description of what differs from ``other`` (empty when equal)."""
        parts = []
        for rid in sorted(set(self.revisions) | set(other.revisions)):
            a, b = self.revision(rid), other.revision(rid)
            if a != b:
                parts.append(f"revision {rid}: present/serving {a[0]}/{a[1]} -> {b[0]}/{b[1]}")
        for did in sorted(set(self.weights) | set(other.weights)):
            a, b = dict(self.weights.get(did, {})), dict(other.weights.get(did, {}))
            if a != b:
                parts.append(f"deployment {did}: weights {a or '{}'} -> {b or '{}'}")
        return "; ".join(parts)


def snapshot(observation: Observation, revision_ids: Iterable[str], deployment_ids: Iterable[str]) -> Snapshot:
    revisions = {}
    for rid in revision_ids:
        seen = observation.revision(rid)
        revisions[rid] = (bool(seen.present), bool(seen.serving))
    weights = {did: {r: int(w) for r, w in observation.weights(did).items() if int(w) != 0}
               for did in deployment_ids}
    return Snapshot(revisions, weights)


# --------------------------------------------------------------------------- the operator stand-in


@attrs.define(eq=False)
class World:
    """One check's environment and the provider calls on it, in the operator's order.

    ``touched`` holds every revision id handed to the provider, for the teardown.
    """

    env: Environment
    deployer: Any  # greentic_core.contract.BoundDeployer
    timeout: float | None = None
    touched: set[str] = attrs.field(factory=set)
    on_touch: Callable[[str], None] | None = None

    # -- recording only (no provider call) ----------------------------------------------

    def add_deployment(self, label: str) -> str:
        self.env, dep = add_deployment(self.env, label)
        return dep.deployment_id

    def record_revision(self, deployment_id: str, *, workload: Workload | None = APP_WORKLOAD,
                        drain_seconds: int = DRAIN_SECONDS) -> str:
        self.env, rid = record_revision(self.env, deployment_id, workload=workload, drain_seconds=drain_seconds)
        return rid

    def record_ready(self, revision_id: str) -> None:
        self.env = record_ready(self.env, revision_id)

    def record_split(self, deployment_id: str, weights: Iterable[tuple[str, int]]) -> None:
        self.env = record_split(self.env, deployment_id, weights)

    def lifecycle(self, revision_id: str) -> Lifecycle:
        revision = self.env.revision(revision_id)
        assert revision is not None
        return revision.lifecycle

    # -- provider calls -----------------------------------------------------------------

    def _touch(self, revision_id: str) -> None:
        self.touched.add(revision_id)
        if self.on_touch is not None:
            self.on_touch(revision_id)

    def stage(self, revision_id: str, env: Environment | None = None):
        self._touch(revision_id)
        return self.deployer.stage(env or self.env, revision_id, timeout=self.timeout)

    def warm(self, revision_id: str, env: Environment | None = None):
        """Provider warm, then (on success) record ``ready`` as the operator does."""
        self._touch(revision_id)
        outcome = self.deployer.warm(env or self.env, revision_id, timeout=self.timeout)
        if env is None and self.lifecycle(revision_id) in (Lifecycle.STAGED, Lifecycle.FAILED, Lifecycle.READY):
            self.env = record_ready(self.env, revision_id)
        return outcome

    def stage_and_warm(self, deployment_id: str, *, drain_seconds: int = DRAIN_SECONDS) -> str:
        rid = self.record_revision(deployment_id, drain_seconds=drain_seconds)
        self.stage(rid)
        self.warm(rid)
        return rid

    def apply(self, deployment_id: str, env: Environment | None = None):
        return self.deployer.apply_traffic_split(env or self.env, deployment_id, timeout=self.timeout)

    def set_split(self, deployment_id: str, weights: Iterable[tuple[str, int]]):
        """Record the split, then apply it (``traffic set``)."""
        self.record_split(deployment_id, weights)
        return self.apply(deployment_id)

    def drain(self, revision_id: str, env: Environment | None = None):
        """Provider drain with the environment as recorded, then record ``inactive``.

        As the operator does, the drain is first checked by the engine (a revision with
        weight in its split is refused) when the revision is recorded ``ready``.
        """
        self._touch(revision_id)
        if env is not None:
            return self.deployer.drain(env, revision_id, timeout=self.timeout)
        drained = None
        if self.lifecycle(revision_id) == Lifecycle.READY:
            drained = lifecycle.drain_revision(self.env, revision_id, now=FIXED_NOW)
        outcome = self.deployer.drain(self.env, revision_id, timeout=self.timeout)
        if drained is not None:
            self.env = lifecycle.complete_drain(drained.env, revision_id, now=FIXED_NOW).env
        return outcome

    def archive(self, revision_id: str, env: Environment | None = None):
        """Provider archive with the environment as recorded, then record ``archived``."""
        self._touch(revision_id)
        if env is not None:
            return self.deployer.archive(env, revision_id, timeout=self.timeout)
        try:
            archived = lifecycle.archive_revision(self.env, revision_id, now=FIXED_NOW).env
        except EngineError:
            archived = None
        outcome = self.deployer.archive(self.env, revision_id, timeout=self.timeout)
        if archived is not None:
            self.env = archived
        return outcome

    def observe(self, env: Environment | None = None) -> Observation:
        return self.deployer.observe(env or self.env)

    def snapshot(self, env: Environment | None = None) -> Snapshot:
        env = env or self.env
        return snapshot(self.observe(env), [r.revision_id for r in env.revisions],
                        [b.deployment_id for b in env.bundles])

    # -- teardown -----------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Archive every revision the provider was given; return the errors (never raise)."""
        problems = []
        env = self.env
        for rid in sorted(self.touched):
            if env.revision(rid) is None:
                continue
            try:
                self.deployer.archive(env, rid, timeout=self.timeout)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a failing check must not also fail its teardown
                problems.append(f"archive {rid}: {type(exc).__name__}: {exc}")
        return problems


def capture(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``call``; return (result, None), or (None, the exception) for anything but KeyboardInterrupt."""
    from .bounds import CallDidNotReturn

    try:
        return call(), None
    except (KeyboardInterrupt, CallDidNotReturn):  # a call past its deadline fails the check itself
        raise
    except BaseException as exc:  # noqa: BLE001 - the point is to see what escapes
        return None, exc


__all__ = [
    "APP_IMAGE",
    "APP_WORKLOAD",
    "BROKEN_WORKLOAD",
    "DRAIN_SECONDS",
    "FIXED_NOW",
    "FixtureEnv",
    "Snapshot",
    "UNKNOWN_REVISION_ID",
    "World",
    "add_deployment",
    "build_fixture_env",
    "capture",
    "new_environment",
    "record_ready",
    "record_revision",
    "record_split",
    "snapshot",
    "with_invalid_split",
    "without_split",
]
