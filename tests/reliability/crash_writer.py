"""The writer that test_reliability_crash kills: a fork server running one CLI change per child.

    python crash_writer.py HOME ENV_ID A B

For every line ``go <a>`` on stdin it forks a child that runs ONE full
``greentic-deployer traffic set ENV_ID shop A=<a>,B=<10000-a>`` in-process (through the
recording deployer when ``<a>`` is even, ``--record-only`` when odd) and exits; it prints the
child's pid, waits for it and prints ``reaped killed`` (SIGKILL) or ``reaped exited <code>``
with the child's run time in seconds. Forking an interpreter that has already imported the CLI
makes each attempt cost about one save, so hundreds of kills take seconds.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time

from greentic_core.cli import _register_commands, cli


def run(home: str, env_id: str, rev_a: str, rev_b: str, a: int) -> int:
    args = ["--home", home, "--actor", "crash", "--json", "traffic", "set", env_id, "shop",
            f"{rev_a}={a},{rev_b}={10000 - a}"]
    if a % 2:
        args.append("--record-only")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(args, prog_name="greentic-deployer", standalone_mode=False)
    return code or 0


def main() -> None:
    home, env_id, rev_a, rev_b = sys.argv[1:5]
    _register_commands()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cli.main(["--home", home, "--json", "env", "show", env_id], standalone_mode=False)  # warm-up, read only
    for line in sys.stdin:
        a = int(line.split()[1])
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                code = run(home, env_id, rev_a, rev_b, a)
            finally:
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        took = time.monotonic() - started
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            print(f"reaped killed {took:.6f}", flush=True)
        else:
            print(f"reaped exited {os.waitstatus_to_exitcode(status)} {took:.6f}", flush=True)


if __name__ == "__main__":
    main()
