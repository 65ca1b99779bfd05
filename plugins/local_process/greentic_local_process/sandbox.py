"""The conformance sandbox: a temporary state directory and a free router port, cleaned up on exit."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from . import processes, router_control
from .answers import Answers


@contextlib.contextmanager
def sandbox(workdir: Path) -> Iterator[dict[str, Any]]:
    state = workdir / "local-process-state"
    state.mkdir(parents=True, exist_ok=True)
    answers = {
        "listen_addr": f"127.0.0.1:{processes.free_port()}",
        "state_dir": str(state),
        "warm_timeout_seconds": 30,
        "stop_grace_seconds": 2,
    }
    try:
        yield answers
    finally:
        cleanup(state, Answers.parse(answers).stop_grace_seconds)


def cleanup(state: Path, grace: float) -> None:
    """Stop the supervisor, then every revision process and the router recorded under ``state``."""
    from . import supervision

    supervision.stop(state)
    revisions = state / "revisions"
    if revisions.is_dir():
        for directory in revisions.iterdir():
            processes.stop(state, directory.name, grace)
    router_control.stop_router(state, grace_seconds=grace)
