"""The lifecycle matrix, the chain walker and the lifecycle verbs (upstream-spec section 4)."""

from __future__ import annotations

import copy
import itertools

import attrs
import pytest
from engine_helpers import NOW, at, canary_env, empty_env, put_split, set_lifecycle, with_deployment, with_revision

from greentic_core import errors
from greentic_core.lifecycle import (
    ALLOWED_TRANSITIONS,
    ARCHIVE_CHAIN,
    HealthCheckId,
    HealthGateFailure,
    StillRouted,
    add_deployment,
    archive_revision,
    complete_drain,
    drain_revision,
    is_valid_transition,
    stage_revision,
    walk_revision_chain,
    warm_revision,
)
from greentic_core.spec import BundleStatus, Lifecycle, PackListEntry, Workload
from greentic_core.validation import validate_environment

L = Lifecycle

DOCUMENTED_EDGES = {
    ("inactive", "staged"), ("inactive", "failed"), ("inactive", "archived"),
    ("staged", "warming"), ("staged", "failed"), ("staged", "archived"),
    ("warming", "ready"), ("warming", "failed"), ("warming", "archived"),
    ("ready", "draining"), ("ready", "failed"), ("ready", "archived"),
    ("draining", "inactive"),
    ("failed", "staged"), ("failed", "archived"),
}  # fmt: skip

ALL_PAIRS = list(itertools.product([s.value for s in L], repeat=2))


def failing_gate(*checks, message="route table is stale"):
    calls = []

    def gate(env, revision):
        calls.append(revision.lifecycle)
        return HealthGateFailure(failed_checks=checks, message=message)

    gate.calls = calls
    return gate


def passing_gate():
    calls = []

    def gate(env, revision):
        calls.append(revision.lifecycle)
        return None

    gate.calls = calls
    return gate


# --------------------------------------------------------------------------- the matrix (lifecycle.rs)


def test_matrix_allows_documented_transitions():
    assert len(DOCUMENTED_EDGES) == 15
    for from_, to in DOCUMENTED_EDGES:
        assert is_valid_transition(from_, to)
        assert is_valid_transition(L(from_), L(to))


def test_matrix_constant_is_exactly_the_documented_edges():
    assert {(a.value, b.value) for a, b in ALLOWED_TRANSITIONS} == DOCUMENTED_EDGES


def test_matrix_denies_all_other_transitions():
    assert len(ALL_PAIRS) == 49
    allowed = [pair for pair in ALL_PAIRS if is_valid_transition(*pair)]
    assert set(allowed) == DOCUMENTED_EDGES
    assert len(ALL_PAIRS) - len(allowed) == 34


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair_matches_the_matrix(pair):
    assert is_valid_transition(*pair) is (pair in DOCUMENTED_EDGES)


def test_archived_is_terminal():
    assert not any(is_valid_transition(L.ARCHIVED, to) for to in L)


def test_no_self_transitions():
    assert not any(is_valid_transition(s, s) for s in L)


def test_drain_completion_walk_reaches_archived():
    assert is_valid_transition(L.READY, L.DRAINING)
    assert is_valid_transition(L.DRAINING, L.INACTIVE)
    assert is_valid_transition(L.INACTIVE, L.ARCHIVED)


@pytest.mark.parametrize(
    "pair",
    [("draining", "failed"), ("draining", "archived"), ("draining", "ready"), ("staged", "ready"),
     ("ready", "inactive"), ("failed", "warming"), ("failed", "ready")],
)  # fmt: skip
def test_notable_refusals(pair):
    assert not is_valid_transition(*pair)


def test_unknown_state_is_a_value_error():
    with pytest.raises(ValueError):
        is_valid_transition("ready", "gone")


# --------------------------------------------------------------------------- the walker


def test_walker_takes_two_hops_in_one_call():
    env, _, (rid,) = canary_env((L.STAGED,))
    result = walk_revision_chain(env, rid, [(L.STAGED, L.WARMING), (L.WARMING, L.READY)])
    assert result.starting_lifecycle is L.STAGED
    assert result.revision.lifecycle is L.READY
    assert result.env.revision(rid).lifecycle is L.READY
    assert result.changed
    assert env.revision(rid).lifecycle is L.STAGED  # the input is untouched


def test_walker_unpacks_as_env_revision_start():
    env, _, (rid,) = canary_env((L.STAGED,))
    new_env, revision, start = walk_revision_chain(env, rid, [("staged", "warming")])
    assert (new_env.revision(rid).lifecycle, revision.lifecycle, start) == (L.WARMING, L.WARMING, L.STAGED)


def test_walker_missing_revision_is_not_found():
    env, _, _ = canary_env((L.STAGED,))
    with pytest.raises(errors.RevisionNotFoundInEnv) as info:
        walk_revision_chain(env, "01JX3M0A1B2C3D4E5F6G7H8J9K", [(L.STAGED, L.WARMING)])
    assert isinstance(info.value, errors.NotFound)
    assert info.value.details == {"env_id": "local", "revision_id": "01JX3M0A1B2C3D4E5F6G7H8J9K"}


def test_walker_conflict_lists_every_edge_start_in_chain_order():
    env, _, (rid,) = canary_env((L.DRAINING,))
    with pytest.raises(errors.LifecycleConflict) as info:
        walk_revision_chain(env, rid, [(L.STAGED, L.WARMING), (L.WARMING, L.READY)])
    assert info.value.details["actual"] == "draining"
    assert info.value.details["expected_starts"] == ["staged", "warming"]
    assert info.value.kind == "conflict"


def test_walker_is_idempotent_at_final_state():
    env, _, (rid,) = canary_env((L.READY,))
    gate = failing_gate()
    result = walk_revision_chain(env, rid, [(L.STAGED, L.WARMING), (L.WARMING, L.READY)], health_gate=gate)
    assert result.revision.lifecycle is L.READY
    assert result.starting_lifecycle is L.READY
    assert not result.changed
    assert result.env is env
    assert gate.calls == []  # no hop taken, so no gate


def test_walker_empty_chain():
    env, _, (rid,) = canary_env((L.READY,))
    with pytest.raises(errors.EmptyChain) as info:
        walk_revision_chain(env, rid, [])
    assert info.value.kind == "usage"


def test_walker_checks_each_edge_against_the_matrix():
    env, _, (rid,) = canary_env((L.STAGED,))
    with pytest.raises(errors.InvalidTransition) as info:
        walk_revision_chain(env, rid, [(L.STAGED, L.READY)])
    assert info.value.details["from"] == "staged"
    assert info.value.details["to"] == "ready"


def test_walker_edges_are_taken_only_in_list_order():
    env, _, (rid,) = canary_env((L.STAGED,))
    # warming->ready comes first in the list and is not revisited: staged stops at warming
    result = walk_revision_chain(env, rid, [(L.WARMING, L.READY), (L.STAGED, L.WARMING)])
    assert result.revision.lifecycle is L.WARMING


def test_walker_expected_start_mismatch_is_a_conflict():
    env, _, (rid,) = canary_env((L.WARMING,))
    with pytest.raises(errors.LifecycleConflict) as info:
        walk_revision_chain(env, rid, [(L.STAGED, L.WARMING), (L.WARMING, L.READY)], expected_start=L.STAGED)
    assert info.value.details == {"revision_id": rid, "actual": "warming", "expected_starts": ["staged"]}


def test_walker_expected_start_ignored_at_final_state():
    env, _, (rid,) = canary_env((L.READY,))
    result = walk_revision_chain(env, rid, [(L.STAGED, L.WARMING), (L.WARMING, L.READY)], expected_start="staged")
    assert result.revision.lifecycle is L.READY


def test_walker_on_final_runs_on_the_idempotent_path():
    env, _, (rid,) = canary_env((L.READY,))
    result = walk_revision_chain(env, rid, [(L.WARMING, L.READY)], on_final=lambda r: attrs.evolve(r, warmed_at=at(5)))
    assert result.env.revision(rid).warmed_at == at(5)
    assert result.changed


def test_walker_gate_sees_the_new_state_in_the_new_env():
    env, _, (rid,) = canary_env((L.STAGED,))
    seen = []
    walk_revision_chain(
        env, rid, [(L.STAGED, L.WARMING), (L.WARMING, L.READY)],
        health_gate=lambda e, r: seen.append((e.revision(rid).lifecycle, r.lifecycle)),
    )  # fmt: skip
    assert seen == [(L.READY, L.READY)]


def test_walker_prune_removes_from_current_revisions_only():
    env, did, (a, b) = canary_env((L.READY, L.READY))
    bundle = env.deployment(did)
    env = attrs.evolve(env, bundles=(attrs.evolve(bundle, current_revisions=(a, b)),))
    result = walk_revision_chain(env, a, ARCHIVE_CHAIN, prune_from_splits=True)
    assert result.env.deployment(did).current_revisions == (b,)
    assert result.env.traffic_splits == env.traffic_splits


# --------------------------------------------------------------------------- health gate


def test_gate_failure_records_failed_without_warmed_at():
    env, _, (rid,) = canary_env((L.STAGED,))
    gate = failing_gate(HealthCheckId.ROUTE_TABLE, "provider-health")
    with pytest.raises(errors.HealthGateFailed) as info:
        warm_revision(env, rid, now=at(1), health_gate=gate)
    exc = info.value
    assert gate.calls == [L.READY]
    saved = exc.environment.revision(rid)
    assert saved.lifecycle is L.FAILED
    assert saved.warmed_at is None
    assert exc.revision == saved
    assert exc.details["failed_checks"] == ["route-table", "provider-health"]
    assert exc.details["gate_message"] == "route table is stale"
    assert "revision warm local" in exc.hint
    assert env.revision(rid).lifecycle is L.STAGED  # input untouched
    validate_environment(exc.environment)


def test_gate_false_counts_as_failure_with_no_checks():
    env, _, (rid,) = canary_env((L.STAGED,))
    with pytest.raises(errors.HealthGateFailed) as info:
        warm_revision(env, rid, now=at(1), health_gate=lambda e, r: False)
    assert info.value.details["failed_checks"] == []


def test_gate_retry_from_ready_skips_the_gate():
    env, _, (rid,) = canary_env((L.READY,))
    gate = failing_gate()
    result = warm_revision(env, rid, now=at(7), health_gate=gate)
    assert gate.calls == []
    assert result.revision.lifecycle is L.READY
    assert result.revision.warmed_at == at(7)  # stamped again on the idempotent retry


def test_gate_failure_from_draining_is_invalid_transition_and_nothing_saved():
    env, _, (rid,) = canary_env((L.READY,))
    with pytest.raises(errors.InvalidTransition) as info:
        walk_revision_chain(env, rid, [(L.READY, L.DRAINING)], health_gate=failing_gate())
    assert info.value.details["from"] == "draining"
    assert info.value.details["to"] == "failed"
    assert not hasattr(info.value, "environment")


def test_gate_not_run_when_prune_guard_refuses():
    env, did, (rid,) = canary_env((L.READY,))
    env = put_split(env, did, [(rid, 10000)])
    gate = passing_gate()
    with pytest.raises(errors.ActiveTrafficReference):
        walk_revision_chain(env, rid, ARCHIVE_CHAIN, prune_from_splits=True, health_gate=gate)
    assert gate.calls == []


def test_gate_failure_skips_on_final_and_prune():
    env, did, (rid,) = canary_env((L.STAGED,))
    env = attrs.evolve(env, bundles=(attrs.evolve(env.deployment(did), current_revisions=(rid,)),))
    finals = []
    with pytest.raises(errors.HealthGateFailed) as info:
        walk_revision_chain(
            env, rid, [(L.STAGED, L.WARMING)], prune_from_splits=True,
            on_final=lambda r: finals.append(r) or r, health_gate=failing_gate(),
        )  # fmt: skip
    assert finals == []
    assert info.value.environment.deployment(did).current_revisions == (rid,)


def test_gate_passing_gives_ready_and_warmed_at():
    env, _, (rid,) = canary_env((L.STAGED,))
    gate = passing_gate()
    result = warm_revision(env, rid, now=at(2), health_gate=gate)
    assert gate.calls == [L.READY]
    assert (result.revision.lifecycle, result.revision.warmed_at) == (L.READY, at(2))


def test_gate_with_a_bad_return_type_is_a_type_error():
    env, _, (rid,) = canary_env((L.STAGED,))
    with pytest.raises(TypeError):
        warm_revision(env, rid, now=at(2), health_gate=lambda e, r: "ok")


# --------------------------------------------------------------------------- warm


def test_warm_from_staged_walks_to_ready():
    env, _, (rid,) = canary_env((L.STAGED,))
    result = warm_revision(env, rid, now=at(3))
    assert result.starting_lifecycle is L.STAGED
    assert result.env.revision(rid).lifecycle is L.READY
    assert result.env.revision(rid).warmed_at == at(3)


def test_warm_from_warming():
    env, _, (rid,) = canary_env((L.WARMING,))
    assert warm_revision(env, rid, now=at(3)).revision.lifecycle is L.READY


def test_warm_retries_a_failed_revision_through_staged():
    env, _, (rid,) = canary_env((L.FAILED,))
    gate = passing_gate()
    result = warm_revision(env, rid, now=at(4), health_gate=gate)
    assert result.starting_lifecycle is L.FAILED
    assert result.revision.lifecycle is L.READY
    assert gate.calls == [L.READY]


def test_warm_retry_of_failed_that_fails_again_stays_failed():
    env, _, (rid,) = canary_env((L.FAILED,))
    with pytest.raises(errors.HealthGateFailed) as info:
        warm_revision(env, rid, now=at(4), health_gate=failing_gate())
    assert info.value.environment.revision(rid).lifecycle is L.FAILED


@pytest.mark.parametrize("state", [L.DRAINING, L.INACTIVE, L.ARCHIVED])
def test_warm_refuses_other_states(state):
    env, _, (rid,) = canary_env((state,))
    with pytest.raises(errors.LifecycleConflict) as info:
        warm_revision(env, rid, now=at(1))
    assert info.value.details["actual"] == state.value
    assert info.value.details["expected_starts"] == ["failed", "staged", "warming"]


def test_warm_expected_lifecycle_detects_a_stale_read():
    env, _, (rid,) = canary_env((L.WARMING,))
    with pytest.raises(errors.LifecycleConflict):
        warm_revision(env, rid, now=at(1), expected_lifecycle=L.STAGED)
    assert warm_revision(env, rid, now=at(1), expected_lifecycle="warming").revision.lifecycle is L.READY


# --------------------------------------------------------------------------- stage


def test_stage_sequence_counts_per_deployment():
    env, d1 = with_deployment(empty_env(), "shop")
    env, d2 = with_deployment(env, "blog")
    seqs = []
    for did in (d1, d1, d2, d1):
        result = stage_revision(env, did, now=at(len(seqs)))
        env = result.env
        seqs.append((did, result.revision.sequence))
    assert seqs == [(d1, 1), (d1, 2), (d2, 1), (d1, 3)]


def test_stage_fills_the_revision_as_upstream():
    env, did = with_deployment(empty_env(), "shop")
    rid = "01JX3M0A1B2C3D4E5F6G7H8J9K"
    result = stage_revision(
        env, did, revision_id=rid, bundle_digest="sha256:ab",
        pack_list=(PackListEntry(pack_id="p", version="0.0.0", digest="sha256:1"),),
        workload=Workload(command=("python", "-m", "app")), now=NOW,
    )  # fmt: skip
    rev = result.revision
    assert result.starting_lifecycle is L.STAGED
    assert rev.lifecycle is L.STAGED
    assert rev.bundle_id == "shop" and rev.deployment_id == did and rev.env_id == "local"
    assert rev.created_at == rev.staged_at == NOW
    assert rev.warmed_at is None
    assert rev.pack_list_lock_ref == f"revisions/{rid}/pack-list.lock"
    assert (rev.config_digest, rev.signature_sidecar_ref, rev.drain_seconds) == ("sha256:00", "rev.sig", 30)
    assert rev.abort_metrics == ()
    assert rev.workload.command == ("python", "-m", "app")
    assert result.env.deployment(did).current_revisions == ()  # stage does not maintain it
    assert result.env.revisions[-1] == rev


def test_stage_mints_an_id_when_none_given():
    env, did = with_deployment(empty_env())
    a = stage_revision(env, did, now=NOW)
    b = stage_revision(a.env, did, now=NOW)
    assert a.revision.revision_id != b.revision.revision_id
    assert len(a.revision.revision_id) == 26


def test_stage_duplicate_revision_refused():
    env, did = with_deployment(empty_env())
    rid = "01JX3M0A1B2C3D4E5F6G7H8J9K"
    env = stage_revision(env, did, revision_id=rid, now=NOW).env
    with pytest.raises(errors.DuplicateRevision) as info:
        stage_revision(env, did, revision_id=rid.lower(), now=NOW)
    assert info.value.details["revision_id"] == rid


def test_stage_unknown_deployment_refused():
    env = empty_env()
    with pytest.raises(errors.DeploymentNotFound) as info:
        stage_revision(env, "01JX3K8M2N4P6Q8R0S2T4V6W8X", now=NOW)
    assert info.value.kind == "not_found"


def test_stage_rejects_a_malformed_revision_id():
    env, did = with_deployment(empty_env())
    with pytest.raises(errors.SpecFormatError):
        stage_revision(env, did, revision_id="not-a-ulid", now=NOW)


# --------------------------------------------------------------------------- add deployment


def test_add_deployment_defaults():
    env, dep = add_deployment(empty_env(), "shop", hosts=("shop.local",), now=NOW)
    assert dep.status is BundleStatus.ACTIVE
    assert dep.customer_id == "local-dev"
    assert [(s.party_id, s.basis_points) for s in dep.revenue_share] == [("greentic", 10000)]
    assert dep.revenue_policy_ref == "billing/revenue-policy.v1.json"
    assert dep.authorization_ref == "auth.json"
    assert dep.route_binding.hosts == ("shop.local",)
    assert dep.created_at == NOW
    assert env.bundles == (dep,)


def test_add_deployment_duplicate_bundle_and_customer_refused():
    env, _ = add_deployment(empty_env(), "shop", now=NOW)
    with pytest.raises(errors.DuplicateBundle):
        add_deployment(env, "shop", now=NOW)
    env2, other = add_deployment(env, "shop", customer_id="acme", now=NOW)
    assert other.customer_id == "acme"
    with pytest.raises(errors.DuplicateBundle):
        add_deployment(env2, "blog", deployment_id=other.deployment_id, now=NOW)


# --------------------------------------------------------------------------- drain / complete / archive


def test_drain_ready_revision():
    env, _, (rid,) = canary_env((L.READY,))
    result = drain_revision(env, rid, now=at(1))
    assert (result.starting_lifecycle, result.revision.lifecycle) == (L.READY, L.DRAINING)


def test_drain_is_idempotent():
    env, _, (rid,) = canary_env((L.DRAINING,))
    result = drain_revision(env, rid, now=at(1))
    assert result.revision.lifecycle is L.DRAINING and not result.changed


@pytest.mark.parametrize("state", [L.STAGED, L.WARMING, L.FAILED, L.INACTIVE, L.ARCHIVED])
def test_drain_refuses_anything_but_ready(state):
    env, _, (rid,) = canary_env((state,))
    with pytest.raises(errors.LifecycleConflict):
        drain_revision(env, rid, now=at(1))


def test_drain_refused_while_weighted():
    env, did, (a, b) = canary_env((L.READY, L.READY))
    env = put_split(env, did, [(a, 7000), (b, 3000)], generation=4)
    with pytest.raises(StillRouted) as info:
        drain_revision(env, b, now=at(1))
    exc = info.value
    assert isinstance(exc, errors.EngineError) and exc.kind == "conflict"
    assert exc.details["weight_bps"] == 3000
    assert exc.details["deployment_id"] == did
    assert exc.details["generation"] == 4
    assert f"greentic-deployer traffic set local {did} {a}=10000,{b}=0" in exc.hint
    assert exc.details["command"] in exc.hint


def test_drain_refused_when_it_is_the_only_routed_revision():
    env, did, (a,) = canary_env((L.READY,))
    env = put_split(env, did, [(a, 10000)])
    with pytest.raises(StillRouted) as info:
        drain_revision(env, a, now=at(1))
    assert "OTHER_READY_REV=10000" in info.value.hint


def test_drain_allowed_at_zero_weight():
    env, did, (a, b) = canary_env((L.READY, L.READY))
    env = put_split(env, did, [(a, 10000), (b, 0)])
    assert drain_revision(env, b, now=at(1)).revision.lifecycle is L.DRAINING


def test_drain_ignores_other_deployments_splits():
    env, did, (a,) = canary_env((L.READY,))
    env, d2 = with_deployment(env, "blog")
    env, c = with_revision(env, d2)
    env = put_split(env, d2, [(c, 10000)])
    assert drain_revision(env, a, now=at(1)).revision.lifecycle is L.DRAINING


def test_complete_drain_goes_to_inactive_and_is_idempotent():
    env, _, (rid,) = canary_env((L.DRAINING,))
    result = complete_drain(env, rid, now=at(1))
    assert result.revision.lifecycle is L.INACTIVE
    again = complete_drain(result.env, rid, now=at(2))
    assert again.revision.lifecycle is L.INACTIVE and not again.changed
    with pytest.raises(errors.LifecycleConflict):
        complete_drain(set_lifecycle(env, rid, L.READY), rid, now=at(1))


@pytest.mark.parametrize("state", [L.STAGED, L.WARMING, L.READY, L.FAILED, L.DRAINING, L.INACTIVE])
def test_archive_from_every_non_terminal_state(state):
    env, did, (rid,) = canary_env((state,))
    env = attrs.evolve(env, bundles=(attrs.evolve(env.deployment(did), current_revisions=(rid,)),))
    result = archive_revision(env, rid, now=at(1))
    assert result.starting_lifecycle is state
    assert result.revision.lifecycle is L.ARCHIVED
    assert result.env.deployment(did).current_revisions == ()


def test_archive_is_idempotent():
    env, _, (rid,) = canary_env((L.ARCHIVED,))
    result = archive_revision(env, rid, now=at(1))
    assert result.revision.lifecycle is L.ARCHIVED and result.env is env


def test_archive_refused_at_full_traffic():
    env, did, (rid,) = canary_env((L.READY,))
    env = put_split(env, did, [(rid, 10000)])
    with pytest.raises(errors.ActiveTrafficReference) as info:
        archive_revision(env, rid, now=at(1))
    assert info.value.details["splits"] == [{"deployment_id": did, "bundle_id": "shop", "weight_bps": 10000}]
    assert "greentic-deployer traffic set" in info.value.hint
    assert "(10000bps)" in info.value.message


def test_archive_refused_at_30_percent_canary():
    env, did, (a, b) = canary_env((L.READY, L.READY))
    env = put_split(env, did, [(a, 7000), (b, 3000)])
    with pytest.raises(errors.ActiveTrafficReference) as info:
        archive_revision(env, b, now=at(1))
    assert info.value.details["splits"] == [{"deployment_id": did, "bundle_id": "shop", "weight_bps": 3000}]


def test_archive_refused_at_zero_weight():
    env, did, (a, b) = canary_env((L.READY, L.DRAINING))
    env = put_split(env, did, [(a, 10000), (b, 0)])
    with pytest.raises(errors.ActiveTrafficReference) as info:
        archive_revision(env, b, now=at(1))
    assert info.value.details["splits"][0]["weight_bps"] == 0


def test_drain_then_inactive_then_archive_walk():
    env, did, (a, b) = canary_env((L.READY, L.READY))
    env = put_split(env, did, [(a, 10000)])
    env = drain_revision(env, b, now=at(1)).env
    env = complete_drain(env, b, now=at(2)).env
    assert env.revision(b).lifecycle is L.INACTIVE
    result = archive_revision(env, b, now=at(3))
    assert (result.starting_lifecycle, result.revision.lifecycle) == (L.INACTIVE, L.ARCHIVED)


def test_archive_of_a_draining_revision_is_an_eviction_via_inactive():
    env, _, (rid,) = canary_env((L.DRAINING,))
    result = archive_revision(env, rid, now=at(1))
    assert result.starting_lifecycle is L.DRAINING
    assert result.revision.lifecycle is L.ARCHIVED


# --------------------------------------------------------------------------- purity


def _busy_env():
    env, did, (a, b, c) = canary_env((L.STAGED, L.READY, L.READY))
    env = attrs.evolve(env, bundles=(attrs.evolve(env.deployment(did), current_revisions=(b, c)),))
    return put_split(env, did, [(b, 10000)]), did, (a, b, c)


@pytest.mark.parametrize(
    "operation",
    [
        lambda env, did, ids: warm_revision(env, ids[0], now=at(1)),
        lambda env, did, ids: warm_revision(env, ids[0], now=at(1), health_gate=failing_gate()),
        lambda env, did, ids: drain_revision(env, ids[2], now=at(1)),
        lambda env, did, ids: drain_revision(env, ids[1], now=at(1)),
        lambda env, did, ids: archive_revision(env, ids[2], now=at(1)),
        lambda env, did, ids: archive_revision(env, ids[1], now=at(1)),
        lambda env, did, ids: stage_revision(env, did, now=at(1)),
        lambda env, did, ids: add_deployment(env, "blog", now=at(1)),
        lambda env, did, ids: walk_revision_chain(env, ids[0], [(L.STAGED, L.WARMING)]),
    ],
    ids=["warm", "warm-gate-fails", "drain", "drain-refused", "archive", "archive-refused", "stage", "add", "walk"],
)
def test_inputs_are_never_mutated(operation):
    env, did, ids = _busy_env()
    before = copy.deepcopy(env)
    try:
        operation(env, did, ids)
    except errors.EngineError:
        pass
    assert env == before


def test_results_validate():
    env, did, (a, b, c) = _busy_env()
    for result_env in (
        warm_revision(env, a, now=at(1)).env,
        drain_revision(env, c, now=at(1)).env,
        archive_revision(env, c, now=at(1)).env,
    ):
        validate_environment(result_env)
