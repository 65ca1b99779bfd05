"""The entry-point module: listing store plugins imports no driver, and a missing psycopg still
shows the plugin as broken with the reason (no server needed)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
{block}
from greentic_core.store.select import store_plugins
rows = [r for r in store_plugins() if r["scheme"].startswith("postgres")]
print(json.dumps({{"rows": rows, "psycopg": "psycopg" in sys.modules}}))
"""


def probe(block: str = "") -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(block=block)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_listing_the_store_plugin_does_not_import_psycopg() -> None:
    doc = probe()
    assert [r["status"] for r in doc["rows"]] == ["ok", "ok"] and doc["psycopg"] is False


def test_without_psycopg_the_plugin_is_listed_broken_with_the_reason() -> None:
    doc = probe("sys.modules['psycopg'] = None  # as if it were not installed")
    assert {(r["status"], r["reason"]) for r in doc["rows"]} == {("broken", "ModuleNotFoundError: No module named 'psycopg'")}


def test_the_entry_point_opens_a_postgres_store() -> None:
    from greentic_core.store import StoreOptions
    from greentic_store_postgres.entry import open_store
    from greentic_store_postgres.store import PostgresStore

    store = open_store("postgresql://u@127.0.0.1:1/db", StoreOptions())  # opening connects lazily
    assert isinstance(store, PostgresStore)
