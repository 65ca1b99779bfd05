"""Which host runs an environment's host-local provider state, when the store is shared.

A deployer whose descriptor says ``capabilities.host_local_state`` keeps what it runs on the
machine that runs the command (local-process: its processes, pid files and router table, in
``state_dir``). Such an environment can be served from one host only. On a shared store
(PostgreSQL, S3) the first command that changes it through its provider records this host in
the store attachment ``state-host.json``; a command from another host that would change it
through the provider is refused (:class:`WrongHost`, exit 3) naming the host that runs it,
until that host is replaced on purpose: ``greentic-deployer env host ENV --take-over``
(audited as ``env.host``). Reads (show, history, observe, doctor) and ``--record-only``
changes work from any host: they touch no provider state.

The file store keeps provider state next to the document, on the one machine that has it, so
nothing is recorded there and nothing changes for it.

This host's name is ``$GREENTIC_HOSTNAME`` if set, else the OS hostname: the name leases and
the audit log use too (set it where the OS hostname is not stable, e.g. in containers).
"""

from __future__ import annotations

import json
from typing import Any

from .codec import format_timestamp, utc_now
from .errors import GreenticError

__all__ = ["ATTACHMENT", "WrongHost", "applies", "check", "recorded", "take_over", "this_host"]

#: the store attachment naming the host that runs an environment's host-local provider state
ATTACHMENT = "state-host.json"


class WrongHost(GreenticError):
    """Another host runs this environment's host-local provider state."""

    kind = "conflict"
    exit_code = 3


def this_host() -> str:
    """``$GREENTIC_HOSTNAME``, else the OS hostname."""
    from .store.contract import _host

    return _host()


def applies(store: Any, bound: Any) -> bool:
    """Whether ``bound``'s provider keeps host-local state and ``store`` is shared."""
    return store.scheme != "file" and bool(getattr(bound.descriptor.capabilities, "host_local_state", False))


def recorded(store: Any, env_id: str) -> dict[str, Any] | None:
    """The recorded host (``{"host", "since", "by", "deployer"}``), or None when none is."""
    raw = store.read_attachment(env_id, ATTACHMENT)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("host"), str) else None


def _record(store: Any, env_id: str, *, actor: str, deployer: str) -> dict[str, Any]:
    record = {"host": this_host(), "since": format_timestamp(utc_now()), "by": actor, "deployer": deployer}
    store.write_attachment(env_id, ATTACHMENT, (json.dumps(record, indent=2) + "\n").encode())
    return record


def check(store: Any, env_id: str, *, actor: str, deployer: str) -> None:
    """Before a provider call that changes ``env_id``: record this host if none is, else
    refuse unless it is this host. Called under the environment's lease."""
    owner = recorded(store, env_id)
    here = this_host()
    if owner is None:
        _record(store, env_id, actor=actor, deployer=deployer)
    elif owner["host"] != here:
        raise WrongHost(
            f"environment {env_id!r} runs its {deployer} state on host {owner['host']}, not on this host ({here})",
            hint=f"run the command on {owner['host']}; or move the environment to this host with "
                 f"`greentic-deployer env host {env_id} --take-over` (what runs on {owner['host']} keeps running "
                 "until it is stopped there)",
            env_id=env_id, host=owner["host"], this_host=here)


def take_over(store: Any, env_id: str, *, actor: str, command: str, deployer: str) -> tuple[dict[str, Any] | None,
                                                                                            dict[str, Any]]:
    """Record this host as the one that runs ``env_id``'s state, under its lease, audited as
    ``env.host``; ``(previous record or None, new record)``."""
    with store.transaction(env_id) as tx:
        previous = recorded(store, env_id)
        record = _record(store, env_id, actor=actor, deployer=deployer)
        tx.audit({"actor": actor, "command": command, "verb": "env.host", "outcome": "ok", "host": record["host"],
                  "previous_host": previous["host"] if previous is not None else None})
    return previous, record
