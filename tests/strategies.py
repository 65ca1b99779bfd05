"""Hypothesis strategies producing *valid* environments (they pass validate_environment).

``environments()`` draws 0-3 deployments, 0-4 revisions each (unique ids and sequences),
an optional split per deployment over a non-empty subset of its revisions with weights
summing to exactly 10000 (zero weights included), revenue shares summing to 10000, config
overrides naming packs the deployment's revisions use, optional fields set or unset, pack
bindings on distinct slots, messaging endpoints, extensions and unknown keys.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from hypothesis import strategies as st
from ulid import ULID

from greentic_core.ids import PackDescriptor
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
    SplitHistoryItem,
    TenantSelector,
    TrafficSplit,
    TrafficSplitEntry,
    Workload,
)

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

env_ids = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
simple_texts = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
timestamps = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999), timezones=st.just(timezone.utc)
)
u64 = st.integers(0, U64_MAX)
u32 = st.integers(0, U32_MAX)
semvers = st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))
descriptor_paths = st.builds(lambda a, b: f"{a}.{b}", simple_texts, simple_texts)
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
# unknown keys use a prefix no spec type declares
extras = st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map("x_".__add__), json_values, max_size=2)


def weights_summing_to(total: int, count: int) -> st.SearchStrategy[list[int]]:
    """``count`` non-negative integers that sum to exactly ``total`` (zeros allowed)."""
    if count == 1:
        return st.just([total])
    return st.lists(st.integers(0, total), min_size=count - 1, max_size=count - 1).map(
        lambda cuts: [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), total])]
    )


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def ulids(draw: Any, count: int) -> list[str]:
    values = draw(st.lists(st.integers(0, 2**128 - 1), min_size=count, max_size=count, unique=True))
    return [str(ULID.from_int(v)) for v in values]


@st.composite
def host_configs(draw: Any, env_id: str) -> HostConfig:
    return HostConfig(
        env_id=env_id,
        region=draw(optional(texts)),
        tenant_org_id=draw(optional(texts)),
        listen_addr=draw(optional(st.sampled_from(["127.0.0.1:8080", "0.0.0.0:9090", "[::1]:8080"]))),
        public_base_url=draw(optional(st.sampled_from(["https://deploy.example.com", "http://[::1]:8080", "http://h:1/"]))),
        gui_enabled=draw(optional(st.booleans())),
        extra=draw(extras),
    )


@st.composite
def pack_bindings(draw: Any) -> tuple[EnvPackBinding, ...]:
    slots = draw(st.lists(st.sampled_from(list(CapabilitySlot)), unique=True, max_size=4))
    return tuple(
        EnvPackBinding(
            slot=slot,
            kind=PackDescriptor(draw(descriptor_paths), draw(semvers)),
            pack_ref=draw(texts),
            answers_ref=draw(optional(texts)),
            generation=draw(u64),
            previous_binding_ref=draw(optional(texts)),
            extra=draw(extras),
        )
        for slot in slots
    )


@st.composite
def workloads(draw: Any) -> Workload:
    return Workload(
        image=draw(optional(st.from_regex(r"[a-z0-9.-]{1,20}(/[a-z0-9-]{1,10})?:[a-z0-9.]{1,8}", fullmatch=True))),
        command=draw(optional(st.lists(texts.filter(bool), min_size=1, max_size=3).map(tuple))),
        env=draw(st.dictionaries(simple_texts, texts, max_size=2)),
        port=draw(st.integers(1, 65535)),
        health_path=draw(st.sampled_from(["/healthz", "/ready", "/"])),
        replicas=draw(st.integers(1, 5)),
        working_dir=draw(optional(texts)),
    )


@st.composite
def deployments_with_revisions(
    draw: Any, env_id: str, bundle_id: str, deployment_id: str, revision_ids: list[str]
) -> tuple[BundleDeployment, list[Revision], TrafficSplit | None]:
    pack_pool = ["pack-a", "pack-b", "pack-c"]
    revisions = []
    sequences = draw(st.lists(st.integers(1, 1000), min_size=len(revision_ids), max_size=len(revision_ids), unique=True))
    for rid, sequence in zip(revision_ids, sequences):
        revisions.append(
            Revision(
                revision_id=rid,
                env_id=env_id,
                bundle_id=bundle_id,
                deployment_id=deployment_id,
                sequence=sequence,
                created_at=draw(timestamps),
                bundle_digest=draw(texts),
                bundle_source_uri=draw(optional(texts)),
                pack_list=tuple(
                    PackListEntry(pack_id=p, version=draw(semvers), digest=draw(texts), source_uri=draw(optional(texts)))
                    for p in draw(st.lists(st.sampled_from(pack_pool), unique=True, max_size=2))
                ),
                pack_list_lock_ref=draw(st.just(f"revisions/{rid}/pack-list.lock") | st.just("")),
                pack_config_refs=tuple(draw(st.lists(texts, max_size=2))),
                config_digest=draw(texts),
                signature_sidecar_ref="rev.sig",
                lifecycle=draw(st.sampled_from(list(Lifecycle))),
                staged_at=draw(optional(timestamps)),
                warmed_at=draw(optional(timestamps)),
                drain_seconds=draw(u32),
                abort_metrics=tuple(draw(st.lists(texts, max_size=2))),
                workload=draw(optional(workloads())),
                extra=draw(extras),
            )
        )
    live_packs = sorted({p.pack_id for r in revisions if r.lifecycle != Lifecycle.ARCHIVED for p in r.pack_list})
    override_packs = draw(st.lists(st.sampled_from(live_packs or pack_pool), unique=True, max_size=2))
    shares = draw(st.integers(1, 3).flatmap(lambda n: weights_summing_to(10_000, n)))
    deployment = BundleDeployment(
        deployment_id=deployment_id,
        env_id=env_id,
        bundle_id=bundle_id,
        customer_id=draw(texts),
        status=draw(st.sampled_from(list(BundleStatus))),
        current_revisions=tuple(draw(st.lists(st.sampled_from(revision_ids), unique=True)) if revision_ids else ()),
        route_binding=RouteBinding(
            hosts=tuple(draw(st.lists(texts, max_size=2))),
            path_prefixes=tuple(draw(st.lists(texts, max_size=2))),
            tenant_selector=TenantSelector(tenant=draw(texts), team=draw(texts)),
        ),
        revenue_share=tuple(RevenueShare(party_id=f"party-{i}", basis_points=bps) for i, bps in enumerate(shares)),
        revenue_policy_ref=draw(texts),
        usage=draw(optional(st.fixed_dictionaries({"meter_endpoint": texts}))),
        created_at=draw(timestamps),
        authorization_ref="auth.json",
        config_overrides={p: draw(st.dictionaries(simple_texts, json_values, max_size=2)) for p in override_packs},
        extra=draw(extras),
    )
    split = None
    if revision_ids and draw(st.booleans()):
        routed = draw(st.lists(st.sampled_from(revision_ids), unique=True, min_size=1))
        weights = draw(weights_summing_to(10_000, len(routed)))
        entries = tuple(TrafficSplitEntry(revision_id=r, weight_bps=w) for r, w in zip(routed, weights))
        history = tuple(
            SplitHistoryItem(
                generation=g, entries=entries, idempotency_key=draw(texts), updated_at=draw(timestamps), updated_by=draw(texts)
            )
            for g in range(draw(st.integers(0, 2)))
        )
        split = TrafficSplit(
            env_id=env_id,
            deployment_id=deployment_id,
            bundle_id=bundle_id,
            generation=draw(u64),
            entries=entries,
            updated_at=draw(timestamps),
            updated_by=draw(texts),
            idempotency_key=draw(texts),
            authorization_ref="auth.json",
            previous_split_ref=draw(optional(st.just("inline://e30"))),
            history=history,
            extra=draw(extras),
        )
    return deployment, revisions, split


@st.composite
def endpoints(draw: Any, env_id: str, endpoint_ids: list[str], bundle_ids: list[str]) -> list[dict[str, Any]]:
    result = []
    provider_ids = draw(st.lists(simple_texts, min_size=len(endpoint_ids), max_size=len(endpoint_ids), unique=True))
    for endpoint_id, provider_id in zip(endpoint_ids, provider_ids):
        linked = draw(st.lists(st.sampled_from(bundle_ids), unique=True)) if bundle_ids else []
        doc: dict[str, Any] = {
            "schema": "greentic.messaging-endpoint.v1",
            "env_id": env_id,
            "endpoint_id": endpoint_id,
            "provider_id": provider_id,
            "provider_type": "teams",
            "display_name": draw(texts),
            "secret_refs": [f"secret://{env_id}/messaging/{provider_id}"],
            "linked_bundles": linked,
            "generation": draw(u64),
            "created_at": "2026-05-19T12:00:00Z",
            "updated_at": "2026-05-19T12:00:00.123Z",
            "updated_by": draw(texts),
        }
        if linked and draw(st.booleans()):
            doc["welcome_flow"] = {"bundle_id": linked[0], "pack_id": "messaging-teams", "flow_id": "welcome"}
        result.append(doc)
    return result


@st.composite
def extension_bindings(draw: Any) -> list[dict[str, Any]]:
    keys = draw(st.lists(st.tuples(descriptor_paths, optional(simple_texts)), unique=True, max_size=3))
    result = []
    for path, instance in keys:
        doc: dict[str, Any] = {"kind": f"{path}@{draw(semvers)}", "pack_ref": draw(texts), "generation": draw(u64)}
        if instance is not None:
            doc["instance_id"] = instance
        result.append(doc)
    return result


@st.composite
def environments(draw: Any) -> Environment:
    """A valid environment: it validates, and it survives dump -> load unchanged."""
    env_id = draw(env_ids)
    n_deployments = draw(st.integers(0, 3))
    revision_counts = [draw(st.integers(0, 4)) for _ in range(n_deployments)]
    n_endpoints = draw(st.integers(0, 2))
    all_ids = draw(ulids(n_deployments + sum(revision_counts) + n_endpoints))
    deployment_ids, rest = all_ids[:n_deployments], all_ids[n_deployments:]
    bundles, revisions, splits = [], [], []
    for i, (deployment_id, count) in enumerate(zip(deployment_ids, revision_counts)):
        revision_ids, rest = rest[:count], rest[count:]
        bundle_id = draw(st.sampled_from([f"bundle-{i}", "shared-bundle"]))
        deployment, revs, split = draw(deployments_with_revisions(env_id, bundle_id, deployment_id, revision_ids))
        bundles.append(deployment)
        revisions.extend(revs)
        if split is not None:
            splits.append(split)
    # revisions are one flat list in the document; any order is valid
    revisions = draw(st.permutations(revisions)) if revisions else []
    return Environment(
        environment_id=env_id,
        name=draw(texts),
        host_config=draw(host_configs(env_id)),
        packs=draw(pack_bindings()),
        credentials_ref=draw(optional(st.just(f"secret://{env_id}/credentials/admin"))),
        bundles=tuple(bundles),
        revisions=tuple(revisions),
        traffic_splits=tuple(splits),
        messaging_endpoints=tuple(draw(endpoints(env_id, rest, sorted({b.bundle_id for b in bundles})))),
        extensions=tuple(draw(extension_bindings())),
        revocation=draw(st.sampled_from([{"required": False}, {"required": True, "list_ref": "revocation/list.json"}])),
        retention=draw(st.sampled_from([{}, {"keep_revisions": 10, "audit_retention_days": U32_MAX}])),
        health=draw(st.sampled_from([{"state": "unknown"}, {"state": "red", "message": "x", "last_checked_at": "2026-05-21T10:00:00Z"}])),
        generation=draw(st.integers(0, 5)),
        extra=draw(extras),
    )
