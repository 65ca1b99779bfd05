"""The k8s answers: schema (checked by the core before any hook runs) and parsed form.

``Answers.parse`` checks again (unknown keys refused, types and ranges), because ``render`` and
the tests call the provider code without going through the core.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from greentic_core import InvalidAnswers

#: DNS-1123 label: namespaces, Gateway names.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
#: DNS-1123 subdomain: object names such as a Gateway.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Kubernetes quantity ("250m", "1", "512Mi", "1.5Gi").
QUANTITY = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]+)?$"

DEFAULT_FIELD_MANAGER = "greentic-deployer"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}

_QUANTITIES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # "pattern" constrains strings only, "minimum" numbers only: a number must not be negative
        name: {"type": ["string", "number"], "pattern": QUANTITY, "minimum": 0}
        for name in ("cpu", "memory", "ephemeral-storage")
    },
}

ANSWERS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["gateway_name"],
    "properties": {
        "kubeconfig": {
            "type": "string", "minLength": 1,
            "description": "Path of the kubeconfig file. Default: $KUBECONFIG, then ~/.kube/config, then the "
                           "in-cluster service account.",
        },
        "context": {
            "type": "string", "minLength": 1,
            "description": "Kubeconfig context to use. Default: the kubeconfig's current-context.",
        },
        "namespace": {
            "type": "string", "pattern": DNS1123_LABEL,
            "description": "Namespace of every object. Default: derived from the environment id "
                           "(gt-<env id> when that is a DNS-1123 label, else a sanitised name plus a hash).",
        },
        "gateway_name": {
            "type": "string", "pattern": DNS1123_SUBDOMAIN, "maxLength": 253,
            "description": "Name of the Gateway (gateway.networking.k8s.io/v1) the HTTPRoutes attach to.",
        },
        "gateway_namespace": {
            "type": "string", "pattern": DNS1123_LABEL,
            "description": "Namespace of the Gateway. Default: the namespace of the routes.",
        },
        "gateway_section": {
            "type": "string", "pattern": DNS1123_SUBDOMAIN, "minLength": 1, "maxLength": 253,
            "description": "Listener (sectionName) of the Gateway to attach to. Default: every listener "
                           "that allows the route.",
        },
        "default_image": {
            "type": "string", "minLength": 1,
            "description": "Image for revisions whose workload names none.",
        },
        "replicas": {
            "type": "integer", "minimum": 1, "maximum": 1000,
            "description": "Replicas of every revision. Default: the revision's workload.replicas.",
        },
        "resources": {
            "type": "object", "additionalProperties": False,
            "properties": {"requests": _QUANTITIES, "limits": _QUANTITIES},
            "description": "Container resources (requests/limits of cpu, memory, ephemeral-storage). "
                           "Default: requests cpu 100m, memory 128Mi; limits memory 512Mi.",
        },
        "run_as_user": {
            "type": "integer", "minimum": 1, "maximum": 2147483647,
            "description": "Numeric user (and group) the container runs as, for images that do not set a "
                           "non-root USER. Pods always run with runAsNonRoot.",
        },
        "warm_timeout_seconds": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 300,
            "description": "How long warm waits for the rollout to complete (as `kubectl rollout status`); "
                           "a shorter timeout given by the caller wins.",
        },
        "route_accept_timeout_seconds": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 60,
            "description": "How long a traffic change waits for the Gateway to list the HTTPRoute in "
                           "status.parents with Accepted=True for its current generation.",
        },
        "archive_timeout_seconds": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 120,
            "description": "How long archive waits for the deleted objects to be gone.",
        },
        "termination_slack_seconds": {
            "type": "integer", "minimum": 0, "maximum": 600, "default": 10,
            "description": "terminationGracePeriodSeconds is the revision's drain_seconds plus this.",
        },
        "poll_interval_seconds": {
            "type": "number", "minimum": 0.01, "maximum": 60, "default": 2,
            "description": "Interval between two reads while waiting (rollout, route, deletion).",
        },
        "request_timeout_seconds": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 600, "default": 30,
            "description": "Timeout of one API request.",
        },
        "field_manager": {
            "type": "string", "minLength": 1, "maxLength": 128, "default": DEFAULT_FIELD_MANAGER,
            "description": "Server-side apply field manager of every write.",
        },
    },
}

_SCHEMA_HINT = "see `greentic-deployer plugins show greentic.deployer.k8s` for the answers schema"
_DEFAULTS = {name: spec["default"] for name, spec in ANSWERS_SCHEMA["properties"].items() if "default" in spec}


@attrs.frozen(kw_only=True)
class Answers:
    gateway_name: str
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    gateway_namespace: str | None = None
    gateway_section: str | None = None
    default_image: str | None = None
    replicas: int | None = None
    resources: Mapping[str, Mapping[str, str]] = attrs.field(factory=lambda: DEFAULT_RESOURCES)
    run_as_user: int | None = None
    warm_timeout_seconds: float = _DEFAULTS["warm_timeout_seconds"]
    route_accept_timeout_seconds: float = _DEFAULTS["route_accept_timeout_seconds"]
    archive_timeout_seconds: float = _DEFAULTS["archive_timeout_seconds"]
    termination_slack_seconds: int = _DEFAULTS["termination_slack_seconds"]
    poll_interval_seconds: float = _DEFAULTS["poll_interval_seconds"]
    request_timeout_seconds: float = _DEFAULTS["request_timeout_seconds"]
    field_manager: str = DEFAULT_FIELD_MANAGER

    @classmethod
    def parse(cls, answers: Mapping[str, Any] | None) -> "Answers":
        """Check ``answers`` against :data:`ANSWERS_SCHEMA` and return the parsed form."""
        data = dict(answers or {})
        unknown = sorted(set(data) - set(ANSWERS_SCHEMA["properties"]))
        if unknown:
            raise InvalidAnswers(
                f"answers for greentic.deployer.k8s: unknown key(s) {', '.join(map(repr, unknown))}",
                hint=_SCHEMA_HINT)
        import jsonschema  # imported here: importing the hooks module must stay cheap

        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(ANSWERS_SCHEMA).iter_errors(data))
        if error is not None:
            where = "".join(f".{p}" for p in error.absolute_path)
            raise InvalidAnswers(f"answers for greentic.deployer.k8s{where}: {error.message}", hint=_SCHEMA_HINT)
        if "resources" in data:  # quantities are written as strings, as the API server returns them
            data["resources"] = {part: {k: _quantity(f"resources.{part}.{k}", v) for k, v in values.items()}
                                 for part, values in data["resources"].items() if values}
        return cls(**data)

    def namespace_for(self, env_id: str) -> str:
        from .render import namespace_for_env

        return self.namespace or namespace_for_env(env_id)

    def gateway_namespace_for(self, env_id: str) -> str:
        return self.gateway_namespace or self.namespace_for(env_id)


def _quantity(where: str, value: Any) -> str:
    """A resource quantity as the string to send: numbers written without an exponent, value checked.

    Parsed with lightkube's ``parse_quantity`` (the same rules as the API server for the
    suffixes the schema allows), so a negative or malformed value fails here, not with a 422.
    """
    from decimal import Decimal

    from lightkube.utils.quantity import parse_quantity

    text = format(Decimal(str(value)).normalize(), "f") if isinstance(value, (int, float)) else str(value)
    try:
        parsed = parse_quantity(text)
    except ValueError as exc:
        raise InvalidAnswers(f"answers for greentic.deployer.k8s.{where}: {value!r} is not a quantity ({exc})",
                             hint=_SCHEMA_HINT) from None
    if parsed is None or parsed < 0:
        raise InvalidAnswers(f"answers for greentic.deployer.k8s.{where}: {value!r} is negative", hint=_SCHEMA_HINT)
    return text
