"""Revision processes: start, health-wait, inspect and stop, with their state on disk.

Each revision has a directory ``<root>/revisions/<revision_id>/`` holding ``process.json``
(pid, kernel start time, port, argv), ``environment.json`` (the variables passed from the
caller, recorded once), ``stdout.log`` and ``stderr.log``. A process is only ever signalled
when its pid *and* its start time match what we recorded. Every file is opened without
following symlinks (:mod:`greentic_local_process.files`).

The environment of a revision process is explicit, so it is the same whoever starts it (a warm
from one shell, an ``env reconcile`` from another): the variables of the caller named by the
``pass_env`` answer (names or ``PREFIX*`` patterns; :data:`DEFAULT_PASS_ENV` by default) are
recorded when the revision is first prepared, then ``workload.env`` is laid over them, then
``PORT`` and the ``GREENTIC_*`` variables. Nothing else of the caller's environment (cloud
credentials, tokens) reaches the process.
"""

from __future__ import annotations

import fnmatch
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

from . import files, procinfo

Progress = Callable[[str], None]
LOG_TAIL_LINES = 15
#: what a revision process gets from the caller's environment unless the pass_env answer says otherwise
DEFAULT_PASS_ENV = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME")
ENVIRONMENT_FILE = "environment.json"


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
        directory = files.existing_private_dir(root, "revisions", revision_id)
        if directory is None:
            return None
        data = json.loads(files.read_text(directory / "process.json"))
        data["argv"] = tuple(data["argv"])
        return ProcessRecord(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_record(root: Path, record: ProcessRecord) -> None:
    from greentic_core.store import atomic_write

    payload = attrs.asdict(record)
    payload["argv"] = list(record.argv)
    directory = files.private_dir(root, "revisions", record.revision_id)
    atomic_write(directory / "process.json", json.dumps(payload, indent=2).encode())


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
            text = files.read_text(revision_dir(root, revision_id) / name)
        except OSError:
            continue
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        if tail:
            parts.append(f"{name}: " + " | ".join(tail))
    return "; ".join(parts) if parts else "(no output)"


def check_runnable(revision: Revision, path: str | None = None) -> list[str]:
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
    elif shutil.which(exe, path=path) is None:
        problems.append(f"executable {exe!r} not found on PATH")
    return problems


def prepare(root: Path, revision: Revision, pass_env: tuple[str, ...] = DEFAULT_PASS_ENV) -> Path:
    """The revision's directory (0700, no symlink on the way), with its environment recorded.

    Checked before anything is created: the command must be found on the PATH the process will
    get (the recorded one, else the caller's)."""
    existing = files.existing_private_dir(root, "revisions", revision.revision_id)
    recorded = _read_environment(existing) if existing is not None else None
    environment = recorded if recorded is not None else passed_environment(pass_env)
    problems = check_runnable(revision, path=environment.get("PATH", os.defpath))
    if problems:
        raise ProviderError(f"revision {revision.revision_id} cannot run: {problems[0]}",
                            hint="stage a new revision with a command that exists here")
    directory = files.private_dir(root, "revisions", revision.revision_id)
    if recorded is None:
        from greentic_core.store import atomic_write

        # 0600: values may be private
        atomic_write(directory / ENVIRONMENT_FILE, (json.dumps(environment, indent=2) + "\n").encode())
    return directory


def passed_environment(pass_env: tuple[str, ...], source: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's variables that ``pass_env`` names (``NAME`` or ``PREFIX*``)."""
    source = dict(os.environ) if source is None else source
    return {name: value for name, value in sorted(source.items())
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in pass_env)}


def _read_environment(directory: Path) -> dict[str, str] | None:
    """The environment recorded for a revision (None when none is)."""
    path = directory / ENVIRONMENT_FILE
    try:
        data = json.loads(files.read_text(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProviderError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                            hint="remove it to record the caller's environment again") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ProviderError(f"{path} is not an object of strings",
                            hint="remove it to record the caller's environment again")
    return data


def recorded_environment(root: Path, revision_id: str) -> dict[str, str]:
    """What :func:`prepare` recorded for the revision (empty when nothing is)."""
    directory = files.existing_private_dir(root, "revisions", revision_id)
    return (_read_environment(directory) or {}) if directory is not None else {}


def open_log(path: Path):
    """Open a log for appending, created 0600 (what a revision prints may be sensitive); a
    symlink in its place is refused."""
    return files.open_append(path)


def _rotate(path: Path, max_bytes: int) -> None:
    try:
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def start(root: Path, revision: Revision, env_id: str, *, log_max_bytes: int,
          pass_env: tuple[str, ...] = DEFAULT_PASS_ENV) -> ProcessRecord:
    """Start the revision's command as its own session (detached from the CLI), logs to files."""
    directory = prepare(root, revision, pass_env)
    assert revision.workload is not None and revision.workload.command
    port = free_port()
    child_env = recorded_environment(root, revision.revision_id)
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
    directory = files.existing_private_dir(root, "revisions", revision_id)  # checked: no symlink
    if directory is not None:
        try:
            os.unlink(directory / "process.json")
        except FileNotFoundError:
            pass
    return result


def remove(root: Path, revision_id: str, *, keep_logs: bool) -> None:
    """Delete the revision's directory (its logs kept with ``keep_logs``); a symlink at any level
    is refused, so nothing outside the directory is ever deleted."""
    directory = files.existing_private_dir(root, "revisions", revision_id)
    if directory is None:
        return
    files.remove_dir(directory, keep=("stdout.log", "stderr.log") if keep_logs else ())
