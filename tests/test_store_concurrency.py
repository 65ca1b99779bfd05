"""Concurrency through the CLI on every backend: 8 processes x 50 `traffic set` on one
environment lose nothing. Every change is recorded (400 of 400), generations are gap-free and
400 audit events tell the whole story, in the order the saves happened."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store_backends import Backend, backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

WRITERS = 8
CHANGES = 50
WRITER = Path(__file__).resolve().parent / "store_writer.py"
DEPLOYER = "greentic.deployer.local-process"

pytestmark = pytest.mark.timeout(600)


def test_eight_writers_times_50_traffic_sets_lose_nothing(backend: Backend, tmp_path: Path) -> None:
    def gd(*args: str) -> dict:
        proc = backend.cli("--json", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    gd("env", "init", "conc", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    gd("deployment", "add", "conc", "shop")
    a = gd("revision", "stage", "conc", "shop", "--record-only", "--command", "true")["revision_id"]
    b = gd("revision", "stage", "conc", "shop", "--record-only", "--command", "true")["revision_id"]
    for rid in (a, b):
        gd("revision", "warm", "conc", rid, "--record-only")
    store = backend.store()
    initial = store.load("conc").generation
    events_before = len(store.audit_events("conc"))

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    results = [tmp_path / f"results-{n}.json" for n in range(WRITERS)]
    env = {**backend.process_env(), "GREENTIC_STORE": backend.url, "GREENTIC_HOME": str(backend.home),
           "PYTHONPATH": str(WRITER.parent)}
    procs = [subprocess.Popen([sys.executable, str(WRITER), "conc", str(n), str(CHANGES), str(barrier),
                               str(results[n]), a, b], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for n in range(WRITERS)]
    try:
        deadline = time.monotonic() + 120
        while len(list(barrier.glob("ready-*"))) < WRITERS:
            assert time.monotonic() < deadline, "writers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        (barrier / "go").touch()
        for proc in procs:
            _, err = proc.communicate(timeout=540)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    done = [r for path in results for r in json.loads(path.read_text())]
    assert len(done) == WRITERS * CHANGES and all(r["code"] == 0 for r in done), [r for r in done if r["code"]][:3]
    reported = [json.loads(r["out"])["generation"] for r in done]
    assert len(set(reported)) == WRITERS * CHANGES  # every command saved its own generation

    events = store.audit_events("conc")[events_before:]
    sets = [e for e in events if e["verb"] == "traffic.set"]
    assert len(sets) == len(events) == WRITERS * CHANGES  # 400 audit events, all of them traffic sets
    assert all(e["outcome"] == "ok" for e in sets)
    assert [e["generation_before"] for e in sets] == list(range(initial, initial + WRITERS * CHANGES))
    assert all(e["generation_after"] == e["generation_before"] + 1 for e in sets)
    assert sorted(e["weights"][a] for e in sets) == sorted(r["a"] for r in done)  # each change exactly once
    final = store.load("conc")
    assert final.generation == initial + WRITERS * CHANGES
    split = final.split_for(final.bundles[0].deployment_id)
    assert {e.revision_id: e.weight_bps for e in split.entries} == sets[-1]["weights"]  # the last save won
    assert store.lease("conc") is None
