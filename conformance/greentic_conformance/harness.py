"""The deployer under test: loaded through the registry, bound to sandbox or real answers.

One :class:`Harness` per pytest session. It

* loads the plugin through :class:`greentic_core.registry.Registry` (so the suite exercises the
  same discovery, validation and contract wrapper as the CLI);
* registers a :class:`Spy` extension that records every provider verb the core lets through,
  which is how "rejected before the provider is touched" is checked;
* puts a deadline on every provider call (:mod:`greentic_conformance.bounds`);
* enters the plugin's ``greentic_conformance_sandbox`` once, or uses the answers file given
  with ``--deployer-answers`` (then every run gets a unique environment id, so runs against
  shared infrastructure never see each other's objects);
* hands out :class:`~greentic_conformance.fixture.World` objects and archives every revision
  they gave to the provider, at the end of each check and again at the end of the session,
  also when checks failed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from greentic_core import DeployerError, PackDescriptor, hookimpl
from greentic_core.errors import GreenticError
from greentic_core.ids import mint_ulid
from greentic_core.registry import PluginRecord, Registry

from .bounds import DEFAULT_CALL_TIMEOUT_SECONDS, BoundedDeployer
from .fixture import World, new_environment

SPY_NAME = "greentic-conformance-spy"


class Spy:
    """A wrapper extension: notes each provider verb that starts, then lets it run unchanged."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def clear(self) -> None:
        self.calls.clear()

    @hookimpl(wrapper=True)
    def greentic_stage_revision(self, revision_id):
        self.calls.append(("greentic_stage_revision", revision_id))
        return (yield)

    @hookimpl(wrapper=True)
    def greentic_warm_revision(self, revision_id):
        self.calls.append(("greentic_warm_revision", revision_id))
        return (yield)

    @hookimpl(wrapper=True)
    def greentic_drain_revision(self, revision_id):
        self.calls.append(("greentic_drain_revision", revision_id))
        return (yield)

    @hookimpl(wrapper=True)
    def greentic_archive_revision(self, revision_id):
        self.calls.append(("greentic_archive_revision", revision_id))
        return (yield)

    @hookimpl(wrapper=True)
    def greentic_apply_traffic_split(self, deployment_id):
        self.calls.append(("greentic_apply_traffic_split", deployment_id))
        return (yield)


class HarnessError(Exception):
    """The deployer cannot be set up for the suite (every check then errors with this message)."""


class Harness:
    def __init__(self, name: str, registry: Registry, record: PluginRecord, workdir: Path,
                 answers_file: Path | None = None, call_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS) -> None:
        self.name = name
        self.registry = registry
        self.record = record
        self.workdir = Path(workdir)
        self.answers_file = answers_file
        self.call_timeout = call_timeout
        self.target = "answers-file" if answers_file else "sandbox"
        self.env_id = f"conformance-{mint_ulid()[-10:].lower()}"
        self.spy = Spy()
        self.answers: dict[str, Any] = {}
        self.deployer: Any = None
        self.kind: PackDescriptor | None = None
        self.worlds: list[World] = []
        self.cleanup_problems: list[str] = []
        self._stack = contextlib.ExitStack()

    # -- setup ----------------------------------------------------------------------------

    def start(self) -> "Harness":
        record = self.record
        if not record.ok or record.descriptor is None:
            raise HarnessError(f"deployer plugin {self.name} is {record.status}: {record.reason}"
                               + (f" (hint: {record.hint})" if record.hint else ""))
        self.kind = PackDescriptor(record.name, record.descriptor.version)
        self.registry.register_extension(self.spy, SPY_NAME)
        if self.answers_file is not None:
            self.answers = self._read_answers(self.answers_file)
        else:
            self.answers = self._enter_sandbox()
        state_dir = self.workdir / "state"
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.deployer = BoundedDeployer(self.registry.bind(self.kind, self.answers, state_dir),
                                            default_seconds=self.call_timeout,
                                            drain_slack_seconds=float(record.descriptor.capabilities.drain_slack_seconds))
        except GreenticError as exc:
            self.close()
            source = f"answers file {self.answers_file}" if self.answers_file else "the sandbox's answers"
            raise HarnessError(f"cannot bind {self.name} with {source}: {exc}") from None
        return self

    def _read_answers(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"cannot read --deployer-answers {path}: {exc}") from None
        if not isinstance(data, dict):
            raise HarnessError(f"--deployer-answers {path} must hold a JSON object")
        return data

    def _enter_sandbox(self) -> dict[str, Any]:
        if not self.record.has_sandbox:
            raise HarnessError(
                f"deployer plugin {self.name} has no greentic_conformance_sandbox hook; run against real "
                "infrastructure with --deployer-answers FILE (CLI: --answers FILE)")
        sandbox_dir = self.workdir / "sandbox"
        sandbox_dir.mkdir(parents=True, exist_ok=True)
        try:
            manager = self.registry.sandbox(self.name, sandbox_dir)
            answers = self._stack.enter_context(manager)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - third-party setup code
            raise HarnessError(f"the conformance sandbox of {self.name} failed to start: "
                               f"{type(exc).__name__}: {exc}") from None
        if answers is None:
            answers = {}
        if not isinstance(answers, dict):
            self._stack.close()
            raise HarnessError(f"the conformance sandbox of {self.name} yielded {type(answers).__name__}, "
                               "expected the answers as a dict")
        return dict(answers)

    # -- worlds ---------------------------------------------------------------------------

    @property
    def descriptor(self):
        return self.record.descriptor

    def new_world(self, *, timeout: float | None = None) -> World:
        assert self.kind is not None
        world = World(env=new_environment(self.env_id, self.kind), deployer=self.deployer, timeout=timeout)
        self.worlds.append(world)
        return world

    def end_world(self, world: World) -> None:
        """Archive what the world handed to the provider; failures are kept and retried at the end."""
        problems = world.teardown()
        if not problems:
            world.touched.clear()

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Archive every revision still left (also when checks failed), then leave the sandbox."""
        for world in self.worlds:
            if world.touched:
                self.cleanup_problems.extend(world.teardown())
        self.worlds.clear()
        try:
            self._stack.close()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            self.cleanup_problems.append(f"leaving the sandbox failed: {type(exc).__name__}: {exc}")


def make_registry() -> Registry:
    return Registry()


def describe_error(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, DeployerError) and exc.hint:
        message += f" (hint: {exc.hint})"
    return f"{kind}: {message}" if message else kind


__all__ = ["Harness", "HarnessError", "Spy", "describe_error", "make_registry"]
