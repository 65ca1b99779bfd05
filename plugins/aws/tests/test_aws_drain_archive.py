"""drain and archive against the moto server: what they change and what they remove."""

from __future__ import annotations

import time

import attrs
import pytest

from greentic_core import ProviderError

from aws_world import KIND
from greentic_aws import ecs


def deregistration_delay(aws, arn: str) -> str:
    attrs = aws.elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    return {a["Key"]: a["Value"] for a in attrs}["deregistration_delay.timeout_seconds"]


def routed_pair(deployer, world, **kwargs):
    """A deployment with two warm revisions, all traffic on the second."""
    deployment_id, revs = world.new_deployment(revisions=2, **kwargs)
    for rev in revs:
        deployer.warm(world.env, rev.revision_id)
    world.set_split(deployment_id, [(revs[0], 0), (revs[1], 10000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    return deployment_id, revs


def task_set_of(aws, answers, world, deployment_id, rev):
    return next((ts for ts in aws.task_sets(answers, world.env_id, deployment_id)
                 if ts["externalId"] == f"gtc-rev-{rev.revision_id}"), None)


# --------------------------------------------------------------------------- drain


def test_drain_aligns_the_deregistration_delay_and_scales_the_task_set_to_zero(deployer, world, answers, aws) -> None:
    deployment_id, revs = routed_pair(deployer, world, drain_seconds=42)
    old = task_set_of(aws, answers, world, deployment_id, revs[0])
    target_group = old["loadBalancers"][0]["targetGroupArn"]
    outcome = deployer.drain(world.env, revs[0].revision_id)
    assert outcome.detail["stopped"] == "scaled-to-zero"
    assert deregistration_delay(aws, target_group) == "42"
    assert task_set_of(aws, answers, world, deployment_id, revs[0])["scale"]["value"] == 0
    assert task_set_of(aws, answers, world, deployment_id, revs[1])["scale"]["value"] == 100
    observed = deployer.observe(world.env).revision(revs[0].revision_id)
    assert observed.present and not observed.serving
    # idempotent: a drained revision drains again at once
    assert deployer.drain(world.env, revs[0].revision_id).detail["stopped"] == "already-drained"


def test_drain_waits_for_registered_targets_at_most_drain_seconds(registry, world, answers, aws) -> None:
    deployer = registry.bind(KIND, {**answers, "drain_slack_seconds": 0})
    deployment_id, revs = routed_pair(deployer, world, drain_seconds=1)
    target_group = task_set_of(aws, answers, world, deployment_id, revs[0])["loadBalancers"][0]["targetGroupArn"]
    aws.elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": "10.20.0.10", "Port": 8080}])
    messages: list[str] = []
    started = time.monotonic()
    outcome = deployer.drain(world.env, revs[0].revision_id, progress=messages.append)
    took = time.monotonic() - started
    assert 1.0 <= outcome.detail["waited_seconds"] and took < 5
    assert any("still registered" in m for m in messages)


def test_drain_first_brings_a_listener_that_is_behind_in_line_with_the_recorded_split(deployer, world, answers,
                                                                                     aws) -> None:
    deployment_id, revs = routed_pair(deployer, world)
    world.set_split(deployment_id, [(revs[0], 10000), (revs[1], 0)])  # recorded, never applied
    deployer.drain(world.env, revs[1].revision_id)
    tgs = {ts["externalId"]: ts["loadBalancers"][0]["targetGroupArn"]
           for ts in aws.task_sets(answers, world.env_id, deployment_id)}
    assert aws.forward(aws.rule_for(answers, deployment_id)["Actions"]) == {
        tgs[f"gtc-rev-{revs[0].revision_id}"]: 999, tgs[f"gtc-rev-{revs[1].revision_id}"]: 0}
    assert task_set_of(aws, answers, world, deployment_id, revs[1])["scale"]["value"] == 0


def test_drain_refuses_a_revision_the_recorded_split_still_routes_to(deployer, world, answers, aws) -> None:
    deployment_id, revs = routed_pair(deployer, world)
    with pytest.raises(ProviderError, match="recorded split gives revision .* 10000 bps; refusing to drain"):
        deployer.drain(world.env, revs[1].revision_id)
    assert task_set_of(aws, answers, world, deployment_id, revs[1])["scale"]["value"] == 100
    assert len(aws.forward(aws.rule_for(answers, deployment_id)["Actions"])) == 2


def test_draining_the_last_routed_revision_after_its_split_was_removed_cuts_its_route(deployer, world, answers,
                                                                                     aws) -> None:
    deployment_id, revs = routed_pair(deployer, world)
    world.env = attrs.evolve(world.env, traffic_splits=())
    deployer.drain(world.env, revs[1].revision_id)
    assert aws.rule_for(answers, deployment_id) is None
    assert task_set_of(aws, answers, world, deployment_id, revs[1])["scale"]["value"] == 0


def test_drain_of_a_revision_never_warmed_succeeds(deployer, world) -> None:
    _, (rev,) = world.new_deployment()
    assert deployer.drain(world.env, rev.revision_id).detail["stopped"] == "absent"


def test_a_drained_revision_warms_again(deployer, world, answers, aws) -> None:
    deployment_id, revs = routed_pair(deployer, world)
    deployer.drain(world.env, revs[0].revision_id)
    deployer.warm(world.env, revs[0].revision_id)
    assert task_set_of(aws, answers, world, deployment_id, revs[0])["scale"]["value"] == 100


# --------------------------------------------------------------------------- archive


def test_archive_deletes_the_task_set_deregisters_the_task_definition_and_frees_the_target_group(
        deployer, world, answers, aws) -> None:
    deployment_id, revs = routed_pair(deployer, world)
    old = task_set_of(aws, answers, world, deployment_id, revs[0])
    target_group = old["loadBalancers"][0]["targetGroupArn"]
    deployer.drain(world.env, revs[0].revision_id)
    deployer.archive(world.env, revs[0].revision_id)

    assert task_set_of(aws, answers, world, deployment_id, revs[0]) is None
    task_def = aws.ecs.describe_task_definition(taskDefinition=old["taskDefinition"])["taskDefinition"]
    assert task_def["status"] == "INACTIVE"
    assert ecs.TAG_CLAIM not in aws.tags(target_group)
    # the rule no longer names the archived revision's target group; the service stays
    rule = aws.rule_for(answers, deployment_id)
    assert target_group not in aws.forward(rule["Actions"])
    assert aws.service(answers, world.env_id, deployment_id)["status"] == "ACTIVE"
    # idempotent
    assert deployer.archive(world.env, revs[0].revision_id).detail["task_set"] == "absent"


def test_archiving_the_last_revision_removes_the_rule_and_the_service(deployer, world, answers, aws) -> None:
    deployment_id, (rev,) = world.new_deployment()
    deployer.warm(world.env, rev.revision_id)
    world.set_split(deployment_id, [(rev, 10000)])
    deployer.apply_traffic_split(world.env, deployment_id)
    assert aws.rule_for(answers, deployment_id) is not None

    world.env = attrs.evolve(world.env, traffic_splits=())  # `traffic clear`, then drain and archive
    deployer.drain(world.env, rev.revision_id)
    outcome = deployer.archive(world.env, rev.revision_id)
    assert outcome.detail["service"] == "deleted"
    assert aws.rule_for(answers, deployment_id) is None
    assert aws.service(answers, world.env_id, deployment_id)["status"] != "ACTIVE"
    assert all(ecs.TAG_CLAIM not in aws.tags(arn) for arn in answers["target_group_arns"])
    assert deployer.archive(world.env, rev.revision_id).detail == {
        "task_set": "absent", "service": "absent", "released": [], "task_definitions": []}
    assert deployer.observe(world.env).revision(rev.revision_id).present is False


def test_archive_as_a_teardown_never_leaves_the_listener_pointing_at_a_released_target_group(
        deployer, world, answers, aws) -> None:
    deployment_id, revs = routed_pair(deployer, world)
    routed_tg = task_set_of(aws, answers, world, deployment_id, revs[1])["loadBalancers"][0]["targetGroupArn"]
    deployer.archive(world.env, revs[1].revision_id)  # still routed (a teardown, not the core's lifecycle)
    rule = aws.rule_for(answers, deployment_id)
    assert rule is None or routed_tg not in aws.forward(rule["Actions"])
    assert ecs.TAG_CLAIM not in aws.tags(routed_tg)
    deployer.archive(world.env, revs[0].revision_id)
    assert aws.rule_for(answers, deployment_id) is None
    assert aws.service(answers, world.env_id, deployment_id)["status"] != "ACTIVE"


def test_archive_of_a_revision_never_warmed_succeeds(deployer, world) -> None:
    _, (rev,) = world.new_deployment()
    outcome = deployer.archive(world.env, rev.revision_id)
    assert outcome.detail["task_set"] == "absent"


def test_archive_never_touches_another_deployment(deployer, world, answers, aws) -> None:
    d1, (r1,) = world.new_deployment()
    d2, (r2,) = world.new_deployment()
    deployer.warm(world.env, r1.revision_id)
    deployer.warm(world.env, r2.revision_id)
    world.set_split(d2, [(r2, 10000)])
    deployer.apply_traffic_split(world.env, d2)
    before = (aws.task_sets(answers, world.env_id, d2), aws.rule_for(answers, d2))
    deployer.archive(world.env, r1.revision_id)
    assert (aws.task_sets(answers, world.env_id, d2), aws.rule_for(answers, d2)) == before


def test_archive_in_default_action_mode_parks_the_listener(registry, default_action_answers, world, aws) -> None:
    answers = default_action_answers
    deployer = registry.bind(KIND, answers)
    deployment_id, revs = routed_pair(deployer, world)
    deployer.archive(world.env, revs[0].revision_id)
    target_group = task_set_of(aws, answers, world, deployment_id, revs[1])["loadBalancers"][0]["targetGroupArn"]
    assert aws.forward(aws.default_actions(answers)) == {target_group: 999}
    world.env = attrs.evolve(world.env, traffic_splits=())
    deployer.drain(world.env, revs[1].revision_id)
    deployer.archive(world.env, revs[1].revision_id)
    (action,) = aws.default_actions(answers)
    assert action["Type"] == "fixed-response" and action["FixedResponseConfig"]["StatusCode"] == "503"


def test_drain_waits_drain_seconds_plus_the_drain_slack_answer(registry, world, answers, aws) -> None:
    """drain_slack_seconds was read but never used: the wait ended at drain_seconds."""
    deployer = registry.bind(KIND, {**answers, "drain_slack_seconds": 1})
    deployment_id, revs = routed_pair(deployer, world, drain_seconds=1)
    target_group = task_set_of(aws, answers, world, deployment_id, revs[0])["loadBalancers"][0]["targetGroupArn"]
    aws.elb.register_targets(TargetGroupArn=target_group, Targets=[{"Id": "10.20.0.11", "Port": 8080}])
    messages: list[str] = []
    outcome = deployer.drain(world.env, revs[0].revision_id, progress=messages.append)
    assert outcome.detail["waited_seconds"] >= 2.0
    assert any("of 2s" in m for m in messages)
