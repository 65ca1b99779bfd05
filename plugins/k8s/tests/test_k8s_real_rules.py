"""The real-rules layer: what the provider would send, checked against the official machine-readable rules.

* HTTPRoutes against the Gateway API v1.6.1 HTTPRoute CRD (vendored in ``data/gateway-api/``):
  its OpenAPI v3 schema after defaulting, and every ``x-kubernetes-validations`` CEL rule,
  evaluated with cel-python, as an API server does on create;
* Deployments, Services and ConfigMaps with kubernetes-validate in strict mode;
* generated inputs (hypothesis, derandomized in CI by the root conftest): host names, path
  prefixes, environment and bundle ids, splits. Whatever the provider renders, the API server
  would accept; whatever the server would refuse among route values, the provider refuses
  first, with ``InvalidRoute``, before any request.
"""

from __future__ import annotations

import kubernetes_validate  # the k8s [test] extra, as cel-python: a missing one fails, never skips
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from greentic_core import InvalidRoute
from greentic_k8s import render
from greentic_k8s.answers import Answers

from crd_rules import CrdValidator, load_schema
from k8s_world import World

ANSWERS = Answers.parse({"gateway_name": "public", "gateway_namespace": "edge", "gateway_section": "https",
                         "resources": {"requests": {"cpu": 0.5, "memory": "1.5Gi"}, "limits": {"memory": "2Gi"}}})
K8S_VERSION = kubernetes_validate.utils.latest_version()


@pytest.fixture(scope="module")
def crd() -> CrdValidator:
    return CrdValidator(load_schema())


def _world(env_id="shop", bundle="shop", hosts=(), prefixes=(), weights=(10000,)) -> tuple[World, str]:
    world = World(env_id)
    dep = world.deployment(bundle, hosts=tuple(hosts), prefixes=tuple(prefixes))
    revisions = [world.revision(dep) for _ in weights]
    world.split(dep, *zip(revisions, weights))
    return world, dep


def test_a_realistic_route_passes_the_schema_and_every_cel_rule(crd):
    world, dep = _world(hosts=("shop.example.com", "*.shop.example.com"), prefixes=("/api", "/v1/items"),
                        weights=(1234, 8766))
    route = render.route_manifest(world.env, dep, ANSWERS)
    assert crd.problems(route) == []
    assert crd.rule_count(route) >= 15  # the CEL rules were really evaluated, not skipped


def test_the_validator_catches_what_the_crd_refuses(crd):
    world, dep = _world()
    route = render.route_manifest(world.env, dep, ANSWERS)
    route["spec"]["hostnames"] = ["Shop.Example.com"]
    route["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/a/../b"}}]
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1_000_001
    problems = crd.problems(route)
    assert any("hostnames" in p for p in problems) and any("'/../'" in p for p in problems)
    assert any("weight" in p for p in problems)


HOSTILE = [
    ({"hosts": ["Shop.example.com"]}, "upper-case"),
    ({"hosts": ["shop.example.com:8080"]}, "port"),
    ({"hosts": ["shop.example.com."]}, "trailing dot"),
    ({"hosts": [f"h{i}.example.com" for i in range(17)]}, "at most 16"),
    ({"prefixes": ["/a//b"]}, "'//'"),
    ({"prefixes": ["/a/./b"]}, "segment"),
    ({"prefixes": ["/a/../b"]}, "segment"),
    ({"prefixes": ["/a%2fb"]}, "encoded slash"),
    ({"prefixes": ["/a#b"]}, "'#'"),
    ({"prefixes": ["/a/.."]}, "segment"),
    ({"prefixes": ["/a/."]}, "segment"),
    ({"prefixes": ["/a b"]}, "contains"),
    ({"prefixes": ["/" + "a" * 1024]}, "1024"),
    ({"prefixes": [f"/p{i}" for i in range(65)]}, "at most 64"),
]


#: Refused by the provider though the CRD's pattern lets them through: IP addresses (the CRD's
#: description forbids them, its pattern does not) and labels over 63 characters (RFC 1123).
STRICTER_THAN_THE_CRD = [["192.168.0.1"], ["a" * 64 + ".example.com"]]


@pytest.mark.parametrize("hosts", STRICTER_THAN_THE_CRD)
def test_the_provider_is_stricter_than_the_crd_pattern_where_rfc_1123_is(crd, hosts):
    world, dep = _world(hosts=hosts)
    with pytest.raises(InvalidRoute):
        render.route_manifest(world.env, dep, ANSWERS)
    assert crd.problems(_unchecked_route(world, dep)) == []


@pytest.mark.parametrize("routes, fragment", HOSTILE)
def test_every_value_the_crd_refuses_is_refused_by_the_provider_first(crd, routes, fragment):
    world, dep = _world(hosts=routes.get("hosts", ()), prefixes=routes.get("prefixes", ()))
    with pytest.raises(InvalidRoute, match=fragment):
        render.route_manifest(world.env, dep, ANSWERS)
    # and the API server would indeed refuse it (the rule is real, not ours alone)
    unchecked = _unchecked_route(world, dep)
    assert crd.problems(unchecked), routes


def _unchecked_route(world: World, dep: str) -> dict:
    """The HTTPRoute the provider would render with its route checks switched off."""
    original = render.check_routes
    render.check_routes = lambda env, deployment_id: None
    try:
        return render.route_manifest(world.env, dep, ANSWERS)
    finally:
        render.check_routes = original


# --------------------------------------------------------------------------- generated inputs

_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z")
_DNS = st.builds(lambda labels, wild: ("*." if wild else "") + ".".join(labels),
                 st.lists(_LABEL, min_size=1, max_size=4), st.booleans())
_HOSTS = st.one_of(_DNS, st.text(alphabet="abXZ09-.*:_ /", min_size=0, max_size=16))
_PATHS = st.one_of(
    st.builds(lambda parts: "/" + "/".join(parts), st.lists(st.from_regex(r"\A[a-z0-9._~-]{1,6}\Z"), max_size=4)),
    st.text(alphabet="/ab.%2fF#?~-_ :\u00e9", min_size=0, max_size=14))
_WEIGHTS = st.integers(min_value=1, max_value=16).flatmap(
    lambda n: st.lists(st.integers(0, 10000), min_size=n, max_size=n).map(
        lambda raw: [w * 10000 // max(sum(raw), 1) for w in raw]).map(
        lambda ws: [*ws[:-1], 10000 - sum(ws[:-1])]))
_IDS = st.text(alphabet="abcXYZ019-_.", min_size=1, max_size=80)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts=st.lists(_HOSTS, max_size=18), prefixes=st.lists(_PATHS, max_size=3), weights=_WEIGHTS)
def test_generated_routes_are_refused_by_the_provider_or_accepted_by_the_api_server(crd, hosts, prefixes, weights):
    world, dep = _world(hosts=hosts, prefixes=prefixes, weights=weights)
    try:
        route = render.route_manifest(world.env, dep, ANSWERS)
    except InvalidRoute:
        return  # refused before any request: fine whatever the server would say
    assert crd.problems(route) == [], (hosts, prefixes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env_id=_IDS, bundle=_IDS)
def test_generated_env_and_bundle_ids_give_objects_the_api_server_accepts(crd, env_id, bundle):
    assume(bundle.strip() and env_id.strip())
    try:
        world, dep = _world(env_id=env_id, bundle=bundle, weights=(4000, 6000))
    except Exception:  # the core refuses the id itself (a SpecError): nothing to render
        return
    manifests = render.render_environment(world.env, ANSWERS)
    assert {m["kind"] for m in manifests} == {"Deployment", "Service", "ConfigMap", "HTTPRoute"}
    for manifest in manifests:
        if manifest["kind"] == "HTTPRoute":
            assert crd.problems(manifest) == []
        else:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------- the emulator enforces them too


def _apply(url: str, path: str, body: dict) -> int:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url}{path}?fieldManager=test", data=json.dumps(body).encode(), method="PATCH",
                                     headers={"Content-Type": "application/apply-patch+yaml"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_emulator_answers_422_for_what_a_real_api_server_refuses(emulator, ns, server_rules):
    """Every k8s test runs its emulator with these rules, so a provider write they refuse fails the test."""
    world, dep = _world(hosts=("shop.example.com",))
    route = _unchecked_route(world, dep)
    route["metadata"]["namespace"] = ns
    path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{route['metadata']['name']}"
    route["spec"]["hostnames"] = ["Shop.Example.com"]
    assert _apply(emulator.url, path, route) == 422
    route["spec"]["hostnames"] = ["shop.example.com"]
    assert _apply(emulator.url, path, route) in (200, 201)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": ns},
                  "spec": {"replicas": "three"}}
    assert _apply(emulator.url, f"/apis/apps/v1/namespaces/{ns}/deployments/x", deployment) == 422
    assert len(server_rules.refused) == 2
    server_rules.refused.clear()  # refused on purpose here
