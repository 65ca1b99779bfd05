"""The router's Prometheus metrics: parsed by prometheus_client and scraped by a real Prometheus.

``GET /metrics`` on the admin port (authenticated like the rest of it) serves the text
exposition format, built from the same counters as ``/status``: the request counts a test sends
come back from ``prometheus_client``'s parser and from a real Prometheus server's query API
(Debian's ``prometheus`` package, started here with a temporary config on a free port;
``.ci/run`` installs it when missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router_helpers import (
    Backend,
    RouterProcess,
    closed_address,
    deployment,
    free_port,
    http_request,
    make_table,
    running_backends,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def backends() -> Iterator[list[Backend]]:
    with running_backends(["m-a", "m-b"]) as started:
        yield started


@pytest.fixture()
def router(backends: list[Backend], tmp_path: Path) -> Iterator[RouterProcess]:
    table = make_table([deployment("dep", [("m-a", 10000, backends[0].address)], hosts=["a.test"]),
                        deployment("dead", [("m-dead", 10000, closed_address())], hosts=["dead.test"])])
    with RouterProcess.start(tmp_path / "router", table) as proc:
        yield proc


def scrape(router: RouterProcess, token: str | None = None) -> tuple[int, str]:
    token = router.admin_token() if token is None else token
    status, _, body = http_request(f"http://{router.admin}/metrics",
                                   headers={"Authorization": f"Bearer {token}"} if token else {})
    return status, body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_count_what_was_sent_and_agree_with_status(router: RouterProcess) -> None:
    for _ in range(30):
        assert http_request(router.url("/"), headers={"Host": "a.test"})[0] == 200
    for _ in range(5):
        assert http_request(router.url("/code/503"), headers={"Host": "a.test"})[0] == 503
    for _ in range(4):
        assert http_request(router.url("/"), headers={"Host": "dead.test"})[0] == 502
    assert http_request(router.url("/"), headers={"Host": "nowhere.test"})[0] == 503
    code, text = scrape(router)
    assert code == 200
    found = samples(text)
    key = {"deployment": "dep", "revision": "m-a"}
    assert value(found, "greentic_router_requests_total", **key, **{"class": "2xx"}) == 30
    assert value(found, "greentic_router_requests_total", **key, **{"class": "5xx"}) == 5
    assert value(found, "greentic_router_request_duration_seconds_count", **key) == 35
    assert value(found, "greentic_router_request_duration_seconds_bucket", **key, le="+Inf") == 35
    assert 0 < value(found, "greentic_router_request_duration_seconds_sum", **key) < 35
    dead = {"deployment": "dead", "revision": "m-dead"}
    assert value(found, "greentic_router_requests_total", **dead, **{"class": "error"}) == 4
    assert value(found, "greentic_router_upstream_connect_errors_total", **dead) == 4
    assert value(found, "greentic_router_in_flight", **key) == 0
    assert value(found, "greentic_router_unrouted_total") == 1
    assert value(found, "greentic_router_table_generation") == 1
    # the same numbers as /status (what canary analysis reads)
    revision = router.status()["revisions"]["m-a"]
    assert revision["completed"] == 35 and revision["upstream_5xx"] == 5


def test_metrics_need_the_admin_token(router: RouterProcess) -> None:
    assert scrape(router, token="")[0] == 401
    assert scrape(router, token="wrong")[0] == 401


def test_a_real_prometheus_scrapes_the_router(router: RouterProcess, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus server is needed (Debian: apt-get install prometheus; .ci/run does it)"
    for _ in range(17):
        assert http_request(router.url("/"), headers={"Host": "a.test"})[0] == 200
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "greentic-router", "static_configs": [{"targets": [router.admin]}],
                            "authorization": {"type": "Bearer",
                                              "credentials_file": str(router.state_dir / "router-admin.token")}}],
    }))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        query = urllib.parse.quote('sum(greentic_router_requests_total{revision="m-a",class="2xx"})')

        def answered() -> float | None:
            try:
                status, _, body = http_request(f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=2)
            except OSError:
                return None
            result = json.loads(body).get("data", {}).get("result", []) if status == 200 else []
            return float(result[0]["value"][1]) if result else None

        seen = wait_for(answered, 60, "Prometheus to scrape the router", interval=0.2)
        assert seen == 17
        up = urllib.parse.quote('up{job="greentic-router"}')
        status, _, body = http_request(f"http://127.0.0.1:{port}/api/v1/query?query={up}", timeout=5)
        assert json.loads(body)["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_metrics_with_workers_sum_every_worker(backends: list[Backend], tmp_path: Path) -> None:
    table = make_table([deployment("dep", [("m-b", 10000, backends[1].address)])])
    with RouterProcess.start(tmp_path / "w", table, "--workers", "2") as router:
        for _ in range(40):  # fresh connections: the kernel spreads them over both workers
            assert http_request(router.url("/"))[0] == 200
        found = samples(scrape(router)[1])
        key = {"deployment": "dep", "revision": "m-b"}
        assert value(found, "greentic_router_requests_total", **key, **{"class": "2xx"}) == 40
        assert value(found, "greentic_router_request_duration_seconds_count", **key) == 40
