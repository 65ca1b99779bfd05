"""Revision processes: start, health-wait, inspect and stop, with their state on disk.

Each revision has a directory ``<root>/revisions/<revision_id>/`` holding ``process.json``
(pid, kernel start time, port, argv), ``stdout.log`` and ``stderr.log``. A process is only
ever signalled when its pid *and* its start time match what we recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import attrs

from greentic_core import ProviderError, ProviderTimeout, Revision

from . import procinfo

Progress = Callable[[str], None]
LOG_TAIL_LINES = 15


@attrs.frozen(kw_only=True)
class ProcessRecord:
    revision_id: str
    pid: int
    start_time: str
    port: int
    argv: tuple[str, ...]
    started_at: float

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def revision_dir(root: Path, revision_id: str) -> Path:
    return root / "revisions" / revision_id


def read_record(root: Path, revision_id: str) -> ProcessRecord | None:
    try:
        data = json.loads((revision_dir(root, revision_id) / "process.json").read_text())
        data["argv"] = tuple(data["argv"])
        return ProcessRecord(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_record(root: Path, record: ProcessRecord) -> None:
    from greentic_core.store import atomic_write

    payload = attrs.asdict(record)
    payload["argv"] = list(record.argv)
    atomic_write(revision_dir(root, record.revision_id) / "process.json", json.dumps(payload, indent=2).encode())


def running_record(root: Path, revision_id: str) -> ProcessRecord | None:
    """The record of a revision process that is alive and really ours, else None."""
    record = read_record(root, revision_id)
    if record is None:
        return None
    procinfo.reap(record.pid)
    return record if procinfo.is_ours(record.pid, record.start_time) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_ok(port: int, path: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(root: Path, revision_id: str, lines: int = LOG_TAIL_LINES) -> str:
    parts = []
    for name in ("stderr.log", "stdout.log"):
        try:
            text = (revision_dir(root, revision_id) / name).read_text(errors="replace")
        except OSError:
            continue
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        if tail:
            parts.append(f"{name}: " + " | ".join(tail))
    return "; ".join(parts) if parts else "(no output)"


def check_runnable(revision: Revision) -> list[str]:
    """Why the revision's command cannot run here (empty when it can)."""
    workload = revision.workload
    if workload is None or not workload.command:
        return ["the revision has no workload.command (stage it with --command CMD)"]
    problems = []
    exe = workload.command[0]
    cwd = workload.working_dir
    if cwd and not Path(cwd).is_dir():
        problems.append(f"working directory {cwd!r} does not exist")
    if os.sep in exe:
        candidate = Path(cwd or ".") / exe if not os.path.isabs(exe) else Path(exe)
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            problems.append(f"executable {exe!r} not found or not executable")
    elif shutil.which(exe) is None:
        problems.append(f"executable {exe!r} not found on PATH")
    return problems


def prepare(root: Path, revision: Revision) -> Path:
    problems = check_runnable(revision)
    if problems:
        raise ProviderError(f"revision {revision.revision_id} cannot run: {problems[0]}",
                            hint="stage a new revision with a command that exists here")
    directory = revision_dir(root, revision.revision_id)
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # revisions/: 0700 too, not umask's
    directory.mkdir(exist_ok=True, mode=0o700)
    return directory


def open_log(path: Path):
    """Open a log for appending, created 0600 (what a revision prints may be sensitive)."""
    return open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "ab")


def _rotate(path: Path, max_bytes: int) -> None:
    try:
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def start(root: Path, revision: Revision, env_id: str, *, log_max_bytes: int) -> ProcessRecord:
    """Start the revision's command as its own session (detached from the CLI), logs to files."""
    directory = prepare(root, revision)
    assert revision.workload is not None and revision.workload.command
    port = free_port()
    child_env = dict(os.environ)
    child_env.update(revision.workload.env)
    child_env.update({
        "PORT": str(port),
        "GREENTIC_REVISION_ID": revision.revision_id,
        "GREENTIC_DEPLOYMENT_ID": revision.deployment_id,
        "GREENTIC_BUNDLE_ID": revision.bundle_id,
        "GREENTIC_ENV_ID": env_id,
    })
    for name in ("stdout.log", "stderr.log"):
        _rotate(directory / name, log_max_bytes)
    argv = tuple(revision.workload.command)
    with open_log(directory / "stdout.log") as out, open_log(directory / "stderr.log") as err:
        try:
            proc = subprocess.Popen(  # no shell: argv is executed directly
                list(argv), cwd=revision.workload.working_dir or None, env=child_env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise ProviderError(f"cannot start revision {revision.revision_id}: {exc}",
                                hint="check the revision's command and working directory") from exc
    started = procinfo.start_time(proc.pid)
    if started is None:  # exited immediately
        proc.wait()
        raise ProviderError(
            f"revision {revision.revision_id} exited at start (code {proc.returncode}): "
            f"{log_tail(root, revision.revision_id)}",
            hint="fix the command; its logs are in " + str(directory))
    record = ProcessRecord(revision_id=revision.revision_id, pid=proc.pid, start_time=started, port=port,
                           argv=argv, started_at=time.time())
    _write_record(root, record)
    return record


def wait_healthy(root: Path, record: ProcessRecord, health_path: str, *, timeout: float,
                 progress: Progress) -> None:
    """Poll the health path until 2xx; on exit or timeout raise (the caller stops the process)."""
    started = time.monotonic()
    deadline = started + timeout
    delay = 0.05
    while True:
        procinfo.reap(record.pid)
        if not procinfo.is_ours(record.pid, record.start_time):
            raise ProviderError(
                f"revision {record.revision_id} exited before it became healthy: "
                f"{log_tail(root, record.revision_id)}",
                hint=f"its logs are in {revision_dir(root, record.revision_id)}")
        if health_ok(record.port, health_path, timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
            return
        now = time.monotonic()
        if now >= deadline:
            raise ProviderTimeout(
                f"revision {record.revision_id} did not answer GET {health_path} with 2xx within {timeout:g}s: "
                f"{log_tail(root, record.revision_id)}",
                hint="raise warm_timeout_seconds in the answers or --timeout, or fix the health endpoint")
        progress(f"waiting for GET {health_path} on port {record.port} ({now - started:.1f}s of {timeout:g}s)")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def stop(root: Path, revision_id: str, grace_seconds: float) -> str:
    record = read_record(root, revision_id)
    if record is None:
        return "not-running"
    result = procinfo.terminate_group(record.pid, record.start_time, grace_seconds)
    try:
        (revision_dir(root, revision_id) / "process.json").unlink()
    except FileNotFoundError:
        pass
    return result


def remove(root: Path, revision_id: str, *, keep_logs: bool) -> None:
    directory = revision_dir(root, revision_id)
    if not directory.exists():
        return
    for entry in directory.iterdir():
        if keep_logs and entry.name.startswith(("stdout.log", "stderr.log")):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not keep_logs:
        try:
            directory.rmdir()
        except OSError:
            pass
