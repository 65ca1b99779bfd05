"""The real-rules layer for AWS: every request the provider sends, checked against botocore's service
model (lengths, patterns, ranges, enums, required members: the constraints AWS states in its
API models, which botocore itself mostly leaves to the server) plus the documented ALB quotas
the model does not express (5 target groups per forward action, weights 0..999, the condition
value rules of :mod:`greentic_aws.rules`). moto enforces almost none of them.

:class:`RequestRules` is attached to every client the provider creates (``ecs.client_hooks``)
and records one line per violation.
"""

from __future__ import annotations

import re
from typing import Any

from greentic_aws import rules as alb

_UNICODE_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\d", r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"}


def _python_pattern(pattern: str) -> re.Pattern[str]:
    for java, python in _UNICODE_CLASSES.items():
        pattern = pattern.replace(java, python)
    return re.compile(pattern)


def shape_problems(shape: Any, value: Any, path: str) -> list[str]:
    """What ``value`` breaks of ``shape``'s constraints (botocore's model), with its path."""
    meta = shape.metadata
    out: list[str] = []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected a structure"]
        for name in getattr(shape, "required_members", ()):
            if name not in value:
                out.append(f"{path}.{name}: required")
        for name, member in value.items():
            if name in shape.members:
                out += shape_problems(shape.members[name], member, f"{path}.{name}")
            else:
                out.append(f"{path}.{name}: unknown member")
    elif kind == "list":
        if "min" in meta and len(value) < meta["min"]:
            out.append(f"{path}: {len(value)} items, at least {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: {len(value)} items, at most {meta['max']}")
        for index, item in enumerate(value):
            out += shape_problems(shape.member, item, f"{path}[{index}]")
    elif kind == "map":
        for key, item in value.items():
            out += shape_problems(shape.key, key, f"{path}<key>")
            out += shape_problems(shape.value, item, f"{path}.{key}")
    elif kind == "string":
        if "min" in meta and len(value) < meta["min"]:
            out.append(f"{path}: {len(value)} characters, at least {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            out.append(f"{path}: {len(value)} characters, at most {meta['max']}")
        if "pattern" in meta and not _python_pattern(meta["pattern"]).fullmatch(value):
            out.append(f"{path}: {value[:60]!r} does not match {meta['pattern']}")
        if shape.enum and value not in shape.enum:
            out.append(f"{path}: {value!r} not one of {shape.enum}")
    elif kind in ("integer", "long", "float", "double"):
        if "min" in meta and value < meta["min"]:
            out.append(f"{path}: {value} below {meta['min']}")
        if "max" in meta and value > meta["max"]:
            out.append(f"{path}: {value} above {meta['max']}")
    return out


def alb_problems(operation: str, params: dict[str, Any]) -> list[str]:
    """The documented ALB quotas of one ELBv2 request that the model does not state."""
    out: list[str] = []
    actions = params.get("Actions") or params.get("DefaultActions") or []
    for action in actions:
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or []
        if len(groups) > 5:
            out.append(f"{operation}: forward action with {len(groups)} target groups (ALB: at most 5)")
        for group in groups:
            if not 0 <= int(group.get("Weight", 1)) <= 999:
                out.append(f"{operation}: target group weight {group.get('Weight')} (ALB: 0..999)")
    if params.get("Conditions"):
        out += [f"{operation}: {p}" for p in alb.conditions_problems(params["Conditions"])]
    return out


class RequestRules:
    """Collects the violations of every request made by the clients it is attached to."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.checked = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params", self._check)

    def _check(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.checked += 1
        name = f"{model.service_model.service_name} {model.name}"
        if model.input_shape is not None:
            self.violations += [f"{name}: {p}" for p in shape_problems(model.input_shape, params, "")]
        if model.service_model.service_name == "elbv2":
            self.violations += alb_problems(name, params)
