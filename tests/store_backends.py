"""The store backends the store tests run against, each started by the test session: file,
PostgreSQL (a real throw-away cluster) and S3 (a real moto server over HTTP), plus a third
party's through ``GREENTIC_TEST_STORE_FACTORY``. Test modules import the fixtures from here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greentic_core.store import StoreBackend, StoreOptions, open_store

#: ``module:function`` returning the URL of a fresh, empty store on each call: runs the store
#: suites against a third party's backend too (see docs/plugin-authors.md, "Writing a store backend").
EXTERNAL_ENV = "GREENTIC_TEST_STORE_FACTORY"
BACKENDS = ["file", "postgresql", "s3"] + (["external"] if os.environ.get(EXTERNAL_ENV) else [])


# --------------------------------------------------------------------------- servers and URLs


@pytest.fixture(scope="session")
def pg_cluster():
    from greentic_store_postgres.testing import TempCluster

    cluster = TempCluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def moto_server():
    from greentic_store_s3.testing import MotoServer

    server = MotoServer()
    yield server
    server.stop()


_databases = iter(range(10**6))


class Backend:
    """One backend under test: its URL, the secrets that must never be printed, the process env."""

    def __init__(self, name: str, url: str, secrets: tuple[str, ...], env: dict[str, str], home: Path) -> None:
        self.name, self.url, self.secrets, self.env, self.home = name, url, secrets, env, home

    def store(self, **options) -> StoreBackend:
        return open_store(self.url, home=self.home,
                          options=StoreOptions(**{"actor": "test", "command": "pytest", **options}))

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
        env.update({**self.env, "GREENTIC_STORE": self.url, "GREENTIC_HOME": str(self.home)})
        return subprocess.run([sys.executable, "-m", "greentic_core", *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    def process_env(self) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}, **self.env}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    return make_backend(request.param, request, tmp_path, monkeypatch)


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A fresh, empty store of backend ``name`` (servers started once per session)."""
    home = tmp_path / "home"
    if name == "file":
        return Backend("file", f"file://{tmp_path / 'shared'}", (), {}, home)
    if name == "external":
        from greentic_core.registry import load_object

        backend = Backend("external", load_object(os.environ[EXTERNAL_ENV])(), (), {}, home)
        backend.store().init()
        return backend
    if name == "postgresql":
        from greentic_store_postgres.testing import TEST_PASSWORD

        cluster = request.getfixturevalue("pg_cluster")
        name = f"c{next(_databases)}"
        cluster.create_database(name)
        url = cluster.url_for(name, password=TEST_PASSWORD)
        backend = Backend("postgresql", url, (TEST_PASSWORD,), {}, home)
        backend.store().init()
        return backend
    from greentic_store_s3.testing import CREDENTIALS

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    url = request.getfixturevalue("moto_server").url()
    return Backend("s3", url, (CREDENTIALS["AWS_SECRET_ACCESS_KEY"],), dict(CREDENTIALS), home)


