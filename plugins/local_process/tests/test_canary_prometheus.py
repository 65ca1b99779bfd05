"""Canary analysis from a real Prometheus: ``analysis.source: {type: prometheus, ...}``.

A real Prometheus server (Debian's ``prometheus``, a temporary config and data directory, a free
loopback port, scraping every second) scrapes a tiny exporter run by the test: request and error
counters labelled by revision name, growing from a thread as an application's own metrics grow
under load. Canary rollouts go through ``apply`` on the real local-process provider (real
processes, the real router), with the error rate coming from PromQL:

* a canary whose counters say half of its requests fail is aborted, although the revision
  itself answers every request it gets (so the provider's own counters would not fail it: only
  PromQL can), and a canary whose counters are clean is promoted;
* a query that returns no series makes the window inconclusive: the rollout pauses and says
  which query returned nothing.
"""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from greentic_core import desired, rollout
from greentic_core.apply import apply
from greentic_core.operator import Operator
from greentic_core.plan import revision_name
from greentic_core.registry import Registry
from greentic_core.spec import Lifecycle
from greentic_core.store import Store

from prometheus_server import Exporter, PrometheusServer

pytestmark = pytest.mark.timeout(180)

ENV = "lp"
REQUESTS = 'sum(increase(demo_http_requests_total{revision_name="{{revision_name}}"}[{{window}}]))'
ERRORS = 'sum(increase(demo_http_request_errors_total{revision_name="{{revision_name}}"}[{{window}}]))'


def app(version: str) -> dict[str, Any]:
    return {"command": [sys.executable, "-m", "greentic_local_process.sample_app"], "env": {"VERSION": version}}


def document(revisions: list[str], target: str, prometheus_url: str | None = None,
             requests: str = REQUESTS) -> desired.DesiredState:
    deployment: dict[str, Any] = {
        "bundle": "web",
        "revisions": [{"name": name, "drain_seconds": 1, "workload": app(name)} for name in revisions],
        "traffic": {target: "100%"},
    }
    if prometheus_url is not None:
        deployment["strategy"] = {
            "type": "canary", "steps": ["20%"], "pause_seconds": 3,
            "analysis": {"max_error_rate": 0.1, "min_requests": 50, "on_inconclusive": "pause",
                         "source": {"type": "prometheus", "url": prometheus_url, "timeout_seconds": 5,
                                    "queries": {"requests": requests, "errors": ERRORS}}},
        }
    return desired.loads(json.dumps({"environment": ENV, "deployments": [deployment]}))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, Exporter]]:
    exporter = Exporter()
    exporter.serve("v2", requests_per_tick=10, errors_per_tick=5)  # 200 requests/s, half of them failing
    exporter.serve("v3", requests_per_tick=10, errors_per_tick=0)  # 200 requests/s, none failing
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), [exporter.address])
    try:
        server.wait_for_samples("demo_http_requests_total")
        yield server, exporter
    finally:
        server.close()
        exporter.close()


@pytest.fixture
def lp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    pytest.importorskip("greentic_local_process.router")
    from greentic_local_process import processes
    from greentic_local_process.sandbox import cleanup

    for name in ("GREENTIC_HOME", "GREENTIC_DEPLOYERS", "GREENTIC_DISABLE_DEPLOYERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
    state = tmp_path / "lp-state"
    store = Store(tmp_path / "home" / "environments")
    op = Operator(store, Registry(use_cache=False), actor="tester", command="test_canary_prometheus")
    try:
        op.init_env(ENV, "greentic.deployer.local-process",
                    answers={"listen_addr": f"127.0.0.1:{processes.free_port()}", "state_dir": str(state),
                             "stop_grace_seconds": 1, "warm_timeout_seconds": 30})
        apply(op, ENV, document(["v1"], "v1"))  # the stable revision, routed directly
        yield {"op": op, "store": store}
    finally:
        cleanup(state, 2.0)


def names(store: Store) -> dict[str, Any]:
    return {revision_name(r): r for r in store.load(ENV).revisions}


def split(store: Store) -> list[tuple[str, int]]:
    env = store.load(ENV)
    by_id = {r.revision_id: revision_name(r) for r in env.revisions}
    return sorted((by_id[e.revision_id], e.weight_bps) for e in env.split_for(env.bundles[0].deployment_id).entries)


def test_promql_error_rate_aborts_a_canary_and_promotes_a_clean_one(lp: dict[str, Any], prometheus) -> None:
    server, _ = prometheus
    op, store = lp["op"], lp["store"]

    with pytest.raises(rollout.RolloutAborted) as caught:
        apply(op, ENV, document(["v1", "v2"], "v2", server.url))
    assert "step 1 analysis failed" in caught.value.message and "is above 10.0%" in caught.value.message
    revisions = names(store)
    assert revisions["v2"].lifecycle == Lifecycle.FAILED and revisions["v1"].lifecycle == Lifecycle.READY
    assert split(store) == [("v1", 10_000)]
    state = rollout.load_state(store, ENV, store.load(ENV).bundles[0].deployment_id)
    (analysis,) = state.analyses
    # 200 requests/s over a window of about 3 s, half failing: what PromQL's increase() says
    assert analysis["verdict"] == "fail" and analysis["requests"] >= 300 and 0.4 <= analysis["error_rate"] <= 0.6
    # the canary process itself answered nothing with an error: the provider's counters were clean
    counters = op.bind(store.load(ENV)).metrics(store.load(ENV)) or {}
    assert counters.get(revisions["v2"].revision_id, {}).get("errors", 0) == 0

    result = apply(op, ENV, document(["v1", "v3"], "v3", server.url))
    assert [r.outcome for r in result.results if r.step.canary] == ["passed", "completed"]
    state = rollout.load_state(store, ENV, store.load(ENV).bundles[0].deployment_id)
    assert state.phase == "completed"
    assert state.analyses[0]["verdict"] == "pass" and state.analyses[0]["requests"] >= 300
    assert state.analyses[0]["errors"] == 0
    assert split(store) == [("v3", 10_000)]


def test_a_query_without_series_is_inconclusive_and_pauses(lp: dict[str, Any], prometheus) -> None:
    server, _ = prometheus
    op, store = lp["op"], lp["store"]
    # v4 has no series at all in Prometheus: the requests query returns an empty vector
    with pytest.raises(rollout.RolloutPaused) as caught:
        apply(op, ENV, document(["v1", "v4"], "v4", server.url))
    assert "returned no series" in caught.value.message
    state = rollout.load_state(store, ENV, store.load(ENV).bundles[0].deployment_id)
    assert state.phase == "paused"
    assert state.reason.startswith("step 1 inconclusive: no metrics: the requests query for v4")
    assert "returned no series" in state.reason
    (analysis,) = state.analyses
    assert analysis["verdict"] == "inconclusive" and analysis["requests"] is None
    assert split(store) == [("v1", 8000), ("v4", 2000)]  # held where the step put it
    assert names(store)["v4"].lifecycle == Lifecycle.READY


def test_a_failing_query_is_inconclusive_quoting_prometheus(lp: dict[str, Any], prometheus) -> None:
    server, _ = prometheus
    with pytest.raises(rollout.RolloutPaused) as caught:
        apply(lp["op"], ENV, document(["v1", "v5"], "v5", server.url, requests="sum(rate(demo_http_requests_total[5s]"))
    assert "the requests query for v5 (" in caught.value.message
    assert 'failed: bad_data: invalid parameter "query"' in caught.value.message


REPO = Path(__file__).resolve().parents[3]


def documented_sources() -> list[tuple[str, dict[str, Any]]]:
    """Every Prometheus source of a ```yaml example in docs/rollouts.md and the k8s README."""
    import re

    import yaml

    found = []
    for doc in (REPO / "docs" / "rollouts.md", REPO / "plugins" / "k8s" / "README.md"):
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
            if "type: prometheus" not in block and "queries:" not in block:
                continue
            data = yaml.safe_load(textwrap.dedent(block))
            if not isinstance(data, dict):
                continue
            if "strategy" in data:
                source = data["strategy"]["analysis"].get("source")
            elif "queries" in data:  # a fragment: the queries of a source
                source = {"type": "prometheus", "url": "http://prometheus.example:9090", "queries": data["queries"]}
            else:
                continue
            if source and source.get("type") == "prometheus":
                found.append((f"{doc.name}: {source['queries']['requests'][:60]}", {"strategy": data.get(
                    "strategy", {"type": "canary", "steps": ["10%"], "analysis": {"max_error_rate": 0.01}}),
                    "source": source}))
    return found


def test_the_documented_examples_load_and_prometheus_parses_their_queries(prometheus) -> None:
    """The worked examples of docs/rollouts.md and the k8s README are valid desired state, and
    every query, filled in, is PromQL a real Prometheus accepts (an empty answer is fine here)."""
    from greentic_core import metrics_sources

    server, _ = prometheus
    examples = documented_sources()
    assert len(examples) >= 3, [name for name, _ in examples]
    for name, example in examples:
        strategy = {**example["strategy"], "analysis": {**example["strategy"]["analysis"], "source": example["source"]}}
        loaded = desired.loads(json.dumps({"deployments": [{
            "bundle": "web", "revisions": [{"name": "v1", "workload": app("1")}, {"name": "v2", "workload": app("2")}],
            "traffic": {"v2": "100%"}, "strategy": strategy}]}))
        queries = loaded.deployments[0].strategy.analysis.source.queries
        values = {"revision": "01JXKQ3V9S6W8Y2ZBCDEFGHJKM", "revision_name": "v2", "deployment": "01JXKQ3V9S6W8Y2ZBCDEFGHJKN",
                  "bundle": "web", "environment": "prod", "split_index": "1", "window": "301s"}
        for key in ("requests", "errors", "p99_ms"):
            template = getattr(queries, key)
            if template is None:
                continue
            body = metrics_sources._post_query(server.url, metrics_sources.render(template, values),
                                               datetime.now(timezone.utc), 5, f"{name} {key}")
            assert body.get("status") == "success", (name, key, body)
