"""validate_environment: the upstream checklist (upstream-spec section 7) plus the gaps we close.

Test names follow the upstream test files (basis_points.rs, environment_validation.rs,
cross_references.rs and the unit tests of src/environment.rs) so the two can be compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import (
    add,
    make_canary_env,
    make_deployment,
    make_endpoint,
    make_env,
    make_extension,
    make_pack,
    make_revision,
    make_split,
)
from greentic_core import codec
from greentic_core.errors import (
    BasisPointsEntryTooLarge,
    BasisPointsSum,
    BundleRevisionWrongBundle,
    BundleRevisionWrongDeployment,
    ConfigOverridePackNotInRevisions,
    ConfigOverridesInvalid,
    CrossEnvRef,
    DuplicateCapabilitySlot,
    DuplicateDeploymentId,
    DuplicateExtension,
    DuplicateMessagingEndpoint,
    DuplicateProviderInstance,
    DuplicateRevisionId,
    DuplicateSequence,
    DuplicateSplit,
    DuplicateSplitEntry,
    EnvIdMismatch,
    InvalidExtensionInstanceId,
    InvalidPublicBaseUrl,
    MessagingEndpointBundleNotLinked,
    MessagingEndpointInvalid,
    SchemaMismatch,
    SpecError,
    SpecFormatError,
    SplitDeploymentBundleMismatch,
    SplitRevisionWrongBundle,
    SplitRevisionWrongDeployment,
    UnknownDeployment,
    UnknownRevision,
    WelcomeFlowBundleNotLinked,
)
from greentic_core.ids import mint_ulid, secret_ref_env
from greentic_core.spec import (
    BUNDLE_DEPLOYMENT_V1,
    DEFAULT_LISTEN_ADDR,
    ENVIRONMENT_V1,
    REVISION_V1,
    TRAFFIC_SPLIT_V1,
    BundleStatus,
    CapabilitySlot,
    HostConfig,
    Lifecycle,
    TrafficSplitEntry,
)
from greentic_core.validation import (
    U32_MAX,
    InvalidListenAddr,
    MalformedSection,
    NumberOutOfRange,
    check_basis_points,
    extension_for_ref,
    validate_environment,
    validate_public_base_url,
)

ENV = "local"
FIXTURES = Path(__file__).parent / "fixtures"


def raises(exc_type, env):
    """Validate ``env``, assert the error class, the one-line message, and return the error."""
    with pytest.raises(exc_type) as info:
        validate_environment(env)
    err = info.value
    assert type(err) is exc_type, f"expected {exc_type.__name__}, got {type(err).__name__}: {err}"
    assert "\n" not in str(err)
    return err


def env_with_split(weights):
    """One deployment, one ready revision per weight, and the split over them."""
    dep = make_deployment(ENV)
    revisions = [make_revision(ENV, dep, sequence=i + 1) for i in range(len(weights))]
    split = make_split(ENV, dep, list(zip(revisions, weights)))
    return add(make_env(ENV), dep, *revisions, split)


def env_with_shares(shares):
    return add(make_env(ENV), make_deployment(ENV, shares=shares))


# =========================================================================== basis_points.rs


@pytest.mark.parametrize("weights", [[10000], [9900, 100], [5000, 4000, 1000]])
def test_traffic_split_accepts_sum_10000(weights):
    validate_environment(env_with_split(weights))


def test_traffic_split_rejects_undersum():
    err = raises(BasisPointsSum, env_with_split([9999]))
    assert err.details["sum"] == 9999
    assert err.details["context"] == "traffic_split"


def test_traffic_split_rejects_oversum():
    err = raises(BasisPointsSum, env_with_split([5001, 5000]))
    assert err.details["sum"] == 10001


def test_traffic_split_rejects_entry_above_10000():
    err = raises(BasisPointsEntryTooLarge, env_with_split([10001]))
    assert err.details["value"] == 10001
    assert err.details["context"] == "traffic_split"


def test_traffic_split_rejects_u32_max_wraparound():
    err = raises(BasisPointsEntryTooLarge, env_with_split([U32_MAX, 10001]))
    assert err.details["value"] == U32_MAX  # the per-entry check runs before summing


def test_traffic_split_rejects_summed_overflow_when_entries_are_in_range():
    # The sum is checked before any entry's revision is looked up, so one revision id will do.
    dep = make_deployment(ENV)
    rev = make_revision(ENV, dep)
    split = make_split(ENV, dep, [(rev, 9999)] * 50_000)
    err = raises(BasisPointsSum, add(make_env(ENV), dep, rev, split))
    assert err.details["sum"] == 499_950_000


@pytest.mark.parametrize("shares", [[10000], [3000, 7000]])
def test_revenue_share_accepts_sum_10000(shares):
    validate_environment(env_with_shares(shares))


def test_revenue_share_rejects_wrong_sum():
    err = raises(BasisPointsSum, env_with_shares([1000, 2000]))
    assert err.details["sum"] == 3000
    assert err.details["context"] == "revenue_share"


def test_revenue_share_rejects_entry_above_10000():
    err = raises(BasisPointsEntryTooLarge, env_with_shares([10001]))
    assert err.details["value"] == 10001
    assert err.details["context"] == "revenue_share"


def test_revenue_share_rejects_u32_max_wraparound():
    err = raises(BasisPointsEntryTooLarge, env_with_shares([U32_MAX, 10001]))
    assert err.details["value"] == U32_MAX


def test_check_basis_points_directly():
    check_basis_points([10000], "x")
    check_basis_points([0, 10000, 0], "x")  # zero weights are allowed
    with pytest.raises(BasisPointsSum) as info:
        check_basis_points([], "traffic_split", deployment_id="D")
    assert info.value.details == {"context": "traffic_split", "sum": 0, "deployment_id": "D"}
    with pytest.raises(BasisPointsEntryTooLarge) as info:
        check_basis_points([U32_MAX, 10001], "revenue_share")
    assert info.value.details["value"] == U32_MAX


def test_empty_split_fails_with_sum_zero():
    err = raises(BasisPointsSum, env_with_split([]))
    assert err.details["sum"] == 0


# =========================================================================== environment_validation.rs


def test_valid_environment_with_unique_slots():
    env = make_env(ENV, packs=[make_pack("deployer"), make_pack("secrets"), make_pack("telemetry")])
    validate_environment(env)


def test_duplicate_slot_rejected():
    env = make_env(ENV, packs=[make_pack("deployer"), make_pack("deployer", pack_ref="other")])
    err = raises(DuplicateCapabilitySlot, env)
    assert err.details["slot"] == "deployer"
    assert err.hint


def test_pack_for_slot_returns_binding():
    state = make_pack("state")
    env = make_env(ENV, packs=[make_pack("deployer"), state])
    assert env.pack_for_slot(CapabilitySlot.STATE) == state
    assert env.pack_for_slot(CapabilitySlot.TELEMETRY) is None


def test_schema_discriminator_required():
    err = raises(SchemaMismatch, make_env(ENV, schema="greentic.environment.v0"))
    assert err.details["expected"] == ENVIRONMENT_V1
    assert err.details["actual"] == "greentic.environment.v0"


def test_duplicate_extension_same_path_no_instance_rejected():
    env = make_env(ENV, extensions=[make_extension("acme.ext.audit@1.0.0"), make_extension("acme.ext.audit@2.0.0")])
    err = raises(DuplicateExtension, env)
    assert err.details["path"] == "acme.ext.audit"
    assert err.details["instance_id"] is None


def test_duplicate_extension_same_path_same_instance_rejected():
    env = make_env(ENV, extensions=[make_extension(instance_id="primary"), make_extension(instance_id="primary")])
    err = raises(DuplicateExtension, env)
    assert err.details == {"path": "acme.ext.audit", "instance_id": "primary"}


def test_default_and_named_instances_coexist():
    env = make_env(
        ENV,
        extensions=[make_extension(), make_extension(instance_id="primary"), make_extension(instance_id="secondary")],
    )
    validate_environment(env)


def test_invalid_instance_id_rejected():
    err = raises(InvalidExtensionInstanceId, make_env(ENV, extensions=[make_extension(instance_id="Bad/Id")]))
    assert err.details["path"] == "acme.ext.audit"
    assert "a-z 0-9 -" in err.details["reason"]


def test_empty_instance_id_rejected():
    err = raises(InvalidExtensionInstanceId, make_env(ENV, extensions=[make_extension(instance_id="")]))
    assert err.details["instance_id"] == ""


def test_environment_validate_rejects_invalid_public_base_url():
    env = make_env(ENV, host_config=HostConfig(env_id=ENV, public_base_url="not-a-url"))
    err = raises(InvalidPublicBaseUrl, env)
    assert err.details["value"] == "not-a-url"


def test_extension_for_ref_selects_by_path_and_instance():
    default = make_extension("acme.ext.audit@1.0.0")
    primary = make_extension("acme.ext.audit@1.0.0", instance_id="primary")
    env = make_env(ENV, extensions=[default, primary])
    assert extension_for_ref(env, "ext://acme.ext.audit") == default
    assert extension_for_ref(env, "ext://acme.ext.audit/primary") == primary
    assert extension_for_ref(env, "ext://acme.ext.audit/unknown") is None
    assert extension_for_ref(env, "ext://acme.ext.other") is None
    with pytest.raises(SpecFormatError) as info:
        extension_for_ref(env, "ext://acme.ext.audit/a/b")
    assert info.value.format_rule == "InvalidInstanceChar"


# =========================================================================== cross_references.rs


def test_host_config_env_id_must_match_environment_id():
    err = raises(EnvIdMismatch, make_env(ENV, host_config=HostConfig(env_id="prod")))
    assert err.details == {"context": "host_config", "actual": "prod", "expected": ENV}


def test_revision_env_id_must_match_environment_id():
    dep = make_deployment(ENV)
    err = raises(EnvIdMismatch, add(make_env(ENV), dep, make_revision("prod", dep)))
    assert err.details["context"] == "revision"
    assert err.details["actual"] == "prod"


def test_bundle_env_id_must_match_environment_id():
    err = raises(EnvIdMismatch, add(make_env(ENV), make_deployment("prod")))
    assert err.details["context"] == "bundle_deployment"


def test_bundle_env_id_checked_before_bundle_validate():
    # a wrong env and a broken revenue share: the env check comes first (step 7a before 7b)
    err = raises(EnvIdMismatch, add(make_env(ENV), make_deployment("prod", shares=[1])))
    assert err.details["context"] == "bundle_deployment"


def test_traffic_split_env_id_must_match_environment_id():
    dep = make_deployment(ENV)
    split = make_split("prod", dep, [])  # empty entries would fail the sum, but env comes first
    err = raises(EnvIdMismatch, add(make_env(ENV), dep, split))
    assert err.details["context"] == "traffic_split"


def test_traffic_split_unknown_deployment_rejected():
    dep = make_deployment(ENV)
    rev = make_revision(ENV, dep)
    err = raises(UnknownDeployment, add(make_env(ENV), rev, make_split(ENV, dep, [(rev, 10000)])))
    assert err.details["deployment_id"] == dep.deployment_id


def test_traffic_split_unknown_revision_rejected():
    dep = make_deployment(ENV)
    missing = mint_ulid()
    err = raises(UnknownRevision, add(make_env(ENV), dep, make_split(ENV, dep, [(missing, 10000)])))
    assert err.details["revision_id"] == missing
    assert err.details["context"] == "traffic_split"


def test_split_entry_revision_must_match_deployment():
    dep_a = make_deployment(ENV)
    dep_b = make_deployment(ENV)
    rev_b = make_revision(ENV, dep_b)
    err = raises(SplitRevisionWrongDeployment, add(make_env(ENV), dep_a, dep_b, rev_b, make_split(ENV, dep_a, [(rev_b, 10000)])))
    assert err.details == {
        "revision": rev_b.revision_id,
        "expected_deployment": dep_a.deployment_id,
        "actual_deployment": dep_b.deployment_id,
    }


def test_split_entry_revision_must_match_bundle():
    dep = make_deployment(ENV, bundle_id="a")
    rev = make_revision(ENV, dep, bundle_id="b")
    err = raises(SplitRevisionWrongBundle, add(make_env(ENV), dep, rev, make_split(ENV, dep, [(rev, 10000)])))
    assert err.details == {"revision": rev.revision_id, "expected_bundle": "a", "actual_bundle": "b"}


def test_bundle_current_revisions_must_belong_to_bundle_deployment():
    dep_a = make_deployment(ENV)
    dep_b = make_deployment(ENV)
    rev_b = make_revision(ENV, dep_b)
    dep_a = attrs.evolve(dep_a, current_revisions=(rev_b.revision_id,))
    err = raises(BundleRevisionWrongDeployment, add(make_env(ENV), dep_a, dep_b, rev_b))
    assert err.details == {
        "deployment": dep_a.deployment_id,
        "revision": rev_b.revision_id,
        "actual_deployment": dep_b.deployment_id,
    }


def test_bundle_current_revisions_must_reference_known_revision():
    missing = mint_ulid()
    dep = make_deployment(ENV, current_revisions=[missing])
    err = raises(UnknownRevision, add(make_env(ENV), dep))
    assert err.details["revision_id"] == missing
    assert err.details["context"] == "bundle_deployment.current_revisions"


def test_bundle_current_revisions_must_match_bundle_id():
    dep = make_deployment(ENV, bundle_id="a")
    rev = make_revision(ENV, dep, bundle_id="b")
    dep = attrs.evolve(dep, current_revisions=(rev.revision_id,))
    err = raises(BundleRevisionWrongBundle, add(make_env(ENV), dep, rev))
    assert err.details == {
        "deployment": dep.deployment_id,
        "revision": rev.revision_id,
        "expected_bundle": "a",
        "actual_bundle": "b",
    }


def test_split_bundle_must_match_referenced_deployment_bundle():
    dep = make_deployment(ENV, bundle_id="A")
    rev = make_revision(ENV, dep, bundle_id="B")
    split = make_split(ENV, dep, [(rev, 10000)], bundle_id="B")
    err = raises(SplitDeploymentBundleMismatch, add(make_env(ENV), dep, rev, split))
    assert err.details == {"deployment": dep.deployment_id, "split_bundle": "B", "deployment_bundle": "A"}


def test_credentials_ref_must_be_scoped_to_environment_id():
    err = raises(CrossEnvRef, make_env(ENV, credentials_ref="secret://prod/credentials/admin"))
    assert err.details == {
        "context": "credentials_ref",
        "uri": "secret://prod/credentials/admin",
        "expected_env": ENV,
        "actual_env": "prod",
    }


def test_credentials_ref_matching_env_passes():
    validate_environment(make_env(ENV, credentials_ref="secret://local/credentials/admin"))


def test_secret_ref_rejects_missing_env_segment():
    with pytest.raises(SpecFormatError) as info:
        secret_ref_env("secret:///credentials/admin")
    assert info.value.format_rule == "EmptyEnvSegment"
    # and inside a document it is a (one-line) spec error, never a KeyError/IndexError
    err = raises(SpecFormatError, make_env(ENV, credentials_ref="secret:///credentials/admin"))
    assert err.format_rule == "EmptyEnvSegment"
    assert "credentials_ref" in str(err)


def test_runtime_ref_rejects_missing_env_segment():
    with pytest.raises(SpecFormatError) as info:
        secret_ref_env("runtime:///discovered/x", scheme="runtime://")
    assert info.value.format_rule == "EmptyEnvSegment"


def test_revision_with_wrong_schema_rejected_by_environment():
    dep = make_deployment(ENV)
    rev = make_revision(ENV, dep, schema="greentic.revision.v999")
    err = raises(SchemaMismatch, add(make_env(ENV), dep, rev))
    assert err.details["expected"] == REVISION_V1
    assert err.details["actual"] == "greentic.revision.v999"


def test_bundle_deployment_with_wrong_schema_rejected_by_environment():
    err = raises(SchemaMismatch, add(make_env(ENV), make_deployment(ENV, schema="greentic.bundle-deployment.v0")))
    assert err.details["expected"] == BUNDLE_DEPLOYMENT_V1


def test_traffic_split_with_wrong_schema_rejected_by_environment():
    dep = make_deployment(ENV)
    rev = make_revision(ENV, dep)
    split = make_split(ENV, dep, [(rev, 10000)], schema="greentic.traffic-split.v0")
    err = raises(SchemaMismatch, add(make_env(ENV), dep, rev, split))
    assert err.details["expected"] == TRAFFIC_SPLIT_V1


def env_with_endpoints(*endpoints, bundle_ids=("bundle-a",)):
    return add(make_env(ENV, messaging_endpoints=endpoints), *(make_deployment(ENV, bundle_id=b) for b in bundle_ids))


def test_messaging_endpoint_env_id_must_match_environment_id():
    ep = make_endpoint("prod")
    err = raises(EnvIdMismatch, env_with_endpoints(ep))
    assert err.details["context"] == "messaging_endpoint"
    assert err.details["endpoint_id"] == ep["endpoint_id"]


def test_duplicate_endpoint_id_rejected():
    first = make_endpoint(ENV, provider_id="a")
    second = make_endpoint(ENV, provider_id="b", endpoint_id=first["endpoint_id"].lower())  # same ULID, other case
    err = raises(DuplicateMessagingEndpoint, env_with_endpoints(first, second))
    assert err.details["endpoint_id"] == first["endpoint_id"]


def test_duplicate_provider_instance_rejected():
    err = raises(DuplicateProviderInstance, env_with_endpoints(make_endpoint(ENV), make_endpoint(ENV)))
    assert err.details["provider_type"] == "teams"
    assert err.details["provider_id"] == "legal-bot"


def test_error_messages_stay_one_line_with_raw_strings():
    first = make_endpoint(ENV, provider_type="teams\nbot")
    err = raises(DuplicateProviderInstance, env_with_endpoints(first, make_endpoint(ENV, provider_type="teams\nbot")))
    assert err.details["provider_type"] == "teams\nbot"  # the details keep the raw value
    assert "'teams\\nbot'" in str(err)


def test_distinct_provider_id_under_same_type_is_allowed():
    validate_environment(
        env_with_endpoints(make_endpoint(ENV, provider_id="legal-bot"), make_endpoint(ENV, provider_id="accounting-bot"))
    )


def test_linked_bundle_must_exist_in_environment():
    ep = make_endpoint(ENV, linked_bundles=["nope"])
    err = raises(MessagingEndpointBundleNotLinked, env_with_endpoints(ep))
    assert err.details == {"endpoint_id": ep["endpoint_id"], "bundle_id": "nope"}


def test_welcome_flow_bundle_must_be_linked():
    ep = make_endpoint(
        ENV,
        linked_bundles=["bundle-a"],
        welcome_flow={"bundle_id": "bundle-b", "pack_id": "messaging-teams", "flow_id": "welcome"},
    )
    err = raises(WelcomeFlowBundleNotLinked, env_with_endpoints(ep, bundle_ids=("bundle-a", "bundle-b")))
    assert err.details["bundle_id"] == "bundle-b"


def test_well_formed_messaging_endpoint_passes():
    ep = make_endpoint(
        ENV,
        linked_bundles=["bundle-a"],
        welcome_flow={"bundle_id": "bundle-a", "pack_id": "messaging-teams", "flow_id": "welcome"},
        webhook_secret_ref=f"secret://{ENV}/messaging/hook",
    )
    validate_environment(env_with_endpoints(ep))


def test_messaging_endpoint_secret_ref_must_be_scoped_to_env():
    ep = make_endpoint(ENV, secret_refs=["secret://prod/messaging/teams"])
    err = raises(CrossEnvRef, env_with_endpoints(ep))
    assert err.details["context"] == "messaging_endpoint.secret_refs"
    assert err.details["actual_env"] == "prod"


def test_config_overrides_referencing_pack_in_revision_passes():
    dep = make_deployment(ENV, config_overrides={"messaging-telegram": {"greeting": "hi"}})
    rev = make_revision(ENV, dep, pack_ids=["messaging-telegram"])
    validate_environment(add(make_env(ENV), dep, rev))


def test_config_overrides_referencing_unknown_pack_rejected():
    dep = make_deployment(ENV, config_overrides={"unknown-pack": {"k": 1}})
    rev = make_revision(ENV, dep, pack_ids=["messaging-telegram"])
    err = raises(ConfigOverridePackNotInRevisions, add(make_env(ENV), dep, rev))
    assert err.details == {"deployment": dep.deployment_id, "pack_id": "unknown-pack"}


def test_config_overrides_in_any_current_revision_passes_canary():
    dep = make_deployment(ENV, config_overrides={"pack-a": {"k": 1}, "pack-b": {"k": 2}})
    r1 = make_revision(ENV, dep, sequence=1, pack_ids=["pack-a"])
    r2 = make_revision(ENV, dep, sequence=2, pack_ids=["pack-b"])
    dep = attrs.evolve(dep, current_revisions=(r1.revision_id, r2.revision_id))
    validate_environment(add(make_env(ENV), dep, r1, r2))


def test_config_overrides_on_bundle_with_no_revisions_accepted_forward_looking():
    validate_environment(add(make_env(ENV), make_deployment(ENV, config_overrides={"future-pack": {"k": 1}})))


def test_empty_config_overrides_on_bundle_with_no_revisions_passes():
    validate_environment(add(make_env(ENV), make_deployment(ENV)))


def test_config_overrides_validated_against_env_revisions_for_deployment():
    # current_revisions is empty: the source of pack ids is env.revisions, not current_revisions
    dep = make_deployment(ENV, config_overrides={"pack-a": {"k": 1}})
    rev = make_revision(ENV, dep, pack_ids=["pack-a"])
    assert dep.current_revisions == ()
    validate_environment(add(make_env(ENV), dep, rev))


def test_config_overrides_accepted_when_revision_pack_list_is_empty():
    dep = make_deployment(ENV, config_overrides={"pack-a": {"k": 1}})
    validate_environment(add(make_env(ENV), dep, make_revision(ENV, dep), make_revision(ENV, dep, sequence=2)))


def test_config_overrides_unknown_pack_rejected_when_deployment_has_other_revisions():
    dep = make_deployment(ENV, config_overrides={"pack-a": {"k": 1}})
    env = add(make_env(ENV), dep, make_revision(ENV, dep), make_revision(ENV, dep, sequence=2, pack_ids=["pack-b"]))
    err = raises(ConfigOverridePackNotInRevisions, env)
    assert err.details["pack_id"] == "pack-a"


def test_config_overrides_ignore_archived_revisions_and_other_deployments():
    dep = make_deployment(ENV, config_overrides={"pack-a": {"k": 1}})
    other = make_deployment(ENV, bundle_id="other")
    archived = make_revision(ENV, dep, Lifecycle.ARCHIVED, pack_ids=["pack-a"])
    live = make_revision(ENV, dep, sequence=2, pack_ids=["pack-b"])
    elsewhere = make_revision(ENV, other, pack_ids=["pack-a"])
    err = raises(ConfigOverridePackNotInRevisions, add(make_env(ENV), dep, other, archived, live, elsewhere))
    assert err.details["pack_id"] == "pack-a"
    # with only the archived revision the set is empty, so the override is accepted for now
    validate_environment(add(make_env(ENV), dep, archived))


def test_well_formed_environment_with_split_and_bundle_passes():
    env, _, _, _ = make_canary_env(ENV)
    validate_environment(env)


# ---------------------------------------------------------------- config_overrides limits (7b)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({f"p{i}": {} for i in range(33)}, "ConfigOverridesTooManyPacks"),
        ({"": {"k": 1}}, "ConfigOverrideEmptyPackId"),
        ({"p": {f"k{i}": i for i in range(65)}}, "ConfigOverridesTooManyKeysForPack"),
        ({"p": {"": 1}}, "ConfigOverrideEmptyKey"),
        ({"p": {"k": "x" * (16 * 1024)}}, "ConfigOverridesTooLarge"),
        ({"p": ["not", "an", "object"]}, "Malformed"),
    ],
)
def test_config_overrides_limits(overrides, problem):
    dep = make_deployment(ENV, config_overrides=overrides)
    err = raises(ConfigOverridesInvalid, add(make_env(ENV), dep))
    assert err.details["problem"] == problem
    assert err.details["deployment"] == dep.deployment_id


def test_config_overrides_at_the_limits_pass():
    overrides = {f"p{i}": {} for i in range(31)}
    overrides["big"] = {f"k{i}": i for i in range(64)}
    validate_environment(add(make_env(ENV), make_deployment(ENV, config_overrides=overrides)))


# ---------------------------------------------------------------- messaging endpoint self-validation


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"provider_id": "  "}, "EmptyMessagingProviderId"),
        ({"provider_type": ""}, "EmptyMessagingProviderType"),
        (
            {"linked_bundles": ["bundle-a"], "welcome_flow": {"bundle_id": "bundle-a", "pack_id": "p", "flow_id": " "}},
            "EmptyWelcomeFlowId",
        ),
    ],
)
def test_messaging_endpoint_blank_fields_rejected(change, problem):
    err = raises(MessagingEndpointInvalid, env_with_endpoints(make_endpoint(ENV, **change)))
    assert err.details["problem"] == problem


def test_messaging_endpoint_refs_are_compared_with_its_own_env_id_first():
    # upstream MessagingEndpoint::validate() compares refs with the endpoint's env_id,
    # before Environment::validate compares that env_id with environment_id
    ep = {**make_endpoint(ENV), "env_id": "prod"}
    err = raises(CrossEnvRef, env_with_endpoints(ep))
    assert err.details["expected_env"] == "prod"
    assert err.details["actual_env"] == ENV


def test_messaging_endpoint_webhook_secret_ref_must_be_scoped_to_env():
    ep = make_endpoint(ENV, webhook_secret_ref="secret://prod/hook")
    err = raises(CrossEnvRef, env_with_endpoints(ep))
    assert err.details["context"] == "messaging_endpoint.webhook_secret_ref"


def test_messaging_endpoint_wrong_schema_rejected():
    err = raises(SchemaMismatch, env_with_endpoints(make_endpoint(ENV, schema="greentic.messaging-endpoint.v0")))
    assert err.details["expected"] == "greentic.messaging-endpoint.v1"


def test_messaging_endpoint_self_validation_runs_before_env_check():
    ep = make_endpoint("prod", provider_id="")
    err = raises(MessagingEndpointInvalid, env_with_endpoints(ep))
    assert err.details["problem"] == "EmptyMessagingProviderId"


def _without(doc, key):
    return {k: v for k, v in doc.items() if k != key}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda ep: _without(ep, "endpoint_id"),
        lambda ep: _without(ep, "schema"),
        lambda ep: _without(ep, "created_at"),
        lambda ep: {**ep, "endpoint_id": "not-a-ulid"},
        lambda ep: {**ep, "endpoint_id": 7},
        lambda ep: {**ep, "env_id": "bad/env"},
        lambda ep: {**ep, "secret_refs": "secret://local/x"},
        lambda ep: {**ep, "secret_refs": [1]},
        lambda ep: {**ep, "secret_refs": ["http://local/x"]},
        lambda ep: {**ep, "webhook_secret_ref": "secret://"},
        lambda ep: {**ep, "linked_bundles": None},
        lambda ep: {**ep, "welcome_flow": "bundle-a"},
        lambda ep: {**ep, "welcome_flow": {"bundle_id": "bundle-a"}},
        lambda ep: {**ep, "generation": -1},
        lambda ep: {**ep, "generation": "1"},
        lambda ep: {**ep, "updated_at": "yesterday"},
        lambda ep: ["not", "an", "object"],
    ],
)
def test_malformed_messaging_endpoint_is_a_spec_error(mangle):
    err = raises(MessagingEndpointInvalid, env_with_endpoints(mangle(make_endpoint(ENV))))
    assert err.details["problem"] == "Malformed"
    assert err.details["path"] == "messaging_endpoints[0]"


@pytest.mark.parametrize(
    "doc",
    [
        {"pack_ref": "x"},
        {"kind": "acme.ext.audit", "pack_ref": "x"},
        {"kind": "acme.ext.audit@1.0.0"},
        {"kind": "acme.ext.audit@1.0.0", "pack_ref": "x", "instance_id": 3},
        {"kind": "acme.ext.audit@1.0.0", "pack_ref": "x", "generation": 1.5},
        "acme.ext.audit@1.0.0",
    ],
)
def test_malformed_extension_is_a_spec_error(doc):
    err = raises(MalformedSection, make_env(ENV, extensions=[doc]))
    assert err.details["path"] == "extensions[0]"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            ["schema", "env_id", "endpoint_id", "provider_id", "provider_type", "display_name", "secret_refs",
             "webhook_secret_ref", "linked_bundles", "welcome_flow", "generation", "created_at", "updated_at",
             "updated_by", "kind", "pack_ref", "instance_id"]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
            max_leaves=6,
        ),
    )
)
def test_arbitrary_raw_sections_raise_only_spec_errors(doc):
    """Whatever JSON sits in a raw section, validation raises a SpecError or passes."""
    base = make_endpoint(ENV)
    for env in (
        make_env(ENV, messaging_endpoints=[{**base, **doc}]),
        make_env(ENV, messaging_endpoints=[doc]),
        make_env(ENV, extensions=[doc]),
        make_env(ENV, extensions=[{**make_extension(), **doc}]),
    ):
        try:
            validate_environment(env)
        except SpecError as err:
            assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("revocation", {"required": "yes"}),
        ("revocation", {"list_ref": 5}),
        ("retention", {"keep_revisions": -1}),
        ("health", {"state": "purple"}),
        ("health", {"last_checked_at": "now"}),
    ],
)
def test_malformed_raw_env_sections_rejected(field, value):
    err = raises(MalformedSection, make_env(ENV, **{field: value}))
    assert err.details["path"] == field


def test_malformed_usage_rejected():
    err = raises(MalformedSection, add(make_env(ENV), make_deployment(ENV, usage={"last_seen_at": "2026-05-19T12:00:00Z"})))
    assert err.details["path"] == "bundles[0].usage"


# =========================================================================== u32 ranges (decode-level)


def test_drain_seconds_must_fit_u32():
    dep = make_deployment(ENV)
    validate_environment(add(make_env(ENV), dep, make_revision(ENV, dep, drain_seconds=U32_MAX)))
    err = raises(NumberOutOfRange, add(make_env(ENV), dep, make_revision(ENV, dep, drain_seconds=U32_MAX + 1)))
    assert err.details == {"path": "revisions[0].drain_seconds", "value": U32_MAX + 1}


def test_weight_bps_must_fit_u32():
    err = raises(NumberOutOfRange, env_with_split([2**32, 10000]))
    assert err.details["path"] == "traffic_splits[0].entries[0].weight_bps"


def test_basis_points_must_fit_u32():
    err = raises(NumberOutOfRange, env_with_shares([10000, 2**40]))
    assert err.details["path"] == "bundles[0].revenue_share[1].basis_points"


def test_retention_counters_must_fit_u32():
    err = raises(NumberOutOfRange, make_env(ENV, retention={"keep_revisions": 2**32}))
    assert err.details["path"] == "retention.keep_revisions"


def test_out_of_range_runs_before_validate_rules():
    # upstream fails while reading the document, before validate() sees the wrong schema
    dep = make_deployment(ENV)
    env = add(make_env(ENV, schema="x"), dep, make_revision(ENV, dep, drain_seconds=2**33))
    raises(NumberOutOfRange, env)


# =========================================================================== public_base_url (src/environment.rs)


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://deploy.example.com", "https://deploy.example.com"),
        ("https://[::1]:8080", "https://[::1]:8080"),
        ("https://deploy.example.com:8443", "https://deploy.example.com:8443"),
        ("https://deploy.example.com/", "https://deploy.example.com"),
        ("  https://deploy.example.com  ", "https://deploy.example.com"),
    ],
    ids=["http", "https", "ipv6", "port", "trailing-slash", "surrounding-whitespace"],
)
def test_public_base_url_valid(value, normalised):
    assert validate_public_base_url(value) == normalised
    validate_environment(make_env(ENV, host_config=HostConfig(env_id=ENV, public_base_url=value)))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("https://deploy example.com", "whitespace"),
        ("deploy.example.com", "http:// or https://"),
        ("ftp://deploy.example.com", "http:// or https://"),
        ("https://user:pw@deploy.example.com", "userinfo"),
        ("https://deploy.example.com?x=1", "query"),
        ("https://deploy.example.com#top", "fragment"),
        ("https://deploy.example.com/app", "path"),
        ("https://deploy.example.com:http", "port"),
        ("https://", "host"),
        ("https:///path", "host"),
        ("https://:443", "host"),
        ("   ", "empty"),
    ],
    ids=["empty", "whitespace", "no-scheme", "ftp", "userinfo", "query", "fragment", "path", "port", "no-host",
         "empty-host-with-path", "empty-host-with-port", "blank"],
)
def test_public_base_url_invalid(value, reason):
    with pytest.raises(InvalidPublicBaseUrl) as info:
        validate_public_base_url(value)
    assert info.value.details["value"] == value.strip()  # upstream reports the trimmed value
    assert reason in info.value.details["reason"]
    assert "\n" not in str(info.value)
    err = raises(InvalidPublicBaseUrl, make_env(ENV, host_config=HostConfig(env_id=ENV, public_base_url=value)))
    assert err.details["reason"] == info.value.details["reason"]


def test_validate_does_not_rewrite_public_base_url():
    env = make_env(ENV, host_config=HostConfig(env_id=ENV, public_base_url="https://deploy.example.com/"))
    validate_environment(env)
    assert env.host_config.public_base_url == "https://deploy.example.com/"


# =========================================================================== gui_enabled / listen_addr


def test_gui_enabled_defaults_on_for_local():
    assert HostConfig(env_id="local").resolved_gui_enabled is True


def test_gui_enabled_defaults_off_for_other_envs():
    assert HostConfig(env_id="prod").resolved_gui_enabled is False


def test_gui_enabled_explicit_value_wins():
    assert HostConfig(env_id="local", gui_enabled=False).resolved_gui_enabled is False
    assert HostConfig(env_id="prod", gui_enabled=True).resolved_gui_enabled is True


def test_resolved_listen_addr_falls_back_to_default():
    assert HostConfig(env_id=ENV).resolved_listen_addr == DEFAULT_LISTEN_ADDR == "127.0.0.1:8080"


def test_resolved_listen_addr_uses_explicit_when_set():
    assert HostConfig(env_id=ENV, listen_addr="0.0.0.0:9090").resolved_listen_addr == "0.0.0.0:9090"


@pytest.mark.parametrize("addr", ["127.0.0.1:8080", "0.0.0.0:9090", "[::1]:8080", "[::]:0"])
def test_listen_addr_valid(addr):
    validate_environment(make_env(ENV, host_config=HostConfig(env_id=ENV, listen_addr=addr)))


@pytest.mark.parametrize(
    "addr", ["not-a-socket-addr", "localhost:8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:8080", "[::1]", "1.2.3.4:+80"]
)
def test_listen_addr_malformed_rejected(addr):
    err = raises(InvalidListenAddr, make_env(ENV, host_config=HostConfig(env_id=ENV, listen_addr=addr)))
    assert err.details["value"] == addr
    assert addr in str(err)


def test_listen_addr_malformed_in_json_rejected():
    text = json.dumps({
        "schema": ENVIRONMENT_V1, "environment_id": "dev", "name": "dev",
        "host_config": {"env_id": "dev", "listen_addr": "not-a-socket-addr"}, "packs": [],
    })
    env = codec.load_environment(text)  # the codec keeps the string; validation rejects it
    raises(InvalidListenAddr, env)


# =========================================================================== order of the steps


def test_schema_checked_before_host_config():
    raises(SchemaMismatch, make_env(ENV, schema="x", host_config=HostConfig(env_id="prod")))


def test_revisions_checked_before_bundles_and_bundles_before_splits():
    dep = make_deployment(ENV, shares=[1])  # bundle error (step 7)
    bad_rev = make_revision("prod", dep)  # revision error (step 6)
    split = make_split(ENV, dep, [])  # split error (step 8)
    raises(EnvIdMismatch, add(make_env(ENV), dep, bad_rev, split))
    raises(BasisPointsSum, add(make_env(ENV), dep, split))


def test_endpoints_checked_before_extensions():
    env = make_env(
        ENV,
        messaging_endpoints=[make_endpoint("prod")],
        extensions=[make_extension(instance_id="Bad")],
    )
    raises(EnvIdMismatch, env)


# =========================================================================== gaps of 3.2 we close


def test_gap_duplicate_revision_id_rejected():
    dep = make_deployment(ENV)
    r1 = make_revision(ENV, dep, sequence=1)
    r2 = make_revision(ENV, dep, sequence=2, revision_id=r1.revision_id)
    err = raises(DuplicateRevisionId, add(make_env(ENV), dep, r1, r2))
    assert err.details["revision_id"] == r1.revision_id
    assert err.hint


def test_gap_duplicate_revision_id_checked_at_step_6():
    # a broken bundle (step 7) does not hide the duplicate revision (step 6)
    dep = make_deployment(ENV, shares=[1])
    r1 = make_revision(ENV, dep)
    raises(DuplicateRevisionId, add(make_env(ENV), dep, r1, attrs.evolve(r1, sequence=2)))


def test_gap_duplicate_deployment_id_rejected():
    dep = make_deployment(ENV)
    copy = make_deployment(ENV, bundle_id="other", deployment_id=dep.deployment_id)
    err = raises(DuplicateDeploymentId, add(make_env(ENV), dep, copy))
    assert err.details["deployment_id"] == dep.deployment_id


def test_gap_two_splits_for_one_deployment_rejected():
    env, dep, r1, r2 = make_canary_env(ENV)
    err = raises(DuplicateSplit, add(env, make_split(ENV, dep, [(r1, 10000)], generation=5)))
    assert err.details["deployment_id"] == dep.deployment_id


def test_gap_revision_twice_in_one_split_rejected():
    dep = make_deployment(ENV)
    rev = make_revision(ENV, dep)
    split = make_split(ENV, dep, [(rev, 5000), (rev, 5000)])
    err = raises(DuplicateSplitEntry, add(make_env(ENV), dep, rev, split))
    assert err.details == {"deployment_id": dep.deployment_id, "revision_id": rev.revision_id}


def test_gap_duplicate_sequence_rejected():
    dep = make_deployment(ENV)
    r1 = make_revision(ENV, dep, sequence=3)
    r2 = make_revision(ENV, dep, sequence=3)
    err = raises(DuplicateSequence, add(make_env(ENV), dep, r1, r2))
    assert err.details["deployment_id"] == dep.deployment_id
    assert err.details["sequence"] == 3


def test_gap_same_sequence_in_different_deployments_is_fine():
    a = make_deployment(ENV)
    b = make_deployment(ENV, bundle_id="b")
    validate_environment(add(make_env(ENV), a, b, make_revision(ENV, a), make_revision(ENV, b)))


def test_gap_non_increasing_sequence_is_fine():
    # unique is required; order in the list is not (hand-edited or merged files)
    dep = make_deployment(ENV)
    validate_environment(add(make_env(ENV), dep, make_revision(ENV, dep, sequence=2), make_revision(ENV, dep, sequence=1)))


# =========================================================================== gaps of 3.2 we keep open


@pytest.mark.parametrize("lifecycle", [Lifecycle.DRAINING, Lifecycle.FAILED, Lifecycle.STAGED])
def test_open_gap_split_may_route_a_revision_that_is_not_ready(lifecycle):
    # A routed revision can fail at runtime; the operator must still load and fix the file.
    dep = make_deployment(ENV)
    rev = make_revision(ENV, dep, lifecycle)
    validate_environment(add(make_env(ENV), dep, rev, make_split(ENV, dep, [(rev, 10000)])))


def test_open_gap_current_revisions_may_be_incomplete():
    env, dep, r1, r2 = make_canary_env(ENV)
    env = attrs.evolve(env, bundles=(attrs.evolve(dep, current_revisions=(r1.revision_id,)),))
    validate_environment(env)


def test_open_gap_status_not_checked_against_lifecycle():
    env, dep, _, _ = make_canary_env(ENV)
    validate_environment(attrs.evolve(env, bundles=(attrs.evolve(dep, status=BundleStatus.ARCHIVED),)))


def test_messaging_and_extension_slots_in_packs_are_not_rejected():
    # upstream validate() enforces only uniqueness; the CLI refuses these slots
    validate_environment(make_env(ENV, packs=[make_pack("messaging"), make_pack("extension")]))


# =========================================================================== fixtures and scale


@pytest.mark.parametrize("name", ["upstream-example", "upstream-full", "upstream-minimal"])
def test_fixtures_validate(name):
    text = (FIXTURES / f"{name}.json").read_text()
    validate_environment(codec.load_environment(text))


def test_validation_of_20k_revisions_is_linear():
    """Structural scale test (no timing assertion): 20k revisions, all in current_revisions
    and all in one split, must validate. A quadratic implementation would take minutes here."""
    n = 20_000
    dep = make_deployment(ENV)
    template = make_revision(ENV, dep, pack_ids=["pack-a"])
    revisions = tuple(attrs.evolve(template, revision_id=mint_ulid(), sequence=i + 1) for i in range(n))
    ids_ = tuple(r.revision_id for r in revisions)
    assert len(set(ids_)) == n
    dep = attrs.evolve(dep, current_revisions=ids_, config_overrides={"pack-a": {"k": 1}})
    entries = tuple(TrafficSplitEntry(revision_id=rid, weight_bps=1 if i < 10_000 else 0) for i, rid in enumerate(ids_))
    split = attrs.evolve(make_split(ENV, dep, []), entries=entries)
    env = attrs.evolve(make_env(ENV), bundles=(dep,), revisions=revisions, traffic_splits=(split,))
    validate_environment(env)
    # and the same document with one duplicate at the very end is still caught
    with pytest.raises(DuplicateSplitEntry):
        validate_environment(attrs.evolve(env, traffic_splits=(attrs.evolve(split, entries=entries + (entries[-1],)),)))
