"""Pure reading of live objects: rollout status, ownership, "already applied", route weights.

Every function takes the plain dicts the API returned; none calls the API, so the rules are
tested exhaustively without a cluster.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from .render import (
    APPLIED_HASH_ANNOTATION,
    ENV_ID_ANNOTATION,
    ENV_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    label_value,
    revision_id_of,
)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


# --------------------------------------------------------------------------- rollout


@attrs.frozen(kw_only=True)
class Rollout:
    """A Deployment's rollout as ``kubectl rollout status`` judges it."""

    complete: bool
    failed: bool
    message: str
    generation: int | None
    observed_generation: int | None
    desired: int
    replicas: int
    updated: int
    ready: int
    available: int

    def counts(self) -> str:
        return (f"observedGeneration {self.observed_generation}/{self.generation}, "
                f"updated {self.updated}/{self.desired}, available {self.available}/{self.desired}, "
                f"ready {self.ready}/{self.desired}, old replicas {max(self.replicas - self.updated, 0)}")


def rollout_status(deployment: Mapping[str, Any]) -> Rollout:
    """Judge a Deployment like ``kubectl rollout status``.

    Complete when the controller has observed the current spec (``status.observedGeneration >=
    metadata.generation``), every desired replica is updated (``updatedReplicas == spec.replicas``)
    and available (``availableReplicas == spec.replicas``), and no old replica is left
    (``status.replicas == updatedReplicas``). A ``Progressing`` condition with reason
    ``ProgressDeadlineExceeded`` is a failure. Missing counts are 0, as the API omits zeros.
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    desired = _int(spec.get("replicas", 1))
    replicas, updated = _int(status.get("replicas")), _int(status.get("updatedReplicas"))
    ready, available = _int(status.get("readyReplicas")), _int(status.get("availableReplicas"))
    counts = dict(generation=generation, observed_generation=observed, desired=desired, replicas=replicas,
                  updated=updated, ready=ready, available=available)
    if observed is None or (generation is not None and observed < generation):
        return Rollout(complete=False, failed=False, **counts,
                       message=f"waiting for the controller to observe generation {generation} (observed {observed})")
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            detail = condition.get("message", "")
            return Rollout(complete=False, failed=True, **counts,
                           message=f"rollout exceeded its progress deadline: {detail}".rstrip(": "))
    if updated != desired:
        message = f"{updated} of {desired} new replicas updated"
    elif replicas != updated:
        message = f"{replicas - updated} old replicas pending termination"
    elif available != desired:
        message = f"{available} of {desired} updated replicas available"
    else:
        return Rollout(complete=True, failed=False, message=f"{available} of {desired} replicas available", **counts)
    return Rollout(complete=False, failed=False, message=message, **counts)


def serving(deployment: Mapping[str, Any]) -> tuple[bool, int, int]:
    """``(serving, ready, desired)``: serving means at least one ready replica and all desired ones ready."""
    desired = _int((deployment.get("spec") or {}).get("replicas", 1))
    ready = _int((deployment.get("status") or {}).get("readyReplicas"))
    return ready >= 1 and ready == desired, ready, desired


# --------------------------------------------------------------------------- ownership


def describe(obj_or_kind: Mapping[str, Any] | str, namespace: str | None = None, name: str | None = None) -> str:
    """``Kind namespace/name`` of an object (or of the given parts), for messages."""
    if isinstance(obj_or_kind, Mapping):
        meta = obj_or_kind.get("metadata") or {}
        return f"{obj_or_kind.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"
    return f"{obj_or_kind} {namespace}/{name}"


def ownership_problem(obj: Mapping[str, Any], env_id: str) -> str | None:
    """Why this environment must not touch ``obj``, or ``None`` when the object is its own.

    An object is this environment's only when it carries ``app.kubernetes.io/managed-by:
    greentic-deployer`` and ``greentic.ai/env: <this env>``; objects without those labels are
    never adopted, objects of another environment never modified.
    """
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or ENV_LABEL not in labels:
        return (f"exists but is not managed by greentic-deployer (labels {MANAGED_BY_LABEL}={MANAGED_BY} "
                f"and {ENV_LABEL} are missing)")
    owner_id = (meta.get("annotations") or {}).get(ENV_ID_ANNOTATION) or labels[ENV_LABEL]
    if labels[ENV_LABEL] != label_value(env_id) or owner_id != env_id:
        return f"belongs to greentic environment {owner_id!r}, not {env_id!r}"
    return None


# --------------------------------------------------------------------------- applied?


def same_quantity(live: Any, desired: Any) -> bool:
    """Whether two Kubernetes quantities are equal in value (``0.5`` == ``500m``, ``1.5Gi`` == ``1536Mi``).

    The API server stores quantities in canonical form, so a string comparison would see a
    change on every read. Parsed with lightkube's :func:`~lightkube.utils.quantity.parse_quantity`.
    """
    from lightkube.utils.quantity import parse_quantity

    try:
        return parse_quantity(str(live)) == parse_quantity(str(desired))
    except (ValueError, ArithmeticError):
        return live == desired


def contains(live: Any, desired: Any, *, _path: tuple[str, ...] = ()) -> bool:
    """Whether ``live`` holds everything ``desired`` says (extra keys the server added are fine).

    Mappings: every desired key present and contained; lists: same length, item by item;
    scalars: equal, except resource quantities (``resources.requests|limits.<name>``), which
    are compared by value.
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and contains(live[k], v, _path=(*_path[-2:], str(k))) for k, v in desired.items())
    if isinstance(desired, (list, tuple)):
        return (isinstance(live, (list, tuple)) and len(live) == len(desired)
                and all(contains(a, b, _path=_path) for a, b in zip(live, desired, strict=True)))
    if len(_path) == 3 and _path[0] == "resources" and _path[1] in ("requests", "limits"):
        return same_quantity(live, desired)
    return live == desired


def is_applied(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether ``desired`` is already applied: same applied-hash annotation and every rendered field in place.

    The hash catches fields the manifest no longer has; the containment check catches
    someone editing a field by hand.
    """
    if live is None:
        return False
    want = ((desired.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    return want is not None and want == have and contains(live, desired)


# --------------------------------------------------------------------------- routes


def route_weights(route: Mapping[str, Any] | None) -> dict[str, int]:
    """The weight of each backend of an HTTPRoute, keyed by revision id (or the Service name if foreign).

    Gateway API defaults a missing ``weight`` to 1.
    """
    weights: dict[str, int] = {}
    if not route:
        return weights
    for rule in (route.get("spec") or {}).get("rules") or ():
        for ref in rule.get("backendRefs") or ():
            name = str(ref.get("name", ""))
            key = revision_id_of(name) or name
            weights[key] = weights.get(key, 0) + _int(ref.get("weight", 1))
    return weights


def route_accepted(route: Mapping[str, Any], gateway_name: str, gateway_namespace: str,
                   section_name: str | None = None) -> tuple[bool, str]:
    """Whether our Gateway's controller has accepted the route's current generation.

    Gateway API: ``status.parents`` lists the parents a controller has processed; an empty list
    means the route is attached to no Gateway. So the route is accepted only when our Gateway
    (name, namespace and, when we set one, ``sectionName``) is in ``status.parents`` with an
    ``Accepted`` condition that is ``True`` for the route's current ``metadata.generation``.
    A condition without ``observedGeneration`` counts as current (the field is optional).
    """
    generation = (route.get("metadata") or {}).get("generation")
    route_namespace = (route.get("metadata") or {}).get("namespace")
    parents = (route.get("status") or {}).get("parents") or ()
    others = []
    for parent in parents:
        ref = parent.get("parentRef") or {}
        if ref.get("name") != gateway_name or (ref.get("namespace") or route_namespace) != gateway_namespace or (
                section_name is not None and ref.get("sectionName") not in (None, section_name)):
            others.append(f"{ref.get('namespace') or route_namespace}/{ref.get('name')}")
            continue
        for condition in parent.get("conditions") or ():
            if condition.get("type") != "Accepted":
                continue
            observed = condition.get("observedGeneration")
            if generation is not None and observed is not None and observed < generation:
                return False, f"the gateway has processed generation {observed} of the route, not {generation}"
            if condition.get("status") != "True":
                reason = f"{condition.get('reason')} {condition.get('message', '')}".strip()
                return False, f"the gateway does not accept the route: {reason}"
            return True, "accepted by the gateway"
        return False, "the gateway has not reported an Accepted condition yet"
    if others:
        return False, (f"status.parents names {', '.join(others)} but not Gateway {gateway_namespace}/{gateway_name} "
                       "(check gateway_name / gateway_namespace)")
    return False, (f"no gateway has reported status for the route yet (status.parents is empty): Gateway "
                   f"{gateway_namespace}/{gateway_name} does not exist, or its controller has not reconciled the route")
