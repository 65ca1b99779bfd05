"""`schema notify-event` and the `notify` key of `schema deploy`: the schemas describe what is
really sent and really accepted."""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path
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


DOCS = Path(__file__).resolve().parents[1] / "docs" / "rollouts.md"
SECRET = "k-for-the-docs"


def delivered() -> tuple[dict[str, str], bytes]:
    """An event as a real receiver gets it over HTTP: headers and raw body."""
    bodies: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            bodies.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        config = notify.parse({"url": f"http://127.0.0.1:{server.server_port}/", "secret": SECRET})
        notifier = notify.Notifier(config, env_id="staging", actor="agent@build-7")
        notifier.emit("rollout.aborted", deployment={"id": "01JX3K8M2N4P6Q8R0S2T4V6W8X", "bundle": "shop"},
                      data={"step": 1, "reason": "analysis failed",
                            "analysis": {"verdict": "fail", "requests": 5, "error_rate": 0.6}})
        assert notifier.close(10.0)
    finally:
        server.shutdown()
        server.server_close()
    assert len(bodies) == 1
    return bodies[0]


def delivered_payload() -> dict[str, Any]:
    return json.loads(delivered()[1])


def notifications_section() -> str:
    text = DOCS.read_text()
    start = text.index("\n## Notifications\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


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


def test_the_documented_payload_is_valid_and_the_documented_check_verifies_a_real_signature() -> None:
    section = notifications_section()
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    validator(schema("notify-event")).validate(example)
    for event_type in notify.EVENT_TYPES:
        assert f"| `{event_type}` |" in section  # every type is in the table
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 - the documentation's own snippet
    headers, body = delivered()
    signature = headers["X-Greentic-Signature-256"]
    assert scope["verified"](SECRET, body, signature) is True
    assert scope["verified"]("another secret", body, signature) is False
    assert scope["verified"](SECRET, body + b" ", signature) is False


def test_the_cli_offers_every_generated_schema() -> None:
    from greentic_core.cli.spec_commands import SCHEMA_DOCUMENTS
    from greentic_core.schema import DOCUMENTS

    assert "notify-event" in SCHEMA_DOCUMENTS and sorted(SCHEMA_DOCUMENTS) == sorted(DOCUMENTS)
