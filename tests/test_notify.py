"""Webhook notifications: configuration, delivery to a real receiver on loopback, retries,
failures audited through a real file store, and the secret kept out of everything printed."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from greentic_core import desired, notify
from greentic_core.desired import DesiredStateError
from greentic_core.notify import EVENT_TYPES, Notifier, NotifyConfig, NotifyConfigError, Retry
from greentic_core.spec import Environment, HostConfig
from greentic_core.store import Store

SECRET = "s3cr3t-Hook-Key-0b1f"
FAST = Retry(attempts=5, first_delay=0.01, factor=2.0, max_delay=0.05, max_total=10.0)
DEPLOYMENT = {"id": "01JX3K8M2N4P6Q8R0S2T4V6W8X", "bundle": "shop"}


# --------------------------------------------------------------------------- a real receiver


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with the next scripted
    status (200 once the script is used up)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.changed:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/greentic"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.requests)} of {count} requests arrived"
                self.changed.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def scripted(statuses: list[int]) -> Callable[[], Receiver]:
    return lambda: Receiver(statuses)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (docs/rollouts.md): HMAC-SHA256 of the raw body, constant-time compare."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-greentic-signature-256", ""))


def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return value


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "home" / "environments")
    env = Environment(environment_id="dev", name="dev", host_config=HostConfig(env_id="dev"), packs=())
    store.create(env, audit_event={"actor": "test", "command": "pytest", "verb": "env.init", "outcome": "ok"})
    return store


def stored_text(store: Store) -> str:
    """Every file the store holds for the environment, as one text."""
    root = store.env_dir("dev")
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


# --------------------------------------------------------------------------- delivery


def test_every_event_is_delivered_once_in_order_and_signed(receiver: Receiver) -> None:
    config = notify.parse({"url": receiver.url, "secret": SECRET})
    failures: list[dict] = []
    notifier = Notifier(config, env_id="dev", actor="ana@laptop", audit=failures.append, retry=FAST)
    sent = [notifier.emit(kind, deployment=DEPLOYMENT, data={"n": index}) for index, kind in enumerate(EVENT_TYPES)]
    sent += [notifier.emit("rollout.step", deployment=DEPLOYMENT, data={"n": n}) for n in range(8, 30)]
    assert notifier.close(timeout=10.0) is True

    got = receiver.wait_for(len(sent))
    time.sleep(0.05)  # nothing more may arrive: each event exactly once
    assert len(receiver.requests) == len(sent) == 30
    assert [json.loads(body) for _, body in got] == sent  # in emit order, byte-for-byte the payloads
    assert len({event["id"] for event in sent}) == 30
    for (headers, body), event in zip(got, sent):
        assert headers["content-type"] == "application/json"
        assert headers["x-greentic-event"] == event["type"]
        assert headers["x-greentic-delivery"] == event["id"]
        assert verify(SECRET, headers, body)
        assert not verify(SECRET + "x", headers, body)
        assert not verify(SECRET, headers, body.replace(b'"n":', b'"n" :'))  # the exact body is signed
        assert SECRET.encode() not in body
    first = sent[0]
    assert first["schema"] == "greentic.notify-event.v1" and first["type"] == "rollout.started"
    assert first["environment"] == "dev" and first["actor"] == "ana@laptop" and first["deployment"] == DEPLOYMENT
    assert datetime.fromisoformat(first["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert failures == []
    assert wait_until(lambda: not any(t.is_alive() for t in notifier_threads(notifier)))  # close ends the thread


def notifier_threads(notifier: Notifier) -> list[threading.Thread]:
    return [c.thread for c in notifier._channels if c.thread is not None]


def test_without_a_secret_no_signature_is_sent(receiver: Receiver) -> None:
    notifier = Notifier(notify.parse({"url": receiver.url}), env_id="dev", actor="a", retry=FAST)
    event = notifier.emit("agent.repair", data={"revision": "v1"})
    notifier.close()
    (headers, body), = receiver.wait_for(1)
    assert "x-greentic-signature-256" not in headers
    assert json.loads(body) == event and "deployment" not in event


def test_secret_env_is_read_when_the_event_is_delivered(receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
                                                        store: Store) -> None:
    config = notify.parse({"url": receiver.url, "secret_env": "GREENTIC_TEST_HOOK_SECRET"})
    monkeypatch.delenv("GREENTIC_TEST_HOOK_SECRET", raising=False)
    notifier = Notifier(config, env_id="dev", actor="a", retry=FAST,
                        audit=notify.store_audit(store, "dev", "a", "test"))
    monkeypatch.setenv("GREENTIC_TEST_HOOK_SECRET", SECRET)  # set after the notifier was made
    notifier.emit("rollout.started", deployment=DEPLOYMENT)
    assert notifier.flush(10.0)
    (headers, body), = receiver.wait_for(1)
    assert verify(SECRET, headers, body)

    # gone from the environment: not sent unsigned, the failure audited
    monkeypatch.delenv("GREENTIC_TEST_HOOK_SECRET")
    event = notifier.emit("rollout.completed", deployment=DEPLOYMENT)
    assert notifier.close(10.0)
    assert len(receiver.requests) == 1
    failed = [e for e in store.audit_events("dev") if e.get("verb") == "notify.failed"]
    assert len(failed) == 1 and failed[0]["event_id"] == event["id"] and failed[0]["attempts"] == 0
    assert "GREENTIC_TEST_HOOK_SECRET" in failed[0]["error"]


def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_attempt() -> None:
    server = Receiver([500, 503])
    try:
        failures: list[dict] = []
        notifier = Notifier(notify.parse({"url": server.url, "secret": SECRET}), env_id="dev", actor="a",
                            audit=failures.append, retry=FAST)
        event = notifier.emit("rollout.aborted", deployment=DEPLOYMENT, data={"analysis": {"verdict": "fail"}})
        follower = notifier.emit("rollout.step", deployment=DEPLOYMENT, data={"step": 2})
        assert notifier.close(10.0)
        got = server.wait_for(4)
        ids = [headers["x-greentic-delivery"] for headers, _ in got]
        assert ids == [event["id"]] * 3 + [follower["id"]]  # retried in place: order kept
        assert len({body for _, body in got[:3]}) == 1  # the same body every time
        assert all(verify(SECRET, headers, body) for headers, body in got)
        assert failures == []
    finally:
        server.close()


@pytest.mark.parametrize(("statuses", "attempts", "delivered"), [
    ([429, 200], 2, True),  # too many requests: retried
    ([400], 1, False),  # a client error is final
    ([404], 1, False),
    ([301], 1, False),  # a redirect is not followed (it would lose the POST body)
    ([500, 500, 500, 500, 500], 5, False),  # bounded attempts
])
def test_what_is_retried(statuses: list[int], attempts: int, delivered: bool) -> None:
    server = Receiver(statuses)
    try:
        failures: list[dict] = []
        notifier = Notifier(notify.parse({"url": server.url}), env_id="dev", actor="a",
                            audit=failures.append, retry=FAST)
        event = notifier.emit("agent.failure", data={"error": "boom"})
        assert notifier.close(10.0)
        assert len(server.wait_for(attempts)) == attempts
        time.sleep(0.05)
        assert len(server.requests) == attempts
        if delivered:
            assert failures == []
        else:
            assert len(failures) == 1
            assert failures[0]["attempts"] == attempts and failures[0]["event_id"] == event["id"]
            assert failures[0]["error"].startswith(f"HTTP {statuses[-1]}")
    finally:
        server.close()


def test_retries_are_bounded_in_total_time() -> None:
    server = Receiver([500] * 100)
    try:
        failures: list[dict] = []
        retry = Retry(attempts=100, first_delay=0.05, factor=1.0, max_delay=0.05, max_total=0.5)
        notifier = Notifier(notify.parse({"url": server.url}), env_id="dev", actor="a",
                            audit=failures.append, retry=retry)
        started = time.monotonic()
        notifier.emit("agent.failure")
        assert notifier.close(5.0)
        assert time.monotonic() - started < 2.0
        assert len(failures) == 1 and 2 <= failures[0]["attempts"] < 100 and "gave up after" in failures[0]["error"]
    finally:
        server.close()


def test_a_receiver_that_is_down_delays_nothing_and_the_failure_is_audited(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://hookuser:url-password-9@127.0.0.1:{port}/hook?token=query-token-7"
    config = notify.parse({"url": url, "secret": SECRET})
    notifier = Notifier(config, env_id="dev", actor="ana@laptop", retry=FAST,
                        audit=notify.store_audit(store, "dev", "ana@laptop", "apply"))
    caplog.set_level(logging.DEBUG, logger="greentic_core.notify")
    took = []
    events = []
    for kind in ("rollout.started", "rollout.step", "rollout.aborted"):
        started = time.perf_counter()
        events.append(notifier.emit(kind, deployment=DEPLOYMENT, data={"analysis": {"error_rate": 0.5}}))
        took.append(time.perf_counter() - started)
    assert max(took) < 0.05, took  # emit only queues
    started = time.monotonic()
    assert notifier.close(timeout=10.0)
    assert time.monotonic() - started < 10.0

    failed = [e for e in store.audit_events("dev") if e.get("verb") == "notify.failed"]
    assert [e["event_id"] for e in failed] == [e["id"] for e in events]  # each once, in order
    for record, event in zip(failed, events):
        assert record["outcome"] == "error" and record["event_type"] == event["type"]
        assert record["attempts"] == 5 and record["actor"] == "ana@laptop" and record["command"] == "apply"
        assert record["url"] == f"http://127.0.0.1:{port}/hook"  # no user, password or query
        assert record["deployment_id"] == DEPLOYMENT["id"]
        assert "connect" in record["error"]
    everything = stored_text(store) + caplog.text + repr(config) + json.dumps(config.redacted())
    for secret in (SECRET, "url-password-9", "query-token-7"):
        assert secret not in everything
    assert "notify.failed" in stored_text(store)  # the check above read the audit log


def test_close_gives_up_on_time_and_audits_what_was_not_delivered(store: Store) -> None:
    slow = Retry(attempts=5, first_delay=30.0, max_delay=30.0, max_total=120.0)  # the defaults' order of size
    notifier = Notifier(notify.parse({"url": f"http://127.0.0.1:{free_port()}/hook", "secret": SECRET}),
                        env_id="dev", actor="a", retry=slow, audit=notify.store_audit(store, "dev", "a", "apply"))
    kinds = ("rollout.started", "rollout.step", "rollout.paused")
    events = [notifier.emit(kind, deployment=DEPLOYMENT) for kind in kinds]
    started = time.monotonic()
    assert notifier.close(timeout=2.0) is False  # the first event was still waiting for its retry
    assert time.monotonic() - started < 2.5
    failed = [e for e in store.audit_events("dev") if e.get("verb") == "notify.failed"]
    assert [e["event_id"] for e in failed] == [e["id"] for e in events]
    assert [e["attempts"] for e in failed] == [1, 0, 0]
    assert "closed" in failed[0]["error"] and "closed" in failed[1]["error"]
    assert SECRET not in stored_text(store)


def test_close_is_bounded_when_the_receiver_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        failures: list[dict] = []
        notifier = Notifier(notify.parse({"url": url, "timeout_seconds": 60}), env_id="dev", actor="a",
                            audit=failures.append, retry=FAST)
        started = time.perf_counter()
        notifier.emit("rollout.step")
        notifier.emit("rollout.completed")
        assert time.perf_counter() - started < 0.05
        started = time.monotonic()
        assert notifier.close(timeout=0.5) is False
        assert time.monotonic() - started < 1.5
        assert notifier.emit("rollout.step") is None  # closed: nothing more is taken


def test_events_not_chosen_are_dropped(receiver: Receiver) -> None:
    config = notify.parse({"url": receiver.url, "events": ["rollout.aborted", "agent.failure"]})
    notifier = Notifier(config, env_id="dev", actor="a", retry=FAST)
    sent = [notifier.emit(kind) for kind in EVENT_TYPES]
    assert notifier.close(10.0)
    assert [e["type"] for e in sent if e] == ["rollout.aborted", "agent.failure"]
    got = receiver.wait_for(2)
    time.sleep(0.05)
    assert [h["x-greentic-event"] for h, _ in receiver.requests] == ["rollout.aborted", "agent.failure"]
    assert [json.loads(b)["id"] for _, b in got] == [e["id"] for e in sent if e]


def test_several_webhooks_each_get_their_events() -> None:
    first, second = Receiver(), Receiver([500])
    try:
        configs = notify.parse_many([{"url": first.url}, {"url": second.url, "events": ["rollout.completed"]}])
        notifier = Notifier(configs, env_id="dev", actor="a", retry=FAST)
        step = notifier.emit("rollout.step")
        done = notifier.emit("rollout.completed")
        assert notifier.close(10.0)
        assert [json.loads(b)["id"] for _, b in first.wait_for(2)] == [step["id"], done["id"]]
        assert [json.loads(b)["id"] for _, b in second.wait_for(2)] == [done["id"]] * 2  # its own retries
    finally:
        first.close()
        second.close()


def test_no_config_is_a_no_op() -> None:
    def workers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "greentic-notify")

    before = workers()
    notifier = Notifier(None, env_id="dev", actor="a", audit=lambda e: pytest.fail(f"audited {e}"))
    assert notifier.enabled is False
    assert notifier.emit("rollout.step", deployment=DEPLOYMENT, data={"x": 1}) is None
    assert notifier.close(timeout=0.0) is True
    assert workers() == before  # no thread started


def test_emit_never_raises_and_a_failing_audit_is_swallowed(receiver: Receiver) -> None:
    def broken_audit(event: dict) -> None:
        raise RuntimeError("audit is down")

    server = Receiver([400])
    try:
        notifier = Notifier([notify.parse({"url": server.url}), notify.parse({"url": receiver.url})],
                            env_id="dev", actor="a", audit=broken_audit, retry=FAST)
        assert notifier.emit("rollout.nonsense") is None  # unknown type: dropped, not raised
        odd = notifier.emit("rollout.step", data={"when": datetime(2026, 1, 2), "obj": object()})  # not JSON
        assert odd is not None
        notifier.emit("rollout.completed")  # the worker survived the audit that raised
        assert notifier.close(10.0)
        bodies = [json.loads(b) for _, b in receiver.wait_for(2)]
        assert bodies[0]["data"]["when"] == "2026-01-02 00:00:00" and bodies[1]["type"] == "rollout.completed"
        assert len(server.wait_for(2)) == 2  # the 400 (final, audit raised) did not stop the next event
    finally:
        server.close()


def test_store_audit_never_raises(tmp_path: Path, store: Store) -> None:
    notify.store_audit(store, "missing-env", "a", "apply")({"verb": "notify.failed", "outcome": "error"})
    audit = notify.store_audit(store, "dev", "a", "apply")
    audit({"verb": "notify.failed", "outcome": "error", "event_id": "X", "skipped": None})
    last = store.audit_events("dev")[-1]
    assert last["verb"] == "notify.failed" and last["actor"] == "a" and last["command"] == "apply"
    assert "skipped" not in last


# --------------------------------------------------------------------------- configuration


def test_records_round_trip_and_redaction() -> None:
    url = "https://bot:pw-123@hooks.example.com/greentic?sig=abc"
    config = notify.parse({"url": url, "secret": SECRET, "events": ["rollout.step", "rollout.step", "agent.repair"],
                           "timeout_seconds": 3})
    assert config.events == (notify.EventType.ROLLOUT_STEP, notify.EventType.AGENT_REPAIR)
    record = config.to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["secret"] == SECRET and record["url"] == url  # what a background agent needs
    assert NotifyConfig.from_record(record) == config
    assert NotifyConfig.from_record({**record, "added_later": 1, "events": ["rollout.step", "rollout.later"]}) \
        == notify.parse({"url": url, "secret": SECRET, "events": ["rollout.step"], "timeout_seconds": 3})
    shown = config.redacted()
    assert shown == {"url": "https://hooks.example.com/greentic", "secret": "***",
                     "events": ["rollout.step", "agent.repair"], "timeout_seconds": 3.0}
    by_env = notify.parse({"url": "http://h.example/x", "secret_env": "HOOK_SECRET"})
    assert by_env.redacted() == {"url": "http://h.example/x", "secret_env": "HOOK_SECRET"}
    assert by_env.events is None and by_env.wants("agent.failure")
    for text in (repr(config), str(config), json.dumps(shown)):
        assert SECRET not in text and "pw-123" not in text and "sig=abc" not in text


@pytest.mark.parametrize(("raw", "path", "words"), [
    ({"url": "ftp://h.example/x"}, "notify.url", "http:// or https://"),
    ({"url": "https:///nohost"}, "notify.url", "no host"),
    ({"url": "https://h.example/x#frag"}, "notify.url", "fragment"),
    ({"url": "https://h.example:99999/"}, "notify.url", "not a valid URL"),
    ({"url": "https://h.example/a b"}, "notify.url", "spaces"),
    ({"url": 7}, "notify.url", "expected a string"),
    ({"secret": SECRET}, "notify", "missing required key 'url'"),
    ({"url": "https://h.example", "secret": SECRET, "secret_env": "X"}, "notify", "not both"),
    ({"url": "https://h.example", "secret": ""}, "notify.secret", "non-empty"),
    ({"url": "https://h.example", "secret_env": "1-bad"}, "notify.secret_env", "environment variable name"),
    ({"url": "https://h.example", "events": "rollout.step"}, "notify.events", "list of event types"),
    ({"url": "https://h.example", "events": []}, "notify.events", "empty"),
    ({"url": "https://h.example", "events": ["rollout.step", "rollout.stpe"]}, "notify.events[1]", "rollout.stpe"),
    ({"url": "https://h.example", "timeout_seconds": 0}, "notify.timeout_seconds", "above 0"),
    ({"url": "https://h.example", "timeout_seconds": True}, "notify.timeout_seconds", "number"),
    ({"url": "https://h.example", "secert": SECRET}, "notify", "unknown key 'secert'"),
    ("https://h.example", "notify", "expected a mapping"),
])
def test_parse_errors_are_one_line_naming_the_key(raw: Any, path: str, words: str) -> None:
    with pytest.raises(NotifyConfigError) as caught:
        notify.parse(raw, "notify")
    message = str(caught.value)
    assert message.startswith(path + ":") or message.startswith(path + " "), message
    assert words in message and "\n" not in message
    assert SECRET not in message and SECRET not in (caught.value.hint or "")


DOC = """\
deployments: []
notify:
  - url: https://hooks.example.com/a
    secret_env: HOOK_SECRET
  - url: http://127.0.0.1:9000/b
    events: [rollout.aborted, agent.failure]
"""


def test_notify_in_the_desired_state_file(tmp_path: Path) -> None:
    state = desired.loads(DOC)
    assert [c.url for c in state.notify] == ["https://hooks.example.com/a", "http://127.0.0.1:9000/b"]
    assert state.notify[0].secret_env == "HOOK_SECRET" and state.notify[1].wants("agent.failure")
    assert not state.notify[1].wants("rollout.step")
    single = desired.loads("notify: {url: 'https://hooks.example.com/a', secret: x}")
    assert single.notify == (notify.parse({"url": "https://hooks.example.com/a", "secret": "x"}),)
    assert desired.loads("deployments: []").notify == ()
    assert desired.unstructure(state)["notify"] == [c.to_record() for c in state.notify]
    assert desired.structure(desired.unstructure(state)) == state

    path = tmp_path / "shop.yaml"
    path.write_text(DOC.replace("agent.failure", "agent.fail"))
    with pytest.raises(DesiredStateError) as caught:
        desired.load(path)
    assert str(caught.value) == f"{path}: notify[1].events[1]: unknown event type 'agent.fail'"
    assert "agent.failure" in caught.value.hint

    path.write_text(f"notify: {{url: 'https://h.example/x', secret: {SECRET}, extra: 1}}\n")
    with pytest.raises(DesiredStateError) as caught:
        desired.load(path)
    assert "notify: unknown key 'extra'" in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(DesiredStateError, match=r"notify\[1\]\.url: .* is listed twice"):
        desired.loads("notify: [{url: 'https://h.example/x'}, {url: 'https://h.example/x'}]")
