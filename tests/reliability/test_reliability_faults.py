"""Provider faults: every verb failing before side effects, after partial work, and by hanging.

The fault-injecting deployer of :mod:`fault_plugin` (a real installed distribution) fails one
verb at one stage. For every (verb, stage):

* the command fails with one clear line (plus a hint): exit 1 for an error; for a hang, exit 6
  at the command's ``--timeout 1`` plus the operator's grace (``GREENTIC_HANG_GRACE_SECONDS``,
  0.5 s here), in a real subprocess so the hung provider thread cannot outlive the command;
* ``environment.json`` and ``runtime-config.json`` are byte-identical and exactly one audit
  event says what failed;
* with the fault switched off, ``env reconcile`` converges the provider onto what is recorded,
  and running the command again converges onto the new state: the provider's state equals what
  the record implies, no partial-work marker is left, ``env observe`` agrees, ``env doctor``
  passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

import fault_plugin
from reliability_harness import HANG_GRACE, SECRET, Cli

TIMEOUT = 1.0
#: a subprocess CLI start (interpreter, imports, discovery) on a loaded 2-core machine
STARTUP_BOUND = 8.0
COUNTS = {"faults": 0}

COMMANDS: dict[str, Callable[[dict[str, str]], tuple[str, ...]]] = {
    "stage": lambda ids: ("revision", "stage", "dev", "shop", "--timeout", f"{TIMEOUT:g}"),
    "warm": lambda ids: ("revision", "warm", "dev", ids["S"], "--timeout", f"{TIMEOUT:g}"),
    "drain": lambda ids: ("revision", "drain", "dev", ids["B"], "--timeout", f"{TIMEOUT:g}"),
    "archive": lambda ids: ("revision", "archive", "dev", ids["I"], "--timeout", f"{TIMEOUT:g}"),
    "apply_traffic_split": lambda ids: ("traffic", "set", "dev", "shop", f"{ids['A']}=5000,{ids['B']}=5000",
                                        "--timeout", f"{TIMEOUT:g}"),
}


def prepared(cli: Cli) -> dict[str, str]:
    """dev/shop on the faulty deployer: A ready (10000), B ready (0), I inactive, S staged."""
    cli.init(fault_plugin.NAME)
    cli.json("deployment", "add", "dev", "shop")
    ids = {"A": cli.ready(), "B": cli.ready(), "I": cli.ready()}
    cli.json("traffic", "set", "dev", "shop", f"{ids['A']}=5000,{ids['B']}=5000")
    cli.json("traffic", "set", "dev", "shop", f"{ids['A']}=10000,{ids['B']}=0")
    cli.json("revision", "drain", "dev", ids["I"])
    ids["S"] = cli.stage()
    return ids


def expected_provider(doc: dict[str, Any]) -> tuple[dict[str, bool | None], dict[str, dict[str, int]]]:
    """What the provider must run for this record: rid -> serving (None: must be absent), routes."""
    revisions: dict[str, bool | None] = {}
    for rev in doc["revisions"]:
        state = rev["lifecycle"]
        revisions[rev["revision_id"]] = None if state == "archived" else state in ("ready", "warming")
    routes = {s["deployment_id"]: {e["revision_id"]: e["weight_bps"] for e in s["entries"]}
              for s in doc["traffic_splits"]}
    return revisions, routes


def assert_converged(cli: Cli) -> None:
    doc = cli.env_doc()
    revisions, routes = expected_provider(doc)
    state = fault_plugin.provider_state(cli.env_dir())
    assert fault_plugin.markers(cli.env_dir()) == [], "partial work left behind"
    recorded = set(revisions)
    assert set(state["revisions"]) <= recorded, f"provider runs unrecorded revisions: {set(state['revisions']) - recorded}"
    for rid, serving in revisions.items():
        held = state["revisions"].get(rid)
        if serving is None:
            assert held is None, (rid, held)
        else:
            assert held is not None and held["serving"] is serving and "partial" not in held, (rid, held, serving)
    assert state["routes"] == routes
    observed = cli.json("env", "observe", "dev")
    assert {rid: (o["present"], o["serving"]) for rid, o in observed["revisions"].items()} == {
        rid: (s["present"], s["serving"]) for rid, s in state["revisions"].items()}
    assert {did: o["weights"] for did, o in observed["deployments"].items()} == routes
    doctor = cli.json("env", "doctor", "dev")
    assert doctor["ok"] is True, doctor


@pytest.mark.parametrize("stage", fault_plugin.STAGES)
@pytest.mark.parametrize("verb", fault_plugin.VERBS)
def test_a_provider_fault_changes_nothing_recorded_and_a_retry_converges(cli: Cli, verb: str, stage: str) -> None:
    ids = prepared(cli)
    command = COMMANDS[verb](ids)
    env_before, config_before = cli.env_bytes(), cli.config_bytes()
    events_before = len(cli.audit())
    cli.fault(f"{verb}:{stage}")

    if stage == "hang":
        proc, took = cli.sub(*command)  # a real process: the hung provider thread dies with it
        limit = TIMEOUT + HANG_GRACE
        assert proc.returncode == 6, proc.stderr
        assert limit <= took < limit + STARTUP_BOUND, took
        lines = proc.stderr.strip().splitlines()
        assert lines[0] == f"error: the provider did not return from {verb} within {limit:g}s; nothing was recorded"
        assert len(lines) == 2 and lines[1].startswith("hint: ") and "env reconcile" in lines[1]
    else:
        result = cli.run(*command, code=1, json_mode=False)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith(f"error: faulty provider "), lines
        assert len(lines) == 2 and lines[1].startswith("hint: "), lines
    COUNTS["faults"] += 1

    assert cli.env_bytes() == env_before, "a failed provider call changed environment.json"
    assert cli.config_bytes() == config_before, "a failed provider call changed runtime-config.json"
    events = cli.audit()
    assert len(events) == events_before + 1
    failed = events[-1]
    assert (failed["outcome"], failed["provider_verb"]) == ("error", verb), failed
    assert failed["generation_before"] == failed["generation_after"] == cli.env_doc()["generation"]
    called = [json.loads(line) for line in cli.fault_log.read_text().splitlines()]
    assert any(c["hook"] == verb and c["stage"] == stage for c in called), "the fault was not reached"

    cli.heal()
    cli.release_hangs()
    # with the fault off, reconcile brings the provider back to what is recorded (records nothing)
    reconciled = cli.json("env", "reconcile", "dev")
    assert reconciled["ok"] is True
    assert cli.env_bytes() == env_before
    assert_converged(cli)
    # and the same command succeeds and converges onto the new state
    cli.json(*command)
    assert cli.env_bytes() != env_before
    assert_converged(cli)
    # secrets never reach what was written or printed (the answers file is the one holder)
    holders = [p.name for p in cli.home.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert holders == ["answers.json"]
    assert all(SECRET not in out for out in cli.outputs)


def test_report_faults_injected() -> None:
    """Prints how many faults the parametrized test injected (recorded in docs/reliability.md)."""
    print(f"\nprovider faults injected: {COUNTS['faults']} "
          f"({len(fault_plugin.VERBS)} verbs x {len(fault_plugin.STAGES)} stages when run together)")
