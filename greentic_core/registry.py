"""Discovery, loading and validation of installed deployer plugins.

Entry-point group ``greentic.deployers``; the entry-point name is the deployer's descriptor
path and its value the (small) module carrying the hook implementations.

* **Discovery** reads distribution metadata only and is cached on disk, keyed on the state of
  ``sys.path`` (each entry and its mtime), in a cache directory outside ``sys.path`` (writing
  inside it would change the key it depends on).
* **Loading** imports one entry point at a time; an import error, a syntax error or an
  exception at import marks that plugin *broken* (with its distribution, version and a hint)
  and the others load. Disabled plugins are never imported.
* **Validation**: descriptor present and well formed, its path equal to the entry-point name;
  every required verb implemented; argument names within the spec (pluggy); no hook name that
  matches no spec (typos are reported); ``greentic-core`` within ``requires_core``; two
  distributions claiming one name are both reported, naming each other.
"""

from __future__ import annotations

import os
import re
import sys
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import attrs
import pluggy

from . import __version__ as CORE_VERSION
from . import hookspecs
from .discovery import (  # noqa: F401  (discovery's names, as they were here before the split)
    CACHE_ENV,
    CACHE_FORMAT,
    GROUP,
    EntryPointInfo,
    default_cache_dir,
    discover,
    scan_entry_points,
    sys_path_fingerprint,
)
from .errors import PluginNotFound, PluginUnusable, VersionPinMismatch
from .ids import PackDescriptor
from .markers import PROJECT_NAME
from .outcomes import OPTIONAL_HOOKS, REQUIRED_HOOKS, DeployerDescriptor

if TYPE_CHECKING:
    from .contract import BoundDeployer

ALLOW_ENV = "GREENTIC_DEPLOYERS"
DENY_ENV = "GREENTIC_DISABLE_DEPLOYERS"

#: Top-level modules whose import at plugin-load time is reported (they slow every command).
HEAVY_MODULES = ("boto3", "botocore", "kubernetes", "lightkube", "google.cloud", "azure")

SPEC_NAMES = frozenset(REQUIRED_HOOKS + OPTIONAL_HOOKS)

OK, BROKEN, INVALID, DISABLED, CONFLICT, INCOMPATIBLE = "ok", "broken", "invalid", "disabled", "conflict", "incompatible"


@attrs.define
class PluginRecord:
    """What the registry knows about one installed deployer plugin."""

    name: str
    value: str
    distribution: str | None = None
    dist_version: str | None = None
    status: str = OK
    reason: str | None = None
    hint: str | None = None
    descriptor: DeployerDescriptor | None = None
    plugin: Any = None
    hooks: tuple[str, ...] = ()
    warnings: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def has_sandbox(self) -> bool:
        return "greentic_conformance_sandbox" in self.hooks

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name, "distribution": self.distribution, "version": self.dist_version,
            "status": self.status, "reason": self.reason, "hint": self.hint,
            "conformance_sandbox": self.has_sandbox, "warnings": list(self.warnings),
            "hooks": list(self.hooks),
        }
        if self.descriptor is not None:
            d = self.descriptor
            doc["descriptor"] = {
                "path": d.path, "version": d.version, "requires_core": d.requires_core, "summary": d.summary,
                "capabilities": {
                    "weight_resolution_bps": d.capabilities.weight_resolution_bps,
                    "drain_slack_seconds": d.capabilities.drain_slack_seconds,
                    "observes_weights": d.capabilities.observes_weights,
                    "max_split_entries": d.capabilities.max_split_entries,
                    "host_local_state": d.capabilities.host_local_state,
                    **dict(d.capabilities.extra),
                },
                "answers_schema": dict(d.answers_schema),
                "waivers": dict(d.waivers),
            }
        return doc


# --------------------------------------------------------------------------- discovery


def _split_names(value: str | None) -> set[str]:
    return {item.strip() for item in (value or "").split(",") if item.strip()}


# --------------------------------------------------------------------------- the registry


def _release(version: str) -> tuple[int, int, int]:
    """MAJOR.MINOR.PATCH of a SemVer string (checked with semver.org's expression)."""
    from .ids import _SEMVER

    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(f"{version!r} is not valid SemVer")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def caret_compatible(pinned: str, installed: str) -> bool:
    """``^pinned`` semantics: same major (same minor while major is 0) and not older.

    Only the release numbers take part: a pre-release of the pinned release is compatible with
    it, as a pin names a release line. (The semver library would cost a command ~4 ms to import
    for this comparison; ``tests/test_registry.py`` checks the two agree.)"""
    p, i = _release(pinned), _release(installed)
    if i < p or p[0] != i[0]:
        return False
    return p[0] != 0 or p[1] == i[1]


# ``>=0.1,<0.2``: what every shipped plugin declares. A specifier made only of these clauses
# over plain release numbers is decided here; anything else goes to ``packaging`` (~6 ms to
# import on every command that binds a deployer).
_SIMPLE_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|<|>)\s*(\d{1,9}(?:\.\d{1,9}){0,3})\s*", re.ASCII)
_PLAIN_RELEASE = re.compile(r"\d{1,9}(?:\.\d{1,9}){0,3}", re.ASCII)


def _simple_contains(specifier: str, version: str) -> bool | None:
    """Whether ``version`` satisfies ``specifier`` under PEP 440, when both are simple enough to
    decide without ``packaging`` (comparison clauses over plain release numbers, a plain
    release); ``None`` when ``packaging`` must decide."""
    if not isinstance(specifier, str) or not _PLAIN_RELEASE.fullmatch(version) or not specifier.strip():
        return None
    have = tuple(int(part) for part in version.split("."))
    clauses = [_SIMPLE_CLAUSE.fullmatch(clause) for clause in specifier.split(",")]
    if None in clauses:  # every clause is read before any is decided: one bad clause is an error
        return None
    for match in clauses:
        op, bound = match.group(1), tuple(int(part) for part in match.group(2).split("."))
        width = max(len(have), len(bound))  # PEP 440 pads release segments with zeros
        left, right = have + (0,) * (width - len(have)), bound + (0,) * (width - len(bound))
        if not {">=": left >= right, "<=": left <= right, "==": left == right, "!=": left != right,
                "<": left < right, ">": left > right}[op]:
            return False
    return True


def core_requirement_met(specifier: str, version: str) -> bool:
    """``version`` within the PEP 440 ``specifier`` (pre-releases included); ValueError if the
    specifier is not PEP 440."""
    decided = _simple_contains(specifier, version)
    if decided is not None:
        return decided
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    if not isinstance(specifier, str):
        raise ValueError(f"a specifier is a string, not {type(specifier).__name__}")
    try:
        spec_set = SpecifierSet(specifier)
    except InvalidSpecifier as exc:
        raise ValueError(str(exc)) from None
    return spec_set.contains(Version(version), prereleases=True)


class Registry:
    """The installed deployer plugins, loaded lazily and validated one by one."""

    def __init__(self, *, allow: Iterable[str] | None = None, deny: Iterable[str] = (),
                 use_cache: bool = True, cache_dir: Path | None = None,
                 entry_points: list[EntryPointInfo] | None = None) -> None:
        env_allow = _split_names(os.environ.get(ALLOW_ENV))
        self.allow: set[str] | None = set(allow) if allow is not None else (env_allow or None)
        self.deny: set[str] = set(deny) | _split_names(os.environ.get(DENY_ENV))
        self._entry_points = entry_points
        self._use_cache = use_cache
        self._cache_dir = cache_dir
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._records: dict[str, PluginRecord] = {}
        self._callers: dict[str, dict[str, Any]] = {}
        self._extensions: list[Any] = []

    # -- discovery ------------------------------------------------------------------------

    def entry_points(self) -> list[EntryPointInfo]:
        if self._entry_points is None:
            self._entry_points = discover(GROUP, use_cache=self._use_cache, cache_dir=self._cache_dir)
        return self._entry_points

    def names(self) -> list[str]:
        return sorted({ep.name for ep in self.entry_points()})

    def enabled(self, name: str) -> bool:
        return name not in self.deny and (self.allow is None or name in self.allow)

    # -- loading --------------------------------------------------------------------------

    def records(self) -> list[PluginRecord]:
        """Load (if needed) and return every discovered plugin, sorted by name."""
        return [self.record(name) for name in self.names()]

    def record(self, name: str) -> PluginRecord:
        if name in self._records:
            return self._records[name]
        claims = [ep for ep in self.entry_points() if ep.name == name]
        if not claims:
            raise PluginNotFound(
                f"no deployer plugin named {name!r} is installed",
                hint=_install_hint(name, self.names()),
                name=name,
            )
        first = claims[0]
        record = PluginRecord(name=name, value=first.value, distribution=first.distribution,
                              dist_version=first.version)
        if len(claims) > 1:
            owners = ", ".join(f"{ep.distribution} {ep.version}" for ep in claims)
            record.status, record.reason = CONFLICT, f"{len(claims)} distributions claim the name {name!r}: {owners}"
            record.hint = "uninstall all but one of them"
        elif not self.enabled(name):
            record.status = DISABLED
            record.reason = "disabled by " + (
                f"{DENY_ENV} or --no-plugin" if name in self.deny else f"{ALLOW_ENV} (not in the allow-list)"
            )
        else:
            self._load(record)
        self._records[name] = record
        return record

    def _load(self, record: PluginRecord) -> None:
        before = set(sys.modules)
        try:
            plugin = load_object(record.value)
        except (Exception, SystemExit) as exc:  # third-party import code: report, never crash
            record.status = BROKEN
            record.reason = f"import of {record.value} failed: {type(exc).__name__}: {_one_line(exc)}"
            record.hint = f"reinstall or uninstall it: pip install --force-reinstall {record.distribution}"
            return
        new_modules = set(sys.modules) - before
        heavy = [m for m in HEAVY_MODULES if m in new_modules]
        if heavy:
            record.warnings.append(
                f"imports {', '.join(heavy)} when loaded; import SDKs inside the hooks to keep the CLI fast"
            )
        record.plugin = plugin
        try:
            self.pm.register(plugin, name=record.name)
        except pluggy.PluginValidationError as exc:
            # pluggy's first line only names the hook; the problem is on the last line
            record.status, record.reason = INVALID, "; ".join(
                line.strip() for line in str(exc).splitlines() if line.strip()
            )
            if self.pm.is_registered(plugin):  # register() may have added some impls already
                self.pm.unregister(plugin)
            record.hint = "fix the hook signature: implementations may only use argument names of the spec"
            return
        except ValueError as exc:
            record.status, record.reason = INVALID, f"cannot register: {_one_line(exc)}"
            return
        problem = self._validate(record, plugin)
        if problem is not None:
            record.status, record.reason, record.hint = problem
            self.pm.unregister(plugin)
            return
        self._callers[record.name] = {}
        self._refresh_callers()

    def _refresh_callers(self) -> None:
        """Point every provider's hook callers at that provider (plus extensions) only.

        Recomputed after each registration: pluggy fixes a subset caller's exclusions when it
        is created (and returns the unfiltered caller when there is nothing to exclude yet), so
        a provider loaded later would otherwise also answer an earlier provider's calls.
        The dicts are updated in place because bound deployers hold them.
        """
        registered = [p for _, p in self.pm.list_name_plugin() if p is not None]
        for name, callers in self._callers.items():
            own = self.pm.get_plugin(name)
            others = [p for p in registered if p is not own and p not in self._extensions]
            for hook in SPEC_NAMES:
                callers[hook] = self.pm.subset_hook_caller(hook, remove_plugins=others)

    def _validate(self, record: PluginRecord, plugin: Any) -> tuple[str, str, str | None] | None:
        callers = self.pm.get_hookcallers(plugin) or []
        names = {caller.name for caller in callers}
        record.hooks = tuple(sorted(names & SPEC_NAMES))
        unknown = sorted(caller.name for caller in callers if caller.spec is None)
        unmarked = sorted(
            attr for attr in dir(plugin)
            if attr.startswith("greentic_") and callable(getattr(plugin, attr, None)) and attr not in names
        )
        if unknown or unmarked:
            bad = (unknown or unmarked)[0]
            import difflib

            close = difflib.get_close_matches(bad, sorted(SPEC_NAMES), n=1)
            what = "matches no hook spec" if unknown else "is not marked with @hookimpl"
            return INVALID, f"{bad} {what}" + (f" (did you mean {close[0]}?)" if close and close[0] != bad else ""), \
                "rename it to a hook of greentic_core.hookspecs and decorate it with @greentic_core.hookimpl"
        missing = [hook for hook in REQUIRED_HOOKS if hook not in names]
        if missing:
            return INVALID, f"does not implement {', '.join(missing)}", "every deployer verb must be implemented"
        try:
            descriptor = self.pm.subset_hook_caller(
                "greentic_deployer_descriptor",
                remove_plugins=[p for n, p in self.pm.list_name_plugin() if n != record.name and p is not None],
            )()
        except Exception as exc:
            return BROKEN, f"greentic_deployer_descriptor raised {type(exc).__name__}: {_one_line(exc)}", None
        if not isinstance(descriptor, DeployerDescriptor):
            return INVALID, f"greentic_deployer_descriptor returned {type(descriptor).__name__}, not DeployerDescriptor", None
        record.descriptor = descriptor
        if descriptor.path != record.name:
            return INVALID, f"descriptor path {descriptor.path!r} differs from entry-point name {record.name!r}", \
                "make the entry-point name equal to the descriptor path"
        try:
            PackDescriptor.parse(f"{descriptor.path}@{descriptor.version}")
        except Exception as exc:
            return INVALID, f"descriptor is malformed: {_one_line(exc)}", None
        try:
            core_ok = core_requirement_met(descriptor.requires_core, CORE_VERSION)
        except (ValueError, TypeError):
            return INVALID, f"requires_core {descriptor.requires_core!r} is not a PEP 440 specifier", None
        if not core_ok:
            return INCOMPATIBLE, f"requires greentic-core {descriptor.requires_core}, running {CORE_VERSION}", \
                f"install a version of {record.distribution} that supports greentic-core {CORE_VERSION}"
        if not isinstance(descriptor.answers_schema, dict):
            return INVALID, "answers_schema must be a JSON Schema object", None
        return None

    # -- extensions -----------------------------------------------------------------------

    def register_extension(self, plugin: Any, name: str) -> None:
        """Register a cross-cutting plugin (audit, tracing). It may only *wrap* verb calls."""
        self.pm.register(plugin, name=name)
        for impl_caller in self.pm.get_hookcallers(plugin) or []:
            for impl in impl_caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    self.pm.unregister(plugin)
                    raise PluginUnusable(
                        f"extension {name} implements {impl_caller.name} without wrapper=True; "
                        "extensions may wrap verbs, never replace the provider"
                    )
        self._extensions.append(plugin)
        self._refresh_callers()

    # -- resolution -----------------------------------------------------------------------

    def resolve(self, kind: str | PackDescriptor) -> PluginRecord:
        """The usable plugin for a ``path@version`` binding, or a one-line error."""
        descriptor = kind if isinstance(kind, PackDescriptor) else PackDescriptor.parse(str(kind))
        record = self.record(descriptor.path)
        if not record.ok:
            raise PluginUnusable(
                f"deployer plugin {record.name} is {record.status}: {record.reason}",
                hint=record.hint or f"see `greentic-deployer plugins show {record.name}`",
                name=record.name, status=record.status,
            )
        assert record.descriptor is not None
        if not caret_compatible(descriptor.version, record.descriptor.version):
            raise VersionPinMismatch(
                f"environment pins {descriptor.path}@{descriptor.version} but {record.distribution} "
                f"{record.dist_version} provides version {record.descriptor.version}",
                hint=f"install a compatible version (^{descriptor.version}) or re-pin the environment",
                pinned=descriptor.version, installed=record.descriptor.version,
            )
        return record

    def bind(self, kind: str | PackDescriptor, answers: dict[str, Any] | None, state_dir: Path | None = None) -> BoundDeployer:
        record = self.resolve(kind)
        from .contract import BoundDeployer  # here: listing plugins needs neither it nor the spec

        return BoundDeployer(record, self._callers[record.name], answers or {}, state_dir)

    def sandbox(self, name: str, workdir: Path):
        record = self.record(name)
        if not record.ok:
            raise PluginUnusable(f"deployer plugin {name} is {record.status}: {record.reason}", hint=record.hint)
        from .contract import conformance_sandbox

        return conformance_sandbox(record, self._callers[name]["greentic_conformance_sandbox"], workdir)


def load_object(value: str) -> Any:
    """Import what an entry-point value names (``module`` or ``module:attr.path``).

    The same rule as ``importlib.metadata.EntryPoint.load``, without importing
    importlib.metadata on the (cached) fast path.
    """
    module_name, _, attr_path = value.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for part in filter(None, attr_path.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _install_hint(name: str, installed: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, installed, n=1)
    if close:
        return f"did you mean {close[0]}? (`greentic-deployer plugins list` shows what is installed)"
    suffix = name.rsplit(".", 1)[-1]
    return f"install it, e.g. `pip install greentic-deployer-{suffix}`, then check `greentic-deployer plugins list`"
