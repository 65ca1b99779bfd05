"""``greentic-deployer conformance --store URL``: the store contract suite passes on a store that
keeps the contract and fails on one that does not (a file store without compare-and-swap)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BROKEN = '''
from greentic_core.store import FileStore, environments_root
from greentic_core.store.select import file_home


class NoCompareAndSwap(FileStore):
    """Saves whatever the stored document became meanwhile: a lost update waiting to happen."""

    scheme = "nocas"

    def _commit(self, *args, expected_stamp=None, **kwargs):
        return super()._commit(*args, expected_stamp=None, **kwargs)


def open_store(url, options):
    return NoCompareAndSwap(environments_root(file_home("file:" + url.split(":", 1)[1])), options=options)
'''


def _site(root: Path) -> Path:
    dist = root / "acme_nocas-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-nocas\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[greentic.stores]\nnocas = acme_nocas:open_store\n")
    (root / "acme_nocas.py").write_text(BROKEN)
    return root


def _conformance(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    env.update({"PYTHONPATH": str(_site(tmp_path / "site")), "GREENTIC_CACHE_DIR": str(tmp_path / "cache")})
    return subprocess.run([sys.executable, "-m", "greentic_core", "conformance", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_store_suite_passes_on_the_file_store(tmp_path: Path) -> None:
    proc = _conformance(tmp_path, "--store", f"file://{tmp_path / 'store'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "15 passed, 1 skipped" in proc.stdout  # a flock is never renewed


def test_the_store_suite_fails_a_store_without_compare_and_swap(tmp_path: Path) -> None:
    proc = _conformance(tmp_path, "--store", f"nocas://{tmp_path / 'store'}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "test_a_stale_writer_is_refused_and_nothing_is_lost" in failed[0]


def test_a_deployer_or_a_store_not_both(tmp_path: Path) -> None:
    proc = _conformance(tmp_path)
    assert proc.returncode == 2 and "--store URL" in proc.stderr
