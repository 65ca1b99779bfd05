"""The distribution as the core sees it: entry point, descriptor, answers schema, cheap import."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from greentic_core import InvalidAnswers
from greentic_core.contract import redact_answers, validate_answers

from greentic_aws.answers import ANSWERS_SCHEMA, Answers
from greentic_aws.hooks import greentic_deployer_descriptor

VALID = {
    "region": "eu-west-1",
    "cluster": "prod",
    "subnets": ["subnet-0a1b"],
    "security_groups": ["sg-0a1b"],
    "target_group_arns": [
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop-a/0123456789abcdef",
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop-b/0123456789abcdee",
    ],
    "listener_arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop/0123456789abcdef/0123456789abcdef",
}


def test_importing_the_hooks_module_does_not_import_boto3() -> None:
    code = ("import sys, greentic_aws.hooks as h; h.greentic_deployer_descriptor(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'moto')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_registry_loads_the_entry_point_without_warnings(registry) -> None:
    record = registry.record("greentic.deployer.aws-ecs")
    assert record.ok, record.reason
    assert record.distribution == "greentic-deployer-aws"
    assert record.warnings == []
    assert "greentic_conformance_sandbox" in record.hooks


def test_descriptor_states_the_alb_resolution_and_the_five_entry_limit() -> None:
    descriptor = greentic_deployer_descriptor()
    assert descriptor.path == "greentic.deployer.aws-ecs"
    assert descriptor.capabilities.weight_resolution_bps == 11
    assert descriptor.capabilities.max_split_entries == 5
    assert descriptor.secret_keys() == {"access_key_id", "secret_access_key", "session_token"}


def test_valid_answers_pass_the_schema_and_parse_with_defaults() -> None:
    descriptor = greentic_deployer_descriptor()
    validate_answers(descriptor, VALID)
    parsed = Answers.parse(VALID)
    assert parsed.cpu == "256" and parsed.memory == "512" and parsed.desired_count == 1
    assert parsed.launch_type == "FARGATE" and not parsed.uses_rule


@pytest.mark.parametrize("change", [
    {"regoin": "eu-west-1"},
    {"target_group_arns": ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1"]},
    {"listener_arn": "not-an-arn"},
    {"subnets": []},
    {"routing_path": "no-leading-slash"},
    {"desired_count": -1},
])
def test_bad_answers_are_refused_by_the_schema_and_by_parse(change: dict) -> None:
    bad = {**VALID, **change}
    with pytest.raises(InvalidAnswers):
        validate_answers(greentic_deployer_descriptor(), bad)
    if set(change) <= {"regoin", "target_group_arns", "listener_arn"}:
        with pytest.raises(InvalidAnswers):
            Answers.parse(bad)


def test_parse_refuses_unknown_keys_and_missing_required_ones() -> None:
    with pytest.raises(InvalidAnswers, match="unknown key"):
        Answers.parse({**VALID, "clustr": "x"})
    with pytest.raises(InvalidAnswers, match="missing listener_arn"):
        Answers.parse({k: v for k, v in VALID.items() if k != "listener_arn"})
    with pytest.raises(InvalidAnswers, match="go together"):
        Answers.parse({**VALID, "access_key_id": "AKIA"})


def test_credentials_are_secrets_never_shown() -> None:
    descriptor = greentic_deployer_descriptor()
    shown = redact_answers(descriptor, {**VALID, "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t"})
    assert "s3cr3t" not in json.dumps(shown) and "AKIAEXAMPLE" not in json.dumps(shown)
    with pytest.raises(InvalidAnswers) as caught:
        validate_answers(descriptor, {**VALID, "secret_access_key": 12345})
    assert "12345" not in str(caught.value)
    assert ANSWERS_SCHEMA["properties"]["secret_access_key"]["writeOnly"] is True
    assert "s3cr3t" not in repr(Answers.parse({**VALID, "access_key_id": "a", "secret_access_key": "s3cr3t"}))


def test_routing_templates_give_each_deployment_its_own_conditions() -> None:
    parsed = Answers.parse({**VALID, "routing_host": "{bundle_id}.Example.com", "routing_path": "/d/{deployment_id}/*"})
    conditions = parsed.conditions(env_id="prod", deployment_id="01ABC", bundle_id="shop")
    assert conditions == [
        {"Field": "host-header", "HostHeaderConfig": {"Values": ["shop.example.com"]}},
        {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/d/01ABC/*"]}},
    ]


def _satisfied(dist: str) -> list[str]:
    problems = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{dist} needs {req} (not installed)")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{dist} needs {req}, found {installed}")
    return problems


def test_co_installs_with_the_k8s_client_stack() -> None:
    """boto3/botocore and lightkube (the k8s provider's client) share one environment.

    The official ``kubernetes`` client 37 needs python-dateutil>=3 while botocore needs <3
    (reference/test-infrastructure.md); it must not be installed here.
    """
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("kubernetes")
    dists = ["greentic-deployer-aws", "boto3", "botocore"]
    try:
        metadata.version("lightkube")
        dists.append("lightkube")
    except metadata.PackageNotFoundError:
        pytest.skip("lightkube is not installed in this environment")
    assert [p for d in dists for p in _satisfied(d)] == []
    subprocess.run([sys.executable, "-c", "import boto3, lightkube, dateutil"], check=True)


def test_the_readme_iam_policy_grants_exactly_what_the_code_calls() -> None:
    import re
    from pathlib import Path

    import botocore.session
    from botocore import xform_name

    root = Path(__file__).resolve().parent.parent
    source = (root / "greentic_aws" / "ecs.py").read_text()
    called = set()
    session = botocore.session.get_session()
    for client, service, prefix in (("ecs", "ecs", "ecs"), ("elb", "elbv2", "elasticloadbalancing")):
        names = {xform_name(op): op for op in session.get_service_model(service).operation_names}
        for method in re.findall(rf'(?:aws|pages)\(self\.{client}, "([a-z_]+)"', source):
            called.add(f"{prefix}:{names[method]}")
    readme = (root / "README.md").read_text()
    policy = json.loads(re.search(r"```json\n(.*?)```", readme, re.S).group(1))
    granted = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    assert called <= granted, sorted(called - granted)
    assert granted - called == {"ecs:TagResource", "iam:PassRole"}
