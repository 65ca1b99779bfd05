"""The PostgreSQL store against a real server: schema, documents byte for byte, leases,
compare-and-swap and fencing, the audit, backups, the CLI, and the password never shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from greentic_core import codec
from greentic_core.errors import EnvironmentExists, EnvironmentNotFound
from greentic_core.spec import Environment, HostConfig
from greentic_core.store import (
    FileStore,
    LeaseLost,
    LockTimeout,
    SaveConflict,
    SchemaOutdated,
    StoreOptions,
    open_store,
)
from greentic_store_postgres.store import PostgresStore
from greentic_store_postgres.testing import TEST_PASSWORD as PASSWORD

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
EVENT = {"actor": "test", "command": "pytest", "verb": "save", "outcome": "ok"}
DEPLOYER = "greentic.deployer.local-process"


def env_doc(env_id: str = "dev", name: str | None = None) -> Environment:
    return Environment(environment_id=env_id, name=name or env_id, host_config=HostConfig(env_id=env_id), packs=())


def store(url: str, **options) -> PostgresStore:
    opened = open_store(url, options=StoreOptions(**{"actor": "test", "command": "pytest", **options}))
    assert isinstance(opened, PostgresStore)
    return opened


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def cli(*args: str, url: str, home: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    run_env.update({"GREENTIC_STORE": url, "GREENTIC_HOME": str(home), **env})
    return subprocess.run([sys.executable, "-m", "greentic_core", *args], env=run_env, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- schema


def test_a_database_without_the_schema_is_refused_with_the_hint_to_init(bare_pg_url: str, tmp_path: Path) -> None:
    proc = cli("env", "list", url=bare_pg_url, home=tmp_path)
    assert proc.returncode == 5
    assert proc.stderr.startswith("error: store postgresql://greentic:***@127.0.0.1:")
    assert "has no greentic schema" in proc.stderr and "store init`" in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout


def test_store_init_creates_then_is_idempotent(bare_pg_url: str, tmp_path: Path) -> None:
    first = json.loads(cli("--json", "store", "init", url=bare_pg_url, home=tmp_path).stdout)
    assert first == {"ok": True, "store": first["store"], "schema_version": 1, "changed": True, "from_version": 0}
    again = json.loads(cli("--json", "store", "init", url=bare_pg_url, home=tmp_path).stdout)
    assert again["changed"] is False and again["schema_version"] == 1
    assert PASSWORD not in first["store"] and ":***@" in first["store"]


def test_an_older_schema_is_refused(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE greentic_schema SET version = 0")
    with pytest.raises(SchemaOutdated, match="schema version 0; this plugin needs 1"):
        store(pg_url).list()


def test_store_doctor_passes_on_a_healthy_database(pg_url: str, tmp_path: Path) -> None:
    proc = cli("--json", "store", "doctor", url=pg_url, home=tmp_path)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"] is True, doc
    assert [c["name"] for c in doc["checks"]] == ["reachable", "encoding", "schema", "read", "write", "lease-clock"]


def test_store_doctor_fails_on_an_unreachable_server_without_the_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://greentic:{PASSWORD}@127.0.0.1:{port}/x"
    proc = cli("--json", "--debug", "store", "doctor", url=url, home=tmp_path)
    assert proc.returncode == 5
    doc = json.loads(proc.stdout)
    assert doc["checks"][0]["name"] == "reachable" and doc["checks"][0]["status"] == "fail"
    assert PASSWORD not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- documents


def test_create_exists_list_load(pg_url: str) -> None:
    s = store(pg_url)
    assert s.list() == [] and not s.exists("dev")
    stored = s.create(env_doc("dev"), audit_event=dict(EVENT))
    s.create(env_doc("a-env"), audit_event=dict(EVENT))
    assert stored.generation == 1
    assert s.list() == ["a-env", "dev"] and s.exists("dev")
    assert s.load("dev") == stored
    with pytest.raises(EnvironmentExists):
        s.create(env_doc("dev"), audit_event=dict(EVENT))
    with pytest.raises(EnvironmentNotFound):
        s.load("nope")
    with pytest.raises(EnvironmentNotFound):
        with s.transaction("nope"):
            pass


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("upstream-*.json")
                                           if "runtime-config" not in p.name))
def test_upstream_documents_are_stored_byte_for_byte_as_the_file_store_writes_them(
        pg_url: str, tmp_path: Path, fixture: str) -> None:
    env = codec.load_environment((FIXTURES / fixture).read_bytes())
    files = FileStore(tmp_path / "envs")
    files.create(env, audit_event=dict(EVENT))
    s = store(pg_url)
    s.create(env, audit_event=dict(EVENT))
    on_disk = (tmp_path / "envs" / env.environment_id / "environment.json").read_bytes()
    assert s._read(env.environment_id).data == on_disk
    assert s.load(env.environment_id) == files.load(env.environment_id)
    with s.transaction(env.environment_id) as tx:
        tx.save(tx.env, audit_event=dict(EVENT))
    with files.transaction(env.environment_id) as tx:
        tx.save(tx.env, audit_event=dict(EVENT))
    assert s._read(env.environment_id).data == (tmp_path / "envs" / env.environment_id / "environment.json").read_bytes()


def test_audit_is_gap_free_ordered_and_append_only(pg_url: str) -> None:
    import psycopg

    s = store(pg_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    for n in range(5):
        with s.transaction("dev") as tx:
            tx.save(env_doc(name=f"n{n}"), audit_event={**EVENT, "n": n})
            tx.audit({**EVENT, "verb": "note", "n": n})
    events = s.audit_events("dev")
    saves = [e for e in events if e["verb"] == "save"]
    assert [(e["generation_before"], e["generation_after"]) for e in saves] == [(0, 1)] + [(g, g + 1) for g in range(1, 6)]
    assert [e.get("n") for e in events[1:]] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with psycopg.connect(pg_url, autocommit=True) as conn, pytest.raises(psycopg.Error, match="append-only"):
        conn.execute("DELETE FROM greentic_audit")


def test_backups_are_bounded_newest_kept(pg_url: str) -> None:
    s = store(pg_url, max_backups=3)
    s.create(env_doc(), audit_event=dict(EVENT))
    for n in range(6):
        with s.transaction("dev") as tx:
            tx.save(env_doc(name=f"n{n}"), audit_event=dict(EVENT))
    kept = s.backups("dev")
    assert [g for g, _ in kept] == [4, 5, 6]
    assert codec.load_environment(kept[-1][1]).name == "n4"


def test_runtime_config_is_published_with_the_save_and_removed_when_nothing_is_live(pg_url: str) -> None:
    files_env = codec.load_environment((FIXTURES / "upstream-example.json").read_bytes())
    s = store(pg_url)
    s.create(files_env, audit_event=dict(EVENT))
    config = s.load_runtime_config(files_env.environment_id)
    assert config is not None and config.revisions
    with s.transaction(files_env.environment_id) as tx:
        tx.save(Environment(environment_id=files_env.environment_id, name="x",
                            host_config=files_env.host_config, packs=()), audit_event=dict(EVENT))
    assert s.load_runtime_config(files_env.environment_id) is None


# --------------------------------------------------------------------------- compare-and-swap and fencing


def test_a_save_over_a_newer_generation_is_refused_and_nothing_is_lost(pg_url: str) -> None:
    s = store(pg_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    with s.transaction("dev") as tx:
        stale = s._read("dev")
        tx.save(env_doc(name="first"), audit_event=dict(EVENT))
        # a writer that loaded generation 1 (before the save above) tries to save over generation 2
        with pytest.raises(SaveConflict, match="no longer at generation 1"):
            s._commit("dev", lease=tx.lease, expected=stale, data=b"{}", generation=2, runtime_config=None,
                      record=dict(EVENT), max_backups=20)
    assert s.load("dev").name == "first" and s.load("dev").generation == 2


def test_an_expired_holder_cannot_save_over_the_writer_that_took_over(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = store(pg_url, lock_ttl=1.0)
    fast = store(pg_url, lock_ttl=30.0, lock_timeout=30.0)
    slow.create(env_doc(), audit_event=dict(EVENT))
    monkeypatch.setattr(slow, "_renew", lambda lease, ttl: True)  # a paused holder: it stops renewing
    with slow.transaction("dev") as stale_tx:
        wait_until(lambda: fast.lease("dev") is None, what="the slow holder's lease to expire")
        with fast.transaction("dev") as tx:
            tx.save(env_doc(name="newer"), audit_event=dict(EVENT))
        with pytest.raises(LeaseLost, match="taken over|broken"):
            stale_tx.save(env_doc(name="stale"), audit_event={**EVENT, "verb": "stale.save"})
    env = fast.load("dev")
    assert env.name == "newer" and env.generation == 2
    conflict = [e for e in fast.audit_events("dev") if e["verb"] == "stale.save"]
    assert len(conflict) == 1 and conflict[0]["outcome"] == "conflict"


def test_unlock_force_breaks_the_lease_audited_and_the_old_holder_cannot_save(pg_url: str, tmp_path: Path) -> None:
    s = store(pg_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    with s.transaction("dev") as tx:
        proc = cli("--json", "env", "unlock", "dev", "--force", url=pg_url, home=tmp_path)
        doc = json.loads(proc.stdout)
        assert proc.returncode == 0 and doc["broken"] is True and doc["lease"]["token"] == tx.lease.token
        with pytest.raises(LeaseLost):
            tx.save(env_doc(name="late"), audit_event=dict(EVENT))
    assert s.load("dev").generation == 1
    unlock = [e for e in s.audit_events("dev") if e["verb"] == "env.unlock"]
    assert len(unlock) == 1 and unlock[0]["lease"]["holder"].startswith("test@")
    assert PASSWORD not in json.dumps(s.audit_events("dev"))


def test_the_lease_is_renewed_while_the_command_runs(pg_url: str) -> None:
    s = store(pg_url, lock_ttl=1.0)
    other = store(pg_url, lock_timeout=0.0)
    s.create(env_doc(), audit_event=dict(EVENT))
    with s.transaction("dev") as tx:
        first = other.lease("dev")
        assert first is not None
        # longer than the TTL: renewals keep it held (expires moves forward) ...
        wait_until(lambda: (other.lease("dev") or first).expires > first.expires + (first.expires - first.acquired),
                   what="two renewals")
        with pytest.raises(LockTimeout):
            with other.transaction("dev"):
                pass
        tx.save(env_doc(name="after-renewals"), audit_event=dict(EVENT))
    assert other.lease("dev") is None  # released at the end
    assert other.load("dev").name == "after-renewals"


def test_fencing_tokens_grow(pg_url: str) -> None:
    s = store(pg_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    tokens = []
    for _ in range(3):
        with s.transaction("dev") as tx:
            tokens.append(tx.lease.token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


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


def _hold(url: str, ttl: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(ttl)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_lease_excludes_other_processes_and_names_its_holder(pg_url: str, tmp_path: Path) -> None:
    s = store(pg_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    holder = _hold(pg_url, 30.0)
    try:
        lock = json.loads(cli("--json", "env", "lock", "dev", url=pg_url, home=tmp_path).stdout)
        assert lock["locked"] is True and lock["lease"]["pid"] == holder.pid and lock["lease"]["expires"]
        assert lock["lease"]["command"] == "greentic-deployer revision warm dev latest"
        proc = cli("--lock-timeout", "1.5", "env", "reconcile", "dev", url=pg_url, home=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert "waiting for the lease of environment dev, held by holder@" in proc.stderr
        last = [line for line in proc.stderr.splitlines() if line.startswith("error:")][-1]
        assert f"locked by holder@" in last and f"(pid {holder.pid}" in last and "waited 1.5s" in last
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert s.lease("dev") is None


def test_a_killed_holders_lease_is_taken_after_the_ttl_not_before(pg_url: str) -> None:
    s = store(pg_url, lock_timeout=0.0)
    s.create(env_doc(), audit_event=dict(EVENT))
    holder = _hold(pg_url, 4.0)
    held = s.lease("dev")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert held is not None and held.pid == holder.pid
    if s._now() < held.expires:  # still within the TTL: the lease is still held
        with pytest.raises(LockTimeout, match="locked by holder@"):
            with s.transaction("dev"):
                pass
    patient = store(pg_url, lock_timeout=30.0)
    with patient.transaction("dev") as tx:
        assert tx.lease.acquired >= held.expires  # taken over only once the dead holder's lease expired
        assert tx.lease.token > held.token
        tx.save(env_doc(name="recovered"), audit_event=dict(EVENT))
    assert s.load("dev").name == "recovered"


# --------------------------------------------------------------------------- the CLI on postgres


def test_the_cli_runs_a_whole_lifecycle_on_postgres(pg_url: str, tmp_path: Path) -> None:
    def gd(*args: str) -> dict:
        proc = cli("--json", *args, url=pg_url, home=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    init = gd("env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    assert init["path"].startswith("postgresql://greentic:***@") and init["path"].endswith("/dev")
    gd("deployment", "add", "dev", "shop")
    a = gd("revision", "stage", "dev", "shop", "--record-only", "--command", "true")["revision_id"]
    b = gd("revision", "stage", "dev", "shop", "--record-only", "--command", "true")["revision_id"]
    for rid in (a, b):
        gd("revision", "warm", "dev", rid, "--record-only")
    gd("traffic", "set", "dev", "shop", f"{a}=9000,{b}=1000", "--record-only")
    env = json.loads(store(pg_url)._read("dev").data)
    assert env["generation"] == 7
    assert [e["verb"] for e in gd("env", "history", "dev")["events"]][0] == "traffic.set"
    assert store(pg_url).read_attachment("dev", "env-packs/deployer/answers.json") is not None
    assert store(pg_url).load_runtime_config("dev") is not None
    assert not (tmp_path / "environments").exists()  # nothing went to the local file store
    audit = json.dumps(store(pg_url).audit_events("dev"))
    assert PASSWORD not in audit
