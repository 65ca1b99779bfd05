"""The environment's router: one process that sends each request to a revision of its deployment.

Run as ``python -m greentic_local_process.router --state-dir DIR`` (``--help`` lists the
options). It reads ``DIR/router-table.json`` (see :mod:`greentic_local_process.table`), listens
on the table's ``listen`` address and on an admin port on 127.0.0.1, and once both are bound
writes ``DIR/router.json`` (``pid``, ``listen``, ``admin``, ``generation``, ``started_at``,
``workers``) atomically; it removes that file when it exits.

Proxying (the data plane, :mod:`greentic_local_process.proxy_protocol`: an HTTP/1.1 proxy on
``asyncio.Protocol`` parsing with httptools/llhttp, keep-alive connections to the backends
pooled per address): the request and response bodies are streamed as they arrive
(``Content-Length`` bodies unchanged, chunked ones re-chunked); hop-by-hop headers, and
headers named in ``Connection``, are dropped in both directions; ``X-Forwarded-For`` is
appended to, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set; the answering revision is
named in ``X-Greentic-Revision``. 503 (JSON) when no deployment matches or the deployment has
no routable revision, 413 above the body limit, 400/414/431 for malformed or oversized request
heads, 502 (JSON) when the backend cannot be reached (a connect failure is retried once on
another revision of the same deployment; a pooled connection the backend had closed is
retried once on a fresh one when the request has no body), 504 on a backend read timeout.
Pipelined requests are answered in order.

The proxy processes run on uvloop when it is installed (``--event-loop auto``, the default;
the ``uvloop`` extra), else on asyncio's loop; ``/status`` names it in ``event_loop``.

Admin API (127.0.0.1 only): ``GET /status``, ``POST /reload`` (re-read the table file; a bad
table is refused with 400 and the old one keeps serving; a changed listen address or an older
generation with 409), ``GET /table``, ``GET /healthz``. ``SIGHUP`` also reloads. ``SIGTERM``
(or ``SIGINT``) stops accepting, lets requests in flight finish (``--shutdown-timeout``) and
exits 0.

A reload swaps one reference: a request already in flight keeps the backend it chose, a
request that starts after the swap uses the new table. A deployment whose routable revisions,
weights and addresses changed starts a fresh round-robin sequence; an unchanged one carries on
where it was (so frequent reloads cannot starve a light revision). Counters are kept per
revision id, so they survive reloads.

``--workers N`` (N > 1) runs N proxy processes sharing the listen port (SO_REUSEPORT) under a
supervisor that owns the admin port: it validates a reload once and hands the same table to
every worker, and ``/status`` sums the workers' counters (histograms merged bucket by bucket).
Each worker balances on its own, so the split is exact per worker and within
``workers * period`` picks overall.

Standalone on purpose: the standard library, aiohttp (admin port, supervisor), httptools (data
plane), attrs and optionally uvloop only (no greentic_core).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import math
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .proxy_protocol import ProxyServer
from .table import Backend, Deployment, RouterTable, SmoothWeightedRoundRobin, TableError, parse_address, parse_table

log = logging.getLogger("greentic.router")

TABLE_FILE = "router-table.json"
STATE_FILE = "router.json"
ADMIN_TOKEN_FILE = "router-admin.token"
CONTROL_TOKEN_ENV = "GREENTIC_ROUTER_CONTROL_TOKEN"  # how the supervisor hands its workers their token
REVISION_HEADER = "X-Greentic-Revision"
DEFAULT_MAX_BODY = 64 * 1024 * 1024

COUNTERS = ("in_flight", "completed", "errors", "upstream_5xx", "retries", "client_aborts", "connect_errors")


# --------------------------------------------------------------------------- counters


def _bounds() -> list[float]:
    bounds, value = [], 1e-5  # 10 us .. ~600 s, each bucket 10 % wider than the previous one
    while value < 600.0:
        bounds.append(value)
        value *= 1.1
    bounds.append(value)
    return bounds


BOUNDS = _bounds()


def quantile_ms(counts: dict[int, int], q: float) -> float | None:
    """The q-quantile in milliseconds of a bucket histogram (within 5 %), None when empty."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            upper = BOUNDS[min(index, len(BOUNDS) - 1)]
            lower = BOUNDS[index - 1] if 0 < index <= len(BOUNDS) - 1 else upper / 1.1
            return round((lower * upper) ** 0.5 * 1000.0, 3)
    return None  # pragma: no cover


class RevisionStats:
    """Counters of one revision, kept across reloads. Memory is bounded: the latency histogram
    has a fixed number of buckets."""

    __slots__ = ("in_flight", "completed", "errors", "upstream_5xx", "retries", "client_aborts", "connect_errors",
                 "hist", "classes", "seconds")

    def __init__(self) -> None:
        self.in_flight = 0
        self.completed = 0
        self.errors = 0
        self.upstream_5xx = 0
        self.retries = 0
        self.client_aborts = 0
        self.connect_errors = 0
        self.hist = [0] * (len(BOUNDS) + 1)
        self.classes = [0] * 6  # answered requests by status class (index 2: 2xx ... 5: 5xx)
        self.seconds = 0.0  # the sum of their durations (a Prometheus histogram's _sum)

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        data["hist"] = {str(i): c for i, c in enumerate(self.hist) if c}
        data["classes"] = list(self.classes)
        data["seconds"] = self.seconds
        return data


# --------------------------------------------------------------------------- routing state


class Target:
    """A routable backend as the proxy uses it: address, precomputed header lines, counters."""

    __slots__ = ("revision_id", "address", "host", "port", "key", "rev_line", "host_line", "stats")

    def __init__(self, revision_id: str, address: str, stats: RevisionStats) -> None:
        self.revision_id = revision_id
        self.address = address
        self.host, self.port = parse_address(address, "address")
        self.key = (self.host, self.port)  # the backend connection pool's key: survives reloads
        self.rev_line = f"{REVISION_HEADER}: {revision_id}\r\n".encode("latin-1", "replace")
        self.host_line = f"Host: {address}\r\n".encode("latin-1", "replace")  # for a request without Host
        self.stats = stats


def replica_members(backends: tuple[Backend, ...]) -> list[Backend]:
    """One balancer member per replica: a revision of weight W with N replicas becomes N members
    of weight W*L/N (L: the least common multiple of the replica counts), so the revision keeps
    exactly its share and its replicas take turns within it."""
    routable = [b for b in backends if b.routable]
    counts = [len(b.addresses) or 1 for b in routable]
    scale = math.lcm(*counts) if counts else 1
    if scale == 1 and all(len(b.addresses) <= 1 for b in routable):
        return list(backends)
    members = []
    for backend in routable:
        addresses = backend.addresses or (backend.address,)
        for address in addresses:
            host, port = parse_address(address, "address")  # checked by parse_table already
            members.append(Backend(backend.revision_id, backend.weight_bps * scale // len(addresses), address,
                                   host, port, (address,)))
    return members


class DeploymentRoute:
    __slots__ = ("deployment", "balancer", "targets")

    def __init__(self, deployment: Deployment, stats: dict[str, RevisionStats],
                 previous: DeploymentRoute | None = None) -> None:
        self.deployment = deployment
        balancer = SmoothWeightedRoundRobin(replica_members(deployment.backends))
        if previous is not None and previous.balancer.members == balancer.members:
            # same revisions, weights and addresses: carry on in the running sequence, so that
            # frequent reloads for other deployments cannot starve a light revision of this one
            self.balancer, self.targets = previous.balancer, previous.targets
            return
        self.balancer = balancer
        self.targets = tuple(
            Target(b.revision_id, b.address, stats[b.revision_id])  # type: ignore[arg-type]
            for b in balancer.members
        )

    def pick(self) -> Target | None:
        index = self.balancer.pick_index()
        return self.targets[index] if index >= 0 else None

    def pick_other(self, target: Target) -> Target | None:
        for index, candidate in enumerate(self.targets):
            if candidate is target:
                other = self.balancer.pick_index_excluding(index)
                return self.targets[other] if other >= 0 else None
        return None


class RoutingState:
    """Everything a request needs, built once per table; swapped as one reference on reload."""

    __slots__ = ("table", "routes", "single", "loaded_at")

    def __init__(self, table: RouterTable, stats: dict[str, RevisionStats],
                 previous: RoutingState | None = None) -> None:
        self.table = table
        for dep in table.deployments:
            for backend in dep.backends:
                stats.setdefault(backend.revision_id, RevisionStats())
        before = previous.routes if previous is not None else {}
        self.routes = {dep.deployment_id: DeploymentRoute(dep, stats, before.get(dep.deployment_id))
                       for dep in table.deployments}
        # one deployment takes every request (RouterTable.route): no need to look at host and path
        self.single = self.routes[table.deployments[0].deployment_id] if len(table.deployments) == 1 else None
        self.loaded_at = time.time()


# --------------------------------------------------------------------------- proxy


class Proxy:
    """What the request path reads: the routing state (swapped whole on reload), the counters
    and the limits. The request path itself is :mod:`greentic_local_process.proxy_protocol`."""

    def __init__(self, table: RouterTable, *, max_body: int, connect_timeout: float,
                 read_timeout: float | None, trust_forwarded: bool) -> None:
        self.stats: dict[str, RevisionStats] = {}
        self.state = RoutingState(table, self.stats)
        self.max_body = max_body
        self.trust_forwarded = trust_forwarded
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.unrouted = 0  # 503 answers
        self.reloads = 0

    def swap(self, table: RouterTable) -> None:
        """Install a new table: one reference assignment, so no request sees half of it."""
        self.state = RoutingState(table, self.stats, self.state)
        self.reloads += 1
        live = {b.revision_id for d in table.deployments for b in d.backends}
        for revision_id in [r for r, s in self.stats.items() if r not in live and s.in_flight == 0]:
            del self.stats[revision_id]  # gone from the table and idle: forget it

    def snapshot(self) -> dict[str, Any]:
        return {"unrouted": self.unrouted, "revisions": {r: s.snapshot() for r, s in self.stats.items()}}


# --------------------------------------------------------------------------- status


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several proxies (one per worker); histograms bucket by bucket."""
    revisions: dict[str, dict[str, Any]] = {}
    unrouted = 0
    for snap in snapshots:
        unrouted += int(snap.get("unrouted", 0))
        for revision_id, data in snap.get("revisions", {}).items():
            merged = revisions.setdefault(revision_id, {**{n: 0 for n in COUNTERS}, "hist": {},
                                                        "classes": [0] * 6, "seconds": 0.0})
            for name in COUNTERS:
                merged[name] += int(data.get(name, 0))
            for index, count in data.get("hist", {}).items():
                merged["hist"][index] = merged["hist"].get(index, 0) + count
            for index, count in enumerate(data.get("classes") or ()):
                merged["classes"][index] += int(count)
            merged["seconds"] += float(data.get("seconds", 0.0))
    return {"unrouted": unrouted, "revisions": revisions}


def _limits_snapshot(server: ProxyServer) -> dict[str, int]:
    """What the abuse limits see now (summed over workers by the supervisor)."""
    return {"connections": len(server.conns), "max_connections": server.max_connections,
            "refused_connections": server.refused_connections, "head_bytes_held": server.head_held,
            "head_budget_refusals": server.head_budget_refusals}


def _sum_limits(snapshots: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for snap in snapshots:
        for name, value in (snap.get("limits") or {}).items():
            total[name] = total.get(name, 0) + int(value)
    return total


def metrics_answer(state_dir: Path, table: RouterTable, counters: dict[str, Any], reloads: int) -> web.Response:
    """``GET /metrics``: Prometheus text exposition of the counters (see :mod:`.metrics`)."""
    from .metrics import CONTENT_TYPE_LATEST, exposition

    owner = {b.revision_id: d.deployment_id for d in table.deployments for b in d.backends}
    revisions = {rid: {**data, "deployment_id": owner.get(rid)} for rid, data in counters["revisions"].items()}
    supervisor = None
    try:  # the supervisor's status, next to the router's directory (restart counts)
        fd = os.open(state_dir.parent / "supervisor" / "status.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as handle:
            supervisor = json.load(handle)
    except (OSError, ValueError):
        pass
    body = exposition(BOUNDS, {"revisions": revisions, "unrouted": counters["unrouted"],
                               "generation": table.generation, "reloads": reloads}, supervisor)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_status(table: RouterTable, counters: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    deployments: dict[str, Any] = {}
    revisions: dict[str, Any] = {}
    for dep in table.deployments:
        deployments[dep.deployment_id] = {
            "bundle_id": dep.bundle_id, "split_generation": dep.split_generation,
            "hosts": list(dep.hosts), "path_prefixes": list(dep.path_prefixes),
            "weights": dep.weights, "enforced_weights": dep.enforced_weights(),
        }
        for backend in dep.backends:
            revisions[backend.revision_id] = {
                "deployment_id": dep.deployment_id, "address": backend.address,
                "addresses": list(backend.addresses), "weight_bps": backend.weight_bps, "in_table": True,
            }
    for revision_id, data in counters["revisions"].items():
        entry = revisions.setdefault(revision_id, {"deployment_id": None, "address": None,
                                                   "weight_bps": 0, "in_table": False})
        hist = {int(i): c for i, c in data["hist"].items()}
        entry.update({name: data[name] for name in COUNTERS})
        entry["p50_ms"] = quantile_ms(hist, 0.50)
        entry["p99_ms"] = quantile_ms(hist, 0.99)
    for entry in revisions.values():
        for name in COUNTERS:
            entry.setdefault(name, 0)
        entry.setdefault("p50_ms", None)
        entry.setdefault("p99_ms", None)
    return {
        "pid": os.getpid(), "env_id": table.env_id, "generation": table.generation,
        **extra, "unrouted": counters["unrouted"], "warnings": list(table.warnings),
        "deployments": deployments, "revisions": revisions,
    }


# --------------------------------------------------------------------------- files and sockets


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Temp file (0600, created exclusively) in the same directory, fsync, rename over ``path``
    (a rename replaces a planted symlink; it never writes through it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_table_file(path: Path) -> RouterTable:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "r") as handle:
            raw = handle.read()
    except OSError as exc:
        raise TableError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TableError(f"{path} is not valid JSON: {exc}") from None
    return parse_table(data)


def bind_socket(host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def sock_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _raise_fd_limit() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # pragma: no cover
        pass


# --------------------------------------------------------------------------- reload rules


class ReloadRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_reload(current: RouterTable, new: RouterTable) -> None:
    if new.listen != current.listen:
        raise ReloadRefused(409, f"the listen address changed ({current.listen} -> {new.listen}); "
                                 "restart the router to move it")
    if new.generation < current.generation:
        raise ReloadRefused(409, f"table generation {new.generation} is older than the loaded "
                                 f"generation {current.generation}")


# --------------------------------------------------------------------------- serving


class _Serving:
    """The bound proxy listener: :class:`~greentic_local_process.proxy_protocol.ProxyServer`."""

    def __init__(self, proxy: Proxy, args: argparse.Namespace) -> None:
        self.proxy = proxy
        self.args = args
        self.server = ProxyServer(
            proxy, bounds=BOUNDS, connect_timeout=proxy.connect_timeout, read_timeout=proxy.read_timeout,
            keepalive_timeout=args.keepalive_timeout, max_line=args.max_line_size,
            max_field=args.max_field_size, max_headers=args.max_headers, backlog=args.backlog,
            max_head_bytes=args.max_head_bytes, max_head_total=args.max_head_total_bytes,
            max_connections=args.max_connections or _default_max_connections(),
            header_timeout=args.header_timeout, body_timeout=args.body_timeout,
        )

    async def start(self, sock: socket.socket) -> None:
        await self.server.start(sock)

    async def stop(self) -> None:
        """Stop accepting, wait for requests in flight (bounded), then close idle connections."""
        await self.server.stop(self.args.shutdown_timeout)


def _admin_app(routes: list[web.RouteDef], token: str) -> web.Application:
    """The admin (or a worker's control) API: every call must carry ``Authorization: Bearer
    TOKEN``. Loopback is not a boundary: any local user can connect to it."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def authenticated(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return web.json_response({"error": "unauthorized",
                                      "hint": f"send the token of {ADMIN_TOKEN_FILE} as a Bearer token"}, status=401)
        return await handler(request)

    app = web.Application(middlewares=[authenticated], client_max_size=16 * 1024 * 1024)
    app.add_routes(routes)
    return app


def _write_admin_token(state_dir: Path) -> str:
    """A fresh admin token in ``STATE_DIR/router-admin.token`` (0600, replaced atomically)."""
    token = secrets.token_urlsafe(32)
    atomic_write_text(state_dir / ADMIN_TOKEN_FILE, token + "\n")
    return token


def _default_max_connections() -> int:
    """Client connections the router accepts at once: each may need a backend connection too, so
    half the descriptor limit (less a reserve), at most 100000."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):  # pragma: no cover
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 200_000
    return max(16, min(100_000, (soft - 64) // 2))


async def _start_admin(app: web.Application, port: int) -> tuple[web.AppRunner, socket.socket]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bind_socket("127.0.0.1", port, backlog=128)
    await web.SockSite(runner, sock).start()
    return runner, sock


def _install_signals(stop: asyncio.Event, on_hup: Any) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The state directory and the table file (``--table``, else ``router-table.json`` in it)."""
    state_dir = Path(args.state_dir)
    return state_dir, Path(args.table) if args.table else state_dir / TABLE_FILE


def _proxy_from_args(table: RouterTable, args: argparse.Namespace) -> Proxy:
    return Proxy(table, max_body=args.max_body_bytes, connect_timeout=args.connect_timeout,
                 read_timeout=args.read_timeout or None, trust_forwarded=args.trust_forwarded_headers)


async def run_single(args: argparse.Namespace) -> int:
    state_dir, table_path = _paths(args)
    try:
        table = read_table_file(table_path)
        host, port = table.listen_address
    except TableError as exc:
        log.error("error: %s", exc)
        return 2
    try:
        listen_sock = bind_socket(host, port, backlog=args.backlog)
    except OSError as exc:
        log.error("error: cannot listen on %s: %s", table.listen, exc.strerror or exc)
        return 1
    proxy = _proxy_from_args(table, args)
    serving = _Serving(proxy, args)
    await serving.start(listen_sock)
    listen = table.listen if port else sock_address(listen_sock)
    started_at = _utc_now()
    admin_address = ""

    def current_extra() -> dict[str, Any]:
        return {"listen": listen, "admin": admin_address, "started_at": started_at, "workers": 1,
                "limits": _limits_snapshot(serving.server),
                "event_loop": event_loop_name(args.event_loop),
                "reloads": proxy.reloads, "loaded_at": datetime.fromtimestamp(
                    proxy.state.loaded_at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}

    def write_state() -> None:
        atomic_write_json(state_dir / STATE_FILE, {
            "pid": os.getpid(), "listen": listen, "admin": admin_address,
            "generation": proxy.state.table.generation, "env_id": proxy.state.table.env_id,
            "started_at": started_at, "workers": 1,
        })

    def reload() -> RouterTable:
        new = read_table_file(table_path)
        check_reload(proxy.state.table, new)
        proxy.swap(new)
        log.info("loaded table generation %s (%d deployments)", new.generation, len(new.deployments))
        for warning in new.warnings:
            log.warning("table: %s", warning)
        write_state()
        return new

    async def status(_request: web.Request) -> web.Response:
        counters = merge_snapshots([proxy.snapshot()])
        return web.json_response(build_status(proxy.state.table, counters, current_extra()))

    async def reload_handler(_request: web.Request) -> web.Response:
        try:
            new = reload()
        except TableError as exc:
            log.warning("reload refused: %s", exc)
            return web.json_response({"error": "invalid table", "reason": str(exc),
                                      "generation": proxy.state.table.generation}, status=400)
        except ReloadRefused as exc:
            log.warning("reload refused: %s", exc.reason)
            return web.json_response({"error": "reload refused", "reason": exc.reason,
                                      "generation": proxy.state.table.generation}, status=exc.status)
        return web.json_response({"generation": new.generation})

    async def table_handler(_request: web.Request) -> web.Response:
        return web.json_response(_table_json(proxy.state.table))

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "generation": proxy.state.table.generation})

    async def metrics(_request: web.Request) -> web.Response:
        return metrics_answer(state_dir, proxy.state.table, merge_snapshots([proxy.snapshot()]), proxy.reloads)

    app = _admin_app([web.get("/status", status), web.post("/reload", reload_handler),
                      web.get("/table", table_handler), web.get("/healthz", healthz), web.get("/metrics", metrics)],
                     _write_admin_token(state_dir))
    try:
        admin_runner, admin_sock = await _start_admin(app, args.admin_port)
    except OSError as exc:
        log.error("error: cannot listen on admin port 127.0.0.1:%s: %s", args.admin_port, exc.strerror or exc)
        await serving.stop()
        return 1
    admin_address = sock_address(admin_sock)

    def on_hup() -> None:
        try:
            reload()
        except (TableError, ReloadRefused) as exc:
            log.warning("reload (SIGHUP) refused: %s", exc)

    stop = asyncio.Event()
    _install_signals(stop, on_hup)
    write_state()
    log.info("router pid %s for env %s listening on %s (admin %s), table generation %s, event loop: %s",
             os.getpid(), table.env_id, listen, admin_address, table.generation, event_loop_name(args.event_loop))
    for warning in table.warnings:
        log.warning("table: %s", warning)
    _settle_gc()
    await stop.wait()
    log.info("stopping: waiting up to %ss for requests in flight", args.shutdown_timeout)
    await serving.stop()
    await admin_runner.cleanup()
    _remove_state(state_dir / STATE_FILE)
    log.info("stopped")
    return 0


def _table_json(table: RouterTable) -> dict[str, Any]:
    return {
        "generation": table.generation, "env_id": table.env_id, "listen": table.listen,
        "deployments": [{
            "deployment_id": d.deployment_id, "bundle_id": d.bundle_id, "split_generation": d.split_generation,
            "hosts": list(d.hosts), "path_prefixes": list(d.path_prefixes),
            "backends": [{"revision_id": b.revision_id, "weight_bps": b.weight_bps, "address": b.address,
                          "addresses": list(b.addresses)}
                         for b in d.backends],
        } for d in table.deployments],
    }


def _remove_state(path: Path) -> None:
    try:
        data = json.loads(path.read_text())
        if data.get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _settle_gc() -> None:
    import gc

    gc.collect()
    gc.freeze()  # long-lived startup objects leave the collector's generations
    gc.set_threshold(20000, 50, 100)  # per-request garbage is short-lived: collect young objects less often


# --------------------------------------------------------------------------- workers


async def run_worker(args: argparse.Namespace) -> int:
    """One of N proxy processes: binds the shared port with SO_REUSEPORT; a control port on
    127.0.0.1 serves the supervisor (counters, table hand-over)."""
    state_dir, table_path = _paths(args)
    try:
        table = read_table_file(table_path)
    except TableError as exc:
        log.error("worker %s: %s", args.worker_index, exc)
        return 2
    host, port = parse_address(args.worker_listen, "--worker-listen")
    try:
        listen_sock = bind_socket(host, port, reuse_port=True, backlog=args.backlog)
    except OSError as exc:
        log.error("worker %s: cannot listen on %s: %s", args.worker_index, args.worker_listen, exc.strerror or exc)
        return 1
    proxy = _proxy_from_args(table, args)
    serving = _Serving(proxy, args)
    await serving.start(listen_sock)

    async def counters(_request: web.Request) -> web.Response:
        return web.json_response({**proxy.snapshot(), "generation": proxy.state.table.generation,
                                  "reloads": proxy.reloads, "limits": _limits_snapshot(serving.server)})

    async def load(request: web.Request) -> web.Response:
        try:
            new = parse_table(await request.json())
            check_reload(proxy.state.table, new)
        except (TableError, ValueError) as exc:
            return web.json_response({"error": "invalid table", "reason": str(exc)}, status=400)
        except ReloadRefused as exc:
            return web.json_response({"error": "reload refused", "reason": exc.reason}, status=exc.status)
        proxy.swap(new)
        return web.json_response({"generation": new.generation})

    token = os.environ.pop(CONTROL_TOKEN_ENV, "")
    if len(token) < 32:
        log.error("worker %s: no control token (workers are started by the router's supervisor)", args.worker_index)
        await serving.stop()
        return 2
    app = _admin_app([web.get("/counters", counters), web.post("/load", load)], token)
    control_runner, control_sock = await _start_admin(app, 0)
    stop = asyncio.Event()
    _install_signals(stop, None)
    atomic_write_json(state_dir / f"worker-{args.worker_index}.json",
                      {"pid": os.getpid(), "control": sock_address(control_sock), "generation": table.generation})
    _settle_gc()
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            if os.getppid() != parent:  # the supervisor died: do not linger
                break
    await serving.stop()
    await control_runner.cleanup()
    return 0


class _Supervisor:
    def __init__(self, args: argparse.Namespace, table: RouterTable, listen: str) -> None:
        self.args = args
        self.state_dir = Path(args.state_dir)
        self.table = table
        self.listen = listen
        self.reloads = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self.controls: list[str] = []
        self.session: aiohttp.ClientSession | None = None
        # the workers' control ports accept only this token (in their environment, not argv)
        self.control_token = secrets.token_urlsafe(32)
        self.limits: dict[str, int] = {}

    def spawn(self) -> None:
        env = {**os.environ, CONTROL_TOKEN_ENV: self.control_token}
        for index in range(self.args.workers):
            (self.state_dir / f"worker-{index}.json").unlink(missing_ok=True)
            argv = [sys.executable, "-m", "greentic_local_process.router", *self._passthrough(),
                    "--worker-index", str(index), "--worker-listen", self.listen]
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env))

    def _passthrough(self) -> list[str]:
        a = self.args
        argv = ["--state-dir", str(a.state_dir), "--max-body-bytes", str(a.max_body_bytes),
                "--connect-timeout", str(a.connect_timeout), "--read-timeout", str(a.read_timeout),
                "--shutdown-timeout", str(a.shutdown_timeout), "--keepalive-timeout", str(a.keepalive_timeout),
                "--max-line-size", str(a.max_line_size), "--max-field-size", str(a.max_field_size),
                "--max-headers", str(a.max_headers), "--backlog", str(a.backlog), "--log-level", a.log_level,
                "--event-loop", a.event_loop, "--max-head-bytes", str(a.max_head_bytes),
                "--max-head-total-bytes", str(a.max_head_total_bytes), "--max-connections", str(a.max_connections),
                "--header-timeout", str(a.header_timeout), "--body-timeout", str(a.body_timeout)]
        if a.table:
            argv += ["--table", str(a.table)]
        if a.trust_forwarded_headers:
            argv.append("--trust-forwarded-headers")
        return argv

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        controls: list[str | None] = [None] * len(self.procs)
        while None in controls:
            for index, proc in enumerate(self.procs):
                if controls[index] is not None:
                    continue
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {index} exited at start (code {proc.returncode})")
                try:
                    data = json.loads((self.state_dir / f"worker-{index}.json").read_text())
                    if data.get("pid") == proc.pid:
                        controls[index] = data["control"]
                except (OSError, ValueError, KeyError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start in time")
            await asyncio.sleep(0.02)
        self.controls = [c for c in controls if c is not None]
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                             headers={"Authorization": f"Bearer {self.control_token}"})

    async def counters(self) -> dict[str, Any]:
        assert self.session is not None
        snaps = []
        for control in self.controls:
            try:
                async with self.session.get(f"http://{control}/counters") as response:
                    snaps.append(await response.json())
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("worker at %s did not report counters: %s", control, exc)
        self.limits = _sum_limits(snaps)
        return merge_snapshots(snaps)

    async def broadcast(self, table: RouterTable) -> None:
        assert self.session is not None
        body = _table_json(table)
        for control in self.controls:
            async with self.session.post(f"http://{control}/load", json=body) as response:
                if response.status != 200:
                    raise ReloadRefused(response.status, (await response.json()).get("reason", "worker refused"))

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.args.shutdown_timeout + 2.0
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for index in range(len(self.procs)):
            (self.state_dir / f"worker-{index}.json").unlink(missing_ok=True)
        if self.session is not None:
            await self.session.close()


async def run_supervisor(args: argparse.Namespace) -> int:
    state_dir, table_path = _paths(args)
    try:
        table = read_table_file(table_path)
        host, port = table.listen_address
    except TableError as exc:
        log.error("error: %s", exc)
        return 2
    try:  # a probe without SO_REUSEPORT: refuses to share the port with a stray process
        probe = bind_socket(host, port, backlog=1)
    except OSError as exc:
        log.error("error: cannot listen on %s: %s", table.listen, exc.strerror or exc)
        return 1
    listen = table.listen if port else sock_address(probe)
    probe.close()
    sup = _Supervisor(args, table, listen)
    sup.spawn()
    try:
        await sup.wait_ready()
    except RuntimeError as exc:
        log.error("error: %s", exc)
        await sup.stop()
        return 1
    started_at = _utc_now()
    admin_address = ""
    reload_lock = asyncio.Lock()

    def write_state() -> None:
        atomic_write_json(state_dir / STATE_FILE, {
            "pid": os.getpid(), "listen": listen, "admin": admin_address, "generation": sup.table.generation,
            "env_id": sup.table.env_id, "started_at": started_at, "workers": args.workers,
        })

    async def reload() -> RouterTable:
        async with reload_lock:
            new = read_table_file(table_path)
            check_reload(sup.table, new)
            await sup.broadcast(new)
            sup.table = new
            sup.reloads += 1
            write_state()
            log.info("loaded table generation %s into %d workers", new.generation, len(sup.controls))
            return new

    async def status(_request: web.Request) -> web.Response:
        counters = await sup.counters()
        extra = {"listen": listen, "admin": admin_address, "started_at": started_at, "workers": args.workers,
                 "event_loop": event_loop_name(args.event_loop),
                 "reloads": sup.reloads, "worker_pids": [p.pid for p in sup.procs], "limits": sup.limits}
        return web.json_response(build_status(sup.table, counters, extra))

    async def reload_handler(_request: web.Request) -> web.Response:
        try:
            new = await reload()
        except TableError as exc:
            return web.json_response({"error": "invalid table", "reason": str(exc),
                                      "generation": sup.table.generation}, status=400)
        except ReloadRefused as exc:
            return web.json_response({"error": "reload refused", "reason": exc.reason,
                                      "generation": sup.table.generation}, status=exc.status)
        return web.json_response({"generation": new.generation})

    async def table_handler(_request: web.Request) -> web.Response:
        return web.json_response(_table_json(sup.table))

    async def healthz(_request: web.Request) -> web.Response:
        alive = all(p.poll() is None for p in sup.procs)
        return web.json_response({"ok": alive, "generation": sup.table.generation}, status=200 if alive else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return metrics_answer(state_dir, sup.table, await sup.counters(), sup.reloads)

    app = _admin_app([web.get("/status", status), web.post("/reload", reload_handler),
                      web.get("/table", table_handler), web.get("/healthz", healthz), web.get("/metrics", metrics)],
                     _write_admin_token(state_dir))
    try:
        admin_runner, admin_sock = await _start_admin(app, args.admin_port)
    except OSError as exc:
        log.error("error: cannot listen on admin port 127.0.0.1:%s: %s", args.admin_port, exc.strerror or exc)
        await sup.stop()
        return 1
    admin_address = sock_address(admin_sock)
    stop = asyncio.Event()

    def on_hup() -> None:
        async def go() -> None:
            try:
                await reload()
            except (TableError, ReloadRefused) as exc:
                log.warning("reload (SIGHUP) refused: %s", exc)
        asyncio.ensure_future(go())

    _install_signals(stop, on_hup)
    write_state()
    log.info("router pid %s for env %s listening on %s with %d workers (admin %s), table generation %s, "
             "event loop: %s", os.getpid(), table.env_id, listen, args.workers, admin_address, table.generation,
             event_loop_name(args.event_loop))

    async def watch() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            dead = [p for p in sup.procs if p.poll() is not None]
            if dead:
                log.error("worker pid %s exited (code %s): stopping the router", dead[0].pid, dead[0].returncode)
                stop.set()

    watcher = asyncio.ensure_future(watch())
    await stop.wait()
    watcher.cancel()
    await sup.stop()
    await admin_runner.cleanup()
    _remove_state(state_dir / STATE_FILE)
    return 0


# --------------------------------------------------------------------------- CLI


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m greentic_local_process.router",
                                description="The greentic local-process router: weighted HTTP routing to revisions.")
    p.add_argument("--state-dir", required=True, help="directory of router-table.json; router.json is written here")
    p.add_argument("--table", help="table file (default: STATE_DIR/router-table.json)")
    p.add_argument("--admin-port", type=int, default=0, help="admin port on 127.0.0.1 (default 0: a free port)")
    p.add_argument("--max-body-bytes", "--max-body-size", dest="max_body_bytes", type=_size, default=DEFAULT_MAX_BODY,
                   help="largest request body (413 above; default 64MiB; suffixes k/m/g)")
    p.add_argument("--max-line-size", type=int, default=8190, help="largest request line / status line (bytes)")
    p.add_argument("--max-field-size", "--max-header-size", dest="max_field_size", type=int, default=8190,
                   help="largest single header (bytes)")
    p.add_argument("--max-headers", type=int, default=128, help="most headers in a request")
    p.add_argument("--max-head-bytes", type=_size, default=64 * 1024,
                   help="largest request head (request line + headers) one connection may send (431 above; default 64k)")
    p.add_argument("--max-head-total-bytes", type=_size, default=64 * 1024 * 1024,
                   help="unfinished request heads held at once over all connections (503 above; default 64MiB)")
    p.add_argument("--max-connections", type=int, default=0,
                   help="client connections at once; more are closed at once (default 0: half the descriptor limit)")
    p.add_argument("--header-timeout", type=float, default=30.0,
                   help="seconds a client has to send a whole request head (408; 0: no limit)")
    p.add_argument("--body-timeout", type=float, default=60.0,
                   help="seconds a request body may stop arriving (408 and both connections closed; 0: no limit)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to connect to a backend")
    p.add_argument("--read-timeout", type=float, default=0.0,
                   help="seconds a backend may stay silent mid-response (0: no limit) -> 504")
    p.add_argument("--keepalive-timeout", type=float, default=75.0, help="idle client keep-alive (seconds)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="on SIGTERM, seconds to let requests in flight finish")
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--workers", type=int, default=1,
                   help="proxy processes sharing the listen port (SO_REUSEPORT); the admin port sums their counters")
    p.add_argument("--trust-forwarded-headers", action="store_true",
                   help="keep incoming X-Forwarded-Proto/-Host (behind another trusted proxy)")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"],
                   default=os.environ.get("GREENTIC_ROUTER_EVENT_LOOP", "auto"),
                   help="event loop of the proxy processes (auto: uvloop when installed; "
                        "default from GREENTIC_ROUTER_EVENT_LOOP)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-listen", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s router[%(process)d] %(levelname)s %(message)s")
    if args.workers < 1:
        log.error("error: --workers must be >= 1")
        return 2
    _raise_fd_limit()
    if args.worker_index is not None:
        return _run(run_worker(args), args.event_loop)
    if args.workers > 1:
        return _run(run_supervisor(args), "asyncio")  # the supervisor only serves the admin port
    return _run(run_single(args), args.event_loop)


def _loop_factory(choice: str, quiet: bool = False) -> Any:
    """uvloop's event loop when asked for (``auto``: when it is installed), else asyncio's."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop" and not quiet:
            log.warning("--event-loop uvloop: uvloop is not installed; using asyncio's loop")
        return None
    return uvloop.new_event_loop


def event_loop_name(choice: str) -> str:
    """The event loop the proxy processes run with this ``--event-loop`` choice."""
    return "asyncio" if _loop_factory(choice, quiet=True) is None else "uvloop"


def _run(main_coro: Any, choice: str) -> int:
    with asyncio.Runner(loop_factory=_loop_factory(choice)) as runner:
        return runner.run(main_coro)


if __name__ == "__main__":
    sys.exit(main())
