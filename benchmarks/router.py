"""Router (issue 5): the local-process router next to nginx, against the same fast backend.

    .venv/bin/python -m benchmarks.router        (or: python benchmarks/router.py; --json, --duration S)

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install -y wrk nginx-light``). Run as root, the
script installs them when they are missing; otherwise it says what to run and exits 2.

Everything listens on 127.0.0.1 (free ports) and is stopped at the end, on failure too.

The backend is one nginx (1 worker) answering ``return 200 "ok"`` on two ports, standing for
two revisions; the same two ports are the backends of every proxy, split 90/10:

- **direct**: wrk straight to the backend's first port (the ceiling);
- **nginx**: nginx 1 worker as the equivalent reverse proxy (``upstream`` with the two ports at
  weights 9 and 1 and ``keepalive 64``, HTTP/1.1 upstream, X-Forwarded-* headers set, the
  chosen upstream echoed in a response header);
- **router 1w** / **router 2w**: ``python -m greentic_local_process.router`` with a table of one
  deployment (two revisions at 9000/1000 bps on the two ports), ``--workers 1`` and ``2``.

(1) Throughput and latency: ``wrk -t1 -c32 -dS --latency`` after a 1 s warm-up run; requests/s
    and the p50/p99 wrk reports, then the ratios router/nginx.
(2) p99 at half of nginx's maximum rate (wrk2 is not available here): wrk with a Lua
    ``delay()`` of 1 ms between the requests of each connection, so each connection offers at
    most about 1000/(1 + latency in ms) requests per second; the number of connections is
    adjusted (up to 5 calibration runs of 2 s) until the achieved rate is within 10 % of the
    target, then a measured run gives the p99 (adjusted and measured once more if it drifted
    off). A proxy that cannot reach the target even with 256 connections is reported as
    saturated, with the rate it reached. (Still a
    closed loop: a stalled connection stops offering load, so this understates tail latency
    compared with a true constant-rate generator.)
With ``--baseline REF`` (a git ref, e.g. ``HEAD~3``), the router package as it was at REF is
run too (``git archive``, its own ``PYTHONPATH``), and "router 1w" and "baseline 1w" are
measured alternately (3 rounds each, medians) for a before/after throughput ratio in the same
run on the same machine.

(3) A weight change under load: while wrk runs against the router, a thread rewrites
    ``router-table.json`` with the weights swapped (9000/1000 <-> 1000/9000, generation + 1)
    and POSTs ``/reload`` to the admin port every 0.5 s; wrk's non-2xx count and socket errors
    must both be zero, and every reload must have been accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONNECTIONS = 32
CALIBRATION_SECONDS = 2.0
MAX_CONNECTIONS = 256
RELOAD_EVERY = 0.5
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- tools


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        print(f"missing: {', '.join(missing)}. Install them first, e.g. "
              "`sudo apt-get update && sudo apt-get install -y wrk nginx-light` (Debian/Ubuntu), then run this again.",
              file=sys.stderr)
        sys.exit(2)
    print(f"installing {', '.join(missing)} with apt-get (running as root)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "wrk", "nginx-light"], check=True, env=env)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def tool_version(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------- processes


class Nginx:
    """One nginx in the foreground with its own prefix directory and config."""

    def __init__(self, workdir: Path, name: str, http_body: str, workers: int = 1) -> None:
        self.prefix = workdir / name
        (self.prefix / "tmp").mkdir(parents=True)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    client_body_temp_path {self.prefix}/tmp/body;
    proxy_temp_path {self.prefix}/tmp/proxy;
{http_body}
}}
""")
        argv = [nginx_binary(), "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.prefix / "error.log")]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx {name} config rejected: {check.stderr.strip()}")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def router_table(generation: int, listen: str, backends: list[str], weights: tuple[int, int]) -> dict[str, Any]:
    return {"generation": generation, "env_id": "bench", "listen": listen, "deployments": [{
        "deployment_id": "bench", "bundle_id": "bench", "split_generation": generation,
        "hosts": [], "path_prefixes": [],
        "backends": [{"revision_id": f"rev-{i}", "weight_bps": w, "address": a}
                     for i, (w, a) in enumerate(zip(weights, backends))],
    }]}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class Router:
    """``python -m greentic_local_process.router`` with ``--workers N``."""

    def __init__(self, workdir: Path, name: str, backends: list[str], workers: int,
                 pythonpath: str | None = None) -> None:
        self.dir = workdir / name
        self.dir.mkdir()
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.backends = backends
        self.generation = 1
        self.weights = (9000, 1000)
        write_json_atomic(self.dir / "router-table.json", router_table(1, self.listen, backends, self.weights))
        log = open(self.dir / "router.log", "ab")
        env = dict(os.environ)
        if pythonpath:  # another copy of the package (the baseline) first on the path
            env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "greentic_local_process.router", "--state-dir", str(self.dir),
                 "--workers", str(workers), "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.info = json.loads((self.dir / "router.json").read_text())
                if self.info.get("pid") == self.proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"router {name} did not start: {(self.dir / 'router.log').read_text()[-2000:]}")
            time.sleep(0.05)
        wait_listening(self.port)

    def admin(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        token_file = self.dir / "router-admin.token"  # absent in a baseline from before admin tokens
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
        request = urllib.request.Request(f"http://{self.info['admin']}{path}", method=method,
                                         data=b"" if method == "POST" else None, headers=headers)
        try:
            with NO_PROXY.open(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def swap_weights(self) -> bool:
        """Write the next table with the weights swapped and make the router load it."""
        self.generation += 1
        self.weights = (self.weights[1], self.weights[0])
        write_json_atomic(self.dir / "router-table.json",
                          router_table(self.generation, self.listen, self.backends, self.weights))
        status, body = self.admin("POST", "/reload")
        return status == 200 and body.get("generation") == self.generation

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --------------------------------------------------------------------------- wrk


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unparsable latency {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def run_wrk(url: str, *, connections: int, seconds: float, script: Path | None = None) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    proc = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30)
    out = proc.stdout
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-1000:]}{proc.stderr[-1000:]}")
    result: dict[str, Any] = {"connections": connections, "command": " ".join(argv + [url])}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    for q in ("50", "99"):
        result[f"p{q}_ms"] = _ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(int(g) for g in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def measure_max(url: str, seconds: float) -> dict[str, Any]:
    run_wrk(url, connections=CONNECTIONS, seconds=1)  # warm-up: connections, pools, caches
    return run_wrk(url, connections=CONNECTIONS, seconds=seconds)


def p99_at_rate(url: str, target: float, seconds: float, script: Path) -> dict[str, Any]:
    """wrk with a 1 ms delay() per request; connections adjusted until the rate is near the target.

    Short calibration runs first, then the measured run (re-adjusted once more if it drifted
    off the target). ``saturated``: even MAX_CONNECTIONS did not reach 90 % of the target.
    """
    def near(rps: float) -> bool:
        return abs(rps - target) <= 0.1 * target

    def next_count(connections: int, rps: float) -> int:
        return min(MAX_CONNECTIONS, max(1, round(connections * target / max(rps, 1.0))))

    connections = max(1, round(target * 1.3 / 1000.0))
    calibrations = []
    saturated = False
    for _ in range(5):
        trial = run_wrk(url, connections=connections, seconds=CALIBRATION_SECONDS, script=script)
        calibrations.append((connections, round(trial["rps"])))
        if near(trial["rps"]):
            break
        if connections >= MAX_CONNECTIONS and trial["rps"] < target:
            saturated = True
            break
        connections = next_count(connections, trial["rps"])
    result = run_wrk(url, connections=connections, seconds=seconds, script=script)
    if not saturated and not near(result["rps"]):
        calibrations.append((connections, round(result["rps"])))
        connections = next_count(connections, result["rps"])
        result = run_wrk(url, connections=connections, seconds=seconds, script=script)
    result["saturated"] = (saturated or connections >= MAX_CONNECTIONS) and result["rps"] < 0.9 * target
    result["off_target"] = not near(result["rps"])
    result["target_rps"] = round(target)
    result["calibration"] = calibrations
    return result


def weight_changes_under_load(router: Router, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    reloads = {"ok": 0, "failed": 0}

    def reloader() -> None:
        while not stop.wait(RELOAD_EVERY):
            if router.swap_weights():
                reloads["ok"] += 1
            else:
                reloads["failed"] += 1

    thread = threading.Thread(target=reloader, daemon=True)
    first_generation = router.generation
    thread.start()
    try:
        result = run_wrk(f"http://{router.listen}/", connections=CONNECTIONS, seconds=seconds)
    finally:
        stop.set()
        thread.join(10)
    status = router.admin("GET", "/status")[1]
    result["reloads_ok"] = reloads["ok"]
    result["reloads_failed"] = reloads["failed"]
    result["generations"] = (first_generation, int(status.get("generation", -1)))
    result["router_errors"] = sum(int(r.get("errors", 0)) for r in status.get("revisions", {}).values())
    return result


# --------------------------------------------------------------------------- the run


def extract_baseline(ref: str, workdir: Path) -> str:
    """The local-process package as it was at git ``ref``, unpacked under ``workdir``; its path."""
    root = Path(__file__).resolve().parent.parent
    target = workdir / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "archive", ref, "plugins/local_process/greentic_local_process"], cwd=root,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target / "plugins" / "local_process")


def compare_with_baseline(current: str, baseline: str, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Max throughput of the current and the baseline router, measured alternately; medians."""
    rps: dict[str, list[float]] = {"router 1w": [], "baseline 1w": []}
    for _ in range(rounds):
        for name, url in (("router 1w", current), ("baseline 1w", baseline)):
            rps[name].append(measure_max(url, seconds)["rps"])
    medians = {name: sorted(values)[len(values) // 2] for name, values in rps.items()}
    return {"runs": rps, "medians": medians, "ratio": round(medians["router 1w"] / medians["baseline 1w"], 3)}


def nginx_proxy_config(port: int, b1: int, b2: int, ws_address: str) -> str:
    """nginx as the equivalent reverse proxy: the 90/10 split, keep-alive upstreams, X-Forwarded-*,
    and a WebSocket location (Upgrade passed on) to the echo server."""
    return f"""
    upstream split {{
        server 127.0.0.1:{b1} weight=9;
        server 127.0.0.1:{b2} weight=1;
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://split;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            add_header X-Greentic-Revision $upstream_addr;
        }}
        location /ws {{
            proxy_pass http://{ws_address};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
        }}
    }}
"""


class WebSocketEcho:
    """An aiohttp WebSocket echo server in its own process (the backend of the WebSocket runs)."""

    def __init__(self) -> None:
        code = (
            "import asyncio, sys\n"
            "from aiohttp import web\n"
            "async def ws(request):\n"
            "    r = web.WebSocketResponse(); await r.prepare(request)\n"
            "    async for m in r: await r.send_str(m.data)\n"
            "    return r\n"
            "async def ok(request): return web.Response(text='ok')\n"
            "app = web.Application(); app.add_routes([web.get('/ws', ws), web.get('/', ok)])\n"
            "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None, access_log=None)\n"
        )
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.port)], stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_listening(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def websocket_rate(url: str, seconds: float, connections: int = 16) -> dict[str, Any]:
    """Echoed messages per second: ``connections`` clients each sending a message and waiting for
    its echo, for ``seconds`` (aiohttp's client, in a separate process)."""
    code = (
        "import asyncio, json, sys, time\n"
        "import aiohttp\n"
        "async def one(session, url, until, counts):\n"
        "    async with session.ws_connect(url) as ws:\n"
        "        n = 0\n"
        "        while time.monotonic() < until:\n"
        "            await ws.send_str('x' * 64); await ws.receive(); n += 1\n"
        "        counts.append(n)\n"
        "async def main(url, seconds, conns):\n"
        "    counts = []\n"
        "    async with aiohttp.ClientSession() as s:\n"
        "        until = time.monotonic() + seconds\n"
        "        await asyncio.gather(*(one(s, url, until, counts) for _ in range(conns)))\n"
        "    print(json.dumps({'messages': sum(counts)}))\n"
        "asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))\n"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, url, str(seconds), str(connections)], capture_output=True,
                         text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"websocket client failed against {url}: {out.stderr[-500:]}")
    messages = json.loads(out.stdout)["messages"]
    return {"messages": messages, "per_second": round(messages / seconds), "elapsed": round(time.monotonic() - started, 1)}


def run(seconds: float, baseline_ref: str | None = None) -> dict[str, Any]:
    ensure_tools()
    started = datetime.now(timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="greentic-router-bench-"))
    nginxes: list[Nginx] = []
    routers: list[Router] = []
    ws_backend: WebSocketEcho | None = None
    ws_router: Router | None = None
    report: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "wrk": tool_version(["wrk", "-v"]), "nginx": tool_version([nginx_binary(), "-v"]),
        "load_before": os.getloadavg(), "seconds": seconds, "connections": CONNECTIONS,
    }
    try:
        b1, b2, proxy_port = free_port(), free_port(), free_port()
        nginxes.append(Nginx(workdir, "backend", f"""
    server {{ listen 127.0.0.1:{b1}; location / {{ return 200 "ok\\n"; }} }}
    server {{ listen 127.0.0.1:{b2}; location / {{ return 200 "ok\\n"; }} }}
"""))
        ws_backend = WebSocketEcho()
        proxy2_port = free_port()
        for name, port, workers in (("proxy", proxy_port, 1), ("proxy-2w", proxy2_port, 2)):
            nginxes.append(Nginx(workdir, name, nginx_proxy_config(port, b1, b2, ws_backend.address), workers=workers))
        for port in (b1, b2, proxy_port, proxy2_port):
            wait_listening(port)
        backends = [f"127.0.0.1:{b1}", f"127.0.0.1:{b2}"]
        routers.append(Router(workdir, "router-1w", backends, workers=1))
        routers.append(Router(workdir, "router-2w", backends, workers=2))
        ws_router = Router(workdir, "router-ws", [ws_backend.address, ws_backend.address], workers=1)
        if baseline_ref:
            baseline = Router(workdir, "baseline-1w", backends, workers=1,
                              pythonpath=extract_baseline(baseline_ref, workdir))
            routers.append(baseline)
            report["baseline"] = {"ref": baseline_ref, **compare_with_baseline(
                f"http://{routers[0].listen}/", f"http://{baseline.listen}/", seconds)}
            routers.remove(baseline)
            baseline.stop()
        targets = {
            "direct": f"http://127.0.0.1:{b1}/",
            "nginx": f"http://127.0.0.1:{proxy_port}/",
            "nginx 2w": f"http://127.0.0.1:{proxy2_port}/",
            "router 1w": f"http://{routers[0].listen}/",
            "router 2w": f"http://{routers[1].listen}/",
        }
        paced = workdir / "paced.lua"
        paced.write_text("function delay()\n  return 1\nend\n")

        report["max"] = {name: measure_max(url, seconds) for name, url in targets.items()}
        nginx_rps = report["max"]["nginx"]["rps"]
        report["ratios"] = {name: round(report["max"][name]["rps"] / nginx_rps, 3) for name in ("router 1w", "router 2w")}
        # at equal worker counts: router N workers against nginx N workers
        report["equal_workers"] = {
            "1": round(report["max"]["router 1w"]["rps"] / nginx_rps, 3),
            "2": round(report["max"]["router 2w"]["rps"] / report["max"]["nginx 2w"]["rps"], 3),
        }
        half = nginx_rps / 2
        report["half_nginx_rps"] = round(half)
        report["at_half"] = {name: p99_at_rate(url, half, seconds, paced) for name, url in targets.items()
                             if name != "nginx 2w"}
        half2 = report["max"]["nginx 2w"]["rps"] / 2
        report["half_nginx_2w_rps"] = round(half2)
        report["at_half_2w"] = {name: p99_at_rate(targets[name], half2, seconds, paced)
                                for name in ("nginx 2w", "router 2w")}
        report["websocket"] = {
            "direct": websocket_rate(f"ws://{ws_backend.address}/ws", seconds),
            "nginx": websocket_rate(f"ws://127.0.0.1:{proxy_port}/ws", seconds),
            "router": websocket_rate(f"ws://{ws_router.listen}/ws", seconds),
        }
        report["at_half_own"] = {
            name: p99_at_rate(targets[name], report["max"][name]["rps"] / 2, seconds, paced)
            for name in ("router 1w", "router 2w")
        }
        report["reloads"] = {f"router {r.dir.name[-2:]}": weight_changes_under_load(r, seconds + 2) for r in routers}
        report["load_after"] = os.getloadavg()
        return report
    finally:
        for router in routers:
            router.stop()
        if ws_router is not None:
            ws_router.stop()
        for server in nginxes:
            server.stop()
        if ws_backend is not None:
            ws_backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# router benchmark, {report['date']}",
        f"# python {report['python']} on {report['machine']}, {report['cpus']} CPUs; {report['wrk'].split(' [')[0]}; "
        f"{report['nginx'].replace('nginx version: ', '')}; load average before {report['load_before'][0]:.1f}, "
        f"after {report['load_after'][0]:.1f}",
        f"(1) wrk -t1 -c{report['connections']} -d{report['seconds']:g}s --latency (after a 1 s warm-up), "
        "backend: nginx `return 200`, split 90/10 over two backend ports",
        f"{'path':<12}{'req/s':>10}{'p50':>10}{'p99':>10}{'errors':>8}",
    ]
    for name, r in report["max"].items():
        lines.append(f"{name:<12}{r['rps']:>10,.0f}{r['p50_ms']:>8.2f}ms{r['p99_ms']:>8.2f}ms"
                     f"{r['non_2xx'] + r['socket_errors']:>8}")
    lines.append("ratio router/nginx 1 worker (req/s): " + ", ".join(f"{k} {v:.2f}x" for k, v in report["ratios"].items()))
    lines.append("at equal worker counts (router N workers / nginx N workers): "
                 + ", ".join(f"N={k}: {v:.2f}x" for k, v in report["equal_workers"].items()))
    lines.append(f"(2) p99 at half of nginx's max rate ({report['half_nginx_rps']:,} req/s offered; "
                 "wrk, 1 ms delay() per request, connections calibrated)")
    for name, r in report["at_half"].items():
        note = ("  SATURATED (cannot sustain the rate)" if r["saturated"]
                else "  (off the target by > 10 %)" if r["off_target"] else "")
        lines.append(f"{name:<12}achieved {r['rps']:>9,.0f} req/s with -c{r['connections']:<4} p50 {r['p50_ms']:.2f} ms"
                     f"  p99 {r['p99_ms']:.2f} ms{note}")
    lines.append(f"    at half of nginx 2w's max rate ({report['half_nginx_2w_rps']:,} req/s offered):")
    for name, r in report["at_half_2w"].items():
        note = "  SATURATED" if r["saturated"] else "  (off the target by > 10 %)" if r["off_target"] else ""
        lines.append(f"{name:<12}achieved {r['rps']:>9,.0f} req/s with -c{r['connections']:<4} p50 {r['p50_ms']:.2f} ms"
                     f"  p99 {r['p99_ms']:.2f} ms{note}")
    lines.append("    and at half of its own max rate:")
    for name, r in report["at_half_own"].items():
        note = "  SATURATED" if r["saturated"] else "  (off the target by > 10 %)" if r["off_target"] else ""
        lines.append(f"{name:<12}achieved {r['rps']:>9,.0f} req/s of {r['target_rps']:,} with -c{r['connections']:<4}"
                     f" p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms{note}")
    lines.append(f"(3) weight change under load: weights swapped 90/10 <-> 10/90 (table rewritten + POST /reload) "
                 f"every {RELOAD_EVERY:g} s during a wrk run")
    for name, r in report["reloads"].items():
        verdict = "ok" if r["non_2xx"] == 0 and r["socket_errors"] == 0 and r["reloads_failed"] == 0 else "FAILED"
        lines.append(f"{name:<12}{r['requests']:,} requests ({r['rps']:,.0f} req/s), {r['non_2xx']} non-2xx, "
                     f"{r['socket_errors']} socket errors, {r['reloads_ok']} reloads accepted "
                     f"({r['reloads_failed']} refused), generation {r['generations'][0]} -> {r['generations'][1]}: "
                     f"{verdict}")
    ws = report["websocket"]
    lines.append("(5) WebSocket echo, 16 connections, 64-byte messages (aiohttp client): "
                 + ", ".join(f"{k} {v['per_second']:,} msg/s" for k, v in ws.items())
                 + f"; router/nginx {ws['router']['per_second'] / max(1, ws['nginx']['per_second']):.2f}x")
    if "baseline" in report:
        b = report["baseline"]
        lines.append(f"(4) against the router at {b['ref']} (alternating, medians of {len(b['runs']['router 1w'])}): "
                     f"router 1w {b['medians']['router 1w']:,.0f} req/s, baseline 1w {b['medians']['baseline 1w']:,.0f}"
                     f" req/s, ratio {b['ratio']:.3f}x (runs: {b['runs']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured wrk run (default 3)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--baseline", metavar="REF", help="also measure the router as it was at this git ref")
    args = parser.parse_args(argv)
    report = run(args.duration, args.baseline)
    print(json.dumps(report, indent=2) if args.json else render(report))
    failed = any(r["non_2xx"] or r["socket_errors"] or r["reloads_failed"] for r in report["reloads"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
