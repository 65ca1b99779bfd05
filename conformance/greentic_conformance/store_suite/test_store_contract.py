"""The store contract (greentic_core/store/contract.py), checked through the contract and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest

from greentic_core import codec
from greentic_core.errors import EnvironmentExists, EnvironmentNotFound
from greentic_core.spec import Environment, HostConfig
from greentic_core.store import LeaseLost, SaveConflict, StoreOptions, atomic_write, open_store

EVENT = {"actor": "conformance", "command": "pytest", "verb": "save", "outcome": "ok"}
DEPLOYER = "greentic.deployer.local-process"


def doc(env_id: str, name: str | None = None) -> Environment:
    return Environment(environment_id=env_id, name=name or env_id, host_config=HostConfig(env_id=env_id), packs=())


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_create_exists_list_load(subject, env_id) -> None:
    s = subject.store()
    assert not s.exists(env_id)
    stored = s.create(doc(env_id), audit_event=dict(EVENT))
    assert stored.generation == 1 and s.exists(env_id) and env_id in s.list()
    assert s.load(env_id) == stored
    with pytest.raises(EnvironmentExists):
        s.create(doc(env_id, "again"), audit_event=dict(EVENT))
    assert s.load(env_id).name == env_id
    with pytest.raises(EnvironmentNotFound):
        s.load(env_id + "x")


def test_documents_are_kept_byte_for_byte(subject, env_id) -> None:
    s = subject.store()
    stored = s.create(doc(env_id), audit_event=dict(EVENT))
    assert s.export(env_id).document == codec.dump_environment(stored).encode("utf-8")


def test_audit_is_gap_free_and_ordered(subject, env_id) -> None:
    s = subject.store()
    s.create(doc(env_id), audit_event=dict(EVENT))
    for n in range(4):
        with s.transaction(env_id) as tx:
            tx.save(doc(env_id, f"n{n}"), audit_event={**EVENT, "n": n})
            tx.audit({**EVENT, "verb": "note", "n": n})
    events = s.audit_events(env_id)
    saves = [e for e in events if e["verb"] == "save"]
    assert [(e["generation_before"], e["generation_after"]) for e in saves] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert [(e["verb"], e.get("n")) for e in events[1:]] == [(v, n) for n in range(4) for v in ("save", "note")]


def test_backups_are_bounded(subject, env_id) -> None:
    s = subject.store(max_backups=3)
    s.create(doc(env_id), audit_event=dict(EVENT))
    for n in range(5):
        with s.transaction(env_id) as tx:
            tx.save(doc(env_id, f"n{n}"), audit_event=dict(EVENT))
    assert [g for g, _ in s.backups(env_id)] == [3, 4, 5]


def test_a_stale_writer_is_refused_and_nothing_is_lost(subject, env_id, monkeypatch) -> None:
    s = subject.store(lock_ttl=1.0)
    other = subject.store(lock_timeout=60.0)
    s.create(doc(env_id), audit_event=dict(EVENT))
    if not s.lease_expires:  # a lock that dies with its holder: the other writer bypasses it
        if not hasattr(s, "location"):
            pytest.skip("no way to write behind this store's back")
        with s.transaction(env_id) as stale:
            newer = attrs.evolve(doc(env_id, "newer"), generation=2)
            path = Path(s.location(env_id)) / "environment.json"
            if not path.parent.is_dir():
                pytest.skip("this store is not file based: nothing to write behind its back")
            atomic_write(path, codec.dump_environment(newer).encode())
            with pytest.raises(SaveConflict):
                stale.save(doc(env_id, "stale"), audit_event={**EVENT, "verb": "stale.save"})
    else:
        if not hasattr(s, "_renew"):
            pytest.skip("not a LeasedStore: cannot pause its renewals")
        monkeypatch.setattr(s, "_renew", lambda lease, ttl: True)  # a paused holder stops renewing
        with s.transaction(env_id) as stale:
            wait_until(lambda: other.lease(env_id) is None, what="the stale writer's lease to expire")
            with other.transaction(env_id) as tx:
                tx.save(doc(env_id, "newer"), audit_event=dict(EVENT))
            with pytest.raises(SaveConflict):
                stale.save(doc(env_id, "stale"), audit_event={**EVENT, "verb": "stale.save"})
    env = other.load(env_id)
    assert env.name == "newer" and env.generation == 2
    assert [e["outcome"] for e in other.audit_events(env_id) if e["verb"] == "stale.save"] == ["conflict"]


HOLDER = textwrap.dedent("""
    import sys
    from greentic_core.store import StoreOptions, open_store
    store = open_store(sys.argv[1], options=StoreOptions(actor="holder", lock_ttl=float(sys.argv[3]),
                                                         command="greentic-deployer revision warm ENV latest"))
    with store.transaction(sys.argv[2]):
        print("locked", flush=True)
        sys.stdin.read()
""")


def _hold(subject, env_id: str, ttl: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, subject.url, env_id, str(ttl)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=subject.env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_lease_excludes_other_processes_and_names_its_holder(subject, env_id) -> None:
    s = subject.store()
    s.create(doc(env_id), audit_event=dict(EVENT))
    holder = _hold(subject, env_id, 30.0)
    try:
        lock = json.loads(subject.cli("--json", "env", "lock", env_id).stdout)
        assert lock["locked"] is True and lock["lease"]["pid"] == holder.pid
        proc = subject.cli("--lock-timeout", "1.5", "deployment", "add", env_id, "shop")
        assert proc.returncode == 3, proc.stderr
        last = [line for line in proc.stderr.splitlines() if line.startswith("error:")][-1]
        assert "locked by holder@" in last and f"(pid {holder.pid}" in last
        subject.no_secret(proc.stdout, proc.stderr)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert s.lease(env_id) is None and s.load(env_id).generation == 1


def test_a_killed_holders_lease_is_taken_after_its_ttl_not_before(subject, env_id) -> None:
    s = subject.store(lock_timeout=0.0)
    s.create(doc(env_id), audit_event=dict(EVENT))
    holder = _hold(subject, env_id, 4.0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    held = s.lease(env_id)
    with subject.store(lock_timeout=60.0).transaction(env_id) as tx:
        if s.lease_expires:
            assert held is not None and held.pid == holder.pid
            assert tx.lease.acquired >= held.expires and tx.lease.token > held.token
        else:
            assert held is None  # released with its holder
        tx.save(doc(env_id, "recovered"), audit_event=dict(EVENT))


def test_unlock_force_breaks_a_lease_and_its_holder_cannot_save(subject, env_id) -> None:
    s = subject.store()
    s.create(doc(env_id), audit_event=dict(EVENT))
    with s.transaction(env_id) as tx:
        proc = subject.cli("--json", "env", "unlock", env_id, "--force")
        subject.no_secret(proc.stdout, proc.stderr)
        if not s.lease_expires:
            assert proc.returncode == 5  # a lock that dies with its holder cannot be broken
            return
        assert proc.returncode == 0 and json.loads(proc.stdout)["broken"] is True
        with pytest.raises(LeaseLost):
            tx.save(doc(env_id, "late"), audit_event=dict(EVENT))
    assert [e["verb"] for e in s.audit_events(env_id)].count("env.unlock") == 1


def test_the_cli_works_migrate_copies_byte_for_byte_and_no_secret_is_printed(subject, env_id, tmp_path) -> None:
    pytest.importorskip("greentic_local_process", reason="the CLI check binds environments to the local-process "
                                                         "deployer: pip install greentic-deployer-local-process")
    def gd(*args: str) -> dict:
        proc = subject.cli("--json", "--debug", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        subject.no_secret(proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    gd("env", "init", env_id, "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    gd("deployment", "add", env_id, "shop")
    rid = gd("revision", "stage", env_id, "shop", "--record-only", "--command", "true")["revision_id"]
    gd("revision", "warm", env_id, rid, "--record-only")
    gd("traffic", "set", env_id, "shop", f"{rid}=10000", "--record-only")
    s = subject.store()
    assert s.load(env_id).generation == 5
    assert [e["verb"] for e in gd("env", "history", env_id)["events"]][0] == "traffic.set"
    files = f"file://{tmp_path / 'copy'}"
    gd("store", "migrate", "--from", subject.url, "--to", files, env_id)
    copy = open_store(files, options=StoreOptions())
    assert copy.export(env_id) == s.export(env_id)
    subject.no_secret(json.dumps(s.audit_events(env_id)), s.url)
