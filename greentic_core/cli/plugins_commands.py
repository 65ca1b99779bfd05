"""``plugins list`` and ``plugins show``: what is installed and whether it is usable."""

from __future__ import annotations

import json

import click

from .completion import complete_plugin

NO_PLUGINS_HINT = (
    "no deployer plugins are installed; install one, e.g. `greentic-deployer plugins install local-process` "
    "(or k8s, aws; it runs `pip install greentic-deployer-local-process` in this environment)"
)


def register(cli: click.Group) -> None:
    @cli.group("plugins")
    def plugins() -> None:
        """Installed deployer plugins."""

    @plugins.command("list")
    @click.pass_obj
    def list_plugins(obj) -> None:
        """List deployer plugins with their status (ok / broken / invalid / disabled / ...)."""
        from ..scaffold import SCAFFOLD_NOTE, is_scaffold

        records = obj.registry().records()
        scaffolds = [r.name for r in records if is_scaffold(r)]
        docs = []
        for r in records:
            doc = r.to_json()
            if r.name in scaffolds:  # a fresh `plugins new`: loads ok, but every verb is a stub
                doc["scaffold"] = True
                doc["warnings"].append(SCAFFOLD_NOTE)
            docs.append(doc)
        data = {"ok": True, "plugins": docs}
        if not records:
            data["hint"] = NO_PLUGINS_HINT
        from ..store.select import store_plugins

        data["stores"] = stores = store_plugins()  # a broken store plugin is listed with its reason

        def human(console) -> None:
            _deployers(console)
            for row in stores:
                where = f"{row['distribution']} {row.get('version') or ''}".strip()
                console.print(f"store {row['scheme']}:// ({where}): {row['status']}"
                              + (f" - {row['reason']}" if row["reason"] else ""), markup=False)

        def _deployers(console) -> None:
            if not records:
                console.print(NO_PLUGINS_HINT, markup=False)
                return
            from .output import Table

            table = Table("NAME", "DISTRIBUTION", "VERSION", "STATUS", "WEIGHT RES.", "SANDBOX", "NOTES")
            for r in records:
                caps = r.descriptor.capabilities if r.descriptor else None
                notes = r.reason if r.status != "ok" else "; ".join(
                    r.warnings + ([SCAFFOLD_NOTE] if r.name in scaffolds else []))
                table.add_row(
                    r.name, r.distribution or "-", r.dist_version or "-",
                    r.status, f"{caps.weight_resolution_bps} bps" if caps else "-",
                    "yes" if r.has_sandbox else "no", notes or "",
                )
            console.print(table)
            for name in scaffolds:
                console.print(f"reminder: {name} is a scaffold from `greentic-deployer plugins new`: its verbs raise "
                              "'not implemented' until you write them; remove \"scaffold\": True from its "
                              "descriptor's capabilities when they are done", markup=False)

        obj.out.result(data, human)

    @plugins.command("show")
    @click.argument("name", shell_complete=complete_plugin)
    @click.pass_obj
    def show_plugin(obj, name: str) -> None:
        """Show one plugin: status, descriptor, capabilities, hooks and answers schema."""
        record = obj.registry().record(name)
        data = {"ok": True, **record.to_json()}

        def human(console) -> None:
            console.print(f"{record.name}  ({record.distribution} {record.dist_version})", markup=False)
            console.print(f"status: {record.status}" + (f" - {record.reason}" if record.reason else ""), markup=False)
            if record.hint:
                console.print(f"hint: {record.hint}", markup=False)
            for warning in record.warnings:
                console.print(f"warning: {warning}", markup=False)
            if record.descriptor:
                d = record.descriptor
                console.print(f"descriptor: {d.path}@{d.version} (requires greentic-core {d.requires_core})", markup=False)
                if d.summary:
                    console.print(f"summary: {d.summary}", markup=False)
                caps = data["descriptor"]["capabilities"]
                console.print("capabilities: " + ", ".join(f"{k}={v}" for k, v in caps.items()), markup=False)
                console.print("hooks: " + ", ".join(record.hooks), markup=False)
                for check, reason in d.waivers.items():
                    console.print(f"waiver: {check}: {reason}", markup=False)
                console.print("answers schema:", markup=False)
                console.print(json.dumps(dict(d.answers_schema), indent=2), markup=False)

        obj.out.result(data, human)
