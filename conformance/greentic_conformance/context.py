"""What a check body uses: fail with the rule, run a provider call, compare snapshots."""

from __future__ import annotations

from typing import Any, Callable, NoReturn, TypeVar

import pytest

from greentic_core import DeployerError

from .bounds import CallDidNotReturn
from .checks import Check
from .harness import describe_error

T = TypeVar("T")


class CheckContext:
    def __init__(self, spec: Check, harness: Any = None) -> None:
        self.spec = spec
        self.harness = harness

    def fail(self, detail: str) -> NoReturn:
        """Fail the check; the message names the check id, what happened and the rule."""
        pytest.fail(f"[{self.spec.id}] {detail} -- rule: {self.spec.rule}", pytrace=False)

    def require(self, problems: list[str]) -> None:
        if problems:
            self.fail("; ".join(problems))

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a provider call the check needs to succeed; any error fails the check, saying which call."""
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except DeployerError as exc:
            self.fail(f"{what} failed: {describe_error(exc)}")
        except CallDidNotReturn as exc:
            self.fail(f"{what}: {exc.msg}")
        except BaseException as exc:  # noqa: BLE001 - a plugin's SystemExit must not end the session
            self.fail(f"{what} let a non-DeployerError escape: {describe_error(exc)}")

    def skip(self, reason: str) -> NoReturn:
        pytest.skip(f"[{self.spec.id}] {reason}")
