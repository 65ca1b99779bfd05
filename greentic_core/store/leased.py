"""The transaction protocol of backends whose lease is a record in the store itself.

A shared store (PostgreSQL, S3, a third party's etcd...) cannot use a lock that dies with its
holder's process, so its lease is a record with an expiry. :class:`LeasedStore` implements the
whole :class:`~greentic_core.store.contract.StoreBackend` contract on top of a few storage
primitives (the ``_``-prefixed abstract methods), so every such backend keeps the same rules:

1. **acquire**: ``_try_acquire`` creates the lease record, or takes it over when the current
   one has expired (by the store's clock, ``_now``); a held lease is waited for up to
   ``lock_timeout`` seconds, ``on_wait`` showing the holder once a second, then
   :class:`~greentic_core.store.contract.LockTimeout` names it;
2. **renew**: a daemon thread calls ``_renew`` every ``lock_ttl / 3`` seconds while the block
   runs (a warm may wait minutes on a provider); a lease that could not be renewed is lost;
3. **load**: ``_read`` gives the document's bytes and generation;
4. **save**: ``_commit`` stores the new bytes only if the stored generation is still the
   loaded one *and* the lease record still carries this writer's fencing token, together with
   the runtime-config, the audit event and one backup (pruned to ``max_backups``), all or
   nothing; otherwise it raises :class:`~greentic_core.store.contract.SaveConflict` and the
   attempted event is audited with ``outcome: "conflict"``;
5. **release**: ``_release`` deletes the lease record if it still carries the token.

No database transaction or connection-held lock spans a provider call: every primitive is
short and self-contained.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

import attrs

from .. import codec, validation
from ..errors import EnvironmentExists, EnvironmentNotFound, SpecError, StoreError
from ..projection import materialize_runtime_config
from ..spec import Environment, RuntimeConfig
from .contract import (
    attachment_names,
    InvalidEnvironment,
    LeaseInfo,
    LeaseLost,
    LockTimeout,
    SaveConflict,
    Snapshot,
    StoreBackend,
)
from .contract import Transaction as _Transaction

__all__ = ["LeasedStore", "Stored", "runtime_config_bytes", "audit_record"]


@attrs.frozen
class Stored:
    """A stored document: its exact bytes, its generation and the backend's version tag
    (an ETag, a row version; whatever ``_commit`` needs to compare)."""

    data: bytes
    generation: int
    version: Any = None


def runtime_config_bytes(env: Environment) -> bytes | None:
    """The runtime-config to publish for ``env``, or None when nothing is live (as the file store)."""
    config = materialize_runtime_config(env)
    if not config.revisions or not env.revisions:
        return None
    return codec.dumps(config).encode("utf-8")


def audit_record(env_id: str, event: dict[str, Any], generation_before: int, generation_after: int) -> dict[str, Any]:
    """The audit event as stored: ``time`` and ``env_id`` first, the generations last."""
    if not isinstance(event, dict):
        raise TypeError(f"audit event must be a dict, got {type(event).__name__}")
    record = {"time": codec.format_timestamp(codec.utc_now()), "env_id": env_id}
    record.update({k: v for k, v in event.items() if k not in ("time", "env_id")})
    record["generation_before"] = generation_before
    record["generation_after"] = generation_after
    json.dumps(record, default=str)  # refuse what cannot be stored before anything is written
    return record


def _encode(env: Environment) -> bytes:
    try:
        return codec.dump_environment(env).encode("utf-8")
    except Exception as exc:  # a value that cannot be written is a refused save
        raise StoreError(f"cannot serialise environment {env.environment_id!r}: {exc}",
                         env_id=env.environment_id) from exc


def _check_valid(env: Environment) -> None:
    try:
        validation.validate_environment(env)
    except SpecError as exc:
        rule = getattr(exc, "format_rule", None) or getattr(exc, "rule", type(exc).__name__)
        error = InvalidEnvironment(f"refusing to save environment {env.environment_id!r}: {exc.message}",
                                   hint="nothing was written; fix the change and retry",
                                   **{**exc.details, "env_id": env.environment_id, "rule": rule})
        error.rule = rule
        raise error from exc


class LeasedStore(StoreBackend):
    """A backend whose lease, documents and audit live in one shared service."""

    #: the longest pause between two attempts to take a held lease (each attempt is a request
    #: to the service: waiters of a slow or rate-limited service should ask less often)
    lease_poll_max: ClassVar[float] = 0.05

    # ----------------------------------------------------------------- primitives

    @abc.abstractmethod
    def _now(self) -> datetime:
        """The store's clock (a lease's acquired/expires are in it, so hosts' clocks do not matter)."""

    @abc.abstractmethod
    def _list_ids(self) -> list[str]:
        """Every stored environment id (unsorted is fine)."""

    @abc.abstractmethod
    def _read(self, env_id: str) -> Stored | None:
        """The stored document, or None."""

    @abc.abstractmethod
    def _insert(self, env_id: str, data: bytes, generation: int, runtime_config: bytes | None,
                record: dict[str, Any]) -> None:
        """Create the environment with its runtime-config and first audit event, atomically;
        :class:`EnvironmentExists` when it exists (also when a concurrent creator won)."""

    @abc.abstractmethod
    def _commit(self, env_id: str, *, lease: LeaseInfo, expected: Stored, data: bytes, generation: int,
                runtime_config: bytes | None, record: dict[str, Any], max_backups: int) -> Any:
        """Compare-and-swap: store ``data`` (at ``generation``) only if the stored generation is
        ``expected.generation`` and the lease record still carries ``lease.token``; with it the
        runtime-config (None: remove), the audit ``record`` and a backup of ``expected.data``
        (keeping the newest ``max_backups``), all or nothing. Return the new version tag;
        raise :class:`SaveConflict` / :class:`LeaseLost` when refused."""

    @abc.abstractmethod
    def _append_audit(self, env_id: str, record: dict[str, Any]) -> None:
        """Append one audit event (needs no lease: the log only grows)."""

    @abc.abstractmethod
    def _read_audit(self, env_id: str) -> list[dict[str, Any]]:
        """The audit events, oldest first."""

    @abc.abstractmethod
    def _read_runtime_config(self, env_id: str) -> bytes | None:
        """The published runtime-config bytes, or None."""

    @abc.abstractmethod
    def _write_runtime_config(self, env_id: str, lease: LeaseInfo, data: bytes | None) -> None:
        """Publish (None: remove) the runtime-config while holding ``lease``."""

    @abc.abstractmethod
    def _try_acquire(self, env_id: str, *, holder: str, pid: int, command: str, ttl: float) -> LeaseInfo | None:
        """Create the lease, or take over an expired one; the granted lease (with a fresh fencing
        token larger than any earlier one), or None when someone else holds it."""

    @abc.abstractmethod
    def _renew(self, lease: LeaseInfo, ttl: float) -> bool:
        """Extend the lease to now + ttl if it still carries ``lease.token``; False when lost."""

    @abc.abstractmethod
    def _release(self, lease: LeaseInfo) -> None:
        """Delete the lease record if it still carries ``lease.token``."""

    @abc.abstractmethod
    def _read_lease(self, env_id: str) -> LeaseInfo | None:
        """The lease record as stored (also when expired), or None."""

    @abc.abstractmethod
    def _delete_lease(self, env_id: str) -> LeaseInfo | None:
        """Delete the lease record whoever holds it; what was deleted."""

    @abc.abstractmethod
    def _read_attachment(self, env_id: str, name: str) -> bytes | None: ...

    @abc.abstractmethod
    def _write_attachment(self, env_id: str, name: str, data: bytes) -> None: ...

    def _exists_before_lease(self, env_id: str) -> bool:
        """Whether the environment exists, asked before taking its lease (so a missing one is
        ``EnvironmentNotFound`` at once, not after waiting). The default reads the document; a
        backend that knows more cheaply may answer from what it knows, since the load under the
        lease (:meth:`_read_under_lease`) checks again."""
        return self._read(env_id) is not None

    def _read_under_lease(self, env_id: str, lease: LeaseInfo) -> Stored | None:
        """The document as the transaction loads it, just after ``lease`` was granted. The default
        reads it; a backend whose lease record proves the document unchanged since a version it
        already holds (the previous holder released the lease naming that version) may return
        that version without reading it again."""
        return self._read(env_id)

    def _recover(self, env_id: str, lease: LeaseInfo, stored: Stored) -> None:
        """Finish what a writer killed mid-save left undone (called under the lease, after the
        load). A backend whose save is one atomic commit has nothing to do (the default); one
        without multi-object transactions (S3) appends a committed save's pending audit event."""

    # ----------------------------------------------------------------- reads

    def list(self) -> list[str]:
        return sorted(self._list_ids())

    def exists(self, env_id: str) -> bool:
        self.check_env_id(env_id)
        return self._read(env_id) is not None

    def load(self, env_id: str) -> Environment:
        self.check_env_id(env_id)
        stored = self._read(env_id)
        if stored is None:
            raise self._not_found(env_id)
        return self._decode(env_id, stored)

    def _decode(self, env_id: str, stored: Stored) -> Environment:
        env = codec.load_environment(stored.data)
        if env.environment_id != env_id:
            raise StoreError(f"the document stored as {env_id!r} has environment_id {env.environment_id!r}",
                             env_id=env_id, found=env.environment_id)
        validation.validate_environment(env)
        return env

    def load_runtime_config(self, env_id: str) -> RuntimeConfig | None:
        self.check_env_id(env_id)
        data = self._read_runtime_config(env_id)
        return None if data is None else codec.loads(data, RuntimeConfig)

    def audit_events(self, env_id: str) -> list[dict[str, Any]]:
        self.check_env_id(env_id)
        if self._read(env_id) is None:
            raise self._not_found(env_id)
        return self._read_audit(env_id)

    def read_attachment(self, env_id: str, name: str) -> bytes | None:
        self.check_env_id(env_id)
        return self._read_attachment(env_id, _attachment_name(name))

    def write_attachment(self, env_id: str, name: str, data: bytes) -> None:
        self.check_env_id(env_id)
        self._write_attachment(env_id, _attachment_name(name), data)

    @abc.abstractmethod
    def _import(self, snapshot: Snapshot, *, replace: bool) -> None:
        """Write the whole snapshot, the document last (or in one transaction);
        :class:`EnvironmentExists` when it exists and not ``replace``."""

    def export(self, env_id: str) -> Snapshot:
        self.check_env_id(env_id)
        stored = self._read(env_id)
        if stored is None:
            raise self._not_found(env_id)
        attachments = tuple((name, data) for name in attachment_names(stored.data)
                            if (data := self._read_attachment(env_id, name)) is not None)
        return Snapshot(env_id, stored.data, self._read_runtime_config(env_id), tuple(self._read_audit(env_id)),
                        tuple(self.backups(env_id)), attachments)

    def import_snapshot(self, snapshot: Snapshot, *, replace: bool = False) -> None:
        self.check_env_id(snapshot.env_id)
        if not replace and self._read(snapshot.env_id) is not None:
            raise _exists(snapshot.env_id)
        self._import(snapshot, replace=replace)

    # ----------------------------------------------------------------- writes

    def create(self, env: Environment, *, audit_event: dict[str, Any]) -> Environment:
        env_id = env.environment_id
        self.check_env_id(env_id)
        if self._read(env_id) is not None:
            raise _exists(env_id)
        _check_valid(env)
        stored = attrs.evolve(env, generation=env.generation + 1)
        record = audit_record(env_id, audit_event, env.generation, stored.generation)
        self._insert(env_id, _encode(stored), stored.generation, runtime_config_bytes(stored), record)
        return stored

    @contextlib.contextmanager
    def transaction(self, env_id: str, *, timeout: float | None = None) -> Iterator[_Transaction]:
        self.check_env_id(env_id)
        if not self._exists_before_lease(env_id):
            raise self._not_found(env_id)
        wait = timeout if timeout is not None else self.options.lock_timeout
        lease = self._acquire(env_id, wait)
        keeper = _Renewer(self, lease, self.options.lock_ttl)
        try:
            keeper.start()
            stored = self._read_under_lease(env_id, lease)
            if stored is None:
                raise self._not_found(env_id)
            self._recover(env_id, lease, stored)
            tx = LeasedTransaction(self, env_id, lease, stored, self._decode(env_id, stored), keeper)
            try:
                yield tx
            finally:
                tx._closed = True
        finally:
            keeper.stop()
            with contextlib.suppress(Exception):  # an unreleased lease expires after the TTL
                self._release(keeper.lease)

    def _acquire(self, env_id: str, wait: float | None) -> LeaseInfo:
        opts = self.options
        started = time.monotonic()
        next_report = started
        delay = 0.01
        while True:
            lease = self._try_acquire(env_id, holder=opts.holder, pid=os.getpid(), command=opts.command,
                                      ttl=opts.lock_ttl)
            if lease is not None:
                return lease
            now = time.monotonic()
            current = self._read_lease(env_id)
            if wait is not None and now - started >= wait:
                held = f" by {current.describe(self._now())}" if current is not None else ""
                raise LockTimeout(
                    f"environment {env_id!r} is locked{held} (waited {wait:g}s)",
                    hint="another greentic-deployer command is changing it; retry when it has finished "
                         "(--lock-timeout S waits longer; `greentic-deployer env unlock ENV --force` breaks "
                         "a lease whose holder is gone)",
                    env_id=env_id, **({"holder": current.to_json()} if current is not None else {}))
            if opts.on_wait is not None and current is not None and now >= next_report:
                opts.on_wait(current, now - started)
                next_report = now + 1.0
            pause = delay * random.uniform(0.5, 1.0)  # jitter: waiters do not ask in lockstep
            time.sleep(pause if wait is None else min(pause, max(0.0, started + wait - now)))
            delay = min(delay * 2, self.lease_poll_max)

    # ----------------------------------------------------------------- leases

    def lease(self, env_id: str) -> LeaseInfo | None:
        self.check_env_id(env_id)
        if self._read(env_id) is None:
            raise self._not_found(env_id)
        current = self._read_lease(env_id)
        if current is None or (current.expires is not None and current.expires <= self._now()):
            return None
        return current

    def break_lease(self, env_id: str, *, audit_event: dict[str, Any]) -> LeaseInfo | None:
        stored = self._read(env_id) if self.exists(env_id) else None
        if stored is None:
            raise self._not_found(env_id)
        removed = self._delete_lease(env_id)
        if removed is not None:
            self._append_audit(env_id, audit_record(env_id, {**audit_event, "lease": removed.to_json()},
                                                    stored.generation, stored.generation))
        return removed

    # ----------------------------------------------------------------- helpers

    def _not_found(self, env_id: str) -> EnvironmentNotFound:
        return EnvironmentNotFound(f"environment {env_id!r} not found in {self.url}",
                                   hint="list environments with `greentic-deployer env list`", env_id=env_id)


class _Renewer:
    """Renews a lease every ``ttl / 3`` seconds until stopped; remembers when it was lost."""

    def __init__(self, store: LeasedStore, lease: LeaseInfo, ttl: float) -> None:
        self.store = store
        self.lease = lease
        self.ttl = ttl
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"greentic-lease-{lease.env_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, self.ttl))

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store._renew(self.lease, self.ttl):
                    self.lost = True
                    return
            except Exception:  # a network blip: try again at the next tick; the TTL is the bound
                continue


class LeasedTransaction(_Transaction):
    """The :class:`~greentic_core.store.contract.Transaction` of a :class:`LeasedStore`."""

    def __init__(self, store: LeasedStore, env_id: str, lease: LeaseInfo, stored: Stored, env: Environment,
                 keeper: _Renewer) -> None:
        self.store = store
        self.env_id = env_id
        self.lease = lease
        self._stored = stored
        self._env = env
        self._keeper = keeper
        self._closed = False

    @property
    def env(self) -> Environment:
        return self._env

    def save(self, new_env: Environment, *, audit_event: dict[str, Any]) -> Environment:
        self._check_open()
        if new_env.environment_id != self.env_id:
            raise StoreError(f"cannot save environment {new_env.environment_id!r} in the transaction of "
                             f"{self.env_id!r}", hint="save each environment in its own transaction",
                             env_id=self.env_id, found=new_env.environment_id)
        _check_valid(new_env)
        before = self._env.generation
        stored_env = attrs.evolve(new_env, generation=before + 1)
        record = audit_record(self.env_id, audit_event, before, stored_env.generation)
        data = _encode(stored_env)
        try:
            version = self.store._commit(self.env_id, lease=self.lease, expected=self._stored, data=data,
                                         generation=stored_env.generation,
                                         runtime_config=runtime_config_bytes(stored_env), record=record,
                                         max_backups=self.store.options.max_backups)
        except SaveConflict as exc:
            with contextlib.suppress(Exception):
                self.store._append_audit(self.env_id, {**record, "outcome": "conflict", "error": exc.message,
                                                       "generation_after": before})
            if isinstance(exc, LeaseLost) or self._keeper.lost:
                exc.hint = ("this command's lease expired or was broken while it worked, and the environment "
                            "changed meanwhile; nothing was saved: look at `greentic-deployer env history` and "
                            "run the command again (a longer --lock-ttl helps when renewals are late)")
            raise
        self._stored = Stored(data, stored_env.generation, version)
        self._env = stored_env
        return stored_env

    def audit(self, event: dict[str, Any]) -> None:
        self._check_open()
        generation = self._env.generation
        self.store._append_audit(self.env_id, audit_record(self.env_id, event, generation, generation))

    def refresh_runtime_config(self) -> bool:
        self._check_open()
        wanted = runtime_config_bytes(self._env)
        current = self.store._read_runtime_config(self.env_id)
        if current is not None and wanted is not None:
            with contextlib.suppress(ValueError):
                if json.loads(current) == json.loads(wanted):
                    return False
        if current is None and wanted is None:
            return False
        self.store._write_runtime_config(self.env_id, self.lease, wanted)
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the transaction on environment {self.env_id!r} is closed",
                             hint="save inside the `with store.transaction(...)` block")


def _attachment_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"attachment name {name!r} is not a plain relative path")
    return name


def _exists(env_id: str) -> EnvironmentExists:
    return EnvironmentExists(f"environment {env_id!r} already exists",
                             hint="choose another id, or change it with the env commands", env_id=env_id)
