"""Value types exchanged across the plugin contract: descriptor, outcomes, observations.

Plain frozen attrs classes so that plugins, the core and the conformance suite compare them
by value. None of them does I/O.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Mapping

import attrs

from .values import ValueRepr

if TYPE_CHECKING:  # an annotation only: loading a plugin (and `plugins list`) need not import the spec
    from .spec import TrafficSplitEntry

#: Verbs every deployer must implement; the registry reports a plugin missing one as invalid.
REQUIRED_HOOKS = (
    "greentic_deployer_descriptor",
    "greentic_stage_revision",
    "greentic_warm_revision",
    "greentic_drain_revision",
    "greentic_archive_revision",
    "greentic_apply_traffic_split",
    "greentic_observe",
)
#: Hooks a deployer may implement.
OPTIONAL_HOOKS = (
    "greentic_report_runtime_config",
    "greentic_preflight",
    "greentic_render",
    "greentic_conformance_sandbox",
    "greentic_revision_metrics",
    "greentic_revision_window_metrics",
    "greentic_validate_routes",
    "greentic_revision_logs",
)


@attrs.frozen(kw_only=True, repr=False)
class Capabilities(ValueRepr):
    """What a deployer can enforce, so users and the conformance suite know what to expect.

    ``weight_resolution_bps``: the smallest weight step the provider enforces, in basis points
    (1 = exact; an ALB with weights 0..999 has a coarser effective resolution).
    ``drain_slack_seconds``: how long after ``drain_seconds`` a drain may still take.
    ``observes_weights``: whether ``greentic_observe`` reports the weights the provider enforces.
    ``host_local_state``: whether what the provider runs lives on the machine that runs the
    command (in ``state_dir``), as local-process's processes do. On a shared store the core then
    records which host runs an environment and refuses provider changes from any other host
    (:mod:`greentic_core.host_state`).
    """

    weight_resolution_bps: int = 1
    drain_slack_seconds: float = 5.0
    observes_weights: bool = True
    host_local_state: bool = False
    max_split_entries: int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, repr=False)
class DeployerDescriptor(ValueRepr):
    """Who a deployer is and what it supports; returned by ``greentic_deployer_descriptor``.

    ``path`` must equal the plugin's entry-point name (e.g. ``acme.deployer.nomad``).
    ``requires_core`` is a PEP 440 specifier of the ``greentic-core`` versions the plugin works
    with (e.g. ``">=0.1,<0.2"``). ``answers_schema`` is a JSON Schema (draft 2020-12) that
    the core checks the answers against before any provider code runs; a property with
    ``"writeOnly": true`` (or listed in ``secret_answers``) is a secret and never printed or
    audited. ``waivers`` maps conformance check ids to the written reason they do not apply.
    """

    path: str
    version: str
    requires_core: str
    summary: str = ""
    capabilities: Capabilities = attrs.field(factory=Capabilities)
    answers_schema: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object"})
    secret_answers: tuple[str, ...] = ()
    waivers: Mapping[str, str] = attrs.field(factory=dict)

    def secret_keys(self) -> frozenset[str]:
        props = self.answers_schema.get("properties", {}) if isinstance(self.answers_schema, Mapping) else {}
        marked = {k for k, v in props.items() if isinstance(v, Mapping) and v.get("writeOnly")}
        return frozenset(marked | set(self.secret_answers))


@attrs.frozen(kw_only=True, repr=False)
class StageOutcome(ValueRepr):
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, repr=False)
class WarmOutcome(ValueRepr):
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, repr=False)
class DrainOutcome(ValueRepr):
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, repr=False)
class ArchiveOutcome(ValueRepr):
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, repr=False)
class TrafficSplitOutcome(ValueRepr):
    """What ``greentic_apply_traffic_split`` enforced.

    ``applied_deployment_id`` must equal the requested deployment and ``applied_entries`` the
    recorded entries. A provider with a coarser weight scale reports what it really wrote in
    ``provider_weights`` and the largest deviation from the recorded split in
    ``max_deviation_bps``.
    """

    applied_deployment_id: str
    applied_entries: tuple[TrafficSplitEntry, ...]
    provider_weights: Mapping[str, int] | None = None
    max_deviation_bps: int = 0
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, repr=False)
class RevisionObservation(ValueRepr):
    """What the provider really has for one revision."""

    revision_id: str
    present: bool
    serving: bool
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    detail: str = ""
    #: restarts a supervising provider made: ``{"count", "last_exit", "last_restart_at"}``
    restarts: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True, repr=False)
class DeploymentObservation(ValueRepr):
    """The weights the provider really enforces for one deployment, in basis points."""

    deployment_id: str
    weights: Mapping[str, int] = attrs.field(factory=dict)
    generation: int | None = None
    detail: str = ""


@attrs.frozen(kw_only=True, repr=False)
class Observation(ValueRepr):
    """Returned by ``greentic_observe``: provider truth, independent of what verbs returned.

    Revisions the provider knows nothing about may be absent from ``revisions`` (read as not
    present); deployments with no enforced route may be absent from ``deployments``.
    """

    revisions: Mapping[str, RevisionObservation] = attrs.field(factory=dict)
    deployments: Mapping[str, DeploymentObservation] = attrs.field(factory=dict)

    def revision(self, revision_id: str) -> RevisionObservation:
        return self.revisions.get(revision_id) or RevisionObservation(
            revision_id=revision_id, present=False, serving=False
        )

    def weights(self, deployment_id: str) -> Mapping[str, int]:
        found = self.deployments.get(deployment_id)
        return dict(found.weights) if found else {}


class CheckStatus(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@attrs.frozen(kw_only=True, repr=False)
class PreflightCheck(ValueRepr):
    """One named check of ``greentic_preflight`` (shown by ``env doctor``)."""

    name: str
    status: CheckStatus
    message: str = ""
