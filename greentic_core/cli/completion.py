"""Shell completion through click's ``shell_complete`` machinery: ``completion SHELL`` prints the
script, and these callbacks name what exists (environments, deployments, revisions, plugins).

A completion never fails the shell: any error (no store, an unreadable environment) completes
nothing. The store is the one ``--home`` / ``--store`` (or their environment variables) name, as
for the command being completed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported when completing, not by every command that offers a completion
    from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_GREENTIC_DEPLOYER_COMPLETE"


def completion_script(cli: click.Command, shell: str, prog_name: str = "greentic-deployer") -> str:
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # the Choice of the command already refuses it; a library caller may not
        raise click.BadParameter(f"no completion for shell {shell!r} (one of {', '.join(SHELLS)})")
    return cls(cli, {}, prog_name, COMPLETE_VAR).source()


def _store(ctx: click.Context):
    from . import CliContext

    given = {**ctx.find_root().params, **ctx.meta.get("greentic.global", {})}  # before or after the command
    obj = CliContext(home=given.get("home"), store_url=given.get("store_url") or None, json_mode=True)
    return obj, obj.store()


def _environment(ctx: click.Context):
    env_id = ctx.params.get("env_id")
    if not env_id:
        return None
    obj, store = _store(ctx)
    try:
        return store.load(env_id)
    finally:
        obj.close()


def _matching(items: list[tuple[str, str]], incomplete: str, *, fold: bool = False) -> list[CompletionItem]:
    """``(value, help)`` pairs whose value starts with ``incomplete`` (case-insensitive ids)."""
    from click.shell_completion import CompletionItem

    want = incomplete.upper() if fold else incomplete
    seen: set[str] = set()
    out = []
    for value, help_text in items:
        if value in seen or not (value.upper() if fold else value).startswith(want):
            continue
        seen.add(value)
        out.append(CompletionItem(value, help=help_text or None))
    return out


def _quiet(func):
    """Completion callbacks complete nothing rather than print an error into the shell."""
    def wrapper(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return func(ctx, param, incomplete)
        except Exception:
            return []
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@_quiet
def complete_env(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Stored environment ids."""
    obj, store = _store(ctx)
    try:
        return _matching([(env_id, "") for env_id in store.list()], incomplete)
    finally:
        obj.close()


@_quiet
def complete_deployment(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Bundle ids (what people type) and deployment ids of the environment named before."""
    env = _environment(ctx)
    if env is None:
        return []
    items = [(b.bundle_id, f"deployment {b.deployment_id}") for b in env.bundles]
    items += [(b.deployment_id, f"bundle {b.bundle_id}") for b in env.bundles]
    return _matching(items, incomplete, fold=True) if incomplete[:1].isdigit() else _matching(items, incomplete)


@_quiet
def complete_revision(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Revision ids (a typed prefix, in either case, completes to the id) and ``latest``; only
    the deployment's when ``--deployment`` was given."""
    env = _environment(ctx)
    if env is None:
        return []
    deployment = ctx.params.get("deployment_ref")
    if deployment:
        from ..references import resolve_deployment

        deployment = resolve_deployment(env, deployment)
    revisions = [r for r in env.revisions if deployment is None or r.deployment_id == deployment]
    items = [(r.revision_id, f"{r.bundle_id} #{r.sequence} {r.lifecycle.value}")
             for r in sorted(revisions, key=lambda r: (r.bundle_id, r.sequence))]
    return _matching(items, incomplete, fold=True) + _matching([("latest", "the newest revision")], incomplete)


@_quiet
def complete_plugin(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Installed deployer plugins (names from the cached discovery; nothing is imported)."""
    from ..discovery import GROUP, discover

    return _matching([(ep.name, f"{ep.distribution} {ep.version}") for ep in discover(GROUP)], incomplete)


def complete_desired_file(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Desired-state files: the shell's own file completion (directories to walk into, then files)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def register(cli: click.Group) -> None:
    @cli.command("completion")
    @click.argument("shell", type=click.Choice(SHELLS))
    def completion(shell: str) -> None:
        """Print the shell completion script for SHELL (see docs/cli.md for where to put it)."""
        click.echo(completion_script(cli, shell), nl=False)
