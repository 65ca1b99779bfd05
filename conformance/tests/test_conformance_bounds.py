"""Every provider call of the suite is bounded: a deployer that hangs fails, promptly, saying
which call did not return within how long."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest

from greentic_conformance.bounds import (
    DEFAULT_CALL_TIMEOUT_SECONDS,
    DRAIN_MARGIN_SECONDS,
    BoundedDeployer,
    CallDidNotReturn,
)
from greentic_conformance.fixture import build_fixture_env

from conformance_helpers import SUITE, not_passed
from conformance_stubs import GOOD_PATH

DRAIN_HANGS = textwrap.dedent("""
    @hookimpl
    def greentic_drain_revision(env, revision_id):
        # hangs well past its budget (drain_seconds + 30, as the issue's deployer did), then drains
        time.sleep(env.revision(revision_id).drain_seconds + 30)
        return _drain(env, revision_id)
""")

WARM_HANGS = textwrap.dedent("""
    @hookimpl
    def greentic_warm_revision(env, revision_id):
        time.sleep(600)
        return _warm(env, revision_id)
""")


def test_a_deployer_whose_drain_hangs_fails_in_under_a_minute(suite):
    suite.install(DRAIN_HANGS)
    started = time.monotonic()
    result, doc = suite.run(*SUITE)
    took = time.monotonic() - started
    assert doc is not None, result.stdout.str()[-3000:]
    assert took < 60, f"the suite took {took:.0f} s"
    failing = not_passed(doc)
    hung = [m for m in failing.values() if "did not return within" in m]
    assert hung, failing
    limit = 1 + 0.5 + DRAIN_MARGIN_SECONDS  # the fixtures' drain_seconds + the stub's slack + the margin
    assert any(f"did not return within {limit:g} s" in m for m in hung), hung
    assert [m for m in failing.values() if not m.startswith("[")] == []  # each names its check
    assert doc["ok"] is False and result.ret == 1


def test_call_timeout_option_bounds_the_other_verbs(suite):
    suite.install(WARM_HANGS)
    started = time.monotonic()
    result, doc = suite.run(*SUITE, "--deployer-call-timeout", "2")
    assert time.monotonic() - started < 60
    assert doc is not None, result.stdout.str()[-3000:]
    messages = list(not_passed(doc).values())
    assert any("did not return within 2 s" in m and "warm(" in m for m in messages), messages


def test_call_timeout_option_must_be_positive(suite):
    suite.install()
    result, _ = suite.run(*SUITE, "--deployer-call-timeout", "0", report=False)
    assert result.ret != 0
    assert "--deployer-call-timeout 0: must be more than 0 seconds" in result.stderr.str()


# --------------------------------------------------------------------------- the wrapper itself


class Slow:
    """A stand-in bound deployer whose calls block until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []

    def drain(self, env, revision_id, *, timeout=None):
        self.calls.append("drain")
        self.release.wait(30)
        return "drained"

    def observe(self, env):
        self.calls.append("observe")
        return "observed"

    def implements(self, hook):
        return True


def _env():
    return build_fixture_env("bounds", f"{GOOD_PATH}@1.0.0", drain_seconds=2)


def test_drain_limit_is_its_budget_plus_slack_plus_margin():
    fixture = _env()
    bounded = BoundedDeployer(Slow(), default_seconds=DEFAULT_CALL_TIMEOUT_SECONDS, drain_slack_seconds=1.5)
    assert bounded.limit("drain", (fixture.env, fixture.a1), {}) == 2 + 1.5 + DRAIN_MARGIN_SECONDS
    assert bounded.limit("observe", (fixture.env,), {}) == DEFAULT_CALL_TIMEOUT_SECONDS
    assert bounded.limit("warm", (fixture.env, fixture.a1), {"timeout": 1000}) == 1000 + DRAIN_MARGIN_SECONDS


def test_a_call_past_its_deadline_fails_and_later_calls_fail_at_once_until_it_returns():
    fixture = _env()
    slow = Slow()
    bounded = BoundedDeployer(slow, default_seconds=5, drain_slack_seconds=0, margin_seconds=-1.9)  # drain: 0.1 s
    with pytest.raises(CallDidNotReturn, match=rf"drain\({fixture.a1}\) did not return within 0.1 s"):
        bounded.drain(fixture.env, fixture.a1)
    with pytest.raises(CallDidNotReturn, match="not called: the earlier call drain"):
        bounded.observe(fixture.env)
    assert slow.calls == ["drain"]  # the provider was not called while the first call still ran
    slow.release.set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait (bounded) for the stuck thread to finish
        try:
            assert bounded.observe(fixture.env) == "observed"
            break
        except CallDidNotReturn:
            time.sleep(0.01)
    assert slow.calls == ["drain", "observe"]
    assert bounded.implements("x") is True  # everything else passes straight through
