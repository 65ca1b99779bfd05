"""The conformance sandbox: the kmock Kubernetes emulator on 127.0.0.1, in a background thread.

kmock 0.8's ``KubernetesEmulator`` is an in-memory "database over HTTP": it stores objects
and serves get, list, merge-patch and delete for the resources declared on it. The provider
needs a few things it does not do; :class:`GreenticEmulator` adds them, each small:

1. **Server-side apply.** ``PATCH`` with ``application/apply-patch+yaml`` creates a missing
   object (kmock answers 404) and, on an existing one, makes the applied manifest the object
   (kmock merges dicts, so a removed key would stay), keeping ``status`` and the server's
   metadata. As on a real API server, ``fieldManager`` is required and the body's
   apiVersion, kind, name and namespace must match the URL (else 400). Re-applying the same
   manifest changes nothing.
2. **Server metadata.** ``uid``, ``creationTimestamp``, ``resourceVersion`` (a counter bumped on
   every change and never on a no-op) and ``generation`` (bumped when anything but metadata and
   status changes), which the rollout and route checks read.
3. **Declared resources only.** A request for a resource that is not declared is a 404
   "the server could not find the requested resource", as on a cluster without that CRD;
   one whose plural is in ``forbidden`` is a 403, as RBAC would answer.
4. **Direct reads and deletes.** GET and DELETE of objects are answered without kmock's
   generic reaction matching, whose cost grows with every request already served (it replays
   the request log through each filter); DELETE removes the object at once (no finalizers).
5. **Label selectors.** ``LIST ?labelSelector=`` filters (``k=v``, ``k==v``, ``k!=v``, ``k``,
   ``!k``); kmock returns every object.
6. **A stand-in Deployment controller** that fills ``status`` from ``spec.replicas``:
   ``deployment_readiness="ready"`` (every replica updated, ready and available, once
   ``ready_after_seconds`` have passed since the spec changed) or ``"never"`` (pods never
   become ready), so both readiness and the timeout path are exercised (``"frozen"`` leaves
   status alone, for a test that writes it). A Deployment scaled to zero has no pods at once.
   An image whose registry is under the reserved ``.invalid`` top-level domain (RFC 2606)
   never becomes ready, as its pull would fail forever. ``terminating_seconds`` > 0 keeps the
   pods of a Deployment scaled to zero in ``status.terminatingReplicas`` for that long (as
   Kubernetes 1.33+ reports pods that are shutting down).
7. **A stand-in Gateway controller** that writes ``HTTPRoute`` ``status.parents``:
   ``gateway_controller="accept"`` (Accepted for the current generation), ``"reject"``
   (Accepted False) or ``"off"`` (no status, like a cluster whose controller reports none).
8. **Optional server-side validation**: ``validate=callable`` (``Sandbox(workdir,
   validate=...)``) checks every applied object as a real API server would (the tests plug in
   kubernetes-validate and the Gateway API CRD's schema and CEL rules) and answers 422.

Controllers run before every request is served, and inside an apply before it answers, so
the emulator needs no timer. Everything here only listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from greentic_core import ProviderError

GATEWAY_GROUP = "gateway.networking.k8s.io"
CONTROLLER_NAME = "greentic.ai/sandbox-gateway"
SANDBOX_CONTEXT = "greentic-sandbox"
SANDBOX_GATEWAY = ("sandbox-gateway", "greentic-gateways")
SANDBOX_IMAGE = "registry.example.com/greentic/sample-app:1.0.0"

#: Resources the provider uses, as kmock keys: (kind, namespaced).
RESOURCES = {
    "apps/v1/deployments": "Deployment",
    "v1/services": "Service",
    "v1/configmaps": "ConfigMap",
    "v1/pods": "Pod",
    f"{GATEWAY_GROUP}/v1/httproutes": "HTTPRoute",
    f"{GATEWAY_GROUP}/v1/gateways": "Gateway",
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def _import_kmock() -> Any:
    try:
        import kmock
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ProviderError("the k8s conformance sandbox needs the kmock Kubernetes emulator",
                            hint="pip install 'greentic-deployer-k8s[sandbox]'") from exc
    return kmock


def _selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality-based label selectors, as the API server evaluates them."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif " in " in term or " notin " in term or "(" in term:
            raise ValueError(f"set-based selector {term!r} is not supported by the sandbox")
        elif term not in labels:
            return False
    return True


def _without_server_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object minus metadata and status: what ``generation`` tracks."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _unpullable(image: str) -> bool:
    """An image whose registry is under the reserved ``.invalid`` TLD (RFC 2606) can never be pulled."""
    first = image.split("/", 1)[0] if "/" in image else ""
    return first.split(":", 1)[0].lower().endswith(".invalid")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _emulator_class() -> type:
    kmock = _import_kmock()
    import aiohttp.web
    import attrs
    import yaml

    @attrs.define(kw_only=True)
    class GreenticEmulator(kmock.KubernetesEmulator):
        """kmock's KubernetesEmulator plus apply, metadata, selectors and two stand-in controllers."""

        deployment_readiness: str = "ready"
        ready_after_seconds: float = 0.0
        gateway_controller: str = "accept"
        terminating_seconds: float = 0.0
        #: ``validate(body) -> [problem, ...]``: what a real API server would refuse in an applied
        #: object (its schema, a CRD's CEL rules); a non-empty answer is a 422, as from a real one.
        validate: Any = None
        forbidden: frozenset = frozenset()  # resource plurals answered 403, as RBAC would
        _counter: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
        _changed_at: dict = attrs.field(factory=dict, init=False)
        # The controllers rescan only after a write or a configure, or when a delayed readiness is due.
        dirty: bool = attrs.field(default=True, init=False)
        _next_wake: float = attrs.field(default=float("inf"), init=False)

        # -- request dispatch ---------------------------------------------------------

        async def _handle(self, request: Any) -> Any:
            if request.resource is None:  # discovery and other non-object paths
                return await super()._handle(request)
            if request.resource not in self.resources:  # as a cluster without that CRD
                raise kmock.KubernetesError(status=404, reason="NotFound", details={},
                                            message="the server could not find the requested resource")
            if request.resource.plural in self.forbidden:
                verb = (request.action.value if request.action else request.method.value).lower()
                raise kmock.KubernetesError(
                    status=403, reason="Forbidden", details={},
                    message=f'{request.resource.plural} is forbidden: User "greentic-sandbox" cannot {verb} '
                            f'resource "{request.resource.plural}" in namespace "{request.namespace}"')
            content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
            if request.method.value == "PATCH" and request.name and "apply-patch" in content_type:
                return await self._serve_apply(request)
            async with self._lock:
                await self._run_controllers()
            # Read and delete are served directly: kmock's generic dispatch matches each request
            # against every reaction by replaying all earlier requests, which grows with the log.
            if request.action == kmock.action.FETCH:
                key = (request.resource, request.namespace, request.name)
                async with self._lock:
                    if key not in self._objects or self._objects[key].deleted:
                        raise kmock.KubernetesObjectNotFoundError()
                    raw = copy.deepcopy(self._objects[key].raw)
                return aiohttp.web.json_response(raw)
            if request.action == kmock.action.LIST:
                return aiohttp.web.json_response(await self._serve_list(request))
            if request.action == kmock.action.DELETE and request.name is not None:
                return await self._serve_delete_now(request)
            return await super()._handle(request)

        async def _serve_delete_now(self, request: Any) -> Any:
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self._objects or self._objects[key].deleted:
                    raise kmock.KubernetesObjectNotFoundError()
                raw = copy.deepcopy(self._objects[key].raw)
                self._objects[key].delete()  # no finalizers are ever set here: gone at once
                await self._buses[request.resource].put({"type": "DELETED", "object": raw})
            return aiohttp.web.json_response(raw)

        async def _serve_list(self, request: Any) -> Any:
            result = await super()._serve_list(request)
            selector = request.params.get("labelSelector")
            if selector:
                try:
                    result["items"] = [item for item in result["items"] if _selector_matches(
                        selector, (item.get("metadata") or {}).get("labels") or {})]
                except ValueError as exc:
                    raise kmock.KubernetesError(status=400, reason="BadRequest", message=str(exc)) from None
            return result

        # -- server-side apply ----------------------------------------------------------

        def _bad_request(self, message: str) -> Exception:
            return kmock.KubernetesError(status=400, reason="BadRequest", message=message, details={})

        async def _serve_apply(self, request: Any) -> Any:
            body = request.data if isinstance(request.data, dict) else yaml.safe_load(request.text or "null")
            if not isinstance(body, dict):
                raise self._bad_request("the apply patch must be an object")
            if not request.params.get("fieldManager"):
                raise self._bad_request("PATCH, application/apply-patch+yaml: fieldManager is required")
            meta = body.get("metadata") or {}
            if not body.get("apiVersion") or not body.get("kind"):
                raise self._bad_request("apiVersion and kind are required")
            if meta.get("name") != request.name:
                raise self._bad_request(f"the name in the body ({meta.get('name')!r}) does not match the URL")
            if meta.get("namespace") not in (None, request.namespace):
                raise self._bad_request("the namespace in the body does not match the URL")
            problems = self.validate(body) if self.validate is not None else []
            if problems:
                raise kmock.KubernetesError(
                    status=422, reason="Invalid", details={},
                    message=f"{body.get('kind')}.{(body.get('apiVersion') or '').split('/')[0]} "
                            f"{meta.get('name')!r} is invalid: {'; '.join(problems)}")
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                existing = self._objects[key] if key in self._objects and not self._objects[key].deleted else None
                new = copy.deepcopy(body)
                new_meta = new.setdefault("metadata", {})
                if request.namespace is not None:
                    new_meta["namespace"] = request.namespace
                code = 200
                if existing is None:
                    new_meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                                    resourceVersion=str(next(self._counter)))
                    if key in self._objects:
                        self._objects[key].create(new)
                    else:
                        self._objects[key] = new
                    self._changed_at[key] = time.monotonic()
                    await self._buses[request.resource].put({"type": "ADDED", "object": new})
                    code = 201
                else:
                    current = existing.raw
                    for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                        if field in (current.get("metadata") or {}):
                            new_meta[field] = current["metadata"][field]
                    if "status" in current:
                        new["status"] = current["status"]
                    if new != current:
                        if _without_server_fields(new) != _without_server_fields(current):
                            new_meta["generation"] = int(new_meta.get("generation") or 0) + 1
                            self._changed_at[key] = time.monotonic()
                        new_meta["resourceVersion"] = str(next(self._counter))
                        existing.history.append(new)
                        await self._buses[request.resource].put({"type": "MODIFIED", "object": new})
                self.dirty = True
                await self._run_controllers()
                raw = copy.deepcopy(self._objects[key].raw)
            return aiohttp.web.json_response(raw, status=code)

        # -- stand-in controllers (called with the lock held) -------------------------------

        async def _run_controllers(self) -> None:
            now = time.monotonic()
            if not self.dirty and now < self._next_wake:
                return
            self.dirty, self._next_wake = False, float("inf")
            for key, obj in list(self._objects.items()):
                if obj.deleted:
                    continue
                resource = key[0]
                raw = obj.raw
                if resource.group == "apps" and resource.plural == "deployments":
                    wanted = self._deployment_status(key, raw, now)
                elif resource.group == GATEWAY_GROUP and resource.plural == "httproutes":
                    wanted = self._route_status(raw)
                else:
                    continue
                if wanted != raw.get("status"):
                    new = copy.deepcopy(raw)
                    if wanted is None:
                        new.pop("status", None)
                    else:
                        new["status"] = wanted
                    new.setdefault("metadata", {})["resourceVersion"] = str(next(self._counter))
                    obj.history.append(new)
                    await self._buses[resource].put({"type": "MODIFIED", "object": new})

        def _deployment_status(self, key: Any, raw: Mapping[str, Any], now: float) -> dict[str, Any] | None:
            if self.deployment_readiness == "frozen":
                return raw.get("status")
            generation = (raw.get("metadata") or {}).get("generation")
            desired = int((raw.get("spec") or {}).get("replicas", 1))
            if desired == 0:
                until = self._changed_at.get(key, 0.0) + self.terminating_seconds
                if self.terminating_seconds > 0 and now < until:
                    self._next_wake = min(self._next_wake, until)
                    return {"observedGeneration": generation, "terminatingReplicas": 1}
                return {"observedGeneration": generation}
            containers = (((raw.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or ()
            pullable = not any(_unpullable(str(c.get("image", ""))) for c in containers)
            due = self._changed_at.get(key, 0.0) + self.ready_after_seconds
            ready = pullable and self.deployment_readiness == "ready" and now >= due
            if pullable and self.deployment_readiness == "ready" and not ready:
                self._next_wake = min(self._next_wake, due)
            if ready:
                return {"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
                        "readyReplicas": desired, "availableReplicas": desired}
            return {"observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
                    "unavailableReplicas": desired}

        def _route_status(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
            if self.gateway_controller == "off":
                return None
            meta = raw.get("metadata") or {}
            accepted = self.gateway_controller == "accept"
            condition = {
                "type": "Accepted", "status": "True" if accepted else "False",
                "reason": "Accepted" if accepted else "NotAllowedByListeners",
                "message": "" if accepted else "the sandbox gateway refuses this route",
                "observedGeneration": meta.get("generation"),
                "lastTransitionTime": meta.get("creationTimestamp"),
            }
            return {"parents": [{"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": [condition]}
                                for ref in (raw.get("spec") or {}).get("parentRefs") or ()]}

    return GreenticEmulator


class EmulatorThread:
    """A :class:`GreenticEmulator` served on 127.0.0.1 by its own event loop in a daemon thread.

    The test-side view: :meth:`objects` and :meth:`requests` snapshot what the emulator
    holds and what it was sent; :meth:`configure` switches the stand-in controllers;
    :meth:`put` stores an object directly (as if someone else had created it).
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.url = ""
        self.emulator: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="greentic-k8s-emulator", daemon=True)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> "EmulatorThread":
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise ProviderError("the kmock emulator did not start within 30s")
        if self._error is not None:
            raise ProviderError(f"the kmock emulator failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    def __enter__(self) -> "EmulatorThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        import aiohttp.test_utils

        kmock = _import_kmock()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.emulator = _emulator_class()(**self.options)
        for key, kind in RESOURCES.items():
            self.emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS)
        async with self.emulator:
            server = aiohttp.test_utils.RawTestServer(self.emulator, host="127.0.0.1", port=0)
            await server.start_server()
            try:
                self.url = str(server.make_url("")).rstrip("/")
                self._ready.set()
                await self._stop.wait()
            finally:
                await server.close()

    # -- test-side access (runs in the emulator's loop, with its lock) ---------------------------

    def _in_loop(self, function: Any) -> Any:
        async def call() -> Any:
            async with self.emulator._lock:
                return function()

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def objects(self) -> dict[tuple[str, str | None, str], dict[str, Any]]:
        """Every stored object: ``{(plural, namespace, name): object}`` (deep copies)."""
        return self._in_loop(lambda: {
            (key[0].plural, key[1], key[2]): copy.deepcopy(obj.raw)
            for key, obj in self.emulator.objects.items() if not obj.deleted})

    def versions(self) -> dict[tuple[str, str | None, str], int]:
        """How many versions each object's history holds (a write adds one)."""
        return self._in_loop(lambda: {(key[0].plural, key[1], key[2]): len(obj.history)
                                      for key, obj in self.emulator.objects.items()})

    def requests(self) -> list[tuple[str, str]]:
        """``(METHOD, path)`` of every request received, in order."""
        return self._in_loop(lambda: [(r.method.value, r.url.path) for r in self.emulator._requests])

    def request_log(self) -> list[Any]:
        """The kmock request records (method, url, params, headers, data)."""
        return self._in_loop(lambda: list(self.emulator._requests))

    def clear_requests(self) -> None:
        self._in_loop(lambda: self.emulator._requests.clear())

    def configure(self, **options: Any) -> None:
        """Switch ``deployment_readiness``, ``ready_after_seconds``, ``terminating_seconds`` or ``gateway_controller``."""
        def apply() -> None:
            for name, value in options.items():
                setattr(self.emulator, name, value)
            self.emulator.dirty = True

        self._in_loop(apply)

    def put(self, resource: str, namespace: str | None, name: str, body: Mapping[str, Any]) -> None:
        """Store ``body`` as if another client had created it (``resource`` as in :data:`RESOURCES`)."""
        def store() -> None:
            self.emulator.objects[resource, namespace, name] = copy.deepcopy(dict(body))
            self.emulator.dirty = True

        self._in_loop(store)

    def edit(self, resource: str, namespace: str | None, name: str, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into a stored object, as a hand edit (``kubectl edit``) would."""
        def merge() -> None:
            self.emulator.objects[resource, namespace, name].patch(copy.deepcopy(dict(changes)))
            self.emulator.dirty = True

        self._in_loop(merge)


def write_kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    """A kubeconfig for the emulator: one cluster, one user with a dummy token, one context."""
    import yaml

    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": SANDBOX_CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": SANDBOX_CONTEXT, "user": {"token": "greentic-sandbox-dummy-token"}}],
        "contexts": [{"name": SANDBOX_CONTEXT,
                      "context": {"cluster": SANDBOX_CONTEXT, "user": SANDBOX_CONTEXT, "namespace": namespace}}],
        "current-context": SANDBOX_CONTEXT,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Sandbox:
    """An emulator, its kubeconfig and the answers pointing at both (the conformance sandbox)."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        self.workdir = Path(workdir)
        self.emulator = EmulatorThread(**options)
        self.answers: dict[str, Any] = {}

    def __enter__(self) -> "Sandbox":
        self.emulator.start()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            kubeconfig = write_kubeconfig(self.workdir / "kubeconfig.yaml", self.emulator.url)
            name, namespace = SANDBOX_GATEWAY
            self.emulator.put(f"{GATEWAY_GROUP}/v1/gateways", namespace, name, {
                "apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "Gateway",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"gatewayClassName": "sandbox",
                         "listeners": [{"name": "http", "protocol": "HTTP", "port": 80,
                                        "allowedRoutes": {"namespaces": {"from": "All"}}}]},
            })
            self.answers = {
                "kubeconfig": str(kubeconfig),
                "context": SANDBOX_CONTEXT,
                "gateway_name": name,
                "gateway_namespace": namespace,
                "default_image": SANDBOX_IMAGE,
                "warm_timeout_seconds": 2,
                "archive_timeout_seconds": 10,
                "poll_interval_seconds": 0.05,
                "request_timeout_seconds": 10,
            }
        except BaseException:
            self.emulator.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.emulator.stop()


@contextlib.contextmanager
def sandbox(workdir: Path, **options: Any) -> Iterator[dict[str, Any]]:
    """The ``greentic_conformance_sandbox`` context manager: yields answers for a fresh emulator."""
    with Sandbox(workdir, **options) as box:
        yield dict(box.answers)
