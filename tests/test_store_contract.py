"""The store contract, one suite for every backend: file, PostgreSQL (a real cluster) and S3 (a
real moto server over HTTP), each started by this test session.

Every rule of :mod:`greentic_core.store.contract` is checked through the contract only (plus
the CLI), so a backend passes by behaving, not by how it is built: create/exists/list, documents
byte for byte, compare-and-swap (a stale writer is refused and nothing is lost), leases across
processes, expiry after SIGKILL (after the TTL, not before), fencing, unlock, the audit gap-free
and ordered, backups bounded, and no password or key in any output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greentic_core import codec
from greentic_core.errors import EnvironmentExists, EnvironmentNotFound
from greentic_core.spec import Environment, HostConfig
from greentic_core.store import FileStore, LeaseLost, LockTimeout, SaveConflict, atomic_write
from store_backends import Backend, backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EVENT = {"actor": "test", "command": "pytest", "verb": "save", "outcome": "ok"}
DEPLOYER = "greentic.deployer.local-process"


def env_doc(env_id: str = "dev", name: str | None = None) -> Environment:
    return Environment(environment_id=env_id, name=name or env_id, host_config=HostConfig(env_id=env_id), packs=())


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def no_secret(backend: Backend, *texts: str) -> None:
    for secret in backend.secrets:
        for text in texts:
            assert secret not in text


# --------------------------------------------------------------------------- documents


def test_create_exists_list_load(backend: Backend) -> None:
    s = backend.store()
    assert s.list() == [] and not s.exists("dev")
    stored = s.create(env_doc("dev"), audit_event=dict(EVENT))
    s.create(env_doc("a-env"), audit_event=dict(EVENT))
    assert stored.generation == 1
    assert s.list() == ["a-env", "dev"] and s.exists("dev")
    assert s.load("dev") == stored
    with pytest.raises(EnvironmentExists):
        s.create(env_doc("dev", name="again"), audit_event=dict(EVENT))
    assert s.load("dev").name == "dev"
    with pytest.raises(EnvironmentNotFound):
        s.load("nope")
    with pytest.raises(EnvironmentNotFound):
        with s.transaction("nope"):
            pass


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("upstream-*.json")
                                           if "runtime-config" not in p.name))
def test_upstream_documents_round_trip_byte_for_byte(backend: Backend, tmp_path: Path, fixture: str) -> None:
    env = codec.load_environment((FIXTURES / fixture).read_bytes())
    files = FileStore(tmp_path / "reference")
    s = backend.store()
    for target in (files, s):
        target.create(env, audit_event=dict(EVENT))
        with target.transaction(env.environment_id) as tx:
            tx.save(tx.env, audit_event=dict(EVENT))
    expected = (tmp_path / "reference" / env.environment_id / "environment.json").read_bytes()
    [(generation, backup)] = [b for b in s.backups(env.environment_id)]
    assert generation == env.generation + 1
    with s.transaction(env.environment_id) as tx:  # what the backend hands back is what the file store wrote
        assert codec.dump_environment(tx.env).encode() == expected
    assert s.load(env.environment_id) == files.load(env.environment_id)
    assert json.loads(backup) == json.loads(expected) | {"generation": env.generation + 1}


def test_audit_is_gap_free_and_ordered(backend: Backend) -> None:
    s = backend.store()
    s.create(env_doc(), audit_event=dict(EVENT))
    for n in range(5):
        with s.transaction("dev") as tx:
            tx.save(env_doc(name=f"n{n}"), audit_event={**EVENT, "n": n})
            tx.audit({**EVENT, "verb": "note", "n": n})
    events = s.audit_events("dev")
    saves = [e for e in events if e["verb"] == "save"]
    assert [(e["generation_before"], e["generation_after"]) for e in saves] == [(0, 1)] + [(g, g + 1) for g in range(1, 6)]
    assert [(e["verb"], e.get("n")) for e in events[1:]] == [(v, n) for n in range(5) for v in ("save", "note")]


def test_backups_are_bounded_newest_kept(backend: Backend) -> None:
    s = backend.store(max_backups=3)
    if isinstance(s, FileStore):
        s = FileStore(s.root, max_backups=3)
    s.create(env_doc(), audit_event=dict(EVENT))
    for n in range(6):
        with s.transaction("dev") as tx:
            tx.save(env_doc(name=f"n{n}"), audit_event=dict(EVENT))
    kept = s.backups("dev")
    assert [g for g, _ in kept] == [4, 5, 6]
    assert codec.load_environment(kept[-1][1]).name == "n4"


def test_runtime_config_follows_the_document(backend: Backend) -> None:
    env = codec.load_environment((FIXTURES / "upstream-example.json").read_bytes())
    s = backend.store()
    s.create(env, audit_event=dict(EVENT))
    config = s.load_runtime_config(env.environment_id)
    assert config is not None and config.revisions
    with s.transaction(env.environment_id) as tx:
        tx.save(Environment(environment_id=env.environment_id, name="x", host_config=env.host_config, packs=()),
                audit_event=dict(EVENT))
    assert s.load_runtime_config(env.environment_id) is None


# --------------------------------------------------------------------------- compare-and-swap and fencing


def test_a_stale_writer_is_refused_and_nothing_is_lost(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers hold generation 1; one saves; the other's save is refused, the first one's stays."""
    s = backend.store(lock_ttl=1.0)
    s.create(env_doc(), audit_event=dict(EVENT))
    other = backend.store(lock_timeout=30.0)
    if not s.lease_expires:  # a flock cannot expire: the other writer is one that bypassed the lock
        with s.transaction("dev") as stale:
            newer = attrs_evolve(env_doc(name="newer"), generation=2)
            atomic_write(Path(s.location("dev")) / "environment.json", codec.dump_environment(newer).encode())
            with pytest.raises(SaveConflict, match="changed since this command loaded it"):
                stale.save(env_doc(name="stale"), audit_event={**EVENT, "verb": "stale.save"})
    else:
        monkeypatch.setattr(s, "_renew", lambda lease, ttl: True)  # a paused holder stops renewing
        with s.transaction("dev") as stale:
            wait_until(lambda: other.lease("dev") is None, what="the stale writer's lease to expire")
            with other.transaction("dev") as tx:
                tx.save(env_doc(name="newer"), audit_event=dict(EVENT))
            with pytest.raises(SaveConflict):  # LeaseLost is a SaveConflict
                stale.save(env_doc(name="stale"), audit_event={**EVENT, "verb": "stale.save"})
    env = other.load("dev")
    assert env.name == "newer" and env.generation == 2
    conflict = [e for e in other.audit_events("dev") if e["verb"] == "stale.save"]
    assert len(conflict) == 1 and conflict[0]["outcome"] == "conflict"


def attrs_evolve(env: Environment, **changes):
    import attrs

    return attrs.evolve(env, **changes)


def test_unlock_force_breaks_a_lease_audited_and_its_holder_cannot_save(backend: Backend) -> None:
    s = backend.store()
    s.create(env_doc(), audit_event=dict(EVENT))
    with s.transaction("dev") as tx:
        proc = backend.cli("--json", "env", "unlock", "dev", "--force")
        no_secret(backend, proc.stdout, proc.stderr)
        doc = json.loads(proc.stdout)
        if not s.lease_expires:
            assert proc.returncode == 5 and "cannot be broken" in doc["message"]
            return
        assert proc.returncode == 0 and doc["broken"] is True and doc["lease"]["holder"].startswith("test@")
        with pytest.raises(LeaseLost):
            tx.save(env_doc(name="late"), audit_event=dict(EVENT))
    assert s.load("dev").generation == 1
    [unlock] = [e for e in s.audit_events("dev") if e["verb"] == "env.unlock"]
    assert unlock["lease"]["token"] == doc["lease"]["token"]


def test_the_lease_is_renewed_while_a_long_command_runs(backend: Backend) -> None:
    s = backend.store(lock_ttl=3.0)
    if not s.lease_expires:
        pytest.skip("a flock never expires, so it is never renewed")
    other = backend.store(lock_timeout=0.0)
    s.create(env_doc(), audit_event=dict(EVENT))
    with s.transaction("dev") as tx:
        first = other.lease("dev")
        assert first is not None
        wait_until(lambda: (other.lease("dev") or first).expires > first.expires + (first.expires - first.acquired),
                   what="renewals past the first TTL")
        with pytest.raises(LockTimeout):
            with other.transaction("dev"):
                pass
        tx.save(env_doc(name="after-renewals"), audit_event=dict(EVENT))
    assert other.lease("dev") is None
    assert other.load("dev").name == "after-renewals"


# --------------------------------------------------------------------------- leases across processes

HOLDER = textwrap.dedent("""
    import sys
    from greentic_core.store import StoreOptions, open_store
    store = open_store(sys.argv[1], options=StoreOptions(actor="holder", lock_ttl=float(sys.argv[2]),
                                                         command="greentic-deployer revision warm dev latest"))
    with store.transaction("dev"):
        print("locked", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def holder(backend: Backend) -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def start(ttl: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, backend.url, str(ttl)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=backend.process_env())
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_a_held_lease_excludes_other_processes_and_names_its_holder(backend: Backend, holder) -> None:
    s = backend.store()
    s.create(env_doc(), audit_event=dict(EVENT))
    held = holder(30.0)
    lock = backend.cli("--json", "env", "lock", "dev")
    doc = json.loads(lock.stdout)
    assert doc["locked"] is True and doc["lease"]["pid"] == held.pid
    assert doc["lease"]["command"] == "greentic-deployer revision warm dev latest"
    proc = backend.cli("--lock-timeout", "1.5", "deployment", "add", "dev", "shop")
    assert proc.returncode == 3, proc.stderr
    assert "waiting for the lease of environment dev, held by holder@" in proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.startswith("error:")][-1]
    assert "locked by holder@" in last and f"(pid {held.pid}" in last and "waited 1.5s" in last
    no_secret(backend, lock.stdout, lock.stderr, proc.stdout, proc.stderr)
    assert s.load("dev").generation == 1
    held.stdin.close()
    held.wait(timeout=30)
    assert s.lease("dev") is None


def test_a_killed_holders_lease_is_free_after_the_ttl_not_before(backend: Backend, holder) -> None:
    s = backend.store(lock_timeout=0.0)
    s.create(env_doc(), audit_event=dict(EVENT))
    held_by = holder(4.0)
    lease = s.lease("dev")
    assert lease is not None and lease.pid == held_by.pid
    os.kill(held_by.pid, signal.SIGKILL)
    held_by.wait(timeout=30)
    patient = backend.store(lock_timeout=30.0)
    if not s.lease_expires:  # the kernel released the flock with its holder
        assert s.lease("dev") is None
    elif s._now() < lease.expires:  # type: ignore[attr-defined]
        with pytest.raises(LockTimeout, match="locked by holder@"):
            with s.transaction("dev"):
                pass
    with patient.transaction("dev") as tx:
        if s.lease_expires:
            assert tx.lease.acquired >= lease.expires and tx.lease.token > lease.token
        tx.save(env_doc(name="recovered"), audit_event=dict(EVENT))
    assert s.load("dev").name == "recovered"


# --------------------------------------------------------------------------- the CLI on every backend


def test_the_cli_runs_a_whole_lifecycle_and_never_prints_a_secret(backend: Backend) -> None:
    def gd(*args: str) -> dict:
        proc = backend.cli("--json", "--debug", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        no_secret(backend, proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    gd("env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    gd("deployment", "add", "dev", "shop")
    a = gd("revision", "stage", "dev", "shop", "--record-only", "--command", "true")["revision_id"]
    b = gd("revision", "stage", "dev", "shop", "--record-only", "--command", "true")["revision_id"]
    for rid in (a, b):
        gd("revision", "warm", "dev", rid, "--record-only")
    gd("traffic", "set", "dev", "shop", f"{a}=9000,{b}=1000", "--record-only")
    gd("traffic", "set", "dev", "shop", f"{a}=5000,{b}=5000", "--record-only")
    gd("traffic", "rollback", "dev", "shop", "--record-only")
    s = backend.store()
    assert s.load("dev").generation == 9
    history = gd("env", "history", "dev")["events"]
    assert [e["verb"] for e in history][:2] == ["traffic.rollback", "traffic.set"]
    assert s.read_attachment("dev", "env-packs/deployer/answers.json") is not None
    lock = gd("env", "lock", "dev")
    assert lock["locked"] is False
    no_secret(backend, json.dumps(s.audit_events("dev")), s.url)
    if backend.name != "file":
        assert not (backend.home / "environments").exists()  # nothing went to the local file store


# --------------------------------------------------------------------------- store migrate


def test_migrate_copies_byte_for_byte_both_ways_and_is_safe_to_run_again(backend: Backend, tmp_path: Path) -> None:
    source = Backend("file", f"file://{tmp_path / 'source'}", (), {}, backend.home)

    def gd(who: Backend, *args: str, code: int = 0) -> dict:
        proc = who.cli("--json", *args)
        assert proc.returncode == code, proc.stdout + proc.stderr
        no_secret(backend, proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    gd(source, "env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    gd(source, "env", "init", "other", "--deployer", DEPLOYER, "--listen", "127.0.0.1:2")
    gd(source, "deployment", "add", "dev", "shop")
    rid = gd(source, "revision", "stage", "dev", "shop", "--record-only", "--command", "true")["revision_id"]
    gd(source, "revision", "warm", "dev", rid, "--record-only")
    gd(source, "traffic", "set", "dev", "shop", f"{rid}=10000", "--record-only")
    src = source.store()
    expected = src.export("dev")
    assert expected.runtime_config is not None and len(expected.backups) == 4 and expected.attachments

    first = gd(backend, "store", "migrate", "--from", source.url, "--to", backend.url, "dev")
    assert [(r["env_id"], r["action"], r["generation"], r["audit_events"]) for r in first["environments"]] == [
        ("dev", "copy", 5, 5)]
    dst = backend.store()
    assert dst.export("dev") == expected and not dst.exists("other")
    assert gd(backend, "store", "migrate", "--from", source.url, "--to", backend.url)["environments"] == [
        {"env_id": "dev", "action": "identical", "generation": 5, "audit_events": 5, "backups": 4},
        {"env_id": "other", "action": "copy", "generation": 1, "audit_events": 1, "backups": 0}]
    # the copy works: a command on the destination continues the audit and generations
    gd(backend, "traffic", "set", "dev", "shop", f"{rid}=10000", "--record-only", "--idempotency-key", "k2")
    changed = dst.export("dev")
    assert changed.audit[:5] == expected.audit and changed.audit[-1]["generation_before"] == 5
    refused = gd(backend, "store", "migrate", "--from", source.url, "--to", backend.url, code=3)
    assert "already exists" in refused["message"] and "--force" in refused["hint"]
    assert dst.export("dev") == changed  # nothing was copied
    forced = gd(backend, "store", "migrate", "--from", source.url, "--to", backend.url, "dev", "--force")
    assert forced["environments"][0]["action"] == "replace"
    assert dst.export("dev") == expected
    # and back: the destination migrates into an empty file store byte for byte
    back = Backend("file", f"file://{tmp_path / 'back'}", (), {}, backend.home)
    gd(backend, "store", "migrate", "--from", backend.url, "--to", back.url)
    assert back.store().export("dev") == expected
    assert (tmp_path / "back" / "environments" / "dev" / "environment.json").read_bytes() == \
        (tmp_path / "source" / "environments" / "dev" / "environment.json").read_bytes()


def test_provider_state_is_a_private_local_directory(backend: Backend) -> None:
    s = backend.store()
    s.create(env_doc(), audit_event=dict(EVENT))
    state = s.state_dir("dev")
    assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o700
    if backend.name == "file":
        assert state == Path(s.location("dev"))  # the environment's own directory, as before
    else:
        assert state == backend.home / "state" / "dev"  # on this machine, whatever the store
