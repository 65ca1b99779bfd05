"""Canary metrics from CloudWatch: the ALB target-group metrics of each revision's target group.

Used twice: the provider's ``greentic_revision_window_metrics`` hook (so ``analysis.source:
provider``, the default, reads CloudWatch on aws-ecs) and the ``cloudwatch`` metrics source
(entry-point group ``greentic.metrics_sources``), which names CloudWatch explicitly.

Per revision, over the analysis window ``[start, end]`` (``GetMetricData``, namespace
``AWS/ApplicationELB``, dimensions ``LoadBalancer`` and ``TargetGroup`` of the revision's
target group, period 60 s):

* ``requests`` = sum of ``RequestCount``;
* ``errors`` = sum of ``HTTPCode_Target_5XX_Count`` + ``TargetConnectionErrorCount`` (5xx
  answers, and requests the target never answered);
* ``p99_ms`` = the largest per-minute ``p99`` of ``TargetResponseTime`` (seconds -> ms), None
  without data points.

A metric without data points sums to 0: the ALB publishes ``RequestCount`` and the error counts
only for minutes that had some. ALB metrics have a one-minute resolution and arrive a minute or
more late, so a window should last several minutes (see the README). Pure request building and
result reading (:func:`metric_queries`, :func:`totals`) are apart from the calls
(:func:`window_metrics`). Importing this module imports no boto3.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from greentic_core import ProviderError

from .answers import Answers

NAMESPACE = "AWS/ApplicationELB"
PERIOD_SECONDS = 60
DEPLOYER = "greentic.deployer.aws-ecs"
#: (query id suffix, metric name, statistic) read per revision.
METRICS = (
    ("requests", "RequestCount", "Sum"),
    ("target_5xx", "HTTPCode_Target_5XX_Count", "Sum"),
    ("connection_errors", "TargetConnectionErrorCount", "Sum"),
    ("p99", "TargetResponseTime", "p99"),
)
#: GetMetricData takes at most 500 queries per call.
MAX_QUERIES = 500

_LISTENER = re.compile(r"^arn:aws[a-zA-Z-]*:elasticloadbalancing:[^:]+:\d{12}:listener/((?:app|net|gwy)/[^/]+/[0-9a-f]+)/")
_TARGET_GROUP = re.compile(r"^arn:aws[a-zA-Z-]*:elasticloadbalancing:[^:]+:\d{12}:(targetgroup/[^/]+/[0-9a-f]+)$")


# --------------------------------------------------------------------------- pure


def load_balancer_dimension(listener_arn: str) -> str:
    """``app/<name>/<id>``: the ``LoadBalancer`` dimension of the listener's load balancer."""
    match = _LISTENER.match(listener_arn)
    if match is None:
        raise ProviderError(f"listener ARN {listener_arn[:160]!r} names no load balancer",
                            hint="fix the answer 'listener_arn'")
    return match.group(1)


def target_group_dimension(target_group_arn: str) -> str:
    """``targetgroup/<name>/<id>``: the ``TargetGroup`` dimension of a target group."""
    match = _TARGET_GROUP.match(target_group_arn)
    if match is None:
        raise ProviderError(f"target group ARN {target_group_arn[:160]!r} is malformed")
    return match.group(1)


def metric_queries(targets: Sequence[tuple[str, str]], listener_arn: str) -> list[dict[str, Any]]:
    """The ``MetricDataQueries`` for ``targets`` (revision id, target group ARN), ids ``r<i>_<metric>``."""
    load_balancer = load_balancer_dimension(listener_arn)
    queries = []
    for index, (_, target_group) in enumerate(targets):
        dimensions = [{"Name": "LoadBalancer", "Value": load_balancer},
                      {"Name": "TargetGroup", "Value": target_group_dimension(target_group)}]
        for suffix, name, stat in METRICS:
            queries.append({"Id": f"r{index}_{suffix}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": name, "Dimensions": dimensions},
                "Period": PERIOD_SECONDS, "Stat": stat}})
    return queries


def totals(targets: Sequence[tuple[str, str]], results: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The window totals per revision from ``MetricDataResults`` (pages merged by query id)."""
    values: dict[str, list[float]] = {}
    for result in results:
        values.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values") or ())
    out: dict[str, dict[str, Any]] = {}
    for index, (revision_id, _) in enumerate(targets):
        got = {suffix: values.get(f"r{index}_{suffix}", []) for suffix, _, _ in METRICS}
        p99 = max(got["p99"]) * 1000.0 if got["p99"] else None
        out[revision_id] = {"requests": int(round(sum(got["requests"]))),
                            "errors": int(round(sum(got["target_5xx"]) + sum(got["connection_errors"]))),
                            "p99_ms": None if p99 is None else round(p99, 3)}
    return out


# --------------------------------------------------------------------------- calls


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def connect(answers: Answers) -> Any:
    """The CloudWatch client for these answers (cached like the ECS/ELBv2 clients, same hooks)."""
    import boto3
    from botocore.config import Config

    from . import __version__, ecs

    # the hooks are part of the key: a client made before a hook was added would not carry it
    key = (answers.region, answers.endpoint_url, answers.access_key_id, answers.secret_access_key,
           answers.session_token, tuple(id(hook) for hook in ecs.client_hooks))
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            return found
        session = boto3.session.Session(
            aws_access_key_id=answers.access_key_id, aws_secret_access_key=answers.secret_access_key,
            aws_session_token=answers.session_token, region_name=answers.region)
        local = bool(answers.endpoint_url)
        config = Config(region_name=answers.region, user_agent_extra=f"greentic-deployer-aws/{__version__}",
                        retries={"mode": "standard", "max_attempts": 2 if local else 6},
                        connect_timeout=5, read_timeout=30)
        client = session.client("cloudwatch", endpoint_url=answers.endpoint_url, config=config)
        for hook in list(ecs.client_hooks):
            hook(client)
        _clients[key] = client
        return client


def clear_client_cache() -> None:
    with _clients_lock:
        _clients.clear()


def revision_targets(answers: Answers, env: Any, revision_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(revision id, target group ARN) of each revision whose task set is bound to one."""
    from .ecs import EcsProvider

    provider = EcsProvider(answers, env)
    by_deployment: dict[str, list[str]] = {}
    for rid in revision_ids:
        revision = env.revision(rid)
        if revision is not None:
            by_deployment.setdefault(revision.deployment_id, []).append(rid)
    found: dict[str, str] = {}
    for deployment_id, rids in by_deployment.items():
        service = provider.service(deployment_id)
        sets = provider.task_sets(service) if service is not None else {}
        for rid in rids:
            target_group = provider.bound_target_group(sets[rid]) if rid in sets else None
            if target_group:
                found[rid] = target_group
    return [(rid, found[rid]) for rid in revision_ids if rid in found]


def window_metrics(answers: Answers, env: Any, revision_ids: Sequence[str], start: datetime,
                   end: datetime, *, client: Any = None) -> dict[str, dict[str, Any]]:
    """Totals per revision over ``[start, end]``; a revision without a target group is left out."""
    from .ecs import pages

    targets = revision_targets(answers, env, revision_ids)
    if not targets:
        return {}
    if end <= start:
        end = start + timedelta(seconds=1)  # GetMetricData refuses an empty window
    client = client or connect(answers)
    queries = metric_queries(targets, answers.listener_arn)
    results: list[Mapping[str, Any]] = []
    for first in range(0, len(queries), MAX_QUERIES):
        results += list(pages(client, "get_metric_data", "MetricDataResults",
                              MetricDataQueries=queries[first:first + MAX_QUERIES], StartTime=start, EndTime=end,
                              ScanBy="TimestampAscending"))
    return totals(targets, results)


# --------------------------------------------------------------------------- the `cloudwatch` source


class CloudWatchSource:
    """``analysis.source: {type: cloudwatch}``: the window metrics above, for environments on aws-ecs.

    Takes no ``url`` or ``queries`` (the target group of each revision is the provider's own);
    ``timeout_seconds`` is accepted. Checked when the desired-state file is loaded: no boto3 there.
    """

    def __init__(self, source: Any) -> None:
        if source.url is not None or source.queries is not None:
            raise ValueError("cloudwatch reads the ALB target-group metrics of each revision; it takes no url or "
                             "queries")

    def __call__(self, query: Any) -> dict[str, dict[str, Any]]:
        if query.deployer != DEPLOYER:
            raise ProviderError(f"cloudwatch reads the target groups of the {DEPLOYER} deployer; environment "
                                f"{query.environment_id} is bound to {query.deployer}",
                                hint="use source type prometheus (or provider) for this environment")
        return window_metrics(Answers.parse(query.answers), query.env, list(query.revision_ids), query.start,
                              query.end)
