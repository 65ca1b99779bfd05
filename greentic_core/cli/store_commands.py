"""The store commands (`store init|doctor`) and the lease commands (`env lock|unlock`)."""

from __future__ import annotations

from typing import Any

import click

from ..codec import utc_now
from ..errors import GreenticError


def register(cli: click.Group) -> None:
    env_group = cli.commands["env"]

    @env_group.command("lock")
    @click.argument("env_id")
    @click.pass_obj
    def env_lock(obj, env_id) -> None:
        """Show who holds ENV's lease (holder, pid, command, since when, until when)."""
        store = obj.store()
        lease = store.lease(env_id)
        doc: dict[str, Any] = {"ok": True, "env_id": env_id, "store": store.url, "locked": lease is not None,
                               "lease": lease.to_json() if lease is not None else None}

        def human(console) -> None:
            if lease is None:
                console.print(f"environment {env_id} is not locked", markup=False)
            else:
                console.print(f"environment {env_id} is locked by {lease.describe(utc_now())} "
                              f"(fencing token {lease.token})", markup=False)

        obj.out.result(doc, human)

    @env_group.command("unlock")
    @click.argument("env_id")
    @click.option("--force", is_flag=True, help="Required: breaking a lease is never done by accident.")
    @click.pass_obj
    def env_unlock(obj, env_id, force) -> None:
        """Break ENV's lease whoever holds it (audited).

        The old holder cannot save afterwards: its next save fails compare-and-swap. Use it for
        a holder that is gone when you do not want to wait for the lease to expire.
        """
        from . import command_line

        if not force:
            raise click.UsageError("breaking a lease needs --force (see `greentic-deployer env lock ENV` first)")
        store = obj.store()
        removed = store.break_lease(env_id, audit_event={"actor": obj.actor, "command": command_line(),
                                                         "verb": "env.unlock", "outcome": "ok"})
        doc = {"ok": True, "env_id": env_id, "broken": removed is not None,
               "lease": removed.to_json() if removed is not None else None}
        obj.out.result(doc, lambda c: c.print(
            f"broke the lease of {env_id} held by {removed.describe(utc_now())}" if removed is not None
            else f"environment {env_id} was not locked; nothing to do", markup=False))

    @env_group.command("host")
    @click.argument("env_id")
    @click.option("--take-over", is_flag=True,
                  help="Make this host the one that runs ENV's provider state (audited as env.host).")
    @click.pass_obj
    def env_host(obj, env_id, take_over) -> None:
        """Show which host runs ENV's host-local provider state (local-process) on a shared store.

        Provider changes from any other host are refused. --take-over moves the environment to
        this host: what runs on the old host keeps running until it is stopped there, and this
        host starts what the environment needs with `greentic-deployer env reconcile ENV`.
        """
        from .. import host_state
        from ..spec import CapabilitySlot
        from . import command_line

        store = obj.store()
        env = store.load(env_id)
        here = host_state.this_host()
        binding = env.pack_for_slot(CapabilitySlot.DEPLOYER)
        deployer = binding.kind.path if binding is not None else "its deployer"
        previous = None
        if take_over:
            if store.scheme == "file":
                raise click.UsageError(f"environment {env_id!r} is in a file store: its provider state is on the "
                                       "machine that has the store, there is nothing to take over")
            previous, record = host_state.take_over(store, env_id, actor=obj.actor, command=command_line(),
                                                    deployer=deployer)
        else:
            record = host_state.recorded(store, env_id)
        doc = {"ok": True, "env_id": env_id, "store": store.url, "this_host": here,
               "host": record["host"] if record is not None else None, "record": record,
               **({"previous_host": previous["host"] if previous is not None else None} if take_over else {})}

        def human(console) -> None:
            if record is None:
                console.print(f"environment {env_id}: no host recorded (the first provider change records "
                              f"the host it runs on; this host is {here})", markup=False)
            elif take_over:
                was = f" (was {previous['host']})" if previous is not None else ""
                console.print(f"environment {env_id} now runs its provider state on {here}{was}; "
                              f"`greentic-deployer env reconcile {env_id}` starts what it needs here", markup=False)
            else:
                mine = " (this host)" if record["host"] == here else f" (this host is {here})"
                console.print(f"environment {env_id} runs its provider state on {record['host']}{mine}, "
                              f"since {record.get('since')}", markup=False)

        obj.out.result(doc, human)

    @cli.group("store")
    def store_group() -> None:
        """The store environments live in (--store URL / GREENTIC_STORE)."""

    @store_group.command("init")
    @click.pass_obj
    def store_init(obj) -> None:
        """Create or migrate what the store needs (tables, schema version); safe to repeat."""
        store = obj.store()
        report = store.init()
        doc = {"ok": True, "store": store.url, **report}
        obj.out.result(doc, lambda c: c.print(
            f"store {store.url}: schema version {report.get('schema_version')}"
            + (" (created or migrated)" if report.get("changed") else " (already up to date)"), markup=False))

    @store_group.command("doctor")
    @click.pass_obj
    def store_doctor(obj) -> None:
        """Check the store: reachable, schema version, read and write permission, lease clock."""
        try:
            store = obj.store()
        except GreenticError as exc:
            checks = [("open", False, exc.message)]
            url = None
        else:
            checks = store.doctor()
            url = store.url
        ok = all(passed for _, passed, _ in checks)
        doc = {"ok": ok, "store": url,
               "checks": [{"name": n, "status": "pass" if p else "fail", "message": m} for n, p, m in checks]}

        def human(console) -> None:
            for name, passed, message in checks:
                console.print(f"{'PASS' if passed else 'FAIL'}  {name}: {message}", markup=False)

        obj.out.result(doc, human)
        if not ok:
            click.get_current_context().exit(5)


    @store_group.command("migrate")
    @click.option("--from", "source", required=True, metavar="URL", help="The store to copy from.")
    @click.option("--to", "target", required=True, metavar="URL", help="The store to copy to.")
    @click.argument("env_ids", nargs=-1, metavar="[ENV]...")
    @click.option("--force", is_flag=True, help="Replace environments that differ at the destination.")
    @click.pass_obj
    def store_migrate(obj, source, target, env_ids, force) -> None:
        """Copy environments (document, audit, backups, runtime-config, answers) to another store.

        Documents are copied byte for byte, each under its lease at the source. An environment
        already at the destination and identical is skipped, so an interrupted migration can be
        run again; one that differs is refused (nothing is copied) unless --force.
        """
        from ..errors import EnvironmentExists
        from ..store.select import redact_url

        if redact_url(source) == redact_url(target):
            raise click.UsageError("--from and --to name the same store")
        src, dst = obj.open_store(source), obj.open_store(target)
        wanted = list(dict.fromkeys(env_ids)) or src.list()
        snapshots = {}
        for env_id in wanted:  # every snapshot first: a refused migration copies nothing
            with src.transaction(env_id):
                snapshots[env_id] = src.export(env_id)
        plan = {}
        for env_id, snapshot in snapshots.items():
            if not dst.exists(env_id):
                plan[env_id] = "copy"
            elif dst.export(env_id) == snapshot:
                plan[env_id] = "identical"
            elif force:
                plan[env_id] = "replace"
            else:
                raise EnvironmentExists(
                    f"environment {env_id!r} already exists at {dst.url} and differs; nothing was copied",
                    hint="pass --force to replace it, or leave it out of the ENV list", env_id=env_id)
        rows = []
        for env_id, action in plan.items():
            snapshot = snapshots[env_id]
            if action != "identical":
                dst.import_snapshot(snapshot, replace=action == "replace")
                if dst.export(env_id) != snapshot:
                    raise GreenticError(f"environment {env_id!r} was copied but reads back differently at {dst.url}",
                                        hint="run `greentic-deployer store doctor` against the destination")
            rows.append({"env_id": env_id, "action": action, "generation": _generation(snapshot.document),
                         "audit_events": len(snapshot.audit), "backups": len(snapshot.backups)})
        doc = {"ok": True, "from": src.url, "to": dst.url, "environments": rows}

        def human(console) -> None:
            if not rows:
                console.print(f"no environments in {src.url}", markup=False)
            for row in rows:
                console.print(f"{row['env_id']}: {row['action']} (generation {row['generation']}, "
                              f"{row['audit_events']} audit events, {row['backups']} backups)", markup=False)

        obj.out.result(doc, human)


def _generation(document: bytes) -> int | None:
    import json

    try:
        return int(json.loads(document).get("generation"))
    except (ValueError, TypeError, AttributeError):
        return None
