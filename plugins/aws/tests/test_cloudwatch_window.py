"""Canary metrics from CloudWatch: the aws-ecs window hook and the ``cloudwatch`` metrics source.

The tests put ALB metric data (``AWS/ApplicationELB``, dimensions ``LoadBalancer`` and
``TargetGroup`` as the ALB publishes them, computed here from our own reads of the moto server)
for a canary's target group, and that data decides the analysis of a real canary rollout run
through ``apply``: the default source (``provider``) reads CloudWatch through the provider's
``greentic_revision_window_metrics`` hook, and ``{type: cloudwatch}`` names it explicitly.

What moto 5.2 can and cannot check: its ``GetMetricData`` sums ``RequestCount`` and the error
counts per period and filters by exact dimensions and time, so the counts, the dimensions and
the window are checked end to end here. It does not compute percentiles: a ``p99`` query over
data points makes it fail with a 500 (its serializer gets ``None``), so no test puts
``TargetResponseTime`` data; the ``p99`` request and the seconds -> milliseconds reading are
checked on their own (``metric_queries`` against botocore's model through the request rules,
``totals`` on a real-shaped answer). Against real CloudWatch the same query returns the p99.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from greentic_core import ProviderError, desired, rollout
from greentic_core.apply import apply
from greentic_core.desired import MetricsSource
from greentic_core.operator import Operator
from greentic_core.plan import revision_name
from greentic_core.registry import Registry
from greentic_core.spec import Lifecycle
from greentic_core.store import Store

from greentic_aws import cloudwatch
from greentic_aws.sandbox import DUMMY_CREDENTIALS, REGION

ENV = "cw"
IMAGE = "public.ecr.aws/docker/library/nginx:1.27"
LISTENER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop-alb/50dc6c495c0c9188/f2f7dc8efc522ab2"
TG = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop-tg01/73e2d6bc24d8a067"


@pytest.fixture(scope="module")
def metrics(moto_endpoint: str) -> Any:
    """Our own CloudWatch client on the moto server (what the ALB would publish, we put)."""
    return boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name=REGION,
                        aws_access_key_id=DUMMY_CREDENTIALS["access_key_id"],
                        aws_secret_access_key=DUMMY_CREDENTIALS["secret_access_key"])


def dimensions(aws: Any, answers: dict[str, Any], target_group_arn: str) -> list[dict[str, str]]:
    """The ALB's dimensions for a target group, from the load balancer's own ARN (not the provider's code)."""
    lb_arn = aws.elb.describe_listeners(ListenerArns=[answers["listener_arn"]])["Listeners"][0]["LoadBalancerArn"]
    return [{"Name": "LoadBalancer", "Value": lb_arn.split(":loadbalancer/", 1)[1]},
            {"Name": "TargetGroup", "Value": target_group_arn.rsplit(":", 1)[1]}]


def publish(metrics: Any, aws: Any, answers: dict[str, Any], target_group_arn: str, at: datetime, *,
            requests: int, target_5xx: int = 0, connection_errors: int = 0) -> None:
    dims = dimensions(aws, answers, target_group_arn)
    data = [("RequestCount", requests), ("HTTPCode_Target_5XX_Count", target_5xx),
            ("TargetConnectionErrorCount", connection_errors)]
    metrics.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": value, "Unit": "Count"}
        for name, value in data if value])


def target_group_of(aws: Any, answers: dict[str, Any], env_id: str, deployment_id: str, revision_id: str) -> str:
    for task_set in aws.task_sets(answers, env_id, deployment_id):
        if task_set["externalId"] == f"gtc-rev-{revision_id}":
            return task_set["loadBalancers"][0]["targetGroupArn"]
    raise AssertionError(f"no task set for {revision_id}")


# --------------------------------------------------------------------------- pure


def test_dimensions_come_from_the_listener_and_target_group_arns() -> None:
    assert cloudwatch.load_balancer_dimension(LISTENER) == "app/shop-alb/50dc6c495c0c9188"
    assert cloudwatch.target_group_dimension(TG) == "targetgroup/shop-tg01/73e2d6bc24d8a067"
    with pytest.raises(ProviderError, match="names no load balancer"):
        cloudwatch.load_balancer_dimension("arn:aws:iam::123456789012:role/x")


def test_the_queries_read_counts_and_the_p99_of_each_target_group() -> None:
    queries = cloudwatch.metric_queries([("R1", TG)], LISTENER)
    assert [(q["Id"], q["MetricStat"]["Metric"]["MetricName"], q["MetricStat"]["Stat"]) for q in queries] == [
        ("r0_requests", "RequestCount", "Sum"), ("r0_target_5xx", "HTTPCode_Target_5XX_Count", "Sum"),
        ("r0_connection_errors", "TargetConnectionErrorCount", "Sum"), ("r0_p99", "TargetResponseTime", "p99")]
    for query in queries:
        assert query["MetricStat"]["Period"] == 60
        assert query["MetricStat"]["Metric"]["Namespace"] == "AWS/ApplicationELB"
        assert query["MetricStat"]["Metric"]["Dimensions"] == [
            {"Name": "LoadBalancer", "Value": "app/shop-alb/50dc6c495c0c9188"},
            {"Name": "TargetGroup", "Value": "targetgroup/shop-tg01/73e2d6bc24d8a067"}]


def test_totals_sum_the_minutes_and_take_the_largest_p99_in_milliseconds() -> None:
    pages = [  # as GetMetricData pages them: one id may come back in two pages
        {"Id": "r0_requests", "Values": [120.0, 80.0]}, {"Id": "r0_target_5xx", "Values": [3.0]},
        {"Id": "r0_connection_errors", "Values": []}, {"Id": "r0_p99", "Values": [0.2125, 0.4]},
        {"Id": "r0_requests", "Values": [10.0]}, {"Id": "r0_connection_errors", "Values": [2.0]},
        {"Id": "r1_requests", "Values": []}, {"Id": "r1_p99", "Values": []},
    ]
    assert cloudwatch.totals([("R1", TG), ("R2", TG)], pages) == {
        "R1": {"requests": 210, "errors": 5, "p99_ms": 400.0},
        "R2": {"requests": 0, "errors": 0, "p99_ms": None}}


def test_the_cloudwatch_source_takes_no_url_and_reads_only_aws_ecs_environments() -> None:
    with pytest.raises(ValueError, match="takes no url or queries"):
        cloudwatch.CloudWatchSource(MetricsSource(type="cloudwatch", url="http://x"))
    error = None
    try:
        desired.loads(json.dumps({"deployments": [{
            "bundle": "web", "revisions": [{"name": "v1", "workload": {"image": IMAGE}}], "traffic": {"v1": "100%"},
            "strategy": {"steps": ["10%"], "analysis": {"max_error_rate": 0.05,
                                                        "source": {"type": "cloudwatch", "url": "http://x"}}}}]}))
    except desired.DesiredStateError as exc:
        error = exc
    assert error is not None and error.message == ("deployment 'web': strategy.analysis.source: cloudwatch reads the "
                                                   "ALB target-group metrics of each revision; it takes no url or "
                                                   "queries")

    class Query:
        deployer, environment_id = "greentic.deployer.k8s", "prod"

    with pytest.raises(ProviderError, match="bound to greentic.deployer.k8s"):
        cloudwatch.CloudWatchSource(MetricsSource(type="cloudwatch"))(Query())


# --------------------------------------------------------------------------- the window hook


def test_the_window_hook_reads_the_revisions_target_groups_over_the_window(
        deployer, world, answers, aws, metrics, calls) -> None:
    deployment_id, (v1, v2, cold) = world.new_deployment(revisions=3, image=IMAGE)
    deployer.warm(world.env, v1.revision_id)
    deployer.warm(world.env, v2.revision_id)
    tg1 = target_group_of(aws, answers, world.env_id, deployment_id, v1.revision_id)
    tg2 = target_group_of(aws, answers, world.env_id, deployment_id, v2.revision_id)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    publish(metrics, aws, answers, tg2, now - timedelta(seconds=20), requests=120, target_5xx=9, connection_errors=3)
    publish(metrics, aws, answers, tg2, now - timedelta(seconds=10), requests=30)
    publish(metrics, aws, answers, tg2, now - timedelta(minutes=5), requests=1000, target_5xx=900)  # before
    publish(metrics, aws, answers, tg1, now - timedelta(seconds=20), requests=77, target_5xx=1)

    calls.reset()
    found = deployer.window_metrics(world.env, [v2.revision_id, v1.revision_id, cold.revision_id],
                                    now - timedelta(seconds=60), now)
    assert calls.by_operation() == {"DescribeServices": 1, "DescribeTaskSets": 1, "GetMetricData": 1}
    assert found == {v2.revision_id: {"requests": 150, "errors": 12, "p99_ms": None},
                     v1.revision_id: {"requests": 77, "errors": 1, "p99_ms": None}}  # cold: no target group
    assert deployer.window_metrics(world.env, [v2.revision_id], now - timedelta(seconds=5), now) == \
        {v2.revision_id: {"requests": 0, "errors": 0, "p99_ms": None}}


# --------------------------------------------------------------------------- canary rollouts


@pytest.fixture
def lane(tmp_path: Path, answers: dict[str, Any], aws: Any, metrics: Any,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """An environment on aws-ecs (moto) with v1 at 100%."""
    monkeypatch.setenv("GREENTIC_CACHE_DIR", str(tmp_path / "cache"))
    store = Store(tmp_path / "home" / "environments")
    op = Operator(store, Registry(allow=["greentic.deployer.aws-ecs"], use_cache=False), actor="tester",
                  command="test_cloudwatch_window")
    op.init_env(ENV, "greentic.deployer.aws-ecs", answers=answers)
    apply(op, ENV, document(["v1"], "v1"))
    yield {"op": op, "store": store, "answers": answers, "aws": aws, "metrics": metrics}


def document(revisions: list[str], target: str, source: dict[str, Any] | None = None) -> desired.DesiredState:
    deployment: dict[str, Any] = {
        "bundle": "shop", "revisions": [{"name": n, "drain_seconds": 0, "workload": {"image": IMAGE}} for n in revisions],
        "traffic": {target: "100%"},
    }
    if source is not None:
        analysis: dict[str, Any] = {"max_error_rate": 0.05, "min_requests": 50, "on_inconclusive": "pause"}
        if source:
            analysis["source"] = source
        deployment["strategy"] = {"type": "canary", "steps": ["20%"], "pause_seconds": 2, "analysis": analysis}
    return desired.loads(json.dumps({"deployments": [deployment]}))


class Publisher(threading.Thread):
    """Once the canary step's window is open, publishes the ALB's numbers for the canary's target group."""

    def __init__(self, lane: dict[str, Any], name: str, **numbers: int) -> None:
        super().__init__(daemon=True)
        self.lane, self.name, self.numbers = lane, name, numbers
        self.published: datetime | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            store = self.lane["store"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                env = store.load(ENV)
                did = env.bundles[0].deployment_id
                state = rollout.load_state(store, ENV, did)
                if state is not None and state.window and state.window.get("started_at") and state.canary:
                    ids = {revision_name(r): r.revision_id for r in env.revisions}
                    if ids.get(self.name) in state.canary:
                        tg = target_group_of(self.lane["aws"], self.lane["answers"], ENV, did, ids[self.name])
                        self.published = datetime.now(timezone.utc)
                        publish(self.lane["metrics"], self.lane["aws"], self.lane["answers"], tg, self.published,
                                **self.numbers)
                        return
                time.sleep(0.05)
            raise TimeoutError("the canary window never opened")
        except BaseException as exc:  # reported by the test
            self.error = exc


def run_canary(lane: dict[str, Any], doc: desired.DesiredState, name: str, **numbers: int) -> Any:
    publisher = Publisher(lane, name, **numbers)
    publisher.start()
    try:
        return apply(lane["op"], ENV, doc)
    finally:
        publisher.join(70)
        assert publisher.error is None, publisher.error
        assert publisher.published is not None


def test_cloudwatch_numbers_abort_a_failing_canary_and_pass_a_healthy_one(lane: dict[str, Any]) -> None:
    store = lane["store"]
    # the default source: the provider, which reads CloudWatch through its window hook
    with pytest.raises(rollout.RolloutAborted) as caught:
        run_canary(lane, document(["v1", "v2"], "v2", source={}), "v2", requests=200, target_5xx=30,
                   connection_errors=2)
    assert "error rate 16.0% (32 of 200) is above 5.0%" in caught.value.message
    env = store.load(ENV)
    states = {revision_name(r): r.lifecycle for r in env.revisions}
    assert states == {"v1": Lifecycle.READY, "v2": Lifecycle.FAILED}
    assert [(e.weight_bps) for e in env.split_for(env.bundles[0].deployment_id).entries] == [10_000]

    # named explicitly; 1 failure in 300 is within 5%
    result = run_canary(lane, document(["v1", "v3"], "v3", source={"type": "cloudwatch"}), "v3",
                        requests=300, target_5xx=1)
    assert [r.outcome for r in result.results if r.step.canary] == ["passed", "completed"]
    state = rollout.load_state(store, ENV, store.load(ENV).bundles[0].deployment_id)
    assert state.phase == "completed"
    assert {k: state.analyses[0][k] for k in ("verdict", "requests", "errors")} == \
        {"verdict": "pass", "requests": 300, "errors": 1}


def test_a_canary_with_no_alb_data_is_inconclusive(lane: dict[str, Any]) -> None:
    """No RequestCount data points: 0 requests, fewer than min_requests: the rollout pauses."""
    with pytest.raises(rollout.RolloutPaused) as caught:
        apply(lane["op"], ENV, document(["v1", "v2"], "v2", source={"type": "cloudwatch"}))
    assert "only 0 canary requests in the window (min_requests 50)" in caught.value.message


def test_the_readme_grants_what_the_canary_metrics_call() -> None:
    """The README's CloudWatch statement grants exactly the CloudWatch calls of cloudwatch.py;
    the ECS reads it makes are in the main policy (checked by test_aws_plugin)."""
    import re

    root = Path(__file__).resolve().parent.parent
    source = (root / "greentic_aws" / "cloudwatch.py").read_text()
    called = {f"cloudwatch:{''.join(p.title() for p in m.split('_'))}"
              for m in re.findall(r'pages\(client, "([a-z_]+)"', source)}
    readme = (root / "README.md").read_text()
    section = readme.split("## Canary metrics from CloudWatch", 1)[1].split("\n## ", 1)[0]
    statement = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert called == {"cloudwatch:GetMetricData"} and set(statement["Action"]) == called
    policy = json.loads(re.search(r"```json\n(.*?)```", readme, re.S).group(1))
    granted = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"ecs:DescribeServices", "ecs:DescribeTaskSets"} <= granted
