"""Reading a revision's logs for ``greentic-deployer revision logs`` (the ``greentic_revision_logs`` hook).

Logs are ``revisions/<id>/stdout.log`` and ``stderr.log`` (``stdout-I.log`` for replica I),
rotated by the supervisor while the process runs by copy-and-truncate (the old content goes to
``NAME.1``). A follow therefore keeps the file open and starts again from the beginning of the
same file when it shrinks. Files are opened without following symlinks.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Iterator

from greentic_core import ProviderError

from . import files, processes

POLL_SECONDS = 0.1


def lines(root: Path, revision_id: str, *, stream: str, replica: int, last: int | None,
          follow: bool) -> Iterator[str]:
    """The last ``last`` lines (all when None) of the log, then, with ``follow``, every new line."""
    if stream not in ("stdout", "stderr"):
        raise ProviderError(f"unknown log stream {stream!r} (stdout or stderr)")
    directory = files.existing_private_dir(root, "revisions", revision_id)
    name = processes.log_name(stream, replica)
    if directory is None or not os.path.lexists(directory / name):
        found = sorted(p.name for p in directory.iterdir() if p.name.endswith(".log")) if directory else []
        raise ProviderError(f"revision {revision_id} has no {name} here",
                            hint=f"its logs: {', '.join(found)}" if found else "it was never started on this host")
    fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        tail: deque[bytes] = deque(maxlen=last) if last is not None else deque()
        pending = b""
        for raw in handle:
            if raw.endswith(b"\n"):
                tail.append(raw[:-1])
            else:
                pending = raw  # a line still being written
        for raw in tail:
            yield raw.decode("utf-8", "replace")
        if not follow:
            if pending:
                yield pending.decode("utf-8", "replace")
            return
        position = handle.tell()
        while True:
            size = os.fstat(handle.fileno()).st_size
            if size < position:  # rotated (copy-and-truncate): the same file starts again
                handle.seek(0)
                position = 0
                pending = b""
            chunk = handle.read()
            if chunk:
                position = handle.tell()
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", "replace")
            else:
                time.sleep(POLL_SECONDS)
