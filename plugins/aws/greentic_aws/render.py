"""The dry run of the aws-ecs deployer: the AWS requests it would send for an environment as recorded.

No client is created and nothing is read from AWS, so values only AWS knows appear as
placeholders in angle brackets: the task definition ARN that ``RegisterTaskDefinition``
returns, the target group a revision claims from the pool at warm, the rule priority chosen at
the traffic change (from ``rule_priorities``, see the README). Every request is
``{"service": "ecs" | "elbv2", "operation": <API name>, "params": {...}}``, with ``"note"``
where a value is decided at run time. The order is the order of a first deployment from
scratch: per deployment its ECS service, per running revision its task definition and task
set, then per recorded split its listener rule (or the listener's default action).
"""

from __future__ import annotations

from typing import Any

from greentic_core import Environment, Lifecycle

from .answers import Answers
from .ecs import EcsProvider, elb_tags, forward_action, ownership
from .weights import to_alb_weights

RUNNING = frozenset({Lifecycle.WARMING, Lifecycle.READY, Lifecycle.DRAINING})
TASK_DEFINITION = "<the ARN RegisterTaskDefinition returns>"


def target_group_placeholder(revision_id: str) -> str:
    return f"<the target group revision {revision_id} claims from target_group_arns>"


def _request(service: str, operation: str, params: dict[str, Any], note: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"service": service, "operation": operation, "params": params}
    if note:
        doc["note"] = note
    return doc


def render_requests(env: Environment, answers: Answers, deployment_id: str | None = None) -> list[dict[str, Any]]:
    """The requests for ``env`` (or one deployment of it), as data; see the module docstring."""
    provider = EcsProvider(answers, env)  # clients are created on first use only: never here
    deployments = [d for d in dict.fromkeys(r.deployment_id for r in env.revisions)
                   if deployment_id is None or d == deployment_id]
    out: list[dict[str, Any]] = []
    for dep in deployments:
        running = [r for r in env.revisions if r.deployment_id == dep and (
            r.lifecycle in RUNNING or (r.lifecycle == Lifecycle.INACTIVE and r.warmed_at is not None))]
        if not running:
            continue
        out.append(_request("ecs", "CreateService", provider.service_request(dep, running[0].revision_id),
                            note="only when the deployment has no service yet"))
        service = {"serviceArn": f"<the ARN of service {provider.service_request(dep, '')['serviceName']}>"}
        for revision in running:
            out.append(_request("ecs", "RegisterTaskDefinition",
                                provider.task_definition(revision, provider.image(revision))))
            request = provider.task_set_request(service, revision, TASK_DEFINITION,
                                                target_group_placeholder(revision.revision_id))
            if revision.lifecycle == Lifecycle.INACTIVE:
                request["scale"] = {"value": 0.0, "unit": "PERCENT"}
            out.append(_request("ecs", "CreateTaskSet", request))
    for split in env.traffic_splits:
        if deployment_id is not None and split.deployment_id != deployment_id:
            continue
        conversion = to_alb_weights([e.weight_bps for e in split.entries])
        actions = forward_action([(target_group_placeholder(e.revision_id), w)
                                  for e, w in zip(split.entries, conversion.weights)])
        if answers.uses_rule:
            conditions = answers.conditions(env_id=env.environment_id, deployment_id=split.deployment_id,
                                            bundle_id=provider.bundle_of(split.deployment_id))
            first, last = answers.rule_priorities["first"], answers.rule_priorities["last"]
            out.append(_request(
                "elbv2", "CreateRule",
                {"ListenerArn": answers.listener_arn, "Conditions": conditions, "Actions": actions,
                 "Tags": elb_tags(ownership(env.environment_id, split.deployment_id))},
                note=f"Priority: after the highest used in {first}..{last}, else the lowest free one; "
                     "ModifyRule with the same Actions when the rule exists"))
        else:
            out.append(_request("elbv2", "ModifyListener",
                                {"ListenerArn": answers.listener_arn, "DefaultActions": actions}))
    return out
