"""The revision lifecycle: the 15-edge matrix, the chain walker and the lifecycle verbs.

Pure code (upstream-spec section 4): nothing here reads a clock, a file or the network. Every
function takes an :class:`~greentic_core.spec.Environment` and returns a *new* one (the spec
types are frozen, changes go through :func:`attrs.evolve`), so a refused operation can never
leave a half-walked environment behind; the caller saves the returned environment.

Saving rule (upstream ``env_mutated()``): after a normal return, save ``result.env``. After
:class:`~greentic_core.errors.HealthGateFailed` (the one error that changes the environment:
the revision is recorded ``failed``), save ``exc.environment`` and then report the error.
After any other error there is nothing to save. Every verb ends by running
:func:`~greentic_core.validation.validate_environment` on the environment it returns, so a
document that was already invalid is refused with its :class:`~greentic_core.errors.SpecError`.

Decisions beyond upstream:

* ``warm_revision`` accepts a ``failed`` revision as a retry: it walks
  ``failed -> staged -> warming -> ready`` (every edge is in the matrix) and runs the health gate
  again. Upstream only warms from ``staged``/``warming``; there a failed revision could only be
  archived and restaged under a new id.
* ``drain_revision`` refuses, with :class:`StillRouted`, a ready revision that still has weight
  in its deployment's split (upstream drains it and the runtime keeps sending it traffic). The
  error names the split and the ``traffic set`` command that moves the weight elsewhere.
* ``complete_drain`` records ``draining -> inactive`` (upstream leaves that edge to the runtime;
  here the operator records it once the provider says the drain finished).
* A :class:`~greentic_core.errors.LifecycleConflict` reports ``actual`` as the *recorded* state
  (nothing was saved, so a half-walked in-memory state would only mislead).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs

from . import ids
from .validation import validated
from .errors import (
    ActiveTrafficReference,
    DeploymentNotFound,
    DuplicateBundle,
    DuplicateRevision,
    EmptyChain,
    EngineError,
    HealthGateFailed,
    InvalidTransition,
    LifecycleConflict,
    RevisionNotFoundInEnv,
)
from .spec import (
    BundleDeployment,
    BundleStatus,
    Environment,
    Lifecycle,
    PackListEntry,
    RevenueShare,
    Revision,
    RouteBinding,
    Workload,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "ARCHIVE_CHAIN",
    "COMPLETE_DRAIN_CHAIN",
    "ChainResult",
    "DRAIN_CHAIN",
    "HealthCheckId",
    "HealthGate",
    "HealthGateFailure",
    "LifecycleResult",
    "StillRouted",
    "WARM_CHAIN",
    "add_deployment",
    "archive_revision",
    "complete_drain",
    "drain_revision",
    "is_valid_transition",
    "stage_revision",
    "walk_revision_chain",
    "warm_revision",
]

L = Lifecycle

# --------------------------------------------------------------------------- the matrix

#: The 15 allowed ``(from, to)`` edges (upstream-spec 4.1). Everything else is refused,
#: including every self-transition and everything out of ``archived``.
ALLOWED_TRANSITIONS: frozenset[tuple[Lifecycle, Lifecycle]] = frozenset(
    {
        (L.INACTIVE, L.STAGED), (L.INACTIVE, L.FAILED), (L.INACTIVE, L.ARCHIVED),
        (L.STAGED, L.WARMING), (L.STAGED, L.FAILED), (L.STAGED, L.ARCHIVED),
        (L.WARMING, L.READY), (L.WARMING, L.FAILED), (L.WARMING, L.ARCHIVED),
        (L.READY, L.DRAINING), (L.READY, L.FAILED), (L.READY, L.ARCHIVED),
        (L.DRAINING, L.INACTIVE),
        (L.FAILED, L.STAGED), (L.FAILED, L.ARCHIVED),
    }
)


def is_valid_transition(from_: Lifecycle | str, to: Lifecycle | str) -> bool:
    """Whether the matrix allows ``from_ -> to`` (either may be given as its string value)."""
    return (Lifecycle(from_), Lifecycle(to)) in ALLOWED_TRANSITIONS


Edge = tuple[Lifecycle, Lifecycle]

#: The chains the verbs walk, in the order the walker tries them.
WARM_CHAIN: tuple[Edge, ...] = ((L.FAILED, L.STAGED), (L.STAGED, L.WARMING), (L.WARMING, L.READY))
DRAIN_CHAIN: tuple[Edge, ...] = ((L.READY, L.DRAINING),)
COMPLETE_DRAIN_CHAIN: tuple[Edge, ...] = ((L.DRAINING, L.INACTIVE),)
ARCHIVE_CHAIN: tuple[Edge, ...] = (
    (L.STAGED, L.ARCHIVED),
    (L.WARMING, L.ARCHIVED),
    (L.READY, L.ARCHIVED),
    (L.FAILED, L.ARCHIVED),
    (L.DRAINING, L.INACTIVE),
    (L.INACTIVE, L.ARCHIVED),
)


# --------------------------------------------------------------------------- health gate


def _check_name(check: Any) -> str:
    return str(check.value) if isinstance(check, enum.Enum) else str(check)


class HealthCheckId(str, enum.Enum):
    """The checks a health gate may report as failed (kebab-case on the wire, as upstream)."""

    ROUTE_TABLE = "route-table"
    RUNTIME_CONFIG = "runtime-config"
    SIGNATURE_STATUS = "signature-status"
    PROVIDER_HEALTH = "provider-health"


@attrs.frozen(kw_only=True)
class HealthGateFailure:
    """What a failing health gate returns: the failed checks (may be empty) and a message."""

    failed_checks: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(_check_name(c) for c in v))
    message: str = "health gate failed"


#: ``gate(env, revision)`` sees the environment with the revision already in its new state.
#: It returns ``None`` (or ``True``) to pass, a :class:`HealthGateFailure` (or ``False``) to fail.
HealthGate = Callable[[Environment, Revision], "HealthGateFailure | bool | None"]


def _gate_failure(outcome: Any) -> HealthGateFailure | None:
    if outcome is None or outcome is True:
        return None
    if outcome is False:
        return HealthGateFailure()
    if isinstance(outcome, HealthGateFailure):
        return outcome
    raise TypeError(f"health gate must return None, a bool or HealthGateFailure, got {type(outcome).__name__}")


# --------------------------------------------------------------------------- results


@attrs.frozen
class LifecycleResult:
    """The outcome of a walk or a verb: the new environment (to save), the revision, the start.

    Unpacks as ``env, revision, starting_lifecycle = result``. ``changed`` is False only when
    the walk took no hop and ``on_final`` changed nothing (an idempotent no-op; ``env`` is then
    the very object passed in).
    """

    env: Environment
    revision: Revision
    starting_lifecycle: Lifecycle
    changed: bool = True

    @property
    def environment(self) -> Environment:
        return self.env

    def __iter__(self) -> Iterator[Any]:
        return iter((self.env, self.revision, self.starting_lifecycle))


ChainResult = LifecycleResult


# --------------------------------------------------------------------------- errors of our own


class StillRouted(EngineError):
    """Drain refused: the revision still receives traffic in its deployment's split."""

    kind = "conflict"


# --------------------------------------------------------------------------- helpers


def _find_revision(env: Environment, revision_id: str) -> tuple[int, Revision]:
    for index, revision in enumerate(env.revisions):
        if revision.revision_id == revision_id:
            return index, revision
    raise RevisionNotFoundInEnv(env.environment_id, revision_id)


def _replace_revision(env: Environment, index: int, revision: Revision) -> Environment:
    revisions = list(env.revisions)
    revisions[index] = revision
    return attrs.evolve(env, revisions=tuple(revisions))


def _split_references(env: Environment, revision_id: str) -> list[dict[str, Any]]:
    return [
        {"deployment_id": split.deployment_id, "bundle_id": split.bundle_id, "weight_bps": entry.weight_bps}
        for split in env.traffic_splits
        for entry in split.entries
        if entry.revision_id == revision_id
    ]


def _weights_arg(entries: Iterable[tuple[str, int]]) -> str:
    return ",".join(f"{rid}={weight}" for rid, weight in entries)


# --------------------------------------------------------------------------- the walker


def walk_revision_chain(
    env: Environment,
    revision_id: str,
    chain: Sequence[tuple[Lifecycle | str, Lifecycle | str]],
    *,
    expected_start: Lifecycle | str | None = None,
    on_final: Callable[[Revision], Revision] | None = None,
    prune_from_splits: bool = False,
    health_gate: HealthGate | None = None,
) -> LifecycleResult:
    """Walk one revision along ``chain`` (upstream-spec 4.2, steps 1-10), purely.

    1. an empty chain raises :class:`EmptyChain`; the final state is the last edge's ``to``;
    2. a missing revision raises :class:`RevisionNotFoundInEnv` (a ``NotFound``);
    3. with ``expected_start``, a start that is neither the final state nor the expected one
       raises :class:`LifecycleConflict` (``expected_starts=[expected]``);
    4. the edges are tried in list order: whenever the current state is an edge's ``from`` the
       edge is checked against the matrix (:class:`InvalidTransition`) and taken;
    5. not at the final state afterwards raises :class:`LifecycleConflict` with
       ``expected_starts`` = every edge's ``from`` in chain order; a revision already at the
       final state passes with no hop (idempotent);
    6. with ``prune_from_splits``, any split entry naming the revision (any weight, any
       deployment) raises :class:`ActiveTrafficReference`;
    7. only if a hop was taken, ``health_gate(env, revision)`` runs on the new state. On failure,
       if the matrix allows ``current -> failed``, :class:`HealthGateFailed` is raised carrying
       ``.environment`` (the environment with the revision recorded ``failed``: save it) and
       ``.revision``; otherwise :class:`InvalidTransition` ``(current, failed)``. ``on_final``
       and the prune do not run;
    8. ``on_final(revision) -> revision`` runs (on the idempotent path too);
    9. with ``prune_from_splits``, the id leaves ``current_revisions`` of every deployment with
       the revision's deployment id (splits are not touched);
    10. the new environment, the revision and the starting lifecycle are returned.
    """
    edges = [(Lifecycle(a), Lifecycle(b)) for a, b in chain]
    if not edges:
        raise EmptyChain(
            "lifecycle chain is empty: nothing to walk",
            hint="pass at least one (from, to) edge",
            revision_id=revision_id,
        )
    final_state = edges[-1][1]

    index, original = _find_revision(env, revision_id)
    start = original.lifecycle

    if expected_start is not None:
        expected = Lifecycle(expected_start)
        if start != final_state and start != expected:
            raise LifecycleConflict(
                f"revision {revision_id} is {start.value}, expected {expected.value}",
                hint="the environment changed since it was read; reload it and retry",
                revision_id=revision_id,
                actual=start.value,
                expected_starts=[expected.value],
            )

    current = start
    hops = 0
    for from_, to in edges:
        if current == from_:
            if not is_valid_transition(from_, to):
                raise InvalidTransition(
                    f"revision {revision_id}: transition {from_.value} -> {to.value} is not permitted",
                    hint="see the lifecycle matrix in the docs",
                    revision_id=revision_id,
                    to=to.value,
                    **{"from": from_.value},
                )
            current = to
            hops += 1

    if current != final_state:
        starts = [from_.value for from_, _ in edges]
        raise LifecycleConflict(
            f"revision {revision_id} is {start.value}; this operation needs it to be "
            + " or ".join(dict.fromkeys(starts))
            + f" (or already {final_state.value})",
            hint="check the revision with `greentic-deployer revision list ENV`",
            revision_id=revision_id,
            actual=start.value,
            expected_starts=starts,
        )

    if prune_from_splits:
        references = _split_references(env, revision_id)
        if references:
            names = ", ".join(
                f"deployment {r['deployment_id']} / bundle {r['bundle_id']} ({r['weight_bps']}bps)" for r in references
            )
            first = references[0]
            raise ActiveTrafficReference(
                f"revision {revision_id} is still listed in a traffic split: {names}",
                hint=(
                    "remove it from the split first, e.g. "
                    f"`greentic-deployer traffic set {env.environment_id} {first['deployment_id']} OTHER_REV=10000`"
                ),
                revision_id=revision_id,
                splits=references,
            )

    revision = attrs.evolve(original, lifecycle=current) if hops else original

    if hops and health_gate is not None:
        failure = _gate_failure(health_gate(_replace_revision(env, index, revision), revision))
        if failure is not None:
            if not is_valid_transition(current, L.FAILED):
                raise InvalidTransition(
                    f"revision {revision_id}: health gate failed but {current.value} -> failed is not permitted",
                    hint="nothing was recorded; check the provider and retry",
                    revision_id=revision_id,
                    to=L.FAILED.value,
                    **{"from": current.value},
                    failed_checks=list(failure.failed_checks),
                    gate_message=failure.message,
                )
            failed = attrs.evolve(revision, lifecycle=L.FAILED)
            failed_env = _replace_revision(env, index, failed)
            checks = ", ".join(failure.failed_checks) or "no check named"
            retry = f"greentic-deployer revision warm {env.environment_id} {revision_id}"
            exc = HealthGateFailed(
                f"revision {revision_id} failed its health gate ({checks}): {failure.message}; recorded as failed",
                hint=f"fix the cause, then retry with `{retry}`",
                revision_id=revision_id,
                failed_checks=list(failure.failed_checks),
                gate_message=failure.message,
            )
            exc.environment = failed_env  # type: ignore[attr-defined]
            exc.revision = failed  # type: ignore[attr-defined]
            raise exc

    if on_final is not None:
        revision = on_final(revision)

    changed = revision != original
    new_env = _replace_revision(env, index, revision) if changed else env

    if prune_from_splits:
        bundles = tuple(
            attrs.evolve(b, current_revisions=tuple(r for r in b.current_revisions if r != revision_id))
            if b.deployment_id == revision.deployment_id and revision_id in b.current_revisions
            else b
            for b in new_env.bundles
        )
        if any(new is not old for new, old in zip(bundles, new_env.bundles)):
            new_env = attrs.evolve(new_env, bundles=bundles)
            changed = True

    return LifecycleResult(new_env, revision, start, changed)


# --------------------------------------------------------------------------- verbs


def add_deployment(
    env: Environment,
    bundle_id: str,
    *,
    customer_id: str = "local-dev",
    hosts: Sequence[str] = (),
    path_prefixes: Sequence[str] = (),
    deployment_id: str | None = None,
    now: datetime,
) -> tuple[Environment, BundleDeployment]:
    """Add a deployment of ``bundle_id`` (upstream engine ``add_bundle``), status ``active``.

    Raises :class:`DuplicateBundle` when the (bundle_id, customer_id) pair, or the given
    deployment id, is already present.
    """
    did = ids.parse_ulid(deployment_id, "DeploymentId") if deployment_id is not None else ids.mint_deployment_id()
    for existing in env.bundles:
        if existing.bundle_id == bundle_id and existing.customer_id == customer_id:
            raise DuplicateBundle(
                f"bundle {bundle_id!r} is already deployed for customer {customer_id!r} "
                f"(deployment {existing.deployment_id})",
                hint="stage a new revision of the existing deployment instead",
                bundle_id=bundle_id,
                customer_id=customer_id,
                deployment_id=existing.deployment_id,
            )
        if existing.deployment_id == did:
            raise DuplicateBundle(
                f"deployment id {did} is already used by bundle {existing.bundle_id!r}",
                hint="leave the deployment id out to mint a new one",
                bundle_id=bundle_id,
                customer_id=customer_id,
                deployment_id=did,
            )
    deployment = BundleDeployment(
        deployment_id=ids.DeploymentId(did),
        env_id=env.environment_id,
        bundle_id=ids.BundleId(bundle_id),
        customer_id=customer_id,
        status=BundleStatus.ACTIVE,
        current_revisions=(),
        route_binding=RouteBinding(hosts=tuple(hosts), path_prefixes=tuple(path_prefixes)),
        revenue_share=(RevenueShare(party_id="greentic", basis_points=10_000),),
        revenue_policy_ref="billing/revenue-policy.v1.json",
        created_at=now,
        authorization_ref="auth.json",
    )
    new_env = attrs.evolve(env, bundles=(*env.bundles, deployment))
    return validated(new_env), deployment


def stage_revision(
    env: Environment,
    deployment_id: str,
    *,
    revision_id: str | None = None,
    bundle_digest: str = "sha256:00",
    bundle_source_uri: str | None = None,
    pack_list: Sequence[PackListEntry] = (),
    pack_list_lock_ref: str | None = None,
    pack_config_refs: Sequence[str] = (),
    config_digest: str = "sha256:00",
    signature_sidecar_ref: str = "rev.sig",
    drain_seconds: int = 30,
    workload: Workload | None = None,
    now: datetime,
) -> LifecycleResult:
    """Append a new ``staged`` revision to a deployment (no walker, as upstream).

    ``sequence`` is the deployment's highest sequence + 1 (so it starts at 1); ``bundle_id``
    comes from the deployment; ``created_at = staged_at = now``. ``current_revisions`` is not
    touched (upstream: stage and warm do not maintain it). Raises :class:`DuplicateRevision`
    for an id already present and :class:`DeploymentNotFound` for an unknown deployment.
    The starting lifecycle reported is ``staged``.
    """
    rid = ids.parse_ulid(revision_id, "RevisionId") if revision_id is not None else ids.mint_revision_id()
    if env.revision(rid) is not None:
        raise DuplicateRevision(
            f"revision {rid} already exists in environment {env.environment_id!r}",
            hint="leave the revision id out to mint a new one",
            revision_id=rid,
        )
    deployment = env.deployment(deployment_id)
    if deployment is None:
        raise DeploymentNotFound(env.environment_id, deployment_id)
    sequence = 1 + max((r.sequence for r in env.revisions if r.deployment_id == deployment.deployment_id), default=0)
    revision = Revision(
        revision_id=ids.RevisionId(rid),
        env_id=env.environment_id,
        bundle_id=deployment.bundle_id,
        deployment_id=deployment.deployment_id,
        sequence=sequence,
        created_at=now,
        bundle_digest=bundle_digest,
        bundle_source_uri=bundle_source_uri,
        pack_list=tuple(pack_list),
        pack_list_lock_ref=pack_list_lock_ref if pack_list_lock_ref is not None else f"revisions/{rid}/pack-list.lock",
        pack_config_refs=tuple(pack_config_refs),
        config_digest=config_digest,
        signature_sidecar_ref=signature_sidecar_ref,
        lifecycle=L.STAGED,
        staged_at=now,
        warmed_at=None,
        drain_seconds=drain_seconds,
        abort_metrics=(),
        workload=workload,
    )
    new_env = attrs.evolve(env, revisions=(*env.revisions, revision))
    return LifecycleResult(validated(new_env), revision, L.STAGED, True)


def warm_revision(
    env: Environment,
    revision_id: str,
    *,
    now: datetime,
    health_gate: HealthGate | None = None,
    expected_lifecycle: Lifecycle | str | None = None,
) -> LifecycleResult:
    """Walk ``[failed ->] staged -> warming -> ready`` and stamp ``warmed_at = now``.

    A ``failed`` revision is accepted as a retry (``failed -> staged`` is in the matrix). The
    health gate runs after the hops; its failure records ``failed`` and raises
    :class:`HealthGateFailed` carrying ``.environment`` to save. A revision already ``ready``
    is an idempotent retry: no gate, no precondition, ``warmed_at`` stamped again.
    ``expected_lifecycle`` guards against a stale read (:class:`LifecycleConflict`).
    """
    result = walk_revision_chain(
        env,
        revision_id,
        WARM_CHAIN,
        expected_start=expected_lifecycle,
        on_final=lambda r: attrs.evolve(r, warmed_at=now),
        health_gate=health_gate,
    )
    return attrs.evolve(result, env=validated(result.env))


def drain_revision(env: Environment, revision_id: str, *, now: datetime) -> LifecycleResult:
    """Walk ``ready -> draining`` (idempotent on ``draining``).

    Refused with :class:`StillRouted` while the revision has weight > 0 in its deployment's
    split: move the weight away with ``traffic set`` first (the hint gives the command).
    ``now`` is accepted for symmetry; the revision has no drain timestamp upstream.
    """
    del now
    result = walk_revision_chain(env, revision_id, DRAIN_CHAIN)
    if result.starting_lifecycle != L.DRAINING:
        _refuse_if_routed(env, result.revision)
    return attrs.evolve(result, env=validated(result.env))


def _refuse_if_routed(env: Environment, revision: Revision) -> None:
    split = env.split_for(revision.deployment_id)
    if split is None:
        return
    weight = sum(e.weight_bps for e in split.entries if e.revision_id == revision.revision_id)
    if weight <= 0:
        return
    others = [(e.revision_id, e.weight_bps) for e in split.entries if e.revision_id != revision.revision_id]
    if others:
        # Give the drained weight to the heaviest other entry, and keep this one at 0.
        heaviest = max(range(len(others)), key=lambda i: others[i][1])
        others[heaviest] = (others[heaviest][0], others[heaviest][1] + weight)
        proposal = _weights_arg([*others, (revision.revision_id, 0)])
    else:
        proposal = f"OTHER_READY_REV=10000,{revision.revision_id}=0"
    command = f"greentic-deployer traffic set {env.environment_id} {split.deployment_id} {proposal}"
    raise StillRouted(
        f"revision {revision.revision_id} still receives {weight}bps ({weight / 100:g}%) in the traffic split of "
        f"deployment {split.deployment_id} (bundle {split.bundle_id}, generation {split.generation}); "
        "draining it would drop that traffic",
        hint=f"move its weight away first, e.g. `{command}`",
        revision_id=revision.revision_id,
        deployment_id=split.deployment_id,
        bundle_id=split.bundle_id,
        generation=split.generation,
        weight_bps=weight,
        command=command,
    )


def complete_drain(env: Environment, revision_id: str, *, now: datetime) -> LifecycleResult:
    """Walk ``draining -> inactive`` once the provider finished draining (idempotent on ``inactive``)."""
    del now
    result = walk_revision_chain(env, revision_id, COMPLETE_DRAIN_CHAIN)
    return attrs.evolve(result, env=validated(result.env))


def archive_revision(env: Environment, revision_id: str, *, now: datetime) -> LifecycleResult:
    """Retire a revision: the upstream archive chain (a draining one goes via ``inactive``).

    Refused with :class:`ActiveTrafficReference` while any split entry names the revision,
    whatever its weight. On success the id leaves the deployment's ``current_revisions``.
    ``starting_lifecycle`` tells an eviction (from ``draining``) from a plain retirement.
    """
    del now
    result = walk_revision_chain(env, revision_id, ARCHIVE_CHAIN, prune_from_splits=True)
    return attrs.evolve(result, env=validated(result.env))
