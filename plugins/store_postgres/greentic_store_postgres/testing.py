"""A throw-away PostgreSQL cluster for tests and benchmarks (a real server, never a mock).

Started from the server binaries of the distribution's ``postgresql`` package: ``initdb``
and ``pg_ctl`` from ``pg_config --bindir``, else the newest ``/usr/lib/postgresql/<v>/bin``,
else ``PATH``. ``initdb`` refuses to run as root, so when the tests run as root the cluster is
created and run by the unprivileged ``postgres`` user (``runuser``). The cluster lives in a
temporary directory, listens on 127.0.0.1 on a free port (and a socket in that directory)
and is stopped and deleted by :meth:`TempCluster.stop`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "greentic"
#: A password for test URLs: trust auth ignores it, and it must never be printed all the same.
TEST_PASSWORD = "pg-S3CRET-7d1e"


class ServerMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def server_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in versions]
    for on_path in (shutil.which("initdb"), shutil.which("pg_ctl")):
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    raise ServerMissing("no PostgreSQL server binaries (initdb, pg_ctl): install them, e.g. `apt-get install -y postgresql`")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TempCluster:
    """One running throw-away cluster; :attr:`url` connects as a superuser (trust auth)."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bindir = server_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="greentic-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                  "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
                   + ("" if fsync else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"))
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stderr.strip()} {log}")

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str, password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database on this cluster; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
