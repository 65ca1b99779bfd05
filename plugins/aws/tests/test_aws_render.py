"""The aws-ecs dry run (``greentic_render``): the requests as data, checked against botocore's model
and the ALB quotas; generated env ids, splits and routing templates (hypothesis)."""

from __future__ import annotations

import json

import botocore.session
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greentic_core import InvalidRoute
from greentic_aws import ecs, hooks
from greentic_aws.answers import Answers
from greentic_aws.render import render_requests
from greentic_aws.weights import to_alb_weights

from aws_world import make_world
from botocore_rules import alb_problems, shape_problems

ANSWERS = {
    "region": "eu-west-1", "cluster": "apps", "subnets": ["subnet-0a1b"], "security_groups": ["sg-0a1b"],
    "target_group_arns": ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/gt-1/0123456789abcdef"],
    "listener_arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/edge/0123456789abcdef/"
                    "0123456789abcdef",
    "routing_host": "{bundle_id}.apps.example.com", "default_image": "registry.example.com/team/app:1.0",
}
_MODELS = {name: botocore.session.get_session().get_service_model(name) for name in ("ecs", "elbv2")}


def _problems(request: dict) -> list[str]:
    params = dict(request["params"])
    if request["operation"] == "CreateRule":
        params["Priority"] = 1  # chosen at apply time (see the note)
    shape = _MODELS[request["service"]].operation_model(request["operation"]).input_shape
    return shape_problems(shape, params, request["operation"]) + (
        alb_problems(request["operation"], params) if request["service"] == "elbv2" else [])


def _world(env_id: str, weights=(3000, 7000)):
    world = make_world(env_id)
    deployment_id, revs = world.new_deployment(revisions=len(weights))
    world.set_split(deployment_id, list(zip(revs, weights)))
    return world, deployment_id, revs


def test_render_lists_the_requests_of_a_first_deployment_without_any_client(calls):
    world, deployment_id, revs = _world("prod")
    other, _ = world.new_deployment()
    requests = render_requests(world.env, Answers.parse(ANSWERS))
    assert [r["operation"] for r in requests] == [
        "CreateService", "RegisterTaskDefinition", "CreateTaskSet", "RegisterTaskDefinition", "CreateTaskSet",
        "CreateService", "RegisterTaskDefinition", "CreateTaskSet", "CreateRule"]
    assert ecs._clients == {} and calls.total == 0  # nothing connected, nothing sent
    rule = requests[-1]["params"]
    assert rule["Conditions"][0]["HostHeaderConfig"]["Values"] == [f"{revs[0].bundle_id}.apps.example.com".lower()]
    weights = [g["Weight"] for g in rule["Actions"][0]["ForwardConfig"]["TargetGroups"]]
    assert weights == list(to_alb_weights([3000, 7000]).weights)  # the ALB conversion, as apply sends it
    assert "Priority" in requests[-1]["note"]
    only = render_requests(world.env, Answers.parse(ANSWERS), other)
    assert [r["operation"] for r in only] == ["CreateService", "RegisterTaskDefinition", "CreateTaskSet"]
    yaml.safe_dump_all(requests)  # plain data: prints as YAML and JSON
    json.dumps(requests)


def test_every_rendered_request_meets_botocores_model_and_the_alb_quotas():
    world, _, _ = _world("prod")
    for request in render_requests(world.env, Answers.parse(ANSWERS)):
        assert _problems(request) == [], request["operation"]


def test_the_layer_catches_a_request_aws_would_refuse():
    world, _, _ = _world("prod", weights=(2000, 2000, 2000, 2000, 1000, 1000))  # 6 > 5 target groups
    rule = render_requests(world.env, Answers.parse(ANSWERS))[-1]
    assert any("at most 5" in p for p in _problems(rule))
    long_tag = {"service": "ecs", "operation": "CreateService",
                "params": {"serviceName": "s", "tags": [{"key": "k", "value": "v" * 257}]}}
    assert any("at most 256" in p for p in _problems(long_tag))


_ENV_IDS = st.text(alphabet="abcxyzABC0129-_.", min_size=1, max_size=260)
_TEMPLATES = st.sampled_from(["{bundle_id}.apps.example.com", "{env_id}.apps.example.com",
                              "{deployment_id}.{env_id}.example.com", "{env_id}", "*.{env_id}.example.org"])
_SPLITS = st.integers(1, 5).flatmap(lambda n: st.lists(st.integers(0, 100), min_size=n, max_size=n)).map(
    lambda raw: [w * 10000 // max(sum(raw), 1) for w in raw]).map(lambda ws: [*ws[:-1], 10000 - sum(ws[:-1])])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env_id=_ENV_IDS, template=_TEMPLATES, weights=_SPLITS)
def test_generated_envs_are_refused_before_any_call_or_rendered_within_every_rule(env_id, template, weights):
    answers = {**ANSWERS, "routing_host": template}
    world, deployment_id, _ = _world(env_id, weights)
    try:
        hooks.refuse_bad_routes(world.env, deployment_id, Answers.parse(answers))
    except InvalidRoute:
        return  # the ALB would refuse the filled conditions: refused first
    for request in hooks.greentic_render(env=world.env, answers=answers, deployment_id=None):
        assert _problems(request) == [], (env_id, request["operation"])
