"""A revision that never stops talking: ``line N`` on stdout and ``err N`` on stderr every 5 ms,
and 200 on every path (for the log-follow tests). Run with ``PORT`` set."""

import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
count = 0
while True:
    print(f"line {count}", flush=True)
    print(f"err {count}", file=sys.stderr, flush=True)
    count += 1
    time.sleep(0.005)
