"""The one error hierarchy of greentic-core.

Every error carries a stable ``kind`` (used in ``--json`` output and exit-code mapping), a
one-line message, and where useful a ``hint`` saying how to fix it. Spec, lifecycle, traffic
and store errors are *typed*: each rule has its own class and keeps the rule's data in
``details`` so callers can react without parsing text.
"""

from __future__ import annotations

from typing import Any, ClassVar


#: An error message or hint longer than this (it quotes a huge value from a hostile document)
#: keeps its start and end with the middle cut out, so it stays one readable line. The cut is
#: made only where the text leaves the process (:meth:`GreenticError.to_json`, the CLI's
#: output, the audit), never when the error is made: secrets are scrubbed from the whole text
#: first, so a long secret is never cut into pieces that no longer match it.
MAX_MESSAGE_CHARS = 1000


def bounded(text: str) -> str:
    """``text`` with its middle cut out when longer than :data:`MAX_MESSAGE_CHARS`."""
    if not isinstance(text, str) or len(text) <= MAX_MESSAGE_CHARS:
        return text
    head, tail = MAX_MESSAGE_CHARS * 2 // 3, MAX_MESSAGE_CHARS // 4
    return f"{text[:head]} ...[{len(text) - head - tail} characters cut]... {text[-tail:]}"


class GreenticError(Exception):
    """Base of everything greentic-core raises on purpose."""

    kind: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message  # whole: scrubbed before it is cut (see MAX_MESSAGE_CHARS)
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return bounded(self.message)  # scrub ``message`` (whole), never str(): it may be cut

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "error": type(self).__name__, "message": bounded(self.message)}
        if self.hint:
            doc["hint"] = bounded(self.hint)
        if self.details:
            doc["details"] = {k: _jsonable(v) for k, v in self.details.items()}
        return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------- spec


class SpecError(GreenticError):
    """A document breaks a rule of the environment spec (upstream-spec section 3)."""

    kind = "validation"
    exit_code = 2
    rule: ClassVar[str] = "SpecError"
    template: ClassVar[str] = "{message}"

    def __init__(self, message: str | None = None, *, hint: str | None = None, **details: Any) -> None:
        if message is None:
            message = f"{self.rule}: " + self.template.format(**details)
        super().__init__(message, hint=hint, **details)


class SpecFormatError(SpecError):
    """A scalar (id, descriptor, reference, timestamp) has the wrong format."""

    rule = "SpecFormat"

    def __init__(self, rule: str, message: str, **details: Any) -> None:
        super().__init__(f"{rule}: {message}", **details)
        self.format_rule = rule


class DecodeError(SpecError):
    """A JSON document does not have the shape of the spec type (wrong key, type or value)."""

    rule = "Decode"


def _spec_rule(name: str, template: str) -> type[SpecError]:
    cls = type(name, (SpecError,), {"rule": name, "template": template, "__doc__": template})
    cls.__module__ = __name__
    return cls


SchemaMismatch = _spec_rule("SchemaMismatch", "expected schema {expected!r}, found {actual!r}")
EnvIdMismatch = _spec_rule("EnvIdMismatch", "{context} env_id {actual!r} does not match environment_id {expected!r}")
InvalidPublicBaseUrl = _spec_rule("InvalidPublicBaseUrl", "public_base_url {value!r} is invalid: {reason}")
DuplicateCapabilitySlot = _spec_rule("DuplicateCapabilitySlot", "capability slot {slot!r} is bound more than once")
CrossEnvRef = _spec_rule(
    "CrossEnvRef", "{context} {uri!r} points at env {actual_env!r}, expected {expected_env!r}"
)
BasisPointsEntryTooLarge = _spec_rule(
    "BasisPointsEntryTooLarge", "{context} entry of {value} basis points is above 10000"
)
BasisPointsSum = _spec_rule("BasisPointsSum", "{context} basis points sum to {sum}, must be exactly 10000")
ConfigOverridesInvalid = _spec_rule("ConfigOverridesInvalid", "deployment {deployment} config_overrides: {reason}")
UnknownRevision = _spec_rule("UnknownRevision", "{context} names unknown revision {revision_id}")
UnknownDeployment = _spec_rule("UnknownDeployment", "traffic split names unknown deployment {deployment_id}")
BundleRevisionWrongDeployment = _spec_rule(
    "BundleRevisionWrongDeployment",
    "deployment {deployment} lists revision {revision} which belongs to deployment {actual_deployment}",
)
BundleRevisionWrongBundle = _spec_rule(
    "BundleRevisionWrongBundle",
    "deployment {deployment} lists revision {revision} of bundle {actual_bundle!r}, expected {expected_bundle!r}",
)
ConfigOverridePackNotInRevisions = _spec_rule(
    "ConfigOverridePackNotInRevisions",
    "deployment {deployment} overrides pack {pack_id!r} which none of its revisions uses",
)
SplitDeploymentBundleMismatch = _spec_rule(
    "SplitDeploymentBundleMismatch",
    "split for deployment {deployment} says bundle {split_bundle!r} but the deployment is bundle {deployment_bundle!r}",
)
SplitRevisionWrongDeployment = _spec_rule(
    "SplitRevisionWrongDeployment",
    "split entry {revision} belongs to deployment {actual_deployment}, expected {expected_deployment}",
)
SplitRevisionWrongBundle = _spec_rule(
    "SplitRevisionWrongBundle",
    "split entry {revision} is bundle {actual_bundle!r}, expected {expected_bundle!r}",
)
MessagingEndpointInvalid = _spec_rule("MessagingEndpointInvalid", "messaging endpoint {endpoint_id}: {reason}")
DuplicateMessagingEndpoint = _spec_rule("DuplicateMessagingEndpoint", "messaging endpoint {endpoint_id} appears twice")
DuplicateProviderInstance = _spec_rule(
    "DuplicateProviderInstance", "messaging provider instance {provider_type}/{provider_id} appears twice"
)
MessagingEndpointBundleNotLinked = _spec_rule(
    "MessagingEndpointBundleNotLinked",
    "messaging endpoint {endpoint_id} links bundle {bundle_id!r} which no deployment has",
)
WelcomeFlowBundleNotLinked = _spec_rule(
    "WelcomeFlowBundleNotLinked",
    "messaging endpoint {endpoint_id} welcome flow uses bundle {bundle_id!r} which it does not link",
)
InvalidExtensionInstanceId = _spec_rule(
    "InvalidExtensionInstanceId", "extension {path!r} has an invalid instance id: {reason}"
)
DuplicateExtension = _spec_rule("DuplicateExtension", "extension ({path!r}, instance {instance_id!r}) is bound twice")
# Gaps of upstream-spec 3.2 that this project closes (docs/spec.md says why).
DuplicateRevisionId = _spec_rule("DuplicateRevisionId", "revision id {revision_id} appears more than once")
DuplicateDeploymentId = _spec_rule("DuplicateDeploymentId", "deployment id {deployment_id} appears more than once")
DuplicateSplit = _spec_rule("DuplicateSplit", "deployment {deployment_id} has more than one traffic split")
DuplicateSplitEntry = _spec_rule(
    "DuplicateSplitEntry", "split for deployment {deployment_id} names revision {revision_id} twice"
)
DuplicateSequence = _spec_rule(
    "DuplicateSequence", "deployment {deployment_id} has two revisions with sequence {sequence}"
)


# --------------------------------------------------------------------------- engine


class EngineError(GreenticError):
    """A lifecycle or traffic operation was refused; the environment is unchanged."""

    kind = "conflict"
    exit_code = 3


class NotFound(EngineError):
    kind = "not_found"
    exit_code = 4


class RevisionNotFoundInEnv(NotFound):
    def __init__(self, env_id: str, revision_id: str) -> None:
        super().__init__(
            f"revision {revision_id} not found in environment {env_id!r}",
            hint="list revisions with `greentic-deployer revision list ENV`",
            env_id=env_id,
            revision_id=revision_id,
        )


class DeploymentNotFound(NotFound):
    def __init__(self, env_id: str, deployment_id: str) -> None:
        super().__init__(
            f"deployment {deployment_id} not found in environment {env_id!r}",
            hint="list deployments with `greentic-deployer deployment list ENV`",
            env_id=env_id,
            deployment_id=deployment_id,
        )


class DuplicateRevision(EngineError):
    pass


class DuplicateBundle(EngineError):
    pass


class EmptyChain(EngineError):
    kind = "usage"
    exit_code = 2


class InvalidTransition(EngineError):
    pass


class LifecycleConflict(EngineError):
    pass


class ActiveTrafficReference(EngineError):
    pass


class HealthGateFailed(EngineError):
    """The health gate failed: the revision was recorded ``failed`` (the one error that mutates)."""

    kind = "health_gate_failed"


class TrafficError(EngineError):
    pass


class IdempotencyKeyReused(TrafficError):
    pass


class NotReady(TrafficError):
    pass


class NoSplit(TrafficError):
    kind = "not_found"
    exit_code = 4


class NoPreviousSnapshot(TrafficError):
    pass


class SnapshotDecode(TrafficError):
    pass


class InvalidWeights(TrafficError):
    kind = "usage"
    exit_code = 2


# --------------------------------------------------------------------------- store


class StoreError(GreenticError):
    kind = "store"
    exit_code = 5


class UnsafeEnvId(StoreError):
    kind = "usage"
    exit_code = 2


class EnvironmentNotFound(StoreError):
    kind = "not_found"
    exit_code = 4


class EnvironmentExists(StoreError):
    kind = "conflict"
    exit_code = 3


# --------------------------------------------------------------------------- deployer contract


class DeployerError(GreenticError):
    """Base of every error a deployer verb may raise (the plugin contract's error type)."""

    kind = "deployer"
    exit_code = 1


class RevisionNotFound(DeployerError):
    """The revision named in a verb call is not in the environment (raised before the provider runs)."""

    kind = "not_found"
    exit_code = 4

    def __init__(self, env_id: str, revision_id: str) -> None:
        super().__init__(
            f"revision {revision_id} not found in environment {env_id!r}",
            hint="list revisions with `greentic-deployer revision list ENV`",
            env_id=env_id,
            revision_id=revision_id,
        )


class SplitNotFound(DeployerError):
    """No traffic split is recorded for the deployment (raised before the provider runs)."""

    kind = "not_found"
    exit_code = 4

    def __init__(self, env_id: str, deployment_id: str) -> None:
        super().__init__(
            f"no traffic split recorded for deployment {deployment_id} in environment {env_id!r}",
            hint="record one with `greentic-deployer traffic set ENV DEPLOYMENT REV=10000`",
            env_id=env_id,
            deployment_id=deployment_id,
        )


class InvalidSplit(DeployerError):
    """The recorded split breaks the 10000-basis-point invariant (raised before the provider runs)."""

    kind = "validation"
    exit_code = 2

    def __init__(self, deployment_id: str, sum: int, reason: str | None = None) -> None:
        message = reason or f"weights sum to {sum} basis points, must be exactly 10000"
        super().__init__(
            f"traffic split for deployment {deployment_id} is invalid: {message}",
            deployment_id=deployment_id,
            sum=sum,
        )


class InvalidAnswers(DeployerError):
    """The provider answers do not match the deployer's answers schema (raised before the provider runs)."""

    kind = "validation"
    exit_code = 2


class ProviderError(DeployerError):
    """The provider failed. Carries what was called and what the provider said."""

    kind = "provider"
    exit_code = 1


class ProviderTimeout(ProviderError):
    kind = "timeout"
    exit_code = 6


# --------------------------------------------------------------------------- registry


class RegistryError(GreenticError):
    kind = "plugin"
    exit_code = 7


class PluginNotFound(RegistryError):
    pass


class PluginUnusable(RegistryError):
    """The plugin is installed but broken, invalid, disabled or incompatible."""


class VersionPinMismatch(RegistryError):
    pass
