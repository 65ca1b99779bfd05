"""The lifecycle, traffic and environment commands: thin click wrappers over the operator."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import GreenticError, NoSplit
from ..references import InvalidInput, resolve_deployment
from .completion import complete_deployment, complete_env, complete_plugin, complete_revision
from .output import ProgressReporter, Table

if TYPE_CHECKING:
    from ..operator import Operator

# Heavy modules (the operator and its registry, the codec's converters, rich) are
# imported inside the commands that use them: read commands start in a fraction of the time.


def _table(*columns: str) -> Table:
    return Table(*columns)


def _operator(obj, command: str, progress=None) -> "Operator":
    from ..operator import Operator

    return Operator(obj.store(), obj.registry(), actor=obj.actor, command=command, progress=progress)


def _command_line() -> str:
    """The command line as given, passwords in URLs replaced (see :func:`..cli.command_line`)."""
    from . import command_line

    return command_line()


def _read_answers(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read answers file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidInput(f"answers file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"answers file {path} must hold a JSON object")
    return data


def _check_listen(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"listen address {value!r} must be HOST:PORT", hint="e.g. --listen 127.0.0.1:8080")
    return value


def _revision_json(revision) -> dict[str, Any]:
    from .. import codec

    return codec.unstructure(revision)


def _verb_human(verb: str, result):
    def human(console) -> None:
        rev = result.revision
        note = " (recorded only; provider not called)" if result.record_only else ""
        console.print(f"{verb}: revision {rev.revision_id} {result.starting_lifecycle.value} -> "
                      f"{rev.lifecycle.value}{note}", markup=False)
    return human


def register(cli: click.Group) -> None:
    env_group = cli.commands["env"]

    # ------------------------------------------------------------------ env

    @env_group.command("init")
    @click.argument("env_id")  # a new name: nothing to complete
    @click.option("--deployer", required=True, metavar="PATH[@VERSION]", shell_complete=complete_plugin,
                  help="Deployer plugin, e.g. greentic.deployer.local-process@0.1.0 (version: the installed one).")
    @click.option("--answers", "answers_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="JSON file with the deployer's answers (its configuration).")
    @click.option("--listen", "listen_addr", metavar="HOST:PORT", help="Where the environment's router listens.")
    @click.option("--name", help="Display name (default: the id).")
    @click.pass_obj
    def env_init(obj, env_id, deployer, answers_file, listen_addr, name) -> None:
        """Create an environment bound to a deployer plugin."""
        env = _operator(obj, _command_line()).init_env(
            env_id, deployer, answers=_read_answers(answers_file), listen_addr=_check_listen(listen_addr), name=name)
        binding = env.packs[0]
        obj.out.result({"ok": True, "environment_id": env.environment_id, "deployer": str(binding.kind),
                        "path": obj.store().location(env_id)},
                       lambda c: c.print(f"created environment {env.environment_id} (deployer {binding.kind})",
                                         markup=False))

    @env_group.command("list")
    @click.pass_obj
    def env_list(obj) -> None:
        """List stored environments."""
        store = obj.store()
        rows = []
        for env_id in store.list():
            try:
                env = store.load(env_id)
            except GreenticError as exc:  # one broken environment must not hide the others
                rows.append({"environment_id": env_id, "name": "-", "deployer": None, "deployments": 0,
                             "revisions": 0, "generation": None, "error": exc.message})
                continue
            binding = next((p for p in env.packs if p.slot.value == "deployer"), None)
            rows.append({"environment_id": env_id, "name": env.name, "deployer": str(binding.kind) if binding else None,
                         "deployments": len(env.bundles), "revisions": len(env.revisions),
                         "generation": env.generation})

        def human(console) -> None:
            if not rows:
                console.print("no environments; create one with `greentic-deployer env init ENV --deployer PATH`",
                              markup=False)
                return
            table = _table(*("ENV", "NAME", "DEPLOYER", "DEPLOYMENTS", "REVISIONS", "GENERATION"))
            for r in rows:
                if r.get("error"):
                    table.add_row(r["environment_id"], "INVALID", r["error"], "-", "-", "-")
                    continue
                table.add_row(r["environment_id"], r["name"], r["deployer"] or "-", str(r["deployments"]),
                              str(r["revisions"]), str(r["generation"]))
            console.print(table)

        obj.out.result({"ok": True, "environments": rows}, human)

    @env_group.command("show")
    @click.argument("env_id", shell_complete=complete_env)
    @click.pass_obj
    def env_show(obj, env_id) -> None:
        """Show an environment document (answers are never shown)."""
        from .. import codec

        env = obj.store().load(env_id)
        doc = codec.unstructure(env)
        obj.out.result({"ok": True, "environment": doc},
                       lambda c: c.print(json.dumps(doc, indent=2), markup=False))

    @env_group.command("doctor")
    @click.argument("env_id", shell_complete=complete_env)
    @click.pass_obj
    def env_doctor(obj, env_id) -> None:
        """Check plugin, version pin, answers, runtime config and the provider's preflight."""
        checks = _operator(obj, _command_line()).doctor(env_id)
        from ..outcomes import CheckStatus

        failed = [c for c in checks if c.status == CheckStatus.FAIL]
        data = {"ok": not failed, **({"kind": "check_failed",
                                      "message": f"{len(failed)} check(s) failed: "
                                                 + ", ".join(c.name for c in failed)} if failed else {}),
                "checks": [{"name": c.name, "status": c.status.value, "message": c.message}
                                              for c in checks]}

        def human(console) -> None:
            table = _table(*("CHECK", "STATUS", "MESSAGE"))
            for c in checks:
                table.add_row(c.name, c.status.value, c.message)
            console.print(table)
            console.print(f"{len(failed)} check(s) failed" if failed else "all checks passed", markup=False)

        obj.out.result(data, human)
        if failed:
            sys.exit(1)

    @env_group.command("reconcile")
    @click.argument("env_id", shell_complete=complete_env)
    @click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait for each provider verb.")
    @click.pass_obj
    def env_reconcile(obj, env_id, timeout) -> None:
        """Re-run the idempotent provider verbs so the provider matches what is recorded."""
        with ProgressReporter(obj.out, f"reconciling {env_id}") as progress:
            report = _operator(obj, _command_line(), progress).reconcile(env_id, timeout=timeout)
        obj.out.result({"ok": True, **report}, lambda c: c.print(
            f"reconciled {env_id}: {len(report['actions'])} provider call(s)"
            + (", runtime-config.json rewritten" if report["runtime_config_rewritten"] else ""), markup=False))

    @env_group.command("render")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="[DEPLOYMENT]", required=False, shell_complete=complete_deployment)
    @click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True,
                  help="How to print the objects (--json prints one JSON document instead).")
    @click.pass_obj
    def env_render(obj, env_id, deployment_ref, fmt) -> None:
        """Print what the provider would apply for ENV as recorded (a dry run, like `helm template`).

        Kubernetes manifests for the k8s provider, the API requests for the aws provider. The
        provider is not contacted and nothing is recorded.
        """
        objects = _operator(obj, _command_line()).render(env_id, deployment_ref)
        data = {"ok": True, "env_id": env_id, "deployment": deployment_ref, "objects": objects}

        def human(console) -> None:
            if fmt == "json":
                text = json.dumps(objects, indent=2, ensure_ascii=False) + "\n"
            else:
                import yaml

                text = yaml.safe_dump_all(objects, sort_keys=False, allow_unicode=True) if objects else ""
            sys.stdout.write(text)
            sys.stdout.flush()

        obj.out.result(data, human)

    @env_group.command("observe")
    @click.argument("env_id", shell_complete=complete_env)
    @click.pass_obj
    def env_observe(obj, env_id) -> None:
        """Show what the provider really has (revisions present/serving, enforced weights)."""
        observation = _operator(obj, _command_line()).observe(env_id)
        data = {
            "ok": True,
            "revisions": {k: {"present": v.present, "serving": v.serving, "ready_replicas": v.ready_replicas,
                              "desired_replicas": v.desired_replicas, "detail": v.detail,
                              **({"restarts": dict(v.restarts)} if v.restarts is not None else {})}
                          for k, v in observation.revisions.items()},
            "deployments": {k: {"weights": dict(v.weights), "generation": v.generation, "detail": v.detail}
                            for k, v in observation.deployments.items()},
        }
        obj.out.result(data, lambda c: c.print(json.dumps(data, indent=2), markup=False))

    @env_group.command("history")
    @click.argument("env_id", shell_complete=complete_env)
    @click.option("--limit", type=click.IntRange(min=1), help="Show at most this many events.")
    @click.pass_obj
    def env_history(obj, env_id, limit) -> None:
        """The audit log, newest first."""
        events = _operator(obj, _command_line()).history(env_id)[: limit or None]

        def human(console) -> None:
            for e in events:
                subject = e.get("revision_id") or e.get("deployment_id") or ""
                gen = f"gen {e.get('generation_before')}->{e.get('generation_after')}"
                err = f" error: {e['error']}" if e.get("error") else ""
                console.print(f"{e.get('time', '?')}  {e.get('actor', '?'):<12} {e.get('verb', '?'):<18} "
                              f"{e.get('outcome', '?'):<9} {gen:<12} {subject}{err}", markup=False)

        obj.out.result({"ok": True, "events": events}, human)

    # ------------------------------------------------------------------ deployments

    @cli.group("deployment")
    def deployment() -> None:
        """Deployments (one per bundle) of an environment."""

    @deployment.command("add")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("bundle_id")
    @click.option("--host", "hosts", multiple=True, help="Host name routed to this deployment (repeatable).")
    @click.option("--path-prefix", "path_prefixes", multiple=True, help="Path prefix routed to it (repeatable).")
    @click.pass_obj
    def deployment_add(obj, env_id, bundle_id, hosts, path_prefixes) -> None:
        """Add a deployment of BUNDLE_ID; prints the deployment id."""
        dep = _operator(obj, _command_line()).add_deployment(env_id, bundle_id, hosts=hosts,
                                                              path_prefixes=path_prefixes)
        obj.out.result({"ok": True, "deployment_id": dep.deployment_id, "bundle_id": dep.bundle_id},
                       lambda c: c.print(dep.deployment_id, markup=False))

    @deployment.command("list")
    @click.argument("env_id", shell_complete=complete_env)
    @click.pass_obj
    def deployment_list(obj, env_id) -> None:
        """List deployments with their routes and current split."""
        env = obj.store().load(env_id)
        rows = []
        for b in env.bundles:
            split = env.split_for(b.deployment_id)
            rows.append({"deployment_id": b.deployment_id, "bundle_id": b.bundle_id, "status": b.status.value,
                         "hosts": list(b.route_binding.hosts), "path_prefixes": list(b.route_binding.path_prefixes),
                         "revisions": sum(1 for r in env.revisions if r.deployment_id == b.deployment_id),
                         "split": {e.revision_id: e.weight_bps for e in split.entries} if split else None})

        def human(console) -> None:
            table = _table(*("DEPLOYMENT", "BUNDLE", "STATUS", "ROUTES", "REVISIONS", "SPLIT"))
            for r in rows:
                routes = ",".join(r["hosts"] + r["path_prefixes"]) or "*"
                split = " ".join(f"{k[:10]}={v}" for k, v in (r["split"] or {}).items()) or "-"
                table.add_row(r["deployment_id"], r["bundle_id"], r["status"], routes, str(r["revisions"]), split)
            console.print(table)

        obj.out.result({"ok": True, "deployments": rows}, human)

    # ------------------------------------------------------------------ revisions

    @cli.group("revision")
    def revision() -> None:
        """Revisions: stage, warm, drain, archive, list, show."""

    @revision.command("stage")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.option("--image", help="OCI image reference (container providers).")
    @click.option("--command", "command", help="Command line to run (local-process); split like a shell, never run by one.")
    @click.option("--workdir", help="Working directory for --command.")
    @click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
    @click.option("--health-path", default="/healthz", show_default=True)
    @click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--drain-seconds", type=click.IntRange(0, 2**32 - 1), default=30, show_default=True)
    @click.option("--digest", default="sha256:00", show_default=True, help="Bundle digest (sha256:<hex>).")
    @click.option("--env", "env_vars", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
    @click.option("--record-only", is_flag=True, help="Record without calling the provider.")
    @click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait for the provider.")
    @click.pass_obj
    def revision_stage(obj, env_id, deployment_ref, image, command, workdir, port, health_path, replicas,
                       drain_seconds, digest, env_vars, record_only, timeout) -> None:
        """Stage a new revision of DEPLOYMENT; prints the revision id."""
        if image and command:
            raise InvalidInput("give --image or --command, not both")
        if not health_path.startswith("/"):
            raise InvalidInput(f"--health-path {health_path!r} must start with '/'")
        variables = {}
        for item in env_vars:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidInput(f"--env {item!r} must be KEY=VALUE")
            variables[key] = value
        argv = None
        if command is not None:
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise InvalidInput(f"--command cannot be parsed: {exc}") from None
            if not argv:
                raise InvalidInput("--command is empty")
        from ..spec import Workload

        workload = Workload(image=image, command=argv, env=variables, port=port, health_path=health_path,
                            replicas=replicas, working_dir=workdir)
        with ProgressReporter(obj.out, "staging") as progress:
            result = _operator(obj, _command_line(), progress).stage(
                env_id, deployment_ref, workload=workload, drain_seconds=drain_seconds, bundle_digest=digest,
                record_only=record_only, timeout=timeout)
        obj.out.result({"ok": True, "revision_id": result.revision.revision_id,
                        "revision": _revision_json(result.revision), "record_only": record_only,
                        "provider": dict(result.outcome)},
                       lambda c: c.print(result.revision.revision_id, markup=False))

    def _lifecycle_verb(name: str, method: str, title: str):
        @revision.command(name)
        @click.argument("env_id", shell_complete=complete_env)
        @click.argument("revision_ref", metavar="REVISION", shell_complete=complete_revision)
        @click.option("--deployment", "deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment,
                      help="Look REVISION up in this deployment (needed for `latest` with several deployments).")
        @click.option("--record-only", is_flag=True, help="Record the transition without calling the provider.")
        @click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait for the provider.")
        @click.pass_obj
        def verb(obj, env_id, revision_ref, deployment_ref, record_only, timeout) -> None:
            with ProgressReporter(obj.out, f"{title} {revision_ref}") as progress:
                result = getattr(_operator(obj, _command_line(), progress), method)(
                    env_id, revision_ref, deployment_ref=deployment_ref, record_only=record_only, timeout=timeout)
            obj.out.result({"ok": True, "revision_id": result.revision.revision_id,
                            "from": result.starting_lifecycle.value, "lifecycle": result.revision.lifecycle.value,
                            "record_only": record_only, "generation": result.generation,
                            "provider": dict(result.outcome)}, _verb_human(name, result))

        verb.__doc__ = {
            "warm": "Start REVISION and wait until it serves; records it ready.",
            "drain": "Drain REVISION (it must have no weight) and stop it; records it inactive.",
            "archive": "Remove what the provider created for REVISION; records it archived.",
        }[name]
        return verb

    _lifecycle_verb("warm", "warm", "warming")
    _lifecycle_verb("drain", "drain", "draining")
    _lifecycle_verb("archive", "archive", "archiving")

    @revision.command("list")
    @click.argument("env_id", shell_complete=complete_env)
    @click.option("--deployment", "deployment_ref", help="Only this deployment.", shell_complete=complete_deployment)
    @click.pass_obj
    def revision_list(obj, env_id, deployment_ref) -> None:
        """List revisions (id, deployment, sequence, lifecycle, weight)."""
        env = obj.store().load(env_id)
        dep = resolve_deployment(env, deployment_ref) if deployment_ref else None
        weights = {e.revision_id: e.weight_bps for s in env.traffic_splits for e in s.entries}
        rows = [{"revision_id": r.revision_id, "deployment_id": r.deployment_id, "bundle_id": r.bundle_id,
                 "sequence": r.sequence, "lifecycle": r.lifecycle.value, "weight_bps": weights.get(r.revision_id)}
                for r in env.revisions if dep is None or r.deployment_id == dep]

        def human(console) -> None:
            table = _table(*("REVISION", "DEPLOYMENT", "BUNDLE", "SEQ", "LIFECYCLE", "WEIGHT"))
            for r in rows:
                w = r["weight_bps"]
                table.add_row(r["revision_id"], r["deployment_id"], r["bundle_id"], str(r["sequence"]),
                              r["lifecycle"], "-" if w is None else f"{w} bps")
            console.print(table)

        obj.out.result({"ok": True, "revisions": rows}, human)

    @revision.command("logs")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("revision_ref", metavar="REVISION", shell_complete=complete_revision)
    @click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are written (Ctrl-C stops).")
    @click.option("-n", "--tail", "lines", type=click.IntRange(min=0), default=None, metavar="N",
                  help="Only the last N lines (default: all).")
    @click.option("--stderr", is_flag=True, help="The revision's stderr instead of its stdout.")
    @click.option("--replica", type=click.IntRange(min=0), default=0, show_default=True, metavar="I",
                  help="Which replica (0-based).")
    @click.pass_obj
    def revision_logs(obj, env_id, revision_ref, follow, lines, stderr, replica) -> None:
        """Print a revision's log (REVISION: id, unique prefix or `latest`), as `kubectl logs`.

        With --json, one JSON document {"ok", "lines"}; with --json --follow, one JSON object per
        line ({"line": ...}) as they come.
        """
        produced = _operator(obj, _command_line()).logs(env_id, revision_ref, stream="stderr" if stderr else "stdout",
                                                        replica=replica, lines=lines, follow=follow)
        if obj.json_mode and not follow:
            obj.out.result({"ok": True, "lines": list(produced)}, lambda c: None)
            return
        try:
            for line in produced:
                sys.stdout.write((json.dumps({"line": line}) if obj.json_mode else line) + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return  # Ctrl-C ends a --follow: not an error

    @revision.command("show")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("revision_ref", metavar="REVISION", shell_complete=complete_revision)
    @click.option("--deployment", "deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment, help="Look REVISION up in this deployment.")
    @click.option("--observe", is_flag=True,
                  help="Also ask the provider what it really has for the revision (present, serving, "
                       "replicas, restarts), as `env observe` does.")
    @click.pass_obj
    def revision_show(obj, env_id, revision_ref, deployment_ref, observe) -> None:
        """Show one revision document (REVISION: id, unique prefix or `latest`)."""
        from ..references import resolve_revision

        env = obj.store().load(env_id)
        dep = resolve_deployment(env, deployment_ref) if deployment_ref else None
        rev = env.revision(resolve_revision(env, revision_ref, dep))
        doc = _revision_json(rev)
        data: dict[str, Any] = {"ok": True, "revision": doc}
        if observe:
            seen = _operator(obj, _command_line()).observe(env_id).revisions.get(rev.revision_id)
            data["observed"] = None if seen is None else {
                "present": seen.present, "serving": seen.serving, "ready_replicas": seen.ready_replicas,
                "desired_replicas": seen.desired_replicas, "detail": seen.detail,
                **({"restarts": dict(seen.restarts)} if seen.restarts is not None else {})}
        shown = data if observe else doc
        obj.out.result(data, lambda c: c.print(json.dumps(shown, indent=2), markup=False))

    # ------------------------------------------------------------------ traffic

    @cli.group("traffic")
    def traffic_group() -> None:
        """Traffic splits in basis points (10000 = 100%)."""

    def _split_human(change):
        def human(console) -> None:
            split = change.split
            state = "applied" if change.changed else "unchanged (replayed)"
            weights = " ".join(f"{e.revision_id}={e.weight_bps}" for e in split.entries)
            console.print(f"deployment {split.deployment_id} split generation {split.generation} {state}: {weights}",
                          markup=False)
            if change.outcome.get("max_deviation_bps"):
                console.print(f"provider weights {change.outcome.get('provider_weights')} "
                              f"(max deviation {change.outcome['max_deviation_bps']} bps)", markup=False)
        return human

    def _split_json(change) -> dict[str, Any]:
        from .. import codec

        return {"ok": True, "changed": change.changed, "record_only": change.record_only,
                "split": codec.unstructure(change.split), "generation": change.generation,
                "provider": dict(change.outcome)}

    @traffic_group.command("set")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.argument("weights", metavar="REV=WEIGHT[,REV=WEIGHT...]")
    @click.option("--idempotency-key", help="A retry with the same key and weights is a no-op.")
    @click.option("--record-only", is_flag=True, help="Record without calling the provider.")
    @click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait for the provider.")
    @click.pass_obj
    def traffic_set(obj, env_id, deployment_ref, weights, idempotency_key, record_only, timeout) -> None:
        """Set the split: WEIGHT in basis points (9000) or percent (90%, 12.5%); total 10000."""
        with ProgressReporter(obj.out, "applying split") as progress:
            change = _operator(obj, _command_line(), progress).traffic_set(
                env_id, deployment_ref, weights, idempotency_key=idempotency_key, record_only=record_only,
                timeout=timeout)
        obj.out.result(_split_json(change), _split_human(change))

    @traffic_group.command("rollback")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--record-only", is_flag=True, help="Record without calling the provider.")
    @click.option("--timeout", type=click.FloatRange(min=0))
    @click.pass_obj
    def traffic_rollback(obj, env_id, deployment_ref, steps, record_only, timeout) -> None:
        """Restore the split as it was STEPS changes ago."""
        with ProgressReporter(obj.out, "rolling back") as progress:
            change = _operator(obj, _command_line(), progress).traffic_rollback(
                env_id, deployment_ref, steps=steps, record_only=record_only, timeout=timeout)
        obj.out.result(_split_json(change), _split_human(change))

    @traffic_group.command("show")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", required=False, shell_complete=complete_deployment)
    @click.pass_obj
    def traffic_show(obj, env_id, deployment_ref) -> None:
        """Show the recorded splits (generation, weights, how far back rollback can go)."""
        env = obj.store().load(env_id)
        splits = env.traffic_splits
        if deployment_ref:
            dep = resolve_deployment(env, deployment_ref)
            splits = tuple(s for s in splits if s.deployment_id == dep)
            if not splits:
                raise NoSplit(f"deployment {dep} has no traffic split yet",
                              hint=f"set one with `greentic-deployer traffic set {env_id} {dep} REV=10000`")
        from .. import codec
        from ..traffic import split_history

        rows = [{"deployment_id": s.deployment_id, "bundle_id": s.bundle_id, "generation": s.generation,
                 "entries": [{"revision_id": e.revision_id, "weight_bps": e.weight_bps} for e in s.entries],
                 "updated_at": codec.format_timestamp(s.updated_at), "updated_by": s.updated_by,
                 "idempotency_key": s.idempotency_key, "rollback_depth": len(split_history(s))}
                for s in splits]

        def human(console) -> None:
            if not rows:
                console.print("no traffic splits recorded", markup=False)
            for r in rows:
                console.print(f"deployment {r['deployment_id']} ({r['bundle_id']}) generation {r['generation']}, "
                              f"updated {r['updated_at']} by {r['updated_by']}, rollback depth {r['rollback_depth']}",
                              markup=False)
                for e in r["entries"]:
                    console.print(f"  {e['revision_id']}  {e['weight_bps']:>5} bps  ({e['weight_bps'] / 100:g}%)",
                                  markup=False)

        obj.out.result({"ok": True, "splits": rows}, human)
