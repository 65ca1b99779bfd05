"""Pure rendering: environment + answers -> manifests. No emulator, no client."""

from __future__ import annotations

import json
import re

import pytest

from greentic_core import ProviderError
from greentic_core.codec import unstructure
from greentic_core.projection import materialize_runtime_config
from greentic_k8s import render
from greentic_k8s.answers import Answers

from k8s_world import IMAGE, World

ANSWERS = Answers.parse({"gateway_name": "public", "gateway_namespace": "edge"})
DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.fixture
def shop():
    world = World("shop")
    dep = world.deployment("shop", hosts=("shop.example.com", "www.shop.example.com"), prefixes=("/api", "/app"))
    r1 = world.revision(dep, drain_seconds=30, port=9000, health_path="/ready", env={"MODE": "blue"}, replicas=2)
    r2 = world.revision(dep)
    world.split(dep, (r1, 3333), (r2, 6667))
    return world, dep, r1, r2


def container(manifest):
    return manifest["spec"]["template"]["spec"]["containers"][0]


# --------------------------------------------------------------------------- names and labels


def test_names_are_deterministic_dns1123_and_derived_from_ids(shop):
    world, dep, r1, _ = shop
    revision = world.env.revision(r1)
    deployment = render.deployment_manifest(world.env, revision, ANSWERS)
    assert deployment["metadata"]["name"] == f"gt-{r1.lower()}" == render.revision_object_name(r1)
    assert render.route_manifest(world.env, dep, ANSWERS)["metadata"]["name"] == f"gt-{dep.lower()}"
    assert render.config_map_manifest(world.env, dep, ANSWERS)["metadata"]["name"] == f"gt-{dep.lower()}-runtime-config"
    for manifest in render.render_environment(world.env, ANSWERS):
        assert DNS1123.fullmatch(manifest["metadata"]["name"]) and len(manifest["metadata"]["name"]) <= 63
        assert manifest["metadata"]["namespace"] == "gt-shop"
    assert render.revision_id_of(render.revision_object_name(r1)) == r1


def test_every_object_carries_the_ownership_labels(shop):
    world, dep, r1, _ = shop
    for manifest in render.render_environment(world.env, ANSWERS):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "greentic-deployer"
        assert labels["greentic.ai/env"] == "shop"
        assert labels["greentic.ai/deployment"] == dep
        assert labels["greentic.ai/bundle"] == "shop"
    deployment = render.deployment_manifest(world.env, world.env.revision(r1), ANSWERS)
    assert deployment["metadata"]["labels"]["greentic.ai/revision"] == r1
    assert deployment["spec"]["template"]["metadata"]["labels"] == deployment["metadata"]["labels"]


@pytest.mark.parametrize("raw", ["shop", "a.b_c-d", "x" * 63])
def test_valid_label_values_are_kept(raw):
    assert render.label_value(raw) == raw


@pytest.mark.parametrize("raw", ["-bad", "bad-", "with space", "x" * 64, "ünïcode", ""])
def test_invalid_label_values_become_valid_and_distinct(raw):
    value = render.label_value(raw)
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value) and len(value) <= 63
    if raw:
        assert value != raw and value != render.label_value(raw + "!")


def test_a_sanitised_env_label_keeps_the_real_id_in_an_annotation():
    world = World("-odd.env-")
    dep = world.deployment("b")
    rid = world.revision(dep)
    manifest = render.deployment_manifest(world.env, world.env.revision(rid), ANSWERS)
    assert manifest["metadata"]["labels"]["greentic.ai/env"] != "-odd.env-"
    assert manifest["metadata"]["annotations"]["greentic.ai/env-id"] == "-odd.env-"


# --------------------------------------------------------------------------- Deployment


def test_deployment_runs_the_workload_with_a_readiness_probe_and_drain_grace(shop):
    world, dep, r1, _ = shop
    manifest = render.deployment_manifest(world.env, world.env.revision(r1), ANSWERS)
    spec = manifest["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == {"greentic.ai/env": "shop", "greentic.ai/revision": r1}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30 + 10  # drain_seconds + slack
    app = container(manifest)
    assert app["image"] == IMAGE
    assert app["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert app["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    variables = {e["name"]: e["value"] for e in app["env"]}
    assert variables["MODE"] == "blue"
    assert variables["GREENTIC_REVISION_ID"] == r1
    assert variables["GREENTIC_DEPLOYMENT_ID"] == dep
    assert variables["GREENTIC_ENV_ID"] == "shop"
    assert variables["PORT"] == "9000"
    assert app["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def test_pods_run_with_the_restricted_security_profile(shop):
    world, _, r1, _ = shop
    manifest = render.deployment_manifest(world.env, world.env.revision(r1), ANSWERS)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    assert container(manifest)["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container(manifest)["volumeMounts"]  # writable /tmp only


def test_answers_set_replicas_user_resources_and_slack(shop):
    world, _, r1, _ = shop
    answers = Answers.parse({"gateway_name": "gw", "replicas": 5, "run_as_user": 10001, "termination_slack_seconds": 3,
                             "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}})
    manifest = render.deployment_manifest(world.env, world.env.revision(r1), answers)
    assert manifest["spec"]["replicas"] == 5
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsGroup"] == 10001
    assert pod["terminationGracePeriodSeconds"] == 33
    assert container(manifest)["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}


def test_the_drained_form_has_zero_replicas_and_another_hash(shop):
    world, _, r1, _ = shop
    revision = world.env.revision(r1)
    running = render.deployment_manifest(world.env, revision, ANSWERS)
    drained = render.deployment_manifest(world.env, revision, ANSWERS, replicas=0)
    assert drained["spec"]["replicas"] == 0
    hash_of = lambda m: m["metadata"]["annotations"]["greentic.ai/applied-hash"]  # noqa: E731
    assert hash_of(running) != hash_of(drained)


def test_the_default_image_applies_when_the_workload_names_none():
    world = World("shop")
    dep = world.deployment()
    rid = world.revision(dep, image=None)
    with pytest.raises(ProviderError, match="no image"):
        render.deployment_manifest(world.env, world.env.revision(rid), ANSWERS)
    answers = Answers.parse({"gateway_name": "gw", "default_image": "ghcr.io/acme/app@sha256:" + "a" * 64})
    assert container(render.deployment_manifest(world.env, world.env.revision(rid), answers))["image"].startswith("ghcr.io")


@pytest.mark.parametrize("image", [
    "nginx", "nginx:1.27", "library/nginx:latest", "registry.example.com:5000/team/app:v1.2.3",
    "ghcr.io/acme/app@sha256:" + "0" * 64, "localhost/app:dev", "a/b_c__d-e.f/g:TAG_1.0",
    "[::1]:5000/app:1",
])
def test_valid_image_references(image):
    assert render.image_problem(image) is None


@pytest.mark.parametrize("image", [
    "", " nginx", "Nginx", "nginx:", "nginx:-tag", "app@sha256:xyz", "http://registry/app", "app:1.0 extra",
    "a//b", "app:" + "t" * 129,
])
def test_invalid_image_references(image):
    assert render.image_problem(image) is not None


# --------------------------------------------------------------------------- Service


def test_service_selects_the_revision_pods_on_the_workload_port(shop):
    world, _, r1, _ = shop
    manifest = render.service_manifest(world.env, world.env.revision(r1), ANSWERS)
    assert manifest["spec"] == {
        "type": "ClusterIP",
        "selector": {"greentic.ai/env": "shop", "greentic.ai/revision": r1},
        "ports": [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}],
    }


# --------------------------------------------------------------------------- HTTPRoute


def test_route_attaches_to_the_gateway_with_hosts_prefixes_and_exact_weights(shop):
    world, dep, r1, r2 = shop
    route = render.route_manifest(world.env, dep, ANSWERS)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
                                   "namespace": "edge"}]
    assert spec["hostnames"] == ["shop.example.com", "www.shop.example.com"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}},
                               {"path": {"type": "PathPrefix", "value": "/app"}}]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": f"gt-{r1.lower()}", "port": 9000, "weight": 3333},
        {"group": "", "kind": "Service", "name": f"gt-{r2.lower()}", "port": 8080, "weight": 6667},
    ]


def test_route_without_binding_matches_everything_and_keeps_zero_weights():
    world = World("shop")
    dep = world.deployment()
    r1, r2 = world.revision(dep), world.revision(dep)
    world.split(dep, (r1, 10000), (r2, 0))
    spec = render.route_manifest(world.env, dep, Answers.parse({"gateway_name": "gw", "gateway_section": "https"}))["spec"]
    assert "hostnames" not in spec
    assert spec["parentRefs"][0]["sectionName"] == "https"
    assert spec["parentRefs"][0]["namespace"] == "gt-shop"
    assert spec["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert [ref["weight"] for ref in spec["rules"][0]["backendRefs"]] == [10000, 0]


def test_a_split_with_more_than_16_entries_is_refused_before_any_request():
    world = World("shop")
    dep = world.deployment()
    rids = [world.revision(dep) for _ in range(17)]
    world.split(dep, *[(rid, 10000 if i == 0 else 0) for i, rid in enumerate(rids)])
    with pytest.raises(ProviderError, match="at most 16 backendRefs"):
        render.route_manifest(world.env, dep, ANSWERS)


def test_route_weights_stay_within_the_gateway_api_range(shop):
    world, dep, _, _ = shop
    for ref in render.route_manifest(world.env, dep, ANSWERS)["spec"]["rules"][0]["backendRefs"]:
        assert isinstance(ref["weight"], int) and 0 <= ref["weight"] <= 1_000_000


# --------------------------------------------------------------------------- ConfigMap


def test_config_maps_concatenated_equal_the_core_projection():
    world = World("shop")
    a, b = world.deployment("shop"), world.deployment("blog")
    a1, a2, b1 = world.revision(a), world.revision(a), world.revision(b)
    world.split(a, (a1, 3333), (a2, 6667))
    world.split(b, (b1, 10000))
    blocks = []
    for split in world.env.traffic_splits:
        manifest = render.config_map_manifest(world.env, split.deployment_id, ANSWERS)
        document = json.loads(manifest["data"]["runtime-config.json"])
        assert document["schema"] == "greentic.runtime-config.v1" and document["env_id"] == "shop"
        assert {block["deployment_id"] for block in document["revisions"]} == {split.deployment_id}
        blocks += document["revisions"]
    assert blocks == unstructure(materialize_runtime_config(world.env))["revisions"]


# --------------------------------------------------------------------------- the whole environment


def test_render_lists_what_the_recorded_lifecycles_hold():
    world = World("shop")
    dep = world.deployment()
    running, drained, staged, archived = (world.revision(dep), world.revision(dep), world.revision(dep, ready=False),
                                          world.revision(dep))
    world.split(dep, (running, 10000))
    world.drained(drained)
    world.archived(archived)
    manifests = render.render_environment(world.env, ANSWERS)
    described = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert described == [
        ("Deployment", f"gt-{running.lower()}"), ("Service", f"gt-{running.lower()}"),
        ("Deployment", f"gt-{drained.lower()}"), ("Service", f"gt-{drained.lower()}"),
        ("ConfigMap", f"gt-{dep.lower()}-runtime-config"), ("HTTPRoute", f"gt-{dep.lower()}"),
    ]
    assert manifests[2]["spec"]["replicas"] == 0
    assert staged not in json.dumps(manifests[:4])


def test_render_is_deterministic_and_hashes_track_content(shop):
    world, dep, _, _ = shop
    first = render.render_environment(world.env, ANSWERS)
    assert first == render.render_environment(world.env, ANSWERS)
    assert json.dumps(first, sort_keys=True) == json.dumps(render.render_environment(world.env, ANSWERS), sort_keys=True)
    other = render.render_environment(world.env, Answers.parse({"gateway_name": "other"}))
    route_hash = lambda ms: [m for m in ms if m["kind"] == "HTTPRoute"][0]["metadata"]["annotations"]  # noqa: E731
    assert route_hash(first) != route_hash(other)
