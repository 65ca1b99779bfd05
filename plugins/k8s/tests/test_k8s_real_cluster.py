"""The real-cluster lane: a blue/green walk on the cluster GREENTIC_TEST_KUBECONFIG points at.

Skipped unless that variable is set. Also read:

* ``GREENTIC_TEST_GATEWAY``: ``namespace/name`` of a Gateway whose listeners allow routes from the
  test namespace (required);
* ``GREENTIC_TEST_IMAGE``: an image that serves HTTP, runs as a non-root user and with a read-only
  root file system (required); ``GREENTIC_TEST_PORT`` (default 8080) and
  ``GREENTIC_TEST_HEALTH_PATH`` (default ``/healthz``) say where it answers 200;
* ``GREENTIC_TEST_CONTEXT``: the kubeconfig context (default: its current context);
* ``GREENTIC_TEST_NAMESPACE``: an existing namespace to use (default: ``gt-<env id>``, which
  must exist).
"""

from __future__ import annotations

import os

import attrs
import pytest

from k8s_world import KIND, World

KUBECONFIG = os.environ.get("GREENTIC_TEST_KUBECONFIG")
pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="real-cluster lane: set GREENTIC_TEST_KUBECONFIG "
                                                      "(and GREENTIC_TEST_GATEWAY=namespace/name) to run it")


@pytest.fixture
def cluster_answers():
    gateway = os.environ.get("GREENTIC_TEST_GATEWAY", "")
    if "/" not in gateway:
        pytest.fail("GREENTIC_TEST_GATEWAY must be namespace/name of a Gateway")
    gateway_namespace, gateway_name = gateway.split("/", 1)
    answers = {"kubeconfig": KUBECONFIG, "gateway_name": gateway_name, "gateway_namespace": gateway_namespace,
               "warm_timeout_seconds": 240, "poll_interval_seconds": 1, "run_as_user": 65532}
    for key, variable in (("context", "GREENTIC_TEST_CONTEXT"), ("namespace", "GREENTIC_TEST_NAMESPACE")):
        if os.environ.get(variable):
            answers[key] = os.environ[variable]
    return answers


def test_blue_green_on_a_real_cluster(registry, cluster_answers):
    image = os.environ.get("GREENTIC_TEST_IMAGE")
    if not image:
        pytest.fail("GREENTIC_TEST_IMAGE must name an image that serves HTTP as a non-root user")
    deployer = registry.bind(KIND, cluster_answers)
    world = World("greentic-e2e")
    dep = world.deployment("e2e", hosts=("e2e.greentic.test",))
    workload = {"image": image, "port": int(os.environ.get("GREENTIC_TEST_PORT", "8080")),
                "health_path": os.environ.get("GREENTIC_TEST_HEALTH_PATH", "/healthz")}
    blue, green = world.revision(dep, drain_seconds=5, **workload), world.revision(dep, drain_seconds=5, **workload)
    touched = []
    try:
        for rid in (blue, green):
            deployer.stage(world.env, rid)
            touched.append(rid)
            deployer.warm(world.env, rid, progress=print)
            assert deployer.observe(world.env).revision(rid).serving
        world.split(dep, (blue, 9000), (green, 1000))
        deployer.apply_traffic_split(world.env, dep)
        assert dict(deployer.observe(world.env).weights(dep)) == {blue: 9000, green: 1000}
        world.split(dep, (blue, 0), (green, 10000))
        deployer.apply_traffic_split(world.env, dep)
        deployer.drain(world.env, blue, progress=print)
        assert not deployer.observe(world.env).revision(blue).serving
        world.split(dep, (green, 10000))
        deployer.apply_traffic_split(world.env, dep)
        deployer.archive(world.env, blue)
        assert not deployer.observe(world.env).revision(blue).present
    finally:  # archive what is left; an env without the deployment lets GC remove its route and config map
        empty = attrs.evolve(world.env, bundles=(), traffic_splits=())
        for rid in touched:
            deployer.archive(empty, rid)
