"""Fixtures: one real moto server per session (HTTP on 127.0.0.1), one fresh bucket per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greentic_store_s3.testing import CREDENTIALS, MotoServer


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return moto.url()
