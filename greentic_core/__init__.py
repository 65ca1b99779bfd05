"""greentic-core: the public API for users and plugin authors.

Everything a deployer plugin needs is importable from here (``from greentic_core import
hookimpl, DeployerDescriptor, WarmOutcome, ProviderError, ...``); the submodules are
implementation detail and may move.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # the names as type checkers and IDEs see them
    from .errors import (
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
    from .ids import PackDescriptor, mint_deployment_id, mint_revision_id
    from .markers import hookimpl, hookspec
    from .routes import InvalidRoute
    from .outcomes import (
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
    from .spec import (
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

#: Public name -> the private module that defines it. Each is imported on first access
#: (PEP 562), so `greentic-deployer --version` or a plugin importing only ``hookimpl`` does not
#: pay for every spec, outcome and route type at start-up.
_EXPORTS = {
    "DeployerError": "errors",
    "GreenticError": "errors",
    "InvalidAnswers": "errors",
    "InvalidSplit": "errors",
    "ProviderError": "errors",
    "ProviderTimeout": "errors",
    "RevisionNotFound": "errors",
    "SpecError": "errors",
    "SplitNotFound": "errors",
    "PackDescriptor": "ids",
    "mint_deployment_id": "ids",
    "mint_revision_id": "ids",
    "hookimpl": "markers",
    "hookspec": "markers",
    "InvalidRoute": "routes",
    "ArchiveOutcome": "outcomes",
    "Capabilities": "outcomes",
    "CheckStatus": "outcomes",
    "DeployerDescriptor": "outcomes",
    "DeploymentObservation": "outcomes",
    "DrainOutcome": "outcomes",
    "Observation": "outcomes",
    "PreflightCheck": "outcomes",
    "RevisionObservation": "outcomes",
    "StageOutcome": "outcomes",
    "TrafficSplitOutcome": "outcomes",
    "WarmOutcome": "outcomes",
    "BundleDeployment": "spec",
    "CapabilitySlot": "spec",
    "Environment": "spec",
    "HostConfig": "spec",
    "Lifecycle": "spec",
    "Revision": "spec",
    "RevisionRuntimeBlock": "spec",
    "RuntimeConfig": "spec",
    "TrafficSplit": "spec",
    "TrafficSplitEntry": "spec",
    "Workload": "spec",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
