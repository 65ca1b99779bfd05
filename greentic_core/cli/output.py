"""How the CLI prints: one JSON document with ``--json``, rich text on a terminal, plain otherwise."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from typing import TYPE_CHECKING

from ..errors import bounded

if TYPE_CHECKING:
    from rich.console import Console


def _console(stderr: bool) -> "Console":
    from rich.console import Console  # imported on first human output: --json never pays for it

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal, tables are for scripts and logs: wide enough that ids are never cut.
    return Console(stderr=stderr, soft_wrap=True, highlight=False, width=None if stream.isatty() else 240)


def _printable(text: str, stream: Any) -> str:
    """``text`` as ``stream`` can encode it: a character it cannot (a lone surrogate from a
    hostile document or a non-UTF-8 command line argument) is shown as a backslash escape
    instead of crashing the error report."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        try:
            return text.encode(encoding, "backslashreplace").decode(encoding)
        except LookupError:
            return text.encode("ascii", "backslashreplace").decode("ascii")


class Output:
    """Where a command's result, notes and errors go (a plain class: the CLI shell imports no attrs)."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self._stdout: "Console | None" = None
        self._stderr: "Console | None" = None

    @property
    def stdout(self) -> "Console":
        if self._stdout is None:
            self._stdout = _console(stderr=False)
        return self._stdout

    @property
    def stderr(self) -> "Console":
        if self._stderr is None:
            self._stderr = _console(stderr=True)
        return self._stderr

    @property
    def interactive(self) -> bool:
        return not self.json_mode and sys.stderr.isatty()

    def result(self, data: Any, human: Callable[[Console], None] | None = None) -> None:
        """Print a command's result: ``data`` as JSON in ``--json`` mode, else ``human(console)``."""
        if self.json_mode:
            text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
            sys.stdout.write(_printable(text, sys.stdout))
            sys.stdout.flush()
        elif human is not None:
            human(self.stdout)
        else:
            self.stdout.print(json.dumps(data, indent=2, ensure_ascii=False, default=str), markup=False)

    def info(self, message: str) -> None:
        """Progress or notes for people: stderr, never in ``--json`` output."""
        if not self.json_mode:
            self.stderr.print(message, markup=False, highlight=False)

    def error(self, kind: str, message: str, hint: str | None, doc: dict[str, Any]) -> None:
        # the one place errors leave the CLI: cut long texts here, after secrets were scrubbed
        message, hint = bounded(message), bounded(hint) if hint else hint
        if "message" in doc:
            doc = {**doc, "message": message, **({"hint": hint} if doc.get("hint") is not None else {})}
        if self.json_mode:
            text = json.dumps({"ok": False, **doc}, indent=2, ensure_ascii=False, default=str) + "\n"
            sys.stdout.write(_printable(text, sys.stdout))
            sys.stdout.flush()
        else:
            self.stderr.print(_printable(f"error: {message}", sys.stderr), markup=False, highlight=False)
            if hint:
                self.stderr.print(_printable(f"hint: {hint}", sys.stderr), markup=False, highlight=False)


class ProgressReporter:
    """``progress(message)`` for long waits: a live status line on a terminal, silent otherwise."""

    def __init__(self, out: Output, title: str) -> None:
        self._status = None
        self._title = title
        if out.interactive:
            self._status = out.stderr.status(title)

    def __enter__(self) -> "ProgressReporter":
        if self._status is not None:
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def __call__(self, message: str) -> None:
        if self._status is not None:
            self._status.update(f"{self._title}: {message}")
