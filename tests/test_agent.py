"""The agent through the store contract, on every store backend, with the recording deployer.

Time is the agent's clock shifted by the test (``Clock``), so a canary's pauses elapse
without sleeping; everything else is real: a real installed deployer distribution, real
stores (file, PostgreSQL, S3 over HTTP), the agent's real HTTP endpoint.
"""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from greentic_core import agent as agent_mod
from greentic_core import rollout
from greentic_core.apply import DETACHED, detach, load_detached
from greentic_core.cli import cli
from greentic_core.codec import format_timestamp, utc_now
from greentic_core.errors import GreenticError
from greentic_core.operator import Operator
from store_backends import moto_server, pg_cluster  # noqa: F401  (fixtures)
from test_apply import ENV, START, TARGET, World, expected, plugin_site, reference, world  # noqa: F401  (fixtures)


class Clock:
    """The agent's ``now``: real time plus a shift the test moves forward."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self):
        return utc_now() + self.shift

    def advance(self, seconds: float) -> None:
        self.shift += timedelta(seconds=seconds)


def make_agent(w: World, clock: Clock, **kwargs: Any) -> agent_mod.Agent:
    def operator() -> Operator:
        return Operator(w.store, w.op.registry, actor=agent_mod.agent_actor(), command="agent test")

    return agent_mod.Agent(w.store, operator, env_ids=[ENV], interval=1.0, now=clock, **kwargs)


def passes_until(agent: agent_mod.Agent, clock: Clock, done, *, limit: int = 40, step: float = 6.0) -> int:
    for count in range(1, limit + 1):
        agent.run_pass()
        if done():
            return count
        clock.advance(step)
    raise AssertionError(f"not done after {limit} passes")


# --------------------------------------------------------------------------- detached applies


def test_a_detached_apply_carried_by_the_agent_ends_where_apply_ends(world: World, expected) -> None:
    summary, _ = expected
    world.apply(START)
    plan = detach(world.op, ENV, TARGET.encode(), source="target.yaml")
    assert plan.steps and load_detached(world.store, ENV)["status"] == "pending"
    assert world.summary()["shop"]["rollout"] is None  # nothing ran yet
    clock = Clock()
    agent = make_agent(world, clock)
    passes = passes_until(agent, clock, lambda: load_detached(world.store, ENV)["status"] == "done")
    assert world.summary() == summary
    assert passes >= 3  # the canary's two pauses were waited out across passes, not skipped
    events = world.store.audit_events(ENV)
    since = next(i for i, e in enumerate(events) if e.get("verb") == "apply.detach")
    actors = {e["actor"] for e in events[since + 1:] if e.get("verb") in ("traffic.set", "revision.stage")}
    assert actors == {agent_mod.agent_actor()}
    # once done, a pass changes nothing
    before = world.env().generation
    agent.run_pass()
    assert world.env().generation == before


def test_a_detached_file_that_cannot_be_planned_is_refused_and_nothing_is_recorded(world: World) -> None:
    world.apply(START)
    bad = TARGET.replace('workload: {image: "shop:1"}', 'workload: {image: "shop:CHANGED"}')
    with pytest.raises(GreenticError) as info:
        detach(world.op, ENV, bad.encode(), source="bad.yaml")
    assert "v1" in str(info.value)
    assert world.store.read_attachment(ENV, DETACHED) is None


def test_apply_in_a_terminal_refuses_a_rollout_the_agent_drives(world: World) -> None:
    world.apply(START)
    detach(world.op, ENV, TARGET.encode(), source="target.yaml")
    clock = Clock()
    agent = make_agent(world, clock)
    passes_until(agent, clock, lambda: any(s.phase == "progressing" for s in rollout.load_all(world.store, ENV).values()),
                 step=0)
    with pytest.raises(rollout.RolloutBusy) as info:
        world.apply(TARGET)
    assert "agent" in str(info.value)
    # pause, resume and promote work the same on it
    rollout.pause(world.op, ENV, "shop")
    before = rollout.load_state(world.store, ENV, world.env().bundles[0].deployment_id)
    clock.advance(60)
    agent.run_pass()
    after = rollout.load_state(world.store, ENV, before.deployment_id)
    assert (after.phase, after.passed_steps) == ("paused", before.passed_steps)  # a paused rollout stays put
    rollout.resume(world.op, ENV, "shop")
    rollout.promote(world.op, ENV, "shop")
    passes_until(agent, clock, lambda: load_detached(world.store, ENV)["status"] == "done")
    assert rollout.load_state(world.store, ENV, before.deployment_id).promoted


# --------------------------------------------------------------------------- claims and failures


def test_a_second_agent_stands_by_until_the_first_ones_claim_expires(world: World) -> None:
    world.apply(START)
    clock = Clock()
    first, second = make_agent(world, clock, claim_ttl=30), make_agent(world, clock, claim_ttl=30)
    assert first.run_pass().environments[0].status == "ok"
    assert second.run_pass().environments[0].status == "standby"
    clock.advance(10)
    assert second.run_pass().environments[0].status == "standby"
    clock.advance(25)  # the first agent stopped passing: its claim expired
    assert second.run_pass().environments[0].status == "ok"
    assert first.run_pass().environments[0].status == "standby"
    second.release()  # a clean stop hands over at once
    assert first.run_pass().environments[0].status == "ok"


def test_claims_pure() -> None:
    now = utc_now()
    me = {"agent_id": "a", "host": "h1", "pid": 1}
    later = format_timestamp(now + timedelta(seconds=30))
    earlier = format_timestamp(now - timedelta(seconds=1))
    assert agent_mod.claim_free(None, me=me, now=now)
    assert agent_mod.claim_free({"agent_id": "a", "expires": later}, me=me, now=now)
    assert not agent_mod.claim_free({"agent_id": "b", "host": "h2", "pid": 1, "expires": later}, me=me, now=now)
    assert agent_mod.claim_free({"agent_id": "b", "host": "h2", "pid": 1, "expires": earlier}, me=me, now=now)
    # a claim of this host whose process is gone (SIGKILL) is free at once
    assert agent_mod.claim_free({"agent_id": "b", "host": "h1", "pid": 2 ** 22 + 12345, "expires": later},
                                me=me, now=now)
    assert agent_mod.claim_free({"agent_id": "b", "expires": "not a time"}, me=me, now=now)


def test_a_failing_environment_backs_off_and_recovers(world: World) -> None:
    world.apply(START)
    clock = Clock()
    agent = make_agent(world, clock)
    world.fail("observe")
    report = agent.run_pass().environments[0]
    assert report.status == "failed" and "observe" in report.error
    assert agent.run_pass().environments[0].status == "backoff"
    clock.advance(1.5)
    assert agent.run_pass().environments[0].status == "failed"  # second failure: 2 s now
    clock.advance(1.5)
    assert agent.run_pass().environments[0].status == "backoff"
    world.heal()
    clock.advance(1)
    assert agent.run_pass().environments[0].status == "ok"
    record = agent_mod.load_record(world.store, ENV)
    assert record["failures"] == 0 and record["last_good_pass_at"]


def test_a_revision_the_provider_lost_is_repaired_and_audited(world: World) -> None:
    world.apply(START)
    state_file = world.store.state_dir(ENV) / "recording-state.json"
    provider = json.loads(state_file.read_text())
    lost = next(iter(provider["revisions"]))
    del provider["revisions"][lost]
    state_file.write_text(json.dumps(provider))
    clock = Clock()
    agent = make_agent(world, clock)
    report = agent.run_pass().environments[0]
    assert [r["revision_id"] for r in report.repairs if r.get("outcome") == "ok"] == [lost]
    assert lost in json.loads(state_file.read_text())["revisions"]
    events = [e for e in world.store.audit_events(ENV) if e.get("verb") == "agent.repair"]
    assert [(e["revision_id"], e["provider_verb"], e["actor"]) for e in events] == [
        (lost, "warm", agent_mod.agent_actor())]
    assert agent.run_pass().environments[0].repairs == []  # nothing drifted any more


# --------------------------------------------------------------------------- the CLI and the endpoint


def test_rollout_status_says_who_drives_and_warns_without_an_agent(world: World) -> None:
    world.apply(START)
    detach(world.op, ENV, TARGET.encode(), source="target.yaml")
    clock = Clock()
    agent = make_agent(world, clock)
    passes_until(agent, clock, lambda: bool(rollout.load_all(world.store, ENV)), step=0)
    doc = rollout.status(world.op, ENV, "shop")
    assert doc["driven_by"].startswith("the agent agent@") and doc["next_step_due"]
    assert doc["warnings"] == []
    record = agent_mod.load_record(world.store, ENV)
    record["last_pass_at"] = format_timestamp(utc_now() - timedelta(seconds=600))
    agent_mod.save_record(world.store, ENV, record)
    doc = rollout.status(world.op, ENV, "shop")
    assert any("no agent has made a pass for" in w for w in doc["warnings"]), doc["warnings"]


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    return response.status, response.read()


def test_healthz_and_metrics_need_a_pass_and_a_token(world: World) -> None:
    world.apply(START)
    metrics = agent_mod.AgentMetrics()
    agent = make_agent(world, Clock(), metrics=metrics)
    server = agent_mod.serve(agent, metrics, "127.0.0.1", 0, token="s3cret")
    port = server.server_address[1]
    try:
        assert _get(port, "/healthz")[0] == 503  # no pass yet
        agent.run_pass()
        assert _get(port, "/healthz") == (200, b"ok\n")
        assert _get(port, "/metrics")[0] == 401
        assert _get(port, "/metrics", token="wrong")[0] == 401
        status, body = _get(port, "/metrics", token="s3cret")
        text = body.decode()
        assert status == 200 and "greentic_agent_passes_total 1.0" in text
        assert f'greentic_agent_seconds_since_good_pass{{environment="{ENV}"}}' in text
        assert _get(port, "/anything", token="s3cret")[0] == 404
    finally:
        server.shutdown()


def test_agent_unit_and_once_from_the_cli(world: World, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--home", str(world.home), *world.store_args]
    unit = runner.invoke(cli, [*base, "--store", "postgresql://ops:hunter2@db.internal/greentic", "agent", "unit",
                               "--interval", "5"])
    assert unit.exit_code == 0, unit.output
    assert "Restart=always" in unit.output and "agent --interval 5" in unit.output
    assert "hunter2" not in unit.output and "GREENTIC_STORE=postgresql://ops:***@db.internal/greentic" in unit.output
    world.apply(START)
    once = runner.invoke(cli, [*base, "--json", "agent", ENV, "--once"])
    assert once.exit_code == 0, once.output
    doc = json.loads(once.stdout)
    assert doc["ok"] and doc["pass"]["environments"][0]["status"] == "ok"
    world.fail("observe")
    failed = runner.invoke(cli, [*base, "--json", "agent", ENV, "--once"])
    assert failed.exit_code == 1 and json.loads(failed.stdout)["pass"]["environments"][0]["status"] == "failed"
    missing = runner.invoke(cli, [*base, "agent", "nope", "--once"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    off_loopback = runner.invoke(cli, [*base, "agent", ENV, "--once", "--listen", "0.0.0.0:9464"])
    assert off_loopback.exit_code != 0 and "--metrics-token-file" in off_loopback.output


def test_a_detached_rollouts_events_reach_its_webhook_once_in_order_signed(world: World) -> None:
    import hashlib
    import hmac
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[dict[str, Any], str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((json.loads(body), self.headers.get("X-Greentic-Signature-256", ""), body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        world.apply(START)
        target = TARGET.replace("environment: dev\n", "environment: dev\nnotify:\n  url: http://127.0.0.1:"
                                f"{server.server_address[1]}/hook\n  secret: hook-secret\n", 1)
        detach(world.op, ENV, target.encode(), source="target.yaml")
        clock = Clock()
        agent = make_agent(world, clock)
        passes_until(agent, clock, lambda: load_detached(world.store, ENV)["status"] == "done")
        rollout.flush_notifications(timeout=10)
    finally:
        server.shutdown()
    types = [event["type"] for event, _, _ in received]
    assert types == ["rollout.started", "rollout.step", "rollout.step", "rollout.step", "rollout.completed"], types
    assert len({event["id"] for event, _, _ in received}) == len(received)
    for event, signature, body in received:
        expected_sig = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected_sig)
        assert event["deployment"]["bundle"] == "shop" and event["environment"] == ENV
    shown = rollout.status(world.op, ENV, "shop")
    assert "hook-secret" not in json.dumps(shown)


def test_store_migrate_carries_rollout_states_and_a_detached_apply(world: World, tmp_path: Path) -> None:
    world.apply(START)
    detach(world.op, ENV, TARGET.encode(), source="target.yaml")
    clock = Clock()
    agent = make_agent(world, clock)
    passes_until(agent, clock, lambda: bool(rollout.load_all(world.store, ENV)), step=0)
    did = next(iter(rollout.load_all(world.store, ENV)))
    source_url = world.store_args[1] if world.store_args else f"file://{world.home}"
    target = tmp_path / "copy"
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(world.home), "--json", "store", "migrate", "--from", source_url,
                                 "--to", f"file://{target}", ENV])
    assert result.exit_code == 0, result.output
    copied = target / "environments" / ENV
    assert json.loads((copied / "rollouts" / f"{did}.json").read_text()) == \
        rollout.load_state(world.store, ENV, did).to_json()
    assert json.loads((copied / "desired" / "detached.json").read_text())["status"] == "pending"
    assert not (copied / "agent.json").exists()  # the claim names a holder of the source store
