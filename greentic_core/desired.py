"""The desired-state file: what should run in an environment, read from YAML or JSON (pure).

A desired-state document (``greentic.desired-state.v1``) names, per deployment (by bundle id),
the revisions that should exist, the traffic split they should carry and, optionally, how to
move traffic there (a ``canary`` strategy). :mod:`greentic_core.plan` turns it and the recorded
environment into an ordered plan; :mod:`greentic_core.apply` executes that plan. A top-level
``notify`` names the webhooks that receive rollout and agent events (:mod:`greentic_core.notify`).

Identity of revisions (decided here): every revision in the file has a stable, user-chosen
``name`` (``v2``). ``apply`` stages it with the name stored in its workload, under the key
:data:`NAME_KEY` of ``Workload.extra`` (the codec keeps unknown keys, so it is written to
``environment.json`` and read back verbatim). The workload is the one value ``revision stage``
records exactly as given, and it is as immutable as the revision, so the name travels with it
and needs no new operator verb. Matching is by name only; the rest of the workload (and
``drain_seconds``) is then compared, and a difference is a conflict: revisions are immutable,
so a changed workload needs a new name. Revisions recorded without a name (staged by hand)
and named revisions missing from the file are retired by the plan.

Weights are basis points (``9000``, ``"9000bps"``) or percentages (``"90%"``, ``"33.333%"``);
a split is turned into basis points with the largest-remainder method (:func:`to_basis_points`)
so it always sums to exactly 10000. A bare number is basis points, as in ``traffic set``:
``v2: 100`` is 1%, and a split that then sums to 100 is refused with a hint to write ``100%``.

Loading is strict: unknown keys are errors (``x_`` prefixed keys are allowed in a workload),
YAML duplicate keys are errors, numbers must be numbers. Errors are one line naming the path.
"""

from __future__ import annotations

import enum
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, NewType, Sequence

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import codec
from .errors import DecodeError, SpecError
from .notify import NotifyConfig, NotifyConfigError, parse as parse_notify_config, parse_many as parse_notify
from .routes import route_problems
from .spec import TOTAL_BPS, Workload

DESIRED_STATE_V1 = "greentic.desired-state.v1"
#: Where a revision's name is kept: a key of ``Workload.extra``.
NAME_KEY = "x_greentic_name"

#: A weight as written: basis points (``1250``, ``"1250bps"``) or a percentage (``"12.5%"``).
#: After loading it is normalised to ``"<N>bps"`` or ``"<D>%"``.
Weight = NewType("Weight", str)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PERCENT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")
_BPS = re.compile(r"\s*(\d+)\s*(?:bps)?\s*", re.IGNORECASE)


class DesiredStateError(SpecError):
    """A desired-state file is malformed or contradicts itself."""

    rule = "DesiredState"


# --------------------------------------------------------------------------- the model


class StrategyType(str, enum.Enum):
    CANARY = "canary"


class OnInconclusive(str, enum.Enum):
    """What a canary step does when the window saw fewer than ``min_requests`` requests."""

    PAUSE = "pause"  # hold the rollout until `rollout resume` / `rollout promote` / `rollout abort`
    FAIL = "fail"  # abort, as for a failed analysis
    PASS = "pass"  # carry on


@attrs.frozen(kw_only=True)
class MetricQueries:
    """The queries of a query-language metrics source (PromQL for ``prometheus``), one per number.

    Each is a template evaluated once per canary revision at the end of the window, with
    ``{{revision}}``, ``{{revision_name}}``, ``{{deployment}}``, ``{{bundle}}``,
    ``{{environment}}``, ``{{split_index}}`` and ``{{window}}`` (a duration such as ``63s``)
    filled in; ``{{name | lower}}`` lower-cases a value. ``requests`` and ``errors`` count the
    revision's requests and failed requests in the window; ``p99_ms`` is its p99 latency in
    milliseconds (needed when the analysis has ``max_p99_ms``).
    """

    requests: str
    errors: str
    p99_ms: str | None = None


@attrs.frozen(kw_only=True)
class MetricsSource:
    """Where an analysis reads the canary's requests, errors and p99 (see docs/rollouts.md).

    ``type``: ``provider`` (the default: the deployer's own metrics hooks), ``prometheus``
    (``url`` and ``queries`` required), ``cloudwatch`` (from greentic-deployer-aws: the ALB
    target-group metrics of the revision) or the name of another installed source (entry-point
    group ``greentic.metrics_sources``). ``timeout_seconds``: how long one query may take.
    """

    type: str = "provider"
    url: str | None = None
    queries: MetricQueries | None = None
    timeout_seconds: float | None = None


@attrs.frozen(kw_only=True)
class Analysis:
    """Thresholds a canary step must meet, measured over the step's pause (the analysis window).

    ``max_error_rate``: failed requests / requests of the canary revisions (0..1), failed
    meaning a 5xx answer or no answer. ``max_p99_ms``: the largest p99 latency reported for a
    canary revision. ``min_requests``: fewer requests than this in the window make the analysis
    inconclusive (``on_inconclusive`` says what happens then). ``source``: where the numbers
    come from (default: the provider). A canary revision the provider does not report present
    and serving always fails the analysis.
    """

    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    min_requests: int = 0
    on_inconclusive: OnInconclusive = OnInconclusive.PAUSE
    source: MetricsSource = attrs.field(factory=MetricsSource)


@attrs.frozen(kw_only=True)
class CanaryStep:
    """One step: move ``weight`` of the way from the split before the rollout to the target."""

    weight: Weight
    pause_seconds: float | None = None
    analysis: Analysis | None = None


@attrs.frozen(kw_only=True)
class Strategy:
    """How traffic moves to a new split. ``canary``: through ``steps`` (``[5%, 25%, 50%]``).

    A step is a weight or ``{weight, pause_seconds, analysis}``; ``pause_seconds`` and
    ``analysis`` given here are the defaults of every step. A final step of 100% is added when
    the list does not end there (with no pause and no analysis).
    """

    type: StrategyType = StrategyType.CANARY
    steps: tuple[Weight | CanaryStep, ...] = ()
    pause_seconds: float = 0.0
    analysis: Analysis | None = None

    def resolved_steps(self) -> tuple[CanaryStep, ...]:
        """Every step as a :class:`CanaryStep` with the defaults filled in, ending at 100%."""
        out = []
        for step in self.steps:
            step = step if isinstance(step, CanaryStep) else CanaryStep(weight=step)
            out.append(CanaryStep(
                weight=step.weight,
                pause_seconds=self.pause_seconds if step.pause_seconds is None else step.pause_seconds,
                analysis=self.analysis if step.analysis is None else step.analysis,
            ))
        if not out or weight_bps(out[-1].weight) != TOTAL_BPS:
            out.append(CanaryStep(weight=Weight(f"{TOTAL_BPS}bps"), pause_seconds=0.0, analysis=None))
        return tuple(out)


@attrs.frozen(kw_only=True)
class DesiredRevision:
    """A revision that should exist (and be ready): its name, what it runs, how long it drains."""

    name: str
    workload: Workload
    drain_seconds: int = 30

    def recorded_workload(self) -> Workload:
        """The workload as ``apply`` stages it: the name stored under :data:`NAME_KEY`."""
        return attrs.evolve(self.workload, extra={**self.workload.extra, NAME_KEY: self.name})


@attrs.frozen(kw_only=True)
class DesiredDeployment:
    """One deployment, by bundle id: its routes, revisions, target split and strategy.

    ``traffic`` maps revision names to weights; left out, the recorded split is kept (it may
    then only route revisions of this file). Revisions of the deployment that are not listed
    are drained (once they have no weight) and archived.
    """

    bundle: str
    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    revisions: tuple[DesiredRevision, ...] = ()
    traffic: dict[str, Weight] | None = None
    strategy: Strategy | None = None

    def revision(self, name: str) -> DesiredRevision | None:
        return next((r for r in self.revisions if r.name == name), None)

    def target_bps(self) -> tuple[tuple[str, int], ...] | None:
        """The target split by revision name, in basis points summing to 10000 (zeros left out)."""
        if self.traffic is None:
            return None
        pairs = to_basis_points(list(self.traffic.items()), context=f"deployment {self.bundle!r} traffic")
        return tuple((name, bps) for name, bps in pairs if bps > 0)


@attrs.frozen(kw_only=True)
class DesiredState:
    """The whole desired-state document (``greentic.desired-state.v1``).

    ``notify``: the webhooks that receive rollout and agent events (one, or a list; see
    :mod:`greentic_core.notify`).
    """

    schema: str = DESIRED_STATE_V1
    environment: str | None = None
    deployments: tuple[DesiredDeployment, ...] = ()
    notify: tuple[NotifyConfig, ...] = ()

    def deployment(self, bundle: str) -> DesiredDeployment | None:
        return next((d for d in self.deployments if d.bundle == bundle), None)


_CLASSES = (MetricQueries, MetricsSource, Analysis, CanaryStep, Strategy, DesiredRevision, DesiredDeployment,
            DesiredState)


# --------------------------------------------------------------------------- weights and rounding


def parse_weight(value: Any) -> Fraction:
    """A weight as written -> exact basis points (a Fraction: a percentage may have any decimals)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        if isinstance(value, float):
            raise DecodeError(f"weight {value!r} is ambiguous: write a percentage ({value:g}%) or whole basis points")
        raise DecodeError(f"weight must be basis points or a percentage, got {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise DecodeError(f"weight {value} is negative")
        return Fraction(value)
    if match := _PERCENT.fullmatch(value):
        try:
            return Fraction(Decimal(match.group(1))) * 100
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise DecodeError(f"weight {value!r} is not a percentage") from None
    if match := _BPS.fullmatch(value):
        return Fraction(int(match.group(1)))
    raise DecodeError(f"weight {value[:40]!r} is not basis points (9000, 9000bps) or a percentage (90%, 12.5%)")


def weight_bps(weight: Any) -> int:
    """One weight in whole basis points (a percentage finer than 0.01% is rounded half up)."""
    exact = parse_weight(weight)
    return int(exact + Fraction(1, 2)) if exact.denominator != 1 else int(exact)


def _normalise_weight(value: Any, _: Any = None) -> Weight:
    exact = parse_weight(value)
    if exact > TOTAL_BPS:
        raise DecodeError(f"weight {value!r} is above 100% (10000 basis points)")
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        text = format(Decimal(_PERCENT.fullmatch(value).group(1)).normalize(), "f")
        return Weight(f"{text}%")
    return Weight(f"{int(exact)}bps")


def largest_remainder(exact: Sequence[tuple[str, Fraction]], total: int = TOTAL_BPS) -> list[tuple[str, int]]:
    """Whole numbers summing to exactly ``total``, each the floor or ceiling of its exact share.

    ``exact`` must sum to ``total`` (they are scaled to it first when they do not). The units
    left after taking every floor go to the largest fractional parts; ties go to the entry
    listed first, so the result is deterministic.
    """
    if not exact:
        return []
    grand = sum((value for _, value in exact), Fraction(0))
    if grand <= 0:
        raise ValueError("weights sum to zero")
    if grand != total:
        exact = [(key, value * total / grand) for key, value in exact]
    floors = [(key, int(value)) for key, value in exact]  # int() floors a non-negative Fraction
    left = total - sum(f for _, f in floors)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - floors[i][1]), i))
    result = [list(item) for item in floors]
    for i in order[:left]:
        result[i][1] += 1
    return [(key, value) for key, value in result]


def to_basis_points(pairs: Sequence[tuple[str, Any]], *, context: str = "split") -> list[tuple[str, int]]:
    """Weights as written -> basis points summing to exactly 10000 (largest remainder).

    The written weights must total 100%; a shortfall or excess of less than one basis point
    per entry (``33.33%`` three times) is tolerated and absorbed by the rounding.
    """
    exact = [(key, parse_weight(value)) for key, value in pairs]
    total = sum((value for _, value in exact), Fraction(0))
    if abs(total - TOTAL_BPS) >= max(1, len(exact)) or total == 0:
        shown = float(total)
        hint = "weights are basis points (10000 = 100%) or percentages such as 90%"
        if total == 100:
            hint = "a bare number is basis points: write 100% (or 10000) for all the traffic"
        raise DesiredStateError(f"{context}: weights sum to {shown:g} basis points ({shown / 100:g}%), "
                                "must be 10000 (100%)", hint=hint)
    return largest_remainder(exact)


def interpolate(baseline: Sequence[tuple[str, int]], target: Sequence[tuple[str, int]],
                fraction_bps: int) -> list[tuple[str, int]]:
    """The split ``fraction_bps``/10000 of the way from ``baseline`` to ``target`` (zeros dropped).

    Exact shares ``b * (1 - f) + t * f`` rounded by largest remainder, so the result sums to
    10000; at 10000 it is exactly ``target``, at 0 exactly ``baseline``. Keys keep the order
    baseline first, then the target's new ones.
    """
    f = Fraction(fraction_bps, TOTAL_BPS)
    base, tgt = dict(baseline), dict(target)
    keys = list(dict.fromkeys([*base, *tgt]))
    exact = [(k, base.get(k, 0) * (1 - f) + tgt.get(k, 0) * f) for k in keys]
    return [(k, w) for k, w in largest_remainder([(k, v) for k, v in exact if v > 0]) if w > 0]


# --------------------------------------------------------------------------- converter


def _strict_number(value: Any, _: Any = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"expected a number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise DecodeError("expected a finite number")
    if value < 0:
        raise DecodeError(f"number {value} is negative")
    return float(value)


def _make_converter(detailed: bool) -> cattrs.Converter:
    conv = codec._make_converter(detailed)  # the codec's strict scalars, Workload and enum hooks
    conv.register_structure_hook(float, _strict_number)
    conv.register_structure_hook(Weight, _normalise_weight)
    for enum_cls in (StrategyType, OnInconclusive):
        conv.register_structure_hook(enum_cls, codec._strict_enum)
        conv.register_unstructure_hook(enum_cls, lambda member: member.value)

    def weights_map(value: Any, _: Any) -> dict[str, Weight]:
        if not isinstance(value, dict):
            raise DecodeError(f"traffic must map revision names to weights, got {type(value).__name__}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"traffic key {key!r} must be a revision name (a string)")
            try:
                out[key] = _normalise_weight(item)
            except DecodeError as exc:
                raise DecodeError(f"traffic.{key}: {exc.message}") from None
        return out

    conv.register_structure_hook_func(lambda t: t == dict[str, Weight], weights_map)

    def step_hook(value: Any, _: Any) -> CanaryStep:
        if isinstance(value, dict):
            return conv.structure(value, CanaryStep)
        return CanaryStep(weight=_normalise_weight(value))

    conv.register_structure_hook_func(lambda t: t == (Weight | CanaryStep), step_hook)

    conv.register_structure_hook(NotifyConfig, lambda value, _: parse_notify_config(value))
    conv.register_unstructure_hook(NotifyConfig, NotifyConfig.to_record)
    for cls in _CLASSES:
        _register_strict(conv, cls)
    return conv


def _register_strict(conv: cattrs.Converter, cls: type) -> None:
    fields = attrs.fields(cls)
    known = frozenset(f.name for f in fields)
    required = [f.name for f in fields if f.default is attrs.NOTHING]
    base = make_dict_structure_fn(cls, conv)
    omit = {f.name: override(omit_if_default=True) for f in fields if f.default is not attrs.NOTHING}
    unstructure = make_dict_unstructure_fn(cls, conv, **omit)
    name = cls.__name__

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise DecodeError(f"{name} must be a mapping, got {type(value).__name__}")
        unknown = [k for k in value if k not in known]
        if unknown:
            raise DecodeError(f"unknown key {str(unknown[0])[:60]!r} (known: {', '.join(sorted(known))})")
        missing = [k for k in required if k not in value]
        if missing:
            raise DecodeError(f"{name} is missing required key {missing[0]!r}")
        return base(value, cls)

    conv.register_structure_hook(cls, structure)
    conv.register_unstructure_hook(cls, unstructure)


_FAST = _make_converter(detailed=False)
_DETAILED = _make_converter(detailed=True)


def structure(data: Any) -> DesiredState:
    """Parsed YAML/JSON -> :class:`DesiredState` (not yet checked with :func:`validate`)."""
    if not (isinstance(data, dict) and "notify" in data):
        return _structure(data)
    try:  # read on its own, for errors naming the key path inside (notify[1].events[0]: ...)
        hooks = parse_notify(data["notify"], "notify")
    except NotifyConfigError as exc:
        raise DesiredStateError(exc.message, hint=exc.hint) from None
    return attrs.evolve(_structure({k: v for k, v in data.items() if k != "notify"}), notify=hooks)


def _structure(data: Any) -> DesiredState:
    try:
        return _FAST.structure(data, DesiredState)
    except Exception:
        pass
    try:
        return _DETAILED.structure(data, DesiredState)
    except (cattrs.BaseValidationError, SpecError, ValueError, TypeError, KeyError) as exc:
        messages = cattrs.transform_error(exc, path="$", format_exception=codec._format_exception)
        raise DecodeError(f"desired state is malformed: {messages[0] if messages else exc}",
                          hint="compare with `greentic-deployer schema deploy`") from None


def unstructure(desired: DesiredState) -> dict[str, Any]:
    return _FAST.unstructure(desired)


# --------------------------------------------------------------------------- reading


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in mapping:
                raise DecodeError(f"duplicate key {str(key)[:60]!r} (line {key_node.start_mark.line + 1})")
            mapping[key] = loader.construct_object(value_node, deep=deep)
        return mapping

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def parse_text(text: str | bytes, *, name: str = "desired state") -> Any:
    """YAML or JSON text -> plain data (JSON when it starts with ``{``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{name} is not UTF-8: {exc.reason}") from None
    if text.lstrip().startswith("{"):
        return codec.parse_json(text)
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except DecodeError:
        raise
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DecodeError(f"{name} is not valid YAML{at}: {problem}") from None


def loads(text: str | bytes, *, name: str = "desired state") -> DesiredState:
    """Parse, structure and :func:`validate` a desired-state document."""
    data = parse_text(text, name=name)
    if data is None:
        raise DecodeError(f"{name} is empty", hint="see docs/rollouts.md for the format")
    desired = structure(data)
    validate(desired)
    return desired


def load(path: str | Path) -> DesiredState:
    """Read a desired-state file (YAML, or JSON when it starts with ``{``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    try:
        return loads(data, name=str(path))
    except SpecError as exc:
        if not exc.message.startswith(str(path)):
            exc.message = f"{path}: {exc.message}"
            exc.args = (exc.message, *exc.args[1:])
        raise


# --------------------------------------------------------------------------- checks


def validate(desired: DesiredState) -> None:
    """Raise :class:`DesiredStateError` for a document that cannot describe a valid environment."""
    from .validation import _check_workload  # the rules `revision stage` applies

    def bad(message: str, hint: str | None = None) -> DesiredStateError:
        return DesiredStateError(message, hint=hint)

    if desired.schema != DESIRED_STATE_V1:
        raise bad(f"schema is {desired.schema!r}, expected {DESIRED_STATE_V1!r}")
    bundles: set[str] = set()
    for d in desired.deployments:
        where = f"deployment {d.bundle!r}"
        if not d.bundle.strip():
            raise bad("a deployment has an empty bundle id")
        if d.bundle in bundles:
            raise bad(f"{where} is listed twice", hint="list each bundle once")
        bundles.add(d.bundle)
        problems = route_problems(d.hosts, d.path_prefixes)
        if problems:
            raise bad(f"{where}: {problems[0]}")
        names: set[str] = set()
        for r in d.revisions:
            if not _NAME.fullmatch(r.name):
                raise bad(f"{where}: revision name {r.name[:70]!r} must be 1-63 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
            if r.name in names:
                raise bad(f"{where}: revision {r.name!r} is listed twice", hint="give every revision its own name")
            names.add(r.name)
            bad_extra = [k for k in r.workload.extra if not k.startswith("x_") or k == NAME_KEY]
            if bad_extra:
                raise bad(f"{where}: revision {r.name!r}: unknown workload key {bad_extra[0]!r}",
                          hint="workload keys: image, command, env, port, health_path, replicas, working_dir "
                               f"(and x_* of your own; {NAME_KEY} is reserved)")
            try:
                _check_workload(r.workload, f"{where} revision {r.name!r} workload")
            except SpecError as exc:
                raise bad(str(exc)) from None
            if r.workload.image is None and not r.workload.command:
                raise bad(f"{where}: revision {r.name!r} has neither workload.image nor workload.command")
            if r.drain_seconds > 2**32 - 1:
                raise bad(f"{where}: revision {r.name!r}: drain_seconds {r.drain_seconds} is too large")
        if d.traffic is not None:
            for name in d.traffic:
                if name not in names:
                    raise bad(f"{where}: traffic names revision {name!r}, which is not in its revisions",
                              hint=f"revisions: {', '.join(sorted(names)) or '(none)'}")
            target = d.target_bps()
            assert target is not None
            if not target:
                raise bad(f"{where}: traffic gives no revision any weight")
        if d.strategy is not None:
            if d.traffic is None:
                raise bad(f"{where}: a strategy needs a traffic target")
            previous = 0
            for index, step in enumerate(d.strategy.resolved_steps()):
                bps = weight_bps(step.weight)
                if bps <= previous:
                    raise bad(f"{where}: canary step {index + 1} ({step.weight}) must be above the one before "
                              f"and above 0", hint="steps go up, e.g. [5%, 25%, 50%, 100%]")
                previous = bps
                analysis = step.analysis
                if analysis is not None and analysis.max_error_rate is not None and analysis.max_error_rate > 1:
                    raise bad(f"{where}: max_error_rate {analysis.max_error_rate:g} must be between 0 and 1",
                              hint="0.05 means 5% of the canary's requests may fail")
            _check_sources(d.strategy, where)


def _check_sources(strategy: Strategy, where: str) -> None:
    """Each analysis's metrics source: installed, and its settings right for its type."""
    from .metrics_sources import SourceConfigError, check_source

    analyses = [("strategy.analysis", strategy.analysis)]
    analyses += [(f"strategy.steps[{i}].analysis", s.analysis) for i, s in enumerate(strategy.steps)
                 if isinstance(s, CanaryStep)]
    for path, analysis in analyses:
        if analysis is None:
            continue
        try:
            check_source(analysis.source, analysis)
        except SourceConfigError as exc:
            raise DesiredStateError(f"{where}: {path}.source: {exc.message}", hint=exc.hint) from None


def check_environment(desired: DesiredState, env_id: str) -> None:
    if desired.environment is not None and desired.environment != env_id:
        raise DesiredStateError(
            f"the desired state is for environment {desired.environment!r}, not {env_id!r}",
            hint="pass the environment the file names, or change its `environment` key")
