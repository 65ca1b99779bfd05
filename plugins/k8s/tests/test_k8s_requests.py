"""The requests each verb sends, asserted exactly (method and path), fresh and repeated; and their
number does not grow with the number of other revisions in the environment."""

from __future__ import annotations

import pytest

from k8s_world import World

APPS = "/apis/apps/v1/namespaces/gt-shop"
CORE = "/api/v1/namespaces/gt-shop"
GATEWAY = "/apis/gateway.networking.k8s.io/v1/namespaces/gt-shop"


def run(emulator, call):
    emulator.clear_requests()
    call()
    return emulator.requests()


def test_each_verb_sends_exactly_these_requests(deployer, world, emulator):
    dep = world.deployment()
    r1, r2 = world.revision(dep), world.revision(dep)
    n1, n2, route, config = f"gt-{r1.lower()}", f"gt-{r2.lower()}", f"gt-{dep.lower()}", f"gt-{dep.lower()}-runtime-config"
    deployer.warm(world.env, r2)

    assert run(emulator, lambda: deployer.stage(world.env, r1)) == []
    assert run(emulator, lambda: deployer.warm(world.env, r1)) == [
        ("GET", f"{APPS}/deployments/{n1}"), ("GET", f"{CORE}/services/{n1}"),
        ("PATCH", f"{APPS}/deployments/{n1}"), ("PATCH", f"{CORE}/services/{n1}")]
    assert run(emulator, lambda: deployer.warm(world.env, r1)) == [
        ("GET", f"{APPS}/deployments/{n1}"), ("GET", f"{CORE}/services/{n1}")]

    world.split(dep, (r1, 5000), (r2, 5000))
    assert run(emulator, lambda: deployer.apply_traffic_split(world.env, dep)) == [
        ("GET", f"{APPS}/deployments"), ("GET", f"{GATEWAY}/httproutes/{route}"), ("GET", f"{CORE}/configmaps/{config}"),
        ("PATCH", f"{CORE}/configmaps/{config}"), ("PATCH", f"{GATEWAY}/httproutes/{route}")]
    assert run(emulator, lambda: deployer.apply_traffic_split(world.env, dep)) == [
        ("GET", f"{APPS}/deployments"), ("GET", f"{GATEWAY}/httproutes/{route}"), ("GET", f"{CORE}/configmaps/{config}")]

    assert run(emulator, lambda: deployer.observe(world.env)) == [
        ("GET", f"{APPS}/deployments"), ("GET", f"{GATEWAY}/httproutes")]

    world.split(dep, (r1, 10000), (r2, 0))
    deployer.apply_traffic_split(world.env, dep)
    assert run(emulator, lambda: deployer.drain(world.env, r2)) == [
        ("GET", f"{GATEWAY}/httproutes/{route}"), ("GET", f"{APPS}/deployments/{n2}"), ("PATCH", f"{APPS}/deployments/{n2}")]
    assert run(emulator, lambda: deployer.drain(world.env, r2)) == [
        ("GET", f"{GATEWAY}/httproutes/{route}"), ("GET", f"{APPS}/deployments/{n2}")]

    world.split(dep, (r1, 10000))
    deployer.apply_traffic_split(world.env, dep)
    lists = [("GET", f"{APPS}/deployments"), ("GET", f"{CORE}/services"), ("GET", f"{GATEWAY}/httproutes"),
             ("GET", f"{CORE}/configmaps")]
    assert run(emulator, lambda: deployer.archive(world.env, r2)) == lists + [
        ("DELETE", f"{APPS}/deployments/{n2}"), ("DELETE", f"{CORE}/services/{n2}"),
        ("GET", f"{APPS}/deployments/{n2}"), ("GET", f"{CORE}/services/{n2}")]
    assert run(emulator, lambda: deployer.archive(world.env, r2)) == lists + [
        ("GET", f"{APPS}/deployments/{n2}"), ("GET", f"{CORE}/services/{n2}")]


def test_lists_select_this_environment_by_label(deployer, world, emulator):
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    emulator.clear_requests()
    deployer.observe(world.env)
    for request in emulator.request_log():
        assert request.params["labelSelector"] == "app.kubernetes.io/managed-by=greentic-deployer,greentic.ai/env=shop"


def counts(deployer, emulator, world, dep, target, other):
    """Requests of each verb for ``target`` in a world where ``other`` serves next to it."""
    result = {}
    result["stage"] = len(run(emulator, lambda: deployer.stage(world.env, target)))
    result["warm"] = len(run(emulator, lambda: deployer.warm(world.env, target)))
    result["warm again"] = len(run(emulator, lambda: deployer.warm(world.env, target)))
    world.split(dep, (other, 5000), (target, 5000))
    result["split"] = len(run(emulator, lambda: deployer.apply_traffic_split(world.env, dep)))
    result["observe"] = len(run(emulator, lambda: deployer.observe(world.env)))
    world.split(dep, (other, 10000), (target, 0))
    deployer.apply_traffic_split(world.env, dep)
    result["drain"] = len(run(emulator, lambda: deployer.drain(world.env, target)))
    world.split(dep, (other, 10000))
    deployer.apply_traffic_split(world.env, dep)
    result["archive"] = len(run(emulator, lambda: deployer.archive(world.env, target)))
    return result


@pytest.mark.parametrize("others", [1, 25])
def test_request_counts_do_not_grow_with_other_revisions(deployer, emulator, others):
    world = World("shop")
    dep = world.deployment()
    crowd = world.deployment("crowd")
    other = world.revision(dep)
    deployer.warm(world.env, other)
    for _ in range(others):  # revisions of another deployment, all running
        rid = world.revision(crowd)
        deployer.warm(world.env, rid)
    target = world.revision(dep)
    assert counts(deployer, emulator, world, dep, target, other) == {
        "stage": 0, "warm": 4, "warm again": 2, "split": 5, "observe": 2, "drain": 3, "archive": 8}
