"""The store contract (greentic_core/store/contract.py), checked through the contract and the CLI.

Every check works in environments of its own (``env_id``), so the store need not be empty. The
core's own tests run this same module against its three backends (file, a real PostgreSQL
cluster, a real moto S3 server): what a third party's store must pass is what ours pass.
"""

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
from greentic_core.store import (
    FileStore,
    LeaseLost,
    LockTimeout,
    SaveConflict,
    StoreOptions,
    atomic_write,
    open_store,
)

EVENT = {"actor": "conformance", "command": "pytest", "verb": "save", "outcome": "ok"}
DEPLOYER = "greentic.deployer.local-process"
#: documents written by the upstream (Rust) greentic-deployer: key order and fields of their own
UPSTREAM = Path(__file__).resolve().parent / "upstream"


def doc(env_id: str, name: str | None = None) -> Environment:
    return Environment(environment_id=env_id, name=name or env_id, host_config=HostConfig(env_id=env_id), packs=())


def upstream(name: str, env_id: str) -> Environment:
    """An upstream document moved to ``env_id`` (its id replaced where it stands alone and in
    references such as ``secret://<id>/...``, so key order and unknown fields stay as upstream
    wrote them)."""
    raw = (UPSTREAM / name).read_bytes()
    old = codec.load_environment(raw).environment_id
    for was, now in ((f'"{old}"', f'"{env_id}"'), (f"://{old}/", f"://{env_id}/")):
        raw = raw.replace(was.encode(), now.encode())
    return codec.load_environment(raw)


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _needs_local_process() -> None:
    pytest.importorskip("greentic_local_process", reason="the CLI checks bind environments to the local-process "
                                                         "deployer: pip install greentic-deployer-local-process")


# --------------------------------------------------------------------------- documents


def test_create_exists_list_load(subject, env_id) -> None:
    s = subject.store()
    other = f"{env_id}b"
    assert not s.exists(env_id)
    stored = s.create(doc(env_id), audit_event=dict(EVENT))
    s.create(doc(other), audit_event=dict(EVENT))
    assert stored.generation == 1 and s.exists(env_id)
    listed = s.list()
    assert listed == sorted(listed) and {env_id, other} <= set(listed)
    assert s.load(env_id) == stored
    with pytest.raises(EnvironmentExists):
        s.create(doc(env_id, "again"), audit_event=dict(EVENT))
    assert s.load(env_id).name == env_id
    with pytest.raises(EnvironmentNotFound):
        s.load(env_id + "x")
    with pytest.raises(EnvironmentNotFound):
        with s.transaction(env_id + "x"):
            pass


def test_documents_are_kept_byte_for_byte(subject, env_id) -> None:
    s = subject.store()
    stored = s.create(doc(env_id), audit_event=dict(EVENT))
    assert s.export(env_id).document == codec.dump_environment(stored).encode("utf-8")


@pytest.mark.parametrize("fixture", sorted(p.name for p in UPSTREAM.glob("upstream-*.json")))
def test_upstream_documents_round_trip_byte_for_byte(subject, env_id, tmp_path, fixture) -> None:
    """Upstream key order and unknown fields survive, exactly as the file store keeps them."""
    env = upstream(fixture, env_id)
    reference = FileStore(tmp_path / "reference")
    s = subject.store()
    for target in (reference, s):
        target.create(env, audit_event=dict(EVENT))
        with target.transaction(env_id) as tx:
            tx.save(tx.env, audit_event=dict(EVENT))
    expected = reference.export(env_id).document
    assert s.export(env_id).document == expected
    with s.transaction(env_id) as tx:  # what the backend hands back is what the file store wrote
        assert codec.dump_environment(tx.env).encode() == expected
    assert s.load(env_id) == reference.load(env_id)
    [(generation, backup)] = s.backups(env_id)
    assert generation == env.generation + 1
    assert json.loads(backup) == json.loads(expected) | {"generation": env.generation + 1}


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


def test_backups_are_bounded_newest_kept(subject, env_id) -> None:
    s = subject.store(max_backups=3)
    s.create(doc(env_id), audit_event=dict(EVENT))
    for n in range(5):
        with s.transaction(env_id) as tx:
            tx.save(doc(env_id, f"n{n}"), audit_event=dict(EVENT))
    kept = s.backups(env_id)
    assert [g for g, _ in kept] == [3, 4, 5]
    assert codec.load_environment(kept[-1][1]).name == "n3"  # each is the document a save replaced


def test_runtime_config_follows_the_document(subject, env_id) -> None:
    env = upstream("upstream-example.json", env_id)
    s = subject.store()
    s.create(env, audit_event=dict(EVENT))
    config = s.load_runtime_config(env_id)
    assert config is not None and config.revisions
    with s.transaction(env_id) as tx:
        tx.save(attrs.evolve(doc(env_id, "x"), host_config=env.host_config), audit_event=dict(EVENT))
    assert s.load_runtime_config(env_id) is None  # nothing live: none published


# --------------------------------------------------------------------------- compare-and-swap and fencing


def test_a_stale_writer_is_refused_and_nothing_is_lost(subject, env_id, monkeypatch) -> None:
    """Two writers hold generation 1; one saves; the other's save is refused, the first one's stays."""
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
            with pytest.raises(SaveConflict, match="changed since this command loaded"):
                stale.save(doc(env_id, "stale"), audit_event={**EVENT, "verb": "stale.save"})
    else:
        if not hasattr(s, "_renew"):
            pytest.skip("not a LeasedStore: cannot pause its renewals")
        monkeypatch.setattr(s, "_renew", lambda lease, ttl: True)  # a paused holder stops renewing
        with s.transaction(env_id) as stale:
            wait_until(lambda: other.lease(env_id) is None, what="the stale writer's lease to expire")
            with other.transaction(env_id) as tx:
                tx.save(doc(env_id, "newer"), audit_event=dict(EVENT))
            with pytest.raises(SaveConflict):  # LeaseLost is a SaveConflict
                stale.save(doc(env_id, "stale"), audit_event={**EVENT, "verb": "stale.save"})
    env = other.load(env_id)
    assert env.name == "newer" and env.generation == 2
    assert [e["outcome"] for e in other.audit_events(env_id) if e["verb"] == "stale.save"] == ["conflict"]


def test_unlock_force_breaks_a_lease_audited_and_its_holder_cannot_save(subject, env_id) -> None:
    s = subject.store()
    s.create(doc(env_id), audit_event=dict(EVENT))
    with s.transaction(env_id) as tx:
        proc = subject.cli("--json", "env", "unlock", env_id, "--force")
        subject.no_secret(proc.stdout, proc.stderr)
        if not s.lease_expires:
            assert proc.returncode == 5, proc.stderr  # a lock that dies with its holder cannot be broken
            assert "cannot be broken" in json.loads(proc.stdout)["message"]
            return
        answer = json.loads(proc.stdout)
        assert proc.returncode == 0 and answer["broken"] is True
        assert answer["lease"]["holder"].startswith("conformance@")
        with pytest.raises(LeaseLost):
            tx.save(doc(env_id, "late"), audit_event=dict(EVENT))
    assert s.load(env_id).generation == 1
    [unlock] = [e for e in s.audit_events(env_id) if e["verb"] == "env.unlock"]
    assert unlock["lease"]["token"] == answer["lease"]["token"]


def test_the_lease_is_renewed_while_a_long_command_runs(subject, env_id) -> None:
    s = subject.store(lock_ttl=3.0)
    if not s.lease_expires:
        pytest.skip("a lock that dies with its holder never expires, so it is never renewed")
    other = subject.store(lock_timeout=0.0)
    s.create(doc(env_id), audit_event=dict(EVENT))
    with s.transaction(env_id) as tx:
        first = other.lease(env_id)
        assert first is not None
        wait_until(lambda: (other.lease(env_id) or first).expires > first.expires + (first.expires - first.acquired),
                   what="renewals past the first TTL")
        with pytest.raises(LockTimeout):
            with other.transaction(env_id):
                pass
        tx.save(doc(env_id, "after-renewals"), audit_event=dict(EVENT))
    assert other.lease(env_id) is None
    assert other.load(env_id).name == "after-renewals"


# --------------------------------------------------------------------------- leases across processes

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
        lock = subject.cli("--json", "env", "lock", env_id)
        shown = json.loads(lock.stdout)
        assert shown["locked"] is True and shown["lease"]["pid"] == holder.pid
        assert shown["lease"]["command"] == "greentic-deployer revision warm ENV latest"
        proc = subject.cli("--lock-timeout", "1.5", "deployment", "add", env_id, "shop")
        assert proc.returncode == 3, proc.stderr
        assert f"waiting for the lease of environment {env_id}, held by holder@" in proc.stderr
        last = [line for line in proc.stderr.splitlines() if line.startswith("error:")][-1]
        assert "locked by holder@" in last and f"(pid {holder.pid}" in last and "waited 1.5s" in last
        subject.no_secret(lock.stdout, lock.stderr, proc.stdout, proc.stderr)
        assert s.load(env_id).generation == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert s.lease(env_id) is None and s.load(env_id).generation == 1


def test_a_killed_holders_lease_is_taken_after_its_ttl_not_before(subject, env_id) -> None:
    s = subject.store(lock_timeout=0.0)
    s.create(doc(env_id), audit_event=dict(EVENT))
    holder = _hold(subject, env_id, 4.0)
    held = s.lease(env_id)
    assert held is not None and held.pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    if not s.lease_expires:
        assert s.lease(env_id) is None  # released with its holder
    elif s._now() < held.expires:  # type: ignore[attr-defined]
        with pytest.raises(LockTimeout, match="locked by holder@"):  # not before the TTL
            with s.transaction(env_id):
                pass
    with subject.store(lock_timeout=60.0).transaction(env_id) as tx:
        if s.lease_expires:
            assert tx.lease.acquired >= held.expires and tx.lease.token > held.token  # type: ignore[attr-defined]
        tx.save(doc(env_id, "recovered"), audit_event=dict(EVENT))
    assert s.load(env_id).name == "recovered"


# --------------------------------------------------------------------------- the CLI


def test_the_cli_runs_a_whole_lifecycle_and_never_prints_a_secret(subject, env_id) -> None:
    _needs_local_process()

    def gd(*args: str) -> dict:
        proc = subject.cli("--json", "--debug", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        subject.no_secret(proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    gd("env", "init", env_id, "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    gd("deployment", "add", env_id, "shop")
    a = gd("revision", "stage", env_id, "shop", "--record-only", "--command", "true")["revision_id"]
    b = gd("revision", "stage", env_id, "shop", "--record-only", "--command", "true")["revision_id"]
    for rid in (a, b):
        gd("revision", "warm", env_id, rid, "--record-only")
    gd("traffic", "set", env_id, "shop", f"{a}=9000,{b}=1000", "--record-only")
    gd("traffic", "set", env_id, "shop", f"{a}=5000,{b}=5000", "--record-only")
    gd("traffic", "rollback", env_id, "shop", "--record-only")
    s = subject.store()
    assert s.load(env_id).generation == 9
    assert [e["verb"] for e in gd("env", "history", env_id)["events"]][:2] == ["traffic.rollback", "traffic.set"]
    assert s.read_attachment(env_id, "env-packs/deployer/answers.json") is not None
    assert gd("env", "lock", env_id)["locked"] is False
    subject.no_secret(json.dumps(s.audit_events(env_id)), s.url)
    if not subject.url.startswith("file:"):
        assert not (subject.home / "environments").exists()  # nothing went to a local file store


def test_migrate_copies_byte_for_byte_both_ways_and_is_safe_to_run_again(subject, env_id, tmp_path) -> None:
    _needs_local_process()
    source = f"file://{tmp_path / 'source'}"
    other = f"{env_id}o"

    def gd(*args: str, store: str | None = None, code: int = 0) -> dict:
        env = {**subject.env(), **({"GREENTIC_STORE": store} if store else {})}
        proc = subprocess.run([sys.executable, "-m", "greentic_core", "--json", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == code, proc.stdout + proc.stderr
        subject.no_secret(proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    gd("env", "init", env_id, "--deployer", DEPLOYER, "--listen", "127.0.0.1:1", store=source)
    gd("env", "init", other, "--deployer", DEPLOYER, "--listen", "127.0.0.1:2", store=source)
    gd("deployment", "add", env_id, "shop", store=source)
    rid = gd("revision", "stage", env_id, "shop", "--record-only", "--command", "true", store=source)["revision_id"]
    gd("revision", "warm", env_id, rid, "--record-only", store=source)
    gd("traffic", "set", env_id, "shop", f"{rid}=10000", "--record-only", store=source)
    expected = open_store(source, options=StoreOptions()).export(env_id)
    assert expected.runtime_config is not None and len(expected.backups) == 4 and expected.attachments

    first = gd("store", "migrate", "--from", source, "--to", subject.url, env_id)
    assert [(r["env_id"], r["action"], r["generation"], r["audit_events"]) for r in first["environments"]] == [
        (env_id, "copy", 5, 5)]
    dst = subject.store()
    assert dst.export(env_id) == expected and not dst.exists(other)
    assert gd("store", "migrate", "--from", source, "--to", subject.url)["environments"] == [
        {"env_id": env_id, "action": "identical", "generation": 5, "audit_events": 5, "backups": 4},
        {"env_id": other, "action": "copy", "generation": 1, "audit_events": 1, "backups": 0}]
    # the copy works: a command on the destination continues the audit and the generations
    gd("traffic", "set", env_id, "shop", f"{rid}=10000", "--record-only", "--idempotency-key", "k2")
    changed = dst.export(env_id)
    assert changed.audit[:5] == expected.audit and changed.audit[-1]["generation_before"] == 5
    refused = gd("store", "migrate", "--from", source, "--to", subject.url, env_id, code=3)
    assert "already exists" in refused["message"] and "--force" in refused["hint"]
    assert dst.export(env_id) == changed  # nothing was copied
    forced = gd("store", "migrate", "--from", source, "--to", subject.url, env_id, "--force")
    assert forced["environments"][0]["action"] == "replace"
    assert dst.export(env_id) == expected
    # and back: from the store under test into an empty file store, byte for byte
    back = f"file://{tmp_path / 'back'}"
    gd("store", "migrate", "--from", subject.url, "--to", back, env_id, other)
    assert open_store(back, options=StoreOptions()).export(env_id) == expected
    assert (tmp_path / "back" / "environments" / env_id / "environment.json").read_bytes() == \
        (tmp_path / "source" / "environments" / env_id / "environment.json").read_bytes()


# --------------------------------------------------------------------------- provider state


def test_provider_state_is_a_private_local_directory(subject, env_id) -> None:
    s = subject.store()
    s.create(doc(env_id), audit_event=dict(EVENT))
    state = s.state_dir(env_id)
    assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o700
    if isinstance(s, FileStore):
        assert state == Path(s.location(env_id))  # the environment's own directory, as before
    else:
        assert state == subject.home / "state" / env_id  # on this machine, whatever the store
