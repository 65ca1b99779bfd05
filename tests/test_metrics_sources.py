"""Metrics sources of canary analysis: the desired-state ``analysis.source``, the templates and
answers of the Prometheus source (pure), the ``greentic_revision_window_metrics`` hook and the
``greentic.metrics_sources`` entry points, and how :func:`rollout.measure` judges a window with each.

The Prometheus source against a real Prometheus server is in
``plugins/local_process/tests/test_canary_prometheus.py``; CloudWatch against moto in
``plugins/aws/tests/test_cloudwatch_window.py``.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from greentic_core import desired, metrics_sources, rollout
from greentic_core.apply import apply
from greentic_core.cli import cli
from greentic_core.codec import format_timestamp
from greentic_core.desired import Analysis, MetricQueries, MetricsSource, _FAST as CONVERTER
from greentic_core.errors import DecodeError
from greentic_core.metrics_sources import MetricsUnavailable, WindowQuery
from greentic_core.operator import Operator
from greentic_core.plan import revision_name
from greentic_core.registry import Registry
from greentic_core.store import Store
from plugin_factory import forget_modules, good_plugin_source, make_dist, site_without_deployers

ENV = "dev"
T0 = datetime(2026, 5, 19, 12, 0, 0, tzinfo=timezone.utc)


def doc(source: str, *, analysis: str = "max_error_rate: 0.05", step: bool = False) -> str:
    """A desired state whose canary analysis has ``source`` (YAML flow text)."""
    where = ("steps: [{weight: 10%, analysis: {" + analysis + ", source: " + source + "}}]") if step else \
        ("steps: [10%]\n      analysis: {" + analysis + ", source: " + source + "}")
    return f"""
deployments:
  - bundle: web
    revisions:
      - {{name: v1, workload: {{image: "web:1"}}}}
      - {{name: v2, workload: {{image: "web:2"}}}}
    traffic: {{v2: 100%}}
    strategy:
      {where}
"""


PROM = ('{type: prometheus, url: "http://prometheus.monitoring:9090", '
        'queries: {requests: "sum(increase(http_requests_total{revision=\\"{{revision}}\\"}[{{window}}]))", '
        'errors: "sum(increase(http_errors_total{revision=\\"{{revision}}\\"}[{{window}}]))"}}')


def error_of(text: str) -> Exception:
    with pytest.raises((DecodeError, desired.DesiredStateError)) as caught:
        desired.loads(text)
    return caught.value


# --------------------------------------------------------------------------- templates (pure)


def test_placeholders_are_filled_and_values_escaped_for_a_promql_string() -> None:
    values = {"revision": "01JAB", "revision_name": "v2", "deployment": "01JDEP", "bundle": 'we"b\\x',
              "environment": "prod", "split_index": "1", "window": "63s"}
    text = 'sum(x{rev="{{revision}}", n="{{ revision_name }}", b="{{bundle}}", d="{{deployment | lower}}"}[{{window}}])'
    assert metrics_sources.render(text, values) == \
        'sum(x{rev="01JAB", n="v2", b="we\\"b\\\\x", d="01jdep"}[63s])'
    assert metrics_sources.template_problems(text) == []


@pytest.mark.parametrize("template, problem", [
    ("x{{rev}}", "unknown placeholder {{rev}}"),
    ("x{{revision | upper}}", "unknown filter 'upper'"),
    ("x{{revision}", "malformed placeholder"),
    ("x}}", "malformed placeholder"),
    ("   ", "the query is empty"),
])
def test_template_mistakes_are_named(template: str, problem: str) -> None:
    found = metrics_sources.template_problems(template)
    assert found and problem in found[0], found


def test_window_is_a_prometheus_duration_in_whole_seconds_rounded_up() -> None:
    assert metrics_sources.prometheus_duration(63.0) == "63s"
    assert metrics_sources.prometheus_duration(62.2) == "63s"
    assert metrics_sources.prometheus_duration(0.2) == "1s"
    query = WindowQuery(env=None, deployer="d", answers={}, state_dir=None, environment_id="prod",
                        deployment_id="01JDEP", bundle_id="web", revision_ids=("01JAB",), names={"01JAB": "v2"},
                        split_index={"01JAB": 1}, start=T0, end=T0 + timedelta(seconds=90, milliseconds=1))
    assert query.values("01JAB") == {"revision": "01JAB", "revision_name": "v2", "deployment": "01JDEP",
                                     "bundle": "web", "environment": "prod", "split_index": "1", "window": "91s"}


# --------------------------------------------------------------------------- Prometheus answers (pure)


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {"i": str(i)}, "value": [1.7e9, v]}
                                                     for i, v in enumerate(values)]}}


def test_a_vector_answer_is_summed_or_maximised() -> None:
    assert metrics_sources.query_value(vector("3", "4.5"), what="q") == 7.5
    assert metrics_sources.query_value(vector("3", "NaN", "4.5"), what="q", aggregate="max") == 4.5
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "12"]}}
    assert metrics_sources.query_value(scalar, what="q") == 12
    assert math.isnan(metrics_sources.query_value(vector("NaN"), what="q"))


@pytest.mark.parametrize("body, words", [
    (vector(), "returned no series"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "range vector"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}, "bad_data: parse error"),
    ({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}, "not a number"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": ["x"]}]}}, "malformed sample"),
    ([], "not a JSON object"),
])
def test_an_answer_without_a_number_is_unavailable_never_zero(body: Any, words: str) -> None:
    with pytest.raises(MetricsUnavailable) as caught:
        metrics_sources.query_value(body, what="the errors query for v2")
    assert words in caught.value.message and caught.value.message.startswith("the errors query for v2")


# --------------------------------------------------------------------------- the desired-state file


def test_the_default_source_is_the_provider_and_is_not_written_back() -> None:
    analysis = desired.loads(doc("{type: provider}")).deployments[0].strategy.analysis
    assert analysis.source == MetricsSource() and analysis.source.type == "provider"
    assert CONVERTER.unstructure(analysis) == {"max_error_rate": 0.05}  # rollout states as before


def test_a_prometheus_source_round_trips_as_the_rollout_state_records_it() -> None:
    analysis = desired.loads(doc(PROM, step=True)).deployments[0].strategy.steps[0].analysis
    assert analysis.source.type == "prometheus" and analysis.source.url == "http://prometheus.monitoring:9090"
    assert '{{revision}}' in analysis.source.queries.requests and analysis.source.queries.p99_ms is None
    recorded = json.loads(json.dumps(CONVERTER.unstructure(analysis)))  # what _step_record stores
    assert recorded["source"]["type"] == "prometheus" and "p99_ms" not in recorded["source"]["queries"]
    assert CONVERTER.structure(recorded, Analysis) == analysis  # what the agent rebuilds


def test_an_unknown_key_in_a_source_is_refused_naming_its_path() -> None:
    message = str(error_of(doc(PROM[:-1] + ", timeout: 5}")))
    assert "unknown key 'timeout'" in message and "strategy.analysis.source" in message
    assert "\n" not in message
    message = str(error_of(doc('{type: prometheus, url: "http://p:9090", queries: {requests: a, errors: b, p95: c}}')))
    assert "unknown key 'p95'" in message and "source.queries" in message


@pytest.mark.parametrize("source, analysis, words", [
    ('{type: provider, url: "http://p:9090"}', "max_error_rate: 0.05", "url is not a setting of the provider"),
    ("{type: prometheus}", "max_error_rate: 0.05", "prometheus needs url"),
    ('{type: prometheus, url: "http://p:9090"}', "max_error_rate: 0.05", "prometheus needs queries"),
    ('{type: prometheus, url: "ftp://p", queries: {requests: a, errors: b}}', "max_error_rate: 0.05",
     "url must be http:// or https://"),
    ('{type: prometheus, url: "http://me:hunter2@p:9090", queries: {requests: a, errors: b}}',
     "max_error_rate: 0.05", "url holds a password"),
    ('{type: prometheus, url: "http://p:9090", queries: {requests: "a{{rev}}", errors: b}}', "max_error_rate: 0.05",
     "queries.requests: unknown placeholder {{rev}}"),
    ('{type: prometheus, url: "http://p:9090", queries: {requests: a, errors: b}}', "max_p99_ms: 300",
     "max_p99_ms but the source has no queries.p99_ms"),
    ('{type: prometheus, url: "http://p:9090", queries: {requests: a, errors: b}, timeout_seconds: 0}',
     "max_error_rate: 0.05", "timeout_seconds 0 must be above 0"),
    ('{type: Datadog}', "max_error_rate: 0.05", "is not a source name"),
    ('{type: datadog}', "max_error_rate: 0.05", "no metrics source named 'datadog' is installed"),
])
def test_source_settings_are_checked_when_the_file_is_loaded(source: str, analysis: str, words: str) -> None:
    for step in (False, True):
        error = error_of(doc(source, analysis=analysis, step=step))
        path = "strategy.steps[0].analysis.source" if step else "strategy.analysis.source"
        assert words in error.message and f"deployment 'web': {path}: " in error.message, error.message
        assert "hunter2" not in error.message and "\n" not in error.message


def test_a_password_from_an_environment_variable_is_accepted() -> None:
    source = '{type: prometheus, url: "https://me:${PROM_PASSWORD}@p:9090", queries: {requests: a, errors: b}}'
    assert desired.loads(doc(source)).deployments[0].strategy.analysis.source.url.endswith("@p:9090")


def test_a_missing_source_names_the_distribution_to_install() -> None:
    error = metrics_sources.not_installed("cloudwatch", ["prometheus"])
    assert error.message == "no metrics source named 'cloudwatch' is installed (installed: prometheus, provider)"
    assert error.hint == "install it: pip install greentic-deployer-aws"


def test_a_cloudwatch_source_without_the_aws_distribution_is_one_line_from_plan(tmp_path: Path) -> None:
    """A real environment without greentic-deployer-aws installed (a site-packages mirror without
    any deployer distribution): plan refuses the file in one line with the pip hint."""
    argv = site_without_deployers(tmp_path / "site")
    path = tmp_path / "deploy.yaml"
    path.write_text(doc("{type: cloudwatch}"))
    done = subprocess.run([*argv, "--home", str(tmp_path / "home"), "plan", "-f", str(path), "dev"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no metrics source named 'cloudwatch' is installed" in done.stderr, done.stderr
    assert "pip install greentic-deployer-aws" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2, done.stderr


def test_schema_deploy_shows_the_source_keys() -> None:
    result = CliRunner().invoke(cli, ["schema", "deploy"], catch_exceptions=False)
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    defs = schema["$defs"]
    assert defs["Analysis"]["properties"]["source"] == {"$ref": "#/$defs/MetricsSource"}
    assert set(defs["MetricsSource"]["properties"]) == {"type", "url", "queries", "timeout_seconds"}
    assert defs["MetricsSource"]["additionalProperties"] is False
    assert set(defs["MetricQueries"]["properties"]) == {"requests", "errors", "p99_ms"}
    assert defs["MetricQueries"]["required"] == ["requests", "errors"]


# --------------------------------------------------------------------------- entry points


def test_prometheus_is_registered_by_greentic_core() -> None:
    found = {ep.name: ep for ep in metrics_sources.installed()}
    assert found["prometheus"].distribution == "greentic-core"
    assert metrics_sources.load_factory("prometheus") is metrics_sources.PrometheusSource


STATIC_SOURCE = '''
from greentic_core import ProviderError


class StaticSource:
    """A third-party source: numbers from its url (static://REQUESTS/ERRORS), per canary revision."""

    def __init__(self, source):
        if not (source.url or "").startswith("static://"):
            raise ValueError("static needs url: static://REQUESTS/ERRORS")
        self.requests, self.errors = (int(x) for x in source.url[len("static://"):].split("/"))
        self.queries = source.queries

    def __call__(self, query):
        if self.requests < 0:
            raise ProviderError("the static backend is down")
        seen = dict(revisions=list(query.revision_ids), start=query.start.isoformat(), deployer=query.deployer,
                    window=query.values(query.revision_ids[0])["window"], split_index=dict(query.split_index))
        with open(query.answers.get("region") or "/dev/null", "a") as fh:
            import json
            fh.write(json.dumps(seen) + "\\n")
        return {rid: {"requests": self.requests, "errors": self.errors, "p99_ms": 12.5} for rid in query.revision_ids}
'''


@pytest.fixture
def source_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Installs a third-party source ``static`` and a broken one ``broken`` (real dist-info)."""
    site = tmp_path / "source-site"
    make_dist(site, "acme-metrics-static", "2.0.0",
              modules={"acme_static_source.py": STATIC_SOURCE,
                       "acme_broken_source.py": "raise ImportError('needs acme-sdk')\n"},
              entry_points={"static": "acme_static_source:StaticSource",
                            "broken": "acme_broken_source:Source"}, group=metrics_sources.GROUP)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
    yield site
    forget_modules(["acme_static_source", "acme_broken_source"], under=site)


def test_a_third_party_source_is_found_and_checks_its_own_settings(source_site: Path) -> None:
    loaded = desired.loads(doc('{type: static, url: "static://40/2"}'))
    assert loaded.deployments[0].strategy.analysis.source.type == "static"
    error = error_of(doc('{type: static, url: "http://x"}'))
    assert error.message == "deployment 'web': strategy.analysis.source: static needs url: static://REQUESTS/ERRORS"
    error = error_of(doc("{type: broken}"))
    assert "metrics source broken (acme-metrics-static 2.0.0) cannot be loaded: ImportError: needs acme-sdk" \
        in error.message
    assert error.hint == "reinstall it: pip install --force-reinstall acme-metrics-static"


# --------------------------------------------------------------------------- measure() with each source

WINDOW_PLUGIN = "acme.deployer.window"
WINDOW_MODULE = "acme_window_plugin"
WINDOW_HOOKS = '''
import json as _json

from greentic_core import ProviderError

WINDOW = {"mode": "numbers", "numbers": {}, "calls": []}
COUNTERS = {}


@hookimpl
def greentic_revision_window_metrics(env, revision_ids, start, end):
    WINDOW["calls"].append({"revision_ids": list(revision_ids), "start": start, "end": end})
    if WINDOW["mode"] == "none":
        return None
    if WINDOW["mode"] == "fail":
        raise ProviderError("the metrics API said 503 Slow Down")
    return {rid: WINDOW["numbers"][rid] for rid in revision_ids if rid in WINDOW["numbers"]}


@hookimpl
def greentic_revision_metrics(env):
    return {rid: dict(numbers) for rid, numbers in COUNTERS.items()}
'''


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """An environment on an in-memory deployer with both metrics hooks: v1 90%, canary v2 10%,
    and the rollout state of a canary step whose window opened at ``started``."""
    site = tmp_path / "site"
    make_dist(site, "acme-deployer-window", "1.0.0",
              modules={f"{WINDOW_MODULE}.py": good_plugin_source(path=WINDOW_PLUGIN, extra=WINDOW_HOOKS)},
              entry_points={WINDOW_PLUGIN: WINDOW_MODULE})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
    store = Store(tmp_path / "home" / "environments")
    op = Operator(store, Registry(use_cache=False), actor="tester", command="test")
    op.init_env(ENV, WINDOW_PLUGIN, answers={"region": str(tmp_path / "source-calls.jsonl")})
    apply(op, ENV, desired.loads("""
deployments:
  - bundle: web
    revisions:
      - {name: v1, workload: {image: "web:1"}}
      - {name: v2, workload: {image: "web:2"}}
    traffic: {v1: 90%, v2: 10%}
"""))
    env = store.load(ENV)
    ids = {revision_name(r): r.revision_id for r in env.revisions}
    did = env.bundles[0].deployment_id
    plugin = sys.modules[WINDOW_MODULE]
    started = datetime.now(timezone.utc) - timedelta(seconds=30)
    state = rollout.RolloutState(env_id=ENV, deployment_id=did, bundle_id="web", canary=[ids["v2"]],
                                 names={ids["v1"]: "v1", ids["v2"]: "v2"},
                                 window={"step": 0, "started_at": format_timestamp(started),
                                         "metrics": {ids["v2"]: {"requests": 100, "errors": 1, "p99_ms": None}}})
    pairs = [(ids["v1"], 9000), (ids["v2"], 1000)]
    yield {"op": op, "ids": ids, "state": state, "pairs": pairs, "plugin": plugin, "started": started,
           "calls": tmp_path / "source-calls.jsonl"}
    forget_modules([WINDOW_MODULE], under=site)


def measure(w: dict[str, Any], **analysis: Any) -> rollout.AnalysisResult:
    return rollout.measure(w["op"], ENV, w["state"], Analysis(**analysis), w["pairs"])


def test_the_registry_accepts_the_window_hook_as_optional(world: dict[str, Any]) -> None:
    record = world["op"].registry.record(WINDOW_PLUGIN)
    assert record.ok and "greentic_revision_window_metrics" in record.hooks
    assert hasattr(Registry(use_cache=False).pm.hook, "greentic_revision_window_metrics")


def test_the_provider_window_hook_decides_over_the_window(world: dict[str, Any]) -> None:
    v2 = world["ids"]["v2"]
    world["plugin"].WINDOW["numbers"] = {v2: {"requests": 200, "errors": 30, "p99_ms": 80.0}}
    world["plugin"].COUNTERS[v2] = {"requests": 5000, "errors": 1}  # cumulative: must not be read
    result = measure(world, max_error_rate=0.05, min_requests=50)
    assert result.verdict == "fail" and result.requests == 200 and result.errors == 30 and result.p99_ms == 80.0
    (call,) = world["plugin"].WINDOW["calls"]
    assert call["revision_ids"] == [v2]
    assert call["start"] == world["started"]  # the recorded started_at, as a UTC datetime
    assert call["start"].tzinfo is not None and call["start"] < call["end"] <= datetime.now(timezone.utc)

    world["plugin"].WINDOW["numbers"] = {v2: {"requests": 200, "errors": 2, "p99_ms": 80.0}}
    assert measure(world, max_error_rate=0.05, min_requests=50).verdict == "pass"
    world["plugin"].WINDOW["numbers"] = {}  # no requests for the canary in the window
    result = measure(world, max_error_rate=0.05, min_requests=50)
    assert result.verdict == "inconclusive" and result.requests == 0


def test_a_window_hook_that_cannot_say_falls_back_to_the_cumulative_counters(world: dict[str, Any]) -> None:
    v2 = world["ids"]["v2"]
    world["plugin"].WINDOW["mode"] = "none"
    world["plugin"].COUNTERS[v2] = {"requests": 300, "errors": 41}  # the window started at 100 / 1
    result = measure(world, max_error_rate=0.05, min_requests=50)
    assert result.verdict == "fail" and (result.requests, result.errors) == (200, 40)
    assert len(world["plugin"].WINDOW["calls"]) == 1


def test_a_failing_window_hook_makes_the_window_inconclusive_quoting_it(world: dict[str, Any]) -> None:
    world["plugin"].WINDOW["mode"] = "fail"
    result = measure(world, max_error_rate=0.05)
    assert result.verdict == "inconclusive"
    assert "the metrics API said 503 Slow Down" in result.reasons[0]


def test_a_third_party_source_gets_the_window_and_decides(world: dict[str, Any], source_site: Path) -> None:
    source = MetricsSource(type="static", url="static://100/20")
    result = measure(world, max_error_rate=0.05, min_requests=50, source=source)
    assert result.verdict == "fail" and (result.requests, result.errors, result.p99_ms) == (100, 20, 12.5)
    assert world["plugin"].WINDOW["calls"] == []  # the provider's hook is not asked
    seen = json.loads(world["calls"].read_text().splitlines()[0])
    assert seen["revisions"] == [world["ids"]["v2"]] and seen["deployer"] == WINDOW_PLUGIN
    assert seen["split_index"] == {world["ids"]["v1"]: 0, world["ids"]["v2"]: 1}
    assert seen["window"] in ("30s", "31s", "32s")

    down = MetricsSource(type="static", url="static://-1/0")
    result = measure(world, max_error_rate=0.05, min_requests=50, source=down)
    assert result.verdict == "inconclusive"
    assert result.reasons == ("metrics source static: the static backend is down",)


def test_a_canary_not_serving_fails_even_when_the_source_is_unavailable(world: dict[str, Any]) -> None:
    world["plugin"].STATE["revisions"][world["ids"]["v2"]] = {"serving": False}
    result = measure(world, max_error_rate=0.05, source=MetricsSource(
        type="prometheus", url=f"http://127.0.0.1:{closed_port()}",
        queries=MetricQueries(requests="sum(r)", errors="sum(e)")))
    assert result.verdict == "fail" and "is not serving" in result.reasons[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens there


def test_an_unreachable_prometheus_is_inconclusive_without_its_password(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PROM_PASSWORD", "s3cr3t-Pw")
    source = MetricsSource(type="prometheus", url=f"http://grafana:${{TEST_PROM_PASSWORD}}@127.0.0.1:{closed_port()}",
                           queries=MetricQueries(requests="sum(r)", errors="sum(e)"), timeout_seconds=2)
    result = measure(world, max_error_rate=0.05, source=source)
    assert result.verdict == "inconclusive"
    (reason,) = result.reasons
    assert reason.startswith("prometheus at http://grafana:***@127.0.0.1:") and "is unreachable" in reason
    assert "s3cr3t-Pw" not in reason

    monkeypatch.delenv("TEST_PROM_PASSWORD")
    result = measure(world, max_error_rate=0.05, source=source)
    assert result.reasons == ("environment variable TEST_PROM_PASSWORD (used in the source url) is not set",)


def test_no_thresholds_pass_whatever_the_source_says(world: dict[str, Any]) -> None:
    source = MetricsSource(type="prometheus", url=f"http://127.0.0.1:{closed_port()}",
                           queries=MetricQueries(requests="sum(r)", errors="sum(e)"))
    assert measure(world, source=source).verdict == "pass"
