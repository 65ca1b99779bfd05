"""The aws-ecs answers: the JSON Schema (checked by the core before any hook runs) and the parsed form.

``Answers.parse`` checks again what the schema says (a hook may be called directly, without
the core) and refuses unknown keys, so a typo never silently means "use the default".
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import attrs

from greentic_core import InvalidAnswers

_ARN = "^arn:aws[a-zA-Z-]*:"
TG_ARN_PATTERN = _ARN + "elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]+$"
LISTENER_ARN_PATTERN = _ARN + "elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener/(app|net|gwy)/[^/]+/[0-9a-f]+/[0-9a-f]+$"
ROLE_ARN_PATTERN = _ARN + "iam::[0-9]{12}:role/.+$"
REGION_PATTERN = "^[a-z]{2}(-[a-z]+)+-[0-9]+$"
PLACEHOLDERS = ("{env_id}", "{deployment_id}", "{bundle_id}", "{revision_id}")

ANSWERS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["region", "cluster", "subnets", "security_groups", "target_group_arns", "listener_arn"],
    "properties": {
        "region": {"type": "string", "pattern": REGION_PATTERN, "description": "AWS region, e.g. eu-west-1."},
        "endpoint_url": {
            "type": "string", "pattern": "^https?://[^\\s/]+(/.*)?$",
            "description": "Send every ECS and ELBv2 call here instead of AWS (a local emulator, e.g. "
                           "http://127.0.0.1:5000).",
        },
        "access_key_id": {"type": "string", "minLength": 1, "writeOnly": True,
                          "description": "Static access key (for local endpoints); default: the AWS credential chain."},
        "secret_access_key": {"type": "string", "minLength": 1, "writeOnly": True,
                              "description": "Secret of access_key_id."},
        "session_token": {"type": "string", "minLength": 1, "writeOnly": True,
                          "description": "Session token of temporary credentials."},
        "cluster": {"type": "string", "minLength": 1, "maxLength": 2048,
                    "description": "ECS cluster name or ARN; must exist."},
        "subnets": {"type": "array", "minItems": 1, "maxItems": 16, "uniqueItems": True,
                    "items": {"type": "string", "pattern": "^subnet-[0-9a-f]+$"},
                    "description": "Subnets of the tasks (awsvpc)."},
        "security_groups": {"type": "array", "minItems": 1, "maxItems": 5, "uniqueItems": True,
                            "items": {"type": "string", "pattern": "^sg-[0-9a-f]+$"},
                            "description": "Security groups of the tasks."},
        "assign_public_ip": {"type": "boolean", "default": False},
        "target_group_arns": {
            "type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": True,
            "items": {"type": "string", "pattern": TG_ARN_PATTERN},
            "description": "The pool of target groups (target type ip) revisions may be bound to; "
                           "one per warm revision, never shared.",
        },
        "listener_arn": {"type": "string", "pattern": LISTENER_ARN_PATTERN,
                         "description": "The ALB listener that carries the weighted forward actions."},
        "routing_host": {
            "type": "string", "minLength": 1, "maxLength": 128,
            "description": "Host-header condition of a per-deployment listener rule (placeholders "
                           "{env_id} {deployment_id} {bundle_id}). Unset together with routing_path: "
                           "the listener's default action is used (one deployment per listener).",
        },
        "routing_path": {
            "type": "string", "pattern": "^/", "maxLength": 128,
            "description": "Path-pattern condition of the per-deployment listener rule (same placeholders).",
        },
        "rule_priorities": {
            "type": "object", "additionalProperties": False, "required": ["first", "last"],
            "properties": {"first": {"type": "integer", "minimum": 1, "maximum": 50000},
                           "last": {"type": "integer", "minimum": 1, "maximum": 50000}},
            "description": "Priority range of the listener rules this provider creates (ALB: 1..50000, lower "
                           "wins). A new rule goes after the highest priority used in the range, else into the "
                           "lowest free one. Default: 1..50000. Give a range below your own catch-all rules "
                           "(e.g. first 1, last 99 when yours start at 100) so deployments are matched first.",
        },
        "cpu": {"type": "string", "pattern": "^[0-9]+$", "default": "256", "description": "Task CPU units."},
        "memory": {"type": "string", "pattern": "^[0-9]+$", "default": "512", "description": "Task memory (MiB)."},
        "execution_role_arn": {"type": "string", "pattern": ROLE_ARN_PATTERN},
        "task_role_arn": {"type": "string", "pattern": ROLE_ARN_PATTERN},
        "container_name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,255}$", "default": "app"},
        "container_port": {"type": "integer", "minimum": 1, "maximum": 65535,
                           "description": "Default: the revision workload's port (8080)."},
        "launch_type": {"type": "string", "enum": ["FARGATE", "EC2"], "default": "FARGATE"},
        "desired_count": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1,
                          "description": "Tasks of the ECS service; each task set runs a percentage of it."},
        "default_image": {
            "type": "string", "minLength": 1, "maxLength": 1024,
            "description": "Image for revisions without workload.image (placeholders {env_id} "
                           "{deployment_id} {bundle_id} {revision_id}).",
        },
        "warm_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 7200, "default": 600},
        "poll_interval_seconds": {"type": "number", "minimum": 0.01, "maximum": 60, "default": 5},
        "failed_tasks_limit": {
            "type": "integer", "minimum": 0, "maximum": 100, "default": 2,
            "description": "Warm fails early (quoting ECS's stopped reason) once this many tasks of the revision "
                           "stopped while it warmed; 0: only the timeout ends a warm.",
        },
        "drain_slack_seconds": {"type": "number", "minimum": 0, "maximum": 600, "default": 10,
                                "description": "How long past drain_seconds drain may wait for targets."},
    },
}

_DEFAULTS = {k: v["default"] for k, v in ANSWERS_SCHEMA["properties"].items() if "default" in v}
_REQUIRED = tuple(ANSWERS_SCHEMA["required"])


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Answers:
    region: str
    cluster: str
    subnets: tuple[str, ...] = attrs.field(converter=_tuple)
    security_groups: tuple[str, ...] = attrs.field(converter=_tuple)
    target_group_arns: tuple[str, ...] = attrs.field(converter=_tuple)
    listener_arn: str
    endpoint_url: str | None = None
    access_key_id: str | None = attrs.field(default=None, repr=False)
    secret_access_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    assign_public_ip: bool = False
    routing_host: str | None = None
    routing_path: str | None = None
    cpu: str = "256"
    memory: str = "512"
    execution_role_arn: str | None = None
    task_role_arn: str | None = None
    container_name: str = "app"
    container_port: int | None = None
    launch_type: str = "FARGATE"
    desired_count: int = 1
    default_image: str | None = None
    warm_timeout_seconds: float = 600.0
    poll_interval_seconds: float = 5.0
    failed_tasks_limit: int = 2
    drain_slack_seconds: float = 10.0
    rule_priorities: Mapping[str, int] = attrs.field(factory=lambda: {"first": 1, "last": 50000})

    @classmethod
    def parse(cls, answers: Mapping[str, Any] | None) -> "Answers":
        data = dict(answers or {})
        unknown = sorted(set(data) - set(ANSWERS_SCHEMA["properties"]))
        if unknown:
            raise InvalidAnswers(f"aws-ecs answers: unknown key(s) {', '.join(unknown)}",
                                 hint="see the answers table in the greentic-deployer-aws README")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InvalidAnswers(f"aws-ecs answers: missing {', '.join(missing)}",
                                 hint="see the answers table in the greentic-deployer-aws README")
        if bool(data.get("access_key_id")) != bool(data.get("secret_access_key")):
            raise InvalidAnswers("aws-ecs answers: access_key_id and secret_access_key go together")
        for key, pattern in (("listener_arn", LISTENER_ARN_PATTERN), ("region", REGION_PATTERN)):
            if not isinstance(data[key], str) or not re.match(pattern, data[key]):
                raise InvalidAnswers(f"aws-ecs answers: {key} {str(data[key])[:120]!r} is malformed")
        for arn in data["target_group_arns"]:
            if not isinstance(arn, str) or not re.match(TG_ARN_PATTERN, arn):
                raise InvalidAnswers(f"aws-ecs answers: target group ARN {str(arn)[:160]!r} is malformed")
        if len(set(data["target_group_arns"])) != len(data["target_group_arns"]):
            raise InvalidAnswers("aws-ecs answers: target_group_arns lists a target group twice")
        priorities = data.get("rule_priorities")
        if priorities is not None:
            first, last = priorities.get("first"), priorities.get("last")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 50000 for v in (first, last)) \
                    or first > last:
                raise InvalidAnswers(f"aws-ecs answers: rule_priorities {priorities!r} must be "
                                     "{\"first\": F, \"last\": L} with 1 <= F <= L <= 50000")
        return cls(**{**_DEFAULTS, **data})

    # -- derived ---------------------------------------------------------------------

    @property
    def uses_rule(self) -> bool:
        """A per-deployment listener rule (True) or the listener's default action (False)."""
        return bool(self.routing_host or self.routing_path)

    def conditions(self, *, env_id: str, deployment_id: str, bundle_id: str) -> list[dict[str, Any]]:
        """The listener-rule conditions of one deployment (empty: the default action)."""
        values = {"env_id": env_id, "deployment_id": deployment_id, "bundle_id": bundle_id}
        conditions: list[dict[str, Any]] = []
        if self.routing_host:
            conditions.append({"Field": "host-header",
                               "HostHeaderConfig": {"Values": [_fill(self.routing_host, values).lower()]}})
        if self.routing_path:
            conditions.append({"Field": "path-pattern",
                               "PathPatternConfig": {"Values": [_fill(self.routing_path, values)]}})
        return conditions

    def route_problems(self, *, env_id: str, deployment_id: str, bundle_id: str) -> list[str]:
        """What an ALB refuses in the deployment's listener-rule conditions, after the placeholders are filled."""
        from .rules import conditions_problems

        conditions = self.conditions(env_id=env_id, deployment_id=deployment_id, bundle_id=bundle_id)
        return [f"{p} (routing_host/routing_path filled for env {env_id!r})" for p in conditions_problems(conditions)]

    def image_for(self, *, env_id: str, deployment_id: str, bundle_id: str, revision_id: str) -> str | None:
        if not self.default_image:
            return None
        return _fill(self.default_image, {"env_id": env_id, "deployment_id": deployment_id,
                                          "bundle_id": bundle_id, "revision_id": revision_id})


def _fill(template: str, values: Mapping[str, str]) -> str:
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out
