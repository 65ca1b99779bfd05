"""A writer process of the store concurrency test: COUNT `traffic set` commands, in-process.

    python store_writer.py ENV_ID INDEX COUNT BARRIER_DIR RESULTS_FILE A B

The store comes from ``GREENTIC_STORE``. Each command is a full ``greentic-deployer`` command
(``cli.main(argv, standalone_mode=False)``: takes the lease, loads, validates, saves), without
paying an interpreter start per command. Change ``i`` sets ``A=a,B=10000-a`` with
``a = 1 + INDEX * COUNT + i``, unique over all writers, so no change is a no-op replay.
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
    env_id, index, count, barrier, results_file, rev_a, rev_b = sys.argv[1:8]
    index, count = int(index), int(count)
    barrier_dir = Path(barrier)
    (barrier_dir / f"ready-{index}").touch()
    deadline = time.monotonic() + 120
    while not (barrier_dir / "go").exists():  # start together: real contention on the lease
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    results = []
    for i in range(count):
        a = 1 + index * count + i
        argv = ["--json", "--actor", f"w{index}", "--lock-timeout", "600", "traffic", "set", env_id, "shop",
                f"{rev_a}={a},{rev_b}={10000 - a}", "--record-only"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                # without standalone mode click *returns* a command's exit code (ctx.exit(N)):
                # a refused command must not count as done
                returned = cli.main(argv, standalone_mode=False, prog_name="greentic-deployer")
                code = returned if isinstance(returned, int) else 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        results.append({"a": a, "code": code, "out": out.getvalue()})
    Path(results_file).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
