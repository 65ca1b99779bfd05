"""greentic-core: the public API for users and plugin authors.

Everything a deployer plugin needs is importable from here (``from greentic_core import
hookimpl, DeployerDescriptor, WarmOutcome, ProviderError, ...``); the submodules are
implementation detail and may move.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    DeployerError,
    GreenticError,
    InvalidAnswers,
    InvalidSplit,
    ProviderError,
    ProviderTimeout,
    RevisionNotFound,
    SpecError,
    SplitNotFound,
)
from .ids import PackDescriptor, mint_deployment_id, mint_revision_id  # noqa: E402
from .markers import hookimpl, hookspec  # noqa: E402
from .routes import InvalidRoute  # noqa: E402
from .outcomes import (  # noqa: E402
    ArchiveOutcome,
    Capabilities,
    CheckStatus,
    DeployerDescriptor,
    DeploymentObservation,
    DrainOutcome,
    Observation,
    PreflightCheck,
    RevisionObservation,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
)
from .spec import (  # noqa: E402
    BundleDeployment,
    CapabilitySlot,
    Environment,
    HostConfig,
    Lifecycle,
    Revision,
    RevisionRuntimeBlock,
    RuntimeConfig,
    TrafficSplit,
    TrafficSplitEntry,
    Workload,
)

__all__ = [
    "__version__",
    # plugin markers
    "hookimpl",
    "hookspec",
    # descriptor and outcomes
    "Capabilities",
    "DeployerDescriptor",
    "StageOutcome",
    "WarmOutcome",
    "DrainOutcome",
    "ArchiveOutcome",
    "TrafficSplitOutcome",
    "Observation",
    "RevisionObservation",
    "DeploymentObservation",
    "PreflightCheck",
    "CheckStatus",
    # errors
    "GreenticError",
    "SpecError",
    "DeployerError",
    "RevisionNotFound",
    "SplitNotFound",
    "InvalidSplit",
    "InvalidAnswers",
    "InvalidRoute",
    "ProviderError",
    "ProviderTimeout",
    # spec types
    "Environment",
    "HostConfig",
    "BundleDeployment",
    "Revision",
    "Workload",
    "Lifecycle",
    "CapabilitySlot",
    "TrafficSplit",
    "TrafficSplitEntry",
    "RuntimeConfig",
    "RevisionRuntimeBlock",
    "PackDescriptor",
    "mint_revision_id",
    "mint_deployment_id",
]
