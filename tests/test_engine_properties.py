"""Property tests for the lifecycle and traffic engines."""

from __future__ import annotations

import copy

import pytest
from engine_helpers import ACTOR, at, canary_env
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from greentic_core import errors
from greentic_core.lifecycle import (
    ALLOWED_TRANSITIONS,
    HealthGateFailure,
    archive_revision,
    complete_drain,
    drain_revision,
    walk_revision_chain,
    warm_revision,
)
from greentic_core.spec import Lifecycle
from greentic_core.traffic import parse_weights, rollback_traffic_split, set_traffic_split
from greentic_core.validation import validate_environment

L = Lifecycle
STATES = list(L)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reachable(start: Lifecycle, end: Lifecycle) -> bool:
    seen, frontier = {start}, [start]
    while frontier:
        state = frontier.pop()
        for a, b in ALLOWED_TRANSITIONS:
            if a == state and b not in seen:
                seen.add(b)
                frontier.append(b)
    return end in seen


def _weights(count: int):
    """Lists of ``count`` non-negative ints summing to 10000."""
    return st.lists(st.integers(0, 10000), min_size=count - 1, max_size=count - 1).map(
        lambda cuts: [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 10000])]
    )


# --------------------------------------------------------------------------- lifecycle


OPS = st.lists(
    st.tuples(
        # weighted so revisions live long enough to be routed, drained and refused
        st.sampled_from(["warm"] * 3 + ["warm-fail", "drain", "drain", "complete", "archive"] + ["route"] * 3),
        st.integers(0, 2),
        st.integers(0, 10000),
    ),
    min_size=3,
    max_size=30,
)


@SETTINGS
@given(ops=OPS, initial=st.lists(st.sampled_from(STATES), min_size=3, max_size=3))
def test_random_verb_sequences_stay_in_the_matrix_and_validate(ops, initial):
    env, did, rids = canary_env(tuple(initial))
    fail = lambda e, r: HealthGateFailure(failed_checks=("provider-health",), message="down")  # noqa: E731
    for n, (op, index, weight) in enumerate(ops):
        rid = rids[index]
        before = env
        snapshot = copy.deepcopy(env)
        try:
            if op == "warm":
                env = warm_revision(env, rid, now=at(n)).env
            elif op == "warm-fail":
                env = warm_revision(env, rid, now=at(n), health_gate=fail).env
            elif op == "drain":
                env = drain_revision(env, rid, now=at(n)).env
            elif op == "complete":
                env = complete_drain(env, rid, now=at(n)).env
            elif op == "archive":
                env = archive_revision(env, rid, now=at(n)).env
            else:
                ready = [r.revision_id for r in env.revisions if r.lifecycle is L.READY]
                if not ready:
                    continue
                first = ready[index % len(ready)]
                other = next((r for r in ready if r != first), None)
                entries = [(first, 10000)] if other is None else [(first, weight), (other, 10000 - weight)]
                env = set_traffic_split(env, did, entries, idempotency_key=f"k-{n}", updated_by=ACTOR, now=at(n)).env
            event(f"{op} ok")
        except errors.HealthGateFailed as exc:
            event("gate failed")
            env = exc.environment
            assert env.revision(rid).lifecycle is L.FAILED
        except errors.EngineError as exc:
            event(type(exc).__name__)
            assert env is before
        assert before == snapshot  # the input was never mutated
        for old, new in zip(before.revisions, env.revisions):
            assert old.revision_id == new.revision_id
            if old.lifecycle != new.lifecycle:
                assert old.revision_id == rid  # only the named revision moves
                assert _reachable(old.lifecycle, new.lifecycle)
        validate_environment(env)
        # invariants the engines keep beyond validate(): routed revisions were ready when routed,
        # archived revisions are never routed, weighted revisions are never draining
        for split in env.traffic_splits:
            assert sum(e.weight_bps for e in split.entries) == 10000
            for entry in split.entries:
                state = env.revision(entry.revision_id).lifecycle
                assert state is not L.ARCHIVED
                if entry.weight_bps:
                    assert state not in (L.DRAINING, L.INACTIVE)


EDGES = st.lists(st.tuples(st.sampled_from(STATES), st.sampled_from(STATES)), min_size=1, max_size=6)


@SETTINGS
@given(start=st.sampled_from(STATES), chain=EDGES)
def test_walker_matches_a_reference_model(start, chain):
    env, _, (rid,) = canary_env((start,))
    # reference model of steps 4-5
    state, error = start, None
    for a, b in chain:
        if state == a:
            if (a, b) not in ALLOWED_TRANSITIONS:
                error = errors.InvalidTransition
                break
            state = b
    if error is None and state != chain[-1][1]:
        error = errors.LifecycleConflict
    try:
        result = walk_revision_chain(env, rid, chain)
    except (errors.InvalidTransition, errors.LifecycleConflict) as exc:
        assert type(exc) is error
        return
    assert error is None
    assert result.revision.lifecycle == chain[-1][1] == state
    assert result.starting_lifecycle == start
    assert _reachable(start, state) or start == state
    validate_environment(result.env)


# --------------------------------------------------------------------------- traffic


@st.composite
def split_histories(draw):
    count = draw(st.integers(1, 4))
    sets = draw(st.lists(_weights(count), min_size=1, max_size=8))
    return count, sets


@SETTINGS
@given(data=split_histories(), steps_seed=st.integers(0, 100), limit=st.integers(0, 10))
def test_random_sets_sum_to_10000_and_rollback_restores_earlier_entries(data, steps_seed, limit):
    count, sets = data
    env, did, rids = canary_env((L.READY,) * count)
    applied = []
    for n, weights in enumerate(sets):
        entries = list(zip(rids, weights))
        result = set_traffic_split(
            env, did, entries, idempotency_key=f"k-{n}", updated_by=ACTOR, now=at(n), history_limit=limit
        )
        env = result.env
        assert sum(e.weight_bps for e in result.split.entries) == 10000
        assert result.split.generation == n
        # a replay with the same key changes nothing
        replay = set_traffic_split(env, did, entries[::-1], idempotency_key=f"k-{n}", updated_by=ACTOR, now=at(n))
        assert replay.env is env and not replay.changed
        applied.append(entries)
    split = env.split_for(did)
    assert len(split.history) == min(len(applied) - 1, limit)
    # with history_limit=0 the upstream one-step previous_split_ref still allows one step
    available = min(len(applied) - 1, max(limit, 1))
    if available == 0:
        with pytest.raises(errors.NoPreviousSnapshot):
            rollback_traffic_split(env, did, updated_by=ACTOR, now=at(99))
        return
    steps = 1 + steps_seed % available
    rolled = rollback_traffic_split(env, did, steps=steps, updated_by=ACTOR, now=at(99))
    assert [(e.revision_id, e.weight_bps) for e in rolled.split.entries] == applied[-1 - steps]
    assert rolled.split.generation == split.generation + 1
    validate_environment(rolled.env)


@SETTINGS
@given(weights=_weights(3), as_percent=st.lists(st.booleans(), min_size=3, max_size=3))
def test_parse_weights_round_trips_basis_points_and_percentages(weights, as_percent):
    parts = []
    for name, weight, percent in zip("ABC", weights, as_percent):
        parts.append(f"{name}={weight / 100:.2f}%" if percent else f"{name}={weight}")
    assert parse_weights(",".join(parts)) == list(zip("ABC", weights))
