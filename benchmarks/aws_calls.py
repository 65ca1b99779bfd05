"""AWS provider (issue 8): AWS API calls per verb, with 1 and with 20 deployments in the environment.

    .venv/bin/python -m benchmarks.aws_calls        (or: python benchmarks/aws_calls.py; --json for JSON)

Needs ``greentic-deployer-aws[test]`` (moto). Starts a moto server on 127.0.0.1, provisions one
cluster, ALB listener and a pool of 48 target groups (the same pool size for both runs, so the
pool check costs the same), and binds the aws-ecs deployer through the core registry. For each
size N it first sets up N-1 *other* deployments (two warm revisions each, a split applied: not
counted), then walks one deployment through every verb and counts the API calls the provider's
botocore clients make (a ``before-call`` event hook). Goal: a verb's count does not grow with
N. The only count that depends on configuration is the pool check of a first warm: one
ELBv2 DescribeTags per 20 target groups of the pool (shown separately). ``observe`` reads the
whole environment, so it grows with N by design (one DescribeTaskSets per deployment, one
DescribeServices per 10).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attrs  # noqa: E402

from greentic_core import (  # noqa: E402
    Environment,
    HostConfig,
    Lifecycle,
    Revision,
    TrafficSplit,
    TrafficSplitEntry,
    mint_deployment_id,
    mint_revision_id,
)
from greentic_core.registry import Registry  # noqa: E402

NOW = datetime(2026, 5, 19, tzinfo=timezone.utc)
POOL = 48
SIZES = (1, 20)
ENV_ID = "bench"


def _revision(deployment_id: str, sequence: int) -> Revision:
    rid = mint_revision_id()
    return Revision(revision_id=rid, env_id=ENV_ID, bundle_id="shop", deployment_id=deployment_id, sequence=sequence,
                    created_at=NOW, bundle_digest="sha256:00", pack_list=(), pack_list_lock_ref=f"r/{rid}",
                    config_digest="sha256:00", signature_sidecar_ref="s", lifecycle=Lifecycle.READY, drain_seconds=0)


def _split(deployment_id: str, weights: list[tuple[str, int]]) -> TrafficSplit:
    return TrafficSplit(env_id=ENV_ID, deployment_id=deployment_id, bundle_id="shop", generation=1,
                        entries=tuple(TrafficSplitEntry(revision_id=r, weight_bps=w) for r, w in weights),
                        updated_at=NOW, updated_by="bench", idempotency_key="k", authorization_ref="a")


class Counting:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._on)

    def _on(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def walk(endpoint: str, others: int) -> dict[str, Counter]:
    from greentic_aws import ecs
    from greentic_aws.sandbox import provision, teardown

    answers = provision(endpoint, pool_size=POOL)
    counter = Counting()
    ecs.clear_client_cache()
    ecs.client_hooks.append(counter.attach)
    try:
        deployer = Registry(allow=["greentic.deployer.aws-ecs"], use_cache=False).bind(
            "greentic.deployer.aws-ecs@0.1.0", answers)
        env = Environment(environment_id=ENV_ID, name=ENV_ID, host_config=HostConfig(env_id=ENV_ID), packs=())

        def add(deployment_id: str, revisions: list[Revision], split: TrafficSplit | None = None) -> None:
            nonlocal env
            splits = tuple(s for s in env.traffic_splits if s.deployment_id != deployment_id)
            env = attrs.evolve(env, revisions=env.revisions + tuple(revisions),
                               traffic_splits=splits + ((split,) if split else ()))

        for _ in range(others):  # the other deployments: not counted
            dep = mint_deployment_id()
            revs = [_revision(dep, 1), _revision(dep, 2)]
            add(dep, revs, _split(dep, [(revs[0].revision_id, 5000), (revs[1].revision_id, 5000)]))
            for rev in revs:
                deployer.warm(env, rev.revision_id)
            deployer.apply_traffic_split(env, dep)

        dep = mint_deployment_id()
        r1, r2 = _revision(dep, 1), _revision(dep, 2)
        add(dep, [r1, r2])
        counts: dict[str, Counter] = {}

        def measure(label: str, call) -> None:
            counter.calls.clear()
            call()
            counts[label] = Counter(counter.calls)

        measure("stage", lambda: deployer.stage(env, r1.revision_id))
        measure("warm (first revision: creates the service)", lambda: deployer.warm(env, r1.revision_id))
        measure("warm (again: already serving)", lambda: deployer.warm(env, r1.revision_id))
        measure("warm (second revision)", lambda: deployer.warm(env, r2.revision_id))
        add(dep, [], _split(dep, [(r1.revision_id, 10000), (r2.revision_id, 0)]))
        measure("apply_traffic_split (first split)", lambda: deployer.apply_traffic_split(env, dep))
        add(dep, [], _split(dep, [(r1.revision_id, 0), (r2.revision_id, 10000)]))
        measure("apply_traffic_split (modifies the rule)", lambda: deployer.apply_traffic_split(env, dep))
        measure("apply_traffic_split (unchanged)", lambda: deployer.apply_traffic_split(env, dep))
        measure("drain", lambda: deployer.drain(env, r1.revision_id))
        measure("archive (not the last revision)", lambda: deployer.archive(env, r1.revision_id))
        measure("archive (again: absent)", lambda: deployer.archive(env, r1.revision_id))
        add(dep, [], _split(dep, [(r2.revision_id, 10000)]))
        measure("observe (whole environment)", lambda: deployer.observe(env))
        # `traffic clear`: no split recorded any more, so the last revision may lose its route
        env = attrs.evolve(env, traffic_splits=tuple(s for s in env.traffic_splits if s.deployment_id != dep))
        measure("drain (last revision, split cleared: cuts the rule)", lambda: deployer.drain(env, r2.revision_id))
        measure("archive (last revision: the service too)", lambda: deployer.archive(env, r2.revision_id))
        return counts
    finally:
        ecs.client_hooks.remove(counter.attach)
        ecs.clear_client_cache()
        teardown(answers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    from greentic_aws.sandbox import start_server

    server, endpoint = start_server()
    try:
        results = {n: walk(endpoint, n - 1) for n in SIZES}
    finally:
        server.stop()
    labels = list(results[SIZES[0]])
    if args.json:
        print(json.dumps({str(n): {k: dict(v) for k, v in r.items()} for n, r in results.items()}, indent=2))
        return 0
    print(f"AWS API calls per verb (moto server on 127.0.0.1; pool of {POOL} target groups)")
    print(f"python {platform.python_version()} on {platform.machine()}; boto3 via HTTP")
    width = max(len(label) for label in labels)
    print(f"{'verb':<{width}}  " + "  ".join(f"{f'N={n}':>5}" for n in SIZES) + "  calls (N=20)")
    ok = True
    for label in labels:
        totals = [sum(results[n][label].values()) for n in SIZES]
        if "observe" not in label and len(set(totals)) != 1:
            ok = False
        ops = ", ".join(f"{op} {c}" for op, c in sorted(results[SIZES[-1]][label].items()))
        print(f"{label:<{width}}  " + "  ".join(f"{t:>5}" for t in totals) + f"  {ops}")
    pool_check = -(-POOL // 20)
    print(f"pool check of a first warm: {pool_check} DescribeTags for {POOL} target groups (ceil(pool / 20))")
    print(f"goal: no verb's count grows with the number of other deployments: {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        raise SystemExit(main())
