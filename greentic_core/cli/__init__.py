"""The ``greentic-deployer`` command line (click).

Errors: every :class:`~greentic_core.errors.GreenticError` is printed as one line (plus a
``hint:`` line) or, with ``--json``, as ``{"ok": false, "kind": ..., "message": ...}``; no
traceback unless ``--debug``. Exit codes:

====  ==================================================
0     success
1     provider failure
2     usage or validation error (bad input, invalid document)
3     conflict (lifecycle or traffic rule refused the change)
4     not found (environment, deployment, revision, split)
5     store error (cannot read or write the environment)
6     provider timeout
7     plugin error (not installed, broken, invalid, version pin)
70    internal error (a bug: run with --debug and report it)
130   interrupted (Ctrl-C); the recorded state is unchanged
====  ==================================================
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import GreenticError
from .output import Output

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class CliContext:
    """Global options and lazily created services shared by every command. A plain class, not
    attrs: the CLI shell (``--help``, ``--version``, completing a command name) imports no attrs."""

    def __init__(self, *, home: Path | None = None, store_url: str | None = None, lock_ttl: float | None = None,
                 lock_timeout: float | None = None, json_mode: bool = False, debug: bool = False, actor: str = "",
                 no_plugin: tuple[str, ...] = (), out: Output | None = None) -> None:
        self.home = home
        self.store_url = store_url
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout
        self.json_mode = json_mode
        self.debug = debug
        self.actor = actor
        self.no_plugin = no_plugin
        self.out = out if out is not None else Output(json_mode=json_mode)
        self._registry: Any = None
        self._store: Any = None
        self._opened: list[Any] = []

    def registry(self):
        if self._registry is None:
            from ..registry import Registry

            self._registry = Registry(deny=self.no_plugin)
        return self._registry

    def store(self):
        """The store ``--store`` / ``GREENTIC_STORE`` names (default: files under ``--home``)."""
        if self._store is None:
            self._store = self.open_store(self.store_url)
        return self._store

    def open_store(self, url: str | None):
        """A store (closed with the command) with this command's actor, command line and lease options."""
        from ..store import DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_TTL, StoreOptions, open_store

        options = StoreOptions(
            actor=self.actor, command=command_line(),
            lock_ttl=self.lock_ttl if self.lock_ttl is not None else DEFAULT_LOCK_TTL,
            lock_timeout=self.lock_timeout if self.lock_timeout is not None else DEFAULT_LOCK_TIMEOUT,
            home=self.home, on_wait=self._show_wait)
        store = open_store(url, home=self.home, options=options)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()

    def _show_wait(self, lease, waited: float) -> None:
        from ..codec import utc_now

        self.out.info(f"waiting for the lease of environment {lease.env_id}, held by {lease.describe(utc_now())} "
                      f"(waited {waited:.0f}s)")


def command_line() -> str:
    """The command line as given (also when the CLI is run as a library, e.g. by CliRunner),
    with passwords in URLs replaced by ``***``: it goes into the audit log and lease records."""
    import shlex

    from ..store.select import redact_url

    ctx = click.get_current_context(silent=True)
    argv = ctx.find_root().meta.get("greentic.argv") if ctx is not None else None
    if argv is None:
        argv = sys.argv[1:]
    shown = [redact_url(str(a)) if "://" in str(a) else str(a) for a in argv]
    return "greentic-deployer " + " ".join(shlex.quote(a) for a in shown)


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "unknown")


#: Global options also accepted after a command name (``plugins list --json``), as gh, kubectl
#: and docker take them. Same meaning wherever they stand; given twice, the later one wins.
GLOBAL_AFTER = ("home", "store_url", "lock_ttl", "lock_timeout", "json_mode", "debug", "actor")


def _apply_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Callback of a global option given after the command: update the shared CliContext
    (created by the root group before any subcommand's arguments are parsed)."""
    if value is None or value is False:
        return
    if ctx.resilient_parsing:  # completing: no CliContext; the completion reads them from here
        ctx.meta.setdefault("greentic.global", {})[param.name] = value
        return
    obj = ctx.find_object(CliContext)
    if obj is None:
        return
    if param.name == "json_mode":
        obj.json_mode = True
        obj.out = Output(json_mode=True)
    elif param.name == "store_url":
        obj.store_url = value or None
    else:
        setattr(obj, param.name, value)


def _global_options_after() -> list[click.Option]:
    """Hidden copies of the root's global options (no environment variable: the root already
    read it), so the command's own help stays short; ``--help`` of the root lists them."""
    copies = []
    for param in cli.params:
        if isinstance(param, click.Option) and param.name in GLOBAL_AFTER:
            copies.append(click.Option([*param.opts, param.name], type=None if param.is_flag else param.type,
                                       is_flag=param.is_flag, default=None, metavar=param.metavar, hidden=True,
                                       expose_value=False, callback=_apply_global))
    return copies


def _json_in(args: list[str]) -> bool:
    """Whether ``--json`` is among the options (anywhere before a ``--``)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


class GreenticCommand(click.Command):
    """A command whose usage errors always carry their context, so click prints them in the
    documented format (``Usage:`` line, hint, ``Error:`` line). click's option parser raises some
    (``--help=``, ``--flag=value``) without one, and those printed a bare ``Error:`` line.
    It also takes the global options after its name (see :data:`GLOBAL_AFTER`)."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*super().get_params(ctx), *_global_options_after()]

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text("Global options (--json, --home, --store, --lock-ttl, --lock-timeout, --debug, "
                             "--actor) may also follow the command; see `greentic-deployer --help`.")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        if ctx.resilient_parsing and args and _takes_value(self, ctx, args[-1]):
            # Completing that option's value (`revision list dev --deployment <TAB>`): click's
            # parser would stop at it before reading ENV, which the completion needs.
            args = args[:-1]
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            _json_after_failed_parse(ctx, given)
            raise


def _takes_value(command: click.Command, ctx: click.Context, word: str) -> bool:
    return any(isinstance(p, click.Option) and not p.is_flag and word in p.opts for p in command.get_params(ctx))


def _json_after_failed_parse(ctx: click.Context, given: list[str]) -> None:
    """A usage error raised before ``--json`` (given after the command) was parsed: still report it
    as JSON."""
    obj = ctx.find_object(CliContext)
    if obj is not None and not obj.json_mode and _json_in(given):
        obj.json_mode = True
        obj.out = Output(json_mode=True)


class GreenticGroup(click.Group):
    """Turns errors into one line (or one JSON document) and a documented exit code."""

    command_class = GreenticCommand
    group_class = type  # subgroups (`env`, `revision`, ...) are GreenticGroups too

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        return params if self is cli else [*params, *_global_options_after()]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # click's parser consumes ``args``
        if ctx.parent is None:  # the command line as given, for the audit log
            ctx.meta.setdefault("greentic.argv", given)
        try:
            if ctx.parent is None and any("\x00" in arg for arg in given):
                # never valid in an id or a path (and no OS passes one in argv; a library caller can)
                raise click.UsageError("an argument contains a NUL character", ctx=ctx)
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            if isinstance(exc, click.UsageError) and exc.ctx is None:
                exc.ctx = ctx
            if ctx.parent is not None:
                _json_after_failed_parse(ctx, given)
                raise
            # A bad global option fails here, before `invoke`: with --json, still one JSON document.
            if not _json_in(given):
                raise
            ctx.params["json_mode"] = True
            message = exc.format_message()
            _report(ctx, "usage", message, "see --help",
                    {"kind": "usage", "error": type(exc).__name__, "message": message}, None)
            ctx.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GreenticError as exc:
            _report(ctx, exc.kind, exc.message, exc.hint, exc.to_json(), exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _report(ctx, "interrupted", "interrupted; the recorded state is unchanged", None,
                    {"kind": "interrupted", "message": "interrupted"}, None)
            ctx.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:  # usage errors: JSON too when --json was given
            if not _json_requested(ctx):
                raise
            _json_after_failed_parse(ctx, ctx.meta.get("greentic.argv") or [])
            message = exc.format_message()
            _report(ctx, "usage", message, "see --help",
                    {"kind": "usage", "error": type(exc).__name__, "message": message}, None)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: say so in one line, traceback only with --debug
            message = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]
            _report(ctx, "internal", message, "run again with --debug and report the traceback",
                    {"kind": "internal", "message": message}, exc)
            ctx.exit(EXIT_INTERNAL)

    # Command modules are imported when a command is looked up, not when the CLI is imported:
    # `plugins list` then pays only for the plugins commands (not the codec, the validator or
    # the operator). `--help` and unknown names load everything.

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self is cli:
            _load_commands(_COMMAND_HOME.get(cmd_name))
        command = super().get_command(ctx, cmd_name)
        if command is None and self is cli and not _loaded.get("all"):
            _load_commands(None)
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        if self is cli:
            _load_commands(None)
        return super().list_commands(ctx)


def _json_requested(ctx: click.Context) -> bool:
    """``--json`` given, before or after the command (an error raised before click parsed the
    options after it, e.g. an unknown command name, still sees it in the command line)."""
    obj = ctx.find_object(CliContext)
    root = ctx.find_root()
    if (obj.json_mode if obj is not None else root.params.get("json_mode")):
        return True
    return _json_in(root.meta.get("greentic.argv") or [])


def _one_line(text: str | None) -> str | None:
    """An error message or hint as one line, whatever it quotes (a path or id with a newline,
    click's multi-line usage messages): the lines joined by single spaces."""
    if text is None or ("\n" not in text and "\r" not in text):
        return text
    return " ".join(part.strip() for part in text.replace("\r", "\n").split("\n") if part.strip())


def _report(ctx: click.Context, kind: str, message: str, hint: str | None, doc: dict[str, Any],
            exc: BaseException | None) -> None:
    obj = ctx.find_object(CliContext) or CliContext(out=Output(json_mode=_json_requested(ctx)))
    if obj.debug and exc is not None:
        import traceback  # only with --debug

        traceback.print_exception(exc, file=sys.stderr)
    message, hint = _one_line(message) or "", _one_line(hint)
    doc = {**doc, "message": message, **({"hint": hint} if doc.get("hint") is not None else {})}
    obj.out.error(kind, message, hint, doc)


@click.group(cls=GreenticGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="--json, --home, --store, --lock-ttl, --lock-timeout, --debug and --actor may also follow "
                    "the command (greentic-deployer revision list dev --json). Shell completion: "
                    "greentic-deployer completion bash|zsh|fish.")
@click.version_option(__version__, prog_name="greentic-deployer")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="GREENTIC_HOME",
              help="Store root (default ~/.greentic; environments live in HOME/environments).")
@click.option("--store", "store_url", metavar="URL", envvar="GREENTIC_STORE",
              help="Where environments live: file:///PATH, postgresql://..., s3://BUCKET/PREFIX "
                   "(default: files under --home).")
@click.option("--lock-ttl", type=click.FloatRange(min=1.0, max=86400.0), metavar="S",
              help="Seconds an environment's lease lives unless renewed (default 30).")
@click.option("--lock-timeout", type=click.FloatRange(min=0.0, max=86400.0), metavar="S",
              help="Seconds to wait for a lease another command holds (default 60).")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document (result or error).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("--actor", default=None, help="Who is acting, for the audit log (default: the OS user).")
@click.option("--no-plugin", multiple=True, metavar="NAME", help="Do not load this deployer plugin.")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, store_url: str | None, lock_ttl: float | None,
        lock_timeout: float | None, json_mode: bool, debug: bool, actor: str | None,
        no_plugin: tuple[str, ...]) -> None:
    """Stage, warm, drain and archive revisions and move traffic between them in basis points."""
    ctx.obj = CliContext(home=home, store_url=store_url or None, lock_ttl=lock_ttl, lock_timeout=lock_timeout,
                         json_mode=json_mode, debug=debug, actor=actor or _default_actor(),
                         no_plugin=no_plugin, out=Output(json_mode=json_mode))
    ctx.call_on_close(ctx.obj.close)


#: Built-in command modules, in registration order (operator_commands extends spec's `env`).
_COMMAND_MODULES = ("spec_commands", "plugins_commands", "scaffold_commands", "install_commands", "operator_commands",
                    "rollout_commands", "store_commands", "agent_commands", "completion")
#: Top-level commands whose module is known, so only that module is imported to run them.
#: (scaffold_commands and install_commands add `plugins new|install|doctor` to the plugins group.)
_OPERATOR = ("spec_commands", "operator_commands")  # operator_commands extends spec's `env` group
_COMMAND_HOME = {"plugins": ("plugins_commands", "scaffold_commands", "install_commands"),
                 "plan": ("rollout_commands",), "apply": ("rollout_commands",), "rollout": ("rollout_commands",),
                 "store": ("spec_commands", "store_commands"), "env": (*_OPERATOR, "store_commands"),
                 "deployment": _OPERATOR, "revision": _OPERATOR, "traffic": _OPERATOR,
                 "runtime-config": ("spec_commands",), "schema": ("spec_commands",), "completion": ("completion",),
                 "agent": ("agent_commands",)}
_loaded: dict[str, bool] = {}


def _load_commands(modules: tuple[str, ...] | None) -> None:
    """Register the given command modules (``None``: all of them, then plugin commands)."""
    import importlib

    for name in modules or _COMMAND_MODULES:
        if not _loaded.get(name):
            _loaded[name] = True
            importlib.import_module(f"{__name__}.{name}").register(cli)
    if modules is None and not _loaded.get("all"):
        _loaded["all"] = True
        _register_plugin_commands()


def _register_commands() -> None:
    """Register every command now instead of on first lookup (e.g. before forking workers)."""
    _load_commands(None)


def _register_plugin_commands() -> None:
    """Commands plugins contribute through the ``greentic.commands`` entry-point group.

    Only names are read at start-up (from the cached discovery); the module is imported when
    the command runs, so a broken plugin cannot break the CLI, and ``--help`` stays fast.
    """
    from ..discovery import discover

    try:
        entry_points = discover("greentic.commands")
    except Exception:
        return
    for ep in entry_points:
        if ep.name in cli.commands:
            continue
        cli.add_command(_lazy_command(ep))


def _lazy_command(ep) -> click.Command:
    def load() -> click.Command:
        from importlib import metadata

        try:
            command = metadata.EntryPoint(name=ep.name, value=ep.value, group="greentic.commands").load()
        except Exception as exc:
            raise GreenticError(f"command {ep.name} from {ep.distribution} {ep.version} cannot be loaded: {exc}",
                                hint=f"reinstall it: pip install --force-reinstall {ep.distribution}") from exc
        return command

    @click.command(ep.name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                              "help_option_names": []},
                   add_help_option=False, help=f"(from {ep.distribution}) run `greentic-deployer {ep.name} --help`")
    @click.pass_context
    def run(ctx: click.Context) -> None:
        command = load()
        sub = command.make_context(ep.name, list(ctx.args), parent=ctx.parent)
        with sub:
            command.invoke(sub)

    return run


def main() -> None:
    cli(prog_name="greentic-deployer")
