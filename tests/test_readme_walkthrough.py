"""The README's five-minute walkthrough, taken from README.md itself, run both ways it offers:
in an activated virtual environment, and from a plain shell calling ``.venv/bin/greentic-deployer``.

The only changes made to the text: the router's port 8080 becomes a free port, and the
environments go to a temporary ``GREENTIC_HOME`` (the README names that variable). The commands
run in bash from a directory whose ``.venv`` is the virtual environment running the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

pytestmark = [
    pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the walkthrough runs from a virtual environment"),
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("curl") is None, reason="needs bash and curl"),
]


def walkthrough() -> list[str]:
    """The indented code block of README.md's walkthrough section, unindented."""
    text = (REPO / "README.md").read_text()
    section = text.split("## A five-minute walkthrough", 1)[1].split("\n## ", 1)[0]
    block, started = [], False
    for line in section.splitlines():
        if line.startswith("    "):
            started = True
            block.append(line[4:])
        elif started and line.strip():
            break
        elif started:
            block.append("")
    assert block, "no code block in the walkthrough section"
    return block


def test_the_walkthrough_block_is_found_and_uses_no_bare_python():
    lines = walkthrough()
    commands = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert sum("greentic-deployer" in line for line in commands) >= 15
    assert not any(re.search(r'--command "python', line) for line in commands)  # the shell's python3 may lack us


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _plain_path() -> str:
    """PATH without any virtual environment (what a fresh login shell has)."""
    keep = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if p and not (Path(p) / "activate").exists() and not Path(p).resolve() == (VENV / "bin").resolve()]
    return os.pathsep.join(keep)


@pytest.mark.parametrize("way", ["activated", "plain-shell"])
def test_readme_walkthrough_runs_as_written(tmp_path, way):
    if not (VENV / "bin" / "greentic-deployer").exists():
        pytest.skip("greentic-deployer is not installed in this virtual environment")
    port = _free_port()
    lines = [line.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for line in walkthrough()]
    if way == "plain-shell":  # as the README says: `.venv/bin/greentic-deployer` where it says `greentic-deployer`
        lines = [re.sub(r"(?<![\w./-])greentic-deployer(?= )", ".venv/bin/greentic-deployer", line)
                 if not line.lstrip().startswith("#") else line for line in lines]
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(VENV)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GREENTIC_", "PYTHON", "VIRTUAL_ENV")) and k != "PATH"}
    env.update(GREENTIC_HOME=str(home), GREENTIC_CACHE_DIR=str(tmp_path / "cache"), PATH=_plain_path())
    script = "set -euo pipefail\n"
    if way == "activated":
        script += ". .venv/bin/activate\n"
    # echo each command before it runs, so a failure names it
    script += "set -x\n" + "\n".join(lines) + "\n"
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    finally:
        _stop_everything(home)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert '"revision"' in proc.stdout  # curl got the sample app's answer through the router
    assert re.search(r"revision\.archive\s+ok", proc.stdout)  # `env history` shows v1's archive


def _stop_everything(home: Path) -> None:
    """Stop the revisions and the router the walkthrough left running (v2 is still serving)."""
    from greentic_local_process.sandbox import cleanup

    for env_dir in (home / "environments").glob("*"):
        cleanup(env_dir, 2.0)
