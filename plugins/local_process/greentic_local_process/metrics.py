"""The router's Prometheus metrics: ``GET /metrics`` on its admin port (text exposition format).

Built at scrape time from the same counters ``/status`` reports (summed over workers), with the
official ``prometheus_client`` library, so the request path pays nothing for them and canary
analysis (``greentic_revision_metrics``, which reads ``/status``) and a Prometheus scrape agree:

==============================================  ========  ===========================================
metric                                          type      labels
==============================================  ========  ===========================================
``greentic_router_requests_total``              counter   deployment, revision, class (``2xx`` ...
                                                          ``5xx``, ``error``: no answer from the
                                                          revision, the router answered 502/504)
``greentic_router_request_duration_seconds``    histogram deployment, revision (answered requests)
``greentic_router_in_flight``                   gauge     deployment, revision (open WebSocket
                                                          tunnels included)
``greentic_router_upstream_connect_errors_total`` counter deployment, revision
``greentic_router_retries_total``               counter   deployment, revision
``greentic_router_unrouted_total``              counter   (503: no deployment or revision to route to)
``greentic_router_table_generation``            gauge
``greentic_router_reloads_total``               counter
``greentic_supervisor_restarts_total``          counter   revision (``router`` for the router)
==============================================  ========  ===========================================

The duration buckets are boundaries of the router's own latency histogram (each 10% wider than
the one before), so their counts are exact; their ``le`` values are the nearest such boundaries
to 1 ms, 2.5 ms, 5 ms ... 10 s.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

_WANTED = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _bucket_indexes(bounds: list[float]) -> list[int]:
    """For each wanted boundary, the index of the nearest boundary of the router's histogram."""
    chosen = []
    for wanted in _WANTED:
        i = min(range(len(bounds)), key=lambda k: abs(bounds[k] - wanted))
        if not chosen or i > chosen[-1]:
            chosen.append(i)
    return chosen


class _Snapshot:
    """One scrape: the table, the merged counters and the supervisor's status, as metric families."""

    def __init__(self, bounds: list[float], status: dict[str, Any], supervisor: dict[str, Any] | None) -> None:
        self.bounds = bounds
        self.status = status
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        status = self.status
        labels = ["deployment", "revision"]
        requests = CounterMetricFamily("greentic_router_requests", "Requests by revision and status class.",
                                       labels=[*labels, "class"])
        duration = HistogramMetricFamily("greentic_router_request_duration_seconds",
                                         "Time from the request head to the last byte of the answer.", labels=labels)
        in_flight = GaugeMetricFamily("greentic_router_in_flight", "Requests (and tunnels) in flight.", labels=labels)
        connect = CounterMetricFamily("greentic_router_upstream_connect_errors",
                                      "Connections to the revision that failed.", labels=labels)
        retries = CounterMetricFamily("greentic_router_retries", "Requests sent again to this revision.",
                                      labels=labels)
        indexes = _bucket_indexes(self.bounds)
        for revision_id, entry in sorted((status.get("revisions") or {}).items()):
            key = [entry.get("deployment_id") or "", revision_id]
            classes = entry.get("classes") or [0] * 6
            for index, name in _CLASSES.items():
                if classes[index]:
                    requests.add_metric([*key, name], classes[index])
            requests.add_metric([*key, "error"], int(entry.get("errors", 0)))
            hist = {int(i): c for i, c in (entry.get("hist") or {}).items()}
            ordered = sorted(hist.items())
            buckets, total = [], 0
            cursor = 0
            for i in indexes:
                while cursor < len(ordered) and ordered[cursor][0] <= i:
                    total += ordered[cursor][1]
                    cursor += 1
                buckets.append((repr(self.bounds[i]), total))
            buckets.append(("+Inf", sum(hist.values())))
            duration.add_metric(key, buckets, sum_value=float(entry.get("seconds", 0.0)))
            in_flight.add_metric(key, int(entry.get("in_flight", 0)))
            connect.add_metric(key, int(entry.get("connect_errors", 0)))
            retries.add_metric(key, int(entry.get("retries", 0)))
        yield from (requests, duration, in_flight, connect, retries)
        yield CounterMetricFamily("greentic_router_unrouted", "Requests answered 503: nothing to route to.",
                                  value=int(status.get("unrouted", 0)))
        yield GaugeMetricFamily("greentic_router_table_generation", "Generation of the table being served.",
                                value=int(status.get("generation", 0)))
        yield CounterMetricFamily("greentic_router_reloads", "Tables loaded since the router started.",
                                  value=int(status.get("reloads", 0)))
        restarts = CounterMetricFamily("greentic_supervisor_restarts", "Restarts the supervisor made.",
                                       labels=["revision"])
        supervisor = self.supervisor or {}
        for revision_id, entry in sorted((supervisor.get("revisions") or {}).items()):
            restarts.add_metric([revision_id], int(entry.get("restarts", 0)))
        if supervisor.get("router"):
            restarts.add_metric(["router"], int(supervisor["router"].get("restarts", 0)))
        yield restarts


def exposition(bounds: list[float], status: dict[str, Any], supervisor: dict[str, Any] | None) -> bytes:
    """The text exposition of one scrape (``status``: the document ``/status`` serves)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(bounds, status, supervisor))  # type: ignore[arg-type]
    return generate_latest(registry)

