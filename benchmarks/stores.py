"""Store backends (issue 14): file vs PostgreSQL vs S3, ratios to the file backend.

    .venv/bin/python -m benchmarks.stores      (or: python benchmarks/stores.py; --json, --quick)

Starts a throw-away PostgreSQL cluster (``greentic_store_postgres.testing.TempCluster``, with
fsync on, as the file store fsyncs) and a moto S3 server over HTTP on loopback
(``greentic_store_s3.testing.MotoServer``), then measures each backend in the same run:

* **load**: median wall time of ``store.load`` of a small environment (2 revisions);
* **mutation**: median wall time (and, for S3, HTTP requests) of a full ``traffic set`` through the operator
  (``Operator.traffic_set``, record-only: lease, load, engine, compare-and-swap save with its
  audit event, backup and runtime-config, release; no provider, so the store's cost is what
  is measured);
* **8 writers**: 8 processes x 25 ``traffic set`` commands through the CLI in-process
  (``tests/store_writer.py``), changes per second;
* **1k load**: median wall time of ``store.load`` of a 1,000-revision environment.

Goals: PostgreSQL mutation <= 1.5x file, S3 (moto on loopback) <= 3x; 1k-revision load <= 1.2x
file on both (decoding dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
WRITER = REPO / "tests" / "store_writer.py"
GOALS = {("postgresql", "mutation"): 1.5, ("s3", "mutation"): 3.0, ("postgresql", "load_1k"): 1.2,
         ("s3", "load_1k"): 1.2}
DEPLOYER = "greentic.deployer.local-process"


def median_ms(fn, n: int) -> float:
    fn()  # warm up (connections, caches)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def count_requests(store) -> list[int] | None:
    """A one-element counter of the HTTP requests an S3 store sends from now on (retries
    included; botocore's ``before-send`` event), or None for a store that is not S3."""
    client = getattr(store, "_s3", None)
    if client is None:
        return None
    counter = [0]

    def sent(**_: object) -> None:
        counter[0] += 1

    client.meta.events.register("before-send.s3", sent)
    return counter


def cli(url: str, home: Path, env: dict[str, str], *args: str) -> dict:
    run_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}, **env,
               "GREENTIC_STORE": url, "GREENTIC_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "greentic_core", "--json", *args], env=run_env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout)


def measure(name: str, url: str, env: dict[str, str], workdir: Path, quick: bool) -> dict[str, float]:
    from benchmarks.spec_scale import build_environment
    from greentic_core.operator import Operator
    from greentic_core.registry import Registry
    from greentic_core.store import StoreOptions, open_store

    home = workdir / f"home-{name}"
    os.environ.update(env)
    cli(url, home, env, "env", "init", "small", "--deployer", DEPLOYER, "--listen", "127.0.0.1:1")
    cli(url, home, env, "deployment", "add", "small", "shop")
    a = cli(url, home, env, "revision", "stage", "small", "shop", "--record-only", "--command", "true")["revision_id"]
    b = cli(url, home, env, "revision", "stage", "small", "shop", "--record-only", "--command", "true")["revision_id"]
    for rid in (a, b):
        cli(url, home, env, "revision", "warm", "small", rid, "--record-only")
    cli(url, home, env, "traffic", "set", "small", "shop", f"{a}=10000", "--record-only")

    store = open_store(url, home=home, options=StoreOptions(actor="bench", command="benchmark", lock_timeout=600))
    n = 30 if quick else 200
    figures = {"load": median_ms(lambda: store.load("small"), n)}
    operator = Operator(store, Registry(), actor="bench", command="benchmark")
    weights = iter(range(1, 10**6))

    def mutation() -> None:
        w = next(weights) % 9999 + 1
        operator.traffic_set("small", "shop", f"{a}={w},{b}={10000 - w}", record_only=True)

    requests = count_requests(store)
    n_mutations = 20 if quick else 100
    figures["mutation"] = median_ms(mutation, n_mutations)
    if requests is not None:
        figures["requests_per_mutation"] = requests[0] / (n_mutations + 1)  # median_ms warms up once

    writers, changes = 8, (5 if quick else 25)
    barrier = Path(tempfile.mkdtemp(dir=workdir))
    run_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")}, **env,
               "GREENTIC_STORE": url, "GREENTIC_HOME": str(home), "PYTHONPATH": str(WRITER.parent)}
    procs = [subprocess.Popen([sys.executable, str(WRITER), "small", str(i), str(changes), str(barrier),
                               str(barrier / f"r{i}.json"), a, b], env=run_env) for i in range(writers)]
    while len(list(barrier.glob("ready-*"))) < writers:
        time.sleep(0.01)
    start = time.perf_counter()
    (barrier / "go").touch()
    for proc in procs:
        proc.wait(timeout=900)
    elapsed = time.perf_counter() - start
    done = sum(1 for i in range(writers) for r in json.loads((barrier / f"r{i}.json").read_text()) if r["code"] == 0)
    figures["writers_per_s"] = done / elapsed
    figures["writers_ok"] = done
    figures["writers_total"] = writers * changes

    big = build_environment(1000)
    store.create(big, audit_event={"actor": "bench", "command": "benchmark", "verb": "bench.create", "outcome": "ok"})
    figures["load_1k"] = median_ms(lambda: store.load(big.environment_id), 5 if quick else 20)
    store.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    from greentic_store_postgres.testing import TempCluster
    from greentic_store_s3.testing import CREDENTIALS, MotoServer

    workdir = Path(tempfile.mkdtemp(prefix="greentic-bench-stores-"))
    cluster, moto = TempCluster(fsync=True), MotoServer()
    try:
        backends = {
            "file": (f"file://{workdir / 'files'}", {}),
            "postgresql": (cluster.create_database("bench"), {}),
            "s3": (moto.url(), dict(CREDENTIALS)),
        }
        from greentic_core.store import StoreOptions, open_store

        open_store(backends["postgresql"][0], options=StoreOptions()).init()
        results = {name: measure(name, url, env, workdir, args.quick) for name, (url, env) in backends.items()}
    finally:
        cluster.stop()
        moto.stop()
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "backends": results,
              "ratios": {}, "goals": {}}
    for name in ("postgresql", "s3"):
        for metric in ("load", "mutation", "load_1k"):
            report["ratios"][f"{name}.{metric}"] = results[name][metric] / results["file"][metric]
        report["ratios"][f"{name}.writers_per_s"] = results[name]["writers_per_s"] / results["file"]["writers_per_s"]
    for (name, metric), goal in GOALS.items():
        ratio = report["ratios"][f"{name}.{metric}"]
        report["goals"][f"{name}.{metric}"] = {"goal": goal, "ratio": ratio, "ok": ratio <= goal}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'backend':<12}{'load ms':>10}{'mutation ms':>13}{'8 writers /s':>14}{'1k load ms':>12}")
        for name, f in results.items():
            sent = f" {f['requests_per_mutation']:.1f} requests/mutation" if "requests_per_mutation" in f else ""
            print(f"{name:<12}{f['load']:>10.2f}{f['mutation']:>13.2f}{f['writers_per_s']:>14.1f}{f['load_1k']:>12.1f}"
                  f"   ({f['writers_ok']}/{f['writers_total']} writer changes ok){sent}")
        for key, goal in report["goals"].items():
            print(f"goal {key} <= {goal['goal']}x file: {goal['ratio']:.2f}x {'ok' if goal['ok'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
