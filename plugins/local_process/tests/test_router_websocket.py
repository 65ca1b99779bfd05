"""WebSockets (HTTP Upgrade) through the router: real aiohttp clients and servers, real sockets.

The router forwards a WebSocket handshake (``GET`` with ``Connection: Upgrade`` and
``Upgrade: websocket``) to the revision the split picks; when the revision answers 101 it
relays bytes both ways until either side closes. An open tunnel counts as in flight (drain
waits for it, up to ``drain_seconds``); a table reload never cuts it. Other upgrades (h2c) are
served as ordinary requests without their ``Upgrade``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from greentic_core import Workload
from router_helpers import (
    HERE,
    Backend,
    RouterProcess,
    deployment,
    http_request,
    make_table,
    read_to_close,
    running_backends,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def backends() -> Iterator[list[Backend]]:
    with running_backends(["ws-a", "ws-b"]) as started:
        yield started


def table(backends: list[Backend], generation: int = 1, weights: tuple[int, int] = (10000, 0)) -> dict[str, Any]:
    return make_table([deployment("dep", [("ws-a", weights[0], backends[0].address),
                                          ("ws-b", weights[1], backends[1].address)])], generation=generation)


@pytest.fixture()
def router(backends: list[Backend], tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess.start(tmp_path / "router", table(backends), "--read-timeout", "1") as proc:
        yield proc


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_websocket_echo_through_the_router(router: RouterProcess) -> None:
    async def go() -> tuple[list[str], bytes, str]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(router.url("/ws")) as ws:
                revision = ws._response.headers["X-Greentic-Revision"]
                answers = []
                for i in range(200):
                    await ws.send_str(f"m{i}")
                    answers.append((await ws.receive(timeout=5)).data)
                await ws.send_bytes(b"\x00\x01" * 40000)  # 80 kB, several TCP segments
                binary = (await ws.receive(timeout=5)).data
                return answers, binary, revision

    answers, binary, revision = run(go())
    assert answers == [f"ws-a:m{i}" for i in range(200)]
    assert binary == b"\x00\x01" * 40000 and revision == "ws-a"
    wait_for(lambda: router.revision("ws-a").get("in_flight") == 0, 5, "the tunnel to be counted done")


def test_a_tunnel_is_in_flight_and_survives_a_reload_and_an_idle_read_timeout(router: RouterProcess,
                                                                             backends: list[Backend]) -> None:
    async def go() -> list[str]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(router.url("/ws")) as ws:
                await ws.send_str("before")
                first = (await ws.receive(timeout=5)).data
                in_flight = await asyncio.to_thread(lambda: router.revision("ws-a")["in_flight"])
                assert in_flight == 1
                code, _ = await asyncio.to_thread(router.reload, table(backends, 2, (0, 10000)))
                assert code == 200
                await asyncio.sleep(1.5)  # idle longer than --read-timeout 1: a tunnel is not timed out
                await ws.send_str("after")
                second = (await ws.receive(timeout=5)).data
                return [first, second]

    assert run(go()) == ["ws-a:before", "ws-a:after"]  # new requests would go to ws-b; the tunnel stays
    status, headers, _ = http_request(router.url("/"))
    assert status == 200 and headers["X-Greentic-Revision"] == "ws-b"
    wait_for(lambda: router.revision("ws-a").get("in_flight") == 0, 5, "the tunnel to end")


def test_a_refused_handshake_is_answered_and_the_connection_closed(router: RouterProcess) -> None:
    async def go() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(router.url("/ws?deny=1")):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert run(go()) == 403
    assert router.revision("ws-a")["in_flight"] == 0


def test_an_h2c_upgrade_is_served_as_an_ordinary_request(router: RouterProcess) -> None:
    host, port = router.listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # urllib rewrites Connection
        sock.sendall(b"GET /echo-headers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_close(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    names = {name.lower() for name, _ in json.loads(body)["headers"]}
    assert "upgrade" not in names and "http2-settings" not in names and "x-forwarded-for" in names


def test_drain_waits_for_an_open_tunnel_up_to_drain_seconds(tmp_path: Path) -> None:
    from test_provider import ENV_ID, LP

    lp = LP(tmp_path)
    try:
        def stage() -> str:
            workload = Workload(command=(sys.executable, str(HERE), "backend", "--revision", "drained"),
                                env={"GREENTIC_TEST_MARKER": lp.marker}, health_path="/healthz")
            rid = lp.op.stage(ENV_ID, lp.dep, workload=workload, drain_seconds=2).revision.revision_id
            lp.op.warm(ENV_ID, rid)
            return rid

        old, new = stage(), stage()
        lp.traffic((old, 10000), (new, 0))
        closed = threading.Event()
        opened = threading.Event()

        async def hold() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://{lp.listen}/ws") as ws:
                    opened.set()
                    async for _ in ws:
                        pass
            closed.set()

        holder = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
        holder.start()
        assert opened.wait(10)
        lp.traffic((old, 0), (new, 10000))
        started = time.monotonic()
        lp.op.drain(ENV_ID, old)
        took = time.monotonic() - started
        assert 1.9 <= took < 10, took  # waited for the tunnel, up to drain_seconds, then stopped it
        assert closed.wait(10)  # the tunnel ended with the revision's process
    finally:
        assert not lp.close()
