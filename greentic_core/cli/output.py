"""How the CLI prints: one JSON document with ``--json``, rich text on a terminal, plain otherwise.

Off a terminal (a pipe, a file, a test runner), human output is plain text, and most of it is
written here without importing rich (about 40 ms of start-up): strings and :class:`Table`\\ s
whose rich rendering is known to be the text itself (ASCII, no markup, no emoji code, no
control character, a table that fits 240 columns). Anything else, and everything on a
terminal (or with ``FORCE_COLOR``/``TTY_COMPATIBLE`` set, which make rich treat a pipe as
one), goes through rich exactly as before; ``tests/test_cli_output.py`` checks that both
paths print the same bytes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

from ..errors import bounded

if TYPE_CHECKING:
    import rich.console
    import rich.table

#: Off a terminal, tables are for scripts and logs: wide enough that ids are never cut.
PLAIN_WIDTH = 240
# rich's emoji-code pattern (rich/_emoji_replace.py): ``:name:`` becomes an emoji when ``name``
# is one. No emoji is named by one or two digits, so ``13:10:00`` in a timestamp stays plain.
_EMOJI_CODE = re.compile(r"(:(\S*?)(?:(?:\-)(emoji|text))?:)")
_DIGITS = re.compile(r"\d{1,2}")


class Table:
    """A table of text cells (the columns' headers, then rows), as rich's ``Table(box=None,
    pad_edge=False)`` prints it: cells left-aligned, columns two spaces apart, a header line."""

    def __init__(self, *columns: str) -> None:
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add_column(self, header: str) -> None:
        self.columns.append(header)

    def add_row(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def to_rich(self) -> "rich.table.Table":
        from rich.table import Table as RichTable

        table = RichTable(box=None, pad_edge=False)
        for column in self.columns:
            table.add_column(column)
        for row in self.rows:
            table.add_row(*row)
        return table

    def plain(self) -> str | None:
        """The table as rich prints it off a terminal, or None when only rich can say."""
        lines = [self.columns, *([*row, *[""] * (len(self.columns) - len(row))] for row in self.rows)]
        if any(len(row) > len(self.columns) for row in self.rows) or not self.columns:
            return None
        if not all(type(cell) is str and _plain_safe(cell, markup=True) and "\n" not in cell
                   for row in lines for cell in row):
            return None
        widths = [max(len(row[i]) for row in lines) for i in range(len(self.columns))]
        if 0 in widths or sum(widths) + 2 * (len(widths) - 1) > PLAIN_WIDTH:
            return None
        return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "\n" for row in lines)


def _plain_safe(text: str, *, markup: bool) -> bool:
    """Whether rich prints ``text`` unchanged: printable ASCII (or newlines), no ``[`` when markup
    is on, no ``:name:`` that rich would turn into an emoji."""
    if not text.isascii() or not text.replace("\n", "").isprintable():
        return False
    if markup and "[" in text:
        return False
    if ":" in text:
        return all(_DIGITS.fullmatch(m.group(2)) for m in _EMOJI_CODE.finditer(text))
    return True


class Console:
    """``print`` (and ``status``) of a rich console, writing plain text itself where it can.

    ``print`` takes strings and :class:`Table`\\ s with rich's keyword arguments; rich is
    imported the first time something needs it (a terminal, a string rich would change)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._rich: "rich.console.Console | None" = None

    @property
    def stream(self) -> Any:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def rich(self) -> "rich.console.Console":
        if self._rich is None:
            from rich.console import Console as RichConsole

            width = None if self.stream.isatty() else PLAIN_WIDTH
            self._rich = RichConsole(stderr=self._stderr, soft_wrap=True, highlight=False, width=width)
        return self._rich

    def _plain(self) -> bool:
        if self._rich is not None:
            return False
        env = os.environ
        return not self.stream.isatty() and "FORCE_COLOR" not in env and not env.get("TTY_COMPATIBLE")

    def print(self, *objects: Any, markup: bool | None = None, highlight: bool | None = None, **kwargs: Any) -> None:
        if len(objects) == 1 and not kwargs and self._plain():
            text: str | None = None
            obj = objects[0]
            if type(obj) is str and _plain_safe(obj, markup=markup is not False):
                text = obj + "\n"
            elif isinstance(obj, Table):
                text = obj.plain()
            if text is not None:
                stream = self.stream
                stream.write(text)
                stream.flush()
                return
        objects = tuple(o.to_rich() if isinstance(o, Table) else o for o in objects)
        self.rich.print(*objects, markup=markup, highlight=highlight, **kwargs)

    def status(self, *args: Any, **kwargs: Any) -> Any:
        return self.rich.status(*args, **kwargs)


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
        self._stdout: Console | None = None
        self._stderr: Console | None = None

    @property
    def stdout(self) -> Console:
        if self._stdout is None:
            self._stdout = Console(stderr=False)
        return self._stdout

    @property
    def stderr(self) -> Console:
        if self._stderr is None:
            self._stderr = Console(stderr=True)
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
