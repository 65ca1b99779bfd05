"""Every provider call of the suite has a deadline, so a deployer that hangs fails its checks
("did not return within N s") instead of holding the whole suite.

* ``drain``: the revision's ``drain_seconds`` + the descriptor's ``drain_slack_seconds`` +
  :data:`DRAIN_MARGIN_SECONDS` (the budget the drain-within-budget check holds it to, plus room
  for a loaded machine);
* every other call: :data:`DEFAULT_CALL_TIMEOUT_SECONDS`, or ``--deployer-call-timeout S``
  (``GREENTIC_CONFORMANCE_CALL_TIMEOUT``); a call given a longer cooperative ``timeout`` gets
  that plus the margin.

Python cannot stop a thread: the call that did not return is left running (a daemon thread),
and until it returns every later call fails at once, naming it. The operator never calls a
provider while an earlier call on the same environment is still running, so neither does the
suite.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import pytest

DEFAULT_CALL_TIMEOUT_SECONDS = 300.0
DRAIN_MARGIN_SECONDS = 10.0
CALL_TIMEOUT_ENV = "GREENTIC_CONFORMANCE_CALL_TIMEOUT"

#: The bound deployer's methods that reach the provider (everything else passes through).
PROVIDER_CALLS = frozenset({"stage", "warm", "drain", "archive", "apply_traffic_split", "observe", "metrics",
                            "window_metrics", "report_runtime_config", "preflight", "render"})


class CallDidNotReturn(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """A provider call passed its deadline: the check fails with this message (no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, pytrace=False)


def call_timeout_from(option: float | None) -> float:
    """The default deadline: the pytest option, else the environment variable, else the default."""
    if option is not None:
        return float(option)
    raw = os.environ.get(CALL_TIMEOUT_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise pytest.UsageError(f"{CALL_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
        if value > 0:
            return value
        raise pytest.UsageError(f"{CALL_TIMEOUT_ENV}={raw!r} must be more than 0")
    return DEFAULT_CALL_TIMEOUT_SECONDS


class BoundedDeployer:
    """The bound deployer with a deadline on each provider call (the same interface)."""

    def __init__(self, inner: Any, *, default_seconds: float, drain_slack_seconds: float,
                 margin_seconds: float = DRAIN_MARGIN_SECONDS) -> None:
        self._inner = inner
        self.default_seconds = default_seconds
        self.drain_slack_seconds = drain_slack_seconds
        self.margin_seconds = margin_seconds
        self._stuck: tuple[threading.Thread, str] | None = None

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in PROVIDER_CALLS or not callable(value):
            return value

        def bounded(*args: Any, **kwargs: Any) -> Any:
            return self._run(name, value, args, kwargs)

        return bounded

    def limit(self, verb: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
        """Seconds ``verb`` may take with these arguments (see the module docstring)."""
        if verb == "drain":
            env, revision_id = (list(args) + [kwargs.get("env"), kwargs.get("revision_id")])[:2]
            revision = env.revision(revision_id) if env is not None and revision_id is not None else None
            if revision is not None:
                return float(revision.drain_seconds) + self.drain_slack_seconds + self.margin_seconds
        timeout = kwargs.get("timeout")
        if timeout is not None and timeout + self.margin_seconds > self.default_seconds:
            return float(timeout) + self.margin_seconds
        return self.default_seconds

    def _run(self, verb: str, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        what = f"{verb}({_subject(args)})"
        if self._stuck is not None:
            thread, stuck = self._stuck
            if thread.is_alive():
                raise CallDidNotReturn(f"{what} not called: the earlier call {stuck} did not return and is still "
                                       "running")
            self._stuck = None
        limit = self.limit(verb, args, kwargs)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = call(*args, **kwargs)
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        worker = threading.Thread(target=run, name=f"greentic-conformance-{verb}", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            self._stuck = (worker, what)
            raise CallDidNotReturn(f"{what} did not return within {limit:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")


def _subject(args: tuple[Any, ...]) -> str:
    """The revision or deployment id a call is about (its second positional argument)."""
    return str(args[1]) if len(args) > 1 and isinstance(args[1], str) else ""


__all__ = ["BoundedDeployer", "CallDidNotReturn", "DEFAULT_CALL_TIMEOUT_SECONDS", "DRAIN_MARGIN_SECONDS",
           "call_timeout_from"]
