"""One host runs a local-process environment: on a shared store, a second host is refused.

The local-process deployer keeps what it runs on the machine that runs the command
(``capabilities.host_local_state``). On PostgreSQL and S3 the first provider change records
that host (store attachment ``state-host.json``); provider changes from another host are
refused in one line naming it, until ``env host ENV --take-over``. Two hosts are simulated by
``GREENTIC_HOSTNAME`` (a documented feature: the name this machine goes by). The file store
records nothing and refuses nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from store_backends import Backend, make_backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

DEPLOYER = "greentic.deployer.local-process"


def on(backend: Backend, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run as if on ``host`` (``GREENTIC_HOSTNAME``), against ``backend``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    env.update({**backend.env, "GREENTIC_STORE": backend.url, "GREENTIC_HOME": str(backend.home / host),
                "GREENTIC_HOSTNAME": host})
    return subprocess.run([sys.executable, "-m", "greentic_core", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def ok(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(params=["postgresql", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> Backend:
    return make_backend(request.param, request, tmp_path, monkeypatch)


def _environment(backend: Backend, host: str) -> None:
    ok(on(backend, host, "--json", "env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1"))
    ok(on(backend, host, "--json", "deployment", "add", "dev", "shop"))


def test_a_second_host_is_refused_provider_changes_in_one_line_naming_the_first(shared: Backend) -> None:
    _environment(shared, "host-a")
    assert ok(on(shared, "host-a", "--json", "env", "host", "dev"))["host"] is None  # nothing changed yet
    ok(on(shared, "host-a", "--json", "revision", "stage", "dev", "shop", "--command", "true"))
    shown = ok(on(shared, "host-a", "--json", "env", "host", "dev"))
    assert (shown["host"], shown["this_host"], shown["record"]["deployer"]) == ("host-a", "host-a", DEPLOYER)
    generation = shared.store().load("dev").generation

    refused = on(shared, "host-b", "revision", "stage", "dev", "shop", "--command", "true")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [
        f"error: environment 'dev' runs its {DEPLOYER} state on host host-a, not on this host (host-b)",
        "hint: run the command on host-a; or move the environment to this host with `greentic-deployer env host "
        "dev --take-over` (what runs on host-a keeps running until it is stopped there)"]
    as_json = json.loads(on(shared, "host-b", "--json", "env", "reconcile", "dev").stdout)
    assert as_json["kind"] == "conflict" and as_json["details"]["host"] == "host-a"
    assert shared.store().load("dev").generation == generation  # nothing recorded
    assert not (shared.home / "host-b" / "state" / "dev").exists() or \
        not any((shared.home / "host-b" / "state" / "dev").iterdir())  # and nothing started there

    # reads and record-only changes touch no provider state: any host may
    ok(on(shared, "host-b", "--json", "env", "show", "dev"))
    ok(on(shared, "host-b", "--json", "env", "history", "dev"))
    ok(on(shared, "host-b", "--json", "revision", "stage", "dev", "shop", "--command", "true", "--record-only"))
    # the first host goes on as before
    ok(on(shared, "host-a", "--json", "revision", "stage", "dev", "shop", "--command", "true"))


def test_take_over_moves_the_environment_to_this_host_audited(shared: Backend) -> None:
    _environment(shared, "host-a")
    ok(on(shared, "host-a", "--json", "revision", "stage", "dev", "shop", "--command", "true"))
    moved = ok(on(shared, "host-b", "--json", "env", "host", "dev", "--take-over"))
    assert (moved["host"], moved["previous_host"]) == ("host-b", "host-a")
    [event] = [e for e in shared.store().audit_events("dev") if e["verb"] == "env.host"]
    assert (event["host"], event["previous_host"]) == ("host-b", "host-a")
    ok(on(shared, "host-b", "--json", "revision", "stage", "dev", "shop", "--command", "true"))
    refused = on(shared, "host-a", "--json", "revision", "stage", "dev", "shop", "--command", "true")
    assert refused.returncode == 3 and "on host host-b, not on this host (host-a)" in json.loads(refused.stdout)["message"]


def test_the_file_store_records_no_host_and_refuses_none(tmp_path, request, monkeypatch) -> None:
    files = make_backend("file", request, tmp_path, monkeypatch)
    _environment(files, "host-a")
    ok(on(files, "host-a", "--json", "revision", "stage", "dev", "shop", "--command", "true"))
    ok(on(files, "host-b", "--json", "revision", "stage", "dev", "shop", "--command", "true"))
    assert ok(on(files, "host-b", "--json", "env", "host", "dev"))["host"] is None
    assert files.store().read_attachment("dev", "state-host.json") is None
    refused = on(files, "host-b", "--json", "env", "host", "dev", "--take-over")
    assert refused.returncode == 2 and "file store" in refused.stdout


def test_greentic_hostname_names_this_host_in_leases(shared: Backend) -> None:
    _environment(shared, "host-a")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom greentic_core.store import StoreOptions, open_store\n"
         "s = open_store(sys.argv[1], options=StoreOptions(actor='alice'))\n"
         "with s.transaction('dev'):\n    print('locked', flush=True)\n    sys.stdin.read()\n", shared.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**shared.process_env(), "GREENTIC_HOSTNAME": "ci-7"})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert ok(on(shared, "host-b", "--json", "env", "lock", "dev"))["lease"]["holder"] == "alice@ci-7"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_an_agent_on_another_host_leaves_the_environment_to_the_host_that_runs_it(shared: Backend) -> None:
    _environment(shared, "host-a")
    ok(on(shared, "host-a", "--json", "revision", "stage", "dev", "shop", "--command", "true"))
    elsewhere = on(shared, "host-b", "--json", "agent", "dev", "--once")
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
    report = json.loads(elsewhere.stdout)["pass"]["environments"][0]
    assert report["status"] == "elsewhere" and "host host-a" in report["error"]
    assert shared.store().read_attachment("dev", "agent.json") is None  # it claimed nothing
    here = ok(on(shared, "host-a", "--json", "agent", "dev", "--once"))
    assert here["pass"]["environments"][0]["status"] == "ok"
    record = json.loads(shared.store().read_attachment("dev", "agent.json"))
    assert record["last_good_pass_at"] and record["claim"] is None  # it passed, then released its claim
