"""Fixtures: a fresh kmock emulator per test (``box``), and the k8s deployer bound to it through the
registry (``deployer``), exactly as the CLI binds it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # k8s_world.py

from greentic_core.registry import Registry  # noqa: E402
from greentic_k8s.render import namespace_for_env  # noqa: E402
from greentic_k8s.sandbox import Sandbox  # noqa: E402

from k8s_world import KIND, World  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    registry = Registry(cache_dir=tmp_path_factory.mktemp("registry-cache"))
    record = registry.record("greentic.deployer.k8s")
    assert record.status == "ok", record.reason
    return registry


class ServerRules:
    """The real-rules layer in every test: each object the provider applies is checked as a real API
    server would (kubernetes-validate strict for core and apps objects; the Gateway API v1.6.1
    HTTPRoute CRD's schema and CEL rules), answered 422 by the emulator, and recorded."""

    def __init__(self) -> None:
        import kubernetes_validate

        from crd_rules import CrdValidator, load_schema

        self._kv = kubernetes_validate
        self._version = kubernetes_validate.utils.latest_version()
        self._crd = CrdValidator(load_schema())
        self.refused: list[str] = []

    def __call__(self, body: dict) -> list[str]:
        if body.get("kind") == "HTTPRoute":
            problems = self._crd.problems(body)
        else:
            try:
                self._kv.validate(body, self._version, strict=True)
                problems = []
            except self._kv.ValidationError as exc:
                problems = [str(exc).splitlines()[0]]
        self.refused += [f"{body.get('kind')} {(body.get('metadata') or {}).get('name')}: {p}" for p in problems]
        return problems


@pytest.fixture(scope="session")
def server_rules():
    return ServerRules()


@pytest.fixture
def box(tmp_path, server_rules):
    server_rules.refused.clear()
    with Sandbox(tmp_path / "sandbox", validate=server_rules) as sandbox:
        yield sandbox
    assert server_rules.refused == [], server_rules.refused[:3]


@pytest.fixture
def emulator(box):
    return box.emulator


@pytest.fixture
def answers(box):
    return dict(box.answers)


@pytest.fixture
def deployer(registry, answers):
    return registry.bind(KIND, answers)


@pytest.fixture
def world():
    return World("shop")


@pytest.fixture
def ns(world):
    return namespace_for_env(world.env_id)
