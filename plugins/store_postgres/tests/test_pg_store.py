"""What only the PostgreSQL store has, against a real server: the schema and `store init`,
`store doctor`, the append-only audit table, compare-and-swap in SQL, fencing tokens from a
sequence. The rules every backend keeps are in the shipped store suite, run against every backend by the
core's tests/test_store_contract.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greentic_core.spec import Environment, HostConfig
from greentic_core.store import SaveConflict, SchemaOutdated, StoreOptions, open_store
from greentic_store_postgres.store import PostgresStore
from greentic_store_postgres.testing import TEST_PASSWORD as PASSWORD

EVENT = {"actor": "test", "command": "pytest", "verb": "save", "outcome": "ok"}


def env_doc(env_id: str = "dev", name: str | None = None) -> Environment:
    return Environment(environment_id=env_id, name=name or env_id, host_config=HostConfig(env_id=env_id), packs=())


def store(url: str, **options) -> PostgresStore:
    opened = open_store(url, options=StoreOptions(**{"actor": "test", "command": "pytest", **options}))
    assert isinstance(opened, PostgresStore)
    return opened


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


def test_fencing_tokens_grow(pg_url: str) -> None:
    s = store(pg_url)
    s.create(env_doc(), audit_event=dict(EVENT))
    tokens = []
    for _ in range(3):
        with s.transaction("dev") as tx:
            tokens.append(tx.lease.token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
