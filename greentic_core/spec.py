"""The environment spec as plain attrs value objects (no I/O, no JSON knowledge).

The shapes follow the upstream ``greentic.*.v1`` documents field by field and in the same
order (upstream-spec section 2). Parts the deployer does not act on (messaging endpoints,
extensions, revocation, retention, health, usage, config overrides) are kept as raw JSON so
a document written by the upstream tool saves back with nothing lost; every modelled object
also keeps the keys it does not know in ``extra``. JSON rules live in :mod:`greentic_core.codec`.

All classes are frozen: the engines return new values instead of mutating, so a refused
operation can never leave a half-changed environment behind.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from .ids import BundleId, DeploymentId, EnvId, PackDescriptor, RevisionId
from .values import ValueRepr

ENVIRONMENT_V1 = "greentic.environment.v1"
REVISION_V1 = "greentic.revision.v1"
TRAFFIC_SPLIT_V1 = "greentic.traffic-split.v1"
BUNDLE_DEPLOYMENT_V1 = "greentic.bundle-deployment.v1"
RUNTIME_CONFIG_V1 = "greentic.runtime-config.v1"
MESSAGING_ENDPOINT_V1 = "greentic.messaging-endpoint.v1"

DEFAULT_LISTEN_ADDR = "127.0.0.1:8080"
TOTAL_BPS = 10_000

JsonObject = dict[str, Any]


class CapabilitySlot(str, enum.Enum):
    DEPLOYER = "deployer"
    SECRETS = "secrets"
    TELEMETRY = "telemetry"
    SESSIONS = "sessions"
    STATE = "state"
    REVOCATION = "revocation"
    MESSAGING = "messaging"
    EXTENSION = "extension"


class Lifecycle(str, enum.Enum):
    INACTIVE = "inactive"
    STAGED = "staged"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    ARCHIVED = "archived"


class BundleStatus(str, enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


def _extra() -> JsonObject:
    return attrs.field(factory=dict, kw_only=True, eq=True, repr=False)


# --------------------------------------------------------------------------- environment


@attrs.frozen(kw_only=True, repr=False)
class HostConfig(ValueRepr):
    env_id: EnvId
    region: str | None = None
    tenant_org_id: str | None = None
    listen_addr: str | None = None
    public_base_url: str | None = None
    gui_enabled: bool | None = None
    extra: JsonObject = _extra()

    @property
    def resolved_listen_addr(self) -> str:
        return self.listen_addr or DEFAULT_LISTEN_ADDR

    @property
    def resolved_gui_enabled(self) -> bool:
        return self.gui_enabled if self.gui_enabled is not None else self.env_id == "local"


@attrs.frozen(kw_only=True, repr=False)
class EnvPackBinding(ValueRepr):
    slot: CapabilitySlot
    kind: PackDescriptor
    pack_ref: str
    answers_ref: str | None = None
    generation: int = 0
    previous_binding_ref: str | None = None
    extra: JsonObject = _extra()


# --------------------------------------------------------------------------- deployments


@attrs.frozen(kw_only=True, repr=False)
class TenantSelector(ValueRepr):
    tenant: str = "default"
    team: str = "default"
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class RouteBinding(ValueRepr):
    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    tenant_selector: TenantSelector = attrs.Factory(TenantSelector)
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class RevenueShare(ValueRepr):
    party_id: str
    basis_points: int
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class BundleDeployment(ValueRepr):
    """One bundle deployed in an environment (upstream ``BundleDeployment``)."""

    schema: str = BUNDLE_DEPLOYMENT_V1
    deployment_id: DeploymentId
    env_id: EnvId
    bundle_id: BundleId
    customer_id: str
    status: BundleStatus
    current_revisions: tuple[RevisionId, ...] = ()
    route_binding: RouteBinding
    revenue_share: tuple[RevenueShare, ...]
    revenue_policy_ref: str
    usage: JsonObject | None = None
    created_at: datetime
    authorization_ref: str
    config_overrides: JsonObject = attrs.field(factory=dict)
    extra: JsonObject = _extra()


# --------------------------------------------------------------------------- revisions


@attrs.frozen(kw_only=True, repr=False)
class PackListEntry(ValueRepr):
    pack_id: str
    version: str
    digest: str
    source_uri: str | None = None
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class Workload(ValueRepr):
    """Provider-neutral description of what runs a revision (a field of our own).

    Providers read what applies to them: local-process runs ``command``; k8s and aws run
    ``image``. ``port`` is where the workload listens, ``health_path`` answers 2xx when ready.
    """

    image: str | None = None
    command: tuple[str, ...] | None = None
    env: dict[str, str] = attrs.field(factory=dict)
    port: int = 8080
    health_path: str = "/healthz"
    replicas: int = 1
    working_dir: str | None = None
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class Revision(ValueRepr):
    """One immutable revision of a deployment (upstream ``Revision``)."""

    schema: str = REVISION_V1
    revision_id: RevisionId
    env_id: EnvId
    bundle_id: BundleId
    deployment_id: DeploymentId
    sequence: int
    created_at: datetime
    bundle_digest: str
    bundle_source_uri: str | None = None
    pack_list: tuple[PackListEntry, ...]
    pack_list_lock_ref: str
    pack_config_refs: tuple[str, ...] = ()
    config_digest: str
    signature_sidecar_ref: str
    lifecycle: Lifecycle
    staged_at: datetime | None = None
    warmed_at: datetime | None = None
    drain_seconds: int = 0
    abort_metrics: tuple[str, ...] = ()
    workload: Workload | None = None
    extra: JsonObject = _extra()


# --------------------------------------------------------------------------- traffic


@attrs.frozen(kw_only=True, repr=False)
class TrafficSplitEntry(ValueRepr):
    revision_id: RevisionId
    weight_bps: int
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class SplitHistoryItem(ValueRepr):
    """An earlier state of a split, kept so rollback can go back more than one step."""

    generation: int
    entries: tuple[TrafficSplitEntry, ...]
    idempotency_key: str
    updated_at: datetime
    updated_by: str
    authorization_ref: str = "auth.json"
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class TrafficSplit(ValueRepr):
    """The weights of one deployment's routed revisions, in basis points summing to 10000."""

    schema: str = TRAFFIC_SPLIT_V1
    env_id: EnvId
    deployment_id: DeploymentId
    bundle_id: BundleId
    generation: int
    entries: tuple[TrafficSplitEntry, ...]
    updated_at: datetime
    updated_by: str
    idempotency_key: str
    authorization_ref: str
    previous_split_ref: str | None = None
    history: tuple[SplitHistoryItem, ...] = ()
    extra: JsonObject = _extra()


# --------------------------------------------------------------------------- the document


@attrs.frozen(kw_only=True, repr=False)
class Environment(ValueRepr):
    """The whole ``environment.json`` document."""

    schema: str = ENVIRONMENT_V1
    environment_id: EnvId
    name: str
    host_config: HostConfig
    packs: tuple[EnvPackBinding, ...]
    credentials_ref: str | None = None
    bundles: tuple[BundleDeployment, ...] = ()
    revisions: tuple[Revision, ...] = ()
    traffic_splits: tuple[TrafficSplit, ...] = ()
    messaging_endpoints: tuple[JsonObject, ...] = ()
    extensions: tuple[JsonObject, ...] = ()
    revocation: JsonObject = attrs.field(factory=lambda: {"required": False})
    retention: JsonObject = attrs.field(factory=dict)
    health: JsonObject = attrs.field(factory=lambda: {"state": "unknown"})
    # Our own counter (not upstream): the store adds 1 on every save, so the audit log can
    # say which change made which state. Left out while 0, so upstream documents round-trip.
    generation: int = 0
    extra: JsonObject = _extra()

    # Lookups are linear scans; engines that need many lookups build an index once.
    def revision(self, revision_id: str) -> Revision | None:
        return next((r for r in self.revisions if r.revision_id == revision_id), None)

    def deployment(self, deployment_id: str) -> BundleDeployment | None:
        return next((b for b in self.bundles if b.deployment_id == deployment_id), None)

    def split_for(self, deployment_id: str) -> TrafficSplit | None:
        return next((s for s in self.traffic_splits if s.deployment_id == deployment_id), None)

    def pack_for_slot(self, slot: CapabilitySlot) -> EnvPackBinding | None:
        return next((p for p in self.packs if p.slot == slot), None)


# --------------------------------------------------------------------------- runtime config


@attrs.frozen(kw_only=True, repr=False)
class RevisionRuntimeBlock(ValueRepr):
    deployment_id: DeploymentId
    revision_id: RevisionId
    bundle_id: BundleId
    pack_list_refs: tuple[str, ...] = ()
    pack_config_refs: tuple[str, ...] = ()
    weight_bps: int
    extra: JsonObject = _extra()


@attrs.frozen(kw_only=True, repr=False)
class RuntimeConfig(ValueRepr):
    """What the runtime serves: one block per split entry (upstream-spec section 5)."""

    schema: str = RUNTIME_CONFIG_V1
    env_id: EnvId
    revisions: tuple[RevisionRuntimeBlock, ...]
    extra: JsonObject = _extra()
