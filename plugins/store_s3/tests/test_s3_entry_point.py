"""The entry-point module: listing store plugins imports neither boto3 nor the store module, and
a missing boto3 still shows the plugin as broken with the reason (no server needed).

(Not checked here: ``email.utils`` and ``hashlib``, which the store module imports, since a
discovery-cache miss reads distribution metadata with ``importlib.metadata``, which imports
them too.)"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
{block}
from greentic_core.store.select import store_plugins
rows = [r for r in store_plugins() if r["scheme"] == "s3"]
print(json.dumps({{"rows": rows, "imported": sorted(m for m in ("boto3", "botocore", "greentic_store_s3.store")
                                                  if m in sys.modules)}}))
"""


def probe(block: str = "") -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(block=block)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_listing_the_store_plugin_imports_neither_boto3_nor_the_store() -> None:
    doc = probe()
    assert [r["status"] for r in doc["rows"]] == ["ok"] and doc["imported"] == []


def test_without_boto3_the_plugin_is_listed_broken_with_the_reason() -> None:
    doc = probe("sys.modules['boto3'] = None  # as if it were not installed")
    assert [(r["status"], r["reason"]) for r in doc["rows"]] == [("broken", "ModuleNotFoundError: No module named 'boto3'")]


def test_the_entry_point_opens_an_s3_store() -> None:
    from greentic_core.store import StoreOptions
    from greentic_store_s3.entry import open_store
    from greentic_store_s3.store import S3Store

    store = open_store("s3://bucket/prefix?endpoint_url=http://127.0.0.1:1&region=us-east-1", StoreOptions())
    assert isinstance(store, S3Store)
