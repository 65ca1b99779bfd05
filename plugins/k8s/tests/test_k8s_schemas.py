"""Rendered manifests validate against the official Kubernetes schemas (kubernetes-validate, strict mode:
an unknown field is an error). The Gateway API HTTPRoute has no schema there; its shape is checked
against the Gateway API rules the provider relies on."""

from __future__ import annotations

import pytest

from greentic_k8s import render
from greentic_k8s.answers import Answers

from k8s_world import World

kubernetes_validate = pytest.importorskip("kubernetes_validate")

#: A fixed Kubernetes version the package ships schemas for (1.33 is the oldest minor still in upstream
#: support when this was written), plus the newest it has.
VERSIONS = ["1.33.0", kubernetes_validate.utils.latest_version()]


@pytest.fixture(scope="module")
def manifests():
    world = World("shop")
    dep = world.deployment("shop", hosts=("shop.example.com",), prefixes=("/api",))
    r1 = world.revision(dep, drain_seconds=45, env={"FEATURE": "on"}, replicas=3, working_dir="/srv")
    r2 = world.revision(dep)
    world.split(dep, (r1, 1234), (r2, 8766))
    answers = Answers.parse({"gateway_name": "public", "gateway_namespace": "edge", "run_as_user": 10001,
                             "resources": {"requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
                                           "limits": {"cpu": 1, "memory": "1Gi"}}})
    drained = render.deployment_manifest(world.env, world.env.revision(r2), answers, replicas=0)
    return render.render_environment(world.env, answers) + [drained]


@pytest.mark.parametrize("version", VERSIONS)
def test_core_and_apps_objects_validate_strictly(manifests, version):
    validated = 0
    for manifest in manifests:
        if manifest["kind"] == "HTTPRoute":
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        validated += 1
    assert validated == 6  # 3 Deployments, 2 Services, 1 ConfigMap


def test_an_invalid_manifest_is_caught_by_the_validator(manifests):
    broken = [m for m in manifests if m["kind"] == "Deployment"][0]
    broken = {**broken, "spec": {**broken["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_httproute_follows_the_gateway_api_rules(manifests):
    (route,) = [m for m in manifests if m["kind"] == "HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert set(spec) <= {"parentRefs", "hostnames", "rules"}
    assert 1 <= len(spec["parentRefs"]) <= 32
    for parent in spec["parentRefs"]:
        assert set(parent) <= {"group", "kind", "namespace", "name", "sectionName", "port"}
    assert len(spec["rules"]) <= 16
    for rule in spec["rules"]:
        assert set(rule) <= {"name", "matches", "filters", "backendRefs", "timeouts", "sessionPersistence"}
        assert len(rule["matches"]) <= 64 and len(rule["backendRefs"]) <= 16
        for match in rule["matches"]:
            assert match["path"]["type"] in ("Exact", "PathPrefix", "RegularExpression")
            assert match["path"]["value"].startswith("/") and len(match["path"]["value"]) <= 1024
        for ref in rule["backendRefs"]:
            assert set(ref) <= {"group", "kind", "name", "namespace", "port", "weight", "filters"}
            assert isinstance(ref["weight"], int) and 0 <= ref["weight"] <= 1_000_000
            assert 1 <= ref["port"] <= 65535 and 1 <= len(ref["name"]) <= 253
    assert sum(ref["weight"] for ref in spec["rules"][0]["backendRefs"]) == 10000
