"""The contract checks, one test per check id, in the order of :data:`greentic_conformance.checks.CHECKS`.

Every side effect is read back through ``greentic_observe`` (via ``world.snapshot()``), never
only through what a verb returned. Each check builds its own small world (fresh deployment
and revision ids in the session's environment), so one failing check cannot change what
another one sees; the world's revisions are archived when the check ends.
"""

from __future__ import annotations

import time

import jsonschema
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from greentic_core import (
    DeployerError,
    InvalidAnswers,
    InvalidSplit,
    PackDescriptor,
    RevisionNotFound,
    RuntimeConfig,
    SplitNotFound,
)
from greentic_core import __version__ as CORE_VERSION
from greentic_core import lifecycle, mint_deployment_id
from greentic_core.projection import materialize_runtime_config

from greentic_conformance.checks import BY_ID, check
from greentic_conformance.fixture import (
    BROKEN_WORKLOAD,
    FIXED_NOW,
    UNKNOWN_REVISION_ID,
    build_fixture_env,
    capture,
    record_ready,
    record_revision,
    record_split,
    with_invalid_split,
    without_split,
)
from greentic_conformance.harness import describe_error

#: How long a warm of the broken workload may take before the provider must give up.
BROKEN_WARM_TIMEOUT = 60.0
REVISION_VERBS = ("stage", "warm", "drain", "archive")


def _rejected(what: str, call, expected: type[DeployerError]) -> list[str]:
    result, exc = capture(call)
    if exc is None:
        return [f"{what} was accepted (returned {type(result).__name__}), expected {expected.__name__}"]
    if not isinstance(exc, expected):
        return [f"{what} raised {describe_error(exc)}, expected {expected.__name__}"]
    return []


def _untouched(harness, before, after) -> list[str]:
    problems = []
    if harness.spy.calls:
        hooks = ", ".join(f"{hook}({arg})" for hook, arg in harness.spy.calls)
        problems.append(f"the provider was called: {hooks}")
    diff = before.diff(after)
    if diff:
        problems.append(f"the observed state changed: {diff}")
    return problems


# --------------------------------------------------------------------------- descriptor and answers


@check("descriptor-well-formed")
def test_descriptor_well_formed(check, conformance_session):
    record = conformance_session.record
    if not record.ok or record.descriptor is None:
        check.fail(f"the registry refuses the plugin ({record.status}): {record.reason}")
    d = record.descriptor
    problems = []
    if d.path != record.name:
        problems.append(f"descriptor path {d.path!r} differs from the entry-point name {record.name!r}")
    try:
        PackDescriptor.parse(f"{d.path}@{d.version}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"path@version is malformed: {exc}")
    try:
        if not SpecifierSet(d.requires_core).contains(Version(CORE_VERSION), prereleases=True):
            problems.append(f"requires_core {d.requires_core!r} does not admit the running greentic-core {CORE_VERSION}")
    except InvalidSpecifier:
        problems.append(f"requires_core {d.requires_core!r} is not a PEP 440 specifier")
    caps = d.capabilities
    res = caps.weight_resolution_bps
    if not isinstance(res, int) or isinstance(res, bool) or not 1 <= res <= 10000:
        problems.append(f"capabilities.weight_resolution_bps is {res!r}, must be an integer in 1..10000")
    slack = caps.drain_slack_seconds
    if not isinstance(slack, (int, float)) or isinstance(slack, bool) or slack < 0:
        problems.append(f"capabilities.drain_slack_seconds is {slack!r}, must be a number >= 0")
    if caps.max_split_entries is not None and (not isinstance(caps.max_split_entries, int) or caps.max_split_entries < 1):
        problems.append(f"capabilities.max_split_entries is {caps.max_split_entries!r}, must be None or >= 1")
    try:
        jsonschema.validators.validator_for(d.answers_schema).check_schema(d.answers_schema)
    except jsonschema.exceptions.SchemaError as exc:
        problems.append(f"answers_schema is not a valid JSON Schema: {exc.message}")
    if d.answers_schema.get("type") not in ("object", None):
        problems.append(f"answers_schema has type {d.answers_schema.get('type')!r}; answers are a JSON object")
    for check_id, reason in dict(d.waivers).items():
        if check_id not in BY_ID:
            problems.append(f"waiver names {check_id!r}, which is not a check of this suite")
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"waiver of {check_id!r} has no written reason")
    check.require(problems)


_SAMPLES = (
    ("object", {"__greentic_conformance__": True}),
    ("array", ["__greentic_conformance__"]),
    ("string", "__greentic_conformance_wrong_type__"),
    ("boolean", True),
    ("number", 1.5),
    ("null", None),
)


def _wrong_typed(schema, secret_keys) -> tuple[str, object] | None:
    """A declared property and a value whose JSON type the property does not allow."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return None
    for name in sorted(properties, key=lambda n: (n in secret_keys, n)):
        declared = properties[name].get("type") if isinstance(properties[name], dict) else None
        if declared is None:
            continue
        types = {declared} if isinstance(declared, str) else set(declared)
        for json_type, value in _SAMPLES:
            if json_type not in types:
                return name, value
    return None


@check("answers-schema-rejects-malformed")
def test_answers_schema_rejects_malformed(check, harness, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm of a fixture revision", lambda: world.stage_and_warm(dep))
    check.call("apply_traffic_split", lambda: world.set_split(dep, [(rid, 10000)]))
    before = world.snapshot()
    harness.spy.clear()
    descriptor = harness.descriptor
    base = dict(harness.answers)
    cases = [("an unknown answers key", {**base, "__greentic_conformance_unknown_key__": 1})]
    wrong = _wrong_typed(descriptor.answers_schema, descriptor.secret_keys())
    if wrong is not None:
        cases.append((f"a wrong-typed value for {wrong[0]!r} ({type(wrong[1]).__name__})", {**base, wrong[0]: wrong[1]}))
    problems = []
    for label, answers in cases:
        problems += _rejected(f"binding with {label}",
                              lambda a=answers: harness.registry.bind(harness.kind, a, harness.workdir / "state"),
                              InvalidAnswers)
    problems += _untouched(harness, before, world.snapshot())
    check.require(problems)


# --------------------------------------------------------------------------- the verbs


@check("happy-path")
def test_happy_path(check, world):
    dep = world.add_deployment("a")
    old = world.record_revision(dep)
    check.call("stage of the first revision", lambda: world.stage(old))
    check.call("warm of the first revision", lambda: world.warm(old))
    check.call("apply_traffic_split {first: 10000}", lambda: world.set_split(dep, [(old, 10000)]))
    new = world.record_revision(dep)
    check.call("stage of the second revision", lambda: world.stage(new))
    check.call("warm of the second revision", lambda: world.warm(new))
    check.call("apply_traffic_split {first: 0, second: 10000}", lambda: world.set_split(dep, [(old, 0), (new, 10000)]))
    check.call("drain of the first revision (weight 0)", lambda: world.drain(old))
    check.call("apply_traffic_split {second: 10000}", lambda: world.set_split(dep, [(new, 10000)]))
    check.call("archive of the first revision", lambda: world.archive(old))


def _repeat(check, world, verb: str, first, second) -> None:
    check.call(f"the first {verb}", first)
    after_first = world.snapshot()
    check.call(f"the second {verb} (same revision, environment as recorded after the first)", second)
    diff = after_first.diff(world.snapshot())
    if diff:
        check.fail(f"the second {verb} changed the observed state: {diff}")


@check("idempotent-stage")
def test_idempotent_stage(check, world):
    dep = world.add_deployment("a")
    rid = world.record_revision(dep)
    _repeat(check, world, "stage", lambda: world.stage(rid), lambda: world.stage(rid))


@check("idempotent-warm")
def test_idempotent_warm(check, world):
    dep = world.add_deployment("a")
    rid = world.record_revision(dep)
    check.call("stage", lambda: world.stage(rid))
    _repeat(check, world, "warm", lambda: world.warm(rid), lambda: world.warm(rid))


@check("idempotent-apply-split")
def test_idempotent_apply_split(check, world):
    dep = world.add_deployment("a")
    r1 = check.call("stage/warm of the first revision", lambda: world.stage_and_warm(dep))
    r2 = check.call("stage/warm of the second revision", lambda: world.stage_and_warm(dep))
    world.record_split(dep, [(r1, 5000), (r2, 5000)])
    _repeat(check, world, "apply_traffic_split", lambda: world.apply(dep), lambda: world.apply(dep))


@check("idempotent-drain")
def test_idempotent_drain(check, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm", lambda: world.stage_and_warm(dep))
    _repeat(check, world, "drain", lambda: world.drain(rid), lambda: world.drain(rid))


@check("idempotent-archive")
def test_idempotent_archive(check, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm", lambda: world.stage_and_warm(dep))
    _repeat(check, world, "archive", lambda: world.archive(rid), lambda: world.archive(rid))


# --------------------------------------------------------------------------- preconditions


@check("unknown-revision-rejected")
def test_unknown_revision_rejected(check, harness, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm of a fixture revision", lambda: world.stage_and_warm(dep))
    check.call("apply_traffic_split", lambda: world.set_split(dep, [(rid, 10000)]))
    before = world.snapshot()
    harness.spy.clear()
    problems = []
    for verb in REVISION_VERBS:
        call = getattr(world.deployer, verb)
        problems += _rejected(f"{verb} of unknown revision {UNKNOWN_REVISION_ID}",
                              lambda c=call: c(world.env, UNKNOWN_REVISION_ID), RevisionNotFound)
    problems += _untouched(harness, before, world.snapshot())
    check.require(problems)


@check("invalid-split-rejected")
def test_invalid_split_rejected(check, harness, world):
    dep = world.add_deployment("a")
    r1 = check.call("stage/warm of the first revision", lambda: world.stage_and_warm(dep))
    r2 = check.call("stage/warm of the second revision", lambda: world.stage_and_warm(dep))
    check.call("apply_traffic_split {5000, 5000}", lambda: world.set_split(dep, [(r1, 5000), (r2, 5000)]))
    before = world.snapshot()
    harness.spy.clear()
    problems = []
    for label, entries in (("summing to 9000", [(r1, 4000), (r2, 5000)]),
                           ("with an entry of 10001", [(r1, 10001), (r2, -1)])):
        bad = with_invalid_split(world.env, dep, entries)
        problems += _rejected(f"apply_traffic_split of a split {label}",
                              lambda b=bad: world.deployer.apply_traffic_split(b, dep), InvalidSplit)
    problems += _untouched(harness, before, world.snapshot())
    check.require(problems)


@check("missing-split-rejected")
def test_missing_split_rejected(check, harness, world):
    dep = world.add_deployment("a")
    other = world.add_deployment("b")
    rid = check.call("stage/warm of a fixture revision", lambda: world.stage_and_warm(dep))
    check.call("apply_traffic_split", lambda: world.set_split(dep, [(rid, 10000)]))
    before = world.snapshot()
    harness.spy.clear()
    problems = []
    problems += _rejected("apply_traffic_split after the deployment's split was removed",
                          lambda: world.deployer.apply_traffic_split(without_split(world.env, dep), dep),
                          SplitNotFound)
    problems += _rejected("apply_traffic_split of a deployment that never had a split",
                          lambda: world.deployer.apply_traffic_split(world.env, other), SplitNotFound)
    problems += _untouched(harness, before, world.snapshot())
    check.require(problems)


HOSTILE_ROUTES = (
    ("an upper-case host", ("Shop.Conformance.Local",), ()),
    ("a host with a port", ("shop.conformance.local:8080",), ()),
    ("an IP address", ("192.0.2.10",), ()),
    ("a host with a trailing dot", ("shop.conformance.local.",), ()),
    ("17 hosts", tuple(f"h{i}.conformance.local" for i in range(17)), ()),
    ("'..' in a path prefix", (), ("/a/../b",)),
    ("'//' in a path prefix", (), ("/a//b",)),
    ("a space in a path prefix", (), ("/a b",)),
)


@check("hostile-routes-rejected")
def test_hostile_routes_rejected(check, harness, world):
    before = world.snapshot()
    harness.spy.clear()
    problems = []
    for label, hosts, prefixes in HOSTILE_ROUTES:
        env, deployment = lifecycle.add_deployment(
            world.env, f"conformance.hostile-{mint_deployment_id()[-8:].lower()}",
            customer_id="greentic-conformance", hosts=hosts, path_prefixes=prefixes, now=FIXED_NOW)
        dep = deployment.deployment_id
        env, rid = record_revision(env, dep)
        env = record_ready(env, rid)
        env = record_split(env, dep, [(rid, 10000)])
        problems += _rejected(f"validate_routes of a deployment with {label}",
                              lambda e=env, d=dep: world.deployer.validate_routes(e, d), DeployerError)
        for verb in ("stage", "warm"):
            problems += _rejected(f"{verb} of a revision of a deployment with {label}",
                                  lambda e=env, r=rid, v=verb: getattr(world.deployer, v)(e, r), DeployerError)
        problems += _rejected(f"apply_traffic_split of a deployment with {label}",
                              lambda e=env, d=dep: world.deployer.apply_traffic_split(e, d), DeployerError)
    problems += _untouched(harness, before, world.snapshot())
    check.require(problems)


# --------------------------------------------------------------------------- traffic


@check("cross-deployment-isolation")
def test_cross_deployment_isolation(check, world):
    dep_a, dep_b = world.add_deployment("a"), world.add_deployment("b")
    a1 = check.call("stage/warm of a1", lambda: world.stage_and_warm(dep_a))
    a2 = check.call("stage/warm of a2", lambda: world.stage_and_warm(dep_a))
    b1 = check.call("stage/warm of b1", lambda: world.stage_and_warm(dep_b))
    b2 = check.call("stage/warm of b2", lambda: world.stage_and_warm(dep_b))
    world.record_split(dep_a, [(a1, 3333), (a2, 6667)])
    world.record_split(dep_b, [(b1, 10000), (b2, 0)])
    problems = []

    before = world.snapshot()
    check.call("apply_traffic_split of A", lambda: world.apply(dep_a))
    after = world.snapshot()
    if dict(before.weights[dep_b]) != dict(after.weights[dep_b]):
        problems.append(f"applying A changed B (whose recorded split was never applied): weights "
                        f"{dict(before.weights[dep_b]) or '{}'} -> {dict(after.weights[dep_b]) or '{}'}")

    check.call("apply_traffic_split of B", lambda: world.apply(dep_b))
    enforced_b = dict(world.snapshot().weights[dep_b])
    world.record_split(dep_b, [(b1, 0), (b2, 10000)])  # recorded, not applied
    world.record_split(dep_a, [(a1, 10000), (a2, 0)])
    check.call("apply_traffic_split of A (changed)", lambda: world.apply(dep_a))
    now_b = dict(world.snapshot().weights[dep_b])
    if now_b != enforced_b:
        problems.append(f"applying A changed B (whose recorded split changed but was not applied): weights "
                        f"{enforced_b or '{}'} -> {now_b or '{}'}")
    check.require(problems)


@check("apply-outcome-matches-split")
def test_apply_outcome_matches_split(check, world):
    dep = world.add_deployment("a")
    r1 = check.call("stage/warm of the first revision", lambda: world.stage_and_warm(dep))
    r2 = check.call("stage/warm of the second revision", lambda: world.stage_and_warm(dep))
    world.record_split(dep, [(r1, 2500), (r2, 7500)])
    outcome = check.call("apply_traffic_split", lambda: world.apply(dep))
    recorded = [(e.revision_id, e.weight_bps) for e in world.env.split_for(dep).entries]
    applied = [(e.revision_id, e.weight_bps) for e in outcome.applied_entries]
    problems = []
    if outcome.applied_deployment_id != dep:
        problems.append(f"outcome names deployment {outcome.applied_deployment_id}, asked for {dep}")
    if applied != recorded:
        problems.append(f"applied_entries are {applied}, the recorded entries are {recorded}")
    check.require(problems)


@check("runtime-config-matches-projection")
def test_runtime_config_matches_projection(check, harness):
    deployer = harness.deployer
    if not deployer.implements("greentic_report_runtime_config"):
        check.skip("greentic_report_runtime_config is not implemented: the core projection is used")
    fx = build_fixture_env(harness.env_id, harness.kind)
    reported = check.call("report_runtime_config", lambda: deployer.report_runtime_config(fx.env))
    if reported is None:
        return  # None means "use the core projection"
    expected = materialize_runtime_config(fx.env)
    problems = []
    if not isinstance(reported, RuntimeConfig):
        check.fail(f"report_runtime_config returned {type(reported).__name__}")
    if reported.env_id != expected.env_id or reported.schema != expected.schema:
        problems.append(f"reports env {reported.env_id!r} / schema {reported.schema!r}, expected "
                        f"{expected.env_id!r} / {expected.schema!r}")

    def blocks(config):
        return [(b.deployment_id, b.revision_id, b.bundle_id, b.weight_bps) for b in config.revisions]

    if blocks(reported) != blocks(expected):
        problems.append(f"blocks (deployment, revision, bundle, weight) are {blocks(reported)}, "
                        f"the projection has {blocks(expected)}")
    check.require(problems)


# --------------------------------------------------------------------------- observed effects


@check("stage-does-not-serve")
def test_stage_does_not_serve(check, world):
    dep = world.add_deployment("a")
    rid = world.record_revision(dep)
    check.call("stage", lambda: world.stage(rid))
    present, serving = world.snapshot().revision(rid)
    if serving:
        check.fail(f"after stage, observe reports revision {rid} serving")


@check("warm-serves")
def test_warm_serves(check, world):
    dep = world.add_deployment("a")
    rid = world.record_revision(dep)
    check.call("stage", lambda: world.stage(rid))
    check.call("warm", lambda: world.warm(rid))
    present, serving = world.snapshot().revision(rid)
    if not (present and serving):
        check.fail(f"after warm returned, observe reports revision {rid} present={present} serving={serving}")


@check("warm-does-not-route")
def test_warm_does_not_route(check, world):
    routed, unrouted = world.add_deployment("a"), world.add_deployment("c")
    a1 = check.call("stage/warm of a1", lambda: world.stage_and_warm(routed))
    check.call("apply_traffic_split {a1: 10000}", lambda: world.set_split(routed, [(a1, 10000)]))
    before = world.snapshot()
    check.call("stage/warm of a2 (deployment with a route)", lambda: world.stage_and_warm(routed))
    check.call("stage/warm of c1 (deployment without a route)", lambda: world.stage_and_warm(unrouted))
    after = world.snapshot()
    problems = []
    for did, label in ((routed, "with a route"), (unrouted, "without a route")):
        if dict(before.weights[did]) != dict(after.weights[did]):
            problems.append(f"warm changed the weights of the deployment {label}: "
                            f"{dict(before.weights[did]) or '{}'} -> {dict(after.weights[did]) or '{}'}")
    check.require(problems)


@check("split-enforced")
def test_split_enforced(check, harness, world):
    caps = harness.descriptor.capabilities
    if not caps.observes_weights:
        check.skip("the descriptor says observe does not report weights (capabilities.observes_weights=False)")
    dep = world.add_deployment("a")
    r1 = check.call("stage/warm of the first revision", lambda: world.stage_and_warm(dep))
    r2 = check.call("stage/warm of the second revision", lambda: world.stage_and_warm(dep))
    check.call("apply_traffic_split {3333, 6667}", lambda: world.set_split(dep, [(r1, 3333), (r2, 6667)]))
    observation = check.call("observe", lambda: world.observe())
    recorded = {e.revision_id: e.weight_bps for e in world.env.split_for(dep).entries}
    if dep not in observation.deployments:
        check.fail(f"observe reports no weights for deployment {dep} after its split was applied")
    observed = {rid: int(w) for rid, w in observation.weights(dep).items()}
    tolerance = max(1, int(caps.weight_resolution_bps))  # a deviation must stay below one step
    problems = []
    for rid in sorted(set(recorded) | set(observed)):
        want, got = recorded.get(rid, 0), observed.get(rid, 0)
        if abs(want - got) >= tolerance:
            where = "" if rid in recorded else " (not in the split)"
            problems.append(f"revision {rid}{where}: observed {got} bps, recorded {want} bps")
    if problems:
        check.fail(f"observed weights differ from the split by more than weight_resolution_bps={tolerance}: "
                   + "; ".join(problems))


@check("drain-stops-serving")
def test_drain_stops_serving(check, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm", lambda: world.stage_and_warm(dep))
    check.call("drain", lambda: world.drain(rid))
    present, serving = world.snapshot().revision(rid)
    if serving:
        check.fail(f"after drain returned, observe reports revision {rid} still serving")


@check("drain-within-budget")
def test_drain_within_budget(check, harness, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm", lambda: world.stage_and_warm(dep))
    budget = world.env.revision(rid).drain_seconds + float(harness.descriptor.capabilities.drain_slack_seconds)
    started = time.monotonic()
    check.call("drain", lambda: world.drain(rid))
    elapsed = time.monotonic() - started
    if elapsed > budget:
        check.fail(f"drain took {elapsed:.2f}s; drain_seconds {world.env.revision(rid).drain_seconds} + "
                   f"drain_slack_seconds {harness.descriptor.capabilities.drain_slack_seconds} = {budget:g}s")


@check("archive-removes")
def test_archive_removes(check, world):
    dep = world.add_deployment("a")
    rid = check.call("stage/warm", lambda: world.stage_and_warm(dep))
    check.call("archive", lambda: world.archive(rid))
    present, serving = world.snapshot().revision(rid)
    if present or serving:
        check.fail(f"after archive returned, observe reports revision {rid} present={present} serving={serving}")


@check("archive-torn-down")
def test_archive_torn_down(check, world):
    dep = world.add_deployment("a")
    staged = world.record_revision(dep)
    check.call("stage", lambda: world.stage(staged))
    never_seen = world.record_revision(dep)
    problems = []
    for rid, label in ((staged, "staged but never warmed"), (never_seen, "never given to the provider")):
        _, exc = capture(lambda r=rid: world.archive(r))
        if exc is not None:
            problems.append(f"archive of a revision {label} raised {describe_error(exc)}")
    snap = world.snapshot()
    for rid in (staged, never_seen):
        if snap.revision(rid) != (False, False):
            problems.append(f"after archive, observe reports revision {rid} present/serving {snap.revision(rid)}")
    check.require(problems)


@check("observe-reads-provider")
def test_observe_reads_provider(check, world):
    dep = world.add_deployment("a")
    rid = world.record_revision(dep)
    world.record_ready(rid)
    world.record_split(dep, [(rid, 10000)])  # recorded only: the provider never saw any of it
    observation = check.call("observe", lambda: world.observe())
    problems = []
    seen = observation.revision(rid)
    if seen.present or seen.serving:
        problems.append(f"revision {rid} is recorded ready but was never staged or warmed, yet observe reports "
                        f"present={seen.present} serving={seen.serving}")
    weights = {r: w for r, w in observation.weights(dep).items() if w}
    if weights:
        problems.append(f"the split of deployment {dep} was recorded but never applied, yet observe reports "
                        f"weights {weights}")
    check.require(problems)


# --------------------------------------------------------------------------- errors


@check("errors-are-deployer-errors")
def test_errors_are_deployer_errors(check, harness, world):
    deployer = world.deployer
    dep = world.add_deployment("a")
    broken = world.record_revision(dep, workload=BROKEN_WORKLOAD)
    env = world.env
    calls = [
        ("stage", lambda: deployer.stage(env, broken)),
        ("warm", lambda: deployer.warm(env, broken, timeout=BROKEN_WARM_TIMEOUT)),
    ]
    world.touched.add(broken)
    routed = record_split(record_ready(world.env, broken), dep, [(broken, 10000)])
    calls += [
        ("apply_traffic_split", lambda: deployer.apply_traffic_split(routed, dep, timeout=BROKEN_WARM_TIMEOUT)),
        ("observe", lambda: deployer.observe(routed)),
    ]
    if deployer.implements("greentic_report_runtime_config"):
        calls.append(("report_runtime_config", lambda: deployer.report_runtime_config(routed)))
    if deployer.implements("greentic_preflight"):
        calls.append(("preflight", lambda: deployer.preflight(routed)))
    calls += [
        ("drain", lambda: deployer.drain(routed, broken)),
        ("archive", lambda: deployer.archive(routed, broken)),
    ]
    problems = []
    for verb, call in calls:
        _, exc = capture(call)
        if exc is None:
            continue
        if not isinstance(exc, DeployerError):
            problems.append(f"{verb} let {describe_error(exc)} escape ({type(exc).__module__}.{type(exc).__name__} "
                            "is not a DeployerError)")
        elif not str(exc).strip():
            problems.append(f"{verb} raised {type(exc).__name__} without a message")
    check.require(problems)


@check("warm-failure-cleans-up")
def test_warm_failure_cleans_up(check, world):
    dep = world.add_deployment("a")
    broken = world.record_revision(dep, workload=BROKEN_WORKLOAD)
    world.touched.add(broken)
    _, exc = capture(lambda: world.deployer.warm(world.env, broken, timeout=BROKEN_WARM_TIMEOUT))
    problems = []
    if exc is None:
        problems.append(f"warm of revision {broken}, whose workload cannot run "
                        f"(command {BROKEN_WORKLOAD.command[0]}, image {BROKEN_WORKLOAD.image}), succeeded")
    elif not isinstance(exc, DeployerError):
        problems.append(f"warm raised {describe_error(exc)}, which is not a DeployerError")
    present, serving = world.snapshot().revision(broken)
    if present or serving:
        problems.append(f"afterwards observe reports revision {broken} present={present} serving={serving}")
    check.require(problems)

