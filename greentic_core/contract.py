"""The core side of the plugin contract: preconditions, answers checks and error conversion.

This is the one place where these rules live. :class:`BoundDeployer` is the only way the core
calls a provider verb, so no plugin can skip them:

1. the answers are checked against the descriptor's schema once, when the deployer is bound;
2. each verb's pure-spec preconditions run before any provider code (typed errors), the
   routes of the deployment it touches included (the shared rules, then the provider's own
   ``greentic_validate_routes``);
3. the call reaches exactly the bound provider (plus cross-cutting wrappers, never another
   provider), through pluggy;
4. an exception that is not a :class:`DeployerError` becomes a :class:`ProviderError` naming
   the plugin, its distribution and the verb, with the original kept as ``__cause__``;
5. the result is checked to be of the promised type.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import (
    DeployerError,
    InvalidAnswers,
    InvalidSplit,
    ProviderError,
    RevisionNotFound,
    SplitNotFound,
)
from .outcomes import (
    ArchiveOutcome,
    DeployerDescriptor,
    DrainOutcome,
    Observation,
    PreflightCheck,
    StageOutcome,
    TrafficSplitOutcome,
    WarmOutcome,
)
from .routes import invalid_route, route_problems
from .spec import TOTAL_BPS, Environment, RuntimeConfig

if TYPE_CHECKING:
    from .registry import PluginRecord

Progress = Callable[[str], None]

REDACTED = "***"


def _no_progress(message: str) -> None:
    pass


# --------------------------------------------------------------------------- preconditions


def require_revision(env: Environment, revision_id: str) -> None:
    if env.revision(revision_id) is None:
        raise RevisionNotFound(env.environment_id, revision_id)


def require_valid_split(env: Environment, deployment_id: str) -> None:
    split = env.split_for(deployment_id)
    if split is None:
        raise SplitNotFound(env.environment_id, deployment_id)
    for entry in split.entries:
        if entry.weight_bps > TOTAL_BPS:
            raise InvalidSplit(
                deployment_id, sum(e.weight_bps for e in split.entries),
                reason=f"entry {entry.revision_id} has {entry.weight_bps} basis points (above 10000)",
            )
    total = sum(e.weight_bps for e in split.entries)
    if total != TOTAL_BPS:
        raise InvalidSplit(deployment_id, total)


def validate_answers(descriptor: DeployerDescriptor, answers: Any) -> dict[str, Any]:
    """Check answers against the descriptor's JSON Schema; secrets never appear in the message.

    Answers that :func:`~greentic_core.simple_schema.surely_valid` can vouch for skip jsonschema
    (about 40 ms to import, on every command that binds a deployer); any other case, and every
    error, is jsonschema's verdict and wording."""
    from .simple_schema import surely_valid

    if answers is None:
        answers = {}
    if not isinstance(answers, Mapping):
        raise InvalidAnswers(
            f"answers for {descriptor.path} must be a JSON object, got {type(answers).__name__}",
            hint="write the answers as a JSON object, e.g. {\"key\": \"value\"}",
        )
    if surely_valid(descriptor.answers_schema, dict(answers)):
        return dict(answers)
    import jsonschema  # imported here: listing plugins must not pay for it (about 40 ms)

    validator_cls = jsonschema.validators.validator_for(descriptor.answers_schema)
    validator = validator_cls(descriptor.answers_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(answers)))
    if error is not None:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        secret = bool(error.absolute_path) and str(error.absolute_path[0]) in descriptor.secret_keys()
        detail = f"invalid value ({error.validator} check failed; secret value not shown)" if secret else error.message
        for key in descriptor.secret_keys() & set(answers):  # errors on the whole object quote it
            for shown in {repr(answers[key]), str(answers[key])} - {""}:
                detail = detail.replace(shown, REDACTED)
        raise InvalidAnswers(
            f"answers for {descriptor.path}{where or ''}: {detail}",
            hint=f"see `greentic-deployer plugins show {descriptor.path}` for the answers schema",
        )
    return dict(answers)


def absolute_path_answers(descriptor: DeployerDescriptor, answers: Mapping[str, Any]) -> dict[str, Any]:
    """The answers with every string answer whose schema says ``"format": "path"`` made absolute
    (against the current directory), as ``env init`` records them: a relative path would name a
    different directory from every working directory a later command runs in."""
    properties = (descriptor.answers_schema or {}).get("properties") or {}
    result = dict(answers)
    for key, value in answers.items():
        spec = properties.get(key)
        if isinstance(value, str) and value and isinstance(spec, Mapping) and spec.get("format") == "path":
            result[key] = str(Path(value).expanduser().absolute())
    return result


def redact_answers(descriptor: DeployerDescriptor | None, answers: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the answers that is safe to print or audit."""
    secrets = descriptor.secret_keys() if descriptor else frozenset()
    return {k: (REDACTED if k in secrets else v) for k, v in answers.items()}


# --------------------------------------------------------------------------- the bound deployer


class BoundDeployer:
    """One provider plugin bound to validated answers and a state directory.

    Created by :meth:`greentic_core.registry.Registry.bind`. Every verb takes the current
    environment (a frozen value) and returns the typed outcome or raises a DeployerError.
    """

    def __init__(self, record: "PluginRecord", callers: Mapping[str, Any], answers: Mapping[str, Any],
                 state_dir: Path | None) -> None:
        assert record.descriptor is not None
        self.record = record
        self.descriptor: DeployerDescriptor = record.descriptor
        self.answers = validate_answers(self.descriptor, answers)
        self.state_dir = state_dir
        self._callers = callers

    @property
    def name(self) -> str:
        return self.record.name

    def implements(self, hook: str) -> bool:
        return hook in self.record.hooks

    # -- the call path -----------------------------------------------------------------

    def _call(self, verb: str, expected: type | tuple[type, ...] | None, **kwargs: Any) -> Any:
        caller = self._callers[verb]
        try:
            result = caller(**kwargs)
        except DeployerError:
            raise
        except Exception as exc:
            dist = self.record.distribution or "unknown distribution"
            raise ProviderError(
                f"plugin {self.name} ({dist}) failed in {verb}: {type(exc).__name__}: {exc}",
                hint="run again with --debug for the provider's traceback",
                plugin=self.name, distribution=dist, verb=verb,
            ) from exc
        if expected is not None and not isinstance(result, expected):
            names = expected.__name__ if isinstance(expected, type) else "/".join(t.__name__ for t in expected)
            raise ProviderError(
                f"plugin {self.name} returned {type(result).__name__} from {verb}, expected {names}",
                hint="this is a bug in the plugin; report it to its authors",
                plugin=self.name, verb=verb,
            )
        return result

    def _verb_kwargs(self, env: Environment, progress: Progress | None, timeout: float | None) -> dict[str, Any]:
        return {
            "env": env, "answers": self.answers, "state_dir": self.state_dir,
            "progress": progress or _no_progress, "timeout": timeout,
        }

    def validate_routes(self, env: Environment, deployment_id: str) -> None:
        """Raise :class:`InvalidRoute` unless the deployment's routes meet the shared and the provider's rules.

        Pure (the provider hook must not do I/O); a deployment that is not in ``env`` has no
        routes to check.
        """
        deployment = env.deployment(deployment_id)
        if deployment is None:
            return
        binding = deployment.route_binding
        problems = route_problems(binding.hosts, binding.path_prefixes)
        if problems:
            raise invalid_route(deployment_id, problems)
        if not self.implements("greentic_validate_routes"):
            return
        found = self._call("greentic_validate_routes", (list, tuple, type(None)),
                           env=env, deployment_id=deployment_id, answers=self.answers)
        found = [str(p) for p in found or () if p]
        if found:
            raise invalid_route(deployment_id, found, source=self.name)

    def _revision_verb(self, verb: str, expected: type, env: Environment, revision_id: str,
                       progress: Progress | None, timeout: float | None, *, routes: bool = False) -> Any:
        require_revision(env, revision_id)
        revision = env.revision(revision_id)
        if routes and revision is not None:
            self.validate_routes(env, revision.deployment_id)
        return self._call(verb, expected, revision_id=revision_id, **self._verb_kwargs(env, progress, timeout))

    def stage(self, env: Environment, revision_id: str, *, progress: Progress | None = None,
              timeout: float | None = None) -> StageOutcome:
        return self._revision_verb("greentic_stage_revision", StageOutcome, env, revision_id, progress, timeout,
                                   routes=True)

    def warm(self, env: Environment, revision_id: str, *, progress: Progress | None = None,
             timeout: float | None = None) -> WarmOutcome:
        return self._revision_verb("greentic_warm_revision", WarmOutcome, env, revision_id, progress, timeout,
                                   routes=True)

    def drain(self, env: Environment, revision_id: str, *, progress: Progress | None = None,
              timeout: float | None = None) -> DrainOutcome:
        return self._revision_verb("greentic_drain_revision", DrainOutcome, env, revision_id, progress, timeout)

    def archive(self, env: Environment, revision_id: str, *, progress: Progress | None = None,
                timeout: float | None = None) -> ArchiveOutcome:
        return self._revision_verb("greentic_archive_revision", ArchiveOutcome, env, revision_id, progress, timeout)

    def apply_traffic_split(self, env: Environment, deployment_id: str, *, progress: Progress | None = None,
                            timeout: float | None = None) -> TrafficSplitOutcome:
        require_valid_split(env, deployment_id)
        self.validate_routes(env, deployment_id)
        outcome = self._call(
            "greentic_apply_traffic_split", TrafficSplitOutcome,
            deployment_id=deployment_id, **self._verb_kwargs(env, progress, timeout),
        )
        if outcome.applied_deployment_id != deployment_id:
            raise ProviderError(
                f"plugin {self.name} applied deployment {outcome.applied_deployment_id}, asked for {deployment_id}",
                plugin=self.name, verb="greentic_apply_traffic_split",
            )
        return outcome

    def observe(self, env: Environment) -> Observation:
        return self._call("greentic_observe", Observation, env=env, answers=self.answers, state_dir=self.state_dir)

    def metrics(self, env: Environment) -> dict[str, dict[str, Any]] | None:
        """Cumulative request counters per revision (``greentic_revision_metrics``), or None.

        None when the plugin does not implement the hook or has no metrics. Each entry is
        normalised to ``{"requests": int, "errors": int, "p99_ms": float | None}``; a value of
        the wrong shape is a ProviderError naming the plugin.
        """
        if not self.implements("greentic_revision_metrics"):
            return None
        raw = self._call("greentic_revision_metrics", (dict, type(None)),
                         env=env, answers=self.answers, state_dir=self.state_dir)
        return self._normalise_metrics(raw, "greentic_revision_metrics")

    def window_metrics(self, env: Environment, revision_ids: list[str], start: datetime,
                       end: datetime) -> dict[str, dict[str, Any]] | None:
        """Request totals per revision over ``[start, end]`` (``greentic_revision_window_metrics``), or None.

        None when the plugin does not implement the hook or cannot say. ``start`` and ``end``
        must be timezone-aware (UTC); entries are normalised as by :meth:`metrics`.
        """
        if not self.implements("greentic_revision_window_metrics"):
            return None
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("window_metrics needs timezone-aware start and end")
        raw = self._call("greentic_revision_window_metrics", (dict, type(None)),
                         env=env, answers=self.answers, state_dir=self.state_dir,
                         revision_ids=list(revision_ids), start=start, end=end)
        return self._normalise_metrics(raw, "greentic_revision_window_metrics")

    def _normalise_metrics(self, raw: Mapping[str, Any] | None, verb: str) -> dict[str, dict[str, Any]] | None:
        if raw is None:
            return None
        out: dict[str, dict[str, Any]] = {}
        for revision_id, entry in raw.items():
            try:
                requests, errors = int(entry.get("requests", 0)), int(entry.get("errors", 0))
                p99 = entry.get("p99_ms")
                p99 = None if p99 is None else float(p99)
            except (AttributeError, TypeError, ValueError):
                raise ProviderError(
                    f"plugin {self.name} returned malformed metrics for revision {revision_id}: {entry!r}"[:300],
                    hint="this is a bug in the plugin; report it to its authors",
                    plugin=self.name, verb=verb,
                ) from None
            out[str(revision_id)] = {"requests": max(requests, 0), "errors": max(errors, 0), "p99_ms": p99}
        return out

    def report_runtime_config(self, env: Environment) -> RuntimeConfig | None:
        return self._call(
            "greentic_report_runtime_config", (RuntimeConfig, type(None)),
            env=env, answers=self.answers, state_dir=self.state_dir,
        )

    def preflight(self, env: Environment) -> list[PreflightCheck]:
        checks = self._call("greentic_preflight", (list, tuple, type(None)),
                            env=env, answers=self.answers, state_dir=self.state_dir)
        return list(checks or [])

    def logs(self, env: Environment, revision_id: str, *, stream: str, replica: int, lines: int | None,
             follow: bool) -> Any:
        """The revision's log lines (``greentic_revision_logs``), an iterator; raw errors met
        while iterating are converted like those of any verb."""
        raw = self._call("greentic_revision_logs", None, env=env, revision_id=revision_id, answers=self.answers,
                         state_dir=self.state_dir, stream=stream, replica=replica, lines=lines, follow=follow)
        if raw is None:
            return None
        if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
            raise ProviderError(f"plugin {self.name} returned {type(raw).__name__} from greentic_revision_logs, "
                                "expected an iterable of lines", plugin=self.name, verb="greentic_revision_logs")
        return self._iterate(raw, "greentic_revision_logs")

    def _iterate(self, iterable: Any, verb: str) -> Any:
        try:
            for item in iterable:
                yield str(item)
        except DeployerError:
            raise
        except Exception as exc:
            raise ProviderError(f"plugin {self.name} failed in {verb}: {type(exc).__name__}: {exc}",
                                plugin=self.name, verb=verb) from exc

    def render(self, env: Environment, deployment_id: str | None = None) -> list[dict[str, Any]] | None:
        """The provider's dry run: every object (or request) it would apply for ``env``, or None.

        ``deployment_id`` narrows it to one deployment for providers whose implementation
        accepts that argument; the routes of the deployments rendered are checked first.
        """
        for deployment in env.bundles:
            if deployment_id is None or deployment.deployment_id == deployment_id:
                self.validate_routes(env, deployment.deployment_id)
        return self._call("greentic_render", (list, tuple, type(None)), env=env, answers=self.answers,
                          deployment_id=deployment_id)


def conformance_sandbox(record: "PluginRecord", caller: Any, workdir: Path) -> contextlib.AbstractContextManager:
    """The plugin's sandbox context manager, with raw errors converted like any verb."""
    try:
        manager = caller(workdir=workdir)
    except DeployerError:
        raise
    except Exception as exc:
        raise ProviderError(f"plugin {record.name} failed to create its conformance sandbox: {exc}") from exc
    if manager is None:
        raise ProviderError(f"plugin {record.name} provides no conformance sandbox",
                            hint="pass --answers FILE to run against real infrastructure")
    return manager
