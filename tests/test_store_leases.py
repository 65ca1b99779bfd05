"""The store seen through the CLI: choosing it (--store / GREENTIC_STORE), leases on the file
backend (who holds it, waiting, the timeout naming the holder, unlock), and URLs whose
passwords are never printed or audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from greentic_core.store import FileStore, StoreOptions, open_store, redact_url

DEPLOYER = "greentic.deployer.local-process"
PASSWORD = "hunter2-Zq9"


def cli(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}
    run_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "greentic_core", "--home", str(home), *args], env=run_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    proc = cli(home, "env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    assert proc.returncode == 0, proc.stderr
    return home


HOLDER = textwrap.dedent("""
    import sys
    from greentic_core.store import FileStore, StoreOptions, environments_root
    store = FileStore(environments_root(sys.argv[1]),
                      options=StoreOptions(actor="holder", command="greentic-deployer revision warm dev latest"))
    with store.transaction("dev"):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
""")


@pytest.fixture
def held(home: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding dev's lock until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_env_lock_shows_the_holder_of_a_held_lease(home: Path, held: subprocess.Popen[str]) -> None:
    proc = cli(home, "--json", "env", "lock", "dev")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["locked"] is True
    lease = doc["lease"]
    assert lease["holder"].startswith("holder@") and lease["pid"] == held.pid
    assert lease["command"] == "greentic-deployer revision warm dev latest"
    assert lease["acquired"] and lease["expires"] is None  # a flock dies with its holder: no expiry


def test_env_lock_says_free_when_nobody_holds_it(home: Path) -> None:
    doc = json.loads(cli(home, "--json", "env", "lock", "dev").stdout)
    assert doc == {"ok": True, "env_id": "dev", "store": f"file://{home}", "locked": False, "lease": None}


def test_a_writer_waits_lock_timeout_then_fails_naming_the_holder(home: Path, held: subprocess.Popen[str]) -> None:
    before = (home / "environments" / "dev" / "environment.json").read_bytes()
    proc = cli(home, "--lock-timeout", "0.5", "deployment", "add", "dev", "shop")
    assert proc.returncode == 3, proc.stderr
    first = proc.stderr.splitlines()[-2]
    assert first.startswith("error: environment 'dev' is locked by holder@") and f"(pid {held.pid}" in first
    assert "revision warm dev latest" in first and "waited 0.5s" in first
    assert (home / "environments" / "dev" / "environment.json").read_bytes() == before


def test_the_wait_shows_who_holds_the_lease(home: Path, held: subprocess.Popen[str]) -> None:
    proc = cli(home, "--lock-timeout", "1.5", "deployment", "add", "dev", "shop")
    assert proc.returncode == 3
    assert "waiting for the lease of environment dev, held by holder@" in proc.stderr


def test_unlock_force_cannot_break_a_file_lock_and_says_why(home: Path, held: subprocess.Popen[str]) -> None:
    proc = cli(home, "--json", "env", "unlock", "dev", "--force")
    assert proc.returncode == 5
    doc = json.loads(proc.stdout)
    assert "a file lock cannot be broken" in doc["message"] and f"kill {held.pid}" in doc["hint"]


def test_the_lock_file_is_empty_again_after_a_command(home: Path) -> None:
    assert cli(home, "deployment", "add", "dev", "shop").returncode == 0
    assert (home / "environments" / "dev" / ".lock").read_bytes() == b""


def test_unlock_needs_force(home: Path) -> None:
    proc = cli(home, "env", "unlock", "dev")
    assert proc.returncode == 2 and "needs --force" in proc.stderr


def test_greentic_store_selects_the_store(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    proc = cli(tmp_path / "home", "env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1",
               env={"GREENTIC_STORE": f"file://{shared}"})
    assert proc.returncode == 0, proc.stderr
    assert (shared / "environments" / "dev" / "environment.json").is_file()
    assert not (tmp_path / "home").exists()
    # --store wins over GREENTIC_STORE
    other = tmp_path / "other"
    doc = json.loads(cli(tmp_path / "home", "--json", "--store", f"file://{other}", "env", "list",
                         env={"GREENTIC_STORE": f"file://{shared}"}).stdout)
    assert doc["environments"] == []


def test_unknown_scheme_is_one_line_naming_the_plugin_to_install(tmp_path: Path) -> None:
    proc = cli(tmp_path, "--store", f"etcd://root:{PASSWORD}@127.0.0.1:2379/greentic", "env", "list")
    assert proc.returncode == 7
    assert proc.stderr.startswith("error: no store plugin for etcd:// URLs\nhint: ")
    assert PASSWORD not in proc.stderr + proc.stdout


def test_a_password_in_the_store_url_never_reaches_output_or_audit(tmp_path: Path) -> None:
    url = f"file://admin:{PASSWORD}@db.example/srv"
    proc = cli(tmp_path, "--json", "--debug", "--store", url, "env", "list")
    assert proc.returncode == 2 and PASSWORD not in proc.stdout + proc.stderr
    # the command line recorded in the audit log and the lease redacts any URL password
    home = tmp_path / "h"
    proc = cli(home, "env", "init", "dev", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1",
               "--name", f"postgresql://u:{PASSWORD}@h/db")
    assert proc.returncode == 0, proc.stderr
    audit = (home / "environments" / "dev" / "audit" / "events.jsonl").read_text()
    assert PASSWORD not in audit and "postgresql://u:***@h/db" in audit


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://bob:pw@db:5432/g?sslmode=require", "postgresql://bob:***@db:5432/g?sslmode=require"),
    ("postgresql://bob@db/g", "postgresql://bob@db/g"),
    ("s3://bucket/p?endpoint_url=http://127.0.0.1:9000&region=eu-west-1",
     "s3://bucket/p?endpoint_url=http://127.0.0.1:9000&region=eu-west-1"),
    ("s3://bucket/p?aws_secret_access_key=abc&region=x", "s3://bucket/p?aws_secret_access_key=***&region=x"),
    ("postgresql://bob:pw@[::1", "postgresql://***"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_open_store_defaults_to_the_file_store_at_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREENTIC_STORE", raising=False)
    store = open_store(None, home=tmp_path, options=StoreOptions())
    assert isinstance(store, FileStore) and store.root == tmp_path / "environments"
    assert store.state_dir("dev") == tmp_path / "environments" / "dev"  # provider files where they always were


def _broken_store_site(root: Path) -> Path:
    """A site directory with a store plugin for etcd:// whose module fails to import."""
    dist = root / "acme_store_etcd-0.3.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-store-etcd\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text("[greentic.stores]\netcd = acme_store_etcd:open_store\n")
    (root / "acme_store_etcd.py").write_text("raise ImportError('No module named etcd3')\n")
    return root


def test_a_broken_store_plugin_is_listed_with_its_reason_and_breaks_only_its_scheme(home: Path, tmp_path: Path) -> None:
    site = _broken_store_site(tmp_path / "site")
    env = {"PYTHONPATH": str(site), "GREENTIC_CACHE_DIR": str(tmp_path / "cache")}
    listed = cli(home, "--json", "plugins", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout)["stores"] if r["scheme"] == "etcd"]
    assert row == {"scheme": "etcd", "distribution": "acme-store-etcd", "version": "0.3.0", "status": "broken",
                   "reason": "ImportError: No module named etcd3"}
    assert cli(home, "env", "list", env=env).returncode == 0  # the default store does not load it
    used = cli(home, "--store", f"etcd://root:{PASSWORD}@127.0.0.1:2379", "env", "list", env=env)
    assert used.returncode == 7
    assert used.stderr.splitlines()[0] == ("error: store plugin acme-store-etcd 0.3.0 (etcd://) cannot be loaded: "
                                           "ImportError: No module named etcd3")
    assert PASSWORD not in used.stderr


def test_store_doctor_on_the_file_store(home: Path, tmp_path: Path) -> None:
    doc = json.loads(cli(home, "--json", "store", "doctor").stdout)
    assert doc["ok"] is True and [c["name"] for c in doc["checks"]] == ["reachable", "read", "write", "lease-clock"]
    assert doc["checks"][1]["message"] == "1 environment(s)"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the home should be")
    proc = cli(home, "--json", "--store", f"file://{blocked}", "store", "doctor")
    assert proc.returncode == 5
    assert json.loads(proc.stdout)["checks"][0]["status"] == "fail"
