"""Threat model of secrets: a secret answer never leaves the process, whatever its length.

Who attacks: anyone who reads what the deployer prints (terminal scroll-back, CI logs), its
``--json`` output, ``--debug`` tracebacks, the audit log or ``env history``. What must hold: a
secret answer (a ``writeOnly`` property of the deployer's answers schema) quoted by a provider
error appears in none of them, not whole and not in pieces. Long texts are cut (to stay one
readable line) only *after* secrets were scrubbed from the whole text; cutting first left a
long secret's head and tail behind, where scrubbing no longer found it.

Covered elsewhere: the secret never reaches ``env show``, the audit of ``env init`` or the rest
of the store after a full lifecycle (``tests/test_cli.py::test_one_audit_event_per_mutation_and_the_secret_never_leaks``),
nor outputs of a short secret quoted in a raw exception (``test_reliability_security.py``).
"""

from __future__ import annotations

import json
import string

import pytest

import fault_plugin
from reliability_harness import Cli

#: 1,225 characters, longer than the 1,000-character cut of error messages, none repeated in a
#: way that would make a piece of it appear by chance
LONG_SECRET = "".join(string.ascii_letters[(i * 7) % 52] + string.digits[(i * 3) % 10] for i in range(612)) + "Z"


def pieces(secret: str, size: int = 24) -> list[str]:
    """Overlapping windows of the secret: any of them in an output means part of it leaked."""
    return [secret[i:i + size] for i in range(0, len(secret) - size + 1, size // 2)]


def leaked(text: str) -> list[str]:
    return [piece for piece in pieces(LONG_SECRET) if piece in text]


@pytest.mark.parametrize("debug", [False, True])
def test_a_long_secret_quoted_by_a_provider_never_leaks_whole_or_in_pieces(cli: Cli, debug: bool) -> None:
    assert len(LONG_SECRET) == 1225
    cli.init(fault_plugin.NAME, answers={"region": "eu-west-1", "token": LONG_SECRET})
    cli.json("deployment", "add", "dev", "shop")
    rid = cli.stage()
    cli.fault("warm:leak")
    flags = ("--debug",) if debug else ()
    human = cli.run(*flags, "revision", "warm", "dev", rid, code=1, json_mode=False)
    assert "***" in human.stderr  # the provider's message is shown, the secret replaced
    doc = cli.json(*flags, "revision", "warm", "dev", rid, code=1)
    assert doc["ok"] is False and "***" in doc["message"]
    proc, _ = cli.sub(*flags, "revision", "warm", "dev", rid)
    assert proc.returncode == 1
    history = cli.run("env", "history", "dev", json_mode=False).stdout + cli.json("env", "history", "dev").__repr__()
    for text in [*cli.outputs, history]:
        assert leaked(text) == [], leaked(text)[:3]
    events = cli.audit()
    assert sum(e.get("outcome") == "error" for e in events) == 3
    assert leaked(json.dumps(events)) == []
    holders = [str(p.relative_to(cli.home)) for p in cli.home.rglob("*")
               if p.is_file() and any(piece.encode() in p.read_bytes() for piece in pieces(LONG_SECRET)[:5])]
    assert holders == ["environments/dev/env-packs/deployer/answers.json"]


def test_errors_are_cut_only_where_they_leave_and_scrubbing_sees_the_whole_text() -> None:
    from greentic_core import ProviderError
    from greentic_core.operator import _scrub_error

    exc = ProviderError(f"backend said {LONG_SECRET} " + "x" * 3000)
    assert LONG_SECRET in exc.message  # whole until it is printed
    assert len(str(exc)) <= 1100 and len(exc.to_json()["message"]) <= 1100  # cut where it leaves
    _scrub_error(exc, (LONG_SECRET,))
    assert leaked(exc.message) == [] and leaked(str(exc)) == [] and leaked(json.dumps(exc.to_json())) == []
