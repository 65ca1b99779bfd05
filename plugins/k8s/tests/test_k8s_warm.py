"""stage and warm against the emulator, through lightkube over real HTTP."""

from __future__ import annotations

import time

import pytest

from greentic_core import ProviderError, ProviderTimeout

from k8s_world import BROKEN_IMAGE, IMAGE


def writes(emulator):
    return [r for r in emulator.requests() if r[0] in ("PATCH", "POST", "PUT", "DELETE")]


def test_stage_checks_the_revision_and_creates_nothing(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep, ready=False)
    before = emulator.objects()
    outcome = deployer.stage(world.env, rid)
    assert outcome.detail["image"] == IMAGE
    assert outcome.detail["namespace"] == ns
    assert outcome.detail["objects"] == [f"Deployment {ns}/gt-{rid.lower()}", f"Service {ns}/gt-{rid.lower()}"]
    assert "not pinned by digest" in outcome.detail["warning"]
    assert emulator.requests() == []
    assert emulator.objects() == before


def test_stage_refuses_an_invalid_image_reference(deployer, world, emulator):
    dep = world.deployment()
    rid = world.revision(dep, ready=False, image="Registry.Example.com/Shop:1")
    with pytest.raises(ProviderError, match="not an image reference"):
        deployer.stage(world.env, rid)
    assert emulator.requests() == []


def test_warm_applies_a_deployment_and_a_service_and_returns_serving(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep, ready=False, drain_seconds=20, replicas=3, port=9000, health_path="/ready")
    outcome = deployer.warm(world.env, rid)
    assert outcome.detail["applied"] == ["Deployment", "Service"] and not outcome.detail["already_running"]
    name = f"gt-{rid.lower()}"
    stored = emulator.objects()
    deployment = stored["deployments", ns, name]
    assert deployment["metadata"]["labels"]["greentic.ai/revision"] == rid
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert stored["services", ns, name]["spec"]["ports"][0]["port"] == 9000
    seen = deployer.observe(world.env).revision(rid)
    assert seen.present and seen.serving and (seen.ready_replicas, seen.desired_replicas) == (3, 3)


def test_warm_writes_by_server_side_apply_with_the_field_manager(registry, answers, world, emulator):
    deployer = registry.bind("greentic.deployer.k8s@0.1.0", {**answers, "field_manager": "acme-ci"})
    dep = world.deployment()
    rid = world.revision(dep, ready=False)
    deployer.warm(world.env, rid)
    patches = [r for r in emulator.request_log() if r.method.value == "PATCH"]
    assert len(patches) == 2
    for request in patches:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["content-type"] == "application/apply-patch+yaml"
        assert request.params == {"fieldManager": "acme-ci", "force": "true"}


def test_warm_does_not_route(deployer, world, emulator):
    dep = world.deployment()
    rid = world.revision(dep, ready=False)
    deployer.warm(world.env, rid)
    assert not [key for key in emulator.objects() if key[0] == "httproutes"]
    assert deployer.observe(world.env).weights(dep) == {}


def test_warm_waits_for_the_rollout_and_reports_progress(deployer, world, emulator):
    emulator.configure(ready_after_seconds=0.4)
    dep = world.deployment()
    rid = world.revision(dep, ready=False)
    messages = []
    started = time.monotonic()
    outcome = deployer.warm(world.env, rid, progress=messages.append)
    assert time.monotonic() - started >= 0.4
    assert outcome.detail["waited_seconds"] >= 0.4
    assert messages and all(m.startswith(f"gt-{rid.lower()}: ") for m in messages)
    assert "0 of 1 updated replicas available" in messages[0]
    assert deployer.observe(world.env).revision(rid).serving


def test_warm_timeout_names_the_counts_and_leaves_nothing_behind(deployer, world, emulator, ns):
    emulator.configure(deployment_readiness="never")
    dep = world.deployment()
    rid = world.revision(dep, ready=False)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        deployer.warm(world.env, rid, timeout=0.5)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert f"Deployment {ns}/gt-{rid.lower()} did not complete its rollout within 0.5s" in message
    assert "updated 1/1, available 0/1, ready 0/1" in message
    assert "undone: deleted the Deployment, deleted the Service" in message
    assert "kubectl describe deployment" in caught.value.hint
    assert not [key for key in emulator.objects() if key[0] in ("deployments", "services")]
    seen = deployer.observe(world.env).revision(rid)
    assert not seen.present and not seen.serving


def test_warm_timeout_is_bounded_by_the_answers(registry, answers, world, emulator):
    deployer = registry.bind("greentic.deployer.k8s@0.1.0", {**answers, "warm_timeout_seconds": 0.3})
    dep = world.deployment()
    rid = world.revision(dep, ready=False, image=BROKEN_IMAGE)  # the sandbox never pulls .invalid registries
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="within 0.3s"):
        deployer.warm(world.env, rid, timeout=60)
    assert time.monotonic() - started < 2


def test_a_failed_rewarm_of_a_drained_revision_scales_it_back_to_zero(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    deployer.drain(world.env, rid)
    emulator.configure(deployment_readiness="never")
    with pytest.raises(ProviderTimeout, match="scaled the Deployment back to 0"):
        deployer.warm(world.env, rid, timeout=0.3)
    assert emulator.objects()["deployments", ns, f"gt-{rid.lower()}"]["spec"]["replicas"] == 0


def test_a_rollout_past_its_progress_deadline_fails_at_once(deployer, world, emulator, ns):
    dep = world.deployment()
    rid = world.revision(dep)
    emulator.configure(deployment_readiness="never")
    name = f"gt-{rid.lower()}"
    from greentic_k8s import render
    from greentic_k8s.answers import Answers

    manifest = render.deployment_manifest(world.env, world.env.revision(rid), Answers.parse(deployer.answers))
    manifest["status"] = {"observedGeneration": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": f'ReplicaSet "{name}-5d9" has timed out progressing.'}]}
    manifest["metadata"]["generation"] = 1
    emulator.put("apps/v1/deployments", ns, name, manifest)
    emulator.configure(deployment_readiness="frozen")  # leave the status above alone
    started = time.monotonic()
    with pytest.raises(ProviderError, match="exceeded its progress deadline") as caught:
        deployer.warm(world.env, rid, timeout=30)
    assert time.monotonic() - started < 3
    assert not isinstance(caught.value, ProviderTimeout)
    assert ("deployments", ns, name) in emulator.objects()  # it existed before: not removed
