"""Run every benchmark of the project and print one table of the headline figures.

    .venv/bin/python -m benchmarks [--quick] [--only NAME ...] [--verbose] [--json]
    python3 dev.py bench [same options]

Every ``benchmarks/<name>.py`` that defines ``main()`` is a benchmark; each runs in its own
subprocess (``python -m benchmarks.<name>``), one after the other, so they do not disturb each
other. The known ones are run with ``--json`` where they have it and their headline figures are
picked from that; an unknown one (a benchmark added later) is run as it is and its lines saying
``goal``/``ok``/``MISSED`` (else its last line) are its headline. A benchmark whose prerequisites
are missing (``wrk``/``nginx`` for the router, ``moto`` for AWS, ...) is skipped with one line
saying what to install; one that fails is reported with its exit code and last error line, and
the others still run. ``--quick`` passes each benchmark's short-run options (those that have
none run in full). Exit code: 0 when every benchmark that ran succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TIMEOUT = 3600
QUICK_TIMEOUT = 900

Figures = list[tuple[str, str]]


# --------------------------------------------------------------------------- headline extractors


def _spec_scale(doc: dict[str, Any]) -> Figures:
    rows = [(f"decode+validate {r['revisions']:,} revisions",
             f"{r['decode_validate_s'] * 1e3:.0f} ms ({r['ratio']:.2f}x json.loads)") for r in doc["results"]]
    rows += [(f"save {r['revisions']:,} revisions", f"{r['save_s'] * 1e3:.0f} ms") for r in doc["results"]]
    rows.append(("10k/1k scaling; goals", f"{doc['scaling']:.2f}x; {'met' if doc['goals_met'] else 'MISSED'}"))
    return rows


def _registry(text: str) -> Figures:
    rows = []
    for line in text.splitlines():
        match = re.match(r"\(([abc])\) (.*)", line.strip())
        if match:
            label = {"a": "plugins list vs import pluggy", "b": "discover() with extra dists",
                     "c": "per-call overhead"}[match[1]]
            rows.append((label, re.sub(r"\s{2,}", "  ", match[2])))
    return rows or _generic(text)


def _router(doc: dict[str, Any]) -> Figures:
    rows = [(f"{name} max req/s", f"{r['rps']:,.0f} (p99 {r['p99_ms']:.2f} ms)") for name, r in doc["max"].items()]
    rows.append(("router/nginx req/s", ", ".join(f"{k} {v:.2f}x" for k, v in doc["ratios"].items())))
    for name, r in doc["at_half"].items():
        rows.append((f"{name} p99 at {doc['half_nginx_rps']:,} req/s",
                     f"{r['p99_ms']:.2f} ms" + (" SATURATED" if r["saturated"] else "")))
    for name, r in doc["reloads"].items():
        rows.append((f"{name} reloads under load", f"{r['reloads_ok']} reloads, {r['non_2xx']} non-2xx, "
                                                    f"{r['socket_errors']} socket errors"))
    return rows


def _aws_calls(doc: dict[str, Any]) -> Figures:
    sizes = sorted(doc, key=int)
    rows = []
    growing = []
    for verb in doc[sizes[0]]:
        totals = [sum(doc[n][verb].values()) for n in sizes]
        rows.append((f"AWS calls: {verb}", " / ".join(f"N={n}: {t}" for n, t in zip(sizes, totals))))
        if "observe" not in verb and len(set(totals)) != 1:
            growing.append(verb)
    rows.append(("goal: no verb's calls grow with N", "ok" if not growing else "MISSED: " + ", ".join(growing)))
    return rows


def _load(doc: dict[str, Any]) -> Figures:
    s, rss = doc["sustained"], doc["rss_kb"]
    return [
        ("max rate (closed loop)", f"{doc['max']['rps']:,.0f} req/s"),
        ("sustained at half the max", f"{s['achieved_rps']:,.0f} req/s for {s['sent_in_seconds']:.0f} s, "
                                      f"{s['requests']:,} requests, {s['failed']} failed"),
        ("latency under load", f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms"),
        ("changes under load", f"{doc['split_changes']} split changes, {doc['drains']} drain"),
        ("router RSS start -> end", f"{rss['start'] / 1024:.1f} -> {rss['end'] / 1024:.1f} MiB "
                                    f"({'flat' if doc['rss_flat'] else 'GREW'})"),
    ]


def _cli(doc: dict[str, Any]) -> Figures:
    rows = [(r["command"], f"{r['median_ms']:.0f} ms ({r['ratio']:.2f}x import pluggy)"
             + (f", goal {r['goal']}: {'ok' if r['ok'] else 'MISSED'}" if r["goal"] else "")) for r in doc["rows"]]
    rows.append(("goals", "met" if doc["goals_met"] else "MISSED"))
    return rows


def _generic(text: str) -> Figures:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    picked = [line for line in lines if re.search(r"\bgoal\b|\bok\b|MISSED|verdict", line, re.IGNORECASE)]
    return [("", line[:160]) for line in (picked or lines[-1:])]


# --------------------------------------------------------------------------- prerequisites


def _missing_tools(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]


def _missing_modules(*modules: str) -> list[str]:
    return [module for module in modules if importlib.util.find_spec(module) is None]


@dataclass
class Bench:
    args: list[str] = field(default_factory=list)
    quick_args: list[str] = field(default_factory=list)
    parse: Callable[[Any], Figures] | None = None  # from the --json document (None: from the text)
    text_parse: Callable[[str], Figures] = _generic
    missing: Callable[[], str | None] = lambda: None


KNOWN: dict[str, Bench] = {
    "spec_scale": Bench(args=["--json"], parse=_spec_scale),
    "registry": Bench(quick_args=["--runs", "3", "--dists", "500"], text_parse=_registry),
    "router": Bench(args=["--json"], quick_args=["--duration", "1"], parse=_router,
                    missing=lambda: (f"missing {', '.join(m)} (e.g. `apt-get install -y wrk nginx-light`)"
                                     if (m := _missing_tools("wrk", "nginx")) else None)),
    "aws_calls": Bench(args=["--json"], parse=_aws_calls,
                       missing=lambda: (f"missing Python modules {', '.join(m)} (`pip install -e 'plugins/aws[test]'`)"
                                        if (m := _missing_modules("moto", "greentic_aws")) else None)),
    "k8s_calls": Bench(missing=lambda: (f"missing Python modules {', '.join(m)} (`pip install -e 'plugins/k8s[test]'`)"
                                        if (m := _missing_modules("greentic_k8s")) else None)),
    "cli": Bench(args=["--json"], quick_args=["--runs", "3"], parse=_cli,
                 missing=lambda: (f"missing Python modules {', '.join(m)}"
                                  if (m := _missing_modules("greentic_local_process")) else None)),
    "load": Bench(args=["--json"], quick_args=["--quick"], parse=_load,
                  missing=lambda: (f"missing Python modules {', '.join(m)}"
                                   if (m := _missing_modules("greentic_local_process", "aiohttp")) else None)),
}


def discover() -> list[str]:
    """The benchmark modules: ``benchmarks/*.py`` defining a top-level ``main``."""
    found = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        if re.search(r"^def main\(", path.read_text(errors="replace"), re.MULTILINE):
            found.append(path.stem)
    return found


# --------------------------------------------------------------------------- running


def run_one(name: str, quick: bool, verbose: bool) -> dict[str, Any]:
    bench = KNOWN.get(name, Bench())
    missing = bench.missing()
    if missing:
        return {"name": name, "status": "skipped", "reason": missing, "figures": [], "seconds": 0.0}
    argv = [sys.executable, "-m", f"benchmarks.{name}", *bench.args, *(bench.quick_args if quick else [])]
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              timeout=QUICK_TIMEOUT if quick else TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"name": name, "status": "failed", "reason": "timed out", "figures": [],
                "seconds": time.monotonic() - started}
    took = time.monotonic() - started
    if verbose:
        sys.stderr.write(proc.stdout + proc.stderr)
    result: dict[str, Any] = {"name": name, "seconds": took, "exit_code": proc.returncode, "figures": []}
    try:
        result["figures"] = bench.parse(json.loads(proc.stdout)) if bench.parse else bench.text_parse(proc.stdout)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        result["figures"] = _generic(proc.stdout)
        if proc.returncode == 0:
            result["parse_error"] = f"{type(exc).__name__}: {exc}"
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 0:
        result["status"] = "ok"
    elif proc.returncode == 2 and errors and re.search(r"missing|install", errors[-1], re.IGNORECASE):
        result.update(status="skipped", reason=errors[-1][:200])  # the benchmark's own prerequisite check
    else:
        result.update(status="failed", reason=(errors[-1] if errors else f"exit {proc.returncode}")[:200])
    return result


def render(results: list[dict[str, Any]], quick: bool) -> str:
    rows: list[tuple[str, str, str]] = []
    for r in results:
        if r["status"] == "skipped":
            rows.append((r["name"], "skipped", r["reason"]))
            continue
        if r["status"] == "failed":
            rows.append((r["name"], f"FAILED (exit {r.get('exit_code', '?')})", r["reason"]))
        for label, value in r["figures"] or [("", "(no figures)")]:
            rows.append((r["name"], label, value))
        rows.append((r["name"], "run time", f"{r['seconds']:.0f} s" + ("" if r["status"] == "ok" else "")))
    widths = [max(len(row[i]) for row in rows + [("benchmark", "figure", "value")]) for i in range(2)]
    lines = [f"# greentic benchmarks{' (--quick)' if quick else ''}: {sum(r['status'] == 'ok' for r in results)} ok, "
             f"{sum(r['status'] == 'failed' for r in results)} failed, "
             f"{sum(r['status'] == 'skipped' for r in results)} skipped",
             f"{'benchmark':<{widths[0]}}  {'figure':<{widths[1]}}  value",
             f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 5}"]
    previous = None
    for name, label, value in rows:
        lines.append(f"{name if name != previous else '':<{widths[0]}}  {label:<{widths[1]}}  {value}")
        previous = name
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (each benchmark's own quick options)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--verbose", action="store_true", help="also show each benchmark's own output (stderr)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"no benchmark named {', '.join(unknown)} (there are: {', '.join(names)})")
        names = [n for n in names if n in args.only]
    results = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = run_one(name, args.quick, args.verbose)
        print(f"  {name}: {result['status']} in {result['seconds']:.0f} s"
              + (f" ({result['reason']})" if result.get("reason") else ""), file=sys.stderr, flush=True)
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results, args.quick))
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
