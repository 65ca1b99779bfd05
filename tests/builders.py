"""Small builders for spec objects, shared by the test modules.

Every builder returns a valid object with fixed, readable defaults; keyword overrides go
straight to the attrs constructor, and ``attrs.evolve`` (or :func:`add`) changes the rest.

    env = make_env("local")
    dep = make_deployment("local", bundle_id="shop")
    r1 = make_revision("local", dep, sequence=1)
    r2 = make_revision("local", dep, sequence=2)
    env = add(env, dep, r1, r2, make_split("local", dep, [(r1, 9000), (r2, 1000)]))
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import attrs

from greentic_core.ids import PackDescriptor, mint_ulid
from greentic_core.spec import (
    BundleDeployment,
    BundleStatus,
    CapabilitySlot,
    EnvPackBinding,
    Environment,
    HostConfig,
    Lifecycle,
    PackListEntry,
    RevenueShare,
    Revision,
    RouteBinding,
    TrafficSplit,
    TrafficSplitEntry,
)

NOW = datetime(2026, 5, 19, 12, 0, 0, tzinfo=timezone.utc)
DEFAULT_KINDS = {
    CapabilitySlot.DEPLOYER: "greentic.deployer.local-process@1.0.0",
    CapabilitySlot.SECRETS: "greentic.secrets.vault@1.0.0",
    CapabilitySlot.TELEMETRY: "greentic.telemetry.otel@1.0.0",
    CapabilitySlot.SESSIONS: "greentic.sessions.memory@1.0.0",
    CapabilitySlot.STATE: "greentic.state.memory@1.0.0",
    CapabilitySlot.REVOCATION: "greentic.revocation.list@1.0.0",
    CapabilitySlot.MESSAGING: "greentic.messaging.teams@1.0.0",
    CapabilitySlot.EXTENSION: "greentic.extension.any@1.0.0",
}


def make_env(
    env_id: str = "local",
    *,
    name: str | None = None,
    packs: Iterable[EnvPackBinding] = (),
    host_config: HostConfig | None = None,
    **overrides: Any,
) -> Environment:
    """An environment with nothing deployed. ``overrides`` go to ``Environment`` (tuples for lists)."""
    for key in ("bundles", "revisions", "traffic_splits", "messaging_endpoints", "extensions"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return Environment(
        environment_id=env_id,
        name=name if name is not None else env_id,
        host_config=host_config if host_config is not None else HostConfig(env_id=env_id),
        packs=tuple(packs),
        **overrides,
    )


def make_pack(slot: CapabilitySlot | str, kind: str | None = None, pack_ref: str | None = None, **overrides: Any) -> EnvPackBinding:
    slot = CapabilitySlot(slot)
    return EnvPackBinding(
        slot=slot,
        kind=PackDescriptor.parse(kind or DEFAULT_KINDS[slot]),
        pack_ref=pack_ref or f"pack-{slot.value}",
        **overrides,
    )


def make_deployment(
    env_id: str,
    bundle_id: str = "bundle-a",
    deployment_id: str | None = None,
    *,
    shares: Sequence[int] = (10_000,),
    **overrides: Any,
) -> BundleDeployment:
    """A deployment of ``bundle_id``; ``shares`` are the revenue-share basis points."""
    fields: dict[str, Any] = dict(
        deployment_id=deployment_id or mint_ulid(),
        env_id=env_id,
        bundle_id=bundle_id,
        customer_id="local-dev",
        status=BundleStatus.ACTIVE,
        route_binding=RouteBinding(),
        revenue_share=tuple(RevenueShare(party_id=f"party-{i}", basis_points=bps) for i, bps in enumerate(shares)),
        revenue_policy_ref="billing/revenue-policy.v1.json",
        created_at=NOW,
        authorization_ref="auth.json",
    )
    fields.update(overrides)
    if "current_revisions" in fields:
        fields["current_revisions"] = tuple(fields["current_revisions"])
    return BundleDeployment(**fields)


def make_revision(
    env_id: str,
    deployment: BundleDeployment,
    lifecycle: Lifecycle = Lifecycle.READY,
    sequence: int = 1,
    *,
    revision_id: str | None = None,
    pack_ids: Iterable[str] = (),
    **overrides: Any,
) -> Revision:
    """A revision of ``deployment`` (bundle id copied from it); ``pack_ids`` fill the pack list."""
    rid = revision_id or mint_ulid()
    fields: dict[str, Any] = dict(
        revision_id=rid,
        env_id=env_id,
        bundle_id=deployment.bundle_id,
        deployment_id=deployment.deployment_id,
        sequence=sequence,
        created_at=NOW,
        bundle_digest="sha256:ab12",
        pack_list=tuple(PackListEntry(pack_id=p, version="0.0.0", digest="sha256:00") for p in pack_ids),
        pack_list_lock_ref=f"revisions/{rid}/pack-list.lock",
        config_digest="sha256:00",
        signature_sidecar_ref="rev.sig",
        lifecycle=lifecycle,
        staged_at=NOW,
        drain_seconds=30,
    )
    fields.update(overrides)
    return Revision(**fields)


def make_split(
    env_id: str,
    deployment: BundleDeployment,
    weights: Iterable[tuple[Revision | str, int]],
    generation: int = 0,
    **overrides: Any,
) -> TrafficSplit:
    """The split of ``deployment``; ``weights`` are ``(revision or revision id, basis points)`` pairs."""
    entries = tuple(
        TrafficSplitEntry(revision_id=r if isinstance(r, str) else r.revision_id, weight_bps=bps) for r, bps in weights
    )
    fields: dict[str, Any] = dict(
        env_id=env_id,
        deployment_id=deployment.deployment_id,
        bundle_id=deployment.bundle_id,
        generation=generation,
        entries=entries,
        updated_at=NOW,
        updated_by=f"operator://{env_id}/test",
        idempotency_key=f"k-{generation}",
        authorization_ref="auth.json",
    )
    fields.update(overrides)
    return TrafficSplit(**fields)


def make_endpoint(
    env_id: str,
    /,
    *,
    provider_type: str = "teams",
    provider_id: str = "legal-bot",
    linked_bundles: Sequence[str] = (),
    welcome_flow: dict[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A messaging endpoint as the raw JSON object the model keeps (its refs scoped to ``env_id``)."""
    doc: dict[str, Any] = {
        "schema": "greentic.messaging-endpoint.v1",
        "env_id": env_id,
        "endpoint_id": mint_ulid(),
        "provider_id": provider_id,
        "provider_type": provider_type,
        "display_name": f"{provider_type} {provider_id}",
        "secret_refs": [f"secret://{env_id}/messaging/{provider_type}"],
        "linked_bundles": list(linked_bundles),
        "generation": 0,
        "created_at": "2026-05-19T12:00:00Z",
        "updated_at": "2026-05-19T12:00:00Z",
        "updated_by": f"operator://{env_id}/test",
    }
    if welcome_flow is not None:
        doc["welcome_flow"] = welcome_flow
    doc.update(overrides)
    return doc


def make_extension(kind: str = "acme.ext.audit@1.0.0", instance_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """An extension binding as the raw JSON object the model keeps."""
    doc: dict[str, Any] = {"kind": kind, "pack_ref": "pack-" + kind.split("@")[0].replace(".", "-"), "generation": 0}
    if instance_id is not None:
        doc["instance_id"] = instance_id
    doc.update(overrides)
    return doc


_TARGET = {
    BundleDeployment: "bundles",
    Revision: "revisions",
    TrafficSplit: "traffic_splits",
    EnvPackBinding: "packs",
}


def add(env: Environment, *objects: Any) -> Environment:
    """Append deployments, revisions, splits and pack bindings to the matching lists of ``env``."""
    lists: dict[str, list[Any]] = {}
    for obj in objects:
        name = _TARGET.get(type(obj))
        if name is None:
            raise TypeError(f"add() does not know where a {type(obj).__name__} goes")
        lists.setdefault(name, list(getattr(env, name))).append(obj)
    return attrs.evolve(env, **{name: tuple(items) for name, items in lists.items()})


def make_canary_env(env_id: str = "local", bundle_id: str = "bundle-a") -> tuple[Environment, BundleDeployment, Revision, Revision]:
    """A deployment with two ready revisions at 9000/1000, both in current_revisions."""
    dep = make_deployment(env_id, bundle_id=bundle_id)
    r1 = make_revision(env_id, dep, sequence=1)
    r2 = make_revision(env_id, dep, sequence=2)
    dep = attrs.evolve(dep, current_revisions=(r1.revision_id, r2.revision_id))
    env = add(make_env(env_id), dep, r1, r2, make_split(env_id, dep, [(r1, 9000), (r2, 1000)]))
    return env, dep, r1, r2
