"""The fixture environments validate, and the conformance app serves what the workload promises."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from greentic_core import Lifecycle
from greentic_core.errors import SpecError
from greentic_core.validation import validate_environment

from greentic_conformance.fixture import (
    APP_WORKLOAD,
    BROKEN_WORKLOAD,
    UNKNOWN_REVISION_ID,
    build_fixture_env,
    snapshot,
    with_invalid_split,
    without_split,
)

DEPLOYER = "acme.deployer.memory@1.0.0"


def test_fixture_env_validates_and_has_the_upstream_shape():
    fx = build_fixture_env("conformance-test", DEPLOYER)
    validate_environment(fx.env)
    assert len(fx.env.bundles) == 2 and len(fx.env.revisions) == 4
    assert {r.lifecycle for r in fx.env.revisions} == {Lifecycle.READY}
    assert all(r.workload == APP_WORKLOAD for r in fx.env.revisions)
    split_a, split_b = fx.env.split_for(fx.dep_a), fx.env.split_for(fx.dep_b)
    assert [(e.revision_id, e.weight_bps) for e in split_a.entries] == [(fx.a1, 3333), (fx.a2, 6667)]
    assert [(e.revision_id, e.weight_bps) for e in split_b.entries] == [(fx.b1, 10000), (fx.b2, 0)]
    assert fx.env.revision(UNKNOWN_REVISION_ID) is None
    other = build_fixture_env("conformance-test", DEPLOYER)
    assert {r.revision_id for r in other.env.revisions}.isdisjoint(r.revision_id for r in fx.env.revisions)


def test_broken_variants_do_not_validate():
    fx = build_fixture_env("conformance-test", DEPLOYER)
    with pytest.raises(SpecError):
        validate_environment(with_invalid_split(fx.env, fx.dep_a, [(fx.a1, 4000), (fx.a2, 5000)]))
    assert without_split(fx.env, fx.dep_a).split_for(fx.dep_a) is None


def test_workloads():
    assert APP_WORKLOAD.command == (sys.executable, "-m", "greentic_conformance.app")
    assert APP_WORKLOAD.image and APP_WORKLOAD.health_path == "/healthz"
    assert not os.path.exists(BROKEN_WORKLOAD.command[0])
    assert BROKEN_WORKLOAD.image.startswith("registry.invalid/")


def test_snapshot_drops_zero_weights_and_reads_absent_revisions():
    from greentic_core import DeploymentObservation, Observation, RevisionObservation

    obs = Observation(revisions={"R1": RevisionObservation(revision_id="R1", present=True, serving=False)},
                      deployments={"D": DeploymentObservation(deployment_id="D", weights={"R1": 10000, "R2": 0})})
    snap = snapshot(obs, ["R1", "R2"], ["D", "E"])
    assert snap.revision("R1") == (True, False) and snap.revision("R2") == (False, False)
    assert snap.weights == {"D": {"R1": 10000}, "E": {}}
    assert snap.diff(snap) == ""


def test_app_serves_healthz_and_its_revision():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PORT=str(port), GREENTIC_REVISION_ID="01TESTREVISION0000000000AA")
    proc = subprocess.Popen(list(APP_WORKLOAD.command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            assert json.loads(response.read())["revision"] == "01TESTREVISION0000000000AA"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
