"""Hook implementations of the aws-ecs deployer: thin, they translate and delegate.

Importing this module must not import boto3 (the registry lists plugins without loading any
cloud SDK): the provider module :mod:`greentic_aws.ecs` is imported inside each verb.
"""

from __future__ import annotations

from pathlib import Path

from greentic_core import (
    ArchiveOutcome,
    Capabilities,
    DeployerDescriptor,
    DrainOutcome,
    ProviderError,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
    hookimpl,
)

from . import __version__
from .answers import ANSWERS_SCHEMA, Answers
from .weights import MAX_TARGET_GROUPS_PER_ACTION, WEIGHT_RESOLUTION_BPS, to_alb_weights

PATH = "greentic.deployer.aws-ecs"


@hookimpl
def greentic_deployer_descriptor():
    return DeployerDescriptor(
        path=PATH,
        version=__version__,
        requires_core=">=0.1,<0.2",
        summary="Runs each revision as an ECS task set (EXTERNAL deployment controller) behind a weighted "
                "ALB forward action per deployment.",
        capabilities=Capabilities(
            weight_resolution_bps=WEIGHT_RESOLUTION_BPS,
            max_split_entries=MAX_TARGET_GROUPS_PER_ACTION,
            drain_slack_seconds=float(ANSWERS_SCHEMA["properties"]["drain_slack_seconds"]["default"]),
            observes_weights=True,
            extra={"alb_max_weight": 999, "weights": "basis points -> ALB weights 0..999, see README"},
        ),
        answers_schema=ANSWERS_SCHEMA,
    )


def _provider(answers, env, progress=None):
    from .ecs import EcsProvider

    return EcsProvider(Answers.parse(answers), env, progress=progress)


@hookimpl
def greentic_stage_revision(env, revision_id, answers, progress):
    return StageOutcome(detail=_provider(answers, env, progress).stage(revision_id))


def refuse_bad_routes(env, deployment_id: str, parsed: Answers) -> None:
    """The listener-rule conditions an ALB would refuse, refused before any AWS call (and before boto3 loads)."""
    from greentic_core.routes import invalid_route

    deployment = env.deployment(deployment_id)
    bundle_id = deployment.bundle_id if deployment is not None else next(
        (r.bundle_id for r in env.revisions if r.deployment_id == deployment_id), "")
    problems = parsed.route_problems(env_id=env.environment_id, deployment_id=deployment_id, bundle_id=bundle_id)
    if problems:
        raise invalid_route(deployment_id, problems, source=PATH)


@hookimpl
def greentic_warm_revision(env, revision_id, answers, progress, timeout):
    parsed = Answers.parse(answers)
    refuse_bad_routes(env, env.revision(revision_id).deployment_id, parsed)
    from .ecs import EcsProvider

    return WarmOutcome(detail=EcsProvider(parsed, env, progress=progress).warm(revision_id, timeout))


@hookimpl
def greentic_drain_revision(env, revision_id, answers, progress, timeout):
    return DrainOutcome(detail=_provider(answers, env, progress).drain(revision_id, timeout))


@hookimpl
def greentic_archive_revision(env, revision_id, answers, progress):
    return ArchiveOutcome(detail=_provider(answers, env, progress).archive(revision_id))


def refuse_oversized_split(deployment_id: str, entries: int) -> None:
    """The ALB limit of 5 target groups per forward action (moto does not enforce it)."""
    if entries > MAX_TARGET_GROUPS_PER_ACTION:
        raise ProviderError(
            f"the split of deployment {deployment_id} has {entries} entries; an ALB forward action holds at most "
            f"{MAX_TARGET_GROUPS_PER_ACTION} target groups",
            hint=f"record a split with at most {MAX_TARGET_GROUPS_PER_ACTION} revisions (drop the ones at 0 bps)",
            deployment_id=deployment_id, entries=entries, limit=MAX_TARGET_GROUPS_PER_ACTION)


@hookimpl
def greentic_apply_traffic_split(env, deployment_id, answers, progress):
    parsed = Answers.parse(answers)
    split = env.split_for(deployment_id)
    # Everything that can be refused without AWS is refused before the first call (and before boto3 loads).
    refuse_oversized_split(deployment_id, len(split.entries))
    refuse_bad_routes(env, deployment_id, parsed)
    conversion = to_alb_weights([e.weight_bps for e in split.entries])
    from .ecs import EcsProvider

    detail = EcsProvider(parsed, env, progress=progress).apply(deployment_id, conversion)
    return TrafficSplitOutcome(
        applied_deployment_id=deployment_id,
        applied_entries=split.entries,
        provider_weights=detail.pop("weights"),
        max_deviation_bps=conversion.max_deviation_bps,
        detail=detail,
    )


@hookimpl
def greentic_validate_routes(env, deployment_id, answers):
    deployment = env.deployment(deployment_id)
    return Answers.parse(answers).route_problems(env_id=env.environment_id, deployment_id=deployment_id,
                                                 bundle_id=deployment.bundle_id)


@hookimpl
def greentic_render(env, answers, deployment_id):
    from .render import render_requests

    return render_requests(env, Answers.parse(answers), deployment_id)


@hookimpl
def greentic_observe(env, answers):
    return _provider(answers, env).observe()


@hookimpl
def greentic_revision_window_metrics(env, answers, revision_ids, start, end):
    """The canary's ALB target-group metrics over the window, from CloudWatch (see cloudwatch.py)."""
    from .cloudwatch import window_metrics

    return window_metrics(Answers.parse(answers), env, revision_ids, start, end)


@hookimpl
def greentic_preflight(env, answers):
    return _provider(answers, env).preflight()


@hookimpl
def greentic_conformance_sandbox(workdir):
    from .sandbox import sandbox

    return sandbox(Path(workdir))
