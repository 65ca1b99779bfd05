"""Sustained load (reliability issue): the local-process router at half its maximum rate.

    .venv/bin/python -m benchmarks.load        (or: python benchmarks/load.py; --json, --quick, --duration S)

Everything is real and on 127.0.0.1: an environment on the local-process provider (a temporary
store), three revisions of ``greentic_local_process.sample_app`` (real processes), the real
router, and every change made through the operator exactly as the CLI makes it.

1. **Maximum rate**: a closed-loop load generator (a separate process: asyncio + aiohttp,
   64 concurrent keep-alive requests) for 5 s against the router, split A/B/C = 40/40/20.
2. **Sustained load** at half that rate for 60 s (``--duration``): an open-loop generator
   (requests started on a fixed schedule, whatever the answers do) while the controller moves
   the split between A and B every 3 s (``traffic set`` through the operator: the router reloads
   its table under load) and, in the middle, takes C out of the split and **drains** it
   (``revision drain``: waits for C's requests in flight, stops its process).
   Every request must succeed (2xx); any exception or other status counts as failed.
3. **Memory**: the router's resident set (``VmRSS`` of ``/proc/<pid>/status``) sampled every
   second of phase 2; its start (after phase 1's warm-up) and end are reported, and it counts as
   flat when the end is within 10 % (or 8 MiB) of the start. The router pid must not change.

Exit code 0 when nothing failed and the memory stayed flat, 1 otherwise. ``--quick``: 2 s of
maximum rate and 15 s of sustained load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MAX_SECONDS = 5.0
SUSTAIN_SECONDS = 60.0
SPLIT_EVERY = 3.0
CONCURRENCY = 64
RSS_TOLERANCE = 0.10
RSS_SLACK_KB = 8 * 1024
PLUGIN = "greentic.deployer.local-process"


# --------------------------------------------------------------------------- the load generator (own process)


async def _closed_loop(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import aiohttp

    done: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def worker() -> None:
            while time.monotonic() < deadline:
                try:
                    async with session.get(url) as response:
                        await response.read()
                        done["ok" if 200 <= response.status < 300 else f"status {response.status}"] += 1
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    done[type(exc).__name__] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.monotonic() - started
    total = sum(done.values())
    return {"requests": total, "seconds": took, "rps": total / took, "outcomes": dict(done)}


async def _open_loop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    import aiohttp

    outcomes: Counter[str] = Counter()
    by_revision: Counter[str] = Counter()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one() -> None:
            started = loop.time()
            try:
                async with session.get(url) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
                    outcomes["ok" if ok else f"status {response.status}"] += 1
                    by_revision[response.headers.get("X-Greentic-Revision", "?")] += 1
            except Exception as exc:  # noqa: BLE001 - counted, reported
                outcomes[type(exc).__name__] += 1
            latencies.append(loop.time() - started)

        pending: set[asyncio.Task[None]] = set()
        start = loop.time()
        n = 0
        while True:
            due = start + n / rate
            if due - start >= seconds:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        sent_in = loop.time() - start
        await asyncio.gather(*pending)
    latencies.sort()
    total = sum(outcomes.values())

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"offered_rps": rate, "requests": total, "sent_in_seconds": sent_in, "achieved_rps": total / sent_in,
            "outcomes": dict(outcomes), "failed": total - outcomes["ok"], "by_revision": dict(by_revision),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def _loader_main(argv: list[str]) -> None:
    mode, url = argv[0], argv[1]
    if mode == "max":
        result = asyncio.run(_closed_loop(url, float(argv[2]), int(argv[3])))
    else:
        result = asyncio.run(_open_loop(url, float(argv[2]), float(argv[3])))
    print(json.dumps(result), flush=True)


def _loader(*args: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.load", "--loader", *map(str, args)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)


# --------------------------------------------------------------------------- the controller


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(max_seconds: float, sustain_seconds: float) -> dict[str, Any]:
    from greentic_core import Workload
    from greentic_core.operator import Operator
    from greentic_core.registry import Registry
    from greentic_core.store import Store
    from greentic_local_process import router_control
    from greentic_local_process.sandbox import cleanup

    report: dict[str, Any] = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="greentic-load-") as tmp:
        root = Path(tmp)
        listen = f"127.0.0.1:{_free_port()}"
        store = Store(root / "home" / "environments")
        op = Operator(store, Registry(cache_dir=root / "cache"), actor="bench", command="benchmarks.load")
        state = store.env_dir("load")
        try:
            op.init_env("load", PLUGIN, answers={"listen_addr": listen, "warm_timeout_seconds": 30,
                                                 "stop_grace_seconds": 5}, listen_addr=listen)
            dep = op.add_deployment("load", "web").deployment_id
            workload = Workload(command=(sys.executable, "-m", "greentic_local_process.sample_app"))
            a, b, c = (op.stage("load", dep, workload=workload, drain_seconds=10).revision.revision_id
                       for _ in range(3))
            for rid in (a, b, c):
                op.warm("load", rid)
            op.traffic_set("load", dep, [(a, 4000), (b, 4000), (c, 2000)])
            router = router_control.running_router(state)
            assert router is not None
            pid = router["pid"]
            url = f"http://{listen}/"

            # 1. maximum rate (closed loop), which also warms the router up
            proc = _loader("max", url, max_seconds, CONCURRENCY)
            out, _ = proc.communicate(timeout=max_seconds + 120)
            report["max"] = json.loads(out)
            rate = report["max"]["rps"] / 2
            report["rate"] = rate

            # 2. sustained load at half of it, split changes every few seconds, a drain in the middle
            rss: list[tuple[float, int]] = []
            events: list[dict[str, Any]] = []
            proc = _loader("rate", url, rate, sustain_seconds)
            started = time.monotonic()
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    value = _rss_kb(pid)
                    if value is not None:
                        rss.append((round(time.monotonic() - started, 1), value))
                    stop.wait(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            drained = False
            step = 0
            while time.monotonic() - started < sustain_seconds - 1:
                time.sleep(SPLIT_EVERY)
                elapsed = time.monotonic() - started
                step += 1
                weight_a = (3000, 7000)[step % 2]
                if not drained and elapsed >= sustain_seconds / 2:
                    op.traffic_set("load", dep, [(a, weight_a), (b, 10000 - weight_a), (c, 0)])
                    t0 = time.monotonic()
                    op.drain("load", c)
                    events.append({"at": round(elapsed, 1), "what": "drain C",
                                   "seconds": round(time.monotonic() - t0, 2)})
                    drained = True
                    continue
                entries = [(a, weight_a), (b, 10000 - weight_a - (0 if drained else 2000))]
                if not drained:
                    entries.append((c, 2000))
                t0 = time.monotonic()
                op.traffic_set("load", dep, entries)
                events.append({"at": round(elapsed, 1), "what": "split " + "/".join(str(w) for _, w in entries),
                               "seconds": round(time.monotonic() - t0, 3)})
            out, _ = proc.communicate(timeout=sustain_seconds + 120)
            stop.set()
            sampler.join(5)
            report["sustained"] = json.loads(out)
            report["events"] = events
            report["split_changes"] = sum(e["what"].startswith("split") for e in events)
            report["drains"] = sum(e["what"].startswith("drain") for e in events)
            after = router_control.running_router(state)
            report["router_pid_unchanged"] = after is not None and after["pid"] == pid
            report["rss_kb"] = {"start": rss[0][1] if rss else None, "end": rss[-1][1] if rss else None,
                                "max": max(v for _, v in rss) if rss else None, "samples": len(rss)}
            report["revisions"] = {"A": a, "B": b, "C": c}
            report["c_lifecycle"] = store.load("load").revision(c).lifecycle.value
        finally:
            cleanup(state, 5.0)
    start_kb, end_kb = report["rss_kb"]["start"], report["rss_kb"]["end"]
    report["rss_flat"] = bool(start_kb and end_kb and end_kb - start_kb <= max(start_kb * RSS_TOLERANCE, RSS_SLACK_KB))
    report["load_after"] = os.getloadavg()[0]
    report["ok"] = (report["sustained"]["failed"] == 0 and report["rss_flat"] and report["router_pid_unchanged"]
                    and report["drains"] == 1 and report["c_lifecycle"] == "inactive")
    return report


def render(r: dict[str, Any]) -> str:
    s = r["sustained"]
    rss = r["rss_kb"]
    by_rev = {name: s["by_revision"].get(rid, 0) for name, rid in r["revisions"].items()}
    return "\n".join([
        f"# load benchmark, {r['date']}; python {r['python']} on {r['machine']}, {r['cpus']} CPUs; "
        f"load average before {r['load_before']:.1f}, after {r['load_after']:.1f}",
        f"(1) max rate (closed loop, {CONCURRENCY} concurrent, {r['max']['seconds']:.1f} s): "
        f"{r['max']['rps']:,.0f} req/s  outcomes {r['max']['outcomes']}",
        f"(2) sustained {s['sent_in_seconds']:.0f} s at {r['rate']:,.0f} req/s offered (half the max): "
        f"{s['requests']:,} requests, achieved {s['achieved_rps']:,.0f} req/s, failed {s['failed']} "
        f"(outcomes {s['outcomes']}); p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.0f} ms",
        f"    {r['split_changes']} split changes (every {SPLIT_EVERY:g} s) and {r['drains']} drain of C in the middle "
        f"(C now {r['c_lifecycle']}); served by A {by_rev['A']:,}, B {by_rev['B']:,}, C {by_rev['C']:,}",
        f"(3) router RSS (VmRSS, pid {'unchanged' if r['router_pid_unchanged'] else 'CHANGED'}): start "
        f"{rss['start'] / 1024:.1f} MiB, end {rss['end'] / 1024:.1f} MiB, max {rss['max'] / 1024:.1f} MiB over "
        f"{rss['samples']} samples: {'flat' if r['rss_flat'] else 'GREW'}",
        f"verdict: {'ok (zero failed requests, memory flat)' if r['ok'] else 'FAILED'}",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loader"]:
        _loader_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="2 s of max rate and 15 s of sustained load")
    parser.add_argument("--duration", type=float, default=None, help=f"sustained seconds (default {SUSTAIN_SECONDS:g})")
    args = parser.parse_args(argv)
    max_seconds = 2.0 if args.quick else MAX_SECONDS
    sustain = args.duration or (15.0 if args.quick else SUSTAIN_SECONDS)
    report = run(max_seconds, sustain)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
