"""Fixtures of the store suite: the store under test (``GREENTIC_CONFORMANCE_STORE``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from greentic_core.store import StoreBackend, StoreOptions, open_store

STORE_ENV = "GREENTIC_CONFORMANCE_STORE"


class Subject:
    """The store under test: its URL, its secret (the URL's password), a home for local state."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        self.secrets = tuple(s for s in {password, unquote(password or "")} if s and len(s) >= 3)

    def store(self, **options) -> StoreBackend:
        return open_store(self.url, home=self.home,
                          options=StoreOptions(**{"actor": "conformance", "command": "pytest", **options}))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
        env.update({"GREENTIC_STORE": self.url, "GREENTIC_HOME": str(self.home)})
        return env

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "greentic_core", *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def no_secret(self, *texts: str) -> None:
        for secret in self.secrets:
            for text in texts:
                assert secret not in text, "the store URL's password was printed"


@pytest.fixture
def subject(tmp_path: Path) -> Subject:
    url = os.environ.get(STORE_ENV)
    if not url:
        pytest.fail(f"set {STORE_ENV} to the URL of the store under test (greentic-deployer conformance --store URL)")
    return Subject(url, tmp_path / "home")


@pytest.fixture
def env_id() -> str:
    """An environment id of this test's own."""
    return f"c{uuid.uuid4().hex[:12]}"
