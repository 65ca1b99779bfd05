"""Is a pid still the process we started? (pid + start time, so a recycled pid is never ours)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    Field 22 of ``/proc/<pid>/stat``; the command name (field 2) may contain spaces and
    parentheses, so the line is split after its last ``)``.
    """
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = data[data.rfind(")") + 2:].split()
    # fields[0] is field 3 (state); field 22 is fields[19]
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None  # a zombie has exited: not alive
    return fields[19]


def is_ours(pid: int | None, recorded_start: str | None) -> bool:
    """True only when ``pid`` is alive *and* started when we recorded it."""
    if not pid or not recorded_start:
        return False
    return start_time(pid) == recorded_start


def reap(pid: int) -> None:
    """Collect a child that has exited, if it is ours (no-op for non-children)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def terminate_group(pid: int, recorded_start: str, grace_seconds: float) -> str:
    """SIGTERM the process group, wait up to ``grace_seconds``, then SIGKILL. Never signals a foreign pid.

    Returns what happened: ``not-running``, ``terminated`` or ``killed``.
    """
    if not is_ours(pid, recorded_start):
        return "not-running"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not-running"
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        reap(pid)
        if not is_ours(pid, recorded_start):
            return "terminated"
        time.sleep(0.05)
    if is_ours(pid, recorded_start):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for _ in range(100):
            reap(pid)
            if not is_ours(pid, recorded_start):
                break
            time.sleep(0.02)
    return "killed"
