"""Fixtures of the suite. They exist only while the suite itself is collected.

Without ``--deployer`` every check is skipped with a message saying how to run it, so that
collecting this package by accident (``pytest conformance/``) does no harm.
"""

from __future__ import annotations

import pytest

from greentic_conformance.checks import BY_ID, check_id_of
from greentic_conformance.context import CheckContext
from greentic_conformance.harness import Harness, HarnessError
from greentic_conformance.plugin import get_session


@pytest.fixture(scope="session")
def conformance_session(request):
    session = get_session(request.config)
    if session is None:
        pytest.skip("the greentic conformance suite runs only with --deployer NAME "
                    "(pytest --deployer NAME --pyargs greentic_conformance.suite)")
    try:
        recorder = request.getfixturevalue("record_testsuite_property")
    except pytest.FixtureLookupError:  # -p no:junitxml
        recorder = None
    if recorder is not None:
        for key, value in session.metadata().items():
            recorder(key, value)
    return session


@pytest.fixture(scope="session")
def harness(conformance_session, tmp_path_factory):
    session = conformance_session
    harness = Harness(session.name, session.registry, session.record, tmp_path_factory.mktemp("greentic-conformance"),
                      answers_file=session.answers_file, call_timeout=session.call_timeout)
    session.harness = harness
    problem = None
    try:
        harness.start()
    except HarnessError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    yield harness
    harness.close()


@pytest.fixture
def check(request, conformance_session):
    check_id = check_id_of(request.node)
    assert check_id is not None, f"{request.node.nodeid} is not marked with @check(...)"
    return CheckContext(BY_ID[check_id])


@pytest.fixture
def world(harness, check):
    check.harness = harness
    world = harness.new_world()
    harness.spy.clear()
    yield world
    harness.end_world(world)
