"""The emulator fixture's own behaviour: each extension of kmock does what a real API server does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from greentic_core import ProviderError
from greentic_k8s import k8s
from greentic_k8s.answers import Answers


@pytest.fixture
def cluster(box):
    with k8s.connect(Answers.parse(box.answers), "sandbox") as client:
        yield client


def config_map(name, labels=None, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "gt-sandbox", "labels": labels or {}}, "data": data}


def test_apply_creates_then_replaces_and_a_no_op_changes_nothing(cluster, emulator):
    created = cluster.apply(config_map("c", {"a": "1", "b": "2"}, key="v1"))
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    again = cluster.apply(config_map("c", {"a": "1", "b": "2"}, key="v1"))
    assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
    changed = cluster.apply(config_map("c", {"a": "1"}, key="v2"))
    assert changed["metadata"]["generation"] == 2 and changed["metadata"]["uid"] == meta["uid"]
    assert changed["metadata"]["labels"] == {"a": "1"}  # apply replaces: the dropped label is gone
    assert int(changed["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert emulator.versions()["configmaps", "gt-sandbox", "c"] == 2


def raw_apply(emulator, name, body, query=""):
    request = urllib.request.Request(f"{emulator.url}/api/v1/namespaces/gt-sandbox/configmaps/{name}{query}",
                                     data=json.dumps(body).encode(), method="PATCH",
                                     headers={"Content-Type": "application/apply-patch+yaml"})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_apply_needs_a_field_manager_and_a_matching_name(cluster, emulator):
    from lightkube.types import PatchType

    code, status = raw_apply(emulator, "c", config_map("c"))
    assert (code, status["kind"], status["reason"]) == (400, "Status", "BadRequest")
    assert "fieldManager is required" in status["message"]
    code, created = raw_apply(emulator, "c", config_map("c"), "?fieldManager=t")
    assert code == 201 and created["metadata"]["name"] == "c"
    with pytest.raises(ProviderError, match="400.*does not match the URL"):
        cluster._call("apply", lambda: cluster.client.patch(
            k8s._resource("ConfigMap"), "other", config_map("c"), namespace="gt-sandbox",
            patch_type=PatchType.APPLY, field_manager="t"))


def test_lists_honour_label_selectors(cluster):
    cluster.apply(config_map("a", {"env": "x", "tier": "web"}))
    cluster.apply(config_map("b", {"env": "x"}))
    cluster.apply(config_map("c", {"env": "y"}))
    names = lambda labels: sorted(i["metadata"]["name"] for i in cluster.list("ConfigMap", labels))  # noqa: E731
    assert names({"env": "x"}) == ["a", "b"]
    assert names({"env": "x", "tier": "web"}) == ["a"]
    assert names({}) == ["a", "b", "c"]


def test_delete_removes_at_once_and_a_second_delete_is_404(cluster):
    cluster.apply(config_map("gone"))
    assert cluster.delete("ConfigMap", "gone") is True
    assert cluster.get("ConfigMap", "gone") is None
    assert cluster.delete("ConfigMap", "gone") is False


def deployment(image="registry.example.com/app:1", replicas=2):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "gt-sandbox"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


def test_the_deployment_controller_fills_status(cluster, emulator):
    assert cluster.apply(deployment())["status"] == {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    assert cluster.apply(deployment(replicas=0))["status"] == {"observedGeneration": 2}
    emulator.configure(deployment_readiness="never")
    assert cluster.apply(deployment(replicas=1))["status"] == {
        "observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1}


def test_an_image_from_an_invalid_registry_never_becomes_ready(cluster):
    assert "readyReplicas" not in cluster.apply(deployment(image="registry.invalid/app:1"))["status"]


def test_an_undeclared_resource_is_404_like_a_missing_crd(cluster, emulator):
    emulator._in_loop(lambda: emulator.emulator.resources.__delitem__("v1/configmaps"))
    with pytest.raises(ProviderError, match="404: the server could not find the requested resource"):
        cluster.apply(config_map("c"))


def test_the_sandbox_hook_yields_answers_and_cleans_up(tmp_path):
    from greentic_k8s.hooks import greentic_conformance_sandbox

    with greentic_conformance_sandbox(workdir=tmp_path) as answers:
        assert Answers.parse(answers).gateway_name == "sandbox-gateway"
        assert (tmp_path / "kubeconfig.yaml").read_text().count("127.0.0.1") == 1
        with k8s.connect(Answers.parse(answers), "sandbox") as cluster:
            assert cluster.get("Gateway", "sandbox-gateway", namespace="greentic-gateways") is not None
    with pytest.raises(ProviderError, match="cannot reach"):
        with k8s.connect(Answers.parse(answers), "sandbox") as cluster:
            cluster.list("ConfigMap", {})
