"""``plan``, ``apply`` and ``rollout status|pause|resume|abort|promote``: the desired-state commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .completion import complete_deployment, complete_desired_file, complete_env
from .output import ProgressReporter

_SIGN = {"add-deployment": "+", "stage": "+", "warm": "~", "traffic": "~", "drain": "-", "archive": "-"}
_AFTER = {"warm": "ready", "drain": "inactive", "archive": "archived"}


def _operator(obj, progress=None):
    from ..operator import Operator
    from .operator_commands import _command_line

    return Operator(obj.store(), obj.registry(), actor=obj.actor, command=_command_line(), progress=progress)


def _analysis_text(analysis) -> str:
    parts = []
    if analysis.max_error_rate is not None:
        parts.append(f"error rate <= {analysis.max_error_rate:.2%}".replace(".00%", "%"))
    if analysis.max_p99_ms is not None:
        parts.append(f"p99 <= {analysis.max_p99_ms:g} ms")
    if analysis.min_requests:
        parts.append(f">= {analysis.min_requests} requests")
    source = getattr(analysis, "source", None)
    if source is not None and source.type != "provider":
        parts.append(f"from {source.type}")
    return "analysis: " + (", ".join(parts) or "canary serving")


def _step_line(step) -> tuple[str, str, str]:
    action = step.action.value
    if action == "add-deployment":
        routes = ", ".join([*step.hosts, *step.path_prefixes])
        return _SIGN[action], f"{action:<15}{step.bundle_id}", routes
    if action == "traffic":
        weights = " ".join(f"{ref.short()}={w / 100:g}%" for ref, w in step.weights)
        note = step.reason
        if step.canary is not None:
            c = step.canary
            bits = [f"canary {c.index + 1}/{c.count}"]
            if c.pause_seconds:
                bits.append(f"pause {c.pause_seconds:g}s")
            if c.analysis is not None:
                bits.append(_analysis_text(c.analysis))
            if c.resumed:
                bits.append("resumed")
            note = ", ".join(bits)
        return _SIGN[action], f"{action:<15}{weights}", note
    label = step.revision.label() if step.revision else "?"
    note = ""
    if action in _AFTER:
        note = f"{step.from_lifecycle or 'staged'} -> {_AFTER[action]}"
    if step.reason:
        note = f"{note} ({step.reason})" if note else step.reason
    return _SIGN[action], f"{action:<15}{label}", note


def _print_plan(console, plan, source: str) -> None:
    if plan.empty and not plan.blocked:
        console.print(f"environment {plan.env_id} matches {source}: nothing to do", markup=False)
    else:
        console.print(f"plan for environment {plan.env_id}: {len(plan.steps)} step(s)", markup=False)
    current = None
    for number, step in enumerate(plan.steps, 1):
        if step.bundle_id != current:
            current = step.bundle_id
            console.print(f"deployment {step.bundle_id}" + (f" ({step.deployment_id})" if step.deployment_id
                                                            else " (new)"), markup=False)
        sign, text, note = _step_line(step)
        console.print(f"  {number:>3}. {sign} {text:<48} {note}".rstrip(), markup=False)
    for blocked in plan.blocked:
        console.print(f"blocked: deployment {blocked.bundle_id}: {blocked.reason}", markup=False)
        console.print(f"  hint: {blocked.hint}", markup=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    for warning in plan.warnings:
        console.print(f"warning: {warning}", markup=False)


def register(cli: click.Group) -> None:
    file_option = click.option("-f", "--file", "file", required=True,
                               type=click.Path(dir_okay=False, path_type=Path), shell_complete=complete_desired_file,
                               help="The desired-state file (YAML or JSON; `schema deploy` prints its schema).")

    @cli.command("plan")
    @file_option
    @click.argument("env_id", shell_complete=complete_env)
    @click.pass_obj
    def plan_command(obj, file: Path, env_id: str) -> None:
        """Show the steps that bring ENV to the desired state in FILE (changes nothing)."""
        from .. import desired
        from ..apply import current_plan

        wanted = desired.load(file)
        plan = current_plan(_operator(obj), env_id, wanted)
        obj.out.result({"ok": True, "plan": plan.to_json()}, lambda console: _print_plan(console, plan, str(file)))

    @cli.command("apply")
    @file_option
    @click.argument("env_id", shell_complete=complete_env)
    @click.option("--timeout", type=click.FloatRange(min=0), help="Seconds each provider call may take.")
    @click.option("--detach", is_flag=True,
                  help="Check and record the desired state, then return: `greentic-deployer agent` carries it on.")
    @click.pass_obj
    def apply_command(obj, file: Path, env_id: str, timeout: float | None, detach: bool) -> None:
        """Bring ENV to the desired state in FILE, step by step; run again to resume."""
        from .. import desired
        from .. import rollout as rollout_mod
        from ..apply import apply

        if detach:
            _apply_detached(obj, file, env_id)
            return
        wanted = desired.load(file)

        def on_step(index: int, total: int, step, phase: str) -> None:
            if phase == "start":
                reporter._title = f"[{index + 1}/{total}] {step.describe()}"  # noqa: SLF001 - our own reporter
                reporter(step.describe())
            elif phase == "done":
                obj.out.info(f"[{index + 1}/{total}] {step.describe()}: done")
            elif phase == "skipped":
                obj.out.info(f"[{index + 1}/{total}] {step.describe()}: skipped (rollout promoted)")

        try:
            with ProgressReporter(obj.out, "applying") as reporter:
                result = apply(_operator(obj, reporter), env_id, wanted, on_step=on_step, timeout=timeout)
        finally:
            rollout_mod.flush_notifications()

        def human(console) -> None:
            if not result.results:
                console.print(f"environment {env_id} already matches {file}: nothing to do", markup=False)
            else:
                console.print(f"applied {len(result.results)} step(s) to environment {env_id}", markup=False)
            for warning in result.plan.warnings:
                console.print(f"warning: {warning}", markup=False)

        obj.out.result({"ok": True, **result.to_json()}, human)

    def _apply_detached(obj, file: Path, env_id: str) -> None:
        from ..apply import detach
        from ..desired import DesiredStateError

        try:
            text = file.read_bytes()
        except OSError as exc:
            raise DesiredStateError(f"cannot read {file}: {exc.strerror or exc}",
                                    hint="check the path given to -f") from None
        op = _operator(obj)
        plan = detach(op, env_id, text, source=str(file))

        def human(console) -> None:
            _print_plan(console, plan, str(file))
            console.print(f"recorded for the agent: `greentic-deployer agent {env_id}` carries it on "
                          f"(`greentic-deployer rollout status {env_id} BUNDLE` follows a rollout)", markup=False)

        obj.out.result({"ok": True, "detached": True, "plan": plan.to_json()}, human)

    @cli.group("rollout")
    def rollout_group() -> None:
        """Canary rollouts started by `apply`: status, pause, resume, abort, promote."""

    def _state_doc(state) -> dict[str, Any]:
        return {"ok": True, "rollout": state.public_json() if hasattr(state, "public_json") else state}

    def _state_human(doc: dict[str, Any]):
        def human(console) -> None:
            names = doc.get("names", {})

            def label(rid: str) -> str:
                return names.get(rid) or rid

            steps = doc.get("steps", [])
            console.print(f"rollout of {doc['bundle_id']} ({doc['deployment_id']}): {doc['phase']}, "
                          f"{doc.get('passed_steps', 0)}/{len(steps)} step(s) passed"
                          + (" (promoted)" if doc.get("promoted") else ""), markup=False)
            if doc.get("reason"):
                console.print(f"  reason: {doc['reason']}", markup=False)
            console.print("  baseline: " + " ".join(f"{label(r)}={w / 100:g}%" for r, w in doc.get("baseline", [])),
                          markup=False)
            console.print("  target:   " + " ".join(f"{label(r)}={w / 100:g}%" for r, w in doc.get("target", [])),
                          markup=False)
            if doc.get("driven_by"):
                console.print(f"  driven by: {doc['driven_by']}", markup=False)
            if doc.get("next_step_due"):
                console.print(f"  next step due: {doc['next_step_due']}", markup=False)
            for warning in doc.get("warnings", []):
                console.print(f"  warning: {warning}", markup=False)
            if "current_split" in doc:
                console.print("  now:      " + " ".join(f"{label(r)}={w / 100:g}%" for r, w in doc["current_split"]),
                              markup=False)
            for analysis in doc.get("analyses", []):
                rate = analysis.get("error_rate")
                numbers = [f"{analysis.get('requests')} requests"] if analysis.get("requests") is not None else []
                if rate is not None:
                    numbers.append(f"error rate {rate:.1%}")
                if analysis.get("p99_ms") is not None:
                    numbers.append(f"p99 {analysis['p99_ms']:g} ms")
                reasons = "; ".join(analysis.get("reasons", []))
                console.print(f"  step {analysis['step']}: {analysis['verdict']} ({', '.join(numbers) or 'no metrics'})"
                              + (f": {reasons}" if reasons else ""), markup=False)
        return human

    @rollout_group.command("status")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.pass_obj
    def rollout_status(obj, env_id: str, deployment_ref: str) -> None:
        """Phase, steps passed, analyses and the split now."""
        from .. import rollout

        doc = rollout.status(_operator(obj), env_id, deployment_ref)
        obj.out.result({"ok": True, "rollout": doc}, _state_human(doc))

    @rollout_group.command("pause")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.pass_obj
    def rollout_pause(obj, env_id: str, deployment_ref: str) -> None:
        """Hold the rollout at its current step (a running apply stops after its pause)."""
        from .. import rollout

        state = rollout.pause(_operator(obj), env_id, deployment_ref)
        obj.out.result(_state_doc(state), _state_human(state.public_json()))

    @rollout_group.command("resume")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.pass_obj
    def rollout_resume(obj, env_id: str, deployment_ref: str) -> None:
        """Let a paused rollout continue (run apply again), or clear an abort to retry the target."""
        from .. import rollout

        state = rollout.resume(_operator(obj), env_id, deployment_ref)
        obj.out.info(f"run `greentic-deployer apply -f FILE {env_id}` to continue, or let "
                     f"`greentic-deployer agent {env_id}` carry it on")
        obj.out.result(_state_doc(state), _state_human(state.public_json()))

    @rollout_group.command("abort")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.option("--reason", help="Why (recorded in the rollout state and the audit log).")
    @click.pass_obj
    def rollout_abort(obj, env_id: str, deployment_ref: str, reason: str | None) -> None:
        """Traffic back to the stable revision(s) now; the canary revisions are recorded failed."""
        from .. import rollout

        with ProgressReporter(obj.out, "aborting") as progress:
            state = rollout.abort(_operator(obj, progress), env_id, deployment_ref, reason=reason)
        obj.out.result(_state_doc(state), _state_human(state.public_json()))

    @rollout_group.command("promote")
    @click.argument("env_id", shell_complete=complete_env)
    @click.argument("deployment_ref", metavar="DEPLOYMENT", shell_complete=complete_deployment)
    @click.pass_obj
    def rollout_promote(obj, env_id: str, deployment_ref: str) -> None:
        """Skip the remaining steps and analyses: the target split now."""
        from .. import rollout

        with ProgressReporter(obj.out, "promoting") as progress:
            state = rollout.promote(_operator(obj, progress), env_id, deployment_ref)
        obj.out.result(_state_doc(state), _state_human(state.public_json()))
