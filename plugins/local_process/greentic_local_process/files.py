"""The provider's own files, opened and created without ever following a symlink.

The state directory holds what other local users must not touch (process records whose pids
we signal, logs, the router's table and admin token), and what we delete on archive. A
symlink planted anywhere below the state directory could make us write, append or delete
somewhere else, so:

* every directory below the state directory is checked with ``lstat`` (a symlink is refused,
  never followed) and created 0700 whatever the umask; the state directory and its missing
  parents are created 0700 too;
* files are opened with ``O_NOFOLLOW`` (a planted symlink fails with ``ELOOP``), logs are
  created 0600;
* removal works on a directory that :func:`private_dir` checked, unlinks symlinks found in it
  (the link, not its target) and removes real subdirectories with ``shutil.rmtree``, which does
  not follow symlinks.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any

from greentic_core import ProviderError

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_HINT = "remove it: the local-process provider never follows symlinks in its state directory"


def make_private(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 directories, whatever the umask."""
    missing = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ProviderError(f"cannot create {directory}: {exc.strerror or exc}",
                                hint="check the state_dir answer and the permissions above it") from None
        os.chmod(directory, 0o700)  # exact: mkdir's mode is masked by the umask


def private_dir(root: Path, *parts: str) -> Path:
    """``root/parts...`` as real directories (created 0700), refusing a symlink at any level
    from ``root`` down."""
    make_private(root)
    current = root
    _check_real_dir(current)
    for part in parts:
        current = current / part
        try:
            os.mkdir(current, 0o700)
            os.chmod(current, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ProviderError(f"cannot create {current}: {exc.strerror or exc}") from None
        _check_real_dir(current)
    return current


def existing_private_dir(root: Path, *parts: str) -> Path | None:
    """Like :func:`private_dir` but creates nothing: None when a level is missing."""
    current = root
    for level in (root, *(root.joinpath(*parts[: i + 1]) for i in range(len(parts)))):
        current = level
        try:
            os.lstat(current)
        except FileNotFoundError:
            return None
        _check_real_dir(current)
    return current


def _check_real_dir(path: Path) -> None:
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ProviderError(f"cannot use {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ProviderError(f"refusing to use {path}: it is a symlink", hint=_HINT)
    if not stat.S_ISDIR(info.st_mode):
        raise ProviderError(f"refusing to use {path}: it is not a directory", hint=_HINT)


def open_append(path: Path) -> IO[bytes]:
    """A log opened for appending, created 0600; a symlink in its place is refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o600)
    except OSError as exc:
        raise ProviderError(f"cannot open {path}: {exc.strerror or exc}", hint=_HINT) from None
    return open(fd, "ab")


def read_text(path: Path) -> str:
    """A file's text, never through a symlink (OSError when missing, a symlink or unreadable)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with open(fd, "r", errors="replace") as handle:
        return handle.read()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, never through a symlink; None when absent, unreadable or not
    an object (provider state files are rewritten atomically, so a bad one is a stale one)."""
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_dir(directory: Path, *, keep: tuple[str, ...] = ()) -> None:
    """Empty a directory :func:`existing_private_dir` checked, keeping entries whose names start
    with one of ``keep``; remove it too when nothing is kept. Never deletes outside it."""
    _check_real_dir(directory)
    kept = False
    for entry in os.scandir(directory):
        if keep and entry.name.startswith(keep) and entry.is_file(follow_symlinks=False):
            kept = True
            continue
        if entry.is_dir(follow_symlinks=False):
            import shutil  # here: only a removal needs it (~2 ms to import on every command)

            shutil.rmtree(entry.path, ignore_errors=True)  # does not follow symlinks inside
        else:
            try:
                os.unlink(entry.path)  # a symlink: the link goes, its target stays
            except FileNotFoundError:
                pass
    if not kept:
        try:
            os.rmdir(directory)
        except OSError:
            pass
