"""stage and warm against the moto server, checked with independent boto3 reads."""

from __future__ import annotations

import time

import pytest

from greentic_core import Lifecycle, ProviderError, ProviderTimeout

from aws_world import KIND, make_world
from greentic_aws import ecs


def claim_of(aws, arn: str) -> str | None:
    return aws.tags(arn).get(ecs.TAG_CLAIM)


def test_stage_checks_image_cluster_and_listener(deployer, world, answers, registry) -> None:
    deployment_id, (rev,) = world.new_deployment(image="ghcr.io/acme/shop:1.2.3")
    outcome = deployer.stage(world.env, rev.revision_id)
    assert outcome.detail["image"] == "ghcr.io/acme/shop:1.2.3"

    _, (bad,) = world.new_deployment(image="Not A/Valid::image")
    with pytest.raises(ProviderError, match="not a valid image reference"):
        deployer.stage(world.env, bad.revision_id)

    missing_cluster = registry.bind(KIND, {**answers, "cluster": "no-such-cluster"})
    with pytest.raises(ProviderError, match="no-such-cluster"):
        missing_cluster.stage(world.env, rev.revision_id)

    gone = answers["listener_arn"][:-4] + "0000"
    with pytest.raises(ProviderError, match="listener"):
        registry.bind(KIND, {**answers, "listener_arn": gone}).stage(world.env, rev.revision_id)


def test_warm_creates_an_external_service_a_task_definition_and_a_task_set(deployer, world, answers, aws) -> None:
    deployment_id, (rev,) = world.new_deployment(image="ghcr.io/acme/shop:1.2.3")
    outcome = deployer.warm(world.env, rev.revision_id)

    service = aws.service(answers, world.env_id, deployment_id)
    assert service["status"] == "ACTIVE"
    assert service["deploymentController"] == {"type": "EXTERNAL"}
    tags = {t["key"]: t["value"] for t in service["tags"]}
    assert tags == {"greentic:managed-by": "greentic-deployer", "greentic:env": world.env_id,
                    "greentic:deployment": deployment_id}

    (task_set,) = aws.task_sets(answers, world.env_id, deployment_id)
    assert task_set["externalId"] == f"gtc-rev-{rev.revision_id}"
    assert task_set["launchType"] == "FARGATE"
    assert task_set["scale"] == {"value": 100.0, "unit": "PERCENT"}
    (binding,) = task_set["loadBalancers"]
    assert binding["targetGroupArn"] in answers["target_group_arns"]
    assert binding["targetGroupArn"] == outcome.detail["target_group"]
    assert claim_of(aws, binding["targetGroupArn"]) == f"{world.env_id}/{deployment_id}/{rev.revision_id}"

    task_def = aws.ecs.describe_task_definition(taskDefinition=task_set["taskDefinition"], include=["TAGS"])
    container = task_def["taskDefinition"]["containerDefinitions"][0]
    assert container["image"] == "ghcr.io/acme/shop:1.2.3"
    assert {"name": "GREENTIC_REVISION_ID", "value": rev.revision_id} in container["environment"]
    assert {t["key"]: t["value"] for t in task_def["tags"]}["greentic:revision"] == rev.revision_id


def test_warm_twice_changes_nothing_and_creates_nothing(deployer, world, answers, aws, calls) -> None:
    deployment_id, (rev,) = world.new_deployment()
    deployer.warm(world.env, rev.revision_id)
    before = aws.task_sets(answers, world.env_id, deployment_id)
    calls.reset()
    again = deployer.warm(world.env, rev.revision_id)
    assert again.detail["already_present"] is True
    assert aws.task_sets(answers, world.env_id, deployment_id) == before
    assert not {"CreateService", "CreateTaskSet", "RegisterTaskDefinition", "AddTags"} & set(calls.calls)
    assert calls.by_operation() == {"DescribeServices": 1, "DescribeTaskSets": 1}


def test_client_tokens_are_deterministic() -> None:
    assert ecs.client_token("env", "dep", "service", "rev") == ecs.client_token("env", "dep", "service", "rev")
    assert ecs.client_token("env", "dep", "service", "rev") != ecs.client_token("env2", "dep", "service", "rev")
    assert len(ecs.client_token("x")) == 36


def test_revisions_and_deployments_never_share_a_target_group(deployer, world, answers, aws) -> None:
    bound = []
    for _ in range(3):
        deployment_id, revs = world.new_deployment(revisions=2)
        for rev in revs:
            deployer.warm(world.env, rev.revision_id)
        for ts in aws.task_sets(answers, world.env_id, deployment_id):
            bound.append(ts["loadBalancers"][0]["targetGroupArn"])
    assert len(bound) == 6 and len(set(bound)) == 6


def test_environments_sharing_a_pool_never_share_a_target_group(registry, answers, aws) -> None:
    blue, green = make_world("blue"), make_world("green")
    d1, (r1,) = blue.new_deployment()
    d2, (r2,) = green.new_deployment()
    deployer = registry.bind(KIND, answers)
    deployer.warm(blue.env, r1.revision_id)
    deployer.warm(green.env, r2.revision_id)
    (ts1,) = aws.task_sets(answers, "blue", d1)
    (ts2,) = aws.task_sets(answers, "green", d2)
    assert ts1["loadBalancers"][0]["targetGroupArn"] != ts2["loadBalancers"][0]["targetGroupArn"]


def test_a_target_group_claimed_elsewhere_is_never_taken(deployer, world, answers, aws) -> None:
    first = answers["target_group_arns"][0]
    aws.elb.add_tags(ResourceArns=[first], Tags=[{"Key": ecs.TAG_CLAIM, "Value": "other-env/DEP/REV"}])
    deployment_id, (rev,) = world.new_deployment()
    outcome = deployer.warm(world.env, rev.revision_id)
    assert outcome.detail["target_group"] != first
    assert claim_of(aws, first) == "other-env/DEP/REV"


def test_an_exhausted_pool_is_a_clear_error_until_a_revision_is_archived(registry, small_pool_answers, world,
                                                                       aws) -> None:
    deployer = registry.bind(KIND, small_pool_answers)
    deployment_id, revs = world.new_deployment(revisions=3)
    deployer.warm(world.env, revs[0].revision_id)
    deployer.warm(world.env, revs[1].revision_id)
    with pytest.raises(ProviderError, match="no free target group in the pool of 2") as caught:
        deployer.warm(world.env, revs[2].revision_id)
    assert "add target groups" in caught.value.hint
    assert len(aws.task_sets(small_pool_answers, world.env_id, deployment_id)) == 2

    deployer.archive(world.env, revs[0].revision_id)
    deployer.warm(world.env, revs[2].revision_id)
    bound = {ts["loadBalancers"][0]["targetGroupArn"]
             for ts in aws.task_sets(small_pool_answers, world.env_id, deployment_id)}
    assert bound == set(small_pool_answers["target_group_arns"])


def test_a_claim_left_by_an_archived_revision_of_this_env_is_reclaimed(registry, small_pool_answers, world,
                                                                      aws) -> None:
    deployer = registry.bind(KIND, small_pool_answers)
    _, (gone, other) = world.new_deployment(revisions=2)
    _, (rev,) = world.new_deployment()
    pool = small_pool_answers["target_group_arns"]
    # a crash left both target groups claimed: one by an archived revision of this env, one elsewhere
    aws.elb.add_tags(ResourceArns=[pool[0]], Tags=[{"Key": ecs.TAG_CLAIM, "Value": "elsewhere/D/R"}])
    aws.elb.add_tags(ResourceArns=[pool[1]], Tags=[{"Key": ecs.TAG_CLAIM,
                                                     "Value": f"{world.env_id}/{gone.deployment_id}/{gone.revision_id}"}])
    with pytest.raises(ProviderError, match="no free target group"):
        deployer.warm(world.env, rev.revision_id)
    world.set_lifecycle(gone, Lifecycle.ARCHIVED)
    assert deployer.warm(world.env, rev.revision_id).detail["target_group"] == pool[1]
    assert claim_of(aws, pool[0]) == "elsewhere/D/R"


def test_a_foreign_service_with_our_name_is_never_touched(deployer, world, answers, aws) -> None:
    deployment_id, (rev,) = world.new_deployment()
    name = ecs.service_name(world.env_id, deployment_id)
    aws.ecs.create_service(cluster=answers["cluster"], serviceName=name, desiredCount=0)
    with pytest.raises(ProviderError, match=f"ECS service {name} .* without the greentic ownership tags"):
        deployer.warm(world.env, rev.revision_id)
    assert aws.ecs.describe_task_sets(cluster=answers["cluster"], service=name)["taskSets"] == []


def test_a_failed_task_set_creation_leaves_nothing_behind(registry, answers, world, aws) -> None:
    # moto cannot start Fargate tasks (a service desiredCount above 0 makes CreateTaskSet fail)
    deployer = registry.bind(KIND, {**answers, "desired_count": 1})
    deployment_id, (rev,) = world.new_deployment()
    with pytest.raises(ProviderError, match="CreateTaskSet"):
        deployer.warm(world.env, rev.revision_id)
    assert aws.task_sets(answers, world.env_id, deployment_id) == []
    assert all(claim_of(aws, arn) is None for arn in answers["target_group_arns"])
    family = ecs.task_family(world.env_id, rev.revision_id)
    assert aws.ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"] == []


BROKEN_IMAGE = "registry.invalid/acme/missing:1.0"  # the sandbox's moto never stabilises these (see sandbox.py)


def test_warm_of_an_image_that_cannot_be_pulled_fails_fast_quoting_ecs(deployer, world, answers, aws) -> None:
    deployment_id, (rev,) = world.new_deployment(image=BROKEN_IMAGE)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="task\\(s\\) stopped while warming; ECS says: CannotPullContainerError"):
        deployer.warm(world.env, rev.revision_id, timeout=30)
    assert time.monotonic() - started < 10
    assert aws.task_sets(answers, world.env_id, deployment_id) == []
    assert all(claim_of(aws, arn) is None for arn in answers["target_group_arns"])
    observed = deployer.observe(world.env).revision(rev.revision_id)
    assert not observed.present and not observed.serving


def test_warm_times_out_with_progress_and_removes_what_it_started(registry, answers, world, aws) -> None:
    deployer = registry.bind(KIND, {**answers, "failed_tasks_limit": 0})  # only the deadline ends it
    deployment_id, (rev,) = world.new_deployment(image=BROKEN_IMAGE)
    messages: list[str] = []
    with pytest.raises(ProviderTimeout, match="did not reach steady state"):
        deployer.warm(world.env, rev.revision_id, progress=messages.append, timeout=0.3)
    assert any("STABILIZING" in m and "running 0/1" in m for m in messages)
    assert aws.task_sets(answers, world.env_id, deployment_id) == []
    assert all(claim_of(aws, arn) is None for arn in answers["target_group_arns"])
    family = ecs.task_family(world.env_id, rev.revision_id)
    assert aws.ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"] == []


def test_a_revision_without_an_image_is_refused_before_any_call(registry, answers, world, calls) -> None:
    deployer = registry.bind(KIND, {k: v for k, v in answers.items() if k != "default_image"})
    _, (rev,) = world.new_deployment()
    with pytest.raises(ProviderError, match="no container image"):
        deployer.warm(world.env, rev.revision_id)
    assert calls.total == 0
