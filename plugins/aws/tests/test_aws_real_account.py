"""The real-account lane: the README walkthrough against a real AWS account.

Runs only when ``GREENTIC_TEST_AWS=1`` and ``GREENTIC_TEST_AWS_ANSWERS`` names a JSON file of
answers (cluster, subnets, security groups, a pool of >= 2 ip target groups, an ALB listener,
``routing_host`` with ``{deployment_id}``, ``default_image``, ``desired_count`` >= 1). It
creates one ECS service with two task sets and one listener rule, and removes them again.
Costs money (Fargate tasks for a few minutes). Not part of the default run or of coverage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs
import pytest

from aws_world import KIND, make_world

ENABLED = os.environ.get("GREENTIC_TEST_AWS") == "1"
ANSWERS = os.environ.get("GREENTIC_TEST_AWS_ANSWERS", "")

pytestmark = pytest.mark.skipif(
    not (ENABLED and ANSWERS and Path(ANSWERS).is_file()),
    reason="real AWS lane: set GREENTIC_TEST_AWS=1 and GREENTIC_TEST_AWS_ANSWERS=answers.json to run it",
)


def test_blue_green_walkthrough_on_a_real_account(registry) -> None:
    answers = json.loads(Path(ANSWERS).read_text())
    assert "endpoint_url" not in answers, "the real lane must talk to AWS itself"
    deployer = registry.bind(KIND, answers)
    world = make_world("greentic-real-lane")
    deployment_id, (blue, green) = world.new_deployment(revisions=2, drain_seconds=5)
    try:
        deployer.stage(world.env, blue.revision_id)
        deployer.warm(world.env, blue.revision_id)
        world.set_split(deployment_id, [(blue, 10000)])
        deployer.apply_traffic_split(world.env, deployment_id)
        deployer.warm(world.env, green.revision_id)
        world.set_split(deployment_id, [(blue, 1000), (green, 9000)])
        outcome = deployer.apply_traffic_split(world.env, deployment_id)
        assert outcome.provider_weights == {blue.revision_id: 100, green.revision_id: 900}
        observed = deployer.observe(world.env)
        assert observed.weights(deployment_id) == {blue.revision_id: 1000, green.revision_id: 9000}
        assert observed.revision(green.revision_id).serving
        world.set_split(deployment_id, [(blue, 0), (green, 10000)])
        deployer.apply_traffic_split(world.env, deployment_id)
        deployer.drain(world.env, blue.revision_id)
        deployer.archive(world.env, blue.revision_id)
    finally:
        world.env = attrs.evolve(world.env, traffic_splits=())
        for rev in (blue, green):
            deployer.drain(world.env, rev.revision_id)
            deployer.archive(world.env, rev.revision_id)
    assert not deployer.observe(world.env).revision(green.revision_id).present
