"""The JSON API against its OpenAPI document, with schemathesis, on a running dashboard.

Every operation but the event stream is called with generated inputs (derandomized, so each
run sends the same requests) and every answer is checked against the document: status code
documented, body matching the schema, no server error. Then the same checks on requests that
reach real objects (the ``shop`` environment, its deployment and revisions), which random
inputs would not find. The event stream is checked by hand: its content type and first event.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ui_helpers import TOKEN, Dashboard, LocalEnv

pytestmark = pytest.mark.timeout(180)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def schema(dashboard: Dashboard):
    document = dashboard.api("/api/openapi.json")
    assert document["openapi"].startswith("3.0")
    return schemathesis.openapi.from_dict(document)


def _operations(schema) -> list:
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path != "/api/events":  # a stream that never ends: checked below
            found.append(operation)
    return found


def test_generated_requests_get_documented_answers(schema, dashboard: Dashboard) -> None:
    operations = _operations(schema)
    assert len(operations) == 10, [f"{o.method} {o.path}" for o in operations]
    for operation in operations:
        @settings(max_examples=25, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case) -> None:
            case.call_and_validate(base_url=dashboard.base, headers=AUTH, excluded_checks=excluded)

        # Weights that fit the schema but do not total 10000 are refused (400): a rule JSON Schema
        # cannot state, so "schema-valid data is accepted" does not hold for traffic set.
        excluded = [positive_data_acceptance] if operation.path.endswith("/traffic") else []
        call()


def test_answers_about_real_objects_match_the_document(schema, shop: LocalEnv, dashboard: Dashboard) -> None:
    did = shop.deployment_id("web")

    def check(method: str, path: str, expected: int, **kwargs) -> dict:
        operation = schema[path][method]
        case = operation.Case(**kwargs)
        response = case.call_and_validate(base_url=dashboard.base, headers=AUTH)
        assert response.status_code == expected, (path, kwargs, response.text)
        return response.json()

    envs = check("GET", "/api/environments", 200)
    assert [e["environment_id"] for e in envs["environments"]] == ["shop"]
    env = check("GET", "/api/environments/{env}", 200, path_parameters={"env": "shop"})["environment"]
    assert {r["revision_id"] for r in env["revisions"]} == {shop.v1, shop.v2}
    check("GET", "/api/environments/{env}", 404, path_parameters={"env": "nope"})
    check("GET", "/api/environments/{env}", 400, path_parameters={"env": "not an id"})
    check("GET", "/api/environments/{env}/history", 200, path_parameters={"env": "shop"},
          query={"verb": "traffic", "limit": 5})
    check("GET", "/api/environments/{env}/rollouts/{deployment}", 404, path_parameters={"env": "shop",
                                                                                         "deployment": did})
    check("GET", "/api/plugins", 200)
    runtime = check("GET", "/api/environments/{env}/runtime-config", 200, path_parameters={"env": "shop"})
    assert [b["revision_id"] for b in runtime["runtime_config"]["revisions"]] == [shop.v1]
    traffic = "/api/environments/{env}/deployments/{deployment}/traffic"
    check("POST", traffic, 400, path_parameters={"env": "shop", "deployment": did},
          body={"weights": {shop.v1: 5000}}, media_type="application/json")
    check("POST", traffic, 404, path_parameters={"env": "shop", "deployment": did},
          body={"weights": {"01NOSUCHREVISION000000000": 10000}}, media_type="application/json")
    changed = check("POST", traffic, 200, path_parameters={"env": "shop", "deployment": did},
                    body={"weights": {shop.v1: 9000, shop.v2: 1000}}, media_type="application/json")
    assert changed["changed"] and shop.split("web") == {shop.v1: 9000, shop.v2: 1000}
    check("POST", "/api/environments/{env}/deployments/{deployment}/rollback", 200,
          path_parameters={"env": "shop", "deployment": did}, body={"steps": 1}, media_type="application/json")
    assert shop.split("web") == {shop.v1: 10_000}
    check("POST", "/api/environments/{env}/deployments/{deployment}/rollout/{action}", 404,
          path_parameters={"env": "shop", "deployment": did, "action": "pause"}, body={},
          media_type="application/json")
    check("POST", "/api/environments/{env}/revisions/{revision}/{action}", 409,
          path_parameters={"env": "shop", "revision": shop.v1, "action": "drain"}, body={},
          media_type="application/json")


def test_the_event_stream_is_served_as_server_sent_events(dashboard: Dashboard) -> None:
    request = urllib.request.Request(dashboard.base + "/api/events?env=shop", headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        lines = [response.readline().decode() for _ in range(3)]
    assert lines[0] == "retry: 1000\n" and lines[1] == "event: hello\n"
    assert json.loads(lines[2].removeprefix("data: "))["env"] == "shop"
