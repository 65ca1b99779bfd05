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


@click.command("router")
@click.argument("env_id")
@click.pass_context
def router(ctx: click.Context, env_id: str) -> None:
    """Run ENV's router in the foreground (Ctrl-C stops it)."""
    from greentic_core.operator import Operator

    from . import router_control
    from .answers import Answers

    obj = ctx.find_root().obj
    op = Operator(obj.store(), obj.registry(), actor=obj.actor, command=f"router {env_id}")
    env = obj.store().load(env_id)
    answers = Answers.parse(op.load_answers(env))
    root = answers.root(obj.store().env_dir(env_id))
    if router_control.running_router(root) is not None:
        raise click.ClickException(f"a router for {env_id} is already running in the background")
    listen = router_control.listen_addr(env, answers.listen_addr)
    table = router_control.build_table(env, root, listen, previous=router_control.read_table(root))
    router_control.write_table(root, table)
    click.echo(f"router for {env_id} on http://{listen} (Ctrl-C to stop)", err=True)
    proc = subprocess.Popen([sys.executable, "-m", "greentic_local_process.router", "--state-dir",
                             str(router_control.router_dir(root)),
                             "--max-body-bytes", str(answers.router_max_body_bytes)])
    from greentic_core.store import atomic_write

    from . import procinfo

    atomic_write(router_control.router_dir(root) / "owner.json",
                 json.dumps({"pid": proc.pid, "start_time": procinfo.start_time(proc.pid)}).encode())
    try:
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=15)
