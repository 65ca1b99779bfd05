"""The dashboard's actions, each through the operator or the rollout module (blocking).

Same preconditions, same errors and the same audit trail as the CLI: the audit actor is the
dashboard's (``ui:<name>``) and the audit command says what was clicked
(``greentic-deployer ui: traffic set dev web 01H...=9000,01H...=1000``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from greentic_core import codec
from greentic_core.references import InvalidInput

from .backend import Backend

Progress = Callable[[str], None]

ROLLOUT_ACTIONS = ("pause", "resume", "abort", "promote")
REVISION_ACTIONS = ("drain", "archive")


def _command(*words: str) -> str:
    import shlex

    return "greentic-deployer ui: " + " ".join(shlex.quote(w) for w in words)


def _split_doc(change: Any) -> dict[str, Any]:
    return {"ok": True, "changed": change.changed, "generation": change.generation,
            "split": codec.unstructure(change.split), "provider": dict(change.outcome)}


def parse_weights(raw: Any) -> list[tuple[str, int]]:
    """``{"REV": bps, ...}`` (or ``[[REV, bps], ...]``) -> pairs; basis points are integers."""
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(p, list) and len(p) == 2 for p in raw):
        items = [(p[0], p[1]) for p in raw]
    else:
        raise InvalidInput("weights must be an object {revision: basis points}")
    pairs = []
    for rev, bps in items:
        if not isinstance(rev, str) or not rev:
            raise InvalidInput("a revision in weights is not a string")
        if isinstance(bps, bool) or not isinstance(bps, int) or not 0 <= bps <= 10000:
            raise InvalidInput(f"the weight of {rev} must be an integer number of basis points, 0..10000")
        pairs.append((rev, bps))
    if not pairs:
        raise InvalidInput("weights is empty")
    return pairs


def traffic_set(backend: Backend, env_id: str, deployment: str, weights: Any, progress: Progress) -> dict[str, Any]:
    pairs = parse_weights(weights)
    text = ",".join(f"{rev}={bps}" for rev, bps in pairs)
    op = backend.operator(_command("traffic", "set", env_id, deployment, text), progress)
    progress(f"applying split {text}")
    return _split_doc(op.traffic_set(env_id, deployment, pairs))


def traffic_rollback(backend: Backend, env_id: str, deployment: str, steps: Any, progress: Progress) -> dict[str, Any]:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInput("steps must be an integer >= 1")
    op = backend.operator(_command("traffic", "rollback", env_id, deployment, f"--steps={steps}"), progress)
    progress(f"rolling back {steps} step(s)")
    return _split_doc(op.traffic_rollback(env_id, deployment, steps=steps))


def rollout_action(backend: Backend, env_id: str, deployment: str, action: str, reason: Any,
                   progress: Progress) -> dict[str, Any]:
    from greentic_core import rollout

    if action not in ROLLOUT_ACTIONS:
        raise InvalidInput(f"unknown rollout action {action!r}")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("reason must be a string")
    words = ["rollout", action, env_id, deployment]
    if action == "abort" and reason:
        words.append(f"--reason={reason}")
    op = backend.operator(_command(*words), progress)
    progress(f"rollout {action}")
    if action == "abort":
        state = rollout.abort(op, env_id, deployment, reason=reason or None)
    else:
        state = getattr(rollout, action)(op, env_id, deployment)
    return {"ok": True, "phase": state.phase, "reason": state.reason, "passed_steps": state.passed_steps,
            "steps": len(state.steps)}


def revision_action(backend: Backend, env_id: str, revision: str, action: str, progress: Progress) -> dict[str, Any]:
    if action not in REVISION_ACTIONS:
        raise InvalidInput(f"unknown revision action {action!r}")
    op = backend.operator(_command("revision", action, env_id, revision), progress)
    progress(f"{action} {revision}")
    result = getattr(op, action)(env_id, revision)
    return {"ok": True, "revision_id": result.revision.revision_id, "from": result.starting_lifecycle.value,
            "lifecycle": result.revision.lifecycle.value, "generation": result.generation,
            "provider": dict(result.outcome)}
