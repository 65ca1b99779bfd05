"""A real moto S3 server over HTTP for tests and benchmarks (never in-process patching).

:class:`MotoServer` runs moto's server in its own process on 127.0.0.1 (a free port) and
waits until it answers; :meth:`MotoServer.url` gives an ``s3://`` store URL with a fresh bucket
on it. moto 5.2 enforces ``If-Match`` / ``If-None-Match`` on PutObject, which the store's
leases and compare-and-swap rely on.

One difference from S3 is made up for: moto's threaded server checks a condition and then
writes, with nothing held in between (``moto/s3/responses.py``, ``put_object``), so two
concurrent conditional PUTs of one key can both pass, which S3 never allows. The server here
is moto's own (``DomainDispatcherApplication`` under werkzeug's threaded ``run_simple``, as
``python -m moto.server`` builds it) with each request handled under one lock: connections
stay concurrent, and every request is atomic as S3's are. (The concurrency test met the race
once: eight writers, one command refused.)
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request

#: Credentials moto accepts; set them in the environment of every process that uses the store.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-S3CRET-2b9",
               "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_buckets = itertools.count()


#: moto's server (as ``moto.server.main`` builds it) with every request handled under one lock
_SERVER = """
import os, signal, sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

port = int(sys.argv[1])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()

def atomic(environ, start_response):
    with one_at_a_time:
        result = app(environ, start_response)
        try:
            return [b"".join(result)]
        finally:
            getattr(result, "close", lambda: None)()

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
run_simple("127.0.0.1", port, atomic, threaded=True, request_handler=MotoRequestHandler)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **CREDENTIALS}
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(self.port)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.05)

    def url(self, prefix: str = "greentic") -> str:
        """An ``s3://`` store URL on a new, empty bucket of this server."""
        import boto3

        bucket = f"greentic-test-{next(_buckets)}-{os.getpid()}"
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=bucket)
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=30)
