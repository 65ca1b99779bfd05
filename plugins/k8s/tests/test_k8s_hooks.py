"""The hooks module and the plugin as the registry sees it: light import, descriptor, render, preflight,
client configuration and API errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from greentic_core import CheckStatus, ProviderError
from greentic_k8s import k8s
from greentic_k8s.answers import Answers
from greentic_k8s.hooks import greentic_deployer_descriptor
from greentic_k8s.sandbox import write_kubeconfig

from k8s_world import KIND


def test_importing_the_hooks_imports_no_kubernetes_client():
    code = textwrap.dedent("""
        import sys
        import greentic_k8s.hooks
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("lightkube", "kmock", "httpx", "httpx2", "aiohttp", "yaml"))
        print(",".join(heavy))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing greentic_k8s.hooks imported {result.stdout.strip()}"


def test_descriptor_declares_exact_weights_and_the_backend_ref_limit():
    descriptor = greentic_deployer_descriptor()
    assert descriptor.path == "greentic.deployer.k8s"
    assert descriptor.capabilities.weight_resolution_bps == 1
    assert descriptor.capabilities.max_split_entries == 16
    assert descriptor.answers_schema["additionalProperties"] is False


def test_the_plugin_lists_ok_with_a_sandbox(registry):
    record = registry.record("greentic.deployer.k8s")
    assert record.ok and record.has_sandbox and record.distribution == "greentic-deployer-k8s"


def test_render_is_a_dry_run(deployer, world, emulator):
    dep = world.deployment()
    rid = world.revision(dep)
    world.split(dep, (rid, 10000))
    manifests = deployer.render(world.env)
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "ConfigMap", "HTTPRoute"]
    assert emulator.requests() == []


def test_preflight_passes_against_the_sandbox(deployer, world):
    checks = {c.name: c for c in deployer.preflight(world.env)}
    assert {name: c.status for name, c in checks.items()} == {
        "kubeconfig": CheckStatus.PASS, "namespace-access": CheckStatus.PASS, "gateway": CheckStatus.PASS}
    assert "exists" in checks["gateway"].message


def test_preflight_fails_for_a_missing_gateway(registry, answers, world):
    deployer = registry.bind(KIND, {**answers, "gateway_name": "nope"})
    checks = {c.name: c for c in deployer.preflight(world.env)}
    assert checks["gateway"].status == CheckStatus.FAIL and "does not exist" in checks["gateway"].message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_api_server_is_a_clear_provider_error(registry, answers, world, tmp_path):
    server = f"http://127.0.0.1:{closed_port()}"
    kubeconfig = write_kubeconfig(tmp_path / "down.yaml", server)
    deployer = registry.bind(KIND, {**answers, "kubeconfig": str(kubeconfig)})
    dep = world.deployment()
    rid = world.revision(dep)
    with pytest.raises(ProviderError, match=f"cannot reach the Kubernetes API at {server}") as caught:
        deployer.warm(world.env, rid)
    assert "kubectl cluster-info" in caught.value.hint
    checks = {c.name: c for c in deployer.preflight(world.env)}
    assert checks["kubeconfig"].status == CheckStatus.PASS
    assert checks["namespace-access"].status == CheckStatus.FAIL


def test_a_missing_kubeconfig_or_context_is_named(registry, answers, world, tmp_path):
    dep = world.deployment()
    rid = world.revision(dep)
    missing = registry.bind(KIND, {**answers, "kubeconfig": str(tmp_path / "absent.yaml")})
    with pytest.raises(ProviderError, match="absent.yaml does not exist"):
        missing.warm(world.env, rid)
    wrong_context = registry.bind(KIND, {**answers, "context": "prod"})
    with pytest.raises(ProviderError, match="context 'prod'"):
        wrong_context.observe(world.env)
    assert {c.name: c.status for c in wrong_context.preflight(world.env)} == {"kubeconfig": CheckStatus.FAIL}


def test_without_a_kubeconfig_answer_the_usual_resolution_applies(registry, answers, world, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'nothing-here'}:{answers['kubeconfig']}")
    deployer = registry.bind(KIND, {k: v for k, v in answers.items() if k not in ("kubeconfig", "context")})
    dep = world.deployment()
    rid = world.revision(dep)
    deployer.warm(world.env, rid)
    assert deployer.observe(world.env).revision(rid).serving


def test_with_no_kubeconfig_anywhere_the_in_cluster_account_is_tried(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ProviderError, match="in-cluster service account"):
        k8s.load_config(Answers.parse({"gateway_name": "gw"}))


def test_a_missing_permission_names_the_call_and_points_at_the_role(deployer, world, emulator):
    emulator.configure(forbidden=frozenset({"services"}))
    dep = world.deployment()
    rid = world.revision(dep)
    with pytest.raises(ProviderError, match=r"read Service gt-shop/gt-\w+: the API server answered 403: "
                                            r"services is forbidden") as caught:
        deployer.warm(world.env, rid)
    assert "Role in the greentic-deployer-k8s README" in caught.value.hint
    assert not [r for r in emulator.requests() if r[0] == "PATCH"]  # refused before any write


def test_without_permission_on_pods_or_gateways_the_rest_still_works(deployer, world, emulator):
    emulator.configure(forbidden=frozenset({"pods", "gateways"}), deployment_readiness="never")
    dep = world.deployment()
    rid = world.revision(dep)
    with pytest.raises(ProviderError, match="did not complete its rollout"):  # no pod reasons, no crash
        deployer.warm(world.env, rid, timeout=0.2)
    checks = {c.name: c.status for c in deployer.preflight(world.env)}
    assert checks == {"kubeconfig": CheckStatus.PASS, "namespace-access": CheckStatus.PASS,
                      "gateway": CheckStatus.SKIP}
