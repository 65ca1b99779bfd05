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


@pytest.fixture
def box(tmp_path):
    with Sandbox(tmp_path / "sandbox") as sandbox:
        yield sandbox


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
