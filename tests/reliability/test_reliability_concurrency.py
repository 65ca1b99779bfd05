"""Concurrency: 8 processes x 100 changes on ONE environment through the CLI lose nothing.

Each worker (:mod:`concurrency_worker`) is one real Python process that runs 100 full
``greentic-deployer`` commands in-process (traffic sets with weights unique over all workers,
stages and warms, half through the recording deployer and half ``--record-only``); every
command takes the environment's lock, loads, validates, calls the provider and saves. The
workers start together on a file barrier. Then:

* every change is in the audit log: 800 events of the right kinds, each worker's own events
  (by revision id / weights) all present, none failed;
* generations account for every change: ``generation_after`` of consecutive events goes up by
  exactly 1, ``generation_before`` of each is ``generation_after`` of the one before, and the
  final generation is the initial one + 800; the generation each command reported is unique;
* the final document validates, holds all 200 new revisions in the state their last command
  left them, its split is the one of the last traffic event, ``runtime-config.json`` is its
  projection, and the provider routes what the last non-record-only traffic set applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import recording_plugin
from greentic_core import codec, validation
from greentic_core.projection import materialize_runtime_config
from reliability_harness import Cli

WORKERS = 8
CHANGES = 100
WORKER = Path(__file__).resolve().parent / "concurrency_worker.py"

pytestmark = pytest.mark.timeout(280)


def test_eight_processes_times_100_changes_lose_nothing(cli: Cli) -> None:
    cli.init(recording_plugin.NAME, env_id="conc", answers={"region": "eu-west-1"})
    cli.json("deployment", "add", "conc", "shop")
    a, b = cli.ready("conc"), cli.ready("conc")
    cli.json("traffic", "set", "conc", "shop", f"{a}=10000")
    initial = cli.env_doc("conc")["generation"]
    events_before = len(cli.audit("conc"))

    barrier = cli.tmp / "barrier"
    barrier.mkdir()
    results = [cli.tmp / f"results-{n}.json" for n in range(WORKERS)]
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(cli.home), "conc", str(n), str(CHANGES), str(barrier),
                          str(results[n]), a, b],
                         env=cli.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(barrier.glob("ready-*"))) < WORKERS:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        started = time.monotonic()
        (barrier / "go").touch()
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
        took = time.monotonic() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    done = {n: json.loads(results[n].read_text()) for n in range(WORKERS)}
    failures = [(n, r) for n, rs in done.items() for r in rs if r["code"] != 0]
    assert failures == [], failures[:3]
    assert all(len(rs) == CHANGES for rs in done.values())

    # ---- every change is in the audit log
    events = cli.audit("conc")
    new_events = events[events_before:]
    assert len(new_events) == WORKERS * CHANGES
    assert all(e["outcome"] == "ok" for e in new_events)
    assert Counter(e["verb"] for e in new_events) == {
        "traffic.set": WORKERS * CHANGES // 2, "revision.stage": WORKERS * CHANGES // 4,
        "revision.warm": WORKERS * CHANGES // 4}
    for n, rs in done.items():
        mine = [e for e in new_events if e["actor"] == f"w{n}"]
        expected = Counter(_key_of_result(r) for r in rs)
        assert Counter(_key_of_event(e) for e in mine) == expected, f"worker w{n} lost a change"
        # each worker's own changes were recorded in the order it made them
        assert [_key_of_event(e) for e in mine] == [_key_of_result(r) for r in rs]

    # ---- generations account for every change
    for previous, event in zip(events, events[1:]):
        assert event["generation_after"] == event["generation_before"] + 1, event
        assert event["generation_before"] == previous["generation_after"], (previous, event)
    final = cli.env_doc("conc")
    assert final["generation"] == initial + WORKERS * CHANGES == events[-1]["generation_after"]
    reported = [r["doc"]["generation"] for rs in done.values() for r in rs if "generation" in r["doc"]]
    assert len(reported) == len(set(reported)) == WORKERS * CHANGES * 3 // 4  # traffic sets and warms
    by_generation = {e["generation_after"]: e for e in new_events}
    for rs in done.values():
        for r in rs:
            if "generation" in r["doc"]:
                assert _key_of_event(by_generation[r["doc"]["generation"]]) == _key_of_result(r)

    # ---- the final document is valid and holds every change
    assert cli.json("env", "validate", "conc")["valid"] is True
    env = codec.load_environment(cli.env_bytes("conc"))
    validation.validate_environment(env)
    staged = {r["doc"]["revision_id"] for rs in done.values() for r in rs if r["kind"] == "revision.stage"}
    warmed = {r["doc"]["revision_id"] for rs in done.values() for r in rs if r["kind"] == "revision.warm"}
    assert len(staged) == WORKERS * CHANGES // 4 and warmed == staged
    assert {r.revision_id for r in env.revisions} == staged | {a, b}
    assert all(r.lifecycle.value == "ready" for r in env.revisions)
    last_set = [e for e in new_events if e["verb"] == "traffic.set"][-1]
    assert {e.revision_id: e.weight_bps for e in env.traffic_splits[0].entries} == last_set["weights"]
    config = json.loads((cli.env_dir("conc") / "runtime-config.json").read_text())
    assert config == codec.unstructure(materialize_runtime_config(env))
    applied = [e for e in new_events if e["verb"] == "traffic.set" and not e.get("record_only")][-1]
    provider = json.loads((cli.env_dir("conc") / recording_plugin.STATE_FILE).read_text())
    assert provider["routes"][env.bundles[0].deployment_id] == applied["weights"]
    runs = 1 + sum(x["actor"] != y["actor"] for x, y in zip(new_events, new_events[1:]))
    assert runs > WORKERS * 4, f"the workers barely interleaved ({runs} runs): the lock was not contended"
    seconds = [r["seconds"] for rs in done.values() for r in rs]
    print(f"\nconcurrency: {WORKERS} processes x {CHANGES} changes = {len(new_events)} audited, 0 lost; "
          f"generation {initial} -> {final['generation']}; {runs} interleaved runs; {took:.1f}s wall, "
          f"command latency median {sorted(seconds)[len(seconds) // 2] * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")


def _key_of_result(result: dict) -> tuple:
    doc = result["doc"]
    if result["kind"] == "traffic.set":
        return ("traffic.set", tuple(sorted((e["revision_id"], e["weight_bps"]) for e in doc["split"]["entries"])),
                result["record_only"])
    return (result["kind"], doc["revision_id"], result["record_only"])


def _key_of_event(event: dict) -> tuple:
    if event["verb"] == "traffic.set":
        return ("traffic.set", tuple(sorted(event["weights"].items())), bool(event.get("record_only")))
    return (event["verb"], event["revision_id"], bool(event.get("record_only")))
