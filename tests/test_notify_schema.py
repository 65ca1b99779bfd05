"""`schema notify-event` and the `notify` key of `schema deploy`: the schemas describe what is
really sent and really accepted."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from greentic_core import desired, notify
from greentic_core.cli import cli


def schema(name: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["schema", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def validator(doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def delivered_payload() -> dict[str, Any]:
    """An event as a real receiver gets it over HTTP."""
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        config = notify.parse({"url": f"http://127.0.0.1:{server.server_port}/", "secret": "k"})
        notifier = notify.Notifier(config, env_id="staging", actor="agent@build-7")
        notifier.emit("rollout.aborted", deployment={"id": "01JX3K8M2N4P6Q8R0S2T4V6W8X", "bundle": "shop"},
                      data={"step": 1, "reason": "analysis failed",
                            "analysis": {"verdict": "fail", "requests": 5, "error_rate": 0.6}})
        assert notifier.close(10.0)
    finally:
        server.shutdown()
        server.server_close()
    assert len(bodies) == 1
    return json.loads(bodies[0])


def test_schema_notify_event_validates_a_real_payload() -> None:
    doc = schema("notify-event")
    assert doc["title"] == notify.NOTIFY_EVENT_V1
    assert doc["properties"]["type"]["enum"] == list(notify.EVENT_TYPES)
    check = validator(doc)
    payload = delivered_payload()
    check.validate(payload)
    check.validate({k: v for k, v in payload.items() if k != "deployment"})  # an environment-wide event
    check.validate({**payload, "added_in_a_later_v1": True})  # receivers must tolerate new keys

    broken = [
        {k: v for k, v in payload.items() if k != "actor"},
        {**payload, "type": "rollout.exploded"},
        {**payload, "time": "yesterday"},
        {**payload, "id": "not-a-ulid"},
        {**payload, "schema": "greentic.notify-event.v2"},
        {**payload, "deployment": {"bundle": "shop"}},
        {**payload, "data": []},
    ]
    for bad in broken:
        assert not check.is_valid(bad), bad


def test_schema_deploy_shows_notify_as_one_webhook_or_a_list() -> None:
    check = validator(schema("deploy"))
    one = {"deployments": [], "notify": {"url": "https://hooks.example.com/a", "secret_env": "HOOK_SECRET"}}
    many = {"notify": [{"url": "https://hooks.example.com/a"},
                       {"url": "http://127.0.0.1:9/b", "events": ["rollout.aborted"], "timeout_seconds": 2}]}
    for doc in (one, many):
        check.validate(doc)
        desired.structure(doc)  # and the loader takes what the schema allows
    for bad in ({"notify": {"url": "https://h.example", "secert": "x"}},
                {"notify": {"secret": "x"}},
                {"notify": [{"url": "https://h.example", "events": ["rollout.nope"]}]},
                {"notify": "https://h.example"}):
        assert not check.is_valid(bad), bad
        with pytest.raises(desired.DesiredStateError):
            desired.structure(bad)


def test_the_cli_offers_every_generated_schema() -> None:
    from greentic_core.cli.spec_commands import SCHEMA_DOCUMENTS
    from greentic_core.schema import DOCUMENTS

    assert "notify-event" in SCHEMA_DOCUMENTS and sorted(SCHEMA_DOCUMENTS) == sorted(DOCUMENTS)
