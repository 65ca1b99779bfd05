"""drain (honours drain_seconds: waits for the route, then scales to zero) and archive (deletes, waits, GC)."""

from __future__ import annotations

import threading
import time

import pytest

from greentic_core import ProviderTimeout
from greentic_k8s import render

from test_k8s_ownership import VALID_DEPLOYMENT_SPEC


@pytest.fixture
def routed(deployer, world):
    """Deployment ``dep`` with r1 and r2 serving, the applied split r1 5000 / r2 5000."""
    dep = world.deployment()
    r1, r2 = world.revision(dep), world.revision(dep, drain_seconds=5)
    deployer.warm(world.env, r1)
    deployer.warm(world.env, r2)
    world.split(dep, (r1, 5000), (r2, 5000))
    deployer.apply_traffic_split(world.env, dep)
    return dep, r1, r2


def test_drain_scales_the_deployment_to_zero_once_the_route_has_no_weight_for_it(deployer, world, emulator, ns,
                                                                                 routed):
    dep, r1, r2 = routed
    world.split(dep, (r1, 10000), (r2, 0))
    deployer.apply_traffic_split(world.env, dep)
    outcome = deployer.drain(world.env, r2)
    assert outcome.detail["stopped"] == "scaled-to-zero" and outcome.detail["terminating_replicas"] == 0
    assert emulator.objects()["deployments", ns, f"gt-{r2.lower()}"]["spec"]["replicas"] == 0
    seen = deployer.observe(world.env).revision(r2)
    assert seen.present and not seen.serving and seen.desired_replicas == 0
    assert deployer.observe(world.env).revision(r1).serving


def test_drain_waits_for_the_route_change_to_take_effect(deployer, world, routed):
    dep, r1, r2 = routed
    world.split(dep, (r1, 10000), (r2, 0))  # recorded; the cluster still sends r2 half the traffic
    env = world.env
    applier = threading.Timer(0.4, lambda: deployer.apply_traffic_split(env, dep))
    messages = []
    started = time.monotonic()
    applier.start()
    try:
        outcome = deployer.drain(env, r2, progress=messages.append)
    finally:
        applier.join()
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5
    assert outcome.detail["weight_bps_at_start"] == 5000 and outcome.detail["route_wait_seconds"] >= 0.4
    assert any("5000 bps" in message for message in messages)
    assert not deployer.observe(env).revision(r2).serving


def test_drain_gives_up_after_drain_seconds_while_the_route_still_sends_traffic(deployer, world, emulator, ns,
                                                                               routed):
    dep, r1, r2 = routed
    world.split(dep, (r1, 10000), (r2, 0))  # never applied
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="still gives it 5000 bps") as caught:
        deployer.drain(world.env, r2, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert "traffic set" in caught.value.hint
    assert emulator.objects()["deployments", ns, f"gt-{r2.lower()}"]["spec"]["replicas"] == 1  # untouched
    assert deployer.observe(world.env).revision(r2).serving


def test_drain_waits_until_the_gateway_accepted_the_new_route(deployer, world, emulator, routed):
    dep, r1, r2 = routed
    world.split(dep, (r1, 10000), (r2, 0))
    emulator.configure(gateway_controller="reject")
    with pytest.raises(ProviderTimeout):  # apply itself waits for acceptance
        deployer.apply_traffic_split(world.env, dep, timeout=0.2)
    with pytest.raises(ProviderTimeout, match="does not accept the route"):
        deployer.drain(world.env, r2, timeout=0.3)
    emulator.configure(gateway_controller="accept")
    deployer.apply_traffic_split(world.env, dep)
    assert deployer.drain(world.env, r2).detail["stopped"] == "scaled-to-zero"


def test_drain_of_a_revision_that_never_ran_succeeds(deployer, world, emulator):
    dep = world.deployment()
    rid = world.revision(dep)
    assert deployer.drain(world.env, rid).detail["stopped"] == "not-present"
    assert not [r for r in emulator.requests() if r[0] != "GET"]


def test_archive_deletes_the_revision_objects_and_waits_until_they_are_gone(deployer, world, emulator, ns, routed):
    dep, r1, r2 = routed
    world.split(dep, (r1, 10000), (r2, 0))
    deployer.apply_traffic_split(world.env, dep)
    deployer.drain(world.env, r2)
    world.split(dep, (r1, 10000))
    deployer.apply_traffic_split(world.env, dep)
    outcome = deployer.archive(world.env, r2)
    assert outcome.detail["deleted"] == ["Deployment", "Service"] and outcome.detail["garbage_collected"] == []
    stored = emulator.objects()
    assert ("deployments", ns, f"gt-{r2.lower()}") not in stored and ("services", ns, f"gt-{r2.lower()}") not in stored
    assert ("deployments", ns, f"gt-{r1.lower()}") in stored  # the other revision is untouched
    assert not deployer.observe(world.env).revision(r2).present


def test_archive_of_a_revision_never_warmed_deletes_nothing(deployer, world, emulator):
    dep = world.deployment()
    rid = world.revision(dep, ready=False)
    assert deployer.archive(world.env, rid).detail["deleted"] == []
    assert not [r for r in emulator.requests() if r[0] in ("DELETE", "PATCH")]


def test_archive_collects_this_environments_orphans_and_nothing_else(deployer, world, emulator, ns, answers):
    dep = world.deployment()
    keep, gone, target = world.revision(dep), world.revision(dep), world.revision(dep)
    for rid in (keep, gone, target):
        deployer.warm(world.env, rid)
    world.archived(gone)  # recorded archived, but its objects were left behind (e.g. --record-only)
    # An old deployment's route and config map, labelled with this environment but no longer in it.
    stale = "01JX3K8M2N4P6Q8R0S2T4V6W8X"
    labels = {**render.env_labels("shop"), render.DEPLOYMENT_LABEL: stale}
    emulator.put("gateway.networking.k8s.io/v1/httproutes", ns, f"gt-{stale.lower()}",
                 {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                  "metadata": {"name": f"gt-{stale.lower()}", "namespace": ns, "labels": labels}, "spec": {}})
    emulator.put("v1/configmaps", ns, f"gt-{stale.lower()}-runtime-config",
                 {"apiVersion": "v1", "kind": "ConfigMap", "data": {},
                  "metadata": {"name": f"gt-{stale.lower()}-runtime-config", "namespace": ns, "labels": labels}})
    # Objects that are not this environment's: never deleted.
    foreign = {
        "legacy-web": {},
        "blog-web": {**render.env_labels("blog"), render.REVISION_LABEL: "01JX3N5P7Q9R1S3T5V7W9X1Y3Z"},
        "half-labelled": {render.ENV_LABEL: "shop", render.REVISION_LABEL: "01JX3N5P7Q9R1S3T5V7W9X1Y3Z"},
    }
    for name, foreign_labels in foreign.items():
        emulator.put("apps/v1/deployments", ns, name, {"apiVersion": "apps/v1", "kind": "Deployment",
                                                       "metadata": {"name": name, "namespace": ns,
                                                                    "labels": foreign_labels},
                                                       "spec": VALID_DEPLOYMENT_SPEC})
    outcome = deployer.archive(world.env, target)
    assert sorted(outcome.detail["garbage_collected"]) == sorted([
        f"Deployment gt-{gone.lower()}", f"Service gt-{gone.lower()}", f"HTTPRoute gt-{stale.lower()}",
        f"ConfigMap gt-{stale.lower()}-runtime-config"])
    stored = emulator.objects()
    assert ("deployments", ns, f"gt-{keep.lower()}") in stored and ("services", ns, f"gt-{keep.lower()}") in stored
    for name in foreign:
        assert ("deployments", ns, name) in stored
    assert not [key for key in stored if gone.lower() in key[2] or target.lower() in key[2]]


def test_drain_waits_for_terminating_pods(deployer, world, emulator, ns, routed):
    """status.replicas / readyReplicas leave terminating pods out; drain must also wait for terminatingReplicas."""
    dep, r1, r2 = routed
    world.split(dep, (r1, 10000), (r2, 0))
    deployer.apply_traffic_split(world.env, dep)
    emulator.configure(terminating_seconds=0.6)
    messages = []
    started = time.monotonic()
    outcome = deployer.drain(world.env, r2, progress=messages.append)
    assert time.monotonic() - started >= 0.6
    assert outcome.detail["terminating_replicas"] == 0
    assert any("1 pod(s) terminating" in m for m in messages)
