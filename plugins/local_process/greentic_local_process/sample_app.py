"""A tiny HTTP app for the demo and the tests: it answers with its revision id.

Run as ``python -m greentic_local_process.sample_app`` with ``PORT`` set (the provider sets it).
``GET /`` -> ``{"revision": ..., "pid": ...}``; ``GET /healthz`` -> 200; ``GET /slow?seconds=S``
answers after S seconds. ``SAMPLE_ERROR_RATE=0.3`` makes that share of ``/`` requests answer
500 (for canary tests); ``SAMPLE_UNHEALTHY=1`` makes ``/healthz`` answer 503 forever;
``SAMPLE_EXIT_AT_START=1`` exits at once with an error message. For supervision tests:
``SAMPLE_EXIT_IF_EXISTS=PATH`` exits at start while PATH exists (a crash loop once it was
healthy), ``SAMPLE_UNHEALTHY_IF_EXISTS=PATH`` answers ``/healthz`` 503 while PATH exists.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

REVISION = os.environ.get("GREENTIC_REVISION_ID", "unknown")
ERROR_RATE = float(os.environ.get("SAMPLE_ERROR_RATE", "0") or 0)
UNHEALTHY = os.environ.get("SAMPLE_UNHEALTHY") == "1"
UNHEALTHY_IF = os.environ.get("SAMPLE_UNHEALTHY_IF_EXISTS")


class Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: under a few hundred concurrent requests the
    # accept queue overflows, the kernel drops handshakes and requests stall for seconds.
    request_queue_size = 1024
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the body until the
    # client's delayed ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # keep logs quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            unhealthy = UNHEALTHY or bool(UNHEALTHY_IF and os.path.exists(UNHEALTHY_IF))
            self._send(503 if unhealthy else 200, {"healthy": not unhealthy, "revision": REVISION})
            return
        if url.path == "/slow":
            seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(min(seconds, 60))
        if ERROR_RATE and random.random() < ERROR_RATE:
            self._send(500, {"error": "injected failure", "revision": REVISION})
            return
        self._send(200, {"revision": REVISION, "pid": os.getpid(), "path": url.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        self._send(200, {"revision": REVISION, "received_bytes": len(data)})


def main() -> None:
    if os.environ.get("SAMPLE_EXIT_AT_START") == "1":
        print("sample app: refusing to start (SAMPLE_EXIT_AT_START=1)", file=sys.stderr)
        sys.exit(3)
    exit_if = os.environ.get("SAMPLE_EXIT_IF_EXISTS")
    if exit_if and os.path.exists(exit_if):
        print(f"sample app: refusing to start ({exit_if} exists)", file=sys.stderr)
        sys.exit(4)
    port = int(os.environ["PORT"])
    server = Server(("127.0.0.1", port), Handler)
    print(f"sample app {REVISION} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
