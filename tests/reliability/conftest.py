"""Shared set-up of the reliability tests (tests/reliability).

The helpers of ``tests/`` (``plugin_factory``, ``recording_plugin``, ``builders``) are imported
by module name, as ``tests/test_cli.py`` does: pytest's default ("prepend") import mode puts a
test file's own directory on ``sys.path``, which for this directory is ``tests/reliability``,
not ``tests/``; so this conftest adds ``tests/`` (and this directory, for
``reliability_harness`` and ``fault_plugin``) explicitly.

Every test here runs with ``GREENTIC_HANG_GRACE_SECONDS=0.5`` (the operator's grace after a
provider call's timeout, default 5 s), so a provider that hangs costs a test about
``--timeout + 0.5`` seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
for _path in (str(HERE), str(TESTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import fault_plugin  # noqa: E402
import recording_plugin  # noqa: E402
from reliability_harness import HANG_GRACE, Cli  # noqa: E402


@pytest.fixture(autouse=True)
def _short_hang_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENTIC_HANG_GRACE_SECONDS", str(HANG_GRACE))


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory holding the recording and the fault-injecting test deployers (real dists)."""
    site = tmp_path_factory.mktemp("reliability-site")
    recording_plugin.install(site)
    fault_plugin.install(site)
    return site


@pytest.fixture
def cli(tmp_path: Path, plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.syspath_prepend(str(plugin_site))
    harness = Cli(tmp_path, plugin_site)
    yield harness
    harness.release_hangs()
