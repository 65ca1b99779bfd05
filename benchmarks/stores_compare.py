"""The S3 store's mutation, two checkouts interleaved, with the file store as the yardstick.

    git worktree add /tmp/greentic-before <commit>
    .venv/bin/python -m benchmarks.stores_compare /tmp/greentic-before [--rounds 16]

``benchmarks/stores.py`` measures each backend once, one after the other; on a shared machine
whose load changes by the minute its ratios move with the load. This one keeps three worker
processes alive (the S3 store of the other checkout, the S3 store of this one, the file store of
this one; both S3 stores on one moto server) and asks each in turn for 25 record-only
``traffic set``s through the operator, ``--rounds`` times, so all three see the same load.
Prints the medians, the ratios to the file store and the HTTP requests per mutation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKER = r'''
import json, os, statistics, sys, tempfile, time
from pathlib import Path
from greentic_store_s3.testing import CREDENTIALS
os.environ.update(CREDENTIALS)
from benchmarks.stores import cli
from greentic_core.operator import Operator
from greentic_core.registry import Registry
from greentic_core.store import StoreOptions, open_store

url, home, env = sys.argv[1], Path(tempfile.mkdtemp()), dict(CREDENTIALS)
cli(url, home, env, "env", "init", "small", "--deployer", "greentic.deployer.local-process", "--listen", "127.0.0.1:1")
cli(url, home, env, "deployment", "add", "small", "shop")
a = cli(url, home, env, "revision", "stage", "small", "shop", "--record-only", "--command", "true")["revision_id"]
b = cli(url, home, env, "revision", "stage", "small", "shop", "--record-only", "--command", "true")["revision_id"]
for rid in (a, b):
    cli(url, home, env, "revision", "warm", "small", rid, "--record-only")
store = open_store(url, home=home, options=StoreOptions(actor="bench", command="benchmark", lock_timeout=600))
operator = Operator(store, Registry(), actor="bench", command="benchmark")
sent = [0]
if hasattr(store, "_s3"):
    store._s3.meta.events.register("before-send.s3", lambda **_: sent.__setitem__(0, sent[0] + 1))
weights = iter(range(1, 10**6))

def mutation():
    w = next(weights) % 9999 + 1
    operator.traffic_set("small", "shop", f"{a}={w},{b}={10000 - w}", record_only=True)

mutation()
print("ready", flush=True)
for line in sys.stdin:
    sent[0], times = 0, []
    for _ in range(int(line)):
        start = time.perf_counter()
        mutation()
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "requests": sent[0] / int(line)}), flush=True)
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="a checkout of the commit to compare with (git worktree add)")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from greentic_store_s3.testing import MotoServer

    old = args.old.resolve()
    moto = MotoServer()
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        paths = {"old": [old, old / "plugins" / "store_s3", old / "plugins" / "store_postgres"], "new": [REPO]}
        for name, checkout, url in (("S3, old", "old", moto.url()), ("S3, new", "new", moto.url()),
                                    ("file", "new", f"file://{tempfile.mkdtemp(prefix='greentic-compare-')}")):
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("GREENTIC_")},
                   "PYTHONPATH": os.pathsep.join(map(str, paths[checkout]))}
            proc = subprocess.Popen([sys.executable, "-c", WORKER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, env=env, cwd=paths[checkout][0])
            procs[name] = proc
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", f"{name} did not start"
        times: dict[str, list[float]] = {name: [] for name in procs}
        requests: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, proc in procs.items():
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("25\n")
                proc.stdin.flush()
                answer = json.loads(proc.stdout.readline())
                times[name] += answer["times"]
                requests[name] = answer["requests"]
        medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
        print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds x 25 mutations each, interleaved")
        for name, median in medians.items():
            extra = f", {requests[name]:.1f} requests/mutation" if name != "file" else ""
            print(f"{name:<8} median {median:6.2f} ms  {median / medians['file']:5.2f}x file{extra}")
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
