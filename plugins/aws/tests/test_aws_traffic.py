"""apply_traffic_split and observe: the ALB forward weights, read back independently."""

from __future__ import annotations

import pytest

from greentic_core import ProviderError

from aws_world import KIND, make_world
from greentic_aws import ecs


def warm_all(deployer, world, revs) -> None:
    for rev in revs:
        deployer.warm(world.env, rev.revision_id)


def bound_tg(aws, answers, world, deployment_id) -> dict[str, str]:
    """revision id -> target group, from the task sets (independent read)."""
    return {ts["externalId"].removeprefix("gtc-rev-"): ts["loadBalancers"][0]["targetGroupArn"]
            for ts in aws.task_sets(answers, world.env_id, deployment_id)}


def test_the_split_becomes_one_weighted_forward_action_on_an_owned_rule(deployer, world, answers, aws) -> None:
    deployment_id, revs = world.new_deployment(revisions=3)
    warm_all(deployer, world, revs)
    world.set_split(deployment_id, [(revs[0], 5000), (revs[1], 3333), (revs[2], 1667)])
    outcome = deployer.apply_traffic_split(world.env, deployment_id)

    rule = aws.rule_for(answers, deployment_id)
    assert rule is not None and not rule["IsDefault"]
    tgs = bound_tg(aws, answers, world, deployment_id)
    # 501:334:167 is 5000 : 3333.3 : 1666.7 bps
    assert aws.forward(rule["Actions"]) == {tgs[revs[0].revision_id]: 501, tgs[revs[1].revision_id]: 334,
                                            tgs[revs[2].revision_id]: 167}
    assert aws.tags(rule["RuleArn"]) == {"greentic:managed-by": "greentic-deployer", "greentic:env": world.env_id,
                                         "greentic:deployment": deployment_id}
    assert outcome.applied_deployment_id == deployment_id
    assert outcome.applied_entries == world.env.split_for(deployment_id).entries
    assert outcome.provider_weights == {revs[0].revision_id: 501, revs[1].revision_id: 334,
                                        revs[2].revision_id: 167}
    assert outcome.max_deviation_bps == 1


def test_applying_the_same_split_twice_writes_nothing(deployer, world, answers, aws, calls) -> None:
    deployment_id, revs = world.new_deployment(revisions=2)
    warm_all(deployer, world, revs)
    world.set_split(deployment_id, [(revs[0], 9000), (revs[1], 1000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    rules_before = aws.rules(answers)
    calls.reset()
    outcome = deployer.apply_traffic_split(world.env, deployment_id)
    assert outcome.detail["write"] == "unchanged"
    assert aws.rules(answers) == rules_before
    assert not {"CreateRule", "ModifyRule", "ModifyListener"} & set(calls.calls)


def test_a_zero_entry_keeps_weight_zero_and_a_small_one_is_never_dropped(deployer, world, answers, aws) -> None:
    deployment_id, revs = world.new_deployment(revisions=3)
    warm_all(deployer, world, revs)
    world.set_split(deployment_id, [(revs[0], 9999), (revs[1], 1), (revs[2], 0)])
    deployer.apply_traffic_split(world.env, deployment_id)
    tgs = bound_tg(aws, answers, world, deployment_id)
    weights = aws.forward(aws.rule_for(answers, deployment_id)["Actions"])
    assert weights == {tgs[revs[0].revision_id]: 999, tgs[revs[1].revision_id]: 1, tgs[revs[2].revision_id]: 0}


def test_more_than_five_entries_is_refused_before_any_aws_call(deployer, world, calls) -> None:
    deployment_id, revs = world.new_deployment(revisions=6)
    world.set_split(deployment_id, [(r, w) for r, w in zip(revs, [5000, 1000, 1000, 1000, 1000, 1000])])
    with pytest.raises(ProviderError, match="6 entries; an ALB forward action holds at most 5") as caught:
        deployer.apply_traffic_split(world.env, deployment_id)
    assert "at most 5" in caught.value.hint
    assert calls.total == 0


def test_a_revision_without_a_task_set_cannot_get_weight(deployer, world, answers, aws) -> None:
    deployment_id, revs = world.new_deployment(revisions=2)
    deployer.warm(world.env, revs[0].revision_id)
    world.set_split(deployment_id, [(revs[0], 5000), (revs[1], 5000)])
    with pytest.raises(ProviderError, match="has no task set"):
        deployer.apply_traffic_split(world.env, deployment_id)
    rule = aws.rule_for(answers, deployment_id)  # warm attached the target group at weight 0, nothing more
    assert list(aws.forward(rule["Actions"]).values()) == [0]
    # at weight 0 it is simply left out of the forward action
    world.set_split(deployment_id, [(revs[0], 10000), (revs[1], 0)])
    outcome = deployer.apply_traffic_split(world.env, deployment_id)
    assert outcome.provider_weights == {revs[0].revision_id: 999, revs[1].revision_id: 0}


def test_a_rule_with_our_conditions_but_without_our_tags_is_refused_by_name(deployer, world, answers, aws) -> None:
    deployment_id, (rev,) = world.new_deployment()
    deployer.warm(world.env, rev.revision_id)
    foreign = aws.elb.create_rule(
        ListenerArn=answers["listener_arn"], Priority=7,
        Conditions=[{"Field": "host-header", "HostHeaderConfig": {"Values": [f"{deployment_id.lower()}.greentic.test"]}}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}],
    )["Rules"][0]
    world.set_split(deployment_id, [(rev, 10000)])
    with pytest.raises(ProviderError, match=foreign["RuleArn"]):
        deployer.apply_traffic_split(world.env, deployment_id)
    after = next(r for r in aws.rules(answers) if r["RuleArn"] == foreign["RuleArn"])
    assert after["Actions"][0]["Type"] == "fixed-response"


def test_deployments_get_their_own_rules_and_never_change_each_other(deployer, world, answers, aws) -> None:
    d1, r1 = world.new_deployment(revisions=2)
    d2, r2 = world.new_deployment(revisions=1)
    warm_all(deployer, world, r1 + r2)
    world.set_split(d1, [(r1[0], 5000), (r1[1], 5000)])
    world.set_split(d2, [(r2[0], 10000)])
    deployer.apply_traffic_split(world.env, d1)
    deployer.apply_traffic_split(world.env, d2)
    rule2 = aws.rule_for(answers, d2)
    world.set_split(d1, [(r1[0], 1000), (r1[1], 9000)])
    deployer.apply_traffic_split(world.env, d1)
    assert aws.rule_for(answers, d2) == rule2
    assert sorted(aws.forward(aws.rule_for(answers, d1)["Actions"]).values()) == [100, 900]


def test_rules_are_found_across_pages(deployer, world, answers, aws, calls, monkeypatch) -> None:
    monkeypatch.setattr(ecs, "PAGE_SIZE", 2)
    for priority in range(1, 8):  # other rules on the same listener, before ours
        aws.elb.create_rule(
            ListenerArn=answers["listener_arn"], Priority=priority,
            Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": [f"/other{priority}/*"]}}],
            Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}])
    deployment_id, revs = world.new_deployment(revisions=2)
    warm_all(deployer, world, revs)
    world.set_split(deployment_id, [(revs[0], 10000), (revs[1], 0)])
    deployer.apply_traffic_split(world.env, deployment_id)  # creates ours as the 9th rule (priority 8)
    assert int(aws.rule_for(answers, deployment_id)["Priority"]) == 8
    calls.reset()
    world.set_split(deployment_id, [(revs[0], 2000), (revs[1], 8000)])
    outcome = deployer.apply_traffic_split(world.env, deployment_id)
    assert outcome.detail["write"] == "rule modified"
    assert calls.by_operation()["DescribeRules"] == 5  # 9 rules, 2 per page
    assert "CreateRule" not in calls.calls
    assert len([r for r in aws.rules(answers) if aws.tags(r["RuleArn"]).get("greentic:deployment")]) == 1


def test_observe_reads_the_weights_the_listener_holds(deployer, world, answers, aws) -> None:
    deployment_id, revs = world.new_deployment(revisions=2)
    warm_all(deployer, world, revs)
    world.set_split(deployment_id, [(revs[0], 3000), (revs[1], 7000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    assert deployer.observe(world.env).weights(deployment_id) == {revs[0].revision_id: 3000,
                                                                  revs[1].revision_id: 7000}
    # someone changes the ALB behind our back: observe reports the ALB, not the recorded split
    rule = aws.rule_for(answers, deployment_id)
    tgs = bound_tg(aws, answers, world, deployment_id)
    aws.elb.modify_rule(RuleArn=rule["RuleArn"], Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": tgs[revs[0].revision_id], "Weight": 1},
        {"TargetGroupArn": tgs[revs[1].revision_id], "Weight": 3}]}}])
    observed = deployer.observe(world.env)
    assert observed.weights(deployment_id) == {revs[0].revision_id: 2500, revs[1].revision_id: 7500}
    assert observed.revision(revs[0].revision_id).present and observed.revision(revs[0].revision_id).serving


def test_default_action_mode_carries_one_deployment_and_refuses_a_second(registry, default_action_answers, world,
                                                                         aws) -> None:
    answers = default_action_answers
    deployer = registry.bind(KIND, answers)
    d1, r1 = world.new_deployment(revisions=2)
    d2, (r2,) = world.new_deployment()
    warm_all(deployer, world, r1 + [r2])
    world.set_split(d1, [(r1[0], 2500), (r1[1], 7500)])
    world.set_split(d2, [(r2, 10000)])
    deployer.apply_traffic_split(world.env, d1)
    tgs = bound_tg(aws, answers, world, d1)
    assert aws.forward(aws.default_actions(answers)) == {tgs[r1[0].revision_id]: 250, tgs[r1[1].revision_id]: 750}
    assert deployer.observe(world.env).weights(d1) == {r1[0].revision_id: 2500, r1[1].revision_id: 7500}
    with pytest.raises(ProviderError, match="refusing to take it over"):
        deployer.apply_traffic_split(world.env, d2)
    assert aws.forward(aws.default_actions(answers)) == {tgs[r1[0].revision_id]: 250, tgs[r1[1].revision_id]: 750}


def test_two_environments_on_one_listener_keep_their_own_rules(registry, answers, aws) -> None:
    deployer = registry.bind(KIND, answers)
    blue, green = make_world("blue"), make_world("green")
    d1, (r1,) = blue.new_deployment()
    d2, (r2,) = green.new_deployment()
    deployer.warm(blue.env, r1.revision_id)
    deployer.warm(green.env, r2.revision_id)
    blue.set_split(d1, [(r1, 10000)])
    green.set_split(d2, [(r2, 10000)])
    deployer.apply_traffic_split(blue.env, d1)
    deployer.apply_traffic_split(green.env, d2)
    assert aws.tags(aws.rule_for(answers, d1)["RuleArn"])["greentic:env"] == "blue"
    assert aws.tags(aws.rule_for(answers, d2)["RuleArn"])["greentic:env"] == "green"
    assert deployer.observe(blue.env).deployments.keys() == {d1}
