"""Ownership: an object without this environment's labels (or with another's) is never modified,
deleted or adopted; the error names Kind namespace/name."""

from __future__ import annotations

import pytest

from greentic_core import ProviderError
from greentic_k8s import render

RESOURCES = {"Deployment": "apps/v1/deployments", "Service": "v1/services",
             "HTTPRoute": "gateway.networking.k8s.io/v1/httproutes", "ConfigMap": "v1/configmaps"}
#: As an API server would store it (it validates objects, so every Deployment has these fields).
VALID_DEPLOYMENT_SPEC = {"replicas": 1, "selector": {"matchLabels": {"app": "legacy"}},
                         "template": {"metadata": {"labels": {"app": "legacy"}},
                                      "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}
LABELS = {
    "unlabelled": ({"app": "legacy"}, "exists but is not managed by greentic-deployer"),
    "other-env": ({**render.env_labels("blog")}, "belongs to greentic environment 'blog'"),
}


def squat(emulator, kind, ns, name, labels):
    """Someone else's object at the name the provider would use."""
    api = "apps/v1" if kind == "Deployment" else "gateway.networking.k8s.io/v1" if kind == "HTTPRoute" else "v1"
    spec = {"Deployment": VALID_DEPLOYMENT_SPEC, "Service": {"ports": [{"port": 80}]}}.get(kind, {})
    emulator.put(RESOURCES[kind], ns, name, {"apiVersion": api, "kind": kind,
                                             "metadata": {"name": name, "namespace": ns, "labels": labels},
                                             "spec": spec})


def stored(emulator):
    """The stored objects without what the stand-in controllers write on any Deployment (status and the
    resourceVersion that comes with it)."""
    def strip(obj):
        meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}

    return {key: strip(obj) for key, obj in emulator.objects().items()}


def no_writes(emulator):
    return not [r for r in emulator.requests() if r[0] in ("PATCH", "DELETE", "POST", "PUT")]


@pytest.mark.parametrize("owner", list(LABELS))
@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_warm_refuses_a_foreign_object_at_its_name_and_writes_nothing(deployer, world, emulator, ns, kind, owner):
    dep = world.deployment()
    rid = world.revision(dep)
    name = render.revision_object_name(rid)
    labels, reason = LABELS[owner]
    squat(emulator, kind, ns, name, labels)
    before = stored(emulator)
    with pytest.raises(ProviderError) as caught:
        deployer.warm(world.env, rid)
    assert f"refusing to modify {kind} {ns}/{name}: it {reason}" in str(caught.value)
    assert caught.value.details["object"] == f"{kind} {ns}/{name}"
    assert no_writes(emulator) and stored(emulator) == before


@pytest.mark.parametrize("kind", ["HTTPRoute", "ConfigMap"])
def test_a_split_refuses_a_foreign_route_or_config_map(deployer, world, emulator, ns, kind):
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    world.split(dep, (rid, 10000))
    name = render.route_name(dep) if kind == "HTTPRoute" else render.config_map_name(dep)
    squat(emulator, kind, ns, name, LABELS["unlabelled"][0])
    before = stored(emulator)
    emulator.clear_requests()
    with pytest.raises(ProviderError, match=f"refusing to modify {kind} {ns}/{name}"):
        deployer.apply_traffic_split(world.env, dep)
    assert no_writes(emulator) and stored(emulator) == before


@pytest.mark.parametrize("owner", list(LABELS))
def test_archive_refuses_to_delete_a_foreign_object_at_its_name(deployer, world, emulator, ns, owner):
    dep = world.deployment()
    rid = world.revision(dep)
    name = render.revision_object_name(rid)
    squat(emulator, "Deployment", ns, name, LABELS[owner][0])
    with pytest.raises(ProviderError, match=f"refusing to delete Deployment {ns}/{name}"):
        deployer.archive(world.env, rid)
    assert no_writes(emulator) and ("deployments", ns, name) in emulator.objects()


def test_drain_refuses_to_scale_a_foreign_deployment(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep)
    name = render.revision_object_name(rid)
    squat(emulator, "Deployment", ns, name, LABELS["other-env"][0])
    with pytest.raises(ProviderError, match=f"refusing to modify Deployment {ns}/{name}"):
        deployer.drain(world.env, rid)
    assert no_writes(emulator)


def test_observe_ignores_foreign_objects(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep)
    squat(emulator, "Deployment", ns, render.revision_object_name(rid), LABELS["other-env"][0])
    assert not deployer.observe(world.env).revision(rid).present
