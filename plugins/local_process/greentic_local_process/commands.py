"""CLI commands this plugin adds to ``greentic-deployer`` (entry-point group ``greentic.commands``)."""

from __future__ import annotations

import json
import subprocess
import sys

import click


@click.command("demo")
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run the local-process demo: two revisions, a 90/10 -> 50/50 -> 0/100 shift and a drain."""
    from rich.console import Console

    from .demo import run_demo

    json_mode = bool(getattr(ctx.find_root().obj, "json_mode", False))
    console = Console(stderr=json_mode)
    summary = run_demo(console, say=lambda m: console.print(f"• {m}", markup=False, highlight=False))
    if json_mode:
        click.echo(json.dumps(summary, indent=2))
    elif summary["failures"]:
        console.print(f"FAILED: {summary['failures']} request(s) failed: {summary['failure_examples']}")
    else:
        console.print(f"done: {summary['requests_sent']} requests, 0 failed", markup=False)
    if summary["failures"]:
        sys.exit(1)


class _RouterGroup(click.Group):
    """``router ENV`` (the foreground router, as before) next to ``router status|stop|unit ENV``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]  # `router ENV`
        return super().parse_args(ctx, args)


def _local_env(ctx: click.Context, env_id: str):
    """(environment, parsed answers, state root) of a local-process environment."""
    from greentic_core.operator import Operator

    from .answers import Answers

    obj = ctx.find_root().obj
    op = Operator(obj.store(), obj.registry(), actor=obj.actor, command=f"router {env_id}")
    env = obj.store().load(env_id)
    binding = op.deployer_binding(env)
    if str(binding.kind.path) != "greentic.deployer.local-process":
        raise click.ClickException(f"environment {env_id} uses {binding.kind.path}, not the local-process deployer")
    answers = Answers.parse(op.load_answers(env))
    return obj, env, answers, answers.root(obj.store().env_dir(env_id))


@click.group("router", cls=_RouterGroup)
def router() -> None:
    """ENV's router: `router ENV` runs it in the foreground; `router status|stop|unit ENV`."""


@router.command("run")
@click.argument("env_id")
@click.pass_context
def router_run(ctx: click.Context, env_id: str) -> None:
    """Run ENV's router in the foreground (Ctrl-C stops it)."""
    from . import router_control

    _, env, answers, root = _local_env(ctx, env_id)
    if router_control.running_router(root) is not None:
        raise click.ClickException(f"a router for {env_id} is already running in the background")
    listen = router_control.listen_addr(env, answers.listen_addr)
    table = router_control.build_table(env, root, listen, previous=router_control.read_table(root))
    router_control.write_table(root, table)
    click.echo(f"router for {env_id} on http://{listen} (Ctrl-C to stop)", err=True)
    proc = subprocess.Popen(router_control.router_argv(root, answers.router_max_body_bytes))
    from greentic_core.store import atomic_write

    from . import procinfo

    atomic_write(router_control.router_dir(root) / "owner.json",
                 json.dumps({"pid": proc.pid, "start_time": procinfo.start_time(proc.pid)}).encode())
    try:
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=15)


def _print(ctx: click.Context, data: dict, lines: list[str]) -> None:
    if getattr(ctx.find_root().obj, "json_mode", False):
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


@router.command("status")
@click.argument("env_id")
@click.pass_context
def router_status(ctx: click.Context, env_id: str) -> None:
    """Is ENV's router running: pid, listen address, table generation, uptime, restarts."""
    from datetime import datetime, timezone

    from . import router_control, supervision

    _, _, _, root = _local_env(ctx, env_id)
    state = router_control.running_router(root)
    supervised = (supervision.status(root) or {}).get("router") or {}
    watcher = supervision.running(root)
    data: dict = {"ok": True, "env_id": env_id, "running": state is not None,
                  "supervisor_pid": watcher["pid"] if watcher else None,
                  "restarts": int(supervised.get("restarts", 0)), "last_exit": supervised.get("last_exit"),
                  "last_restart_at": supervised.get("last_restart_at")}
    if state is None:
        _print(ctx, data, [f"router of {env_id}: not running"
                           + (f" (last exit: {data['last_exit']})" if data["last_exit"] else "")])
        return
    started = datetime.fromisoformat(state["started_at"].replace("Z", "+00:00"))
    uptime = (datetime.now(timezone.utc) - started).total_seconds()
    data.update(pid=state["pid"], listen=state["listen"], admin=state["admin"], generation=state["generation"],
                workers=state.get("workers", 1), started_at=state["started_at"], uptime_seconds=round(uptime, 1))
    _print(ctx, data, [
        f"router of {env_id}: running, pid {state['pid']}, listening on {state['listen']}",
        f"table generation {state['generation']}, {data['workers']} worker(s), up {uptime:.0f}s since "
        f"{state['started_at']}",
        f"restarts by the supervisor: {data['restarts']}" + (f" (last exit {data['last_exit']} at "
                                                              f"{data['last_restart_at']})" if data["restarts"] else "")
        + ("" if watcher else "; no supervisor is running"),
    ])


@router.command("stop")
@click.argument("env_id")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Seconds requests in flight (and WebSocket tunnels) get before they are cut "
                   "(default: the longest drain_seconds of ENV's revisions, at least 10).")
@click.pass_context
def router_stop(ctx: click.Context, env_id: str, timeout: float | None) -> None:
    """Stop ENV's router gracefully: no more supervision, requests in flight finish (bounded)."""
    from . import router_control

    _, env, _, root = _local_env(ctx, env_id)
    grace = timeout if timeout is not None else max([10.0, *(float(r.drain_seconds) for r in env.revisions)])
    result = router_control.stop_router(root, grace_seconds=grace)
    _print(ctx, {"ok": True, "env_id": env_id, "stopped": result, "grace_seconds": grace},
           [f"router of {env_id}: {result}" + ("" if result == "not-running" else f" (grace {grace:g}s)"),
            "the next `traffic set`, `traffic rollback` or `env reconcile` starts it again"])


@router.command("unit")
@click.argument("env_id")
@click.pass_context
def router_unit(ctx: click.Context, env_id: str) -> None:
    """Print a systemd unit that runs ENV's supervisor (which runs the router and the revisions)."""
    from . import supervision

    obj, _, _, root = _local_env(ctx, env_id)
    home = getattr(obj, "home", None)
    unit = supervision.systemd_unit(env_id, root, home=str(home) if home else None,
                                    store_url=getattr(obj, "store_url", None))
    if getattr(obj, "json_mode", False):
        click.echo(json.dumps({"ok": True, "env_id": env_id, "unit": unit}, indent=2))
    else:
        click.echo(unit, nl=False)
