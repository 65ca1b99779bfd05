"""Real processes for router tests: tiny backend HTTP servers and the router itself.

Reusable from any test module in this directory::

    from router_helpers import start_backends, RouterProcess, make_table, deployment

    backends = start_backends(["rev-a", "rev-b"])          # real processes on 127.0.0.1
    table = make_table([deployment("dep", [("rev-a", 9000, backends[0].address),
                                           ("rev-b", 1000, backends[1].address)])])
    with RouterProcess.start(tmp_path, table) as router:    # python -m greentic_local_process.router
        status, headers, body = http_request(router.url("/"))
        router.status()["revisions"]["rev-a"]["completed"]

A backend (``python router_helpers.py backend --revision R``) answers every path with its
revision id, plus:

- ``/slow?s=SECONDS``: the same after a pause;
- ``/echo-headers``: the method, path and headers it received (JSON, headers as pairs);
- ``/upload``: ``{"bytes", "sha256", "revision"}`` of the streamed request body;
- ``/download?n=BYTES``: ``pattern_bytes(n)``, chunked (``&length=1``: with a Content-Length);
- ``/drip?s=SECONDS``: a first line, a pause, a last line;
- ``/hop``: a response carrying hop-by-hop headers;
- ``/gzip``: a gzip-encoded body;
- ``/code/NNN``: that status;
- ``/ws``: a WebSocket echo (each text message comes back prefixed with the revision id);
  ``/ws?deny=1`` refuses the handshake with 403.

Every answer carries ``X-Backend-Revision``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

PLUGIN_ROOT = Path(__file__).resolve().parents[1]  # plugins/local_process
HERE = Path(__file__).resolve()
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_address() -> str:
    """An address on 127.0.0.1 where nothing listens (a connect is refused)."""
    return f"127.0.0.1:{free_port()}"


_BLOCK = bytes(i % 251 for i in range(65536))


def pattern_bytes(n: int) -> bytes:
    return (_BLOCK * (n // len(_BLOCK) + 1))[:n]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(PLUGIN_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- backends


class Backend:
    def __init__(self, revision: str, proc: subprocess.Popen[str], port: int) -> None:
        self.revision = revision
        self.proc = proc
        self.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_backends(revisions: list[str]) -> list[Backend]:
    """Start one backend process per revision (in parallel) and wait until each listens."""
    procs = [
        subprocess.Popen([sys.executable, str(HERE), "backend", "--revision", r], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, env=subprocess_env())
        for r in revisions
    ]
    backends = []
    for revision, proc in zip(revisions, procs):
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "READY <port>"
        if not line.startswith("READY "):
            for p in procs:
                p.kill()
            raise RuntimeError(f"backend {revision} did not start: {line!r}")
        backends.append(Backend(revision, proc, int(line.split()[1])))
    return backends


def stop_all(backends: list[Backend]) -> None:
    for backend in backends:
        backend.stop()


def _run_backend(revision: str, port: int) -> None:
    import asyncio
    import logging

    from aiohttp import web

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # a client (the router) cutting off is expected

    async def handle(request: web.Request) -> web.StreamResponse:
        base = {"X-Backend-Revision": revision}
        path = request.path
        if path.startswith("/slow"):
            await asyncio.sleep(float(request.query.get("s", "1.0")))
        if path == "/echo-headers":
            body = await request.read()
            return web.json_response({"headers": list(request.headers.items()), "path_qs": request.path_qs,
                                      "method": request.method, "body_bytes": len(body)}, headers=base)
        if path == "/upload":
            digest, total = hashlib.sha256(), 0
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                total += len(chunk)
            return web.json_response({"bytes": total, "sha256": digest.hexdigest(), "revision": revision},
                                     headers=base)
        if path == "/download":
            n = int(request.query.get("n", "0"))
            response = web.StreamResponse(headers=base)
            response.content_type = "application/octet-stream"
            if request.query.get("length") == "1":
                response.content_length = n
            await response.prepare(request)
            sent = 0
            while sent < n:
                piece = _BLOCK[: min(len(_BLOCK), n - sent)]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
            return response
        if path == "/drip":
            response = web.StreamResponse(headers=base)
            await response.prepare(request)
            await response.write(b"first\n")
            await asyncio.sleep(float(request.query.get("s", "1.0")))
            await response.write(b"last\n")
            await response.write_eof()
            return response
        if path == "/hop":
            headers = {**base, "Connection": "X-Resp-Hop", "X-Resp-Hop": "secret", "Keep-Alive": "timeout=5",
                       "Proxy-Authenticate": "Basic", "X-End-To-End": "kept"}
            return web.Response(text=revision, headers=headers)
        if path == "/gzip":
            import gzip

            return web.Response(body=gzip.compress(revision.encode() * 100),
                                headers={**base, "Content-Encoding": "gzip", "Content-Type": "text/plain"})
        if path == "/ws":
            if request.query.get("deny") == "1":
                return web.Response(status=403, text="no websocket for you", headers=base)
            ws = web.WebSocketResponse()
            ws.headers.update(base)
            await ws.prepare(request)
            async for message in ws:
                if message.type == web.WSMsgType.TEXT:
                    await ws.send_str(f"{revision}:{message.data}")
                elif message.type == web.WSMsgType.BINARY:
                    await ws.send_bytes(message.data)
            return ws
        if path.startswith("/code/"):
            return web.Response(status=int(path.rsplit("/", 1)[1]), text=revision, headers=base)
        return web.Response(text=revision, headers=base)

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"READY {bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# --------------------------------------------------------------------------- tables


def deployment(deployment_id: str, backends: list[tuple[str, int, str | None]], *, hosts: list[str] | None = None,
               path_prefixes: list[str] | None = None, split_generation: int = 1,
               bundle_id: str | None = None) -> dict[str, Any]:
    return {
        "deployment_id": deployment_id, "bundle_id": bundle_id or f"bundle-{deployment_id}",
        "split_generation": split_generation, "hosts": hosts or [], "path_prefixes": path_prefixes or [],
        "backends": [{"revision_id": r, "weight_bps": w, "address": a} for r, w, a in backends],
    }


def make_table(deployments: list[dict[str, Any]], *, generation: int = 1, env_id: str = "test",
               listen: str = "127.0.0.1:0") -> dict[str, Any]:
    """A table; listen port 0 lets the router pick a free port (it reports it in router.json)."""
    return {"generation": generation, "env_id": env_id, "listen": listen, "deployments": deployments}


def write_table(state_dir: Path, table: dict[str, Any] | str) -> None:
    """Atomically, as the provider does (temp file in the same directory + rename)."""
    text = table if isinstance(table, str) else json.dumps(table, indent=2)
    tmp = state_dir / ".router-table.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, state_dir / "router-table.json")


# --------------------------------------------------------------------------- HTTP


def http_request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 10.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection, without proxies; returns (status, headers, body)."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a reset counts as the end too)."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class Client:
    """A keep-alive HTTP/1.1 connection (http.client) for many sequential requests."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, path: str = "/", *, method: str = "GET", headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        return response.status, response.headers, response.read()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the router


class RouterProcess:
    """``python -m greentic_local_process.router`` as a real subprocess."""

    def __init__(self, state_dir: Path, proc: subprocess.Popen[bytes], info: dict[str, Any]) -> None:
        self.state_dir = state_dir
        self.proc = proc
        self.info = info

    @classmethod
    def start(cls, state_dir: Path, table: dict[str, Any] | None = None, *args: str,
              timeout: float = START_TIMEOUT) -> RouterProcess:
        state_dir.mkdir(parents=True, exist_ok=True)
        if table is not None:
            write_table(state_dir, table)
        (state_dir / "router.json").unlink(missing_ok=True)
        log = open(state_dir / "router.log", "ab")
        with log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "greentic_local_process.router", "--state-dir", str(state_dir), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=subprocess_env(), start_new_session=True,
            )

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise RuntimeError(f"router exited with {proc.returncode}: {cls._log(state_dir)}")
            try:
                data = json.loads((state_dir / "router.json").read_text())
            except (OSError, ValueError):
                return None
            return data if data.get("pid") == proc.pid else None

        try:
            info = wait_for(ready, timeout, "router.json")
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        return cls(state_dir, proc, info)

    @staticmethod
    def _log(state_dir: Path) -> str:
        try:
            return (state_dir / "router.log").read_text()[-3000:]
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self._log(self.state_dir)

    @property
    def listen(self) -> str:
        return self.info["listen"]

    @property
    def admin(self) -> str:
        return self.info["admin"]

    def url(self, path: str = "/") -> str:
        return f"http://{self.listen}{path}"

    def admin_token(self) -> str:
        return (self.state_dir / "router-admin.token").read_text().strip()

    def admin_call(self, method: str, path: str, *, token: str | None = None) -> tuple[int, dict[str, Any]]:
        """An admin API call, authenticated with the router's token unless ``token`` is given."""
        token = self.admin_token() if token is None else token
        status, _, body = http_request(f"http://{self.admin}{path}", method=method,
                                       body=b"" if method == "POST" else None,
                                       headers={"Authorization": f"Bearer {token}"} if token else {})
        return status, json.loads(body or b"{}")

    def status(self) -> dict[str, Any]:
        code, data = self.admin_call("GET", "/status")
        assert code == 200, data
        return data

    def reload(self, table: dict[str, Any] | str | None = None) -> tuple[int, dict[str, Any]]:
        if table is not None:
            write_table(self.state_dir, table)
        return self.admin_call("POST", "/reload")

    def revision(self, revision_id: str) -> dict[str, Any]:
        return self.status()["revisions"].get(revision_id, {})

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> RouterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_backends(revisions: list[str]) -> Iterator[list[Backend]]:
    backends = start_backends(revisions)
    try:
        yield backends
    finally:
        stop_all(backends)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["backend"])
    parser.add_argument("--revision", required=True)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")),
                        help="default: $PORT (as the local-process provider sets it), else a free port")
    ns = parser.parse_args()
    _run_backend(ns.revision, ns.port)
