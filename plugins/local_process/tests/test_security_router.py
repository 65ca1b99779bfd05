"""Threat model of the router, one attack per test (real router process, real sockets).

Who attacks: a remote client of the public port (anyone who can reach ``listen``), and a local
user on the same host (who can connect to every loopback port, but cannot read the
environment's 0700 state directory). What must hold:

===========================================  =================================================
attack                                       what must happen
===========================================  =================================================
``Connection: content-length`` (or           400 and close; nothing reaches the revision, so a
``transfer-encoding``) + a body that is      smuggled request can never poison the pooled
itself a request (smuggling)                 backend connection of another client
two ``Host`` headers                         400 (which one would the revision route by?)
``Forwarded`` / ``X-Real-IP`` from a client  removed unless ``--trust-forwarded-headers``
clients that send a head with                both connections end at once (nothing held: no
``Content-Length`` and half-close            in-flight count, descriptor or backend thread)
a body that stops arriving                   408 after ``--body-timeout``; both connections end
a head that never ends (slowloris)           408 after ``--header-timeout``
a huge head inside the per-header limits     431 above ``--max-head-bytes`` per connection;
                                             503 above ``--max-head-total-bytes`` in total;
                                             the memory is handed back when they close
more connections than descriptors allow      closed at once above ``--max-connections``; the
                                             router keeps serving the others
a local process calling the admin port or    401 without the per-router token (0600 file in the
a worker's control port (``/load``)          state directory; workers get theirs from the
                                             supervisor through their environment)
===========================================  =================================================

Framing in general (CL.TE, TE.CL, TE.TE, obfuscated encodings, chunk extensions, obs-fold) is
proved by the differential fuzz in ``test_security_router_fuzz.py``.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from router_helpers import (
    Backend,
    RouterProcess,
    deployment,
    http_request,
    make_table,
    read_to_close,
    running_backends,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with running_backends(["rev-sec"]) as started:
        yield started[0]


def table_for(backend: Backend) -> dict[str, Any]:
    return make_table([deployment("dep", [("rev-sec", 10000, backend.address)])])


@pytest.fixture()
def router(backend: Backend, tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess.start(tmp_path / "router", table_for(backend), "--body-timeout", "1",
                             "--header-timeout", "1") as proc:
        yield proc


def address(router: RouterProcess) -> tuple[str, int]:
    host, port = router.listen.rsplit(":", 1)
    return host, int(port)


def exchange(router: RouterProcess, raw: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``raw`` on a fresh connection and read until the router closes it."""
    with socket.create_connection(address(router), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_to_close(sock)


def completed(router: RouterProcess) -> int:
    return int(router.revision("rev-sec").get("completed", 0))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------- smuggling


@pytest.mark.parametrize("framing", ["content-length", "transfer-encoding", "Content-Length, keep-alive",
                                     "close, TRANSFER-ENCODING"])
def test_connection_naming_a_framing_header_is_refused_and_nothing_is_forwarded(
        router: RouterProcess, framing: str) -> None:
    smuggled = b"GET /slow?s=0 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    if "transfer" in framing.lower():
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
        framing_header = b"Transfer-Encoding: chunked"
    else:
        body = smuggled
        framing_header = b"Content-Length: %d" % len(smuggled)
    before = completed(router)
    answer = exchange(router, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: " + framing.encode() + b"\r\n"
                      + framing_header + b"\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"framing header" in answer
    # a victim on another connection gets its own answer, and the revision saw no request at all
    status, headers, _ = http_request(router.url("/victim"))
    assert status == 200 and headers["X-Backend-Revision"] == "rev-sec"
    assert completed(router) == before + 1


def test_two_host_headers_are_refused(router: RouterProcess) -> None:
    answer = exchange(router, b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"more than one Host header" in answer


def test_client_forwarded_and_x_real_ip_are_removed_unless_trusted(backend: Backend, tmp_path: Path) -> None:
    spoof = {"Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6"}
    with RouterProcess.start(tmp_path / "plain", table_for(backend)) as router:
        _, _, body = http_request(router.url("/echo-headers"), headers=spoof)
        names = {name.lower() for name, _ in json.loads(body)["headers"]}
        assert "forwarded" not in names and "x-real-ip" not in names
    with RouterProcess.start(tmp_path / "trusted", table_for(backend), "--trust-forwarded-headers") as router:
        _, _, body = http_request(router.url("/echo-headers"), headers=spoof)
        seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
        assert seen["forwarded"] == "for=6.6.6.6" and seen["x-real-ip"] == "6.6.6.6"


# --------------------------------------------------------------------------- exhaustion


def test_clients_that_half_close_before_their_body_leave_nothing_held(router: RouterProcess) -> None:
    socks = []
    for _ in range(200):
        sock = socket.create_connection(address(router), timeout=10)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        socks.append(sock)
    try:
        for sock in socks:  # the router ends each connection promptly (no answer can come)
            read_to_close(sock)
        wait_for(lambda: router.status()["limits"]["connections"] == 0, 10, "client connections to close")
        assert router.revision("rev-sec").get("in_flight", 0) == 0
    finally:
        for sock in socks:
            sock.close()
    status, _, _ = http_request(router.url("/"))
    assert status == 200


def test_a_body_that_stops_arriving_gets_408_and_both_connections_end(router: RouterProcess) -> None:
    started = time.monotonic()
    with socket.create_connection(address(router), timeout=15) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body not received in time" in answer
    assert time.monotonic() - started < 10
    wait_for(lambda: router.revision("rev-sec").get("in_flight", 0) == 0, 5, "in_flight to drop")
    assert router.revision("rev-sec")["client_aborts"] >= 1


def test_a_body_that_keeps_arriving_slowly_is_not_cut(router: RouterProcess) -> None:
    with socket.create_connection(address(router), timeout=15) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef"):  # each piece well inside the 1 s body timeout
            time.sleep(0.4)
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"bytes": 6' in answer


def test_a_head_that_never_ends_gets_408(router: RouterProcess) -> None:
    started = time.monotonic()
    with socket.create_connection(address(router), timeout=15) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"head not received in time" in answer
    assert time.monotonic() - started < 10


def test_a_large_head_within_the_per_header_limits_is_refused(router: RouterProcess) -> None:
    headers = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"v" * 4000) for i in range(20))  # 80 kB, 20 headers
    answer = exchange(router, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_unfinished_heads_are_bounded_in_total_and_their_memory_is_returned(backend: Backend,
                                                                            tmp_path: Path) -> None:
    with RouterProcess.start(tmp_path / "r", table_for(backend), "--max-head-total-bytes", "24MiB",
                             "--header-timeout", "60") as router:
        baseline = rss_kib(router.proc.pid)
        piece = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 7000) for i in range(8))
        socks = []
        try:
            for _ in range(600):  # 600 x 56 kB = 33 MB asked to be held, over the 24 MiB budget
                sock = socket.create_connection(address(router), timeout=10)
                sock.sendall(piece)
                socks.append(sock)
            wait_for(lambda: router.status()["limits"]["head_budget_refusals"] > 0, 10, "the budget to bite")
            held = router.status()["limits"]["head_bytes_held"]
            assert 0 < held <= 24 * 1024 * 1024
        finally:
            for sock in socks:
                sock.close()
        wait_for(lambda: router.status()["limits"]["head_bytes_held"] == 0, 10, "the heads to be released")
        # the sweep hands the freed memory back within a second or two
        wait_for(lambda: rss_kib(router.proc.pid) < baseline + 16 * 1024, 10,
                 f"RSS to fall back near {baseline} KiB")
        status, _, _ = http_request(router.url("/"))
        assert status == 200


def test_connections_above_the_limit_are_closed_and_the_router_keeps_serving(backend: Backend,
                                                                           tmp_path: Path) -> None:
    with RouterProcess.start(tmp_path / "r", table_for(backend), "--max-connections", "20") as router:
        socks = [socket.create_connection(address(router), timeout=10) for _ in range(20)]
        try:
            wait_for(lambda: router.status()["limits"]["connections"] >= 19, 10, "20 connections")
            extra = socket.create_connection(address(router), timeout=10)
            extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_to_close(extra) == b""  # closed without an answer
            extra.close()
            assert router.status()["limits"]["refused_connections"] >= 1
        finally:
            for sock in socks:
                sock.close()
        wait_for(lambda: router.status()["limits"]["connections"] == 0, 10, "connections to close")
        status, _, _ = http_request(router.url("/"))
        assert status == 200


# --------------------------------------------------------------------------- admin and control ports


def test_admin_port_refuses_calls_without_the_token(router: RouterProcess) -> None:
    for method, path in (("GET", "/status"), ("POST", "/reload"), ("GET", "/table"), ("GET", "/healthz")):
        assert router.admin_call(method, path, token="")[0] == 401
        assert router.admin_call(method, path, token="x" * 43)[0] == 401
    assert router.admin_call("GET", "/status")[0] == 200


def test_admin_token_file_is_private(router: RouterProcess) -> None:
    token_file = router.state_dir / "router-admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(router.admin_token()) >= 32
    assert router.admin_token() not in (router.state_dir / "router.json").read_text()


def test_a_workers_control_port_refuses_a_table_without_the_token(backend: Backend, tmp_path: Path) -> None:
    with RouterProcess.start(tmp_path / "w", table_for(backend), "--workers", "2") as router:
        control = json.loads((router.state_dir / "worker-0.json").read_text())["control"]
        hijack = make_table([deployment("dep", [("rev-evil", 10000, "127.0.0.1:9")])], generation=99)
        for headers in ({}, {"Authorization": "Bearer guess"}):
            status, _, _ = http_request(f"http://{control}/load", method="POST", body=json.dumps(hijack).encode(),
                                        headers={"Content-Type": "application/json", **headers})
            assert status == 401
            assert http_request(f"http://{control}/counters", headers=headers)[0] == 401
        # every request still goes to the real revision, and the supervisor's reloads still work
        for _ in range(20):
            status, answer_headers, _ = http_request(router.url("/"))
            assert status == 200 and answer_headers["X-Backend-Revision"] == "rev-sec"
        assert router.reload(table_for(backend) | {"generation": 2})[0] == 200
