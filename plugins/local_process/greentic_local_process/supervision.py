"""The provider's side of the supervisor: start it, tell it what to run, read what it reports.

The supervisor (:mod:`greentic_local_process.supervisor`) runs detached, one per environment,
and reads ``ROOT/supervisor/desired.json``. The provider changes that file only while it holds
the environment's lease (every mutating command does), then sends ``SIGHUP`` and waits until
``status.json`` reports the new generation, so a command returns only once the supervisor acts
on what it asked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from greentic_core import ProviderError, ProviderTimeout

from . import files, procinfo
from .supervisor import DESIRED_FILE, DIRECTORY, PID_FILE, STATUS_FILE

Progress = Callable[[str], None]
START_TIMEOUT = 15.0
APPLY_TIMEOUT = 15.0


def directory(root: Path) -> Path:
    return root / DIRECTORY


def running(root: Path) -> dict[str, Any] | None:
    """``supervisor.json`` of a live supervisor of this state directory, else None."""
    if files.existing_private_dir(root, DIRECTORY) is None:
        return None
    info = files.read_json(directory(root) / PID_FILE)
    if not info:
        return None
    procinfo.reap(info.get("pid") or 0)
    return info if procinfo.is_ours(info.get("pid"), info.get("start_time")) else None


def desired(root: Path) -> dict[str, Any]:
    if files.existing_private_dir(root, DIRECTORY) is None:
        return {"generation": 0, "router": None, "revisions": {}}
    return files.read_json(directory(root) / DESIRED_FILE) or {"generation": 0, "router": None, "revisions": {}}


def status(root: Path) -> dict[str, Any] | None:
    """What the supervisor reports (None when it never ran here)."""
    if files.existing_private_dir(root, DIRECTORY) is None:
        return None
    return files.read_json(directory(root) / STATUS_FILE)


def ensure(root: Path, progress: Progress) -> dict[str, Any]:
    """The environment's supervisor, started (detached, surviving the CLI) when none runs."""
    info = running(root)
    if info is not None:
        return info
    folder = files.private_dir(root, DIRECTORY)
    (folder / PID_FILE).unlink(missing_ok=True)
    with files.open_append(folder / "supervisor.log") as log:
        proc = subprocess.Popen([sys.executable, "-m", "greentic_local_process.supervisor", "--state-dir", str(root)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = files.read_json(folder / PID_FILE)
        if info and info.get("pid") == proc.pid:
            return info
        if proc.poll() is not None:
            raise ProviderError(f"the supervisor exited at start (code {proc.returncode}): {_tail(folder)}")
        progress("starting the supervisor")
        time.sleep(0.05)
    raise ProviderTimeout(f"the supervisor did not start within {START_TIMEOUT:g}s: {_tail(folder)}")


def _tail(folder: Path) -> str:
    try:
        lines = files.read_text(folder / "supervisor.log").splitlines()
    except OSError:
        return "(no supervisor log)"
    return " | ".join(line for line in lines[-6:] if line.strip()) or "(empty supervisor log)"


def update(root: Path, change: Callable[[dict[str, Any]], None], progress: Progress,
           timeout: float = APPLY_TIMEOUT, *, start: bool = True) -> dict[str, Any] | None:
    """Change the desired state, make the supervisor (started if needed, unless ``start`` is
    False) read it, and wait until it reports that generation; its status is returned (None when
    no supervisor runs and none was started)."""
    from greentic_core.store import atomic_write

    want = desired(root)
    want.setdefault("revisions", {})
    change(want)
    want["generation"] = int(want.get("generation", 0)) + 1
    folder = files.private_dir(root, DIRECTORY)
    atomic_write(folder / DESIRED_FILE, (json.dumps(want, indent=2) + "\n").encode())  # 0600: env values
    if not start and running(root) is None:
        return None
    info = ensure(root, progress)
    try:
        os.kill(info["pid"], signal.SIGHUP)
    except ProcessLookupError:
        info = ensure(root, progress)  # it died meanwhile: a new one reads the file at start
    deadline = time.monotonic() + timeout
    while True:
        current = status(root)
        if current is not None and int(current.get("generation", -1)) >= want["generation"]:
            return current
        if time.monotonic() > deadline:
            raise ProviderTimeout(f"the supervisor did not apply generation {want['generation']} within {timeout:g}s: "
                                  f"{_tail(folder)}")
        progress("waiting for the supervisor")
        time.sleep(0.02)


def stop(root: Path, grace_seconds: float = 5.0) -> str:
    """End supervision (the processes keep running)."""
    info = running(root)
    if info is None:
        return "not-running"
    return procinfo.terminate_group(info["pid"], info["start_time"], grace_seconds)


def revision_status(root: Path, revision_id: str) -> dict[str, Any] | None:
    current = status(root) or {}
    return (current.get("revisions") or {}).get(revision_id)


def systemd_unit(env_id: str, root: Path, *, home: str | None = None, store_url: str | None = None) -> str:
    """A systemd service for the environment's supervisor, the one process nothing else watches.

    ``KillMode=process``: stopping or restarting the unit ends supervision only; the router and
    the revisions keep serving and the next supervisor adopts them. ``Restart=always`` brings
    the supervisor back, and it brings back whatever died meanwhile.
    """
    lines = [
        "[Unit]",
        f"Description=greentic-deployer local-process supervisor of environment {env_id} (router and revisions)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={sys.executable} -m greentic_local_process.supervisor --state-dir {root}",
        "Restart=always",
        "RestartSec=1",
        "KillMode=process",
        "UMask=0077",
        f"WorkingDirectory={root}",
    ]
    from greentic_core.store.select import unit_environment

    lines += unit_environment(home, store_url)
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
