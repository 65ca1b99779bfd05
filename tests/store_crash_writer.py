"""A writer the store crash test kills with SIGKILL at a random point.

    python store_crash_writer.py URL ENV_ID TTL

Saves the environment ENV_ID over and over (each save a new generation, with its audit
event, backup and runtime-config), printing ``saved N`` after each, until it is killed.
"""

from __future__ import annotations

import sys

import attrs

from greentic_core.store import StoreOptions, open_store


def main() -> int:
    url, env_id, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = open_store(url, options=StoreOptions(actor="crash", command="store_crash_writer", lock_ttl=ttl,
                                                 lock_timeout=60.0, max_backups=5))
    print("ready", flush=True)
    n = 0
    while True:
        with store.transaction(env_id) as tx:
            n += 1
            saved = tx.save(attrs.evolve(tx.env, name=f"save-{tx.env.generation + 1}"),
                            audit_event={"actor": "crash", "command": "store_crash_writer", "verb": "crash.save",
                                         "outcome": "ok", "n": n})
        print(f"saved {saved.generation}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
