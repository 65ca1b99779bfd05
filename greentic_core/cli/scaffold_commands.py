"""``plugins new NAME``: scaffold a complete third-party deployer distribution."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    plugins = cli.commands["plugins"]  # the group plugins_commands registered
    assert isinstance(plugins, click.Group)

    @plugins.command("new")
    @click.argument("name")
    @click.option("--directory", "-d", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Where to create it (default: ./DISTRIBUTION, e.g. ./acme-deployer-nomad). "
                       "Must not exist, or be empty.")
    @click.option("--author", default=None, metavar='"NAME <EMAIL>"',
                  help="Author for pyproject.toml (a name, or a name and an e-mail address).")
    @click.pass_obj
    def new_plugin(obj, name: str, directory: Path | None, author: str | None) -> None:
        """Create a new deployer plugin distribution for the descriptor path NAME (e.g. acme.deployer.nomad).

        It installs and loads right away (pip install -e .), with every verb stubbed to raise
        "not implemented", a conformance sandbox hook, a test that runs the conformance suite
        and a CI workflow. An existing, non-empty directory is never touched.
        """
        from ..scaffold import create

        names, target, files = create(name, directory, author=author)
        steps = [
            f"cd {target}",
            "python -m venv .venv && . .venv/bin/activate",
            'pip install -e ".[test]"',
            "greentic-deployer plugins list",
            "pytest -v",
        ]
        data = {
            "ok": True, "name": names.path, "directory": str(target), "distribution": names.distribution,
            "package": names.package, "files": files, "next_steps": steps,
        }

        def human(console) -> None:
            console.print(f"created {names.distribution} ({names.path}) in {target}", markup=False)
            for rel in files:
                console.print(f"  {rel}", markup=False)
            console.print("next:", markup=False)
            for step in steps:
                console.print(f"  {step}", markup=False)
            console.print(f"then implement the verbs in {names.package}/hooks.py until the conformance tests pass "
                          "(docs/plugin-authors.md)", markup=False)

        obj.out.result(data, human)
