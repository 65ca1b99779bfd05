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
from typing import Any, Callable

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


def record_name(index: int) -> str:
    """The process file of a replica: ``process.json`` for the first, ``process-I.json`` after."""
    return "process.json" if index == 0 else f"process-{index}.json"


def log_name(stream: str, index: int) -> str:
    """``stdout.log`` / ``stderr.log`` for the first replica, ``stdout-I.log`` after."""
    return f"{stream}.log" if index == 0 else f"{stream}-{index}.log"


def read_record(root: Path, revision_id: str, index: int = 0) -> ProcessRecord | None:
    try:
        directory = files.existing_private_dir(root, "revisions", revision_id)
        if directory is None:
            return None
        data = json.loads(files.read_text(directory / record_name(index)))
        data["argv"] = tuple(data["argv"])
        return ProcessRecord(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_record(root: Path, record: ProcessRecord, index: int = 0) -> None:
    from greentic_core.store import atomic_write

    payload = attrs.asdict(record)
    payload["argv"] = list(record.argv)
    directory = files.private_dir(root, "revisions", record.revision_id)
    atomic_write(directory / record_name(index), json.dumps(payload, indent=2).encode())


def forget(root: Path, revision_id: str, index: int) -> None:
    """Remove a replica's process file (its process is gone)."""
    directory = files.existing_private_dir(root, "revisions", revision_id)
    if directory is not None:
        try:
            os.unlink(directory / record_name(index))
        except FileNotFoundError:
            pass


def running_records(root: Path, revision_id: str, replicas: int) -> list[ProcessRecord | None]:
    """Each replica's record when its process is alive and ours, else None."""
    found: list[ProcessRecord | None] = []
    for index in range(replicas):
        record = read_record(root, revision_id, index)
        if record is not None:
            procinfo.reap(record.pid)
            if not procinfo.is_ours(record.pid, record.start_time):
                record = None
        found.append(record)
    return found


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


def log_tail(root: Path, revision_id: str, lines: int = LOG_TAIL_LINES, index: int = 0) -> str:
    parts = []
    for name in (log_name("stderr", index), log_name("stdout", index)):
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
        if os.lstat(path).st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def rotate_running(root: Path, revision_id: str, name: str, max_bytes: int) -> bool:
    """Rotate the log of a running process by copy-and-truncate: the process keeps writing
    (``O_APPEND``) to the same file, now empty; the old content is ``NAME.1``. Lines written
    between the copy and the truncate are lost (a few at most). True when it rotated."""
    directory = files.existing_private_dir(root, "revisions", revision_id)
    if directory is None:
        return False
    path = directory / name
    try:
        if os.lstat(path).st_size <= max_bytes:
            return False
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        old = directory / f"{name}.1"
        tmp = directory / f".{name}.1.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(fd, 1 << 20):
                os.write(out, chunk)
        finally:
            os.close(out)
        os.replace(tmp, old)
        os.ftruncate(fd, 0)
        return True
    finally:
        os.close(fd)


def spawn(root: Path, revision_id: str, index: int, *, argv: list[str], cwd: str | None, env: dict[str, str],
          port: int, log_max_bytes: int) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start one replica (the supervisor calls this: it becomes the process's parent), its logs
    appended to files (rotated first when over ``log_max_bytes``), its record written."""
    directory = files.private_dir(root, "revisions", revision_id)
    if log_max_bytes:
        for stream in ("stdout", "stderr"):
            _rotate(directory / log_name(stream, index), log_max_bytes)
    with open_log(directory / log_name("stdout", index)) as out, open_log(directory / log_name("stderr", index)) as err:
        proc = subprocess.Popen(list(argv), cwd=cwd or None, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, close_fds=True)  # no shell
    started = procinfo.start_time(proc.pid) or ""
    record = ProcessRecord(revision_id=revision_id, pid=proc.pid, start_time=started, port=port, argv=tuple(argv),
                           started_at=time.time())
    _write_record(root, record, index)
    return proc, record

def desired_spec(root: Path, revision: Revision, env_id: str, *, ports: list[int], log_max_bytes: int,
                 stop_grace_seconds: float, pass_env: tuple[str, ...] = DEFAULT_PASS_ENV) -> dict[str, Any]:
    """What the supervisor needs to run the revision's replicas (one per port): argv (no
    shell), working directory, the explicit environment (recorded ``pass_env`` variables, then
    ``workload.env``, then who it is; the supervisor adds ``PORT``), health path, log limit."""
    prepare(root, revision, pass_env)
    workload = revision.workload
    assert workload is not None and workload.command
    child_env = recorded_environment(root, revision.revision_id)
    child_env.update(workload.env)
    child_env.update({
        "GREENTIC_REVISION_ID": revision.revision_id,
        "GREENTIC_DEPLOYMENT_ID": revision.deployment_id,
        "GREENTIC_BUNDLE_ID": revision.bundle_id,
        "GREENTIC_ENV_ID": env_id,
    })
    return {"argv": list(workload.command), "cwd": workload.working_dir or None, "env": child_env,
            "ports": list(ports), "health_path": workload.health_path or "/healthz",
            "log_max_bytes": log_max_bytes, "stop_grace_seconds": stop_grace_seconds, "supervise": True}


def wait_healthy(root: Path, record: ProcessRecord, health_path: str, *, timeout: float,
                 progress: Progress, index: int = 0, deadline: float | None = None) -> None:
    """Poll the health path until 2xx; on exit or timeout raise (the caller stops the process).

    ``deadline`` (monotonic): when several replicas share one ``timeout`` budget."""
    started = time.monotonic()
    deadline = started + timeout if deadline is None else deadline
    delay = 0.05
    while True:
        procinfo.reap(record.pid)
        if not procinfo.is_ours(record.pid, record.start_time):
            raise ProviderError(
                f"revision {record.revision_id} exited before it became healthy: "
                f"{log_tail(root, record.revision_id, index=index)}",
                hint=f"its logs are in {revision_dir(root, record.revision_id)}")
        if health_ok(record.port, health_path, timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
            return
        now = time.monotonic()
        if now >= deadline:
            raise ProviderTimeout(
                f"revision {record.revision_id} did not answer GET {health_path} with 2xx within {timeout:g}s: "
                f"{log_tail(root, record.revision_id, index=index)}",
                hint="raise warm_timeout_seconds in the answers or --timeout, or fix the health endpoint")
        progress(f"waiting for GET {health_path} on port {record.port} ({now - started:.1f}s of {timeout:g}s)")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def replica_indexes(root: Path, revision_id: str) -> list[int]:
    """The replicas that have a process file (``process.json``, ``process-I.json``)."""
    directory = files.existing_private_dir(root, "revisions", revision_id)
    if directory is None:
        return []
    found = []
    for entry in os.scandir(directory):
        name = entry.name
        if name == "process.json":
            found.append(0)
        elif name.startswith("process-") and name.endswith(".json") and name[8:-5].isdigit():
            found.append(int(name[8:-5]))
    return sorted(found)


def stop(root: Path, revision_id: str, grace_seconds: float) -> str:
    """Stop every replica of the revision (never a foreign pid); ``terminated``, ``killed`` or
    ``not-running`` (the strongest action any replica needed)."""
    results = []
    for index in replica_indexes(root, revision_id):
        record = read_record(root, revision_id, index)
        if record is not None:
            results.append(procinfo.terminate_group(record.pid, record.start_time, grace_seconds))
        forget(root, revision_id, index)
    for outcome in ("killed", "terminated"):
        if outcome in results:
            return outcome
    return "not-running"


def remove(root: Path, revision_id: str, *, keep_logs: bool) -> None:
    """Delete the revision's directory (its logs kept with ``keep_logs``); a symlink at any level
    is refused, so nothing outside the directory is ever deleted."""
    directory = files.existing_private_dir(root, "revisions", revision_id)
    if directory is None:
        return
    files.remove_dir(directory, keep=("stdout.log", "stderr.log") if keep_logs else ())
