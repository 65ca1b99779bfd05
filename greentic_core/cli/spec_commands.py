"""Commands that work on documents alone: ``env validate --file``, ``runtime-config --file``, ``schema``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import GreenticError
from .completion import complete_env

if TYPE_CHECKING:
    from ..spec import Environment

#: The documents ``schema NAME`` prints (``schema.DOCUMENTS``; named here so that registering the
#: command imports neither the schema generator nor the desired-state types).
SCHEMA_DOCUMENTS = ("bundle-deployment", "deploy", "environment", "notify-event", "revision", "runtime-config",
                    "traffic-split")


def load_env_file(path: Path) -> "Environment":
    from .. import codec
    from ..errors import DecodeError
    from ..validation import validate_environment

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GreenticError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    except ValueError as exc:  # e.g. a NUL character in the path
        raise GreenticError(f"cannot read {str(path)!r}: {exc}", hint="check the path") from None
    try:
        env = codec.load_environment(data)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc.message}", hint="compare with `greentic-deployer schema environment`") from None
    validate_environment(env)
    return env


def env_summary(env: "Environment") -> dict:
    return {
        "environment_id": env.environment_id,
        "deployments": len(env.bundles),
        "revisions": len(env.revisions),
        "traffic_splits": len(env.traffic_splits),
    }


def register(cli: click.Group) -> None:
    env_group = cli.commands.get("env")
    if env_group is None:
        @cli.group("env")
        def env_group() -> None:
            """Environments: create, inspect, validate, check and reconcile."""

    @env_group.command("validate")
    @click.argument("env_id", required=False, shell_complete=complete_env)
    @click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Validate this environment.json instead of a stored environment.")
    @click.pass_obj
    def validate(obj, env_id: str | None, file: Path | None) -> None:
        """Check an environment against every rule of the spec (exit 0 when valid)."""
        from ..validation import validate_environment

        if (env_id is None) == (file is None):
            raise click.UsageError("give either ENV or --file PATH")
        env = load_env_file(file) if file is not None else obj.store().load(env_id)
        if file is None:
            validate_environment(env)
        summary = {"ok": True, "valid": True, **env_summary(env)}
        obj.out.result(summary, lambda c: c.print(
            f"valid: environment {env.environment_id} ({len(env.bundles)} deployments, "
            f"{len(env.revisions)} revisions, {len(env.traffic_splits)} splits)", markup=False))

    @cli.command("runtime-config")
    @click.argument("env_id", required=False, shell_complete=complete_env)
    @click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Project this environment.json instead of a stored environment.")
    @click.pass_obj
    def runtime_config(obj, env_id: str | None, file: Path | None) -> None:
        """Print the runtime-config projection (greentic.runtime-config.v1) as JSON."""
        from .. import codec
        from ..projection import materialize_runtime_config

        if (env_id is None) == (file is None):
            raise click.UsageError("give either ENV or --file PATH")
        env = load_env_file(file) if file is not None else obj.store().load(env_id)
        click.echo(codec.dumps(materialize_runtime_config(env)), nl=False)

    @cli.command("schema")
    @click.argument("name", type=click.Choice(SCHEMA_DOCUMENTS))
    def schema_command(name: str) -> None:
        """Print the JSON Schema of a document (generated from the spec types)."""
        import json

        from .. import schema

        click.echo(json.dumps(schema.json_schema(name), indent=2))
