"""A real Prometheus server and a tiny exporter for tests (a module of its own, unique name).

:class:`PrometheusServer` runs Debian's ``prometheus`` binary (``.ci/run`` installs it) on a
free loopback port with a temporary config and data directory, scraping the given targets
every second. :class:`Exporter` serves request and error counters labelled by revision name
with ``prometheus_client`` on loopback and makes them grow at a set rate from a thread, the way
an application's own metrics grow under load.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server

from router_helpers import free_port, wait_for


class Exporter:
    """``demo_http_requests_total`` / ``demo_http_request_errors_total`` by ``revision_name``.

    ``traffic[name] = (requests_per_tick, errors_per_tick)``; a tick is 50 ms. A name's series
    exist (at 0) from the moment it is given traffic, as prometheus_client creates them.
    """

    TICK = 0.05

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("demo_http_requests", "Requests answered", ["revision_name"], registry=self.registry)
        self.errors = Counter("demo_http_request_errors", "Requests failed (5xx)", ["revision_name"],
                              registry=self.registry)
        self.traffic: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def serve(self, name: str, requests_per_tick: int, errors_per_tick: int) -> None:
        self.requests.labels(revision_name=name).inc(0)
        self.errors.labels(revision_name=name).inc(0)
        self.traffic[name] = (requests_per_tick, errors_per_tick)

    def _run(self) -> None:
        while not self._stop.wait(self.TICK):
            for name, (requests, errors) in list(self.traffic.items()):
                self.requests.labels(revision_name=name).inc(requests)
                self.errors.labels(revision_name=name).inc(errors)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.shutdown()
        self._server.server_close()


class PrometheusServer:
    """``prometheus`` on 127.0.0.1:<free port>, scraping ``targets`` every second."""

    def __init__(self, workdir: Path, targets: list[str], job: str = "demo") -> None:
        binary = shutil.which("prometheus")
        assert binary, "the prometheus server is needed (Debian: apt-get install prometheus; .ci/run does it)"
        workdir.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)

    def query(self, promql: str) -> list[dict[str, Any]] | None:
        """The result of an instant query now, or None while the server does not answer."""
        url = f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return body.get("data", {}).get("result") if body.get("status") == "success" else None

    def wait_for_samples(self, metric: str, count: int = 3, timeout: float = 60) -> None:
        """Until every target is up and each series of ``metric`` has ``count`` scraped samples."""
        def ready() -> bool:
            up = self.query(f'up{{job="{self.job}"}}')
            samples = self.query(f"count_over_time({metric}[1m])")
            return bool(up) and all(item["value"][1] == "1" for item in up) and bool(samples) and \
                all(float(item["value"][1]) >= count for item in samples)

        wait_for(ready, timeout, f"Prometheus to scrape {count} samples of {metric}", interval=0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> "PrometheusServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
