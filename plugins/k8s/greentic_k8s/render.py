"""Pure translation: an environment and the answers -> Kubernetes manifests (plain dicts).

No I/O and no client: every function here is deterministic, so a dry run (``greentic_render``)
shows exactly what the verbs apply, and a repeated verb sends byte-identical bodies.

Objects and names (all in one namespace, see :func:`namespace_for_env`):

* per revision: ``Deployment`` and ``Service`` ``gt-<revision id, lower case>``;
* per deployment: ``HTTPRoute`` ``gt-<deployment id, lower case>`` (one backendRef per split
  entry, ``weight`` = basis points, exact: Gateway API weights go up to 1,000,000) and
  ``ConfigMap`` ``gt-<deployment id>-runtime-config`` (that deployment's blocks of the
  runtime-config projection).

Every object carries :func:`env_labels` (``app.kubernetes.io/managed-by: greentic-deployer``
and ``greentic.ai/env``) plus ``greentic.ai/deployment`` / ``greentic.ai/revision`` /
``greentic.ai/bundle`` where they apply, and the annotation ``greentic.ai/applied-hash``
(a hash of the manifest itself) so a verb can tell "already applied" from "changed".
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Iterable

from greentic_core import Environment, Lifecycle, ProviderError, Revision, Workload
from greentic_core.routes import invalid_route
from greentic_core.routes import route_problems as shared_route_problems

if TYPE_CHECKING:
    from .answers import Answers

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "greentic-deployer"
ENV_LABEL = "greentic.ai/env"
DEPLOYMENT_LABEL = "greentic.ai/deployment"
REVISION_LABEL = "greentic.ai/revision"
BUNDLE_LABEL = "greentic.ai/bundle"
ENV_ID_ANNOTATION = "greentic.ai/env-id"
APPLIED_HASH_ANNOTATION = "greentic.ai/applied-hash"

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
#: Gateway API: at most 16 backendRefs in one rule.
MAX_BACKEND_REFS = 16
#: Gateway API HTTPRoute: at most 16 hostnames, at most 64 matches in one rule.
MAX_HOSTNAMES = 16
MAX_MATCHES = 64
CONTAINER_NAME = "app"
PORT_NAME = "http"
RUNTIME_CONFIG_KEY = "runtime-config.json"
#: Lifecycles in which a revision has running pods.
RUNNING = frozenset({Lifecycle.WARMING, Lifecycle.READY, Lifecycle.DRAINING})

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

# The distribution reference grammar (github.com/distribution/reference), as regular expressions.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")


# --------------------------------------------------------------------------- names and labels


def _hash8(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:8]


def label_value(raw: str) -> str:
    """``raw`` if it is a valid label value, else a sanitised prefix plus a hash (stable, unique)."""
    if len(raw) <= 63 and _LABEL_VALUE.fullmatch(raw):
        return raw
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw)[:50].strip("-_.")
    return f"{clean}-{_hash8(raw)}" if clean else f"h-{_hash8(raw)}"


def namespace_for_env(env_id: str) -> str:
    """``gt-<env id>`` when that is a DNS-1123 label; else a sanitised prefix plus a hash of the id."""
    candidate = f"gt-{env_id}"
    if len(candidate) <= 63 and _DNS1123_LABEL.fullmatch(candidate):
        return candidate
    clean = re.sub(r"[^a-z0-9-]+", "-", env_id.lower())[:50].strip("-")
    return f"gt-{clean}-{_hash8(env_id)}" if clean else f"gt-{_hash8(env_id)}"


def revision_object_name(revision_id: str) -> str:
    """Name of a revision's Deployment and Service."""
    return f"gt-{revision_id.lower()}"


def route_name(deployment_id: str) -> str:
    return f"gt-{deployment_id.lower()}"


def config_map_name(deployment_id: str) -> str:
    return f"gt-{deployment_id.lower()}-runtime-config"


def revision_id_of(object_name: str) -> str | None:
    """The revision id encoded in a Deployment/Service name made by :func:`revision_object_name`."""
    if object_name.startswith("gt-") and len(object_name) == 29:
        return object_name[3:].upper()
    return None


def env_labels(env_id: str) -> dict[str, str]:
    """The labels that make an object this environment's: also the LIST selector."""
    return {MANAGED_BY_LABEL: MANAGED_BY, ENV_LABEL: label_value(env_id)}


def _metadata(env: Environment, name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if labels[ENV_LABEL] != env.environment_id:  # the label had to be sanitised: keep the real id
        meta["annotations"] = {ENV_ID_ANNOTATION: env.environment_id}
    return meta


def revision_labels(env: Environment, revision: Revision) -> dict[str, str]:
    return {**env_labels(env.environment_id),
            DEPLOYMENT_LABEL: revision.deployment_id,
            REVISION_LABEL: revision.revision_id,
            BUNDLE_LABEL: label_value(revision.bundle_id)}


def revision_selector(env: Environment, revision_id: str) -> dict[str, str]:
    return {ENV_LABEL: label_value(env.environment_id), REVISION_LABEL: revision_id}


def _with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """Add ``greentic.ai/applied-hash``: a digest of the manifest, so 'already applied' is exact."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[APPLIED_HASH_ANNOTATION] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return manifest


# --------------------------------------------------------------------------- images


def image_problem(reference: str) -> str | None:
    """Why ``reference`` is not a valid image reference, or ``None`` when it is."""
    if not reference or reference != reference.strip():
        return "it is empty or has surrounding white space"
    match = _IMAGE.fullmatch(reference)
    if match is None:
        return ("it does not follow [registry[:port]/]name[:tag][@digest] "
                "(lower-case name components, tag up to 128 characters, digest algorithm:hex)")
    if len(match.group("name")) > 255:
        return "the repository name is longer than 255 characters"
    return None


def resolve_image(revision: Revision, answers: "Answers") -> str:
    """The revision's image (its workload's, else the answers' ``default_image``), checked."""
    image = (revision.workload.image if revision.workload else None) or answers.default_image
    if not image:
        raise ProviderError(
            f"revision {revision.revision_id} has no image: its workload names none and no default_image is set",
            hint="stage the revision with a workload image, or set `default_image` in the k8s answers")
    problem = image_problem(image)
    if problem is not None:
        raise ProviderError(f"revision {revision.revision_id}: image {image[:120]!r} is not an image reference: "
                            f"{problem}",
                            hint="use e.g. registry.example.com/team/app:1.2.3 or ...@sha256:<digest>")
    return image


# --------------------------------------------------------------------------- per revision


def _workload(revision: Revision) -> Workload:
    return revision.workload or Workload()


def _check_workload(revision: Revision, workload: Workload) -> None:
    if not 1 <= workload.port <= 65535:
        raise ProviderError(f"revision {revision.revision_id}: workload port {workload.port} is not in 1..65535")
    if not workload.health_path.startswith("/"):
        raise ProviderError(f"revision {revision.revision_id}: health_path {workload.health_path!r} "
                            "must start with '/'")


def desired_replicas(revision: Revision, answers: "Answers") -> int:
    """``replicas`` from the answers when set (an environment-wide setting), else the workload's."""
    return answers.replicas if answers.replicas is not None else max(int(_workload(revision).replicas), 1)


def termination_grace_seconds(revision: Revision, answers: "Answers") -> int:
    """Pods get the revision's ``drain_seconds`` plus slack to finish in-flight requests after SIGTERM."""
    return max(int(revision.drain_seconds), 0) + int(answers.termination_slack_seconds)


def deployment_manifest(env: Environment, revision: Revision, answers: "Answers", *,
                        replicas: int | None = None) -> dict[str, Any]:
    """The revision's Deployment; ``replicas=0`` is the drained form."""
    workload = _workload(revision)
    _check_workload(revision, workload)
    image = resolve_image(revision, answers)
    labels = revision_labels(env, revision)
    ours = {
        "GREENTIC_ENV_ID": env.environment_id,
        "GREENTIC_DEPLOYMENT_ID": revision.deployment_id,
        "GREENTIC_REVISION_ID": revision.revision_id,
        "GREENTIC_BUNDLE_ID": revision.bundle_id,
        "GREENTIC_BUNDLE_DIGEST": revision.bundle_digest,
        "PORT": str(workload.port),
    }
    variables = {k: str(v) for k, v in sorted(workload.env.items()) if k not in ours}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "ports": [{"name": PORT_NAME, "containerPort": workload.port, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in [*variables.items(), *ours.items()]],
        "readinessProbe": {
            "httpGet": {"path": workload.health_path, "port": PORT_NAME},
            "periodSeconds": 5, "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3,
        },
        "resources": copy.deepcopy(dict(answers.resources)),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if workload.working_dir:
        container["workingDir"] = workload.working_dir
    pod_security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if answers.run_as_user is not None:
        pod_security.update(runAsUser=answers.run_as_user, runAsGroup=answers.run_as_user)
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(env, revision_object_name(revision.revision_id),
                              answers.namespace_for(env.environment_id), labels),
        "spec": {
            "replicas": desired_replicas(revision, answers) if replicas is None else replicas,
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": revision_selector(env, revision.revision_id)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": termination_grace_seconds(revision, answers),
                    "securityContext": pod_security,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    return _with_hash(manifest)


def service_manifest(env: Environment, revision: Revision, answers: "Answers") -> dict[str, Any]:
    """The revision's ClusterIP Service: the HTTPRoute's backend for this revision."""
    workload = _workload(revision)
    _check_workload(revision, workload)
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(env, revision_object_name(revision.revision_id),
                              answers.namespace_for(env.environment_id), revision_labels(env, revision)),
        "spec": {
            "type": "ClusterIP",
            "selector": revision_selector(env, revision.revision_id),
            "ports": [{"name": PORT_NAME, "port": workload.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
    return _with_hash(manifest)


# --------------------------------------------------------------------------- per deployment


def _deployment_labels(env: Environment, deployment_id: str, bundle_id: str) -> dict[str, str]:
    return {**env_labels(env.environment_id), DEPLOYMENT_LABEL: deployment_id, BUNDLE_LABEL: label_value(bundle_id)}


def route_problems(hosts: Iterable[str], path_prefixes: Iterable[str]) -> list[str]:
    """What the HTTPRoute CRD refuses in a route binding beyond the core's shared rules (counts)."""
    hosts, path_prefixes = list(hosts), list(path_prefixes)
    problems = []
    if len(hosts) > MAX_HOSTNAMES:
        problems.append(f"{len(hosts)} hosts; an HTTPRoute holds at most {MAX_HOSTNAMES} hostnames")
    if len(path_prefixes) > MAX_MATCHES:
        problems.append(f"{len(path_prefixes)} path prefixes; an HTTPRoute rule holds at most {MAX_MATCHES} matches")
    return problems


def check_routes(env: Environment, deployment_id: str) -> None:
    """Raise ``InvalidRoute`` unless the deployment's routes meet the shared rules and the HTTPRoute CRD's."""
    deployment = env.deployment(deployment_id)
    if deployment is None:
        return
    binding = deployment.route_binding
    problems = (shared_route_problems(binding.hosts, binding.path_prefixes)
                or route_problems(binding.hosts, binding.path_prefixes))
    if problems:
        raise invalid_route(deployment_id, problems, source="greentic.deployer.k8s")


def route_manifest(env: Environment, deployment_id: str, answers: "Answers") -> dict[str, Any]:
    """The deployment's HTTPRoute: its route binding's hosts and path prefixes, one weighted backend per entry."""
    split = env.split_for(deployment_id)
    if split is None:  # the core checks this first; kept for direct callers
        raise ProviderError(f"no traffic split recorded for deployment {deployment_id}")
    if len(split.entries) > MAX_BACKEND_REFS:
        raise ProviderError(
            f"the split of deployment {deployment_id} has {len(split.entries)} entries; a Gateway API rule "
            f"holds at most {MAX_BACKEND_REFS} backendRefs",
            hint="drop zero-weight revisions from the split before applying it")
    check_routes(env, deployment_id)  # before any request: a refused route never half-applies
    deployment = env.deployment(deployment_id)
    binding = deployment.route_binding if deployment is not None else None
    hosts = list(binding.hosts) if binding else []
    prefixes = list(binding.path_prefixes) if binding else []
    backend_refs = []
    for entry in split.entries:
        revision = env.revision(entry.revision_id)
        port = _workload(revision).port if revision is not None else Workload().port
        backend_refs.append({"group": "", "kind": "Service", "name": revision_object_name(entry.revision_id),
                             "port": port, "weight": int(entry.weight_bps)})
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": answers.gateway_name,
                              "namespace": answers.gateway_namespace_for(env.environment_id)}
    if answers.gateway_section:
        parent["sectionName"] = answers.gateway_section
    spec: dict[str, Any] = {"parentRefs": [parent]}
    if hosts:
        spec["hostnames"] = hosts
    spec["rules"] = [{
        "matches": [{"path": {"type": "PathPrefix", "value": p}} for p in (prefixes or ["/"])],
        "backendRefs": backend_refs,
    }]
    manifest = {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": _metadata(env, route_name(deployment_id), answers.namespace_for(env.environment_id),
                              _deployment_labels(env, deployment_id, split.bundle_id)),
        "spec": spec,
    }
    return _with_hash(manifest)


def runtime_config_blocks(env: Environment, deployment_id: str) -> list[dict[str, Any]]:
    """This deployment's blocks of the runtime-config projection (``greentic.runtime-config.v1``).

    The same rule as the core projection: one block per split entry in entry order, zero weights
    kept, references joined from the revision whose id and deployment id match. Concatenating
    the blocks of every split in split order gives the core's whole-environment projection.
    """
    split = env.split_for(deployment_id)
    if split is None:
        return []
    blocks = []
    for entry in split.entries:
        revision = next((r for r in env.revisions
                         if r.revision_id == entry.revision_id and r.deployment_id == deployment_id), None)
        blocks.append({
            "deployment_id": deployment_id,
            "revision_id": entry.revision_id,
            "bundle_id": split.bundle_id,
            "pack_list_refs": ([revision.pack_list_lock_ref]
                               if revision is not None and revision.pack_list_lock_ref else []),
            "pack_config_refs": list(revision.pack_config_refs) if revision is not None else [],
            "weight_bps": entry.weight_bps,
        })
    return blocks


def config_map_manifest(env: Environment, deployment_id: str, answers: "Answers") -> dict[str, Any]:
    """The deployment's ConfigMap: ``runtime-config.json`` holds its slice of the projection."""
    split = env.split_for(deployment_id)
    bundle_id = split.bundle_id if split is not None else ""
    document = {"schema": "greentic.runtime-config.v1", "env_id": env.environment_id,
                "revisions": runtime_config_blocks(env, deployment_id)}
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(env, config_map_name(deployment_id), answers.namespace_for(env.environment_id),
                              _deployment_labels(env, deployment_id, bundle_id)),
        "data": {RUNTIME_CONFIG_KEY: json.dumps(document, indent=2, ensure_ascii=False) + "\n"},
    }
    return _with_hash(manifest)


# --------------------------------------------------------------------------- the whole environment


def present_revisions(env: Environment) -> Iterable[tuple[Revision, int | None]]:
    """Revisions the provider holds objects for, with the replicas to render (``None`` = desired).

    Warming, ready and draining revisions run; an inactive revision that was warmed has been
    drained to zero replicas and keeps its objects until it is archived.
    """
    for revision in env.revisions:
        if revision.lifecycle in RUNNING:
            yield revision, None
        elif revision.lifecycle == Lifecycle.INACTIVE and revision.warmed_at is not None:
            yield revision, 0


def render_environment(env: Environment, answers: "Answers", deployment_id: str | None = None) -> list[dict[str, Any]]:
    """Every object the provider would hold for ``env`` as recorded (or for one deployment), in apply order."""
    manifests: list[dict[str, Any]] = []
    for revision, replicas in present_revisions(env):
        if deployment_id is not None and revision.deployment_id != deployment_id:
            continue
        manifests.append(deployment_manifest(env, revision, answers, replicas=replicas))
        manifests.append(service_manifest(env, revision, answers))
    for split in env.traffic_splits:
        if deployment_id is not None and split.deployment_id != deployment_id:
            continue
        manifests.append(config_map_manifest(env, split.deployment_id, answers))
        manifests.append(route_manifest(env, split.deployment_id, answers))
    return manifests
