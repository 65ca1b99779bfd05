"""The agent (issue 16): the cost of a pass, and the time from a SIGKILL to serving again.

    .venv/bin/python -m benchmarks.agent          (--envs 100 --revisions 10 --kills 20; --quick; --json)

1. **Pass cost.** ``--envs`` environments of ``--revisions`` ready revisions each (one split
   over them) in a file store, on the recording test deployer (a real installed distribution,
   whose observe reads one JSON file: the figure is the agent's own cost, not a provider's).
   One agent pass over all of them, nothing drifted: wall time, process CPU time, ms per
   environment. Goal: under 1 s of CPU for 100 environments.
2. **Repair time.** A local-process environment, one sample-app revision at 100%, its
   supervisor stopped (so only the agent can bring anything back), the agent running with
   ``--interval 1`` as a real process. N times: SIGKILL the revision's process, GET / every
   5 ms until it answers from a new process. Prints p50 / p95 / max. Goal: p95 <= interval + 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.supervision import cli, free_port, outage, read_json, summary  # noqa: E402

INTERVAL = 1.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pass_cost(envs: int, revisions: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import recording_plugin

    from greentic_core import Workload
    from greentic_core.agent import Agent, agent_actor
    from greentic_core.operator import Operator
    from greentic_core.registry import Registry
    from greentic_core.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="greentic-agent-bench-"))
    site = recording_plugin.install(tmp / "site")
    sys.path.insert(0, str(site))
    os.environ[recording_plugin.LOG_ENV] = str(tmp / "calls.jsonl")
    os.environ["GREENTIC_CACHE_DIR"] = str(tmp / "cache")
    store = Store(tmp / "environments")
    registry = Registry(use_cache=False)
    setup = Operator(store, registry, actor="bench", command="bench")
    names = [f"env{i:03d}" for i in range(envs)]
    for name in names:
        setup.init_env(name, recording_plugin.NAME, answers={"region": "eu"})
        did = setup.add_deployment(name, "web").deployment_id
        rids = []
        for r in range(revisions):
            rid = setup.stage(name, did, workload=Workload(image=f"web:{r}")).revision.revision_id
            setup.warm(name, rid)
            rids.append(rid)
        share = 10000 // revisions
        weights = [(rid, share) for rid in rids]
        weights[0] = (rids[0], share + 10000 - share * revisions)
        setup.traffic_set(name, did, weights)
    agent = Agent(store, lambda: Operator(store, registry, actor=agent_actor(), command="bench"),
                  env_ids=names, interval=10.0)
    agent.run_pass()  # warm-up: imports, first claims
    wall, cpu0 = time.perf_counter(), _cpu()
    report = agent.run_pass()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu0
    assert all(e.status == "ok" and not e.repairs for e in report.environments), report.to_json()
    return {"environments": envs, "revisions_each": revisions, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "ms_per_environment": round(1000 * wall / envs, 2), "cpu_ms_per_environment": round(1000 * cpu / envs, 2),
            "goal_cpu_s": 1.0}


def repair_time(kills: int) -> dict[str, Any]:
    """One fresh environment and agent per kill (a repaired environment's processes are the
    agent's own children afterwards, which is not what a first failure looks like)."""
    times = [_one_repair() for _ in range(kills)]
    return {"kills": kills, "interval_s": INTERVAL, **summary(times), "goal_p95_s": INTERVAL + 2}


def _one_repair() -> float:
    from greentic_local_process import supervision
    from greentic_local_process.sandbox import cleanup

    home = Path(tempfile.mkdtemp(prefix="greentic-agent-repair-bench-"))
    state = home / "environments" / "bench"
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}/"
    agent = None
    try:
        cli(home, "env", "init", "bench", "--deployer", "greentic.deployer.local-process", "--listen", listen)
        cli(home, "deployment", "add", "bench", "web")
        rid = cli(home, "revision", "stage", "bench", "web", "--command",
                  shlex.join([sys.executable, "-m", "greentic_local_process.sample_app"]))["revision_id"]
        cli(home, "revision", "warm", "bench", rid)
        cli(home, "traffic", "set", "bench", "web", f"{rid}=10000")
        info = supervision.running(state)
        os.kill(info["pid"], signal.SIGKILL)  # only the agent may bring anything back
        agent = subprocess.Popen([sys.executable, "-m", "greentic_core", "--home", str(home), "agent", "bench",
                                  "--interval", f"{INTERVAL:g}"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(INTERVAL * 1.5)  # let it start and make a first pass, so the kill lands at a random phase
        pid = read_json(state / "revisions" / rid / "process.json")["pid"]
        return outage(pid, url, lambda answer, old=pid: answer.get("pid") != old)
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        if state.exists():
            cleanup(state, 2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=100)
    parser.add_argument("--revisions", type=int, default=10)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="20 environments, 5 kills")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cost = pass_cost(20 if args.quick else args.envs, args.revisions)
    repair = repair_time(5 if args.quick else args.kills)
    report = {"pass": cost, "repair": repair}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"# agent benchmark")
    print(f"pass over {cost['environments']} environments x {cost['revisions_each']} revisions (nothing drifted): "
          f"{cost['wall_s']:.3f} s wall, {cost['cpu_s']:.3f} s CPU, {cost['ms_per_environment']:.2f} ms and "
          f"{cost['cpu_ms_per_environment']:.2f} ms CPU per environment (goal: CPU < {cost['goal_cpu_s']:g} s)")
    print(f"SIGKILL -> serving again under the agent (interval {repair['interval_s']:g} s, supervisor stopped), "
          f"{repair['n']} kills: p50 {repair['p50_s']:.2f} s, p95 {repair['p95_s']:.2f} s, max {repair['max_s']:.2f} s "
          f"(goal: p95 <= {repair['goal_p95_s']:g} s)")


if __name__ == "__main__":
    main()
