"""Fixtures: one moto server per session (real HTTP on 127.0.0.1), one isolated stack per test.

The provider talks to the server through boto3 exactly as it would talk to AWS. Tests check
what it did with their own boto3 clients (``aws`` fixture), never through the provider.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import attrs
import boto3
import pytest

from greentic_core import (
    Environment,
    HostConfig,
    Lifecycle,
    Revision,
    TrafficSplit,
    TrafficSplitEntry,
    Workload,
    mint_deployment_id,
    mint_revision_id,
)
from greentic_core.registry import Registry

from greentic_aws import ecs
from greentic_aws.sandbox import DUMMY_CREDENTIALS, provision, start_server, teardown

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never look for instance credentials
from aws_world import KIND, NOW, World, make_world, revision, split  # noqa: F401  (re-exported)


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server, endpoint = start_server()
    assert endpoint.startswith("http://127.0.0.1:")
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def answers(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    """Answers for a fresh cluster, ALB listener and pool of 10 target groups (rule mode)."""
    made = provision(moto_endpoint)
    yield made
    teardown(made)


@pytest.fixture
def small_pool_answers(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    made = provision(moto_endpoint, pool_size=2)
    yield made
    teardown(made)


@pytest.fixture
def default_action_answers(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    """Answers without routing_host/path: the listener's default action carries the split."""
    made = provision(moto_endpoint, routing_host=None)
    yield made
    teardown(made)


class Aws:
    """Independent boto3 reads (and out-of-band writes) of the moto server."""

    def __init__(self, endpoint: str) -> None:
        session = boto3.session.Session(aws_access_key_id=DUMMY_CREDENTIALS["access_key_id"],
                                        aws_secret_access_key=DUMMY_CREDENTIALS["secret_access_key"],
                                        region_name="eu-west-1")
        self.ecs = session.client("ecs", endpoint_url=endpoint)
        self.elb = session.client("elbv2", endpoint_url=endpoint)

    def task_sets(self, answers: dict[str, Any], env_id: str, deployment_id: str) -> list[dict[str, Any]]:
        name = ecs.service_name(env_id, deployment_id)
        services = self.ecs.describe_services(cluster=answers["cluster"], services=[name])["services"]
        if not services or services[0]["status"] != "ACTIVE":
            return []
        return self.ecs.describe_task_sets(cluster=answers["cluster"], service=name)["taskSets"]

    def service(self, answers: dict[str, Any], env_id: str, deployment_id: str) -> dict[str, Any] | None:
        name = ecs.service_name(env_id, deployment_id)
        found = self.ecs.describe_services(cluster=answers["cluster"], services=[name], include=["TAGS"])["services"]
        return found[0] if found else None

    def rules(self, answers: dict[str, Any]) -> list[dict[str, Any]]:
        out, marker = [], None
        while True:
            kwargs = {"ListenerArn": answers["listener_arn"], **({"Marker": marker} if marker else {})}
            page = self.elb.describe_rules(**kwargs)
            out.extend(page["Rules"])
            marker = page.get("NextMarker")
            if not marker:
                return out

    def rule_for(self, answers: dict[str, Any], deployment_id: str) -> dict[str, Any] | None:
        host = f"{deployment_id}.greentic.test".lower()
        for rule in self.rules(answers):
            for cond in rule.get("Conditions", []):
                values = cond.get("HostHeaderConfig", {}).get("Values") or cond.get("Values") or []
                if host in values:
                    return rule
        return None

    def forward(self, actions: list[dict[str, Any]]) -> dict[str, int]:
        for action in actions:
            if action["Type"] == "forward":
                return {g["TargetGroupArn"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}
        return {}

    def tags(self, arn: str) -> dict[str, str]:
        found = self.elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
        return {t["Key"]: t["Value"] for t in found[0]["Tags"]} if found else {}

    def default_actions(self, answers: dict[str, Any]) -> list[dict[str, Any]]:
        return self.elb.describe_listeners(ListenerArns=[answers["listener_arn"]])["Listeners"][0]["DefaultActions"]


@pytest.fixture(scope="session")
def aws(moto_endpoint: str) -> Aws:
    return Aws(moto_endpoint)


# --------------------------------------------------------------------------- counting calls


class CallCounter:
    """Counts AWS API calls of the provider's clients with a botocore ``before-call`` hook."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._before_call)

    def _before_call(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def reset(self) -> None:
        self.calls.clear()

    @property
    def total(self) -> int:
        return len(self.calls)

    def by_operation(self) -> Counter:
        return Counter(self.calls)


@pytest.fixture
def calls() -> Iterator[CallCounter]:
    counter = CallCounter()
    ecs.clear_client_cache()
    ecs.client_hooks.append(counter.attach)
    try:
        yield counter
    finally:
        ecs.client_hooks.remove(counter.attach)
        ecs.clear_client_cache()


@pytest.fixture(autouse=True)
def request_rules() -> Iterator["RequestRules"]:
    """The real-rules layer: every request the provider sends in any test meets botocore's model
    constraints and the ALB quotas (see botocore_rules.py); moto would accept most violations."""
    from botocore_rules import RequestRules

    checker = RequestRules()
    ecs.clear_client_cache()
    ecs.client_hooks.append(checker.attach)
    try:
        yield checker
    finally:
        ecs.client_hooks.remove(checker.attach)
        ecs.clear_client_cache()
    assert checker.violations == [], checker.violations[:5]


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry(allow=["greentic.deployer.aws-ecs"], use_cache=False)


@pytest.fixture
def deployer(registry: Registry, answers: dict[str, Any]):
    """The aws-ecs deployer bound through the core (schema check, preconditions, error conversion)."""
    return registry.bind(KIND, answers)
