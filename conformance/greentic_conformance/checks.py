"""The conformance checks: stable ids, titles and the rule each one enforces.

Ids are part of the public interface: deployers name them in ``DeployerDescriptor.waivers``,
CI pipelines grep for them in reports. An id is never renamed or reused; a retired check keeps
its id reserved.

``core_enforced`` says where the rule is already guaranteed by greentic-core for *every*
plugin, so that a plugin cannot break it on its own. Those checks are kept (they cost
milliseconds) because they pin the behaviour of the core the plugin actually runs against: a
plugin tested with an older or patched core, or a future core that regresses, is caught. The
suite's own tests prove each of them can fail by switching the core's guard off in the test
process (see ``conformance/tests/conformance_core_patch.py``).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import attrs

F = TypeVar("F", bound=Callable[..., object])


@attrs.frozen(kw_only=True)
class Check:
    id: str
    title: str
    rule: str
    core_enforced: str = ""  # how the core already guarantees it, if it does

    def describe(self) -> str:
        return f"[{self.id}] {self.rule}"


CHECKS: tuple[Check, ...] = (
    Check(
        id="descriptor-well-formed",
        title="Descriptor is well formed",
        rule=("the descriptor's path equals the entry-point name, its version is SemVer, requires_core is a "
              "PEP 440 specifier that admits the running greentic-core, capabilities are in range "
              "(1 <= weight_resolution_bps <= 10000, drain_slack_seconds >= 0, max_split_entries >= 1), "
              "answers_schema is a valid JSON Schema and every waiver names a check of this suite with a reason"),
        core_enforced=("partly: the registry refuses a plugin whose path, version or requires_core is wrong "
                       "(then every check fails with the registry's reason); capabilities, schema and waivers "
                       "are checked only here"),
    ),
    Check(
        id="answers-schema-rejects-malformed",
        title="Malformed answers are rejected before the provider runs",
        rule=("binding with an unknown answers key or a value of the wrong type raises InvalidAnswers, "
              "no provider hook runs and the observed state is unchanged (the answers schema must set "
              "additionalProperties: false and declare the type of each property)"),
        core_enforced=("the core validates answers against the plugin's schema before any hook; whether "
                       "malformed answers are rejected depends on the schema the plugin declares"),
    ),
    Check(
        id="happy-path",
        title="Blue/green walk succeeds",
        rule=("stage, warm, apply a split, shift all weight to a new revision (the old one kept at weight 0), "
              "drain the old revision, apply a split without it and archive it: every call succeeds and "
              "returns its outcome type"),
    ),
    Check(
        id="idempotent-stage",
        title="Stage is idempotent",
        rule="staging a revision twice succeeds twice and the observed state after the second call equals the first",
    ),
    Check(
        id="idempotent-warm",
        title="Warm is idempotent",
        rule=("warming a serving revision again succeeds and leaves it serving: the observed state after the "
              "second call equals the first"),
    ),
    Check(
        id="idempotent-apply-split",
        title="Applying a split is idempotent",
        rule="applying the same recorded split twice succeeds twice and the observed weights are unchanged",
    ),
    Check(
        id="idempotent-drain",
        title="Drain is idempotent",
        rule="draining a drained (stopped) revision succeeds and the observed state is unchanged",
    ),
    Check(
        id="idempotent-archive",
        title="Archive is idempotent",
        rule="archiving an archived revision succeeds and the observed state is unchanged",
    ),
    Check(
        id="unknown-revision-rejected",
        title="Unknown revision is rejected before the provider runs",
        rule=("stage, warm, drain and archive of a revision id that is not in the environment raise "
              "RevisionNotFound, no provider hook runs and the observed state is unchanged"),
        core_enforced="BoundDeployer runs require_revision before every revision verb",
    ),
    Check(
        id="invalid-split-rejected",
        title="Invalid split is rejected before the provider runs",
        rule=("apply_traffic_split of a split whose weights do not sum to 10000 (or with an entry above "
              "10000) raises InvalidSplit, no provider hook runs and the observed state is unchanged"),
        core_enforced="BoundDeployer runs require_valid_split before apply_traffic_split",
    ),
    Check(
        id="missing-split-rejected",
        title="Missing split is rejected before the provider runs",
        rule=("apply_traffic_split for a deployment without a recorded split raises SplitNotFound, no "
              "provider hook runs and the observed state is unchanged"),
        core_enforced="BoundDeployer runs require_valid_split before apply_traffic_split",
    ),
    Check(
        id="hostile-routes-rejected",
        title="Hostile route values are rejected before the provider runs",
        rule=("a deployment whose routes hold an upper-case host, a host with a port, an IP address, a host "
              "with a trailing dot, 17 hosts, or a path prefix with '..', '//' or a space: validate_routes, "
              "stage, warm and apply_traffic_split raise a DeployerError, no provider hook runs and the "
              "observed state is unchanged"),
        core_enforced=("BoundDeployer checks the shared route rules (greentic_core.routes), then the plugin's "
                       "greentic_validate_routes, before stage, warm and apply_traffic_split"),
    ),
    Check(
        id="cross-deployment-isolation",
        title="Applying one deployment's split leaves the others alone",
        rule=("applying deployment A's split leaves deployment B's observed weights unchanged: both when B's "
              "recorded split was never applied and when B's recorded split changed since it was applied"),
    ),
    Check(
        id="apply-outcome-matches-split",
        title="Split outcome echoes the recorded split",
        rule=("the TrafficSplitOutcome names the requested deployment and its applied_entries equal the "
              "recorded entries, in order"),
        core_enforced="partly: BoundDeployer refuses an outcome naming another deployment; entries are checked only here",
    ),
    Check(
        id="runtime-config-matches-projection",
        title="Reported runtime config has the core projection's weights",
        rule=("greentic_report_runtime_config, when implemented, returns the environment id and exactly the "
              "core projection's blocks (deployment, revision, bundle, weight, in order); it may only add "
              "provider-discovered values"),
    ),
    Check(
        id="stage-does-not-serve",
        title="Stage starts nothing that serves",
        rule="after stage, observe does not report the revision serving",
    ),
    Check(
        id="warm-serves",
        title="Warm makes the revision serve",
        rule="after warm returns, observe reports the revision present and serving",
    ),
    Check(
        id="warm-does-not-route",
        title="Warm does not route traffic",
        rule=("warming a revision leaves every deployment's observed weights unchanged, whether or not its "
              "deployment already has a route: only apply_traffic_split routes"),
    ),
    Check(
        id="split-enforced",
        title="Observed weights equal the applied split",
        rule=("after apply_traffic_split returns, observe reports the recorded weights of the deployment, each "
              "within the descriptor's weight_resolution_bps, and no weight for a revision outside the split"),
    ),
    Check(
        id="drain-stops-serving",
        title="Drain stops the revision",
        rule="after drain returns, observe does not report the revision serving",
    ),
    Check(
        id="drain-within-budget",
        title="Drain returns within its budget",
        rule="drain returns within the revision's drain_seconds plus the descriptor's drain_slack_seconds",
    ),
    Check(
        id="archive-removes",
        title="Archive removes the revision",
        rule="after archive returns, observe reports the revision absent (not present, not serving)",
    ),
    Check(
        id="archive-torn-down",
        title="Archive of a revision that was never warmed succeeds",
        rule=("archive succeeds for a revision that was only staged and for one the provider never saw, "
              "and observe then reports it absent"),
    ),
    Check(
        id="observe-reads-provider",
        title="Observe reports provider state, not the environment",
        rule=("a revision recorded ready but never staged or warmed is reported absent, and a split recorded "
              "but never applied has no observed weights"),
    ),
    Check(
        id="errors-are-deployer-errors",
        title="Only DeployerError escapes a call",
        rule=("every verb, observe, report_runtime_config and preflight, called for a revision whose workload "
              "cannot run, either succeeds or raises a DeployerError with a message; no other exception "
              "(SystemExit from sys.exit or click, a BaseException subclass) escapes"),
        core_enforced=("partly: BoundDeployer converts every Exception into ProviderError, so only exceptions "
                       "outside Exception (SystemExit, BaseException subclasses) can fail this check"),
    ),
    Check(
        id="warm-failure-cleans-up",
        title="A warm that cannot serve fails and leaves nothing behind",
        rule=("warm of a revision whose workload cannot run raises a DeployerError, and afterwards observe "
              "reports the revision neither present nor serving"),
    ),
)

BY_ID: dict[str, Check] = {check.id: check for check in CHECKS}
assert len(BY_ID) == len(CHECKS), "duplicate check id"


def get(check_id: str) -> Check:
    return BY_ID[check_id]


def check(check_id: str) -> Callable[[F], F]:
    """Mark a suite test function as the implementation of ``check_id`` (a plain attribute, no marker)."""
    spec = BY_ID[check_id]

    def decorate(func: F) -> F:
        func.__greentic_check__ = spec.id  # type: ignore[attr-defined]
        return func

    return decorate


def check_id_of(item: object) -> str | None:
    """The check id of a collected pytest item, or None when it is not a conformance check."""
    func = getattr(item, "function", None)
    return getattr(func, "__greentic_check__", None)


class Violation(AssertionError):
    """A check failed: the message starts with the check id and states the rule that was broken."""


def violated(check_id: str, detail: str) -> Violation:
    spec = BY_ID[check_id]
    return Violation(f"[{spec.id}] {detail} -- rule: {spec.rule}")
