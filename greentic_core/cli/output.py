"""How the CLI prints: one JSON document with ``--json``, rich text on a terminal, plain otherwise."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import attrs
from rich.console import Console


@attrs.define
class Output:
    json_mode: bool = False
    stdout: Console = attrs.field(factory=lambda: Console(soft_wrap=True, highlight=False))
    stderr: Console = attrs.field(factory=lambda: Console(stderr=True, soft_wrap=True, highlight=False))

    @property
    def interactive(self) -> bool:
        return not self.json_mode and sys.stderr.isatty()

    def result(self, data: Any, human: Callable[[Console], None] | None = None) -> None:
        """Print a command's result: ``data`` as JSON in ``--json`` mode, else ``human(console)``."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
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
        if self.json_mode:
            sys.stdout.write(json.dumps({"ok": False, **doc}, indent=2, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()
        else:
            self.stderr.print(f"error: {message}", markup=False, highlight=False)
            if hint:
                self.stderr.print(f"hint: {hint}", markup=False, highlight=False)
