"""The router as a real process in front of real backend processes, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from router_helpers import (
    Backend,
    Client,
    RouterProcess,
    closed_address,
    deployment,
    http_request,
    make_table,
    pattern_bytes,
    start_backends,
    stop_all,
    wait_for,
)

MIB = 1024 * 1024
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    started = start_backends(["rev-a", "rev-b", "rev-c"])
    try:
        yield {b.revision: b for b in started}
    finally:
        stop_all(started)


def shared_table(b: dict[str, Backend]) -> dict[str, Any]:
    a, bb, c = b["rev-a"].address, b["rev-b"].address, b["rev-c"].address
    return make_table([
        deployment("weighted", [("w-a", 9000, a), ("w-b", 1000, bb)], hosts=["weighted.test"]),
        deployment("web", [("web-r", 10000, bb)], hosts=["web.test"]),
        deployment("api", [("api-r", 10000, c)], path_prefixes=["/api"]),
        deployment("empty", [], hosts=["empty.test"]),
        deployment("down", [("down-r", 10000, None)], hosts=["down.test"]),
        deployment("dead", [("dead-r", 10000, closed_address())], hosts=["dead.test"]),
        deployment("retry", [("retry-dead", 5000, closed_address()), ("retry-live", 5000, a)], hosts=["retry.test"]),
        deployment("slow", [("slow-r", 10000, a)], hosts=["slow.test"]),
    ])


@pytest.fixture(scope="module")
def router(backends: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    state_dir = tmp_path_factory.mktemp("router")
    with RouterProcess.start(state_dir, shared_table(backends), "--max-body-bytes", "8MiB") as proc:
        yield proc


def revision_of(headers: Any) -> str:
    return headers["X-Greentic-Revision"]


# --------------------------------------------------------------------------- start-up


def test_router_json_is_written_once_listening(router: RouterProcess) -> None:
    info = json.loads((router.state_dir / "router.json").read_text())
    assert info["pid"] == router.proc.pid
    assert info["generation"] == 1
    assert set(info) >= {"pid", "listen", "admin", "generation", "started_at"}
    assert info["admin"].startswith("127.0.0.1:")
    assert not list(router.state_dir.glob(".router.json.*"))  # the temp file was renamed away
    code, body = router.admin_call("GET", "/healthz")
    assert code == 200 and body["ok"] is True


def test_admin_api_is_not_on_the_listen_port(router: RouterProcess) -> None:
    status, headers, body = http_request(router.url("/status"), headers={"Host": "web.test"})
    assert status == 200 and revision_of(headers) == "web-r" and body == b"rev-b"


# --------------------------------------------------------------------------- balancing and routing


def test_split_is_exact_over_2000_sequential_requests(router: RouterProcess) -> None:
    seq = []
    with Client(router.listen) as client:
        for _ in range(2000):
            status, headers, body = client.request("/", headers={"Host": "weighted.test"})
            assert status == 200
            seq.append(revision_of(headers))
            assert body == (b"rev-a" if seq[-1] == "w-a" else b"rev-b")
    assert Counter(seq) == {"w-a": 1800, "w-b": 200}
    assert "w-b,w-b" not in ",".join(seq)  # interleaved, not 1800 then 200


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("web.test", "/", "web-r"),
    ("WEB.test:8080", "/x", "web-r"),
    ("web.test", "/api/items", "web-r"),  # host-specific beats the catch-all prefix
    ("other.test", "/api", "api-r"),
    ("other.test", "/api/items?x=1", "api-r"),
    ("other.test", "/apix", None),
    ("other.test", "/", None),
])
def test_host_and_path_prefix_routing(router: RouterProcess, host: str, path: str, expected: str | None) -> None:
    status, headers, body = http_request(router.url(path), headers={"Host": host})
    if expected is None:
        assert status == 503
        assert json.loads(body) == {"error": "no routable revision", "deployment_id": None}
    else:
        assert status == 200 and revision_of(headers) == expected


@pytest.mark.parametrize("host", ["empty.test", "down.test"])
def test_503_json_when_the_deployment_has_no_routable_revision(router: RouterProcess, host: str) -> None:
    status, headers, body = http_request(router.url("/"), headers={"Host": host})
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "no routable revision", "deployment_id": host.split(".")[0]}


def test_502_json_when_the_backend_port_is_closed_and_not_counted_completed(router: RouterProcess) -> None:
    before = router.revision("dead-r")
    status, headers, body = http_request(router.url("/"), headers={"Host": "dead.test"})
    assert status == 502 and revision_of(headers) == "dead-r"
    data = json.loads(body)
    assert data["error"] == "bad gateway" and data["deployment_id"] == "dead" and data["revision_id"] == "dead-r"
    after = router.revision("dead-r")
    assert after["completed"] == before["completed"] == 0
    assert after["errors"] == before["errors"] + 1
    assert after["in_flight"] == 0


def test_connect_failure_is_retried_once_on_another_revision(router: RouterProcess) -> None:
    with Client(router.listen) as client:
        answers = [client.request("/", headers={"Host": "retry.test"}) for _ in range(20)]
    assert [(s, revision_of(h)) for s, h, _ in answers] == [(200, "retry-live")] * 20
    dead, live = router.revision("retry-dead"), router.revision("retry-live")
    assert (dead["errors"], dead["completed"]) == (10, 0)  # 5000/5000: every other pick, each retried
    assert (live["completed"], live["retries"]) == (20, 10)


def test_head_204_and_backend_errors_pass_through(router: RouterProcess) -> None:
    with Client(router.listen) as client:
        status, headers, body = client.request("/", method="HEAD", headers={"Host": "web.test"})
        assert (status, body, headers["Content-Length"]) == (200, b"", "5")
        status, headers, body = client.request("/code/204", headers={"Host": "web.test"})
        assert (status, body) == (204, b"")
        before = router.revision("web-r")
        status, headers, body = client.request("/code/500", headers={"Host": "web.test"})
        assert (status, body, revision_of(headers)) == (500, b"rev-b", "web-r")
        status, _, _ = client.request("/", headers={"Host": "web.test"})  # the connection is still usable
        assert status == 200
    after = router.revision("web-r")
    assert after["upstream_5xx"] == before["upstream_5xx"] + 1
    assert after["completed"] == before["completed"] + 2 and after["errors"] == before["errors"]


def test_expect_100_continue(router: RouterProcess) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert recv_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        answer = recv_until(sock, b'"revision": "rev-b"}')
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"bytes": 5' in answer


# --------------------------------------------------------------------------- headers


def test_forwarded_headers_set_and_hop_by_hop_headers_stripped_both_ways(router: RouterProcess) -> None:
    host, port = router.listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", "/echo-headers?q=1", skip_host=True, skip_accept_encoding=True)
    for name, value in [("Host", "web.test"), ("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "1"),
                        ("Keep-Alive", "300"), ("TE", "trailers"), ("Proxy-Authorization", "Basic eA=="),
                        ("Trailer", "X-T"), ("Proxy-Connection", "keep-alive"), ("X-Forwarded-For", "10.1.2.3"),
                        ("X-Forwarded-Proto", "https"), ("X-End-To-End", "yes")]:
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    echoed = json.loads(response.read())
    seen = {k.lower(): v for k, v in echoed["headers"]}
    for hop in ["connection", "x-drop-me", "keep-alive", "te", "proxy-authorization", "trailer", "proxy-connection",
                "transfer-encoding", "upgrade"]:
        assert hop not in seen or hop == "connection" and seen[hop].lower() in ("keep-alive", "close"), hop
    assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"  # set by the router (not trusted from the client by default)
    assert seen["x-forwarded-host"] == "web.test"
    assert seen["host"] == "web.test"
    assert seen["x-end-to-end"] == "yes"
    assert echoed["path_qs"] == "/echo-headers?q=1"

    conn.request("GET", "/hop", headers={"Host": "web.test"})  # same keep-alive connection
    response = conn.getresponse()
    assert response.read() == b"rev-b"
    names = {k.lower() for k in response.headers.keys()}
    assert not names & {"x-resp-hop", "keep-alive", "proxy-authenticate"}
    assert response.headers.get("Connection", "keep-alive").lower() in ("keep-alive", "close")
    assert response.headers["X-End-To-End"] == "kept"
    conn.close()


def test_oversized_header_is_refused(router: RouterProcess) -> None:
    status, _, _ = http_request(router.url("/"), headers={"Host": "web.test", "X-Big": "x" * 9000})
    assert status in (400, 431)


# --------------------------------------------------------------------------- bodies


def test_streams_a_5mib_upload_with_length_and_chunked(router: RouterProcess) -> None:
    data = pattern_bytes(5 * MIB)
    expected = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "revision": "rev-b"}
    with Client(router.listen, timeout=30) as client:
        status, _, body = client.request("/upload", method="POST", headers={"Host": "web.test"}, body=data)
        assert status == 200 and json.loads(body) == expected

        def pieces() -> Iterator[bytes]:
            for i in range(0, len(data), 256 * 1024):
                yield data[i:i + 256 * 1024]

        client.conn.request("POST", "/upload", body=pieces(), headers={"Host": "web.test"}, encode_chunked=True)
        response = client.conn.getresponse()
        assert response.status == 200 and json.loads(response.read()) == expected


@pytest.mark.parametrize("with_length", [False, True])
def test_streams_a_5mib_download(router: RouterProcess, with_length: bool) -> None:
    n = 5 * MIB
    query = f"/download?n={n}" + ("&length=1" if with_length else "")
    status, headers, body = http_request(router.url(query), headers={"Host": "web.test"}, timeout=30)
    assert status == 200 and len(body) == n
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(pattern_bytes(n)).hexdigest()
    assert (headers.get("Content-Length") == str(n)) is with_length


def test_response_body_is_streamed_not_buffered(router: RouterProcess) -> None:
    host, port = router.listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.monotonic()
    conn.request("GET", "/drip?s=1.0", headers={"Host": "web.test"})
    response = conn.getresponse()
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.read1(100) == b"first\n"
    assert time.monotonic() - started < 0.8  # it arrived while the backend was still pausing
    assert response.read() == b"last\n"
    conn.close()


def test_encoded_bodies_pass_through_untouched(router: RouterProcess) -> None:
    import gzip

    status, headers, body = http_request(router.url("/gzip"), headers={"Host": "web.test"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"rev-b" * 100


def test_413_above_the_body_limit(router: RouterProcess) -> None:
    # declared length above the limit: refused before any body byte is read
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: web.test\r\nContent-Length: %d\r\n\r\n" % (9 * MIB))
        head = recv_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
    # chunked upload that grows past the limit
    with Client(router.listen, timeout=30) as client:
        def pieces() -> Iterator[bytes]:
            for _ in range(40):
                yield b"x" * 256 * 1024  # 10 MiB in all

        try:
            client.conn.request("POST", "/upload", body=pieces(), headers={"Host": "web.test"}, encode_chunked=True)
            status = client.conn.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            status = 413  # the router answered and closed while we were still sending
        assert status == 413
    assert router.revision("web-r")["in_flight"] == 0


def tuple_of(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_backend_dying_mid_body_cuts_the_client_off(tmp_path: Path) -> None:
    (victim,) = start_backends(["victim"])
    try:
        table = make_table([deployment("d", [("v", 10000, victim.address)])])
        with RouterProcess.start(tmp_path, table) as router:
            host, port = router.listen.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/drip?s=5")
            response = conn.getresponse()
            assert response.status == 200 and response.read1(100) == b"first\n"
            victim.proc.kill()
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                response.read()  # never a clean end of a truncated body
            conn.close()
            wait_for(lambda: router.revision("v")["errors"] == 1, 5, "the error to be counted")
            assert router.revision("v")["in_flight"] == 0 and router.revision("v")["completed"] == 0
            assert router.proc.poll() is None
    finally:
        victim.stop()


def test_a_client_leaving_mid_download_is_counted_and_harmless(router: RouterProcess) -> None:
    before = router.revision("web-r")
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"GET /download?n=%d HTTP/1.1\r\nHost: web.test\r\n\r\n" % (64 * MIB))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: router.revision("web-r")["client_aborts"] == before["client_aborts"] + 1, 10, "the abort")
    assert router.revision("web-r")["in_flight"] == 0
    status, _, body = http_request(router.url("/"), headers={"Host": "web.test"})
    assert (status, body) == (200, b"rev-b")


# --------------------------------------------------------------------------- counters


def test_admin_counters_in_flight_and_completed(router: RouterProcess) -> None:
    before = router.revision("slow-r")
    result: dict[str, Any] = {}

    def slow() -> None:
        result["answer"] = http_request(router.url("/slow?s=1.0"), headers={"Host": "slow.test"})

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: router.revision("slow-r")["in_flight"] == 1, 5, "one request in flight")
    assert router.revision("slow-r")["completed"] == before["completed"]
    thread.join(10)
    assert result["answer"][0] == 200
    after = router.revision("slow-r")
    assert after["in_flight"] == 0
    assert after["completed"] == before["completed"] + 1
    assert after["p50_ms"] >= 900 and after["p99_ms"] >= 900


def test_status_document(router: RouterProcess) -> None:
    status = router.status()
    assert status["pid"] == router.proc.pid and status["generation"] == 1 and status["env_id"] == "test"
    assert status["deployments"]["weighted"]["weights"] == {"w-a": 9000, "w-b": 1000}
    assert status["deployments"]["weighted"]["split_generation"] == 1
    assert status["deployments"]["down"]["enforced_weights"] == {"down-r": 0}
    rev = status["revisions"]["w-a"]
    assert set(rev) >= {"address", "in_flight", "completed", "errors", "p50_ms", "p99_ms"}


# --------------------------------------------------------------------------- reloads


def two_revision_table(b: dict[str, Backend], wa: int, wb: int, generation: int) -> dict[str, Any]:
    return make_table([deployment("d", [("ra", wa, b["rev-a"].address), ("rb", wb, b["rev-b"].address)],
                                  split_generation=generation)], generation=generation)


async def _load_during_reload(router: RouterProcess, reload_table: dict[str, Any]) -> dict[str, Any]:
    url = router.url
    results: dict[str, list[tuple[int, str]]] = {"slow": [], "fast": []}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(kind: str, path: str) -> None:
            try:
                async with session.get(url(path)) as response:
                    await response.read()
                    results[kind].append((response.status, response.headers.get("X-Greentic-Revision", "")))
            except aiohttp.ClientError as exc:
                results[kind].append((0, repr(exc)))

        async def fast_worker() -> None:
            for _ in range(10):
                await one("fast", "/")
                await asyncio.sleep(0.05)

        slow = [asyncio.ensure_future(one("slow", "/slow?s=1.0")) for _ in range(100)]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: wait_for(
            lambda: router.revision("ra")["in_flight"] >= 100, 10, "100 slow requests in flight"))
        fast = [asyncio.ensure_future(fast_worker()) for _ in range(20)]
        await asyncio.sleep(0.1)
        code, body = await loop.run_in_executor(None, router.reload, reload_table)
        results["reload"] = [(code, json.dumps(body))]
        await asyncio.gather(*slow, *fast)
    return results


def test_reload_under_300_concurrent_requests_fails_none_and_applies_after(
        backends: dict[str, Backend], tmp_path: Path) -> None:
    with RouterProcess.start(tmp_path, two_revision_table(backends, 10000, 0, 1)) as router:
        results = asyncio.run(_load_during_reload(router, two_revision_table(backends, 1000, 9000, 2)))
        assert results["reload"] == [(200, json.dumps({"generation": 2}))]
        assert len(results["slow"]) == 100 and len(results["fast"]) == 200
        assert [s for s, _ in results["slow"] + results["fast"]] == [200] * 300
        assert {r for _, r in results["slow"]} == {"ra"}  # in flight before the swap: kept their backend
        assert "rb" in {r for _, r in results["fast"]}  # the new weights applied during the load
        with Client(router.listen) as client:
            after = Counter(revision_of(client.request("/")[1]) for _ in range(100))
        assert after == {"ra": 10, "rb": 90}
        status = router.status()
        assert status["generation"] == 2 and status["pid"] == router.proc.pid
        assert status["deployments"]["d"]["weights"] == {"ra": 1000, "rb": 9000}
        assert status["revisions"]["ra"]["completed"] >= 100  # counters survived the reload
        assert json.loads((tmp_path / "router.json").read_text())["generation"] == 2


def test_malformed_table_is_refused_and_the_old_one_keeps_serving(backends: dict[str, Backend],
                                                                   tmp_path: Path) -> None:
    with RouterProcess.start(tmp_path, two_revision_table(backends, 10000, 0, 5)) as router:
        code, body = router.reload("{not json")
        assert code == 400 and "not valid JSON" in body["reason"] and body["generation"] == 5
        bad = two_revision_table(backends, 6000, 3000, 6)
        code, body = router.reload(bad)
        assert code == 400 and "weights sum to 9000" in body["reason"]
        code, body = router.reload(two_revision_table(backends, 0, 10000, 4))
        assert code == 409 and "older" in body["reason"]
        moved = two_revision_table(backends, 0, 10000, 7)
        moved["listen"] = "127.0.0.1:1"
        code, body = router.reload(moved)
        assert code == 409 and "listen address changed" in body["reason"]
        assert router.status()["generation"] == 5
        with Client(router.listen) as client:
            assert {revision_of(client.request("/")[1]) for _ in range(20)} == {"ra"}
        assert router.reload(two_revision_table(backends, 0, 10000, 8)) == (200, {"generation": 8})
        status, headers, _ = http_request(router.url("/"))
        assert status == 200 and revision_of(headers) == "rb"


def test_a_reload_that_leaves_a_deployment_alone_continues_its_sequence(backends: dict[str, Backend],
                                                                        tmp_path: Path) -> None:
    def table(generation: int, other_weights: tuple[int, int]) -> dict[str, Any]:
        t = two_revision_table(backends, 9000, 1000, generation)
        t["deployments"].append(deployment("other", [("oa", other_weights[0], backends["rev-a"].address),
                                                     ("ob", other_weights[1], backends["rev-b"].address)],
                                           hosts=["other.test"]))
        return t

    with RouterProcess.start(tmp_path, table(1, (5000, 5000))) as router, Client(router.listen) as client:
        first = [revision_of(client.request("/")[1]) for _ in range(5)]
        assert first == ["ra"] * 5
        assert router.reload(table(2, (10000, 0)))[0] == 200  # only "other" changed
        after = [revision_of(client.request("/")[1]) for _ in range(5)]
        assert after == ["rb"] + ["ra"] * 4  # the running cycle went on: a a a a a | b a a a a
        assert router.reload(table(3, (10000, 0)))[0] == 200
        assert revision_of(client.request("/", headers={"Host": "other.test"})[1]) == "oa"


def test_router_refuses_to_start_on_a_bad_table(tmp_path: Path) -> None:
    (tmp_path / "router-table.json").write_text(json.dumps({"generation": 1}))
    with pytest.raises(RuntimeError, match="exited with 2"):
        RouterProcess.start(tmp_path)


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_lets_a_slow_request_finish_then_exits_0(backends: dict[str, Backend], tmp_path: Path) -> None:
    router = RouterProcess.start(tmp_path, two_revision_table(backends, 10000, 0, 1))
    try:
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(
            answer=http_request(router.url("/slow?s=1.5"), timeout=10)))
        thread.start()
        wait_for(lambda: router.revision("ra")["in_flight"] == 1, 5, "the slow request in flight")
        router.terminate()

        def refused() -> bool:
            try:
                socket.create_connection(tuple_of(router.listen), timeout=0.5).close()
                return False
            except OSError:
                return True

        wait_for(refused, 5, "the listener to close")
        assert router.proc.poll() is None  # still finishing the request in flight
        thread.join(10)
        status, headers, body = result["answer"]
        assert (status, body, revision_of(headers)) == (200, b"rev-a", "ra")
        assert router.wait(10) == 0
        assert not (tmp_path / "router.json").exists()
    finally:
        router.stop()


def test_sigterm_drain_is_bounded(backends: dict[str, Backend], tmp_path: Path) -> None:
    router = RouterProcess.start(tmp_path, two_revision_table(backends, 10000, 0, 1), "--shutdown-timeout", "0.5")
    try:
        outcome: list[Any] = []

        def slow() -> None:
            try:
                outcome.append(http_request(router.url("/slow?s=5"), timeout=10)[0])
            except (OSError, http.client.HTTPException) as exc:
                outcome.append(exc)

        thread = threading.Thread(target=slow)
        thread.start()
        wait_for(lambda: router.revision("ra")["in_flight"] == 1, 5, "the slow request in flight")
        started = time.monotonic()
        router.terminate()
        assert router.wait(5) == 0
        assert time.monotonic() - started < 3.0
        thread.join(10)
        assert len(outcome) == 1 and not isinstance(outcome[0], int)  # cut off at the deadline
    finally:
        router.stop()


# --------------------------------------------------------------------------- workers


def test_workers_share_the_port_and_the_admin_sums_their_counters(backends: dict[str, Backend],
                                                                  tmp_path: Path) -> None:
    with RouterProcess.start(tmp_path, two_revision_table(backends, 9000, 1000, 1), "--workers", "2") as router:
        assert router.info["workers"] == 2

        async def burst() -> Counter[str]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
                async def one() -> str:
                    async with s.get(router.url("/")) as response:
                        assert response.status == 200
                        return response.headers["X-Greentic-Revision"]
                return Counter(await asyncio.gather(*[one() for _ in range(400)]))

        counts = asyncio.run(burst())
        assert sum(counts.values()) == 400 and abs(counts["ra"] - 360) <= 20
        status = router.status()
        assert len(status["worker_pids"]) == 2
        served = status["revisions"]["ra"]["completed"] + status["revisions"]["rb"]["completed"]
        assert served == 400 and status["revisions"]["ra"]["completed"] == counts["ra"]
        assert router.reload(two_revision_table(backends, 0, 10000, 2)) == (200, {"generation": 2})
        with Client(router.listen) as client:
            assert {revision_of(client.request("/")[1]) for _ in range(20)} == {"rb"}
        code, body = router.reload("[]")
        assert code == 400 and router.status()["generation"] == 2


# --------------------------------------------------------------------------- the protocol-level data plane


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length from a raw socket: (head, body, bytes left over)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return head, rest[:length], rest[length:]


def header_of(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    return None


def test_pipelined_requests_are_answered_in_order(router: RouterProcess) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"GET /slow?s=0.2 HTTP/1.1\r\nHost: web.test\r\n\r\n"
                     b"GET /api/x HTTP/1.1\r\nHost: other.test\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
        answers, left = [], b""
        for _ in range(4):
            head, body, left = read_response(sock, left)
            answers.append((head.split(b" ")[1], header_of(head, "X-Greentic-Revision"), body))
    assert answers[0] == (b"200", "web-r", b"rev-b")
    assert answers[1] == (b"200", "api-r", b"rev-c")
    assert answers[2][:2] == (b"503", None)
    assert answers[3] == (b"200", "web-r", b"rev-b")


def test_http10_clients_get_close_or_keep_alive_as_asked(router: RouterProcess) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: web.test\r\n\r\n")
        data = recv_until(sock, b"\x00never")  # read until the router closes
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nrev-b")
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nHost: web.test\r\nConnection: keep-alive\r\n\r\n")
            head, body, _ = read_response(sock)
            assert body == b"rev-b" and header_of(head, "Connection") == "keep-alive"
    # a chunked backend answer cannot be chunked for HTTP/1.0: the body ends with the connection
    n = 200_000
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"GET /download?n=%d HTTP/1.0\r\nHost: web.test\r\nConnection: keep-alive\r\n\r\n" % n)
        data = recv_until(sock, b"\x00never")
    head, _, body = data.partition(b"\r\n\r\n")
    assert header_of(head, "Transfer-Encoding") is None and header_of(head, "Connection") == "close"
    assert body == pattern_bytes(n)


def test_absolute_form_request_target_is_forwarded_in_origin_form(router: RouterProcess) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"GET http://web.test/echo-headers?q=1 HTTP/1.1\r\nHost: web.test\r\n\r\n")
        _, body, _ = read_response(sock)
    assert json.loads(body)["path_qs"] == "/echo-headers?q=1"


def test_a_refused_request_with_a_small_body_keeps_the_connection(router: RouterProcess) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
        head, body, left = read_response(sock)
        assert head.startswith(b"HTTP/1.1 503 ") and json.loads(body)["deployment_id"] is None
        head, body, _ = read_response(sock, left)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"rev-b"


@pytest.mark.parametrize("request_bytes", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: web.test\r\nBad Header\r\n\r\n",
])
def test_malformed_requests_get_400_and_a_close(router: RouterProcess, request_bytes: bytes) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(request_bytes)
        data = recv_until(sock, b"\x00never")
    assert data.startswith(b"HTTP/1.1 400 ") and header_of(data.partition(b"\r\n\r\n")[0], "Connection") == "close"


def test_a_broken_chunked_upload_is_counted_as_a_client_abort(router: RouterProcess) -> None:
    before = router.revision("web-r")
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\nZZZ\r\n")
        data = recv_until(sock, b"\x00never")
    assert data.startswith(b"HTTP/1.1 400 ") and b"request body incomplete" in data
    wait_for(lambda: router.revision("web-r")["client_aborts"] == before["client_aborts"] + 1, 5, "the abort")
    assert router.revision("web-r")["in_flight"] == 0


def test_many_concurrent_keep_alive_clients(router: RouterProcess) -> None:
    async def run() -> Counter[str]:
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(i: int) -> str:
                data = pattern_bytes(1000 + i)
                async with session.post(router.url("/upload"), data=data, headers={"Host": "web.test"}) as response:
                    assert response.status == 200
                    assert json.loads(await response.read())["bytes"] == len(data)
                async with session.get(router.url("/"), headers={"Host": "weighted.test"}) as response:
                    assert response.status == 200 and await response.read() in (b"rev-a", b"rev-b")
                    return response.headers["X-Greentic-Revision"]
            return Counter(await asyncio.gather(*[one(i) for i in range(500)]))

    counts = asyncio.run(run())
    assert sum(counts.values()) == 500 and set(counts) <= {"w-a", "w-b"}


class _OneShotBackend:
    """A backend that answers the first request of each connection (keep-alive promised), then
    drops the connection when a second request arrives on it without answering: a pooled
    connection that went stale."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    @staticmethod
    def _one(conn: socket.socket) -> None:
        with conn:
            if b"\r\n\r\n" not in recv_until(conn, b"\r\n\r\n"):
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
            recv_until(conn, b"\r\n\r\n")  # the next request on this connection: closed unanswered

    def close(self) -> None:
        self.sock.close()


def test_a_stale_pooled_backend_connection_is_retried_on_a_fresh_one(tmp_path: Path) -> None:
    backend = _OneShotBackend()
    try:
        with RouterProcess.start(tmp_path, make_table([deployment("d", [("one", 10000, backend.address)])])) as router:
            with Client(router.listen) as client:
                for _ in range(3):
                    status, _, body = client.request("/")
                    assert (status, body) == (200, b"ok")
            stats = router.revision("one")
            assert (stats["completed"], stats["errors"], stats["retries"]) == (3, 0, 2)
            assert backend.connections == 3
    finally:
        backend.close()


def test_request_without_host_gets_the_backend_address_and_read_timeout_gives_504(
        backends: dict[str, Backend], tmp_path: Path) -> None:
    address = backends["rev-a"].address
    table = make_table([deployment("d", [("ra", 10000, address)])])
    with RouterProcess.start(tmp_path, table, "--read-timeout", "0.3") as router:
        with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
            sock.sendall(b"GET /echo-headers HTTP/1.0\r\n\r\n")
            data = recv_until(sock, b"\x00never")
        echoed = {k.lower(): v for k, v in json.loads(data.partition(b"\r\n\r\n")[2])["headers"]}
        assert echoed["host"] == address and "x-forwarded-host" not in echoed
        started = time.monotonic()
        status, headers, body = http_request(router.url("/slow?s=3"))
        assert status == 504 and revision_of(headers) == "ra"
        assert json.loads(body)["error"] == "gateway timeout"
        assert time.monotonic() - started < 2.0
        status, _, body = http_request(router.url("/"))
        assert (status, body) == (200, b"rev-a")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_event_loops_serve_the_split_and_streams(backends: dict[str, Backend], tmp_path: Path,
                                                      loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with RouterProcess.start(tmp_path, two_revision_table(backends, 9000, 1000, 1), "--event-loop", loop) as router:
        with Client(router.listen) as client:
            seq = [revision_of(client.request("/")[1]) for _ in range(20)]
            assert Counter(seq) == {"ra": 18, "rb": 2}
            data = pattern_bytes(3 * MIB)
            status, _, body = client.request("/upload", method="POST", body=data)
            assert status == 200 and json.loads(body)["bytes"] == len(data)
            status, _, body = client.request(f"/download?n={3 * MIB}")
            assert status == 200 and body == pattern_bytes(3 * MIB)
        assert router.status()["event_loop"] == loop


def test_an_answer_sent_before_the_upload_ended_reaches_the_client(router: RouterProcess) -> None:
    # the backend answers "/" without reading the body: the router must not reset the client
    # (lingering close) while it is still sending, so the answer can be read
    for _ in range(3):
        with Client(router.listen, timeout=30) as client:
            status, headers, body = client.request("/", method="POST", headers={"Host": "web.test"},
                                                   body=pattern_bytes(8 * MIB - 1))
            assert (status, body, revision_of(headers)) == (200, b"rev-b", "web-r")
        status, _, body = http_request(router.url("/"), headers={"Host": "web.test"})
        assert (status, body) == (200, b"rev-b")


def test_repeated_identical_requests_are_each_routed_forwarded_and_counted(backends: dict[str, Backend],
                                                                           tmp_path: Path) -> None:
    # a keep-alive client repeating the same request head: the router reuses the parsed head,
    # but every request is still routed with the current table, picked and counted
    with RouterProcess.start(tmp_path, two_revision_table(backends, 5000, 5000, 1)) as router:
        with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
            request = b"GET /echo-headers?q=2 HTTP/1.1\r\nHost: web.test\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n"
            seen = []
            for round_ in range(2):
                for _ in range(4):
                    sock.sendall(request)
                    head, body, _ = read_response(sock)
                    echoed = json.loads(body)
                    headers = {k.lower(): v for k, v in echoed["headers"]}
                    assert echoed["path_qs"] == "/echo-headers?q=2"
                    assert headers["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
                    assert headers["x-forwarded-host"] == "web.test" and headers["x-forwarded-proto"] == "http"
                    seen.append(header_of(head, "X-Greentic-Revision"))
                if round_ == 0:
                    assert router.reload(two_revision_table(backends, 0, 10000, 2))[0] == 200
        assert seen[:4] == ["ra", "rb", "ra", "rb"] and seen[4:] == ["rb"] * 4
        revisions = router.status()["revisions"]
        assert (revisions["ra"]["completed"], revisions["rb"]["completed"]) == (2, 6)


@pytest.mark.parametrize("first", [
    b"OPTIONS /echo-headers HTTP/1.0\r\nHost: web.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /echo-headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n",
])
def test_bytes_after_a_request_that_closes_the_connection_are_dropped_and_it_is_answered(
        router: RouterProcess, first: bytes) -> None:
    with socket.create_connection(tuple_of(router.listen), timeout=10) as sock:
        sock.sendall(first + b"GET /second HTTP/1.1\r\nHost: web.test\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = recv_until(sock, b"\x00never")
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]  # no 100 Continue for an HTTP/1.0 client
    assert data.count(b"HTTP/1.1 ") == 1 and b"/second" not in data
