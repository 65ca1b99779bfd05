"""The conformance workload: a tiny stdlib HTTP app every revision of the fixture runs.

``python -m greentic_conformance.app`` listens on ``$PORT`` (default 8080) on ``$HOST``
(default 127.0.0.1); ``GET /healthz`` answers 200 and ``GET /`` answers
``{"revision": $GREENTIC_REVISION_ID}``. It depends on nothing but the standard library, so a
container provider can run it from any Python image (``image`` of the fixture workload names
one) and a process provider runs it with the current interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REVISION = os.environ.get("GREENTIC_REVISION_ID", "unknown")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "greentic-conformance-app"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path.split("?", 1)[0] == "/healthz":
            self._send(200, {"healthy": True, "revision": REVISION})
        else:
            self._send(200, {"revision": REVISION, "path": self.path})

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main(argv: list[str] | None = None) -> int:
    del argv
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
