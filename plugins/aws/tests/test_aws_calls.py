"""AWS API calls per verb do not grow with the number of other deployments; preflight."""

from __future__ import annotations

from collections import Counter

import attrs

from greentic_core import CheckStatus

from aws_world import KIND, make_world


def walk_one_deployment(registry, answers, calls, others: int) -> dict[str, Counter]:
    deployer = registry.bind(KIND, answers)
    world = make_world(f"calls-{others}")
    for _ in range(others):
        dep, revs = world.new_deployment(revisions=2)
        for rev in revs:
            deployer.warm(world.env, rev.revision_id)
        world.set_split(dep, [(revs[0], 5000), (revs[1], 5000)])
        deployer.apply_traffic_split(world.env, dep)
    dep, (r1, r2) = world.new_deployment(revisions=2)
    counts: dict[str, Counter] = {}

    def measure(label, call):
        calls.reset()
        call()
        counts[label] = calls.by_operation()

    measure("warm", lambda: deployer.warm(world.env, r1.revision_id))
    measure("warm-second", lambda: deployer.warm(world.env, r2.revision_id))
    world.set_split(dep, [(r1, 10000), (r2, 0)])
    measure("apply-create", lambda: deployer.apply_traffic_split(world.env, dep))
    world.set_split(dep, [(r1, 0), (r2, 10000)])
    measure("apply-modify", lambda: deployer.apply_traffic_split(world.env, dep))
    measure("drain", lambda: deployer.drain(world.env, r1.revision_id))
    measure("archive", lambda: deployer.archive(world.env, r1.revision_id))
    world.env = attrs.evolve(world.env, traffic_splits=())
    measure("drain-last", lambda: deployer.drain(world.env, r2.revision_id))
    measure("archive-last", lambda: deployer.archive(world.env, r2.revision_id))
    return counts


def test_verb_call_counts_do_not_grow_with_other_deployments(registry, answers, calls) -> None:
    alone = walk_one_deployment(registry, answers, calls, others=0)
    crowded = walk_one_deployment(registry, answers, calls, others=4)
    assert crowded == alone
    assert sum(alone["apply-modify"].values()) <= 5
    assert sum(alone["warm"].values()) <= 13  # 10, plus attaching a fresh target group at weight 0


def test_preflight_reports_each_check(deployer, world, registry, answers) -> None:
    checks = {c.name: c for c in deployer.preflight(world.env)}
    assert {n: c.status for n, c in checks.items()} == {
        "ecs-cluster": CheckStatus.PASS, "alb-listener": CheckStatus.PASS, "target-group-pool": CheckStatus.PASS,
        "target-group-pool-free": CheckStatus.PASS}
    assert checks["target-group-pool-free"].message == "10 of 10 free"
    broken = registry.bind(KIND, {**answers, "cluster": "missing"}).preflight(world.env)
    assert [c.status for c in broken if c.name == "ecs-cluster"] == [CheckStatus.FAIL]
