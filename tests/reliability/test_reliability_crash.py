"""Crash safety: SIGKILL at random points, a full disk, a read-only directory.

* :func:`test_sigkill_at_random_points_leaves_the_old_or_the_new_document`: a fork server
  (:mod:`crash_writer`) runs one ``traffic set`` per forked child through the real CLI (half
  through the recording deployer, half ``--record-only``); the test SIGKILLs each child after a
  random delay spread over the measured length of one command, at least 200 times. After every
  kill the document loads and validates and is either byte-identical to the old one or exactly
  the new state that child was writing; ``runtime-config.json`` is the projection of one of the
  two; a child that was not killed always left the new state.
* full disk (a real 1 MiB tmpfs filled up, and ``RLIMIT_FSIZE`` with SIGXFSZ ignored so writes
  fail with EFBIG) and a read-only directory (a read-only bind mount; and the store handed to
  ``nobody`` with its environment directory made unwritable, the command run after dropping
  root with ``os.setuid``): the command fails with one ``error:`` line plus a hint, exit 5,
  and every file of the environment is unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

import recording_plugin
from greentic_core import codec, validation
from greentic_core.projection import materialize_runtime_config
from greentic_core.store import Store
from reliability_harness import Cli, check_error_output

HERE = Path(__file__).resolve().parent
KILLS = 200
NOBODY = 65534


def _setup(cli: Cli) -> tuple[str, str]:
    cli.init(recording_plugin.NAME, answers={"region": "eu-west-1"})
    cli.json("deployment", "add", "dev", "shop")
    a, b = cli.ready(), cli.ready()
    cli.json("traffic", "set", "dev", "shop", f"{a}=10000")
    return a, b


def _without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


def _projection(data: bytes) -> Any:
    return codec.unstructure(materialize_runtime_config(codec.load_environment(data)))


def env_files(env_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(env_dir)): p.read_bytes() for p in sorted(env_dir.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.timeout(200)
def test_sigkill_at_random_points_leaves_the_old_or_the_new_document(cli: Cli) -> None:
    rev_a, rev_b = _setup(cli)
    store = Store(cli.home / "environments")
    server = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(cli.home), "dev", rev_a, rev_b],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=cli.subprocess_env())
    rnd = random.Random(20261126)
    weights = iter(rnd.sample(range(1, 10000), 9998))

    def attempt(a: int, delay: float | None) -> tuple[str, float]:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(f"go {a}\n")
        server.stdin.flush()
        pid = int(server.stdout.readline())
        if delay is not None:
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        words = server.stdout.readline().split()
        assert words[0] == "reaped", words
        return " ".join(words[1:-1]), float(words[-1])

    outcomes: Counter[str] = Counter()
    recovered = stale_configs = temp_seen = 0
    kills = attempts = 0
    try:
        durations = []
        for _ in range(6):  # how long one command takes here, unkilled
            status, took = attempt(next(weights), None)
            assert status == "exited 0", status
            durations.append(took)
        span = sorted(durations)[len(durations) // 2] * 1.25
        possible_configs = [_projection(cli.env_bytes())]
        deadline = time.monotonic() + 150
        while kills < KILLS and time.monotonic() < deadline:
            env_dir = cli.env_dir()
            before = cli.env_bytes()
            before_doc = json.loads(before)
            g = before_doc["generation"]
            a = next(weights)
            status, _ = attempt(a, rnd.uniform(0.0, span))
            attempts += 1
            kills += status == "killed"
            assert status in ("killed", "exited 0"), status

            env = store.load("dev")  # decodes, checks the id, validates
            validation.validate_environment(env)
            after = cli.env_bytes()
            doc = json.loads(after)
            if doc["generation"] == g:
                assert after == before, "same generation, different bytes"
                assert status == "killed", "a command that finished did not save"
                outcomes["old"] += 1
            else:
                assert doc["generation"] == g + 1, (g, doc["generation"])
                assert {e["revision_id"]: e["weight_bps"] for e in doc["traffic_splits"][0]["entries"]} == {
                    rev_a: a, rev_b: 10000 - a}
                assert _without(doc, "generation", "traffic_splits") == _without(before_doc, "generation",
                                                                                 "traffic_splits")
                outcomes["new"] += 1
                # its audit line is in the log, or (killed between the commit and the append) in
                # audit/pending-event.json, from where the next command appends it
                if not any(e.get("generation_after") == g + 1 for e in store.audit_events("dev")):
                    pending = json.loads((env_dir / "audit" / "pending-event.json").read_text())
                    assert (pending["generation_before"], pending["generation_after"]) == (g, g + 1)
                    recovered += 1
            # runtime-config.json is refreshed after the commit: a kill in between leaves it stale,
            # i.e. the projection of a document written since the last command that finished
            possible_configs.append(_projection(after))
            config = json.loads((env_dir / "runtime-config.json").read_text())
            assert config in possible_configs
            if status == "exited 0":
                assert config == _projection(after)
                possible_configs = [config]
            elif config != _projection(after):
                stale_configs += 1
            temp_seen += any(name.endswith(".tmp") for name in os.listdir(env_dir))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    assert kills >= KILLS, f"only {kills} kills in {attempts} attempts"
    assert outcomes["old"] > 10 and outcomes["new"] > 10, outcomes  # kills landed before and after the commit

    # the next command cleans up whatever the killed ones left behind, and repairs runtime-config.json
    cli.json("traffic", "set", "dev", "shop", f"{rev_a}=10000,{rev_b}=0")
    env_dir = cli.env_dir()
    assert [n for n in os.listdir(env_dir) if n.endswith(".tmp")] == []
    assert json.loads((env_dir / "runtime-config.json").read_text()) == _projection(cli.env_bytes())
    assert len(os.listdir(env_dir / "backups")) <= 20
    # nothing lost from the audit log either: one event per generation, in order, none twice
    events = store.audit_events("dev")
    for previous, event in zip(events, events[1:]):
        assert event["generation_before"] == previous["generation_after"], (previous, event)
        assert event["generation_after"] == event["generation_before"] + 1, event
    assert events[-1]["generation_after"] == cli.env_doc()["generation"]
    assert sum(bool(e.get("recovered")) for e in events) == recovered
    assert not (env_dir / "audit" / "pending-event.json").exists()
    assert cli.json("env", "validate", "dev")["valid"] is True
    print(f"\ncrash: {kills} SIGKILLs in {attempts} attempts (delay spread over {span * 1000:.1f} ms): "
          f"{outcomes['old']} left the old document, {outcomes['new']} the new one, 0 invalid or torn; "
          f"{stale_configs} stale runtime-config.json (repaired by the next save); {temp_seen} with a temp file "
          f"left (removed by the next save); {recovered} audit lines recovered from pending-event.json "
          f"(killed between commit and append), 0 lost")


# --------------------------------------------------------------------------- full disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the RLIMIT_FSIZE case covers it")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("free_pages", [0, 1, 2])
def test_full_disk_tmpfs_leaves_every_file_intact(cli: Cli, free_pages: int) -> None:
    with tmpfs(cli.tmp / "disk", "1m"):
        cli.home = cli.tmp / "disk" / "home"
        _setup(cli)
        env_dir = cli.env_dir()
        filler = _fill(cli.tmp / "disk")
        if free_pages:
            os.truncate(filler, max(0, filler.stat().st_size - free_pages * 4096))
        before = env_files(env_dir)
        result = cli.run("revision", "stage", "dev", "shop", "--record-only", code=5, json_mode=False)
        line = result.stderr.splitlines()[0]
        assert line.startswith("error: cannot ") and "No space left on device" in line, line
        assert env_files(env_dir) == before
        filler.unlink()  # space again: the store works on
        cli.json("revision", "stage", "dev", "shop", "--record-only")
        assert cli.json("env", "validate", "dev")["valid"] is True


def _fsize_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("headroom", [-1, 200])
def test_full_disk_rlimit_fsize_leaves_every_file_intact(cli: Cli, headroom: int) -> None:
    """headroom -1: even the backup of the old document fails; 200: the backup fits, the new document
    (one revision bigger) does not."""
    _setup(cli)
    env_dir = cli.env_dir()
    limit = len(cli.env_bytes()) + headroom
    before = env_files(env_dir)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "greentic_core", "--home", str(cli.home), "revision", "stage", "dev",
                           "shop", "--record-only"], env=cli.subprocess_env(), capture_output=True, text=True,
                          timeout=60, preexec_fn=_fsize_limit(limit))
    assert proc.returncode == 5, proc.stderr
    check_error_output(proc, json_mode=False)
    line = proc.stderr.splitlines()[0]
    what = "back up to" if headroom < 0 else "write"
    assert line.startswith(f"error: cannot {what} ") and line.endswith("File too large"), line
    assert env_files(env_dir) == before
    assert time.monotonic() - started < 30
    cli.json("revision", "stage", "dev", "shop", "--record-only")


# --------------------------------------------------------------------------- read-only directory


def test_read_only_mount_leaves_every_file_intact(cli: Cli) -> None:
    rev_a, rev_b = _setup(cli)
    env_dir = cli.env_dir()
    bound = subprocess.run(["mount", "--bind", str(env_dir), str(env_dir)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({bound.stderr.strip()}); the setuid case covers it")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(env_dir)], check=True, capture_output=True)
        before = env_files(env_dir)
        for args in (("traffic", "set", "dev", "shop", f"{rev_a}=5000,{rev_b}=5000"),
                     ("revision", "stage", "dev", "shop", "--record-only")):
            result = cli.run(*args, code=5, json_mode=False)
            line = result.stderr.splitlines()[0]
            assert line.startswith("error: cannot ") and "Read-only file system" in line, line
            assert cli.json(*args, code=5)["kind"] == "store"
        assert env_files(env_dir) == before
        assert cli.json("env", "validate", "dev")["valid"] is True  # reads still work
    finally:
        subprocess.run(["umount", str(env_dir)], check=False)
    cli.json("traffic", "set", "dev", "shop", f"{rev_a}=5000,{rev_b}=5000")


AS_NOBODY = r'''
import contextlib, io, os, shutil, sys, tempfile
from greentic_core.cli import _register_commands, cli
home, args = sys.argv[1], sys.argv[2:]
_register_commands()
# Run the same command once as root on a scratch copy of the store (and a failing one), so every
# module it imports lazily is loaded before the interpreter loses access to its own standard
# library (/root, where it is installed, is 0700 here).
scratch = tempfile.mkdtemp()
shutil.copytree(home, os.path.join(scratch, "home"))
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    cli.main(["--home", os.path.join(scratch, "home"), *args], standalone_mode=False)
    cli.main(["--home", scratch, "env", "show", "nope"], standalone_mode=False)
shutil.rmtree(scratch)
# As nobody the discovery cache (written by root) is unreadable, so entry points are scanned:
# load what the scan imports too (python-ulid used to import it at start-up), and difflib, which
# words the hint of the plugin that nobody's scan does not find (imported where it is used).
import difflib, importlib.metadata  # noqa: E401,E402,F401
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert os.geteuid() == 65534 and os.getuid() == 65534
cli.main(["--home", home, *args], prog_name="greentic-deployer")
'''


def test_unwritable_directory_as_an_unprivileged_user_leaves_every_file_intact(cli: Cli) -> None:
    base = Path(tempfile.mkdtemp(prefix="greentic-ro-"))
    try:
        os.chmod(base, 0o755)
        cli.home = base / "home"
        rev_a, rev_b = _setup(cli)
        env_dir = cli.env_dir()
        for path in [cli.home, *cli.home.rglob("*")]:
            os.lchown(path, NOBODY, NOBODY)
        env_dir.chmod(0o500)  # nobody owns it but may not create files in it
        before = env_files(env_dir)
        script = cli.tmp / "as_nobody.py"
        script.write_text(AS_NOBODY)
        for json_mode in (False, True):
            argv = (["--json"] if json_mode else []) + ["revision", "stage", "dev", "shop", "--record-only"]
            proc = subprocess.run([sys.executable, str(script), str(cli.home), *argv],
                                  env=cli.subprocess_env(), capture_output=True, text=True, timeout=60)
            assert proc.returncode == 5, proc.stdout + proc.stderr
            check_error_output(proc, json_mode=json_mode)
            message = json.loads(proc.stdout)["message"] if json_mode else proc.stderr.splitlines()[0]
            assert "cannot write" in message and "Permission denied" in message, message
        assert env_files(env_dir) == before
        env_dir.chmod(0o700)
        cli.json("traffic", "set", "dev", "shop", f"{rev_a}=5000,{rev_b}=5000")
    finally:
        shutil.rmtree(base, ignore_errors=True)
