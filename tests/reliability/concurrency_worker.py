"""One worker process of test_reliability_concurrency: COUNT changes through the CLI, in-process.

    python concurrency_worker.py HOME ENV_ID INDEX COUNT BARRIER_DIR RESULTS_FILE A B

Each change is a full ``greentic-deployer`` command run by ``cli.main(argv,
standalone_mode=False)`` in this process (so each one takes the environment's lock, loads,
validates, calls the provider and saves exactly as a separate CLI process would), without
paying an interpreter start per command. Change ``i``:

* even ``i``: ``traffic set ENV shop A=a,B=10000-a`` with ``a = 1 + INDEX * COUNT + i`` (unique
  over all workers, so no change is ever a no-op replay); every other one ``--record-only``;
* ``i % 4 == 1``: ``revision stage ENV shop`` (every other one ``--record-only``);
* ``i % 4 == 3``: ``revision warm ENV <the revision this worker staged last>`` (idem).

The result of every command (exit code, JSON document) is written to RESULTS_FILE.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

from greentic_core.cli import cli


def main() -> int:
    home, env_id, index, count, barrier, results_file, rev_a, rev_b = sys.argv[1:9]
    index, count = int(index), int(count)
    barrier_dir = Path(barrier)
    (barrier_dir / f"ready-{index}").touch()
    deadline = time.monotonic() + 120
    while not (barrier_dir / "go").exists():  # start together: real contention on the lock
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    tag = f"w{index}"
    staged: str | None = None
    results = []
    for i in range(count):
        record_only = (i // 4) % 2 == 1
        if i % 2 == 0:
            a = 1 + index * count + i
            kind, args = "traffic.set", ["traffic", "set", env_id, "shop", f"{rev_a}={a},{rev_b}={10000 - a}"]
        elif i % 4 == 1:
            kind, args = "revision.stage", ["revision", "stage", env_id, "shop"]
        else:
            kind, args = "revision.warm", ["revision", "warm", env_id, str(staged)]
        if record_only:
            args.append("--record-only")
        out, err = io.StringIO(), io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(["--home", home, "--actor", tag, "--json", *args], prog_name="greentic-deployer",
                                standalone_mode=False)
            except SystemExit as exc:  # pragma: no cover - a command calling sys.exit
                code = exc.code
        took = time.monotonic() - started
        try:
            doc = json.loads(out.getvalue())
        except ValueError:
            doc = {"unparsable": out.getvalue()[-500:]}
        if kind == "revision.stage" and code in (None, 0):
            staged = doc["revision_id"]
        results.append({"i": i, "kind": kind, "code": code or 0, "doc": doc, "stderr": err.getvalue()[-500:],
                        "record_only": record_only, "seconds": round(took, 4)})
    Path(results_file).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
