"""Plugin registry (issue 3): CLI start-up, discovery at scale, per-call overhead of a verb.

    .venv/bin/python -m benchmarks.registry        (or: python benchmarks/registry.py)

(a) Wall time of ``python -m greentic_core plugins list`` next to ``python -c "import pluggy"``
    (the baseline: an interpreter that loads the plugin library and nothing else), median of
    7 fresh processes each (interleaved), after one warm-up run that fills the discovery
    cache. The processes' CPU time (user+sys) is printed too: it moves less with the load of
    a shared machine. Goal: wall-time ratio <= 1.5x.
(b) ``registry.discover()`` with 2,000 extra synthetic distributions (``*.dist-info`` with
    METADATA, RECORD and 2-3 entry-point groups, 1 in 100 declaring a ``greentic.deployers``
    entry point) on ``sys.path``, timed inside fresh subprocesses: cold (empty cache, so a full
    ``importlib.metadata`` scan plus the cache write) and cached. Median of 7 processes each.
    Goal: cached <= 5 ms.
(c) Per-call cost of a verb through ``BoundDeployer.warm`` (preconditions, pluggy dispatch to
    the one bound provider, result type check) against a direct call of the same hook
    function, with ``timeit`` (best of 7 repeats). Goal: overhead <= 15 us.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "upstream-example.json"
REVISION = "01JX3M0A1B2C3D4E5F6G7H8J9K"
GROUP = "greentic.deployers"

BENCH_PLUGIN = '''
from greentic_core import (ArchiveOutcome, DeployerDescriptor, DrainOutcome, Observation, StageOutcome,
                           TrafficSplitOutcome, WarmOutcome, hookimpl)

WARMED = WarmOutcome()


@hookimpl
def greentic_deployer_descriptor():
    return DeployerDescriptor(path="bench.deployer.noop", version="1.0.0", requires_core=">=0.1,<1")


@hookimpl
def greentic_stage_revision(revision_id):
    return StageOutcome()


@hookimpl
def greentic_warm_revision(env, revision_id, answers, state_dir):
    return WARMED


@hookimpl
def greentic_drain_revision(revision_id):
    return DrainOutcome()


@hookimpl
def greentic_archive_revision(revision_id):
    return ArchiveOutcome()


@hookimpl
def greentic_apply_traffic_split(env, deployment_id):
    split = env.split_for(deployment_id)
    return TrafficSplitOutcome(applied_deployment_id=deployment_id, applied_entries=split.entries)


@hookimpl
def greentic_observe():
    return Observation()
'''


# --------------------------------------------------------------------------- helpers


def write_dist(root: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
               modules: dict[str, str] | None = None) -> None:
    """A pip-style installed distribution (the same layout as tests/plugin_factory.make_dist)."""
    for filename, source in (modules or {}).items():
        (root / filename).write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in entry_points.items()
    ))
    (info / "INSTALLER").write_text("bench\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/entry_points.txt,,\n{info.name}/RECORD,,\n")


def synthetic_site(root: Path, count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        groups = {"console_scripts": {f"synthetic-{i}": f"synthetic_{i}.cli:main"},
                  "synthetic.plugins": {f"p{i}": f"synthetic_{i}.plugin"}}
        if i % 3 == 0:
            groups["pytest11"] = {f"synthetic_{i}": f"synthetic_{i}.pytest_plugin"}
        if i % 100 == 0:
            groups[GROUP] = {f"synthetic.deployer.d{i}": f"synthetic_{i}.hooks"}
        write_dist(root, f"synthetic-dist-{i}", "1.0.0", groups)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "GREENTIC_DEPLOYERS", "GREENTIC_DISABLE_DEPLOYERS")}
    env.update(extra)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall_ms(argv: list[str], env: dict[str, str], runs: int, cpu: list[float] | None = None) -> list[float]:
    """Wall times of ``runs`` fresh processes; their CPU times (user+sys) go to ``cpu``."""
    times = []
    for _ in range(runs):
        cpu_before, start = _children_cpu(), time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
        if cpu is not None:
            cpu.append((_children_cpu() - cpu_before) * 1000)
    return times


# --------------------------------------------------------------------------- (a) start-up


def bench_startup(runs: int, scratch: Path) -> dict[str, float]:
    env = child_env(GREENTIC_CACHE_DIR=str(scratch / "cache-a"), PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "greentic_core", "plugins", "list"]
    base = [sys.executable, "-c", "import pluggy"]
    wall_ms(cli, env, 1)  # warm-up: page cache and the discovery cache
    wall_ms(base, env, 1)
    cli_times, base_times, cli_cpu, base_cpu = [], [], [], []
    for _ in range(runs):  # interleaved so load changes hit both alike
        cli_times += wall_ms(cli, env, 1, cli_cpu)
        base_times += wall_ms(base, env, 1, base_cpu)
    cli_ms, base_ms = statistics.median(cli_times), statistics.median(base_times)
    return {"cli_ms": cli_ms, "baseline_ms": base_ms, "ratio": cli_ms / base_ms,
            "cli_cpu_ms": statistics.median(cli_cpu), "baseline_cpu_ms": statistics.median(base_cpu)}


# --------------------------------------------------------------------------- (b) discovery


DISCOVER_CHILD = """
import sys, time
from pathlib import Path
import greentic_core.registry as r
start = time.perf_counter()
found = r.discover(r.GROUP, cache_dir=Path(sys.argv[1]))
took = (time.perf_counter() - start) * 1000
print(f"{took:.4f} {len(found)}")
"""


def bench_discovery(count: int, runs: int, scratch: Path) -> dict[str, float]:
    site = scratch / "synthetic-site"
    synthetic_site(site, count)
    env = child_env(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))

    def one(cache_dir: Path) -> tuple[float, int]:
        out = subprocess.run([sys.executable, "-c", DISCOVER_CHILD, str(cache_dir)], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        return float(out[0]), int(out[1])

    one(scratch / "warm-up-cache")  # page cache
    cold, cached, found = [], [], 0
    for i in range(runs):
        took, found = one(scratch / f"cold-cache-{i}")  # a new, empty cache directory
        cold.append(took)
    one(scratch / "hot-cache")
    for _ in range(runs):
        cached.append(one(scratch / "hot-cache")[0])
    return {"dists": count, "found": found, "cold_ms": statistics.median(cold),
            "cached_ms": statistics.median(cached)}


# --------------------------------------------------------------------------- (c) per-call


def bench_call(scratch: Path) -> dict[str, float]:
    from greentic_core.codec import load_environment
    from greentic_core.registry import Registry

    site = scratch / "bench-site"
    site.mkdir()
    write_dist(site, "bench-deployer-noop", "1.0.0", {GROUP: {"bench.deployer.noop": "bench_noop_hooks"}},
               {"bench_noop_hooks.py": BENCH_PLUGIN})
    sys.path.insert(0, str(site))
    try:
        registry = Registry(cache_dir=scratch / "cache-c")
        deployer = registry.bind("bench.deployer.noop@1.0.0", {}, scratch / "state")
        env = load_environment(FIXTURE.read_bytes())
        hook = registry.record("bench.deployer.noop").plugin.greentic_warm_revision
        answers, state_dir = deployer.answers, deployer.state_dir

        def through_contract():
            return deployer.warm(env, REVISION)

        def direct():
            return hook(env=env, revision_id=REVISION, answers=answers, state_dir=state_dir)

        assert deployer.warm(env, REVISION) == direct()
        number = 20000
        best = {}
        for label, fn in (("contract", through_contract), ("direct", direct)):
            best[label] = min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6
        return {"contract_us": best["contract"], "direct_us": best["direct"],
                "overhead_us": best["contract"] - best["direct"]}
    finally:
        sys.path.remove(str(site))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per median (default 7)")
    parser.add_argument("--dists", type=int, default=2000, help="synthetic distributions for (b) (default 2000)")
    args = parser.parse_args(argv)

    print(f"# greentic registry benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="greentic-bench-") as tmp:
        scratch = Path(tmp)
        a = bench_startup(args.runs, scratch)
        print(f"(a) plugins list: {a['cli_ms']:.1f} ms   import pluggy: {a['baseline_ms']:.1f} ms   "
              f"ratio {a['ratio']:.2f}x   (goal <= 1.5x: {'met' if a['ratio'] <= 1.5 else 'MISSED'})")
        print(f"    CPU time (user+sys, less sensitive to machine load): plugins list {a['cli_cpu_ms']:.1f} ms   "
              f"import pluggy {a['baseline_cpu_ms']:.1f} ms   ratio {a['cli_cpu_ms'] / a['baseline_cpu_ms']:.2f}x")
        b = bench_discovery(args.dists, args.runs, scratch)
        print(f"(b) discover() with {b['dists']} extra dists ({b['found']} entry points): "
              f"cold {b['cold_ms']:.1f} ms   cached {b['cached_ms']:.2f} ms   "
              f"(goal cached <= 5 ms: {'met' if b['cached_ms'] <= 5 else 'MISSED'})")
        c = bench_call(scratch)
        print(f"(c) warm via BoundDeployer: {c['contract_us']:.2f} us   direct hook call: {c['direct_us']:.2f} us   "
              f"overhead {c['overhead_us']:.2f} us   (goal <= 15 us: {'met' if c['overhead_us'] <= 15 else 'MISSED'})")


if __name__ == "__main__":
    main()
