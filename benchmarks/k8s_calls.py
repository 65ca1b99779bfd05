"""Kubernetes provider (issue 7): API requests and wall time per verb, with 1 and with 50 other revisions.

    .venv/bin/python -m benchmarks.k8s_calls        (or: python benchmarks/k8s_calls.py; --json, --runs N)

Needs ``greentic-deployer-k8s[test]`` (kmock). Starts the provider's sandbox (the kmock emulator
on 127.0.0.1 in a background thread of this process, with its stand-in controllers that make a
Deployment ready at once) and binds the k8s deployer through the core registry, as the CLI does.

For each size N the environment first gets N revisions that are *not* measured, all warm: one
(``P``) in the deployment under test, N-1 in another deployment. Then, ``--runs`` times, a fresh
revision ``T`` of the deployment under test is walked through every verb (stage, warm, warm
again, split T 5000 / P 5000, split again, observe, drain, drain again, archive, archive again),
with the split changes a drain and an archive need applied in between (not measured). Requests
are what the emulator received (method and path); wall time is the median over the runs of the
verb's call through ``BoundDeployer`` (client reuse included: the first run pays for building
the lightkube client). Goal: a verb's request count does not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from greentic_core import Environment, HostConfig, PackDescriptor, Workload, mint_revision_id  # noqa: E402
from greentic_core import lifecycle, traffic  # noqa: E402
from greentic_core.registry import Registry  # noqa: E402
from greentic_core.spec import CapabilitySlot, EnvPackBinding  # noqa: E402

SIZES = (1, 50)
KIND = "greentic.deployer.k8s@0.1.0"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
IMAGE = "registry.example.com/bench/app:1.0.0"
VERBS = ("stage", "warm", "warm again", "split", "split again", "observe", "drain", "drain again", "archive",
         "archive again")


class World:
    """The recorded environment, changed through the core's engines (as the operator does)."""

    def __init__(self) -> None:
        self.env = Environment(
            environment_id="bench", name="bench", host_config=HostConfig(env_id="bench"),
            packs=(EnvPackBinding(slot=CapabilitySlot.DEPLOYER, kind=PackDescriptor.parse(KIND), pack_ref="k8s",
                                  answers_ref="answers.json", generation=1),))
        self.keys = 0

    def deployment(self, bundle: str) -> str:
        self.env, dep = lifecycle.add_deployment(self.env, bundle, hosts=(f"{bundle}.example.com",), now=NOW)
        return dep.deployment_id

    def revision(self, deployment_id: str) -> str:
        result = lifecycle.stage_revision(self.env, deployment_id, revision_id=mint_revision_id(), drain_seconds=0,
                                          workload=Workload(image=IMAGE), pack_list_lock_ref="pack-list.lock", now=NOW)
        self.env = lifecycle.warm_revision(result.env, result.revision.revision_id, now=NOW).env
        return result.revision.revision_id

    def split(self, deployment_id: str, *weights: tuple[str, int]) -> None:
        self.keys += 1
        self.env = traffic.set_traffic_split(self.env, deployment_id, list(weights), idempotency_key=f"b{self.keys}",
                                             updated_by="operator://bench/k8s", now=NOW).env


def measure(size: int, runs: int, workdir: Path) -> dict[str, Any]:
    from greentic_k8s.sandbox import Sandbox

    with Sandbox(workdir / f"sandbox-{size}") as box:
        emulator = box.emulator
        deployer = Registry(cache_dir=workdir / "cache").bind(KIND, box.answers)
        world = World()
        dep, crowd = world.deployment("shop"), world.deployment("crowd")
        primary = world.revision(dep)
        deployer.warm(world.env, primary)
        for _ in range(size - 1):
            rid = world.revision(crowd)
            deployer.warm(world.env, rid)
        world.split(dep, (primary, 10000))
        deployer.apply_traffic_split(world.env, dep)

        requests: dict[str, list[tuple[str, str]]] = {}
        times: dict[str, list[float]] = {verb: [] for verb in VERBS}

        def timed(verb: str, call: Callable[[], Any]) -> None:
            emulator.clear_requests()
            started = time.perf_counter()
            call()
            times[verb].append(time.perf_counter() - started)
            sent = emulator.requests()
            if verb in requests and [m for m, _ in requests[verb]] != [m for m, _ in sent]:
                raise AssertionError(f"{verb}: the requests changed between runs: {requests[verb]} vs {sent}")
            requests[verb] = sent

        for _ in range(runs):
            target = world.revision(dep)
            timed("stage", lambda: deployer.stage(world.env, target))
            timed("warm", lambda: deployer.warm(world.env, target))
            timed("warm again", lambda: deployer.warm(world.env, target))
            world.split(dep, (primary, 5000), (target, 5000))
            timed("split", lambda: deployer.apply_traffic_split(world.env, dep))
            timed("split again", lambda: deployer.apply_traffic_split(world.env, dep))
            timed("observe", lambda: deployer.observe(world.env))
            world.split(dep, (primary, 10000), (target, 0))
            deployer.apply_traffic_split(world.env, dep)
            timed("drain", lambda: deployer.drain(world.env, target))
            timed("drain again", lambda: deployer.drain(world.env, target))
            world.split(dep, (primary, 10000))
            deployer.apply_traffic_split(world.env, dep)
            timed("archive", lambda: deployer.archive(world.env, target))
            timed("archive again", lambda: deployer.archive(world.env, target))
            world.env = lifecycle.archive_revision(world.env, target, now=NOW).env
        return {
            "other_revisions": size,
            "verbs": {verb: {"requests": len(requests[verb]),
                             "calls": [f"{method} {path}" for method, path in requests[verb]],
                             "wall_ms": round(statistics.median(times[verb]) * 1000, 2)} for verb in VERBS},
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="walks per size (median wall time); default 7")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    import lightkube  # noqa: F401  (fail early with a clear ImportError when the provider is missing)
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(size, args.runs, Path(tmp)) for size in SIZES]
    met = all(results[0]["verbs"][v]["requests"] == r["verbs"][v]["requests"] for r in results for v in VERBS)
    if args.json:
        print(json.dumps({"results": results, "goal_met": met, "lightkube": version("lightkube"),
                          "kmock": version("kmock"), "python": platform.python_version()}, indent=2))
        return
    print(f"# greentic k8s provider: API requests and wall time per verb, "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"lightkube {version('lightkube')}, kmock {version('kmock')} emulator in-process on 127.0.0.1; "
          f"median of {args.runs} runs")
    header = "verb".ljust(15) + "".join(f"{f'requests N={n}':>14}" for n in SIZES) + "".join(
        f"{f'wall ms N={n}':>13}" for n in SIZES)
    print(header)
    for verb in VERBS:
        print(verb.ljust(15) + "".join(f"{r['verbs'][verb]['requests']:>14}" for r in results)
              + "".join(f"{r['verbs'][verb]['wall_ms']:>13.2f}" for r in results))
    print(f"goal: a verb's request count does not grow with the number of other revisions: "
          f"{'met' if met else 'MISSED'}")
    print("requests of each verb (N=50):")
    for verb in VERBS:
        calls = results[-1]["verbs"][verb]["calls"]
        print(f"  {verb}: " + (", ".join(calls) if calls else "none"))


if __name__ == "__main__":
    main()
