"""Fixtures: one real PostgreSQL cluster per session, one fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from greentic_store_postgres.testing import TEST_PASSWORD as PASSWORD
from greentic_store_postgres.testing import TempCluster

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TempCluster]:
    cluster = TempCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: TempCluster) -> str:
    """The URL (with a password) of a fresh, initialised database."""
    from greentic_core.store import StoreOptions, open_store

    name = f"t{next(_names)}"
    pg_cluster.create_database(name)
    url = pg_cluster.url_for(name, password=PASSWORD)
    store = open_store(url, options=StoreOptions())
    try:
        store.init()
    finally:
        store.close()
    return url


@pytest.fixture
def bare_pg_url(pg_cluster: TempCluster) -> str:
    """The URL of a fresh database without the schema."""
    name = f"bare{next(_names)}"
    pg_cluster.create_database(name)
    return pg_cluster.url_for(name, password=PASSWORD)
