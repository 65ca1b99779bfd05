"""Metrics sources for canary analysis: where a window's requests, errors and p99 come from.

An analysis names its source in the desired-state file (``analysis.source``, the
:class:`~greentic_core.desired.MetricsSource` model). ``provider`` (the default) is built into
:func:`greentic_core.rollout.measure`: the bound deployer's ``greentic_revision_window_metrics``
hook when it implements it, else the difference of two ``greentic_revision_metrics`` readings.
Every other type is a plugin, with the same parts as the deployer contract:

* **Entry-point group** :data:`GROUP` (``greentic.metrics_sources``): the name is the ``type``
  written in the file, the value a *factory* ``factory(source: MetricsSource) -> reader``.
  ``prometheus`` is registered by greentic-core itself (:class:`PrometheusSource`),
  ``cloudwatch`` by greentic-deployer-aws.
* **The contract.** The factory checks the source's settings (``url``, ``queries``,
  ``timeout_seconds``) and raises :class:`SourceConfigError` (or any ``GreenticError``, or
  ``ValueError``) with a one-line message; it is called when a desired-state file is loaded, so
  it must be cheap (no network, no cloud SDK import). The reader is called once at the end of
  each analysis window, ``reader(query: WindowQuery)``, and returns
  ``{revision_id: {"requests": int, "errors": int, "p99_ms": float | None}}``, totals over the
  window for ``query.revision_ids``. When it cannot say, it raises :class:`MetricsUnavailable`
  (or a ``GreenticError``) with the reason: the window is then *inconclusive*, never zero.
* **Registry**: :func:`load_factory` finds the entry point (cached discovery, nothing else
  imported), loads it in isolation and explains a missing distribution ("pip install ...") or
  a broken one in one line.
* **The wrapper** :func:`read_window` is the one place a reader is called: its result is
  checked and normalised, any error becomes :class:`MetricsUnavailable` with one line, and
  URL credentials are never part of a message.

Pure code (templates, durations, Prometheus response parsing, settings checks) is separate
from the one function that does HTTP (:func:`_post_query`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from .errors import GreenticError, SpecError

if TYPE_CHECKING:
    from .desired import Analysis, MetricsSource

GROUP = "greentic.metrics_sources"
PROVIDER = "provider"
#: Placeholders of query templates (``{{revision}}``, ``{{bundle | lower}}``).
PLACEHOLDERS = ("revision", "revision_name", "deployment", "bundle", "environment", "split_index", "window")
FILTERS = {"lower": str.lower}
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 300.0
#: Which distribution provides a source type that is not installed (for the hint).
DISTRIBUTIONS = {"cloudwatch": "greentic-deployer-aws"}

_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*)?\}\}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SourceConfigError(SpecError):
    """An analysis's metrics source is not installed or its settings are wrong (one line)."""

    rule = "MetricsSource"


class MetricsUnavailable(GreenticError):
    """A metrics source could not give the window's numbers: the analysis is inconclusive."""

    kind = "metrics_unavailable"


@attrs.frozen(kw_only=True)
class WindowQuery:
    """What a reader is asked: the canary revisions of one step and the window ``[start, end]``.

    ``env`` is the environment as recorded; ``deployer`` the descriptor path of the deployer it
    is bound to and ``answers`` that deployer's validated answers (a source that reads the
    provider's own metrics API needs them: ``cloudwatch`` reads the aws-ecs target groups).
    ``names`` maps revision ids to their desired-state names; ``split_index`` to their position
    in the deployment's recorded split (the order providers write backends in). ``start`` and
    ``end`` are timezone-aware UTC; ``timeout`` is the seconds one query may take.
    """

    env: Any
    deployer: str
    answers: Mapping[str, Any]
    state_dir: Any
    environment_id: str
    deployment_id: str
    bundle_id: str
    revision_ids: tuple[str, ...]
    names: Mapping[str, str]
    split_index: Mapping[str, int]
    start: datetime
    end: datetime
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def window_seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0)

    def values(self, revision_id: str) -> dict[str, str]:
        """The placeholder values for one revision."""
        index = self.split_index.get(revision_id)
        return {
            "revision": revision_id,
            "revision_name": self.names.get(revision_id) or revision_id,
            "deployment": self.deployment_id,
            "bundle": self.bundle_id,
            "environment": self.environment_id,
            "split_index": "" if index is None else str(index),
            "window": prometheus_duration(self.window_seconds),
        }


# --------------------------------------------------------------------------- templates (pure)


def template_problems(text: str) -> list[str]:
    """What is wrong with a query template: unknown placeholders or filters, stray braces."""
    problems = []
    for match in _PLACEHOLDER.finditer(text):
        name, filt = match.group(1), match.group(2)
        if name not in PLACEHOLDERS:
            problems.append(f"unknown placeholder {{{{{name}}}}} (known: {', '.join(PLACEHOLDERS)})")
        if filt is not None and filt not in FILTERS:
            problems.append(f"unknown filter {filt!r} in {match.group(0)} (known: {', '.join(FILTERS)})")
    rest = _PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        fragment = rest[max(rest.find("{{") if "{{" in rest else rest.find("}}"), 0):][:40]
        problems.append(f"malformed placeholder near {fragment!r} (write {{{{name}}}} or {{{{name | lower}}}})")
    if not text.strip():
        problems.append("the query is empty")
    return problems


def _promql_string(value: str) -> str:
    """``value`` made safe inside a double-quoted PromQL string (label matcher values)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with its placeholders filled (``\\`` and ``"`` escaped for a PromQL string)."""

    def fill(match: re.Match[str]) -> str:
        value = str(values[match.group(1)])
        if match.group(2):
            value = FILTERS[match.group(2)](value)
        return _promql_string(value)

    return _PLACEHOLDER.sub(fill, template)


def prometheus_duration(seconds: float) -> str:
    """A window length as a Prometheus duration in whole seconds, rounded up (``63s``; at least ``1s``)."""
    return f"{max(1, math.ceil(seconds - 1e-9))}s"


# --------------------------------------------------------------------------- Prometheus answers (pure)


def query_value(body: Any, *, what: str, aggregate: str = "sum") -> float:
    """The number a ``/api/v1/query`` answer holds: the ``sum`` (or ``max``) over its series.

    A vector with no series raises :class:`MetricsUnavailable` ("returned no series"): an
    empty answer means "no data", not 0. An error answer, a range vector, a string or a
    malformed body raise it too. NaN samples are skipped; only NaN gives ``nan``.
    """
    if not isinstance(body, Mapping):
        raise MetricsUnavailable(f"{what}: the answer is not a JSON object")
    if body.get("status") != "success":
        kind = body.get("errorType") or "error"
        raise MetricsUnavailable(f"{what} failed: {kind}: {str(body.get('error') or 'no message')[:300]}")
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise MetricsUnavailable(f"{what}: the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        samples = [result]
    elif kind == "vector":
        if not isinstance(result, list):
            raise MetricsUnavailable(f"{what}: malformed vector answer")
        if not result:
            raise MetricsUnavailable(f"{what} returned no series (no data for the window, which is not 0; "
                                     "append `or vector(0)` if a missing series does mean 0)")
        samples = [item.get("value") if isinstance(item, Mapping) else None for item in result]
    elif kind == "matrix":
        raise MetricsUnavailable(f"{what} returned a range vector; wrap it in e.g. sum(increase(...[{{{{window}}}}]))")
    else:
        raise MetricsUnavailable(f"{what} returned a {kind or 'malformed'} result, not a number")
    numbers = []
    for sample in samples:
        try:
            numbers.append(float(sample[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise MetricsUnavailable(f"{what}: malformed sample {str(sample)[:80]}") from None
    finite = [n for n in numbers if not math.isnan(n)]
    if not finite:
        return math.nan
    return max(finite) if aggregate == "max" else sum(finite)


# --------------------------------------------------------------------------- settings checks (pure)


def _url_problem(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        return f"url is malformed: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url must be http:// or https:// with a host, e.g. http://prometheus.monitoring:9090"
    if parts.fragment:
        return "url must not have a #fragment"
    if parts.password and not _ENV_REF.fullmatch(parts.password):
        return ("url holds a password; give it from an environment variable instead "
                "(http://user:${PROM_PASSWORD}@host:9090), so it is never recorded or printed")
    return None


def check_source(source: "MetricsSource", analysis: "Analysis | None" = None) -> None:
    """Raise :class:`SourceConfigError` unless ``source`` is installed and its settings fit its type.

    Called when a desired-state file is loaded (messages are prefixed with the key path there).
    """
    if not _TYPE.fullmatch(source.type or ""):
        raise SourceConfigError(f"type {str(source.type)[:40]!r} is not a source name (provider, prometheus, "
                                "cloudwatch, ...)")
    if source.type == PROVIDER:
        given = [k for k in ("url", "queries", "timeout_seconds") if getattr(source, k) is not None]
        if given:
            raise SourceConfigError(f"{given[0]} is not a setting of the provider source",
                                    hint="set type: prometheus (or another source) to use url and queries")
        return
    if source.timeout_seconds is not None and not 0 < source.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise SourceConfigError(f"timeout_seconds {source.timeout_seconds:g} must be above 0 and at most "
                                f"{MAX_TIMEOUT_SECONDS:g}")
    if analysis is not None and analysis.max_p99_ms is not None and source.queries is not None \
            and source.queries.p99_ms is None:
        raise SourceConfigError("the analysis has max_p99_ms but the source has no queries.p99_ms",
                                hint="add a p99_ms query (milliseconds), or drop max_p99_ms")
    factory = load_factory(source.type)
    try:
        factory(source)
    except SourceConfigError:
        raise
    except (GreenticError, ValueError, TypeError) as exc:
        text = exc.message if isinstance(exc, GreenticError) else str(exc)
        raise SourceConfigError(_one_line(text), hint=getattr(exc, "hint", None)) from None


# --------------------------------------------------------------------------- registry


def installed() -> list[Any]:
    """The entry points of :data:`GROUP` (metadata only, nothing imported)."""
    from .discovery import discover

    try:
        return discover(GROUP)
    except Exception:  # an unreadable metadata directory: nothing installed, said by the caller
        return []


def not_installed(name: str, installed_names: list[str]) -> SourceConfigError:
    """The error for a source type no installed distribution provides (with what to install)."""
    known = sorted({PROVIDER, *installed_names})
    dist = DISTRIBUTIONS.get(name)
    hint = (f"install it: pip install {dist}" if dist else
            f"install the distribution that provides it (entry-point group {GROUP}), or use one of: "
            f"{', '.join(known)}")
    return SourceConfigError(f"no metrics source named {name!r} is installed (installed: {', '.join(known)})",
                             hint=hint, source=name)


def load_factory(name: str) -> Callable[["MetricsSource"], Any]:
    """The factory of source type ``name``, or a one-line :class:`SourceConfigError`."""
    entry_points = installed()
    found = [ep for ep in entry_points if ep.name == name]
    if not found:
        raise not_installed(name, [ep.name for ep in entry_points])
    ep = found[0]
    from .registry import load_object

    try:
        return load_object(ep.value)
    except Exception as exc:
        raise SourceConfigError(
            f"metrics source {name} ({ep.distribution} {ep.version}) cannot be loaded: "
            f"{type(exc).__name__}: {_one_line(str(exc))}",
            hint=f"reinstall it: pip install --force-reinstall {ep.distribution}", source=name) from None


def read_window(source: "MetricsSource", query: WindowQuery) -> dict[str, dict[str, Any]]:
    """Totals per canary revision over the window from a plugin source, or :class:`MetricsUnavailable`."""
    what = f"metrics source {source.type}"
    try:
        reader = load_factory(source.type)(source)
        raw = reader(query)
    except MetricsUnavailable:
        raise
    except GreenticError as exc:
        raise MetricsUnavailable(_one_line(f"{what}: {exc.message}")) from None
    except Exception as exc:
        raise MetricsUnavailable(_one_line(f"{what} failed: {type(exc).__name__}: {exc}")) from None
    if raw is None:
        raise MetricsUnavailable(f"{what} has no numbers for environment {query.environment_id}")
    if not isinstance(raw, Mapping):
        raise MetricsUnavailable(f"{what} returned {type(raw).__name__}, expected a mapping of revision ids")
    out: dict[str, dict[str, Any]] = {}
    for rid, entry in raw.items():
        try:
            p99 = entry.get("p99_ms")
            out[str(rid)] = {"requests": max(int(entry.get("requests", 0)), 0),
                             "errors": max(int(entry.get("errors", 0)), 0),
                             "p99_ms": None if p99 is None else float(p99)}
        except (AttributeError, TypeError, ValueError):
            raise MetricsUnavailable(_one_line(f"{what} returned malformed numbers for {rid}: {entry!r}")[:300]) \
                from None
    return out


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "no message"


# --------------------------------------------------------------------------- Prometheus


def expand_env(text: str) -> str:
    """``${NAME}`` replaced by the environment variable (MetricsUnavailable when it is unset)."""

    def value(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise MetricsUnavailable(f"environment variable {match.group(1)} (used in the source url) is not set")
        return found

    return _ENV_REF.sub(value, text)


class PrometheusSource:
    """``type: prometheus``: PromQL templates evaluated through Prometheus's HTTP API.

    Per canary revision, ``queries.requests``, ``queries.errors`` and (when given)
    ``queries.p99_ms`` are filled in and evaluated as instant queries at the window's end
    (``POST <url>/api/v1/query`` with ``time=<end>``). ``requests``/``errors`` take the sum of
    the answer's series, ``p99_ms`` the largest. A query answering no series makes the window
    inconclusive (never 0); so does an unreachable server or a failing query.
    """

    def __init__(self, source: "MetricsSource") -> None:
        problem = None
        if not source.url:
            problem = "prometheus needs url (e.g. http://prometheus.monitoring:9090)"
        elif source.queries is None:
            problem = "prometheus needs queries: {requests: PromQL, errors: PromQL, p99_ms: PromQL}"
        else:
            problem = _url_problem(source.url)
        if problem is None:
            assert source.queries is not None
            for key in ("requests", "errors", "p99_ms"):
                text = getattr(source.queries, key)
                found = template_problems(text) if text is not None else []
                if found:
                    problem = f"queries.{key}: {found[0]}"
                    break
        if problem is not None:
            raise SourceConfigError(problem, hint="see `Metrics sources` in docs/rollouts.md")
        self.url = source.url.rstrip("/")
        self.queries = source.queries
        self.timeout = source.timeout_seconds or DEFAULT_TIMEOUT_SECONDS

    def __call__(self, query: WindowQuery) -> dict[str, dict[str, Any]]:
        url = expand_env(self.url)
        out: dict[str, dict[str, Any]] = {}
        for rid in query.revision_ids:
            values = query.values(rid)
            label = values["revision_name"] if values["revision_name"] == rid else f"{values['revision_name']} ({rid})"
            numbers: dict[str, float] = {}
            for key in ("requests", "errors", "p99_ms"):
                template = getattr(self.queries, key)
                if template is None:
                    continue
                what = f"the {key} query for {label}"
                body = _post_query(url, render(template, values), query.end, min(self.timeout, query.timeout), what)
                numbers[key] = query_value(body, what=what, aggregate="max" if key == "p99_ms" else "sum")
            for key in ("requests", "errors"):
                if math.isnan(numbers[key]):
                    raise MetricsUnavailable(f"the {key} query for {label} returned NaN")
            p99 = numbers.get("p99_ms")
            if p99 is not None and math.isnan(p99):
                if numbers["requests"] >= 0.5:
                    raise MetricsUnavailable(f"the p99_ms query for {label} returned NaN although "
                                             f"{numbers['requests']:g} requests were counted")
                p99 = None
            out[rid] = {"requests": int(round(numbers["requests"])), "errors": int(round(numbers["errors"])),
                        "p99_ms": p99}
        return out


def _post_query(url: str, promql: str, at: datetime, timeout: float, what: str) -> Any:
    """One instant query (the only I/O of this module); errors are one line without credentials."""
    import urllib.error
    import urllib.request
    from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

    from . import __version__
    from .store.select import _scrub, redact_url

    parts = urlsplit(url)
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded",
               "User-Agent": f"greentic-core/{__version__}"}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    endpoint = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api/v1/query", parts.query, ""))
    data = urlencode({"query": promql, "time": f"{at.timestamp():.3f}", "timeout": f"{timeout:g}s"}).encode()
    shown = redact_url(url)
    request = urllib.request.Request(endpoint, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(8 << 20)
    except urllib.error.HTTPError as exc:
        raw = exc.read(1 << 20) if exc.fp is not None else b""
        try:
            return json.loads(raw)  # Prometheus explains a bad query in a JSON error body (400/422)
        except ValueError:
            raise MetricsUnavailable(_scrub(f"prometheus at {shown} answered {what} with HTTP {exc.code} "
                                            f"{exc.reason}", url)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetricsUnavailable(_scrub(_one_line(f"prometheus at {shown} is unreachable: {reason}"), url)) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise MetricsUnavailable(f"prometheus at {shown} answered {what} with something that is not JSON") from None
