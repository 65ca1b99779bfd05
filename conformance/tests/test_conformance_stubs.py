"""Every check can fail: the good stub passes all of them, each bad stub fails exactly its own.

Each run is a real pytest subprocess running the shipped suite against a stub installed as a
distribution (``.dist-info`` with entry points) on ``PYTHONPATH``; the result is read from the
suite's own JSON report, so the report is tested at the same time.
"""

from __future__ import annotations

import pytest

from greentic_conformance.checks import BY_ID, CHECKS

from conformance_helpers import SUITE, not_passed, outcomes
from conformance_stubs import BAD, CORE_PATCHED


def test_every_check_has_a_stub_that_breaks_it():
    covered = set(BAD) | set(CORE_PATCHED)
    assert covered == set(BY_ID), f"no failing stub for {sorted(set(BY_ID) - covered)}"
    assert not set(BAD) & set(CORE_PATCHED)
    for check_id in CORE_PATCHED:
        assert BY_ID[check_id].core_enforced, f"{check_id} is broken through the core but does not say so"


def test_good_stub_passes_every_check(suite):
    suite.install()
    result, doc = suite.run(*SUITE)
    result.assert_outcomes(passed=len(CHECKS))
    assert doc is not None and doc["ok"] is True
    assert set(outcomes(doc).values()) == {"passed"}
    assert result.ret == 0


@pytest.mark.parametrize("check_id", sorted(BAD))
def test_bad_stub_fails_exactly_its_check(suite, check_id):
    suite.install(BAD[check_id])
    result, doc = suite.run(*SUITE)
    assert doc is not None, result.stdout.str()[-3000:]
    failing = not_passed(doc)
    assert set(failing) == {check_id}, failing
    assert outcomes(doc)[check_id] == "failed"
    message = failing[check_id]
    assert message.startswith(f"[{check_id}] "), message
    assert f"rule: {BY_ID[check_id].rule}" in message, message
    result.assert_outcomes(passed=len(CHECKS) - 1, failed=1)
    assert result.ret == 1
    assert doc["ok"] is False


@pytest.mark.parametrize("check_id", CORE_PATCHED)
def test_core_guard_off_fails_exactly_its_check(suite, check_id):
    """A plugin cannot break these rules; with the core's guard switched off, the suite notices."""
    suite.install()
    result, doc = suite.run(*SUITE, core_patch=check_id)
    assert doc is not None, result.stdout.str()[-3000:]
    failing = not_passed(doc)
    assert set(failing) == {check_id}, failing
    assert failing[check_id].startswith(f"[{check_id}] ")
    assert "rule: " in failing[check_id]
    if check_id == "unknown-revision-rejected":
        assert "the provider was called: greentic_stage_revision(0000000000000000000000FFFF)" in failing[check_id]
    result.assert_outcomes(passed=len(CHECKS) - 1, failed=1)
