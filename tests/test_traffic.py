"""The traffic engine: set (upstream-spec 3.3), history, rollback, and CLI weight parsing."""

from __future__ import annotations

import base64
import copy
import json

import attrs
import pytest
from engine_helpers import ACTOR, at, canary_env, put_split, set_lifecycle, set_split, with_deployment, with_revision

from greentic_core import codec, errors
from greentic_core.spec import Lifecycle, SplitHistoryItem, TrafficSplitEntry
from greentic_core.traffic import (
    EmptyIdempotencyKey,
    InvalidTrafficRequest,
    StaleSplit,
    WrongDeployment,
    decode_inline_snapshot,
    encode_inline_snapshot,
    parse_weights,
    rollback_traffic_split,
    set_traffic_split,
    split_history,
)
from greentic_core.validation import validate_environment

L = Lifecycle
UNKNOWN = "01JX3M0A1B2C3D4E5F6G7H8J9K"


def entries_of(split):
    return [(e.revision_id, e.weight_bps) for e in split.entries]


def rollback(env, did, steps=1, minute=30, **kwargs):
    return rollback_traffic_split(env, did, steps=steps, updated_by=ACTOR, now=at(minute), **kwargs)


# --------------------------------------------------------------------------- set: the rules in order


def test_first_set_creates_generation_zero_without_ref():
    env, did, (a, b) = canary_env()
    result = set_split(env, did, [(a, 9000), (b, 1000)], "k-1")
    split = result.split
    assert result.changed
    assert split.generation == 0
    assert split.previous_split_ref is None
    assert split.history == ()
    assert entries_of(split) == [(a, 9000), (b, 1000)]
    assert (split.bundle_id, split.env_id, split.deployment_id) == ("shop", "local", did)
    assert (split.updated_at, split.updated_by, split.idempotency_key) == (at(1), ACTOR, "k-1")
    assert split.authorization_ref == "auth.json"
    assert result.env.split_for(did) == split
    validate_environment(result.env)


def test_result_unpacks_as_env_split_changed():
    env, did, (a, _) = canary_env()
    new_env, split, changed = set_split(env, did, [(a, 10000)], "k-1")
    assert new_env.split_for(did) == split and changed


def test_authorization_ref_given_is_kept():
    env, did, (a, _) = canary_env()
    split = set_split(env, did, [(a, 10000)], "k-1", authorization_ref="auth/alice.json").split
    assert split.authorization_ref == "auth/alice.json"


def test_set_unknown_deployment():
    env, _, (a, _) = canary_env()
    with pytest.raises(errors.DeploymentNotFound):
        set_split(env, "01JX3K8M2N4P6Q8R0S2T4V6W8X", [(a, 10000)], "k")


def test_set_unknown_revision():
    env, did, _ = canary_env()
    with pytest.raises(errors.RevisionNotFoundInEnv) as info:
        set_split(env, did, [(UNKNOWN, 10000)], "k")
    assert info.value.details["revision_id"] == UNKNOWN


def test_set_revision_of_another_deployment():
    env, did, (a, _) = canary_env()
    env, d2 = with_deployment(env, "blog")
    env, c = with_revision(env, d2)
    with pytest.raises(WrongDeployment) as info:
        set_split(env, did, [(a, 5000), (c, 5000)], "k")
    assert info.value.details == {"revision_id": c, "actual": d2, "expected": did}
    assert isinstance(info.value, errors.TrafficError)


def test_deployment_checked_before_revisions():
    env, _, _ = canary_env()
    with pytest.raises(errors.DeploymentNotFound):
        set_split(env, "01JX3K8M2N4P6Q8R0S2T4V6W8X", [(UNKNOWN, 10000)], "k")


def test_idempotent_replay_is_a_no_op_with_the_same_env_object():
    env, did, (a, b) = canary_env()
    first = set_split(env, did, [(a, 9000), (b, 1000)], "k-1")
    replay = set_split(first.env, did, [(b, 1000), (a, 9000)], "k-1", minute=9)  # order ignored
    assert not replay.changed
    assert replay.env is first.env
    assert replay.split is first.split


def test_replay_skips_admission():
    env, did, (a, b) = canary_env()
    first = set_split(env, did, [(a, 10000)], "k-1")
    drained = set_lifecycle(first.env, a, L.DRAINING)
    assert not set_split(drained, did, [(a, 10000)], "k-1").changed


def test_idempotency_key_reused_with_other_entries():
    env, did, (a, b) = canary_env()
    first = set_split(env, did, [(a, 9000), (b, 1000)], "k-1")
    with pytest.raises(errors.IdempotencyKeyReused) as info:
        set_split(first.env, did, [(a, 5000), (b, 5000)], "k-1")
    assert info.value.details == {"key": "k-1", "deployment_id": did}


def test_idempotency_checked_before_admission():
    env, did, (a, b) = canary_env()
    first = set_split(env, did, [(a, 10000)], "k-1")
    env2 = set_lifecycle(first.env, b, L.STAGED)
    with pytest.raises(errors.IdempotencyKeyReused):
        set_split(env2, did, [(a, 5000), (b, 5000)], "k-1")


@pytest.mark.parametrize("state", [L.STAGED, L.WARMING, L.DRAINING, L.FAILED, L.INACTIVE, L.ARCHIVED])
def test_not_ready_names_the_lifecycle(state):
    env, did, (a, b) = canary_env((L.READY, state))
    with pytest.raises(errors.NotReady) as info:
        set_split(env, did, [(a, 9000), (b, 1000)], "k")
    assert info.value.details == {"revision_id": b, "lifecycle": state.value}
    assert f"is {state.value}; only ready revisions may receive traffic" in info.value.message


def test_not_ready_applies_to_zero_weight_entries_on_set():
    env, did, (a, b) = canary_env((L.READY, L.DRAINING))
    with pytest.raises(errors.NotReady):
        set_split(env, did, [(a, 10000), (b, 0)], "k")


def test_not_ready_hint_suggests_warm_for_staged():
    env, did, (a,) = canary_env((L.STAGED,))
    with pytest.raises(errors.NotReady) as info:
        set_split(env, did, [(a, 10000)], "k")
    assert f"greentic-deployer revision warm local {a}" in info.value.hint


@pytest.mark.parametrize(
    "weights,total",
    [([9999], 9999), ([5001, 5000], 10001), ([], 0), ([0, 0], 0), ([3000, 3000], 6000)],
)
def test_sum_must_be_10000(weights, total):
    env, did, rids = canary_env()
    with pytest.raises(errors.InvalidWeights) as info:
        set_split(env, did, list(zip(rids, weights)), "k")
    assert info.value.details["sum"] == total
    assert str(total) in info.value.message


def test_entry_above_10000_refused_before_the_sum():
    env, did, (a, b) = canary_env()
    with pytest.raises(errors.InvalidWeights) as info:
        set_split(env, did, [(a, 10001), (b, 2**32 - 1)], "k")
    assert info.value.details["value"] == 10001


@pytest.mark.parametrize("weight", [-1, 1.5, "10000", True])
def test_malformed_weight_refused(weight):
    env, did, (a, _) = canary_env()
    with pytest.raises(errors.InvalidWeights):
        set_split(env, did, [(a, weight)], "k")


def test_duplicate_revision_in_entries_refused():
    env, did, (a, _) = canary_env()
    with pytest.raises(errors.InvalidWeights) as info:
        set_split(env, did, [(a, 5000), (a, 5000)], "k")
    assert info.value.details["revision_id"] == a


@pytest.mark.parametrize("key", ["", "   ", "\t\n"])
def test_blank_idempotency_key_refused(key):
    env, did, (a, _) = canary_env()
    with pytest.raises(EmptyIdempotencyKey) as info:
        set_split(env, did, [(a, 10000)], key)
    assert info.value.kind == "usage"


def test_zero_weight_entries_are_kept():
    env, did, (a, b) = canary_env()
    split = set_split(env, did, [(a, 10000), (b, 0)], "k").split
    assert entries_of(split) == [(a, 10000), (b, 0)]


def test_entries_may_be_split_entry_objects():
    env, did, (a, _) = canary_env()
    split = set_split(env, did, [TrafficSplitEntry(revision_id=a, weight_bps=10000)], "k").split
    assert entries_of(split) == [(a, 10000)]


# --------------------------------------------------------------------------- generations and inline ref


def test_generations_count_up_and_split_is_replaced_in_place():
    env, did, (a, b) = canary_env()
    env, d2 = with_deployment(env, "blog")
    env, c = with_revision(env, d2)
    env = set_split(env, did, [(a, 10000)], "k-1").env
    env = set_split(env, d2, [(c, 10000)], "b-1").env
    for n, key in enumerate(["k-2", "k-3", "k-4"], start=1):
        env = set_split(env, did, [(a, 10000 - n * 1000), (b, n * 1000)], key, minute=n + 1).env
        assert env.split_for(did).generation == n
    assert [s.deployment_id for s in env.traffic_splits] == [did, d2]


def test_inline_ref_decodes_to_the_previous_split():
    env, did, (a, b) = canary_env()
    first = set_split(env, did, [(a, 10000)], "k-1")
    second = set_split(first.env, did, [(a, 9000), (b, 1000)], "k-2", minute=2)
    third = set_split(second.env, did, [(a, 5000), (b, 5000)], "k-3", minute=3)
    ref = third.split.previous_split_ref
    assert ref.startswith("inline://")
    token = ref[len("inline://"):]
    assert "=" not in token and "+" not in token and "/" not in token
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert "previous_split_ref" not in raw and "history" not in raw
    assert list(raw) == [
        "schema", "env_id", "deployment_id", "bundle_id", "generation", "entries",
        "updated_at", "updated_by", "idempotency_key", "authorization_ref",
    ]  # fmt: skip
    assert decode_inline_snapshot(ref) == attrs.evolve(second.split, previous_split_ref=None, history=())
    compact = json.dumps(raw, separators=(",", ":"))
    assert base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode() == compact


def test_inline_encoding_matches_the_upstream_fixture(upstream_env):
    split = upstream_env.traffic_splits[0]
    snapshot = decode_inline_snapshot(split.previous_split_ref)
    assert snapshot.generation == 0 and snapshot.idempotency_key == "k-1"
    assert encode_inline_snapshot(snapshot) == split.previous_split_ref


@pytest.mark.parametrize("ref", ["inline://e30", "inline://!!!", "inline://bm90IGpzb24", "file://x.json"])
def test_bad_inline_snapshot(ref):
    with pytest.raises(errors.SnapshotDecode):
        decode_inline_snapshot(ref)


# --------------------------------------------------------------------------- history


def test_history_is_newest_first_and_bounded():
    env, did, (a, b) = canary_env()
    for n in range(8):
        env = set_split(env, did, [(a, 10000 - n * 100), (b, n * 100)], f"k-{n}", minute=n, history_limit=3).env
    split = env.split_for(did)
    assert split.generation == 7
    assert [h.generation for h in split.history] == [6, 5, 4]
    assert [h.idempotency_key for h in split.history] == ["k-6", "k-5", "k-4"]
    assert entries_of(split.history[0]) == [(a, 9400), (b, 600)]
    assert split.history[0].updated_at == at(6)


def test_history_default_limit_is_20():
    env, did, (a, b) = canary_env()
    for n in range(25):
        env = set_split(env, did, [(a, 10000 - n), (b, n)], f"k-{n}").env
    assert len(env.split_for(did).history) == 20


def test_history_zero_keeps_nothing_but_the_ref():
    env, did, (a, b) = canary_env()
    env = set_split(env, did, [(a, 10000)], "k-1").env
    split = set_split(env, did, [(b, 10000)], "k-2", history_limit=0).split
    assert split.history == () and split.previous_split_ref is not None


def test_history_round_trips_through_the_codec():
    env, did, (a, b) = canary_env()
    env = set_split(env, did, [(a, 10000)], "k-1").env
    env = set_split(env, did, [(a, 5000), (b, 5000)], "k-2").env
    assert codec.load_environment(codec.dump_environment(env)) == env


def test_set_on_an_upstream_doc_folds_its_snapshot_into_history(upstream_env):
    split = upstream_env.traffic_splits[0]
    a, b = (e.revision_id for e in split.entries)
    result = set_traffic_split(
        upstream_env, split.deployment_id, [(a, 5000), (b, 5000)], idempotency_key="k-3", updated_by=ACTOR, now=at(60)
    )
    assert [h.idempotency_key for h in result.split.history] == ["k-2", "k-1"]
    assert result.split.generation == 2


# --------------------------------------------------------------------------- rollback


def _three_states():
    env, did, (a, b) = canary_env()
    env = set_split(env, did, [(a, 10000)], "k-1", minute=1).env
    env = set_split(env, did, [(a, 9000), (b, 1000)], "k-2", minute=2).env
    env = set_split(env, did, [(a, 5000), (b, 5000)], "k-3", minute=3).env
    return env, did, a, b


def test_rollback_one_step():
    env, did, a, b = _three_states()
    result = rollback(env, did)
    split = result.split
    assert result.changed
    assert entries_of(split) == [(a, 9000), (b, 1000)]
    assert split.generation == 3
    assert split.idempotency_key == "rollback-k-3"
    assert split.previous_split_ref is None
    assert (split.updated_at, split.updated_by) == (at(30), ACTOR)
    assert [h.idempotency_key for h in split.history] == ["k-1"]
    validate_environment(result.env)


def test_rollback_several_steps():
    env, did, a, b = _three_states()
    split = rollback(env, did, steps=2).split
    assert entries_of(split) == [(a, 10000)]
    assert split.generation == 3
    assert split.history == ()


def test_second_rollback_goes_further_back_then_stops():
    env, did, a, b = _three_states()
    first = rollback(env, did)
    second = rollback(first.env, did, minute=31)
    assert entries_of(second.split) == [(a, 10000)]
    assert second.split.generation == 4
    assert second.split.idempotency_key == "rollback-rollback-k-3"
    with pytest.raises(errors.NoPreviousSnapshot):
        rollback(second.env, did, minute=32)


def test_rollback_too_many_steps():
    env, did, _, _ = _three_states()
    with pytest.raises(errors.NoPreviousSnapshot) as info:
        rollback(env, did, steps=3)
    assert info.value.details == {"deployment_id": did, "steps": 3, "available": 2}


@pytest.mark.parametrize("steps", [0, -1, True, 1.0])
def test_rollback_steps_must_be_positive(steps):
    env, did, _, _ = _three_states()
    with pytest.raises(InvalidTrafficRequest):
        rollback(env, did, steps=steps)


def test_rollback_without_split():
    env, did, _ = canary_env()
    with pytest.raises(errors.NoSplit) as info:
        rollback(env, did)
    assert info.value.kind == "not_found"


def test_rollback_of_a_first_split_has_no_snapshot():
    env, did, (a, _) = canary_env()
    env = set_split(env, did, [(a, 10000)], "k-1").env
    with pytest.raises(errors.NoPreviousSnapshot):
        rollback(env, did)


def test_rollback_of_an_upstream_doc_with_only_previous_split_ref(upstream_env):
    split = upstream_env.traffic_splits[0]
    assert split.history == ()
    result = rollback(upstream_env, split.deployment_id)
    assert entries_of(result.split) == [("01JX3M0A1B2C3D4E5F6G7H8J9K", 10000)]
    assert result.split.generation == 2
    assert result.split.idempotency_key == "rollback-k-2"
    assert result.split.previous_split_ref is None
    with pytest.raises(errors.NoPreviousSnapshot):  # upstream: one step only
        rollback(result.env, split.deployment_id)
    with pytest.raises(errors.NoPreviousSnapshot):
        rollback(upstream_env, split.deployment_id, steps=2)


def test_rollback_with_a_bad_inline_token():
    env, did, (a, _) = canary_env()
    env = put_split(env, did, [(a, 10000)], generation=3, previous_split_ref="inline://e30")
    with pytest.raises(errors.SnapshotDecode):
        rollback(env, did)
    # a set does not need the old snapshot: it simply drops it
    result = set_split(env, did, [(a, 10000)], "k-new")
    assert [h.generation for h in result.split.history] == [3]


def test_rollback_readmits_weighted_entries():
    env, did, a, b = _three_states()
    env = set_lifecycle(env, b, L.DRAINING)
    with pytest.raises(errors.NotReady) as info:
        rollback(env, did)  # back to a=9000, b=1000: b no longer ready
    assert info.value.details == {"revision_id": b, "lifecycle": "draining"}


def test_rollback_keeps_a_zero_weight_draining_entry():
    env, did, (a, b) = canary_env()
    env = set_split(env, did, [(a, 10000), (b, 0)], "k-1").env
    env = set_split(env, did, [(a, 10000)], "k-2").env
    env = set_lifecycle(env, b, L.DRAINING)
    assert entries_of(rollback(env, did).split) == [(a, 10000), (b, 0)]


def test_rollback_refuses_an_archived_or_removed_entry():
    env, did, (a, b) = canary_env()
    env = set_split(env, did, [(a, 10000), (b, 0)], "k-1").env
    env = set_split(env, did, [(a, 10000)], "k-2").env
    with pytest.raises(errors.NotReady):
        rollback(set_lifecycle(env, b, L.ARCHIVED), did)
    removed = attrs.evolve(env, revisions=tuple(r for r in env.revisions if r.revision_id != b))
    with pytest.raises(errors.RevisionNotFoundInEnv):
        rollback(removed, did)


def test_rollback_checks_the_restored_sum():
    env, did, (a, b) = canary_env()
    bad = SplitHistoryItem(
        generation=0, entries=(TrafficSplitEntry(revision_id=a, weight_bps=4000),),
        idempotency_key="k-0", updated_at=at(0), updated_by=ACTOR,
    )  # fmt: skip
    env = put_split(env, did, [(b, 10000)], generation=1, history=(bad,))
    with pytest.raises(errors.InvalidWeights) as info:
        rollback(env, did)
    assert info.value.details["sum"] == 4000


def test_rollback_expected_generation_guards_a_retry():
    env, did, a, b = _three_states()
    first = rollback(env, did, expected_generation=2)
    with pytest.raises(StaleSplit) as info:
        rollback(first.env, did, expected_generation=2)
    assert info.value.details == {"deployment_id": did, "actual": 3, "expected": 2}


def test_rollback_then_set_records_the_rolled_back_state():
    env, did, a, b = _three_states()
    env = rollback(env, did).env
    split = set_split(env, did, [(b, 10000)], "k-4", minute=40).split
    assert [h.idempotency_key for h in split.history] == ["rollback-k-3", "k-1"]
    assert decode_inline_snapshot(split.previous_split_ref).idempotency_key == "rollback-k-3"


def test_split_history_falls_back_to_the_inline_ref(upstream_env):
    split = upstream_env.traffic_splits[0]
    (item,) = split_history(split)
    assert item.idempotency_key == "k-1" and item.generation == 0


# --------------------------------------------------------------------------- purity


def test_set_and_rollback_never_mutate_inputs():
    env, did, a, b = _three_states()
    before = copy.deepcopy(env)
    set_split(env, did, [(b, 10000)], "k-9")
    rollback(env, did, steps=2)
    with pytest.raises(errors.NotReady):
        set_split(set_lifecycle(env, b, L.STAGED), did, [(b, 10000)], "k-10")
    assert env == before


# --------------------------------------------------------------------------- parse_weights


@pytest.mark.parametrize(
    "text,expected",
    [
        ("A=10000", [("A", 10000)]),
        ("A=9000,B=1000", [("A", 9000), ("B", 1000)]),
        ("A=9000bps,B=1000BPS", [("A", 9000), ("B", 1000)]),
        ("A=90%,B=10%", [("A", 9000), ("B", 1000)]),
        ("A=87.5%, B=12.5%", [("A", 8750), ("B", 1250)]),
        ("A=99.99%,B=0.01%", [("A", 9999), ("B", 1)]),
        ("A=100%,B=0", [("A", 10000), ("B", 0)]),
        (" a = 50% , b = 5000 ", [("a", 5000), ("b", 5000)]),
        ("01JX3M=12.50%,01JX3N=8750", [("01JX3M", 1250), ("01JX3N", 8750)]),
    ],
)
def test_parse_weights(text, expected):
    assert parse_weights(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "A", "A=", "=100%", "A=ten", "A=-10000", "A=1e4", "A=50%,A=50%", "A=12.555%,B=87.445%",
     "A=10001,B=-1", "A=50.%,B=50%", "A=%", "A=100%,,"],
)  # fmt: skip
def test_parse_weights_refuses(text):
    with pytest.raises(errors.InvalidWeights):
        parse_weights(text)


@pytest.mark.parametrize("text,total", [("A=9000,B=999", 9999), ("A=60%,B=50%", 11000), ("A=0", 0)])
def test_parse_weights_names_the_sum(text, total):
    with pytest.raises(errors.InvalidWeights) as info:
        parse_weights(text)
    assert info.value.details["sum"] == total
    assert str(total) in info.value.message


def test_parse_weights_refuses_finer_than_one_basis_point_with_a_reason():
    with pytest.raises(errors.InvalidWeights) as info:
        parse_weights("A=12.555%,B=87.445%")
    assert "0.01%" in info.value.message


def test_parse_weights_result_feeds_set():
    env, did, (a, b) = canary_env()
    split = set_split(env, did, parse_weights(f"{a}=75%,{b}=2500bps"), "k").split
    assert entries_of(split) == [(a, 7500), (b, 2500)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def upstream_env():
    from pathlib import Path

    text = (Path(__file__).parent / "fixtures" / "upstream-example.json").read_text()
    return codec.load_environment(text)
