"""The provider work against the Kubernetes API, with lightkube: apply, waits, deletes, ownership, GC.

Rules every verb follows:

* Manifests come from :mod:`greentic_k8s.render` (pure); live objects are judged by
  :mod:`greentic_k8s.status` (pure). This module only sends requests and waits.
* **Writes are server-side apply** (``PATCH`` ``application/apply-patch+yaml`` with the
  answers' field manager and ``force=true``), and only when the object is not already applied
  (:func:`status.is_applied`): a repeated verb sends no write.
* **Ownership guard.** Before writing or deleting an object by name, the verb reads it; an
  object without this environment's labels (or with another environment's) is never
  modified, deleted or adopted: ``ProviderError`` naming ``Kind namespace/name``.
* **Bounded waits.** Every wait polls with a deadline, reports through ``progress`` and ends in
  ``ProviderTimeout`` quoting what the API last said.
* **Constant request count.** A verb's requests depend on the objects of its own revision or
  deployment, never on the number of other revisions: reads of many objects are one LIST with
  the environment's label selector.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from greentic_core import (
    ArchiveOutcome,
    CheckStatus,
    DeploymentObservation,
    DrainOutcome,
    Environment,
    Lifecycle,
    Observation,
    PreflightCheck,
    ProviderError,
    ProviderTimeout,
    RevisionObservation,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
)

from . import render, status
from .answers import Answers

Progress = Callable[[str], None]

#: Kinds this provider reads or writes (a closed table: nothing else is ever touched).
KINDS = ("Deployment", "Service", "ConfigMap", "HTTPRoute", "Gateway", "Pod")
#: How long after ``drain_seconds`` a drain may still take (pods terminating); the descriptor's slack.
DRAIN_SLACK_SECONDS = 15.0
#: How long apply_traffic_split waits for the gateway to accept the new route generation.
ROUTE_ACCEPT_SECONDS = 60.0
_GENERIC_LOCK = threading.Lock()
_RBAC_HINT = "grant the permissions of the Role in the greentic-deployer-k8s README to the kubeconfig's identity"


def _no_progress(message: str) -> None:
    pass


# --------------------------------------------------------------------------- client


def _resource(kind: str) -> Any:
    """The lightkube resource class of ``kind`` (imported here: the hooks module stays light)."""
    if kind == "Deployment":
        from lightkube.resources.apps_v1 import Deployment

        return Deployment
    if kind in ("Service", "ConfigMap", "Pod"):
        from lightkube.resources import core_v1

        return getattr(core_v1, kind)
    if kind in ("HTTPRoute", "Gateway"):
        from lightkube.generic_resource import create_namespaced_resource, get_generic_resource

        with _GENERIC_LOCK:  # lightkube's resource registry refuses a second registration of a kind
            return (get_generic_resource(render.HTTPROUTE_API_VERSION, kind)
                    or create_namespaced_resource(render.GATEWAY_GROUP, "v1", kind, kind.lower() + "s"))
    raise ValueError(f"kind {kind!r} is not one greentic-deployer-k8s manages")  # pragma: no cover


def _as_dict(obj: Any, kind: str) -> dict[str, Any]:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    data.setdefault("kind", kind)  # items of a LIST carry no kind
    return data


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _api_message(exc: BaseException) -> str:
    message = getattr(getattr(exc, "status", None), "message", None)
    if not message:
        response = getattr(exc, "response", None)
        try:
            message = response.json().get("message") if response is not None else None
        except Exception:  # not a Status document
            message = None
    return str(message or exc).splitlines()[0][:300]


def _is_transport_error(exc: BaseException) -> bool:
    root = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or root in ("httpx", "httpx2", "httpcore", "httpcore2", "h11", "h2", "ssl")


def load_config(answers: Answers) -> Any:
    """The lightkube ``SingleConfig``: the answers' kubeconfig, else $KUBECONFIG / ~/.kube/config, else in-cluster."""
    from lightkube import KubeConfig
    from lightkube.core.exceptions import ConfigError

    try:
        if answers.kubeconfig:
            path = Path(answers.kubeconfig).expanduser()
            if not path.is_file():
                raise ProviderError(f"kubeconfig {path} does not exist",
                                    hint="fix the `kubeconfig` answer or remove it to use $KUBECONFIG / ~/.kube/config")
            config = KubeConfig.from_file(path)
        else:
            candidates = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
            candidates.append(Path("~/.kube/config").expanduser())
            found = next((p for p in candidates if p.is_file()), None)
            config = KubeConfig.from_file(found) if found else KubeConfig.from_service_account()
        single = config.get(context_name=answers.context)
    except ProviderError:
        raise
    except (ConfigError, KeyError, ValueError, OSError) as exc:
        where = answers.kubeconfig or "$KUBECONFIG, ~/.kube/config or the in-cluster service account"
        context = f" (context {answers.context!r})" if answers.context else ""
        raise ProviderError(f"cannot load a Kubernetes configuration from {where}{context}: {exc}",
                            hint="check `kubectl config get-contexts`, or set the `kubeconfig` and `context` "
                                 "answers") from exc
    if single is None:  # pragma: no cover - lightkube raises for a missing context
        raise ProviderError("the kubeconfig has no current context", hint="set the `context` answer")
    return single


class Cluster:
    """One lightkube client bound to the environment's namespace; every request goes through here.

    Translates API errors into ``ProviderError`` (with the verb, the object and what the API
    server said) and turns "404 Not Found" into ``None`` / ``False`` where absence is fine.
    """

    def __init__(self, answers: Answers, env_id: str) -> None:
        from lightkube import Client

        config = load_config(answers)
        self.answers = answers
        self.env_id = env_id
        self.namespace = answers.namespace_for(env_id)
        self.server = getattr(getattr(config, "cluster", None), "server", "?")
        self.client = Client(config=config, namespace=self.namespace, field_manager=answers.field_manager,
                             timeout=answers.request_timeout_seconds)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    def _call(self, what: str, call: Callable[[], Any], *, absent_ok: bool = False) -> Any:
        try:
            try:
                return call()
            except Exception as exc:  # every request here is idempotent: retry a dropped connection once
                if _status_code(exc) is not None or not _is_transport_error(exc):
                    raise
                time.sleep(0.2)
                return call()
        except ProviderError:
            raise
        except Exception as exc:
            code = _status_code(exc)
            if code is None:
                if _is_transport_error(exc):
                    raise ProviderError(f"{what}: cannot reach the Kubernetes API at {self.server}: {exc}",
                                        hint="check the kubeconfig's server and that the cluster is up "
                                             "(`kubectl cluster-info`)") from exc
                raise ProviderError(f"{what}: unexpected answer from the API server at {self.server}: "
                                    f"{type(exc).__name__}: {exc}",
                                    hint="is the kubeconfig pointing at a Kubernetes API server?") from exc
            if code == 404 and absent_ok:
                return None
            message = _api_message(exc)
            hint = {
                401: "the kubeconfig's credentials were refused; log in again or refresh the token",
                403: _RBAC_HINT,
                404: f"check that namespace {self.namespace} exists (and, for routes, that the Gateway API "
                     f"CRDs are installed)",
                409: "another writer changed the object at the same time; run the command again",
                422: "the API server refused the manifest: its message names the field (an admission policy, "
                     "or a Kubernetes version without it)",
            }.get(code)
            raise ProviderError(f"{what}: the API server answered {code}: {message}", hint=hint,
                                status=code) from exc

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = namespace or self.namespace
        found = self._call(f"read {kind} {ns}/{name}",
                           lambda: self.client.get(_resource(kind), name, namespace=ns), absent_ok=True)
        return None if found is None else _as_dict(found, kind)

    def list(self, kind: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        selector = dict(labels)
        return self._call(f"list {kind} in {self.namespace}", lambda: [
            _as_dict(item, kind)
            for item in self.client.list(_resource(kind), namespace=self.namespace, labels=selector)])

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        from lightkube.types import PatchType

        kind, name = manifest["kind"], manifest["metadata"]["name"]
        result = self._call(
            f"apply {kind} {self.namespace}/{name}",
            lambda: self.client.patch(_resource(kind), name, dict(manifest), namespace=self.namespace,
                                      patch_type=PatchType.APPLY, field_manager=self.answers.field_manager,
                                      force=True))
        return _as_dict(result, kind)

    def delete(self, kind: str, name: str) -> bool:
        """Delete (background propagation); ``False`` when it was already gone."""
        from lightkube.types import CascadeType

        done = self._call(f"delete {kind} {self.namespace}/{name}",
                          lambda: self.client.delete(_resource(kind), name, namespace=self.namespace,
                                                     cascade=CascadeType.BACKGROUND) or True, absent_ok=True)
        return done is not None


#: Idle clients kept for reuse in this process, most recently used last. Building a lightkube
#: client costs about 25 ms (its TLS context loads the CA bundle), more than most requests.
_IDLE: "collections.OrderedDict[tuple, Cluster]" = collections.OrderedDict()
_IDLE_LOCK = threading.Lock()
_IDLE_MAX = 8


def _client_key(answers: Answers, env_id: str) -> tuple:
    """Everything a client depends on, including the kubeconfig file's identity (a rewrite is a new key)."""
    if answers.kubeconfig:
        source = Path(answers.kubeconfig).expanduser()
    else:
        candidates = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        source = next((p for p in [*candidates, Path("~/.kube/config").expanduser()] if p.is_file()), None)
    try:
        stat = source.stat() if source is not None else None
        identity = (str(source.resolve()), stat.st_mtime_ns, stat.st_size) if stat else ("in-cluster",)
    except OSError:
        identity = (str(source),)
    return (identity, answers.context, answers.namespace_for(env_id), answers.field_manager,
            answers.request_timeout_seconds)


@contextlib.contextmanager
def connect(answers: Answers, env_id: str) -> Iterator[Cluster]:
    """A client for one verb: reused from an earlier verb of this process when nothing changed.

    A client in use is taken out of the pool, so threads never share one; a verb that fails
    closes its client instead of returning it.
    """
    key = _client_key(answers, env_id)
    with _IDLE_LOCK:
        cluster = _IDLE.pop(key, None)
    if cluster is None:
        cluster = Cluster(answers, env_id)
    try:
        yield cluster
    except BaseException:
        cluster.close()
        raise
    evicted = []
    with _IDLE_LOCK:
        _IDLE[key] = cluster
        while len(_IDLE) > _IDLE_MAX:
            evicted.append(_IDLE.popitem(last=False)[1])
    for old in evicted:
        old.close()


def guard(obj: Mapping[str, Any] | None, env_id: str, action: str) -> None:
    """Refuse to ``action`` an existing object that is not this environment's."""
    if obj is None:
        return
    problem = status.ownership_problem(obj, env_id)
    if problem is not None:
        raise ProviderError(
            f"refusing to {action} {status.describe(obj)}: it {problem}",
            hint="greentic-deployer never adopts or changes objects it did not create for this environment; "
                 "rename or delete that object, or use another namespace (the `namespace` answer)",
            object=status.describe(obj))


def _budget(configured: float, timeout: float | None) -> float:
    """A wait's budget: the answers' setting, shortened by the caller's ``timeout`` when that is smaller."""
    return configured if timeout is None else min(configured, timeout)


def _sleep_until_next(deadline: float, interval: float) -> None:
    time.sleep(max(min(interval, deadline - time.monotonic()), 0.0))


# --------------------------------------------------------------------------- stage


def stage(env: Environment, revision_id: str, answers: Mapping[str, Any]) -> StageOutcome:
    """Check the answers, the image reference and that the manifests render; no request is sent."""
    parsed = Answers.parse(answers)
    revision = env.revision(revision_id)
    deployment = render.deployment_manifest(env, revision, parsed)
    service = render.service_manifest(env, revision, parsed)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    detail: dict[str, Any] = {
        "namespace": parsed.namespace_for(env.environment_id),
        "image": image,
        "replicas": deployment["spec"]["replicas"],
        "objects": [status.describe(deployment), status.describe(service)],
    }
    if "@" not in image:
        detail["warning"] = "the image is not pinned by digest: a re-pulled tag may run different code"
    return StageOutcome(detail=detail)


# --------------------------------------------------------------------------- warm


def _pod_problems(cluster: Cluster, env: Environment, revision_id: str) -> str:
    """Why the revision's pods are not ready (waiting reasons, last exits, scheduling), best effort."""
    try:
        pods = cluster.list("Pod", render.revision_selector(env, revision_id))
    except ProviderError:  # no permission to read pods: say nothing rather than fail the message
        return ""
    reasons: list[str] = []
    for pod in pods[:3]:
        name = (pod.get("metadata") or {}).get("name", "?")
        pod_status = pod.get("status") or {}
        for container in pod_status.get("containerStatuses") or ():
            waiting = (container.get("state") or {}).get("waiting") or {}
            last = (container.get("lastState") or {}).get("terminated") or {}
            if waiting.get("reason"):
                reasons.append(f"pod {name}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
            if last:
                reasons.append(f"pod {name}: last exit code {last.get('exitCode')} ({last.get('reason', '')})")
        for condition in pod_status.get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reasons.append(f"pod {name}: not scheduled: {condition.get('message', '')}")
    return "; ".join(reasons)


def _condition_messages(deployment: Mapping[str, Any]) -> str:
    conditions = (deployment.get("status") or {}).get("conditions") or ()
    return "; ".join(f"{c.get('type')}: {c.get('message')}" for c in conditions
                     if c.get("status") == "False" and c.get("message"))


def warm(env: Environment, revision_id: str, answers: Mapping[str, Any], progress: Progress,
         timeout: float | None) -> WarmOutcome:
    parsed = Answers.parse(answers)
    revision = env.revision(revision_id)
    want_deployment = render.deployment_manifest(env, revision, parsed)
    want_service = render.service_manifest(env, revision, parsed)
    name = want_deployment["metadata"]["name"]
    budget = _budget(parsed.warm_timeout_seconds, timeout)
    started = time.monotonic()
    deadline = started + budget
    with connect(parsed, env.environment_id) as cluster:
        live = cluster.get("Deployment", name)
        guard(live, env.environment_id, "modify")
        live_service = cluster.get("Service", name)
        guard(live_service, env.environment_id, "modify")
        previous_replicas = (live.get("spec") or {}).get("replicas") if live is not None else None
        created: list[str] = []
        written: list[str] = []
        try:
            if not status.is_applied(want_deployment, live):
                if live is None:
                    created.append("Deployment")
                live = cluster.apply(want_deployment)
                written.append("Deployment")
            if not status.is_applied(want_service, live_service):
                if live_service is None:
                    created.append("Service")
                cluster.apply(want_service)
                written.append("Service")
            rollout = status.rollout_status(live)
            last_message = ""
            while not rollout.complete:
                if rollout.failed:
                    raise ProviderError(f"Deployment {cluster.namespace}/{name}: {rollout.message} "
                                        f"({rollout.counts()})",
                                        hint=_pod_problems(cluster, env, revision_id) or "kubectl describe deployment "
                                             f"-n {cluster.namespace} {name}")
                if time.monotonic() >= deadline:
                    problems = "; ".join(p for p in (_condition_messages(live),
                                                     _pod_problems(cluster, env, revision_id)) if p)
                    raise ProviderTimeout(
                        f"Deployment {cluster.namespace}/{name} did not complete its rollout within {budget:g}s: "
                        f"{rollout.message} ({rollout.counts()})" + (f"; {problems}" if problems else ""),
                        hint=f"kubectl describe deployment -n {cluster.namespace} {name}; raise warm_timeout_seconds "
                             "if the image is just slow to start", revision_id=revision_id)
                if rollout.message != last_message:
                    progress(f"{name}: {rollout.message}")
                    last_message = rollout.message
                _sleep_until_next(deadline, parsed.poll_interval_seconds)
                live = cluster.get("Deployment", name)
                if live is None:
                    raise ProviderError(f"Deployment {cluster.namespace}/{name} was deleted while warm waited for it")
                rollout = status.rollout_status(live)
        except BaseException as exc:  # failure, timeout or Ctrl-C: undo what this call started
            undone = _undo_warm(cluster, env, revision, parsed, created, written, previous_replicas)
            if undone and isinstance(exc, ProviderError):
                exc.message = f"{exc.message} (undone: {undone})"
                exc.args = (exc.message,)
            raise
    return WarmOutcome(detail={
        "namespace": cluster.namespace, "deployment": name, "service": name,
        "replicas": rollout.desired, "already_running": not written, "applied": written,
        "waited_seconds": round(time.monotonic() - started, 3),
    })


def _undo_warm(cluster: Cluster, env: Environment, revision: Any, answers: Answers, created: list[str],
               written: list[str], previous_replicas: Any) -> str:
    """Delete what a failed warm created; scale a drained Deployment it scaled up back to zero."""
    name = render.revision_object_name(revision.revision_id)
    done = []
    with contextlib.suppress(ProviderError):
        for kind in created:
            cluster.delete(kind, name)
            done.append(f"deleted the {kind}")
        if "Deployment" in written and "Deployment" not in created and previous_replicas == 0:
            cluster.apply(render.deployment_manifest(env, revision, answers, replicas=0))
            done.append("scaled the Deployment back to 0")
    return ", ".join(done)


# --------------------------------------------------------------------------- traffic


def apply_traffic_split(env: Environment, deployment_id: str, answers: Mapping[str, Any], progress: Progress,
                        timeout: float | None) -> TrafficSplitOutcome:
    parsed = Answers.parse(answers)
    split = env.split_for(deployment_id)
    want_route = render.route_manifest(env, deployment_id, parsed)  # refuses > 16 entries before any request
    want_config = render.config_map_manifest(env, deployment_id, parsed)
    intended = {entry.revision_id: int(entry.weight_bps) for entry in split.entries}
    gateway = (parsed.gateway_name, parsed.gateway_namespace_for(env.environment_id), parsed.gateway_section)
    with connect(parsed, env.environment_id) as cluster:
        weighted = [entry for entry in split.entries if entry.weight_bps > 0]
        if weighted:  # never send traffic to a revision that cannot serve it
            ours = {
                (item.get("metadata") or {}).get("name"): item
                for item in cluster.list("Deployment", {**render.env_labels(env.environment_id),
                                                        render.DEPLOYMENT_LABEL: deployment_id})
                if status.ownership_problem(item, env.environment_id) is None
            }
            for entry in weighted:
                found = ours.get(render.revision_object_name(entry.revision_id))
                _, ready, desired = status.serving(found) if found is not None else (False, 0, 0)
                if ready < 1:
                    why = "it has no Deployment" if found is None else f"none of its {desired} replica(s) is ready"
                    raise ProviderError(
                        f"revision {entry.revision_id} would get {entry.weight_bps} bps but {why} in namespace "
                        f"{cluster.namespace}",
                        hint=f"warm it first (`greentic-deployer revision warm {env.environment_id} "
                             f"{entry.revision_id}`) or give it weight 0")
        route_name = want_route["metadata"]["name"]
        live_route = cluster.get("HTTPRoute", route_name)
        guard(live_route, env.environment_id, "modify")
        live_config = cluster.get("ConfigMap", want_config["metadata"]["name"])
        guard(live_config, env.environment_id, "modify")
        written = []
        if not status.is_applied(want_config, live_config):
            cluster.apply(want_config)
            written.append("ConfigMap")
        if not status.is_applied(want_route, live_route):
            live_route = cluster.apply(want_route)
            written.append("HTTPRoute")
        enforced = status.route_weights(live_route)
        if enforced != intended:
            raise ProviderError(f"HTTPRoute {cluster.namespace}/{route_name} holds weights {enforced} after the "
                                f"apply, expected {intended}", hint="another writer is changing the route; check "
                                "`kubectl get httproute -o yaml` for its field managers")
        budget = _budget(parsed.route_accept_timeout_seconds, timeout)
        live_route = _wait_route_accepted(cluster, live_route, gateway, time.monotonic() + budget, budget,
                                          parsed.poll_interval_seconds, progress)
    return TrafficSplitOutcome(
        applied_deployment_id=deployment_id, applied_entries=split.entries,
        provider_weights=enforced, max_deviation_bps=0,
        detail={"namespace": cluster.namespace, "httproute": route_name,
                "configmap": want_config["metadata"]["name"], "applied": written,
                "route_generation": (live_route.get("metadata") or {}).get("generation")},
    )


def _wait_route_accepted(cluster: Cluster, route: dict[str, Any], gateway: tuple[str, str, str | None], deadline: float,
                         budget: float, interval: float, progress: Progress) -> dict[str, Any]:
    """Wait until the gateway controller accepts the route's current generation (when it reports status)."""
    accepted, why = status.route_accepted(route, *gateway)
    name = (route.get("metadata") or {}).get("name")
    while not accepted:
        if time.monotonic() >= deadline:
            raise ProviderTimeout(f"HTTPRoute {cluster.namespace}/{name} not accepted by Gateway "
                                  f"{gateway[1]}/{gateway[0]} within {budget:g}s: {why}",
                                  hint=f"kubectl describe httproute -n {cluster.namespace} {name}")
        progress(f"{name}: {why}")
        _sleep_until_next(deadline, interval)
        route = cluster.get("HTTPRoute", name) or {}
        accepted, why = status.route_accepted(route, *gateway)
    return route


# --------------------------------------------------------------------------- drain


def drain(env: Environment, revision_id: str, answers: Mapping[str, Any], progress: Progress,
          timeout: float | None) -> DrainOutcome:
    """Wait (up to ``drain_seconds``) until the route no longer sends the revision traffic, then scale to zero.

    The route change "took effect" when the deployment's HTTPRoute gives the revision no weight
    and, if the gateway reports status, it has accepted that generation. Pods then get
    SIGTERM and ``terminationGracePeriodSeconds`` (``drain_seconds`` + slack) to finish their
    in-flight requests; the verb waits for them within ``drain_seconds`` + slack and reports
    any still terminating.
    """
    parsed = Answers.parse(answers)
    revision = env.revision(revision_id)
    drain_budget = float(max(revision.drain_seconds, 0))
    if timeout is not None:
        drain_budget = min(drain_budget, timeout)
    started = time.monotonic()
    route_deadline = started + drain_budget
    final_deadline = started + drain_budget + DRAIN_SLACK_SECONDS
    if timeout is not None:
        final_deadline = min(final_deadline, started + timeout)
    name = render.revision_object_name(revision_id)
    route_name = render.route_name(revision.deployment_id)
    gateway = (parsed.gateway_name, parsed.gateway_namespace_for(env.environment_id), parsed.gateway_section)
    with connect(parsed, env.environment_id) as cluster:
        weight_at_start = None
        while True:
            route = cluster.get("HTTPRoute", route_name)
            if route is not None and status.ownership_problem(route, env.environment_id) is not None:
                route = None  # not ours: it carries none of our weights
            weight = status.route_weights(route).get(revision_id, 0) if route is not None else 0
            accepted, why = status.route_accepted(route, *gateway) if route is not None else (True, "")
            weight_at_start = weight if weight_at_start is None else weight_at_start
            if weight == 0 and accepted:
                break
            if time.monotonic() >= route_deadline:
                reason = (f"HTTPRoute {cluster.namespace}/{route_name} still gives it {weight} bps" if weight
                          else f"HTTPRoute {cluster.namespace}/{route_name}: {why}")
                raise ProviderTimeout(
                    f"cannot drain revision {revision_id} within its drain_seconds ({drain_budget:g}s): {reason}",
                    hint="apply a split without this revision first (`greentic-deployer traffic set`), then drain",
                    revision_id=revision_id)
            progress(f"{name}: waiting for the route to stop sending it traffic ({weight} bps; {why})")
            _sleep_until_next(route_deadline, parsed.poll_interval_seconds)
        route_wait = round(time.monotonic() - started, 3)

        live = cluster.get("Deployment", name)
        if live is None:
            return DrainOutcome(detail={"stopped": "not-present", "route_wait_seconds": route_wait})
        guard(live, env.environment_id, "modify")
        written = False
        want = render.deployment_manifest(env, revision, parsed, replicas=0)
        if not status.is_applied(want, live):
            live = cluster.apply(want)
            written = True
        remaining = _replicas_left(live)
        while remaining and time.monotonic() < final_deadline:
            progress(f"{name}: {remaining} pod(s) terminating")
            _sleep_until_next(final_deadline, parsed.poll_interval_seconds)
            live = cluster.get("Deployment", name) or {}
            remaining = _replicas_left(live)
    return DrainOutcome(detail={
        "stopped": "scaled-to-zero" if written else "already-stopped",
        "weight_bps_at_start": weight_at_start or 0, "route_wait_seconds": route_wait,
        "terminating_replicas": remaining, "waited_seconds": round(time.monotonic() - started, 3),
    })


def _replicas_left(deployment: Mapping[str, Any]) -> int:
    """Pods still running or shutting down: ``status.replicas`` and ``readyReplicas`` count only
    non-terminating pods, ``terminatingReplicas`` (Kubernetes 1.33+) the ones still terminating."""
    counts = deployment.get("status") or {}
    return (max(int(counts.get("replicas") or 0), int(counts.get("readyReplicas") or 0))
            + int(counts.get("terminatingReplicas") or 0))


# --------------------------------------------------------------------------- archive


def archive(env: Environment, revision_id: str, answers: Mapping[str, Any], progress: Progress,
            timeout: float | None) -> ArchiveOutcome:
    """Delete the revision's Deployment and Service and wait until they are gone; collect orphans.

    Orphans are objects labelled with this environment whose revision is no longer in
    ``env.revisions`` or is archived (Deployments, Services), or whose deployment is no longer
    in ``env.bundles`` (HTTPRoutes, ConfigMaps). Objects without this environment's labels are
    never listed, let alone deleted.
    """
    parsed = Answers.parse(answers)
    budget = _budget(parsed.archive_timeout_seconds, timeout)
    started = time.monotonic()
    deadline = started + budget
    name = render.revision_object_name(revision_id)
    selector = render.env_labels(env.environment_id)
    keep_revisions = {r.revision_id for r in env.revisions if r.lifecycle != Lifecycle.ARCHIVED} - {revision_id}
    keep_deployments = {b.deployment_id for b in env.bundles} | {s.deployment_id for s in env.traffic_splits}
    deleted: list[str] = []
    collected: list[str] = []
    with connect(parsed, env.environment_id) as cluster:
        listed = {kind: [item for item in cluster.list(kind, selector)
                         if status.ownership_problem(item, env.environment_id) is None]
                  for kind in ("Deployment", "Service", "HTTPRoute", "ConfigMap")}
        targets = []
        for kind in ("Deployment", "Service"):
            if any((item.get("metadata") or {}).get("name") == name for item in listed[kind]):
                targets.append(kind)
            else:  # not ours by label: absent (fine) or someone else's (refuse to pretend it is gone)
                guard(cluster.get(kind, name), env.environment_id, "delete")
        for kind in targets:
            if cluster.delete(kind, name):
                deleted.append(kind)
        for kind, label, keep in (("Deployment", render.REVISION_LABEL, keep_revisions),
                                  ("Service", render.REVISION_LABEL, keep_revisions),
                                  ("HTTPRoute", render.DEPLOYMENT_LABEL, keep_deployments),
                                  ("ConfigMap", render.DEPLOYMENT_LABEL, keep_deployments)):
            for item in listed[kind]:
                meta = item.get("metadata") or {}
                owner = (meta.get("labels") or {}).get(label)
                if meta.get("name") == name and kind in ("Deployment", "Service"):
                    continue
                if owner and owner not in keep:
                    if cluster.delete(kind, meta["name"]):
                        collected.append(f"{kind} {meta['name']}")
        for kind in deleted:
            while cluster.get(kind, name) is not None:
                if time.monotonic() >= deadline:
                    raise ProviderTimeout(f"{kind} {cluster.namespace}/{name} still exists {budget:g}s after its "
                                          f"deletion", hint=f"kubectl get {kind.lower()} -n {cluster.namespace} {name} "
                                          "-o yaml  (look for finalizers)", revision_id=revision_id)
                progress(f"{name}: waiting for the {kind} to be gone")
                _sleep_until_next(deadline, parsed.poll_interval_seconds)
    return ArchiveOutcome(detail={"namespace": parsed.namespace_for(env.environment_id), "deleted": deleted,
                                  "garbage_collected": collected,
                                  "waited_seconds": round(time.monotonic() - started, 3)})


# --------------------------------------------------------------------------- observe


def observe(env: Environment, answers: Mapping[str, Any]) -> Observation:
    """Two LIST requests (Deployments, HTTPRoutes with this environment's labels), whatever the env's size."""
    parsed = Answers.parse(answers)
    selector = render.env_labels(env.environment_id)
    with connect(parsed, env.environment_id) as cluster:
        deployments = {(item.get("metadata") or {}).get("name"): item for item in cluster.list("Deployment", selector)
                       if status.ownership_problem(item, env.environment_id) is None}
        routes = {(item.get("metadata") or {}).get("name"): item for item in cluster.list("HTTPRoute", selector)
                  if status.ownership_problem(item, env.environment_id) is None}
    revisions = {}
    for revision in env.revisions:
        found = deployments.get(render.revision_object_name(revision.revision_id))
        if found is None:
            revisions[revision.revision_id] = RevisionObservation(
                revision_id=revision.revision_id, present=False, serving=False, detail="no Deployment")
            continue
        serving, ready, desired = status.serving(found)
        rollout = status.rollout_status(found)
        revisions[revision.revision_id] = RevisionObservation(
            revision_id=revision.revision_id, present=True, serving=serving, ready_replicas=ready,
            desired_replicas=desired,
            detail=f"Deployment {cluster.namespace}/{render.revision_object_name(revision.revision_id)}: "
                   f"{rollout.message}")
    observed_deployments = {}
    for deployment_id in dict.fromkeys([b.deployment_id for b in env.bundles]
                                       + [s.deployment_id for s in env.traffic_splits]):
        route = routes.get(render.route_name(deployment_id))
        if route is None:
            continue
        observed_deployments[deployment_id] = DeploymentObservation(
            deployment_id=deployment_id, weights=status.route_weights(route),
            generation=(route.get("metadata") or {}).get("generation"),
            detail=f"HTTPRoute {cluster.namespace}/{render.route_name(deployment_id)}")
    return Observation(revisions=revisions, deployments=observed_deployments)


# --------------------------------------------------------------------------- preflight


def preflight(env: Environment, answers: Mapping[str, Any]) -> list[PreflightCheck]:
    """Configuration, namespace access (list Deployments) and the Gateway, each pass/fail/skip."""
    checks: list[PreflightCheck] = []
    parsed = Answers.parse(answers)
    try:
        cluster = Cluster(parsed, env.environment_id)
    except ProviderError as exc:
        return [PreflightCheck(name="kubeconfig", status=CheckStatus.FAIL, message=exc.message)]
    with contextlib.closing(cluster):
        checks.append(PreflightCheck(name="kubeconfig", status=CheckStatus.PASS,
                                     message=f"API server {cluster.server}"))
        try:
            cluster.list("Deployment", render.env_labels(env.environment_id))
            checks.append(PreflightCheck(name="namespace-access", status=CheckStatus.PASS,
                                         message=f"can list Deployments in namespace {cluster.namespace}"))
        except ProviderError as exc:
            checks.append(PreflightCheck(name="namespace-access", status=CheckStatus.FAIL, message=exc.message))
        gateway_ns = parsed.gateway_namespace_for(env.environment_id)
        try:
            found = cluster.get("Gateway", parsed.gateway_name, namespace=gateway_ns)
            checks.append(PreflightCheck(
                name="gateway", status=CheckStatus.PASS if found else CheckStatus.FAIL,
                message=f"Gateway {gateway_ns}/{parsed.gateway_name} " + ("exists" if found else "does not exist")))
        except ProviderError as exc:
            state = CheckStatus.SKIP if exc.details.get("status") == 403 else CheckStatus.FAIL
            checks.append(PreflightCheck(name="gateway", status=state, message=exc.message))
    return checks
