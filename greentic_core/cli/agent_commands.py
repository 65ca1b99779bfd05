"""``agent [ENV...]``: reconcile continuously and carry rollouts on; ``agent unit``: a systemd unit."""

from __future__ import annotations

import click

from .completion import complete_env

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464)", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(cli: click.Group) -> None:
    @cli.command("agent")
    @click.argument("env_ids", metavar="[ENV]...", nargs=-1, shell_complete=complete_env)
    @click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                  help="Seconds between passes.")
    @click.option("--once", is_flag=True, help="One pass, then exit (for cron and CI); exit 1 if one failed.")
    @click.option("--listen", metavar="HOST:PORT", help="Serve GET /healthz and GET /metrics (Prometheus) there.")
    @click.option("--metrics-token-file", type=click.Path(dir_okay=False, exists=True),
                  help="/metrics then needs `Authorization: Bearer <the file's content>` (required off loopback).")
    @click.option("--max-attempts", type=click.IntRange(min=1), default=5, show_default=True,
                  help="Passes in a row that find a revision not serving (each repairs it) before it is given up.")
    @click.option("--claim-ttl", type=click.FloatRange(min=1), default=None,
                  help="Seconds an agent's claim on an environment lasts without a pass (default: 3 intervals, "
                       "at least 30).")
    @click.pass_obj
    def agent_command(obj, env_ids, interval, once, listen, metrics_token_file, max_attempts, claim_ttl) -> None:
        """Reconcile ENVs (default: every environment in the store) and carry rollouts on, pass after pass.

        `greentic-deployer agent unit [ENV]...` prints a systemd unit that runs it. SIGTERM lets
        the environment in progress finish; SIGKILL loses nothing (the next agent resumes).
        """
        if env_ids[:1] == ("unit",):
            from ..agent import systemd_unit

            unit = systemd_unit(env_ids[1:], interval=interval, home=str(obj.home) if obj.home else None,
                                store_url=obj.store_url, listen=listen)
            obj.out.result({"ok": True, "unit": unit}, lambda console: click.echo(unit, nl=False))
            return
        _run_agent(obj, env_ids, interval=interval, once=once, listen=listen, token_file=metrics_token_file,
                   max_attempts=max_attempts, claim_ttl=claim_ttl)


def _run_agent(obj, env_ids, *, interval, once, listen, token_file, max_attempts, claim_ttl) -> None:
    import json
    import os
    import signal

    from .. import agent as agent_mod
    from .. import rollout
    from ..errors import GreenticError
    from ..operator import Operator
    from .operator_commands import _command_line

    token = None
    if token_file:
        with open(token_file, encoding="utf-8") as handle:
            token = handle.read().strip() or None
    address = _parse_listen(listen) if listen else None
    if address and address[0] not in _LOOPBACK and token is None:
        raise GreenticError(f"--listen {listen} is not a loopback address: /metrics needs a token there",
                            hint="add --metrics-token-file FILE (and scrape with that bearer token)")
    obj.actor = "agent"  # the lease holder is agent@host, as the audit actor
    store = obj.store()
    for env_id in env_ids:
        store.load(env_id)  # an unknown environment is refused now, with the store's error
    actor = agent_mod.agent_actor()
    command = f"{_command_line()} (pid {os.getpid()})"  # tells two agents on one host apart

    def make_operator():
        return Operator(store, obj.registry(), actor=actor, command=command)

    metrics = agent_mod.AgentMetrics()
    runner = agent_mod.Agent(store, make_operator, env_ids=env_ids, interval=interval, max_attempts=max_attempts,
                             claim_ttl=claim_ttl, metrics=metrics, notifier_for=_notifiers_for(store, actor, command))
    server = None
    if address:
        server = agent_mod.serve(runner, metrics, *address, token=token)
        obj.out.info(f"agent: /healthz and /metrics on http://{listen}")
    previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop())

    def on_pass(report) -> None:
        if obj.json_mode and not once:
            click.echo(json.dumps({"pass": report.to_json()}))
        elif not once:
            for env in report.environments:
                if env.status != "ok" or env.repairs or env.rollouts or env.detached:
                    obj.out.info(_describe(env))

    try:
        obj.out.info(f"agent {actor}: {'one pass' if once else f'a pass every {interval:g}s'} over "
                     + (", ".join(env_ids) if env_ids else f"every environment in {store.url}"))
        report = runner.run(once=once, on_pass=on_pass)
    except KeyboardInterrupt:
        runner.release()
        report = None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.shutdown()
        rollout.flush_notifications()
        _close_notifiers()
    if once and report is not None:
        obj.out.result({"ok": report.ok, "pass": report.to_json()},
                       lambda console: [console.print(_describe(e), markup=False) for e in report.environments])
        if not report.ok:
            raise SystemExit(1)


def _describe(env) -> str:
    bits = [f"{env.env_id}: {env.status}"]
    if env.error:
        bits.append(env.error)
    for repair in env.repairs:
        target = repair.get("revision_id") or repair.get("deployment_id")
        bits.append(f"repair {repair['action']} {target}: {repair.get('outcome', repair.get('detail', ''))}")
    for moved in env.rollouts:
        bits.append(f"rollout {moved['bundle_id']}: {moved['outcome']}")
    if env.detached:
        bits.append(f"detached apply: {env.detached['status']} ({env.detached['steps']} step(s) now)")
    return "; ".join(bits)


_AGENT_NOTIFIERS: dict = {}


def _notifiers_for(store, actor: str, command: str):
    """The webhooks an environment's detached apply names, for the agent's own events."""

    def notifiers(op, env_id: str):
        from .. import notify
        from ..apply import load_detached
        from ..desired import loads

        record = load_detached(store, env_id)
        if not record:
            return []
        wanted = loads(record["text"].encode(), name=record.get("source", "desired state"))
        found = []
        for config in getattr(wanted, "notify", ()) or ():
            key = (env_id, repr(config.to_record()))
            if key not in _AGENT_NOTIFIERS:
                _AGENT_NOTIFIERS[key] = notify.Notifier(config, env_id=env_id, actor=actor,
                                                        audit=notify.store_audit(store, env_id, actor, command))
            found.append(_AGENT_NOTIFIERS[key])
        return found

    return notifiers


def _close_notifiers() -> None:
    for notifier in _AGENT_NOTIFIERS.values():
        notifier.close(timeout=2.0)
    _AGENT_NOTIFIERS.clear()
