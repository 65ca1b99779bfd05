"""A repeated verb succeeds, sends no write and changes no stored object (compared in the emulator)."""

from __future__ import annotations

import pytest


def prepare(verb, deployer, world):
    """Bring the world to the point where ``verb`` has just run once; return the second call."""
    dep = world.deployment(hosts=("shop.example.com",))
    r1, r2 = world.revision(dep), world.revision(dep)
    deployer.warm(world.env, r1)
    if verb == "stage":
        return lambda: deployer.stage(world.env, r2)
    if verb == "warm":
        return lambda: deployer.warm(world.env, r1)
    deployer.warm(world.env, r2)
    world.split(dep, (r1, 2500), (r2, 7500))
    if verb == "split":
        return lambda: deployer.apply_traffic_split(world.env, dep)
    deployer.apply_traffic_split(world.env, dep)
    world.split(dep, (r1, 10000), (r2, 0))
    deployer.apply_traffic_split(world.env, dep)
    if verb == "drain":
        return lambda: deployer.drain(world.env, r2)
    deployer.drain(world.env, r2)
    world.split(dep, (r1, 10000))
    deployer.apply_traffic_split(world.env, dep)
    return lambda: deployer.archive(world.env, r2)


@pytest.mark.parametrize("verb", ["stage", "warm", "split", "drain", "archive"])
def test_a_repeated_verb_changes_no_stored_object(verb, deployer, world, emulator):
    again = prepare(verb, deployer, world)
    again()  # the first call of the verb
    objects, versions = emulator.objects(), emulator.versions()
    observed = deployer.observe(world.env)
    emulator.clear_requests()
    again()
    assert not [r for r in emulator.requests() if r[0] in ("PATCH", "DELETE", "POST", "PUT")]
    assert emulator.objects() == objects
    assert emulator.versions() == versions
    assert deployer.observe(world.env) == observed


def test_warm_repairs_a_hand_edited_deployment(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    name = f"gt-{rid.lower()}"
    emulator.edit("apps/v1/deployments", ns, name, {"spec": {"replicas": 4}})
    outcome = deployer.warm(world.env, rid)
    assert outcome.detail["applied"] == ["Deployment"]
    assert emulator.objects()["deployments", ns, name]["spec"]["replicas"] == 1


def test_quantities_the_api_server_canonicalised_count_as_applied(registry, answers, world, emulator, ns):
    """Answers say 0.5 / 1.5Gi; the API server stores 500m / 1536Mi: a second warm writes nothing."""
    from k8s_world import KIND

    deployer = registry.bind(KIND, {**answers, "resources": {"requests": {"cpu": 0.5, "memory": "1.5Gi"},
                                                             "limits": {"memory": "1.5Gi"}}})
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    name = f"gt-{rid.lower()}"
    container = emulator.objects()["deployments", ns, name]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "0.5", "memory": "1.5Gi"}, "limits": {"memory": "1.5Gi"}}
    canonical = {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"memory": "1536Mi"}}
    emulator.edit("apps/v1/deployments", ns, name,
                  {"spec": {"template": {"spec": {"containers": [{**container, "resources": canonical}]}}}})
    emulator.clear_requests()
    assert deployer.warm(world.env, rid).detail["applied"] == []
    assert not [r for r in emulator.requests() if r[0] in ("PATCH", "POST", "PUT")]
