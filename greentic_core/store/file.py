"""The file backend: one directory per environment (ARCHITECTURE section 6), the default store.

It implements :class:`~greentic_core.store.contract.StoreBackend` for ``file://`` URLs (and
for ``--home``/``GREENTIC_HOME`` when no store URL is given). The lease is the exclusive
``flock`` on ``.lock``: the kernel releases it the moment its holder exits, even on SIGKILL,
so it never needs to expire; while it is held, ``.lock`` holds the holder's record (actor@host,
pid, command, acquired, token) as one JSON line, and it is emptied again on release.
Compare-and-swap: a save first checks that ``environment.json`` is still the file this
transaction loaded (same inode, size and mtime), so even a writer that bypassed the lock
cannot be overwritten.

Layout (upstream-spec 6.1)::

    <root>/<env_id>/
      .lock                     per-environment exclusive flock target
      environment.json          the whole Environment document
      runtime-config.json       the runtime-config projection; absent when nothing is live
      backups/environment.json.<YYYYMMDDTHHMMSS.nnnnnnnnnZ>[.<n>].bak   newest ``max_backups`` kept
      audit/events.jsonl        one JSON object per line, one line per mutation
      audit/pending-event.json  the audit line of a save in progress (exists only during a save,
                                or after a writer was killed in one)

The root is ``$GREENTIC_HOME/environments`` when ``GREENTIC_HOME`` is set (``GREENTIC_HOME``
plays the role of ``~/.greentic``, so ``GREENTIC_HOME=/x`` keeps environments in
``/x/environments/<env>``), otherwise ``~/.greentic/environments``. The CLI's ``--home X``
means the same as ``GREENTIC_HOME=X``.

Write protocol (every mutation, inside :meth:`Store.transaction`): take the per-env
exclusive ``flock`` on ``.lock``, load, let the caller change the document, then on
:meth:`Transaction.save`: validate, set ``generation = old + 1``, back up the current file,
write a temp file in the same directory, ``fsync``, rename over ``environment.json``,
``fsync`` the directory (the commit point), refresh ``runtime-config.json``, prune old
backups and append the audit event. The audit line is first written (``fsync``) to
``audit/pending-event.json`` before the commit and that file is removed once the line is in
``events.jsonl``: a writer killed between the commit and the append leaves it behind, and the
next transaction appends it (with ``"recovered": true``) when the document carries its
generation, so a crash never loses the audit line of a saved change. Reads (``load``,
``list``, ``exists``) take no lock: the rename makes every read see either the old or the new
document, never a torn one.

``runtime-config.json`` is removed when the projection has no blocks (no split entries:
nothing is live) and also whenever the environment has no revisions. Upstream's
``refresh_runtime_config`` deletes the file when the *projection's* ``revisions`` list is
empty, which is the same rule: a valid environment without revisions has no split entries.
Otherwise the file is written only when its parsed content differs from the projection, so
an unchanged config keeps its inode and mtime (watchers are not woken for nothing). It is
not backed up: it is derived from ``environment.json``, whose backups are kept.

Directories are created ``0700`` and files ``0600`` whatever the umask. Every error is a
:class:`~greentic_core.errors.StoreError` with a one-line message (and a hint where a next
step exists); a failed save leaves ``environment.json`` exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from .. import codec, ids, validation
from ..errors import (
    EnvironmentExists,
    EnvironmentNotFound,
    GreenticError,
    SpecError,
    StoreError,
    UnsafeEnvId,
)
from ..projection import materialize_runtime_config
from ..spec import Environment, RuntimeConfig
from .contract import Transaction as _Transaction
from .contract import (
    attachment_names,
    InvalidEnvironment,
    LeaseInfo,
    LockTimeout,
    PartialSave,
    SaveConflict,
    Snapshot,
    StoreBackend,
    StoreOptions,
)

__all__ = [
    "DEFAULT_MAX_BACKUPS",
    "ENVIRONMENT_FILE",
    "RUNTIME_CONFIG_FILE",
    "AUDIT_FILE",
    "FileStore",
    "InvalidEnvironment",
    "LockTimeout",
    "PartialSave",
    "Store",
    "StoreEnvIdMismatch",
    "StoreWriteError",
    "Transaction",
    "UnsafeEnvDir",
    "atomic_write",
    "default_root",
    "environments_root",
    "remove_stale_temp_files",
]

ENVIRONMENT_FILE = "environment.json"
RUNTIME_CONFIG_FILE = "runtime-config.json"
LOCK_FILE = ".lock"
BACKUP_DIR = "backups"
AUDIT_DIR = "audit"
AUDIT_FILE = "events.jsonl"
PENDING_AUDIT_FILE = "pending-event.json"
DEFAULT_MAX_BACKUPS = 20
_MAX_BACKUP_TRIES = 1024
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_TEMP_SUFFIX = ".tmp"
_UNSAFE_CHARS = ("/", "\\", ":", "\x00")
_BACKUP_NAME = re.compile(r"(?P<ts>\d{8}T\d{6}\.\d{9}Z)(?:\.(?P<n>\d+))?\.bak")
_LIST_HINT = "list environments with `greentic-deployer env list`"


# --------------------------------------------------------------------------- errors


class UnsafeEnvDir(UnsafeEnvId):
    """The environment directory is a symlink or not a directory (possibly planted)."""

    kind = "store"
    exit_code = 5


class StoreEnvIdMismatch(StoreError):
    """A document's ``environment_id`` is not the one its directory / transaction is for."""


class StoreWriteError(StoreError):
    """The file system refused a write (disk full, read-only, permission...)."""



# --------------------------------------------------------------------------- roots


def environments_root(home: str | os.PathLike[str]) -> Path:
    """The environments directory under a greentic home (``<home>/environments``)."""
    return _expanduser(Path(home)) / "environments"


def _expanduser(path: Path) -> Path:
    """``~`` and ``~user`` expanded; ``~name`` of an unknown user is kept as it is, as a shell does."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def default_root() -> Path:
    """``$GREENTIC_HOME/environments`` when ``GREENTIC_HOME`` is set (and non-empty), else
    ``~/.greentic/environments``."""
    home = os.environ.get("GREENTIC_HOME")
    if home:
        return environments_root(home)
    return Path.home() / ".greentic" / "environments"


# --------------------------------------------------------------------------- low-level I/O


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _write_error(action: str, path: Path | str, exc: OSError) -> StoreWriteError:
    return StoreWriteError(
        f"cannot {action} {path}: {_describe(exc)}",
        hint="check free space and permissions of the store directory",
        path=str(path),
        errno=exc.errno,
    )


def _makedirs(path: Path, *, refuse_symlink: bool = False) -> None:
    """``mkdir -p`` where every directory *created here* is 0700 whatever the umask.

    Existing directories keep their mode. With ``refuse_symlink`` a symlink at ``path``
    itself is refused (:class:`UnsafeEnvDir`); symlinked ancestors are always fine.
    """
    missing: list[Path] = []
    current = path
    while True:
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            missing.append(current)
            parent = current.parent
            if parent == current:
                break
            current = parent
            continue
        if refuse_symlink and not missing and stat.S_ISLNK(st.st_mode):
            raise UnsafeEnvDir(
                f"{path} is a symlink; refusing to follow it",
                hint=f"remove the symlink {path} (someone may have planted it)",
                path=str(path),
            )
        break
    for directory in reversed(missing):
        try:
            os.mkdir(directory, _DIR_MODE)
        except FileExistsError:
            continue  # created concurrently
        os.chmod(directory, _DIR_MODE)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _temp_prefix(name: str) -> str:
    return f".{name}."


def _create_temp(directory: Path, prefix: str) -> tuple[int, str]:
    """``tempfile.mkstemp``'s protocol (a random name, ``O_EXCL | O_NOFOLLOW``, mode 0600, retried
    on a clash) without importing ``tempfile``, which costs every writing command ~3 ms."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{_TEMP_SUFFIX}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(directory))


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = _FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see the old or the new bytes.

    Temp file in the same directory (``.<name>.<random>.tmp``, created as ``mkstemp`` does), write,
    ``fsync``, ``os.replace``, then ``fsync`` the directory. Missing parent directories are
    created 0700. On failure the temp file is removed, the target is untouched, and one
    :class:`StoreWriteError` says ``cannot write <path>: <reason>``.
    """
    target = Path(path)
    directory = target.parent
    try:
        _makedirs(directory)
        fd, temp_name = _create_temp(directory, _temp_prefix(target.name))
    except OSError as exc:
        raise _write_error("write", target, exc) from exc
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        if isinstance(exc, OSError):
            raise _write_error("write", target, exc) from exc
        raise
    try:
        _fsync_dir(directory)
    except OSError as exc:
        raise _write_error("sync directory of", target, exc) from exc


def remove_stale_temp_files(path: str | os.PathLike[str]) -> int:
    """Remove temp files :func:`atomic_write` left for ``path`` when a process was killed.

    Only safe while holding the lock that serialises writers of ``path``. Returns the count.
    """
    target = Path(path)
    prefix = _temp_prefix(target.name)
    removed = 0
    try:
        names = os.listdir(target.parent)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(_TEMP_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)
                removed += 1
    return removed


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist. Never follows a final symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


# --------------------------------------------------------------------------- the store


@attrs.define(eq=False)
class _Paths:
    env_dir: Path

    @property
    def environment(self) -> Path:
        return self.env_dir / ENVIRONMENT_FILE

    @property
    def runtime_config(self) -> Path:
        return self.env_dir / RUNTIME_CONFIG_FILE

    @property
    def lock(self) -> Path:
        return self.env_dir / LOCK_FILE

    @property
    def backups(self) -> Path:
        return self.env_dir / BACKUP_DIR

    @property
    def audit_dir(self) -> Path:
        return self.env_dir / AUDIT_DIR

    @property
    def audit(self) -> Path:
        return self.env_dir / AUDIT_DIR / AUDIT_FILE

    @property
    def pending_audit(self) -> Path:
        return self.env_dir / AUDIT_DIR / PENDING_AUDIT_FILE


class FileStore(StoreBackend):
    """The environments under ``root`` (default :func:`default_root`).

    ``max_backups`` bounds how many backups of ``environment.json`` are kept per environment
    (0 keeps none). ``options`` name the writer for the lease record and bound the wait for
    the lock (``lock_timeout``; the library default None waits as long as it takes, the CLI
    waits ``--lock-timeout`` seconds). ``lock_ttl`` does not apply: the lock dies with its holder.
    """

    scheme = "file"
    lease_expires = False

    def __init__(self, root: str | os.PathLike[str] | None = None, *, max_backups: int | None = None,
                 options: StoreOptions | None = None) -> None:
        if max_backups is None:  # the options' bound, else the default
            max_backups = options.max_backups if options is not None else DEFAULT_MAX_BACKUPS
        if max_backups < 0:
            raise ValueError("max_backups must be >= 0")
        self.root = _expanduser(Path(root)) if root is not None else default_root()
        self.max_backups = max_backups
        self.options = options if options is not None else StoreOptions(lock_timeout=None, max_backups=max_backups)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def url(self) -> str:
        home = self.root.parent if self.root.name == "environments" else self.root
        return f"file://{home}"

    def location(self, env_id: str) -> str:
        return str(self.env_dir(env_id))

    def state_dir(self, env_id: str) -> Path:
        """The environment's own directory, as before stores were pluggable (same layout)."""
        return self.env_dir(env_id)

    def check_env_id(self, env_id: str) -> None:
        self.env_dir(env_id)

    def backups(self, env_id: str) -> list[tuple[int, bytes]]:
        paths = _Paths(self.env_dir(env_id))
        kept = []
        for _, name in sorted(self._backup_keys(paths).items()):
            data = _read_bytes(paths.backups / name)
            if data is None:
                continue
            try:
                generation = int(json.loads(data).get("generation", 0))
            except (ValueError, AttributeError, TypeError):
                generation = 0
            kept.append((generation, data))
        return kept

    def export(self, env_id: str) -> Snapshot:
        paths = _Paths(self.env_dir(env_id))
        try:
            document = _read_bytes(paths.environment)
            if document is None:
                raise _not_found(self, env_id)
            config = _read_bytes(paths.runtime_config)
            attachments = tuple((name, data) for name in attachment_names(document)
                                if (data := self.read_attachment(env_id, name)) is not None)
        except OSError as exc:
            raise StoreError(f"cannot read environment {env_id!r}: {_describe(exc)}", env_id=env_id) from exc
        return Snapshot(env_id, document, config, tuple(self.audit_events(env_id)), tuple(self.backups(env_id)),
                        attachments)

    def import_snapshot(self, snapshot: Snapshot, *, replace: bool = False) -> None:
        env_id = snapshot.env_id
        env_dir = self.env_dir(env_id)
        if (env_dir / ENVIRONMENT_FILE).exists() and not replace:
            raise _exists(env_id)
        try:
            _makedirs(self.root)
            _makedirs(env_dir, refuse_symlink=True)
        except OSError as exc:
            raise _write_error("create", env_dir, exc) from exc
        paths = _Paths(env_dir)
        with _EnvLock(env_dir, env_id, timeout=self.options.lock_timeout, options=self.options):
            lines = b"".join(json.dumps(e, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
                             + b"\n" for e in snapshot.audit)
            atomic_write(paths.audit, lines)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.pending_audit)
            for name in self._backup_keys(paths).values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(paths.backups / name)
            base = time.time_ns()
            for n, (_generation, data) in enumerate(snapshot.backups):
                ns = base + n
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"
                atomic_write(paths.backups / f"{ENVIRONMENT_FILE}.{stamp}.bak", data)
            for name, data in snapshot.attachments:
                atomic_write(self._attachment_path(env_id, name), data)
            if snapshot.runtime_config is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(paths.runtime_config)
            else:
                atomic_write(paths.runtime_config, snapshot.runtime_config)
            atomic_write(paths.environment, snapshot.document)  # last: the environment exists from here on

    def doctor(self) -> list[tuple[str, bool, str]]:
        """The root exists (or can be created), is readable, and a file can be written in it."""
        try:
            _makedirs(self.root)
        except OSError as exc:
            return [("reachable", False, f"cannot create {self.root}: {_describe(exc)}")]
        checks = [("reachable", True, str(self.root))]
        try:
            count = len(self.list())
            checks.append(("read", True, f"{count} environment(s)"))
        except GreenticError as exc:
            checks.append(("read", False, exc.message))
        try:
            import tempfile

            fd, probe = tempfile.mkstemp(prefix=".greentic-doctor-", dir=self.root)
            os.close(fd)
            os.unlink(probe)
            checks.append(("write", True, "can create files (probe removed)"))
        except OSError as exc:
            checks.append(("write", False, f"cannot write in {self.root}: {_describe(exc)}"))
        checks.append(("lease-clock", True, "file locks are held by the kernel: no clock involved"))
        return checks

    # ----------------------------------------------------------------- attachments

    def _attachment_path(self, env_id: str, name: str) -> Path:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or any(p in ("..", ".", "") for p in parts) \
                or parts[0] in (ENVIRONMENT_FILE, RUNTIME_CONFIG_FILE, LOCK_FILE, BACKUP_DIR, AUDIT_DIR):
            raise StoreError(f"attachment name {name!r} is not a plain relative path of the environment",
                             env_id=env_id)
        return self.env_dir(env_id).joinpath(*parts)

    def read_attachment(self, env_id: str, name: str) -> bytes | None:
        path = self._attachment_path(env_id, name)
        try:
            return _read_bytes(path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {_describe(exc)}", path=str(path)) from exc

    def write_attachment(self, env_id: str, name: str, data: bytes) -> None:
        atomic_write(self._attachment_path(env_id, name), data)

    # ----------------------------------------------------------------- leases

    def lease(self, env_id: str) -> LeaseInfo | None:
        """The holder of the environment's lock, or None when nobody holds it."""
        env_dir = self.env_dir(env_id)
        if not (env_dir / ENVIRONMENT_FILE).is_file():
            raise _not_found(self, env_id)
        try:
            fd = os.open(env_dir / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot open {env_dir / LOCK_FILE}: {_describe(exc)}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd, env_id)
            return None  # we could take it: nobody holds it (any record in it is stale)
        finally:
            os.close(fd)

    def break_lease(self, env_id: str, *, audit_event: dict[str, Any]) -> LeaseInfo | None:
        """A ``flock`` cannot be broken from outside: the kernel releases it when its holder
        exits. Refused (naming the holder and its pid) while held; None when free."""
        held = self.lease(env_id)
        if held is None:
            return None
        raise StoreError(
            f"environment {env_id!r} is locked by {held.describe(codec.utc_now())}; a file lock cannot be broken",
            hint=f"it is released the moment that process exits: wait for it, or stop it (kill {held.pid})",
            env_id=env_id, pid=held.pid)

    # ----------------------------------------------------------------- paths

    def env_dir(self, env_id: str) -> Path:
        """``<root>/<env_id>``, refusing ids that are unsafe as a path segment and env
        directories that are symlinks or not directories (:class:`UnsafeEnvId`)."""
        _check_safe_env_id(env_id)
        path = self.root / env_id
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        except OSError as exc:
            raise StoreError(f"cannot inspect {path}: {_describe(exc)}", path=str(path)) from exc
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeEnvDir(
                f"environment directory {path} is a symlink; refusing to follow it",
                hint=f"remove the symlink {path} (someone may have planted it) and restore the environment",
                env_id=env_id,
                path=str(path),
            )
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeEnvDir(
                f"environment path {path} is not a directory",
                hint=f"move {path} out of the store",
                env_id=env_id,
                path=str(path),
            )
        return path

    def environment_path(self, env_id: str) -> Path:
        return self.env_dir(env_id) / ENVIRONMENT_FILE

    def runtime_config_path(self, env_id: str) -> Path:
        return self.env_dir(env_id) / RUNTIME_CONFIG_FILE

    def audit_path(self, env_id: str) -> Path:
        return self.env_dir(env_id) / AUDIT_DIR / AUDIT_FILE

    def backups_dir(self, env_id: str) -> Path:
        return self.env_dir(env_id) / BACKUP_DIR

    # ----------------------------------------------------------------- reads (no lock)

    def exists(self, env_id: str) -> bool:
        return self.environment_path(env_id).is_file()

    def list(self) -> list[str]:
        """Ids of the environments under the root, sorted. A directory is listed only when its
        environment.json parses and its ``environment_id`` equals the directory name; anything
        else (stray files, symlinks, broken documents) is skipped without an error."""
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {self.root}: {_describe(exc)}", path=str(self.root)) from exc
        found = []
        for name in sorted(names):
            try:
                env_dir = self.env_dir(name)
                data = _read_bytes(env_dir / ENVIRONMENT_FILE)
                if data is None:
                    continue
                env = codec.load_environment(data)
            except (GreenticError, OSError):
                continue
            if env.environment_id == name:
                found.append(name)
        return found

    def load(self, env_id: str) -> Environment:
        """The stored environment, decoded and validated. No lock: the atomic rename means a
        reader sees a whole document. :class:`EnvironmentNotFound` when absent; decode and
        spec errors pass through unchanged (with the file in ``details['path']``)."""
        return self._load(self.env_dir(env_id), env_id)

    def load_runtime_config(self, env_id: str) -> RuntimeConfig | None:
        """The stored ``runtime-config.json``, or None when nothing is live."""
        path = self.runtime_config_path(env_id)
        try:
            data = _read_bytes(path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {_describe(exc)}", path=str(path)) from exc
        return None if data is None else codec.loads(data, RuntimeConfig)

    def audit_events(self, env_id: str) -> list[dict[str, Any]]:
        """The audit log, oldest first. A torn line (a writer killed mid-append) is skipped."""
        env_dir = self.env_dir(env_id)
        if not (env_dir / ENVIRONMENT_FILE).is_file():
            raise _not_found(self, env_id)
        path = env_dir / AUDIT_DIR / AUDIT_FILE
        try:
            data = _read_bytes(path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {_describe(exc)}", path=str(path)) from exc
        events = []
        for line in (data or b"").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def _load(self, env_dir: Path, env_id: str) -> Environment:
        path = env_dir / ENVIRONMENT_FILE
        try:
            data = _read_bytes(path)
        except IsADirectoryError as exc:
            raise StoreError(f"{path} is a directory, expected a file", path=str(path)) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeEnvDir(
                    f"{path} is a symlink; refusing to follow it",
                    hint=f"remove the symlink {path} and restore the file from {env_dir / BACKUP_DIR}",
                    path=str(path),
                ) from exc
            raise StoreError(f"cannot read {path}: {_describe(exc)}", path=str(path)) from exc
        if data is None:
            raise _not_found(self, env_id)
        try:
            env = codec.load_environment(data)
        except SpecError as exc:
            _annotate(exc, path, env_dir)
            raise
        if env.environment_id != env_id:
            raise StoreEnvIdMismatch(
                f"{path} has environment_id {env.environment_id!r}, expected {env_id!r} (the directory name)",
                hint="the directory name must equal environment_id; rename one of them",
                env_id=env_id,
                found=env.environment_id,
                path=str(path),
            )
        try:
            validation.validate_environment(env)
        except SpecError as exc:
            _annotate(exc, path, env_dir)
            raise
        return env

    # ----------------------------------------------------------------- writes

    def create(self, env: Environment, *, audit_event: dict[str, Any]) -> Environment:
        """Store a new environment; :class:`EnvironmentExists` when one is already there.

        The stored generation is ``env.generation + 1`` (1 for a fresh document), like every
        save. Returns the environment as stored.
        """
        env_id = env.environment_id
        env_dir = self.env_dir(env_id)
        if (env_dir / ENVIRONMENT_FILE).exists():
            raise _exists(env_id)
        _check_valid(env)
        _check_event(audit_event)
        try:
            _makedirs(self.root)
            _makedirs(env_dir, refuse_symlink=True)
        except OSError as exc:
            raise _write_error("create", env_dir, exc) from exc
        with _EnvLock(self.env_dir(env_id), env_id, timeout=self.options.lock_timeout, options=self.options):
            if (env_dir / ENVIRONMENT_FILE).exists():
                raise _exists(env_id)
            return self._commit(
                env_dir, env_id, previous=None, new_env=env, audit_event=audit_event, validate=False
            )

    @contextlib.contextmanager
    def transaction(self, env_id: str, *, timeout: float | None = None) -> Iterator[Transaction]:
        """Lock the environment, load it, and yield a :class:`Transaction`.

        The lock (``flock`` on ``<env>/.lock``) is exclusive across processes on this host and
        is held until the block exits. ``timeout`` (seconds) bounds the wait (default
        ``options.lock_timeout``; None waits as long as it takes), and when it runs out
        :class:`LockTimeout` is raised naming the holder. Not re-entrant: a second transaction
        on the same environment in the same thread waits for the first.
        """
        env_dir = self.env_dir(env_id)
        if not (env_dir / ENVIRONMENT_FILE).is_file():
            raise _not_found(self, env_id)
        wait = timeout if timeout is not None else self.options.lock_timeout
        with _EnvLock(env_dir, env_id, timeout=wait, options=self.options):
            self.env_dir(env_id)  # re-check: the directory cannot have been swapped for a symlink
            stamp = _file_stamp(env_dir / ENVIRONMENT_FILE)
            env = self._load(env_dir, env_id)
            _recover_pending_audit(_Paths(env_dir), env.generation)
            tx = Transaction(self, env_id, env_dir, env)
            tx._stamp = stamp
            try:
                yield tx
            finally:
                tx._closed = True

    # ----------------------------------------------------------------- internals (lock held)

    def _commit(
        self,
        env_dir: Path,
        env_id: str,
        *,
        previous: Environment | None,
        new_env: Environment,
        audit_event: dict[str, Any],
        validate: bool = True,
        expected_stamp: tuple[int, int, int] | None = None,
    ) -> Environment:
        paths = _Paths(env_dir)
        generation_before = previous.generation if previous is not None else new_env.generation
        if validate:
            _check_valid(new_env)
        if expected_stamp is not None and _file_stamp(paths.environment) != expected_stamp:
            with contextlib.suppress(OSError, StoreError):
                _append_audit(paths, env_id, {**audit_event, "outcome": "conflict"}, generation_before,
                              generation_before)
            raise SaveConflict(
                f"environment {env_id!r} changed since this command loaded it (generation {generation_before}); "
                "nothing was saved",
                hint="someone wrote environment.json without the lock; look at `greentic-deployer env history` "
                     "and run the command again", env_id=env_id, generation=generation_before)
        stored = attrs.evolve(new_env, generation=generation_before + 1)
        _check_event(audit_event)
        try:
            data = codec.dump_environment(stored).encode("utf-8")
        except Exception as exc:  # a value that cannot be written is a refused save
            raise StoreError(f"cannot serialise environment {env_id!r}: {exc}", env_id=env_id) from exc

        remove_stale_temp_files(paths.environment)
        record = _audit_record(env_id, audit_event, generation_before, stored.generation)
        pending = _write_pending_audit(paths, record)
        try:
            backup = self._backup(paths) if previous is not None else None
        except BaseException:
            _discard_pending_audit(paths, pending)
            raise
        try:
            atomic_write(paths.environment, data)
        except StoreWriteError:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup)
            _discard_pending_audit(paths, pending)
            raise
        # ---- committed: what follows cannot undo the save, so failures are reported as PartialSave
        problems: list[str] = []
        try:
            self._refresh_runtime_config(paths, stored)
        except (StoreError, OSError) as exc:
            problems.append(f"runtime-config.json not refreshed ({exc})")
        with contextlib.suppress(OSError):
            self._prune_backups(paths)
        try:
            _append_record(paths, record)
        except (StoreError, OSError) as exc:
            problems.append(f"audit event not recorded ({exc})")  # the pending line is kept for recovery
        else:
            _discard_pending_audit(paths, pending)
        if problems:
            raise PartialSave(
                f"saved environment {env_id!r} (generation {stored.generation}), but " + "; ".join(problems),
                saved=stored,
                hint="the document is saved; the next save rewrites runtime-config.json",
                env_id=env_id,
                generation=stored.generation,
            )
        return stored

    def _backup(self, paths: _Paths) -> Path | None:
        """Copy the current environment.json to a fresh, exclusively reserved backup name."""
        if self.max_backups == 0:
            return None
        try:
            data = _read_bytes(paths.environment)
        except OSError as exc:
            raise StoreError(f"cannot read {paths.environment}: {_describe(exc)}") from exc
        if data is None:
            return None
        try:
            _makedirs(paths.backups, refuse_symlink=True)
        except OSError as exc:
            raise _write_error("create", paths.backups, exc) from exc
        ns = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        # Same nanosecond as an existing backup (coarse clock): continue after its highest
        # suffix, so a reused name can never sort before a newer backup.
        first = 1 + max((n for ts, n in self._backup_keys(paths) if ts == stamp), default=-1)
        for attempt in range(first, first + _MAX_BACKUP_TRIES):
            suffix = f".{attempt}" if attempt else ""
            target = paths.backups / f"{ENVIRONMENT_FILE}.{stamp}{suffix}.bak"
            try:
                fd = os.open(target, flags, _FILE_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _write_error("back up to", target, exc) from exc
            try:
                try:
                    os.fchmod(fd, _FILE_MODE)
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(target)
                raise _write_error("back up to", target, exc) from exc
            return target
        raise StoreError(f"cannot back up {paths.environment}: {_MAX_BACKUP_TRIES} backup names taken for {stamp}")

    @staticmethod
    def _backup_keys(paths: _Paths) -> dict[tuple[str, int], str]:
        """``(timestamp, suffix) -> name`` of the backups of environment.json."""
        prefix = ENVIRONMENT_FILE + "."
        try:
            names = os.listdir(paths.backups)
        except FileNotFoundError:
            return {}
        keyed = {}
        for name in names:
            if name.startswith(prefix):
                match = _BACKUP_NAME.fullmatch(name[len(prefix):])
                if match:
                    keyed[(match["ts"], int(match["n"] or 0))] = name
        return keyed

    def _prune_backups(self, paths: _Paths) -> None:
        keyed = sorted(self._backup_keys(paths).items())
        for _, name in keyed[: max(0, len(keyed) - self.max_backups)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.backups / name)

    def _refresh_runtime_config(self, paths: _Paths, env: Environment) -> bool:
        """Bring runtime-config.json in line with ``env``; True when the file changed."""
        config = materialize_runtime_config(env)
        remove_stale_temp_files(paths.runtime_config)
        if not config.revisions or not env.revisions:
            try:
                os.unlink(paths.runtime_config)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _write_error("remove", paths.runtime_config, exc) from exc
            _fsync_dir(paths.env_dir)
            return True
        wanted = codec.unstructure(config)
        current = _read_bytes(paths.runtime_config)
        if current is not None:
            # Compared as parsed JSON: formatting and key order do not count as a change.
            # (Cheaper than decoding into RuntimeConfig, which matters at 10k revisions.)
            try:
                if json.loads(current) == wanted:
                    return False
            except (ValueError, RecursionError):
                pass  # unreadable: rewrite it
        atomic_write(paths.runtime_config, codec.dumps(config).encode("utf-8"))
        return True


class Transaction(_Transaction):
    """An environment loaded under its exclusive lock (from :meth:`Store.transaction`).

    ``env`` is the stored environment; after a :meth:`save` it is the saved one, so several
    saves may follow each other in one transaction.
    """

    def __init__(self, store: FileStore, env_id: str, env_dir: Path, env: Environment) -> None:
        self.store = store
        self.env_id = env_id
        self._env_dir = env_dir
        self._env = env
        self._closed = False
        self._stamp: tuple[int, int, int] | None = None

    @property
    def env(self) -> Environment:
        return self._env

    def save(self, new_env: Environment, *, audit_event: dict[str, Any]) -> Environment:
        """Validate and store ``new_env`` with ``generation = env.generation + 1``; return it.

        The ``generation`` carried by ``new_env`` is ignored. ``audit_event`` is appended to
        ``audit/events.jsonl`` with ``time``, ``env_id``, ``generation_before`` and
        ``generation_after`` added by the store. On failure ``environment.json`` is unchanged
        and one :class:`StoreError` is raised (:class:`InvalidEnvironment` for a spec rule,
        :class:`StoreWriteError` for the file system); :class:`PartialSave` means the
        document *was* saved but runtime-config.json or the audit line was not written.
        """
        self._check_open()
        if new_env.environment_id != self.env_id:
            raise StoreEnvIdMismatch(
                f"cannot save environment {new_env.environment_id!r} in the transaction of {self.env_id!r}",
                hint="save each environment in its own transaction",
                env_id=self.env_id,
                found=new_env.environment_id,
            )
        try:
            stored = self.store._commit(
                self._env_dir, self.env_id, previous=self._env, new_env=new_env, audit_event=audit_event,
                expected_stamp=self._stamp,
            )
        except PartialSave as exc:
            self._env = exc.saved
            self._stamp = _file_stamp(_Paths(self._env_dir).environment)
            raise
        self._env = stored
        self._stamp = _file_stamp(_Paths(self._env_dir).environment)
        return stored

    def audit(self, event: dict[str, Any]) -> None:
        """Append an audit event without changing the document (e.g. a provider call that
        failed); ``generation_before`` == ``generation_after`` == the current generation."""
        self._check_open()
        _check_event(event)
        try:
            _append_audit(_Paths(self._env_dir), self.env_id, event, self._env.generation, self._env.generation)
        except OSError as exc:
            raise _write_error("append to", _Paths(self._env_dir).audit, exc) from exc

    def refresh_runtime_config(self) -> bool:
        """Rewrite runtime-config.json from the current document if it differs (repairs a
        config left stale by a crash); True when the file changed."""
        self._check_open()
        try:
            return self.store._refresh_runtime_config(_Paths(self._env_dir), self._env)
        except OSError as exc:
            raise _write_error("write", _Paths(self._env_dir).runtime_config, exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(
                f"the transaction on environment {self.env_id!r} is closed",
                hint="save inside the `with store.transaction(...)` block",
            )


# --------------------------------------------------------------------------- helpers


class _EnvLock:
    """Exclusive ``flock`` on ``<env_dir>/.lock``; released when the descriptor closes.

    While held, the file holds the holder's record (one JSON line) so that waiters and
    ``env lock`` can say who holds it; it is emptied before release.
    """

    def __init__(self, env_dir: Path, env_id: str, *, timeout: float | None,
                 options: StoreOptions | None = None) -> None:
        self.path = env_dir / LOCK_FILE
        self.env_id = env_id
        self.timeout = timeout
        self.options = options
        self.fd: int | None = None

    def __enter__(self) -> _EnvLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        except OSError as exc:
            raise StoreError(
                f"cannot open lock file {self.path}: {_describe(exc)}",
                hint="check the permissions of the environment directory",
                path=str(self.path),
            ) from exc
        try:
            os.fchmod(fd, _FILE_MODE)
            self._acquire(fd)
            self._write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _write_holder(self, fd: int) -> None:
        if self.options is None:
            return
        now = codec.utc_now()
        record = {"holder": self.options.holder, "pid": os.getpid(), "command": self.options.command,
                  "acquired": codec.format_timestamp(now), "expires": None, "token": time.time_ns()}
        with contextlib.suppress(OSError):  # the record is information; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"), 0)

    def _acquire(self, fd: int) -> None:
        if self.timeout is None and (self.options is None or self.options.on_wait is None):
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        started = time.monotonic()
        deadline = None if self.timeout is None else started + max(0.0, self.timeout)
        next_report = started
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                holder = _read_holder(fd, self.env_id)
                held_by = f" by {holder.describe(codec.utc_now())}" if holder is not None else " by another process"
                raise LockTimeout(
                    f"environment {self.env_id!r} is locked{held_by} (waited {self.timeout:g}s)",
                    hint="another greentic-deployer command is changing it; retry when it has finished "
                         "(--lock-timeout S waits longer)",
                    env_id=self.env_id,
                    path=str(self.path),
                    **({"holder": holder.to_json()} if holder is not None else {}),
                )
            if self.options is not None and self.options.on_wait is not None and now >= next_report:
                holder = _read_holder(fd, self.env_id)
                if holder is not None:
                    self.options.on_wait(holder, now - started)
                next_report = now + 1.0
            pause = delay if deadline is None else min(delay, deadline - now)
            time.sleep(max(pause, 0.0))
            delay = min(delay * 2, 0.1)

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            if self.options is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, 0)  # at rest .lock is empty, as it always was
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _read_holder(fd: int, env_id: str) -> LeaseInfo | None:
    """The holder record in a ``.lock`` file (None when empty or unreadable)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
        return LeaseInfo(env_id=env_id, holder=str(record["holder"]), pid=int(record["pid"]),
                         command=str(record.get("command") or ""),
                         acquired=codec.parse_timestamp(record["acquired"]), expires=None,
                         token=int(record.get("token") or 0))
    except (OSError, ValueError, TypeError, KeyError, GreenticError):
        return None


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of the file's current content for compare-and-swap: inode, size, mtime."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _check_safe_env_id(env_id: Any) -> None:
    hint = "an environment id uses only ASCII letters, digits, '.', '-' and '_' (and is not '.' or '..')"
    if not isinstance(env_id, str):
        raise UnsafeEnvId(f"environment id must be a string, got {type(env_id).__name__}", hint=hint)
    shown = repr(env_id[:80])
    if env_id in ("", ".", "..") or any(c in env_id for c in _UNSAFE_CHARS):
        raise UnsafeEnvId(f"environment id {shown} is not safe as a directory name", hint=hint, env_id=env_id)
    try:
        ids.parse_env_id(env_id)
    except SpecError:
        raise UnsafeEnvId(f"environment id {shown} is not a valid environment id", hint=hint, env_id=env_id) from None


def _check_valid(env: Environment) -> None:
    try:
        validation.validate_environment(env)
    except SpecError as exc:
        rule = getattr(exc, "format_rule", None) or getattr(exc, "rule", type(exc).__name__)
        details = {**exc.details, "env_id": env.environment_id, "rule": rule}
        error = InvalidEnvironment(
            f"refusing to save environment {env.environment_id!r}: {exc.message}",
            hint="nothing was written; fix the change and retry",
            **details,
        )
        error.rule = rule
        raise error from exc


def _check_event(event: Any) -> None:
    if not isinstance(event, dict):
        raise TypeError(f"audit event must be a dict, got {type(event).__name__}")
    try:
        json.dumps(event, default=str)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"audit event is not JSON-serialisable: {exc}") from exc


def _audit_record(
    env_id: str, event: dict[str, Any], generation_before: int, generation_after: int
) -> dict[str, Any]:
    record = {"time": codec.format_timestamp(codec.utc_now()), "env_id": env_id}
    record.update({k: v for k, v in event.items() if k not in ("time", "env_id")})
    record["generation_before"] = generation_before
    record["generation_after"] = generation_after
    return record


def _append_audit(
    paths: _Paths, env_id: str, event: dict[str, Any], generation_before: int, generation_after: int
) -> None:
    _append_record(paths, _audit_record(env_id, event, generation_before, generation_after))


def _write_pending_audit(paths: _Paths, record: dict[str, Any]) -> bool:
    """Write (and fsync) the audit line of the save about to commit; best effort: False when it
    could not be written (the save goes on as before, only without crash recovery of its line)."""
    data = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    try:
        _makedirs(paths.audit_dir, refuse_symlink=True)
        fd = os.open(paths.pending_audit, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     _FILE_MODE)
    except (OSError, StoreError):
        return False
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(paths.pending_audit)
        return False
    return True


def _discard_pending_audit(paths: _Paths, pending: bool) -> None:
    if pending:
        with contextlib.suppress(OSError):
            os.unlink(paths.pending_audit)


def _recover_pending_audit(paths: _Paths, generation: int) -> None:
    """Append the audit line a killed writer left in ``pending-event.json`` when its save was
    committed (the document carries its ``generation_after``) and the line is not in the log;
    then remove the file. Called with the environment's lock held."""
    try:
        data = _read_bytes(paths.pending_audit)
    except OSError:
        return
    if data is None:
        return
    try:
        record = json.loads(data)
    except ValueError:  # killed while writing it: that save never reached its commit
        record = None
    if (isinstance(record, dict) and record.get("generation_after") == generation
            and not _audit_has(paths, record.get("generation_before"), generation)):
        record["recovered"] = True
        try:
            _append_record(paths, record)
        except (OSError, StoreError):
            return  # keep the file: the next transaction tries again
    with contextlib.suppress(OSError):
        os.unlink(paths.pending_audit)


def _audit_has(paths: _Paths, generation_before: Any, generation_after: int) -> bool:
    """Whether one of the last lines of the audit log is the event of this save."""
    try:
        fd = os.open(paths.audit, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 65536, max(0, size - 65536))
    finally:
        os.close(fd)
    for line in tail.splitlines()[-64:]:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (isinstance(event, dict) and event.get("generation_after") == generation_after
                and event.get("generation_before") == generation_before):
            return True
    return False


def _append_record(paths: _Paths, record: dict[str, Any]) -> None:
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    _makedirs(paths.audit_dir, refuse_symlink=True)
    fd = os.open(paths.audit, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            os.fchmod(fd, _FILE_MODE)
        elif os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a writer was killed mid-line: end the torn line, keep ours whole
        _write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _annotate(exc: GreenticError, path: Path, env_dir: Path) -> None:
    exc.details.setdefault("path", str(path))
    if not exc.hint:
        exc.hint = f"fix {path} by hand or restore a copy from {env_dir / BACKUP_DIR}"


def _not_found(store: FileStore, env_id: str) -> EnvironmentNotFound:
    return EnvironmentNotFound(
        f"environment {env_id!r} not found in {store.root}",
        hint=_LIST_HINT,
        env_id=env_id,
    )


def _exists(env_id: str) -> EnvironmentExists:
    return EnvironmentExists(
        f"environment {env_id!r} already exists",
        hint="choose another id, or change it with the env commands",
        env_id=env_id,
    )


#: The name the file backend had before stores were pluggable (kept: plugins and tests use it).
Store = FileStore
