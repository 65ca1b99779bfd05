"""``greentic-deployer ui``: serve the dashboard (registered through ``greentic.commands``)."""

from __future__ import annotations

import asyncio
import sys
import webbrowser
from typing import Any

import click

DEFAULT_LISTEN = "127.0.0.1:8765"
TLS_WARNING = ("warning: the dashboard speaks plain HTTP: on {host} the token and the session cookie cross "
               "the network in clear text; put a TLS terminator (nginx, caddy) in front of it, or keep it on "
               "127.0.0.1 and use an SSH tunnel")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{value!r} must be HOST:PORT (e.g. 127.0.0.1:8765)", param_hint="--listen")
    return host, int(port)


def _context() -> Any:
    from greentic_core.cli import CliContext

    ctx = click.get_current_context()
    obj = ctx.find_object(CliContext)
    if obj is None:  # run on its own (tests, python -m): the CLI's defaults
        from greentic_core.cli import _default_actor

        obj = CliContext(actor=_default_actor())
    return obj


@click.command("ui", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Where to serve the dashboard (port 0: any free port).")
@click.option("--allow-actions", is_flag=True,
              help="Allow actions (traffic set, rollback, rollout pause/resume/abort/promote, drain, archive).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in the default browser.")
@click.option("--token", envvar="GREENTIC_UI_TOKEN", metavar="TOKEN",
              help="The access token (default: a random one, printed). Required off loopback.")
def ui(listen: str, allow_actions: bool, open_browser: bool, token: str | None) -> None:
    """Serve the web dashboard: environments, splits, revisions, rollouts and history, live.

    Reads through the store (--store / --home) and the installed deployer plugins, as the CLI
    does. Open the printed URL: it carries a token, kept afterwards in a session cookie.
    Actions are recorded in the audit log as `ui:<you>`.
    """
    from .security import is_loopback, new_token

    host, port = parse_listen(listen)
    loopback = is_loopback(host)
    if not loopback and not token:
        raise click.UsageError(f"listening on {host} (not a loopback address) needs an explicit --token "
                               "(or GREENTIC_UI_TOKEN)")
    if token is not None and len(token) < 16:
        raise click.UsageError("--token must be at least 16 characters")
    if not loopback:
        click.echo(TLS_WARNING.format(host=host), err=True)
    obj = _context()
    try:
        asyncio.run(_serve(obj, host, port, token or new_token(), allow_actions=allow_actions, loopback=loopback,
                           open_browser=open_browser))
    except KeyboardInterrupt:
        pass


async def _serve(obj: Any, host: str, port: int, token: str, *, allow_actions: bool, loopback: bool,
                 open_browser: bool) -> None:
    from aiohttp import web

    from greentic_core.store import DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_TTL, StoreOptions, open_store

    from .app import make_app
    from .backend import Backend

    actor = f"ui:{obj.actor}"

    def opener():
        options = StoreOptions(
            actor=actor, command="greentic-deployer ui",
            lock_ttl=obj.lock_ttl if obj.lock_ttl is not None else DEFAULT_LOCK_TTL,
            lock_timeout=obj.lock_timeout if obj.lock_timeout is not None else DEFAULT_LOCK_TIMEOUT,
            home=obj.home)
        return open_store(obj.store_url, home=obj.home, options=options)

    backend = Backend(opener, obj.registry(), actor=actor, allow_actions=allow_actions)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, backend.registry.records)  # load the plugins before the first page
    app = make_app(backend, token=token, allow_actions=allow_actions, loopback=loopback)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/?token={token}"
    store_url = await loop.run_in_executor(None, lambda: backend.store_url)
    click.echo(f"greentic-deployer ui: the store {store_url}")
    click.echo(f"  open {url}")
    click.echo(f"  actions: {'on (--allow-actions), recorded as ' + actor if allow_actions else 'off (read-only)'}")
    sys.stdout.flush()
    if open_browser:
        webbrowser.open(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        backend.close()
