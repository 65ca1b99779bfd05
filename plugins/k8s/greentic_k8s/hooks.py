"""Hook implementations of the Kubernetes deployer: thin, they translate and delegate.

Importing this module imports neither lightkube nor kmock (a test proves it): the provider
work lives in :mod:`greentic_k8s.k8s` and is imported inside each hook.
"""

from __future__ import annotations

from pathlib import Path

from greentic_core import Capabilities, DeployerDescriptor, hookimpl

from . import __version__
from .answers import ANSWERS_SCHEMA, Answers

PATH = "greentic.deployer.k8s"


@hookimpl
def greentic_deployer_descriptor():
    return DeployerDescriptor(
        path=PATH,
        version=__version__,
        requires_core=">=0.1,<0.2",
        summary="Runs each revision as a Kubernetes Deployment and Service; weights traffic with a Gateway API "
                "HTTPRoute per deployment.",
        capabilities=Capabilities(
            weight_resolution_bps=1,  # HTTPRoute weights go to 1,000,000: basis points are written exactly
            drain_slack_seconds=15.0,
            observes_weights=True,
            max_split_entries=16,  # backendRefs per HTTPRoute rule
            extra={"objects": ["apps/v1 Deployment", "v1 Service", "gateway.networking.k8s.io/v1 HTTPRoute",
                               "v1 ConfigMap"]},
        ),
        answers_schema=ANSWERS_SCHEMA,
    )


@hookimpl
def greentic_stage_revision(env, revision_id, answers):
    from . import k8s

    return k8s.stage(env, revision_id, answers)


@hookimpl
def greentic_warm_revision(env, revision_id, answers, progress, timeout):
    from . import k8s

    return k8s.warm(env, revision_id, answers, progress, timeout)


@hookimpl
def greentic_drain_revision(env, revision_id, answers, progress, timeout):
    from . import k8s

    return k8s.drain(env, revision_id, answers, progress, timeout)


@hookimpl
def greentic_archive_revision(env, revision_id, answers, progress, timeout):
    from . import k8s

    return k8s.archive(env, revision_id, answers, progress, timeout)


@hookimpl
def greentic_apply_traffic_split(env, deployment_id, answers, progress, timeout):
    from . import k8s

    return k8s.apply_traffic_split(env, deployment_id, answers, progress, timeout)


@hookimpl
def greentic_observe(env, answers):
    from . import k8s

    return k8s.observe(env, answers)


@hookimpl
def greentic_preflight(env, answers):
    from . import k8s

    return k8s.preflight(env, answers)


@hookimpl
def greentic_validate_routes(env, deployment_id):
    from .render import route_problems

    binding = env.deployment(deployment_id).route_binding
    return route_problems(binding.hosts, binding.path_prefixes)


@hookimpl
def greentic_render(env, answers, deployment_id):
    from . import render

    return render.render_environment(env, Answers.parse(answers), deployment_id)


@hookimpl
def greentic_conformance_sandbox(workdir):
    from .sandbox import sandbox

    return sandbox(Path(workdir))
