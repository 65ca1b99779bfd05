"""The dashboard's access to greentic: stores, the registry, the operator (blocking; run in threads).

Every page and every API answer is built here from the store contract, the registry, the
operator (``observe``) and the rollout module, so the dashboard works on whatever store backend
and deployer plugins are installed. Nothing here knows HTML.

Secrets: the deployer answers are shown through :func:`greentic_core.contract.redact_answers`,
workload environment values are never shown (only their names), and every string of every
document this module returns is scrubbed of the environment's secret answer values (a provider
may quote one in an observation detail or an error), as the operator scrubs its errors.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from greentic_core import codec
from greentic_core.contract import REDACTED, redact_answers
from greentic_core.errors import GreenticError
from greentic_core.operator import Operator
from greentic_core.plan import revision_name
from greentic_core.store import StoreBackend
from greentic_core.traffic import split_history

from .charts import PALETTE

#: Observations younger than this are reused (a page and the live watcher share them).
OBSERVE_MAX_AGE = 1.5
#: Keys whose values are secrets wherever they appear in a notify record.
SECRET_WORDS = re.compile(r"secret|token|password|passwd|credential|api_?key", re.I)
#: Rollout phases that count as "in progress" on the environments page.
IN_PROGRESS = ("progressing", "paused", "aborting", "retry")
#: The order of the revision table after the routed revisions (weight > 0): live ones first.
LIFECYCLE_RANK = {"ready": 0, "warming": 1, "staged": 2, "draining": 3, "failed": 4, "inactive": 5, "archived": 6}
#: Environments whose view data is kept (a few documents: the ones people have open).
VIEWS_KEPT = 8


def ts(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return codec.format_timestamp(value)
    return str(value)


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every secret answer value replaced by ``***`` in every string."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


def redact_notify(notify: Any) -> Any:
    """A rollout's notify configuration safe to show (the core already redacts it in
    ``rollout.status``; this is the belt to its braces): a secret-looking key's value becomes
    ``***``, and so does anything that is neither a record nor a list of records."""
    if notify is None:
        return None
    if isinstance(notify, list):
        return [redact_notify(item) for item in notify]
    if isinstance(notify, Mapping):
        return {str(k): (REDACTED if SECRET_WORDS.search(str(k)) and v not in (None, "", REDACTED) else v)
                for k, v in notify.items()}
    return REDACTED


def notify_secrets(records: Any) -> set[str]:
    """The secret values of raw notify records (webhook secrets, URLs with credentials or a
    query), to scrub from everything shown."""
    found: set[str] = set()
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, Mapping):
            continue
        for key, value in record.items():
            if isinstance(value, str) and len(value) >= 3 and (SECRET_WORDS.search(str(key)) or
                                                               (key == "url" and ("@" in value or "?" in value))):
                found.add(value)
    return found


class View:
    """What an environment page shows that depends on the document only, built once per
    version of the document (:meth:`Backend.view`) and shared by every request until it changes:
    the per-revision and per-deployment rows (secrets scrubbed), the revision table's order and
    the lifecycle counts. Nothing here may be mutated by a reader."""

    __slots__ = ("key", "env", "secrets", "revisions", "by_id", "deployments", "digests", "order", "counts",
                 "routed", "colours")

    def __init__(self, key: Any, env: Any, secrets: tuple[str, ...], revisions: list[dict[str, Any]],
                 deployments: list[dict[str, Any]]) -> None:
        self.key = key
        self.env = env
        self.secrets = secrets
        self.revisions = revisions
        self.by_id = {r["revision_id"]: r for r in revisions}
        self.deployments = deployments
        #: per deployment: a digest of everything its section shows from the document
        rows: dict[str, list[Any]] = {}
        for r in revisions:
            rows.setdefault(r["deployment_id"], []).append((r["revision_id"], r["name"], r["lifecycle"],
                                                             r["weight_bps"]))
        self.digests = {d["deployment_id"]: json.dumps([d, rows.get(d["deployment_id"], [])], sort_keys=True,
                                                       default=str)
                        for d in deployments}
        last = len(revisions)
        #: the revision table: routed first, then by lifecycle (live ones first), newest first
        self.order = [r["revision_id"] for _, r in sorted(
            enumerate(revisions), key=lambda ir: (0 if (ir[1]["weight_bps"] or 0) > 0 else 1,
                                                  LIFECYCLE_RANK.get(ir[1]["lifecycle"], 7), last - ir[0]))]
        self.counts: dict[str, int] = {}
        for r in revisions:
            self.counts[r["lifecycle"]] = self.counts.get(r["lifecycle"], 0) + 1
        self.routed = sum(1 for r in revisions if (r["weight_bps"] or 0) > 0)
        #: a colour per revision, the same in every bar of its deployment
        self.colours = {rid: PALETTE[i % len(PALETTE)] for d in deployments
                        for i, rid in enumerate(d["revision_ids"])}


class Backend:
    """Opens one store per worker thread (a backend need not be thread-safe) and shares the
    registry. ``actor`` is the audit actor of actions (``ui:<name>``)."""

    def __init__(self, open_store: Callable[[], StoreBackend], registry: Any, *, actor: str,
                 allow_actions: bool = False) -> None:
        self._open_store = open_store
        self.registry = registry
        self.actor = actor
        self.allow_actions = allow_actions
        self._local = threading.local()
        self._opened: list[StoreBackend] = []
        self._lock = threading.Lock()
        self._observations: dict[str, tuple[float, dict[str, Any]]] = {}
        self._secrets: dict[str, tuple[int, tuple[str, ...], dict[str, Any]]] = {}
        self._views: dict[str, View] = {}

    # ----------------------------------------------------------------- plumbing

    def store(self) -> StoreBackend:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._open_store()
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            try:
                store.close()
            except Exception:  # closing at exit: nothing more to do
                pass

    def operator(self, command: str = "", progress: Callable[[str], None] | None = None) -> Operator:
        return Operator(self.store(), self.registry, actor=self.actor, command=command, progress=progress)

    @property
    def store_url(self) -> str:
        return self.store().url  # redacted by contract

    def secrets(self, env: Any) -> tuple[str, ...]:
        """The secret answer values of ``env`` (longest first), cached per generation."""
        cached = self._secrets.get(env.environment_id)
        if cached is not None and cached[0] == env.generation:
            return cached[1]
        values: tuple[str, ...] = ()
        shown: dict[str, Any] = {}
        try:
            op = self.operator()
            answers = op.load_answers(env)
            binding = op.deployer_binding(env)
            record = self.registry.record(binding.kind.path)
            descriptor = record.descriptor if record.ok else None
            keys = descriptor.secret_keys() if descriptor is not None else frozenset()
            found = {str(v) for k, v in answers.items() if k in keys and v not in (None, "")}
            values = tuple(sorted((v for v in found if len(v) >= 3), key=len, reverse=True))
            # a plugin we cannot load: no schema says which answers are secret, show none of them
            shown = redact_answers(descriptor, answers) if descriptor is not None else {k: REDACTED for k in answers}
        except GreenticError:
            shown = {}
        self._secrets[env.environment_id] = (env.generation, values, shown)
        return values

    def shown_answers(self, env: Any) -> dict[str, Any]:
        self.secrets(env)
        return dict(self._secrets[env.environment_id][2])

    # ----------------------------------------------------------------- observation

    def observation(self, env_id: str, *, max_age: float = OBSERVE_MAX_AGE) -> dict[str, Any]:
        """``{"ok", "revisions", "deployments", "error", "at"}`` from :meth:`Operator.observe`,
        reused while younger than ``max_age`` seconds."""
        cached = self._observations.get(env_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
        try:
            # Operator.observe without its own load: the view has the document (2 MB for 1,000
            # revisions, as long to decode as the provider takes to answer)
            env = self.view(env_id).env
            seen = _bind_for_reading(self.operator(), env).observe(env)
            result: dict[str, Any] = {
                "ok": True, "error": None,
                "revisions": {k: {"present": v.present, "serving": v.serving, "ready_replicas": v.ready_replicas,
                                  "desired_replicas": v.desired_replicas, "detail": v.detail,
                                  "restarts": dict(v.restarts) if v.restarts is not None else None}
                              for k, v in seen.revisions.items()},
                "deployments": {k: {"weights": dict(v.weights), "generation": v.generation, "detail": v.detail}
                                for k, v in seen.deployments.items()},
            }
        except GreenticError as exc:
            result = {"ok": False, "error": exc.message, "revisions": {}, "deployments": {}}
        except Exception as exc:  # a provider bug must not take the page down
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "revisions": {}, "deployments": {}}
        result["at"] = ts(datetime.now(timezone.utc))
        self._observations[env_id] = (time.monotonic(), result)
        return result

    def forget_observation(self, env_id: str) -> None:
        self._observations.pop(env_id, None)

    # ----------------------------------------------------------------- rollouts

    def rollout_states(self, env_id: str, env: Any = None) -> dict[str, Any]:
        from greentic_core import rollout

        try:
            try:
                return rollout.load_all(self.store(), env_id, env)  # a core that takes the loaded document
            except TypeError:
                return rollout.load_all(self.store(), env_id)
        except GreenticError:
            return {}

    # ----------------------------------------------------------------- documents

    def environments(self) -> list[dict[str, Any]]:
        store = self.store()
        rows = []
        for env_id in store.list():
            try:
                view = self.view(env_id)
            except GreenticError as exc:
                rows.append({"environment_id": env_id, "name": env_id, "error": exc.message, "deployer": None,
                             "generation": None, "deployments": 0, "revisions": 0, "lifecycles": {},
                             "rollouts": [], "health": {"state": "unknown", "message": exc.message}, "lease": None})
                continue
            env, secrets = view.env, view.secrets
            states = self.rollout_states(env_id, env)
            lifecycles = dict(view.counts)
            rollouts = [{"deployment_id": did, "bundle_id": s.bundle_id, "phase": s.phase,
                         "passed_steps": s.passed_steps, "steps": len(s.steps)}
                        for did, s in states.items() if s.phase in IN_PROGRESS]
            rows.append(scrub({
                "environment_id": env_id, "name": env.name, "error": None,
                "deployer": _deployer(env), "generation": env.generation, "deployments": len(env.bundles),
                "revisions": len(env.revisions), "lifecycles": lifecycles, "rollouts": rollouts,
                "health": self.health(env, self.observation(env_id)), "lease": self.lease(env_id),
            }, secrets))
        return rows

    def lease(self, env_id: str) -> dict[str, Any] | None:
        try:
            lease = self.store().lease(env_id)
        except GreenticError:
            return None
        if lease is None:
            return None
        doc = lease.to_json()
        return {"holder": doc["holder"], "pid": doc["pid"], "command": doc["command"], "acquired": doc["acquired"],
                "expires": doc["expires"]}

    @staticmethod
    def health(env: Any, observed: Mapping[str, Any]) -> dict[str, Any]:
        """``healthy`` when every ready revision is present and serving and every deployment's
        enforced weights are the recorded ones; ``degraded`` otherwise; ``unknown`` when the
        provider could not be observed."""
        if not observed.get("ok"):
            return {"state": "unknown", "message": observed.get("error") or "not observed"}
        problems = []
        ready = [r for r in env.revisions if r.lifecycle.value == "ready"]
        for r in ready:
            seen = observed["revisions"].get(r.revision_id)
            if not seen or not (seen["present"] and seen["serving"]):
                problems.append(f"revision {r.revision_id} is ready but not serving")
        for split in env.traffic_splits:
            if _drift(split, observed) is True:
                problems.append(f"deployment {split.bundle_id}: the provider enforces other weights")
        serving = sum(1 for r in ready if (observed["revisions"].get(r.revision_id) or {}).get("serving"))
        if problems:
            return {"state": "degraded", "message": "; ".join(problems[:3]), "serving": serving, "ready": len(ready)}
        return {"state": "healthy", "message": f"{serving}/{len(ready)} ready revision(s) serving",
                "serving": serving, "ready": len(ready)}

    def runtime_config(self, env_id: str) -> dict[str, Any] | None:
        """The published runtime-config (None when nothing is live), secrets scrubbed."""
        store = self.store()
        secrets = self.view(env_id).secrets
        runtime = store.load_runtime_config(env_id)
        return scrub(codec.unstructure(runtime), secrets) if runtime is not None else None

    def view(self, env_id: str) -> View:
        """The document's part of an environment page, built once per version of the document.

        The file store is asked with ``stat`` (inode, size, mtime of ``environment.json``: a
        write renames a new file over it), so an unchanged document is neither read nor decoded;
        other stores are loaded and the view is kept per generation."""
        store = self.store()
        key: Any = None
        path_of = getattr(store, "environment_path", None)
        if callable(path_of):
            key = _stamp(path_of(env_id))  # before the load: a write in between only costs a reload
        cached = self._views.get(env_id)
        if key is not None and cached is not None and cached.key == key:
            return cached
        env = store.load(env_id)
        if key is None:
            key = ("generation", env.generation)
            if cached is not None and cached.key == key:
                return cached
        built = self._build_view(key, env)
        with self._lock:
            self._views.pop(env_id, None)
            self._views[env_id] = built
            while len(self._views) > VIEWS_KEPT:
                self._views.pop(next(iter(self._views)))
        return built

    def forget_views(self) -> None:
        with self._lock:
            self._views.clear()

    def _build_view(self, key: Any, env: Any) -> View:
        secrets = self.secrets(env)
        weights = {e.revision_id: e.weight_bps for s in env.traffic_splits for e in s.entries}
        names = {r.revision_id: revision_name(r) for r in env.revisions}
        revisions = []
        for r in env.revisions:
            w = r.workload
            revisions.append({
                "revision_id": r.revision_id, "deployment_id": r.deployment_id, "bundle_id": r.bundle_id,
                "sequence": r.sequence, "lifecycle": r.lifecycle.value, "name": names[r.revision_id],
                "created_at": ts(r.created_at), "staged_at": ts(r.staged_at), "warmed_at": ts(r.warmed_at),
                "drain_seconds": r.drain_seconds, "weight_bps": weights.get(r.revision_id),
                "workload": None if w is None else {
                    "image": w.image, "command": list(w.command) if w.command else None, "port": w.port,
                    "health_path": w.health_path, "replicas": w.replicas, "working_dir": w.working_dir,
                    "env_keys": sorted(w.env)},  # values may be secrets: names only
            })
        ids_of: dict[str, list[str]] = {}
        for r in env.revisions:
            ids_of.setdefault(r.deployment_id, []).append(r.revision_id)
        deployments = []
        for b in env.bundles:
            split = env.split_for(b.deployment_id)
            deployments.append({
                "deployment_id": b.deployment_id, "bundle_id": b.bundle_id, "status": b.status.value,
                "hosts": list(b.route_binding.hosts), "path_prefixes": list(b.route_binding.path_prefixes),
                "split": None if split is None else {
                    "generation": split.generation, "updated_at": ts(split.updated_at), "updated_by": split.updated_by,
                    "rollback_depth": len(split_history(split)),
                    "entries": [{"revision_id": e.revision_id, "weight_bps": e.weight_bps,
                                 "name": names.get(e.revision_id)} for e in split.entries]},
                "revision_ids": ids_of.get(b.deployment_id, []),
            })
        return View(key, env, secrets, scrub(revisions, secrets), scrub(deployments, secrets))

    def environment(self, env_id: str, *, observe: bool = True, runtime: bool = True) -> dict[str, Any]:
        """One environment. ``runtime=False`` leaves the runtime config out (``None``): the page
        loads it when it is opened, as it is as large as the environment."""
        view, doc, seen = self.environment_page(env_id, observe=observe, runtime=runtime)
        doc["revisions"] = [{**r, "observed": seen.get(r["revision_id"]) if seen is not None else None}
                            for r in view.revisions]
        return doc

    def environment_page(self, env_id: str, *, observe: bool = True, runtime: bool = False
                         ) -> tuple[View, dict[str, Any], dict[str, Any] | None]:
        """``(view, doc, observed revisions)``: :meth:`environment` without its ``revisions``
        (``doc["revisions"]`` is empty; the page shows some of ``view.revisions``), and the
        provider's view of each revision (None when it was not observed), secrets scrubbed."""
        store = self.store()
        view = self.view(env_id)
        env, secrets = view.env, view.secrets
        observed = self.observation(env_id) if observe else {"ok": False, "error": "not observed",
                                                              "revisions": {}, "deployments": {}}
        states = self.rollout_states(env_id, env)
        seen = scrub(observed["revisions"], secrets) if observed.get("ok") else None
        deployments = []
        for d in view.deployments:
            split = env.split_for(d["deployment_id"])
            state = states.get(d["deployment_id"])
            dep_seen = observed["deployments"].get(d["deployment_id"]) if observed.get("ok") else None
            deployments.append({
                **{k: v for k, v in d.items() if k != "revision_ids"},
                "observed": scrub(dep_seen, secrets),
                "drift": _drift(split, observed) if split is not None else None,
                "rollout": None if state is None else scrub({"phase": state.phase, "passed_steps": state.passed_steps,
                                                             "steps": len(state.steps), "reason": state.reason},
                                                            secrets),
                "revision_ids": d["revision_ids"],
            })
        runtime_doc = None
        if runtime:
            try:
                published = store.load_runtime_config(env_id)
                runtime_doc = scrub(codec.unstructure(published), secrets) if published is not None else None
            except GreenticError as exc:
                runtime_doc = scrub({"error": exc.message}, secrets)
        doc = {
            "environment_id": env.environment_id, "name": env.name, "generation": env.generation,
            "deployer": _deployer(env), "listen_addr": env.host_config.listen_addr,
            "answers": self.shown_answers(env), "lease": self.lease(env_id), "store": store.location(env_id),
            "health": self.health(env, observed), "observation": {"ok": observed.get("ok", False),
                                                                 "error": observed.get("error"),
                                                                 "at": observed.get("at")},
            "deployments": deployments, "revisions": [], "runtime_config": runtime_doc,
        }
        head = scrub({k: v for k, v in doc.items() if k not in ("deployments", "revisions", "runtime_config")},
                     secrets)
        return view, {**doc, **head}, seen

    def rollout(self, env_id: str, deployment_ref: str) -> dict[str, Any]:
        from greentic_core import rollout

        op = self.operator()
        doc = rollout.status(op, env_id, deployment_ref)
        env = self.store().load(env_id)
        state = rollout.load_state(self.store(), env_id, doc["deployment_id"])
        doc = json.loads(json.dumps(doc, default=str))
        raw_notify = getattr(state, "notify", None) if state is not None else None
        if "notify" in doc:
            doc["notify"] = redact_notify(doc["notify"])
        doc["next_due_at"] = _next_due(doc)
        doc["timeline"] = _timeline(doc)
        names = {r.revision_id: revision_name(r) for r in env.revisions}
        doc["labels"] = {rid: (names.get(rid) or rid) for pair in (*doc.get("baseline", []), *doc.get("target", []),
                                                                     *doc.get("current_split", []))
                         for rid in [pair[0]]}
        extra = tuple(sorted(notify_secrets(raw_notify), key=len, reverse=True))
        return scrub(doc, (*self.secrets(env), *extra))

    def history(self, env_id: str, *, actor: str | None = None, verb: str | None = None,
                outcome: str | None = None, limit: int | None = None) -> dict[str, Any]:
        store = self.store()
        env = store.load(env_id)
        events = list(reversed(store.audit_events(env_id)))
        facets = {"actors": sorted({str(e.get("actor")) for e in events if e.get("actor")}),
                  "verbs": sorted({str(e.get("verb")) for e in events if e.get("verb")}),
                  "outcomes": sorted({str(e.get("outcome")) for e in events if e.get("outcome")})}
        total = len(events)
        if actor:
            events = [e for e in events if str(e.get("actor", "")) == actor]
        if verb:
            events = [e for e in events if str(e.get("verb", "")).startswith(verb)]
        if outcome:
            events = [e for e in events if str(e.get("outcome", "")) == outcome]
        if limit:
            events = events[:limit]
        return scrub({"environment_id": env_id, "total": total, "events": events, **facets}, self.secrets(env))

    def plugins(self) -> dict[str, Any]:
        records = self.registry.records()
        stores: list[dict[str, Any]] = []
        try:
            from greentic_core.store.select import store_plugins

            stores = [dict(row) for row in store_plugins()]
        except Exception:  # an older core: no store listing
            stores = []
        return {"deployers": [r.to_json() for r in records], "stores": stores}

    # ----------------------------------------------------------------- live

    def fingerprint(self, env_id: str) -> tuple[Any, ...]:
        """Something that changes when the environment, its audit log or a rollout state does.

        The file backend is read with ``stat`` (nothing read or decoded): the document, the
        audit log and the rollout states (attachments under ``<env_dir>/rollouts``). Other
        backends through the contract: generation, audit length and each deployment's rollout
        attachment."""
        from greentic_core import rollout

        store = self.store()
        path_of = getattr(store, "environment_path", None)
        audit_of = getattr(store, "audit_path", None)
        if callable(path_of) and callable(audit_of):
            document = Path(path_of(env_id))
            stamps: list[Any] = [_stamp(document), _stamp(audit_of(env_id))]
            for directory in (document.parent / "rollouts", _legacy_rollouts(store, env_id)):
                if directory is not None and directory.is_dir():
                    stamps.append(tuple(sorted((p.name, _stamp(p)) for p in directory.glob("*.json"))))
            return tuple(stamps)
        try:
            env = store.load(env_id)
            states = []
            name_of = getattr(rollout, "attachment_name", None)
            if callable(name_of):
                for bundle in env.bundles:
                    raw = store.read_attachment(env_id, name_of(bundle.deployment_id))
                    states.append(None if raw is None else hash(raw))
            return (env.generation, len(store.audit_events(env_id)), tuple(states))
        except GreenticError as exc:
            return ("error", exc.message)

    def observation_fingerprint(self, env_id: str) -> str:
        seen = self.observation(env_id)
        return json.dumps([seen.get("ok"), seen.get("error"), seen.get("revisions"), seen.get("deployments")],
                          sort_keys=True, default=str)


def _bind_for_reading(operator: Operator, env: Any) -> Any:
    """``operator.bind(env, change=False)``: bound to read only (a provider with host-local
    state on a shared store refuses changes from other hosts, never reads); a core without the
    ``change`` argument binds for reading anyway."""
    if "change" in inspect.signature(operator.bind).parameters:
        return operator.bind(env, change=False)
    return operator.bind(env)


def _legacy_rollouts(store: Any, env_id: str) -> Path | None:
    """Where rollout states lived before they became store attachments (the state directory)."""
    try:
        from greentic_core import rollout

        return Path(rollout.rollouts_dir(store, env_id))
    except (GreenticError, OSError, AttributeError):
        return None


def _stamp(path: Any) -> tuple[int, int, int] | None:
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _deployer(env: Any) -> str | None:
    binding = next((p for p in env.packs if p.slot.value == "deployer"), None)
    return str(binding.kind) if binding is not None else None


def _drift(split: Any, observed: Mapping[str, Any]) -> bool | None:
    """True when the provider enforces other (positive) weights than recorded; None when unknown."""
    if split is None or not observed.get("ok"):
        return None
    seen = observed["deployments"].get(split.deployment_id)
    if seen is None:
        return None
    recorded = {e.revision_id: e.weight_bps for e in split.entries if e.weight_bps > 0}
    enforced = {k: v for k, v in seen["weights"].items() if v > 0}
    return recorded != enforced


def _parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return codec.parse_timestamp(value)
    except Exception:
        return None


def _next_due(doc: Mapping[str, Any]) -> str | None:
    """When the current step's pause ends: the state's own due time when it records one, else
    the window's start plus the step's pause."""
    for key in ("next_step_due", "next_due_at", "next_step_due_at", "due_at", "next_due"):
        if doc.get(key):
            return str(doc[key])
    if doc.get("phase") != "progressing":
        return None
    window = doc.get("window") or {}
    started = _parse_ts(window.get("started_at"))
    steps = doc.get("steps") or []
    index = window.get("step")
    if started is None or not isinstance(index, int) or not 0 <= index < len(steps):
        return None
    pause = steps[index].get("pause_seconds") or 0
    return codec.format_timestamp(started + timedelta(seconds=float(pause)))


def _timeline(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each step with its state: passed, current, failed, inconclusive or pending, and its analysis."""
    steps = doc.get("steps") or []
    analyses: dict[int, dict[str, Any]] = {}
    for a in doc.get("analyses") or []:
        if isinstance(a, Mapping) and isinstance(a.get("step"), int):
            analyses[a["step"]] = dict(a)
    passed = int(doc.get("passed_steps") or 0)
    current = doc.get("current_step", -1)
    phase = doc.get("phase")
    out = []
    for i, step in enumerate(steps):
        analysis = analyses.get(i + 1)
        if i < passed:
            state = "passed"
        elif analysis is not None and analysis.get("verdict") == "fail":
            state = "failed"
        elif analysis is not None and analysis.get("verdict") == "inconclusive":
            state = "inconclusive"
        elif i == current and phase in ("progressing", "paused", "aborting"):
            state = "current"
        else:
            state = "pending"
        out.append({"index": i, "number": i + 1, "state": state, "fraction_bps": step.get("fraction_bps"),
                    "weights": step.get("weights") or [], "pause_seconds": step.get("pause_seconds"),
                    "analysis": step.get("analysis"), "result": analysis})
    return out
