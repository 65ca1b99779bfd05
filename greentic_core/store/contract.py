"""The store contract: what every store backend provides, documented where it is declared.

This module is the reference store authors read (as :mod:`greentic_core.hookspecs` is for
deployer authors). A backend is a subclass of :class:`StoreBackend`, published in the
entry-point group ``greentic.stores`` under the URL scheme it serves (``file``,
``postgresql``, ``s3``, ``etcd``...); the value names a callable
``factory(url: str, options: StoreOptions) -> StoreBackend``. The operator and the CLI use
nothing but this contract, so every command works unchanged on every backend.

Rules every backend keeps:

* **Documents are bytes.** ``environment.json`` is stored as the exact text
  :func:`greentic_core.codec.dump_environment` produced and given back as that text, so upstream
  key order and unknown fields survive byte for byte.
* **One writer per environment: the lease.** :meth:`StoreBackend.transaction` takes the
  environment's lease (holder ``actor@host``, pid, command, acquired, expires, a fencing token),
  renews it while the block runs and releases it at the end. A holder that dies stops renewing
  and its lease expires after ``StoreOptions.lock_ttl`` seconds (a backend whose lock dies with
  its holder, like the file backend's ``flock``, is free at once). A writer that finds the lease
  held waits up to ``StoreOptions.lock_timeout`` seconds, calling ``StoreOptions.on_wait`` with
  the holder, then raises :class:`LockTimeout` naming it.
* **Every save is compare-and-swap on** ``generation``. :meth:`Transaction.save` stores the
  document only if the stored generation is still the one the transaction loaded; otherwise it
  raises :class:`SaveConflict` and stores nothing (the attempted event is audited with
  ``outcome: "conflict"``). So a holder whose lease expired and was taken over can never
  overwrite the newer document: a lost update is impossible even when a lease is.
* **The audit event of a save is never lost**: committed with the document, or recovered by
  the next transaction. :meth:`StoreBackend.audit_events` returns the log oldest first, one
  event per mutation, ``generation_before``/``generation_after`` gap-free.
* **Backups are bounded** (``StoreOptions.max_backups`` per environment, newest kept).
* **runtime-config** is published with every save (absent when nothing is live).
* **Secrets stay secret**: :attr:`StoreBackend.url` is the URL with any password or key
  replaced by ``***``; no error, audit event or lease record carries a password.
* **Errors** are :class:`~greentic_core.errors.StoreError` subclasses with one-line messages
  (and a hint where a next step exists); a failed save changes nothing.

Provider state (local-process's processes, router files) never goes into a shared store: the
provider gets :meth:`StoreBackend.state_dir`, a directory on the machine that runs it.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import attrs

from ..errors import GreenticError, SpecError, StoreError
from ..spec import Environment, RuntimeConfig

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_LOCK_TTL",
    "InvalidEnvironment",
    "LeaseInfo",
    "LeaseLost",
    "LockTimeout",
    "PartialSave",
    "SaveConflict",
    "SchemaOutdated",
    "Snapshot",
    "StoreBackend",
    "StoreOptions",
    "Transaction",
]

#: Seconds a lease lives without renewal (the CLI's ``--lock-ttl``).
DEFAULT_LOCK_TTL = 30.0
#: Seconds a command waits for a held lease (the CLI's ``--lock-timeout``).
DEFAULT_LOCK_TIMEOUT = 60.0


# --------------------------------------------------------------------------- errors


class LockTimeout(StoreError):
    """Another writer held the environment's lease for longer than the caller would wait."""

    kind = "conflict"
    exit_code = 3


class SaveConflict(StoreError):
    """Compare-and-swap refused a save: the stored generation is not the one this writer loaded.

    Nothing was stored; the newer document is intact. Happens when this writer's lease expired
    (it stopped renewing for longer than the TTL) and another writer saved in between.
    """

    kind = "conflict"
    exit_code = 3


class LeaseLost(SaveConflict):
    """The writer's lease expired or was broken (``env unlock --force``) while it worked."""


class SchemaOutdated(StoreError):
    """The store's schema is missing or older than this backend: run ``store init``."""


class PartialSave(StoreError):
    """The document was saved (committed) but a follow-up step failed.

    ``saved`` is the environment as stored. The next save repairs what is missing.
    """

    def __init__(self, message: str, *, saved: Environment, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint=hint, **details)
        self.saved = saved


class InvalidEnvironment(StoreError, SpecError):
    """A save was refused because the document breaks a spec rule; nothing was written.

    Both a :class:`StoreError` and a :class:`SpecError`; the original rule error is
    ``__cause__`` and its rule name is ``rule``.
    """

    kind = "validation"
    exit_code = 2


# --------------------------------------------------------------------------- values


#: Overrides this machine's name in leases, the audit and host ownership (``greentic_core.host_state``).
HOSTNAME_ENV = "GREENTIC_HOSTNAME"


def _host() -> str:
    """This machine's name: ``$GREENTIC_HOSTNAME`` if set (hosts whose OS hostname is not
    stable, e.g. containers), else the OS hostname."""
    name = os.environ.get(HOSTNAME_ENV, "").strip()
    if name:
        return name
    try:
        if hasattr(os, "uname"):  # what socket.gethostname() returns on POSIX, without its ~3 ms import
            return os.uname().nodename or "localhost"
        import socket

        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"


@attrs.define
class StoreOptions:
    """How a backend is used: who writes (for leases and the audit), the lease TTL and wait.

    ``on_wait(lease, waited_seconds)`` is called about once a second while a command waits
    for a lease another writer holds (the CLI shows it); ``home`` is the local greentic home,
    under which non-file backends keep provider state (``<home>/state/<env>``).
    """

    actor: str = "unknown"
    command: str = ""
    lock_ttl: float = DEFAULT_LOCK_TTL
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT
    max_backups: int = 20
    home: Path | None = None
    on_wait: Callable[["LeaseInfo", float], None] | None = None

    @property
    def holder(self) -> str:
        return f"{self.actor}@{_host()}"


@attrs.frozen
class LeaseInfo:
    """Who holds an environment's lease: holder (``actor@host``), pid, command, since when,
    until when (None for a lock that dies with its holder) and the fencing token."""

    env_id: str
    holder: str
    pid: int
    command: str
    acquired: datetime
    expires: datetime | None
    token: int

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.acquired).total_seconds())

    def describe(self, now: datetime) -> str:
        """``alice@ci-7 (pid 4242, `greentic-deployer revision warm dev latest`) for 12s``"""
        expiry = ""
        if self.expires is not None:
            left = (self.expires - now).total_seconds()
            expiry = f", expires in {left:.0f}s" if left > 0 else ", expired"
        command = f", `{self.command}`" if self.command else ""
        return f"{self.holder} (pid {self.pid}{command}) for {self.age_seconds(now):.0f}s{expiry}"

    def to_json(self) -> dict[str, Any]:
        from ..codec import format_timestamp

        return {"env_id": self.env_id, "holder": self.holder, "pid": self.pid, "command": self.command,
                "acquired": format_timestamp(self.acquired),
                "expires": format_timestamp(self.expires) if self.expires is not None else None,
                "token": self.token}


#: The attachments every backend stores with an environment (and ``store migrate`` copies).
ATTACHMENTS = ("env-packs/deployer/answers.json",)
#: A detached apply (``apply --detach``) waiting for the agent.
DETACHED_ATTACHMENT = "desired/detached.json"


def attachment_names(document: bytes) -> tuple[str, ...]:
    """The attachments an export copies for an environment whose document is ``document``:
    :data:`ATTACHMENTS`, the detached apply, the host that runs a host-local provider's state
    and each deployment's rollout state
    (``rollouts/<deployment_id>.json``). The agent's claim (``agent.json``) stays behind: it
    names a holder of the source store."""
    import json

    names = [*ATTACHMENTS, DETACHED_ATTACHMENT, "state-host.json"]  # + the host that runs it (host_state)
    try:
        bundles = json.loads(document).get("bundles") or []
    except (ValueError, AttributeError):
        bundles = []
    for bundle in bundles:
        did = bundle.get("deployment_id") if isinstance(bundle, dict) else None
        if isinstance(did, str) and did.isalnum():
            names.append(f"rollouts/{did}.json")
    return tuple(names)


@attrs.frozen
class Snapshot:
    """Everything a store holds about one environment, as stored (``store migrate`` copies it):
    the document's exact bytes, the runtime-config, the audit log (oldest first), the backups
    (oldest first) and the attachments. Two snapshots are equal when the stores agree."""

    env_id: str
    document: bytes
    runtime_config: bytes | None
    audit: tuple[Any, ...]
    backups: tuple[tuple[int, bytes], ...]
    attachments: tuple[tuple[str, bytes], ...]


# --------------------------------------------------------------------------- the contract


class Transaction(abc.ABC):
    """An environment loaded under its lease (from :meth:`StoreBackend.transaction`).

    ``env`` is the stored environment; after a :meth:`save` it is the saved one, so several
    saves may follow each other in one transaction. No database transaction or connection-held
    lock may stay open between the calls: the operator calls a provider (for minutes, maybe)
    between ``load`` and ``save``, and only the lease covers that time.
    """

    env_id: str

    @property
    @abc.abstractmethod
    def env(self) -> Environment:
        """The environment as loaded, or as last saved by this transaction."""

    @abc.abstractmethod
    def save(self, new_env: Environment, *, audit_event: dict[str, Any]) -> Environment:
        """Validate and store ``new_env`` with ``generation = env.generation + 1``; return it.

        The ``generation`` carried by ``new_env`` is ignored. Compare-and-swap: stored only if
        the stored generation still equals ``env.generation``, else :class:`SaveConflict` (or
        :class:`LeaseLost`) and nothing changes except an audit event with
        ``outcome: "conflict"``. In the same commit (or recoverably): publish runtime-config,
        append ``audit_event`` with ``time``, ``env_id``, ``generation_before`` and
        ``generation_after`` added, keep at most ``max_backups`` backups.
        :class:`InvalidEnvironment` for a spec rule; :class:`PartialSave` when the document
        was committed but a follow-up step was not.
        """

    @abc.abstractmethod
    def audit(self, event: dict[str, Any]) -> None:
        """Append an audit event without changing the document (e.g. a provider call that
        failed); ``generation_before`` == ``generation_after`` == the current generation."""

    @abc.abstractmethod
    def refresh_runtime_config(self) -> bool:
        """Publish runtime-config from the current document if it differs; True when it changed."""


class StoreBackend(abc.ABC):
    """Where environments live. One instance serves one store URL.

    Reads (:meth:`list`, :meth:`exists`, :meth:`load`, :meth:`load_runtime_config`,
    :meth:`audit_events`) take no lease and always see a whole document, the old or the new.
    Environment ids reaching a backend are checked with :meth:`check_env_id` first.
    """

    #: the URL scheme this backend serves (its entry-point name)
    scheme: ClassVar[str] = ""
    #: True when a dead holder's lease is only freed by its TTL running out (False when the
    #: lock dies with its holder, as a ``flock`` does); the contract suite tests accordingly.
    lease_expires: ClassVar[bool] = True

    options: StoreOptions

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The store's URL with passwords and keys replaced by ``***``: safe to print."""

    # ----------------------------------------------------------------- reads

    @abc.abstractmethod
    def list(self) -> list[str]:
        """Ids of the stored environments, sorted; a broken document is skipped, not an error."""

    @abc.abstractmethod
    def exists(self, env_id: str) -> bool:
        """Whether an environment is stored under ``env_id``."""

    @abc.abstractmethod
    def load(self, env_id: str) -> Environment:
        """The stored environment, decoded and validated; ``EnvironmentNotFound`` when absent."""

    @abc.abstractmethod
    def load_runtime_config(self, env_id: str) -> RuntimeConfig | None:
        """The published runtime-config, or None when nothing is live."""

    @abc.abstractmethod
    def audit_events(self, env_id: str) -> list[dict[str, Any]]:
        """The audit log of an environment, oldest first."""

    @abc.abstractmethod
    def backups(self, env_id: str) -> list[tuple[int, bytes]]:
        """``(generation, document bytes)`` of the kept backups, oldest first (at most
        ``max_backups``): each is a document as it was before a save replaced it."""

    # ----------------------------------------------------------------- writes

    @abc.abstractmethod
    def create(self, env: Environment, *, audit_event: dict[str, Any]) -> Environment:
        """Store a new environment at ``generation = env.generation + 1`` with its audit event;
        ``EnvironmentExists`` when one is already there (also when two creators race)."""

    @abc.abstractmethod
    def transaction(self, env_id: str, *, timeout: float | None = None) -> contextlib.AbstractContextManager[Transaction]:
        """Take the lease, load, yield a :class:`Transaction`, release the lease at exit.

        ``timeout`` overrides ``options.lock_timeout`` (None there: wait as long as it takes).
        Raises ``EnvironmentNotFound`` before waiting when the environment does not exist.
        """

    @abc.abstractmethod
    def read_attachment(self, env_id: str, name: str) -> bytes | None:
        """A small file stored with the environment (the deployer answers,
        ``env-packs/deployer/answers.json``), or None."""

    @abc.abstractmethod
    def write_attachment(self, env_id: str, name: str, data: bytes) -> None:
        """Store an attachment atomically (old or new bytes, never torn)."""

    @abc.abstractmethod
    def export(self, env_id: str) -> Snapshot:
        """The environment as stored, bytes as stored (hold its lease for a consistent copy)."""

    @abc.abstractmethod
    def import_snapshot(self, snapshot: Snapshot, *, replace: bool = False) -> None:
        """Store an environment exactly as ``snapshot`` holds it (``store migrate``): document
        bytes, runtime-config, audit log, backups and attachments, the document last, so an
        interrupted import leaves no environment and can be run again. ``EnvironmentExists``
        unless ``replace``; with it, everything the destination held for it is replaced."""

    # ----------------------------------------------------------------- leases

    @abc.abstractmethod
    def lease(self, env_id: str) -> LeaseInfo | None:
        """The current holder of the environment's lease, or None when it is free (or expired)."""

    @abc.abstractmethod
    def break_lease(self, env_id: str, *, audit_event: dict[str, Any]) -> LeaseInfo | None:
        """Remove the lease whoever holds it (``env unlock --force``), audit it, and return what
        was removed (None when it was free). The old holder's next save fails compare-and-swap."""

    # ----------------------------------------------------------------- administration

    def init(self) -> dict[str, Any]:
        """Create or migrate what the backend needs (schema, bucket layout); idempotent.

        Returns ``{"schema_version": N, "changed": bool}``. The default has nothing to do.
        """
        return {"schema_version": None, "changed": False}

    def doctor(self) -> list[tuple[str, bool, str]]:
        """``(check, ok, message)`` for: reachable, schema version, read and write permission,
        lease clock. The default checks that :meth:`list` works."""
        try:
            count = len(self.list())
        except GreenticError as exc:
            return [("reachable", False, str(exc))]
        return [("reachable", True, f"{count} environment(s)")]

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""

    def location(self, env_id: str) -> str:
        """Where an environment is stored, for people (a path or a redacted URL)."""
        return f"{self.url.rstrip('/')}/{env_id}"

    def check_env_id(self, env_id: str) -> None:
        """Refuse ids that are not valid environment ids (``UnsafeEnvId``)."""
        from .file import _check_safe_env_id

        _check_safe_env_id(env_id)

    def state_dir(self, env_id: str) -> Path:
        """A local directory for the provider's own files: ``<home>/state/<env>``, created
        (0700) if missing.

        Local to the machine that runs the provider, whatever the store (a shared store holds
        only what every machine may read).
        """
        self.check_env_id(env_id)
        home = self.options.home if self.options.home is not None else _default_home()
        path = Path(home).expanduser() / "state" / env_id
        from .file import _makedirs

        try:
            _makedirs(path, refuse_symlink=True)  # it exists when the provider gets it, 0700 like the store's
        except OSError as exc:
            raise StoreError(f"cannot create the provider state directory {path}: {exc.strerror or exc}",
                             hint="check the permissions of GREENTIC_HOME (or --home)", path=str(path)) from exc
        return path


def _default_home() -> Path:
    home = os.environ.get("GREENTIC_HOME")
    return Path(home).expanduser() if home else Path.home() / ".greentic"


@contextlib.contextmanager
def closing(store: StoreBackend) -> Iterator[StoreBackend]:
    """``with closing(open_store(...)) as store:``"""
    try:
        yield store
    finally:
        store.close()
