"""CLI start-up (issue 17): wall time per command next to ``python -c "import pluggy"``.

    .venv/bin/python -m benchmarks.cli        (or: python benchmarks/cli.py; --runs N, --json)

Every command runs as a fresh ``greentic-deployer`` process (the console script of this
interpreter's environment) against a throw-away ``GREENTIC_HOME`` holding one local-process
environment with one deployment and two revisions. The baseline is an interpreter that imports
the plugin library and nothing else. All commands are interleaved round by round (so a burst of
load on a shared machine hits them all alike) after one warm-up round that fills the plugin
discovery cache and writes the bytecode of every module the commands import (as ``pip install``
does; ``PYTHONDONTWRITEBYTECODE`` is ignored here); each figure is the median of ``--runs`` (default 9) and the ratio is against
the baseline's median from the same run.

Goals: read commands at most 3x the baseline; the core's own work in a mutating command (its
``--record-only`` form: no provider call) at most 4x; ``traffic set`` on local-process (two
warm revisions behind the router, the split really applied) at most 0.35 s; a shell completion
(the console script answering bash's request, as the installed script calls it) under 0.15 s.
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
from datetime import datetime, timezone
from pathlib import Path

BIN = Path(sys.executable).parent / "greentic-deployer"
PLUGIN = "greentic.deployer.local-process"
READ_GOAL, MUTATE_GOAL, TRAFFIC_SET_GOAL_S, COMPLETION_GOAL_S = 3.0, 4.0, 0.35, 0.15


def _run(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _completion(g: list[str], words: str, cword: int) -> tuple[list[str], dict[str, str]]:
    """What bash's completion function runs: the console script with the completion variables."""
    return g, {"COMP_WORDS": words, "COMP_CWORD": str(cword), "_GREENTIC_DEPLOYER_COMPLETE": "bash_complete"}


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
    return took


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(runs: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="greentic-bench-cli-"))
    env = {**os.environ, "GREENTIC_HOME": str(home), "GREENTIC_CACHE_DIR": str(home / "cache")}
    env.pop("GREENTIC_STORE", None)
    # An installed package runs from compiled bytecode (pip compiles it at install time); with
    # PYTHONDONTWRITEBYTECODE set, every module edited since its .pyc was written would be
    # compiled from source in every measured process (about 3 ms per module), so the warm-up
    # round writes them.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    g = [str(BIN)]
    app = f"{sys.executable} -m greentic_local_process.sample_app"
    _run(g + ["env", "init", "dev", "--deployer", PLUGIN, "--listen", f"127.0.0.1:{_free_port()}"], env)
    _run(g + ["deployment", "add", "dev", "hello"], env)
    v1 = _run(g + ["revision", "stage", "dev", "hello", "--command", app], env).strip()
    _run(g + ["revision", "warm", "dev", v1], env)
    v2 = _run(g + ["revision", "stage", "dev", "hello", "--command", app], env).strip()
    _run(g + ["revision", "warm", "dev", v2], env)
    _run(g + ["traffic", "set", "dev", "hello", f"{v1}=10000"], env)
    # a second environment only for record-only changes, so they never touch the live router
    _run(g + ["env", "init", "rec", "--deployer", PLUGIN, "--listen", f"127.0.0.1:{_free_port()}"], env)
    _run(g + ["deployment", "add", "rec", "hello"], env)
    r1 = _run(g + ["revision", "stage", "rec", "hello", "--record-only", "--command", app], env).strip()
    _run(g + ["revision", "warm", "rec", r1, "--record-only"], env)
    r2 = _run(g + ["revision", "stage", "rec", "hello", "--record-only", "--command", app], env).strip()
    _run(g + ["revision", "warm", "rec", r2, "--record-only"], env)

    flip = {"set": 0, "rec": 0}

    def traffic_set(key: str, env_id: str, a: str, b: str, *extra: str):
        def argv() -> list[str]:  # alternate the weights so every run really changes the split
            flip[key] ^= 1
            weights = f"{a}=9000,{b}=1000" if flip[key] else f"{a}=1000,{b}=9000"
            return g + ["traffic", "set", env_id, "hello", weights, *extra]
        return argv

    commands: dict[str, tuple[str, object]] = {
        "import pluggy (baseline)": ("base", [sys.executable, "-c", "import pluggy"]),
        "--version": ("read", g + ["--version"]),
        "--help": ("read", g + ["--help"]),
        "plugins list": ("read", g + ["plugins", "list"]),
        "env list": ("read", g + ["env", "list"]),
        "env show dev": ("read", g + ["env", "show", "dev"]),
        "revision list dev": ("read", g + ["revision", "list", "dev"]),
        "--json revision list dev": ("read", g + ["--json", "revision", "list", "dev"]),
        "revision show dev latest": ("read", g + ["revision", "show", "dev", "latest"]),
        "traffic show dev": ("read", g + ["traffic", "show", "dev"]),
        "traffic set --record-only": ("mutate", traffic_set("rec", "rec", r1, r2, "--record-only")),
        "revision stage --record-only": ("mutate", g + ["revision", "stage", "rec", "hello", "--record-only",
                                                        "--command", app]),
        "traffic set (local-process)": ("live", traffic_set("set", "dev", v1, v2)),
        "complete: command name": ("complete", _completion(g, "greentic-deployer rev", 1)),
        "complete: environment": ("complete", _completion(g, "greentic-deployer revision list ", 3)),
        "complete: revision prefix": ("complete", _completion(g, f"greentic-deployer revision show dev {v1[:4]}", 4)),
        "complete: deployment": ("complete", _completion(g, "greentic-deployer traffic set dev ", 4)),
        "complete: plugin name": ("complete", _completion(g, "greentic-deployer plugins show ", 3)),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for round_ in range(runs + 1):  # round 0 warms caches and is not counted
            for name, (_, argv) in commands.items():
                argv = argv() if callable(argv) else argv
                extra: dict[str, str] = {}
                if isinstance(argv, tuple):
                    argv, extra = argv
                took = _timed(argv, {**env, **extra})
                if round_:
                    times[name].append(took)
    finally:
        _cleanup(home)
    base = statistics.median(times["import pluggy (baseline)"])
    rows = []
    for name, (kind, _) in commands.items():
        median = statistics.median(times[name])
        if kind == "read":
            goal, ok = f"<= {READ_GOAL:g}x", median / base <= READ_GOAL
        elif kind == "mutate":
            goal, ok = f"<= {MUTATE_GOAL:g}x", median / base <= MUTATE_GOAL
        elif kind == "live":
            goal, ok = f"<= {TRAFFIC_SET_GOAL_S:g} s", median <= TRAFFIC_SET_GOAL_S
        elif kind == "complete":
            goal, ok = f"< {COMPLETION_GOAL_S:g} s", median < COMPLETION_GOAL_S
        else:
            goal, ok = "", True
        rows.append({"command": name, "kind": kind, "median_ms": median * 1e3, "ratio": median / base,
                     "min_ms": min(times[name]) * 1e3, "goal": goal, "ok": ok})
    return {"runs": runs, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows,
            "goals_met": all(r["ok"] for r in rows),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _cleanup(home: Path) -> None:
    """Stop the revision processes and routers the local-process provider started."""
    try:
        from greentic_local_process.sandbox import cleanup
    except ImportError:
        return
    for env_dir in (home / "environments").glob("*"):  # the file store's state_dir is the env's directory
        try:
            cleanup(env_dir, 2.0)
        except Exception as exc:  # report and go on: the other environment still needs stopping
            print(f"cleanup of {env_dir}: {exc}", file=sys.stderr)


def render(doc: dict) -> str:
    lines = [f"# CLI start-up, {doc['date']}; python {doc['python']} on {doc['machine']}, {doc['cpus']} CPUs; "
             f"median of {doc['runs']} fresh processes, interleaved; load average "
             f"{doc['load_average'][0]:.1f}",
             f"{'command':<30} {'median':>9} {'min':>9} {'ratio':>7}  goal"]
    for r in doc["rows"]:
        verdict = "" if not r["goal"] else ("ok" if r["ok"] else "MISSED")
        lines.append(f"{r['command']:<30} {r['median_ms']:>7.1f}ms {r['min_ms']:>7.1f}ms {r['ratio']:>6.2f}x  "
                     f"{r['goal']} {verdict}".rstrip())
    lines.append(f"goals: {'met' if doc['goals_met'] else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="measured rounds (default 9)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not BIN.exists():
        print(f"missing {BIN}: run `python3 dev.py setup` first", file=sys.stderr)
        return 2
    doc = measure(args.runs)
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
