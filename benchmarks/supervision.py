"""Supervision (issue 15): time from SIGKILL to serving again, for a revision and for the router.

    .venv/bin/python -m benchmarks.supervision      (--kills N, default 20; --json)

A throw-away local-process environment (its own GREENTIC_HOME, a free loopback port), one
sample-app revision at 100% behind the router, driven through the real CLI. Then, N times each:

- **revision**: SIGKILL the revision's process, then GET / through the router every 5 ms until
  an answer comes from a new process (the sample app names its pid): that time is the outage;
- **router**: SIGKILL the router, then GET / until it answers again.

No command is run between the kill and the answer: the environment's supervisor brings the
process back. Kills are spaced by the supervisor's stability time (10 s up resets its crash-loop
count), so each is a first failure, restarted at once, not a crash loop being backed off: a
run takes about 20 s per kill. Prints p50, p95 and max per kind (goal: p95 <= 3 s). Everything
it started is stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_P95 = 3.0
from greentic_local_process.supervisor import STABLE_SECONDS  # noqa: E402
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(home: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "greentic_core", "--home", str(home), "--json", *args],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"greentic-deployer {' '.join(args)} failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    return json.loads(out.stdout)


def get(url: str) -> dict[str, Any] | None:
    try:
        with NO_PROXY.open(url, timeout=2) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def outage(kill_pid: int, url: str, served_again: Any, limit: float = 30.0) -> float:
    os.kill(kill_pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < limit:
        answer = get(url)
        if answer is not None and served_again(answer):
            return time.monotonic() - killed
        time.sleep(0.005)
    raise RuntimeError(f"not served again within {limit:g}s")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_s": round(statistics.median(ordered), 3), "p95_s": round(p95, 3), "max_s": round(ordered[-1], 3),
            "n": len(ordered)}


def run(kills: int) -> dict[str, Any]:
    from greentic_local_process.sandbox import cleanup

    home = Path(tempfile.mkdtemp(prefix="greentic-supervision-bench-"))
    state = home / "environments" / "bench"
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}/"
    try:
        cli(home, "env", "init", "bench", "--deployer", "greentic.deployer.local-process", "--listen", listen)
        cli(home, "deployment", "add", "bench", "web")
        rid = cli(home, "revision", "stage", "bench", "web", "--command",
                  shlex.join([sys.executable, "-m", "greentic_local_process.sample_app"]))["revision_id"]
        cli(home, "revision", "warm", "bench", rid)
        cli(home, "traffic", "set", "bench", "web", f"{rid}=10000")
        revision: list[float] = []
        for _ in range(kills):
            pid = read_json(state / "revisions" / rid / "process.json")["pid"]
            revision.append(outage(pid, url, lambda answer, old=pid: answer.get("pid") != old))
            time.sleep(STABLE_SECONDS + 0.5)  # a first failure each time, not a crash loop
        router: list[float] = []
        for _ in range(kills):
            pid = read_json(state / "router" / "router.json")["pid"]

            def new_router(_answer: dict[str, Any], old: int = pid) -> bool:
                try:
                    return read_json(state / "router" / "router.json")["pid"] != old
                except (OSError, ValueError, KeyError):
                    return False

            router.append(outage(pid, url, new_router))
            time.sleep(STABLE_SECONDS + 0.5)
        restarts = read_json(state / "supervisor" / "status.json")
        return {"kills": kills, "revision": summary(revision), "router": summary(router),
                "revision_restarts": restarts["revisions"][rid]["restarts"],
                "router_restarts": restarts["router"]["restarts"], "goal_p95_s": GOAL_P95}
    finally:
        if state.exists():
            cleanup(state, 2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kills of each kind (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 kills of each kind")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    report = run(5 if args.quick else args.kills)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"# supervision benchmark: {report['kills']} SIGKILLs of each kind, time until served again")
        for kind in ("revision", "router"):
            r = report[kind]
            verdict = "ok" if r["p95_s"] <= GOAL_P95 else "MISSED"
            print(f"{kind:<9} p50 {r['p50_s']:.3f} s  p95 {r['p95_s']:.3f} s  max {r['max_s']:.3f} s  "
                  f"(goal p95 <= {GOAL_P95:g} s: {verdict})")
        print(f"restarts recorded by the supervisor: revision {report['revision_restarts']}, "
              f"router {report['router_restarts']}")
    ok = all(report[k]["p95_s"] <= GOAL_P95 for k in ("revision", "router"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
