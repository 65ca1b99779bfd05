"""Self-tests of greentic-conformance: the suite run (in a subprocess, through pytester) against stubs."""

from __future__ import annotations

import pytest

from conformance_helpers import SuiteRun

pytest_plugins = ["pytester"]


@pytest.fixture
def suite(pytester, monkeypatch, tmp_path) -> SuiteRun:
    return SuiteRun(pytester, monkeypatch, tmp_path)
