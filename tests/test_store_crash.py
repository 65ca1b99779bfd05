"""Crashes on every backend: a writer SIGKILLed at random points, 25 times per backend
(``GREENTIC_STORE_CRASH_ROUNDS`` for more). After each kill the document is the old or a newer
one and always valid, the next writer gets the lease (after the TTL, not before, where leases
expire), and the audit log accounts for every saved generation, gap-free."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greentic_core import codec
from store_backends import Backend, backend, moto_server, pg_cluster  # noqa: F401  (fixtures)

WRITER = Path(__file__).resolve().parent / "store_crash_writer.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROUNDS = int(os.environ.get("GREENTIC_STORE_CRASH_ROUNDS", "25"))
TTL = 0.5

pytestmark = pytest.mark.timeout(900)


def test_a_writer_killed_anywhere_leaves_a_valid_document_and_a_recoverable_lease(backend: Backend) -> None:
    rng = random.Random(f"store-crash-{backend.name}")  # derandomized: the same kill points every run
    env = codec.load_environment((FIXTURES / "upstream-full.json").read_bytes())
    env_id = env.environment_id
    store = backend.store(lock_timeout=60.0, lock_ttl=TTL)
    store.create(env, audit_event={"actor": "test", "command": "pytest", "verb": "crash.create", "outcome": "ok"})
    last = store.load(env_id).generation
    saves_seen = 0
    for round_ in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, str(WRITER), backend.url, env_id, str(TTL)], stdout=subprocess.PIPE,
                                text=True, env=backend.process_env())
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))  # the random kill point (the writer saves in a loop meanwhile)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        held = store.lease(env_id)  # what the dead writer held when it died (it renews nothing now)
        saves_seen += sum(1 for line in proc.stdout if line.startswith("saved"))

        current = store.load(env_id)  # decodes and validates: never a torn or invalid document
        assert current.generation >= last, f"round {round_}: the document went back in time"
        assert current.name in (env.name, f"save-{current.generation}")
        last = current.generation

        with store.transaction(env_id) as tx:  # the lease is recovered (after the TTL where it expires)
            if held is not None and store.lease_expires:
                assert held.pid == proc.pid
                assert tx.lease.acquired >= held.expires, f"round {round_}: took a live lease"
            elif held is not None:  # a flock is released by the kernel with its holder
                raise AssertionError(f"round {round_}: the dead writer's file lock is still held")
            assert tx.env.generation == last
        events = store.audit_events(env_id)  # the transaction above recovered a pending event
        saves = sorted(e["generation_after"] for e in events if e["generation_after"] != e["generation_before"])
        assert saves == list(range(1, last + 1)), f"round {round_}: audit gaps {saves[-5:]} vs generation {last}"
    assert saves_seen > 0 and last > 1  # the writers did save between the kills
