"""The store contract on every backend: the shipped suite, not a copy of it.

``greentic_conformance.store_suite`` (what ``greentic-deployer conformance --store URL`` runs
against a third party's store) is run here against file, PostgreSQL (a real cluster) and S3 (a
real moto server over HTTP), each started by this test session; its ``subject`` is the backend
under test. So the checks a third party must pass are exactly the ones our backends pass, and a
check added to the shipped suite runs here on every backend without being copied. What only the
repository needs stays below.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from greentic_conformance.store_suite import test_store_contract as shipped
from greentic_conformance.store_suite.conftest import Subject
from store_backends import Backend, backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: every check of the shipped suite, collected here with this module's fixtures
SHIPPED = {name: check for name, check in vars(shipped).items() if name.startswith("test_") and callable(check)}
globals().update(SHIPPED)


@pytest.fixture
def subject(backend: Backend) -> Subject:
    """The backend under test as the shipped suite sees it; the S3 secret key counts as a secret too."""
    subject = Subject(backend.url, backend.home)
    subject.secrets = tuple({*subject.secrets, *backend.secrets})
    return subject


@pytest.fixture
def env_id() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


def test_every_shipped_check_is_collected_here() -> None:
    assert len(SHIPPED) >= 14 and all(globals()[name] is check for name, check in SHIPPED.items())


def test_the_shipped_upstream_documents_are_the_repositorys_fixtures() -> None:
    shipped_dir = Path(shipped.__file__).resolve().parent / "upstream"
    names = sorted(p.name for p in shipped_dir.glob("*.json"))
    assert names == ["upstream-example.json", "upstream-full.json", "upstream-minimal.json"]
    for name in names:
        assert (shipped_dir / name).read_bytes() == (FIXTURES / name).read_bytes(), name
