"""apply_traffic_split: one HTTPRoute and one ConfigMap per deployment, exact basis-point weights."""

from __future__ import annotations

import json
import re

import pytest

from greentic_core import InvalidRoute, ProviderError, ProviderTimeout
from greentic_core.codec import unstructure
from greentic_core.projection import materialize_runtime_config
from greentic_k8s import render
from greentic_k8s.answers import Answers


@pytest.fixture
def two_deployments(deployer, world):
    a = world.deployment("shop", hosts=("shop.example.com",), prefixes=("/",))
    b = world.deployment("blog", hosts=("blog.example.com",))
    a1, a2, b1, b2 = world.revision(a), world.revision(a), world.revision(b), world.revision(b)
    for rid in (a1, a2, b1, b2):
        deployer.warm(world.env, rid)
    world.split(a, (a1, 3333), (a2, 6667))
    world.split(b, (b1, 10000), (b2, 0))
    return a, b, a1, a2, b1, b2


def test_split_writes_the_route_and_config_map_with_exact_weights(deployer, world, emulator, ns, two_deployments):
    a, _, a1, a2, _, _ = two_deployments
    outcome = deployer.apply_traffic_split(world.env, a)
    assert outcome.applied_deployment_id == a
    assert outcome.applied_entries == world.env.split_for(a).entries
    assert outcome.provider_weights == {a1: 3333, a2: 6667} and outcome.max_deviation_bps == 0
    stored = emulator.objects()
    route = stored["httproutes", ns, f"gt-{a.lower()}"]
    assert route["metadata"]["labels"]["greentic.ai/deployment"] == a
    assert route["spec"]["hostnames"] == ["shop.example.com"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "sandbox-gateway", "namespace": "greentic-gateways"}]
    assert [(ref["name"], ref["weight"]) for ref in route["spec"]["rules"][0]["backendRefs"]] == [
        (f"gt-{a1.lower()}", 3333), (f"gt-{a2.lower()}", 6667)]
    config = json.loads(stored["configmaps", ns, f"gt-{a.lower()}-runtime-config"]["data"]["runtime-config.json"])
    core = unstructure(materialize_runtime_config(world.env))
    assert config["revisions"] == [block for block in core["revisions"] if block["deployment_id"] == a]
    assert deployer.observe(world.env).weights(a) == {a1: 3333, a2: 6667}


def test_applying_one_deployment_never_writes_the_others_route(deployer, world, emulator, ns, two_deployments):
    a, b, a1, a2, b1, b2 = two_deployments
    deployer.apply_traffic_split(world.env, b)
    world.split(b, (b1, 5000), (b2, 5000))  # recorded, not applied
    versions = emulator.versions()
    emulator.clear_requests()
    deployer.apply_traffic_split(world.env, a)
    assert not [request for request in emulator.requests() if b.lower() in request[1]]  # B not even read
    after = emulator.versions()
    for key in (("httproutes", ns, f"gt-{b.lower()}"), ("configmaps", ns, f"gt-{b.lower()}-runtime-config")):
        assert after[key] == versions[key]
    assert deployer.observe(world.env).weights(b) == {b1: 10000, b2: 0}  # still the applied split


def test_weight_for_a_revision_that_does_not_serve_is_refused(deployer, world, emulator):
    dep = world.deployment()
    r1, r2 = world.revision(dep), world.revision(dep)
    deployer.warm(world.env, r1)
    world.split(dep, (r1, 5000), (r2, 5000))
    with pytest.raises(ProviderError, match=f"revision {r2} would get 5000 bps but it has no Deployment") as caught:
        deployer.apply_traffic_split(world.env, dep)
    assert "warm it first" in caught.value.hint
    assert not [key for key in emulator.objects() if key[0] in ("httproutes", "configmaps")]


def test_zero_weight_entries_need_no_running_revision(deployer, world):
    dep = world.deployment()
    r1, r2 = world.revision(dep), world.revision(dep)
    deployer.warm(world.env, r1)
    world.split(dep, (r1, 10000), (r2, 0))
    assert deployer.apply_traffic_split(world.env, dep).provider_weights == {r1: 10000, r2: 0}


def test_split_waits_for_the_gateway_and_times_out_when_it_refuses(deployer, world, emulator, ns):
    emulator.configure(gateway_controller="reject")
    dep = world.deployment()
    r1 = world.revision(dep)
    deployer.warm(world.env, r1)
    world.split(dep, (r1, 10000))
    with pytest.raises(ProviderTimeout, match="not accepted by Gateway greentic-gateways/sandbox-gateway") as caught:
        deployer.apply_traffic_split(world.env, dep, timeout=0.3)
    assert "refuses this route" in str(caught.value)


def test_split_without_the_gateway_api_crds_says_so(deployer, world, emulator):
    dep = world.deployment()
    r1 = world.revision(dep)
    deployer.warm(world.env, r1)
    world.split(dep, (r1, 10000))

    def drop_routes():
        del emulator.emulator.resources["gateway.networking.k8s.io/v1/httproutes"]

    emulator._in_loop(drop_routes)
    with pytest.raises(ProviderError, match="answered 404") as caught:
        deployer.apply_traffic_split(world.env, dep)
    assert "Gateway API CRDs" in caught.value.hint


def test_observe_reports_weights_and_route_generation(deployer, world):
    dep = world.deployment()
    r1, r2 = world.revision(dep), world.revision(dep)
    deployer.warm(world.env, r1)
    deployer.warm(world.env, r2)
    world.split(dep, (r1, 10000), (r2, 0))
    deployer.apply_traffic_split(world.env, dep)
    world.split(dep, (r1, 1), (r2, 9999))
    deployer.apply_traffic_split(world.env, dep)
    seen = deployer.observe(world.env).deployments[dep]
    assert dict(seen.weights) == {r1: 1, r2: 9999}
    assert seen.generation == 2


def test_a_route_no_gateway_reports_on_is_not_success(deployer, world, emulator, ns):
    """An empty status.parents means attached to no Gateway: the change times out with a clear error."""
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    world.split(dep, (rid, 10000))
    emulator.configure(gateway_controller="off")
    with pytest.raises(ProviderTimeout, match="status.parents is empty") as caught:
        deployer.apply_traffic_split(world.env, dep, timeout=0.3)
    assert "kubectl describe httproute" in caught.value.hint
    emulator.configure(gateway_controller="accept")
    assert deployer.apply_traffic_split(world.env, dep).provider_weights == {rid: 10000}


@pytest.mark.parametrize("hosts, prefixes, fragment", [
    (("Shop.Example.com",), (), "upper-case"),
    (("shop.example.com:8443",), (), "has a port"),
    (("shop.example.com.",), (), "ends with a dot"),
    (("192.168.0.1",), (), "IP address"),
    (tuple(f"h{i}.example.com" for i in range(17)), (), "at most 16 host"),
    ((), ("/a//b",), "'//'"),
    ((), ("/a/../b",), "'..' segment"),
    ((), ("/a%2Fb",), "encoded slash"),
    ((), ("/a#b",), "'#'"),
    ((), ("/a/..",), "'..' segment"),
    ((), ("/a b",), "contains ' '"),
    ((), tuple(f"/p{i}" for i in range(65)), "at most 64"),
])
def test_routes_the_httproute_crd_refuses_are_refused_before_any_request(deployer, world, emulator, hosts,
                                                                          prefixes, fragment):
    dep = world.deployment(hosts=hosts, prefixes=prefixes)
    rid = world.revision(dep)
    world.split(dep, (rid, 10000))
    emulator.clear_requests()
    with pytest.raises(InvalidRoute, match=re.escape(fragment)):
        deployer.apply_traffic_split(world.env, dep)
    with pytest.raises(InvalidRoute):  # the pure translation refuses too (render, direct callers)
        render.route_manifest(world.env, dep, Answers.parse({"gateway_name": "gw"}))
    assert emulator.requests() == []  # nothing reached the API server: no ConfigMap written, no half-apply
