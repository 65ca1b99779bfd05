"""The aiohttp application: pages, the JSON API, Server-Sent Events and actions.

Blocking work (the store, the registry, the provider) runs in thread pools: reads in one,
actions in another, so a drain that waits for in-flight requests never stalls the pages.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup

from greentic_core.errors import GreenticError

from . import __version__, actions, charts
from .backend import LIFECYCLE_RANK, Backend
from .live import HEARTBEAT_SECONDS, Live, sse_frame
from .openapi import openapi_document
from .security import COOKIE, CSRF_HEADER, HEADERS, Sessions, cookie_options, host_of, is_loopback

HERE = Path(__file__).resolve().parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: exit code of an error (greentic_core.cli) -> HTTP status
STATUS_OF_EXIT = {1: 502, 2: 400, 3: 409, 4: 404, 5: 503, 6: 504, 7: 500}

BACKEND = web.AppKey("backend", Backend)
LIVE = web.AppKey("live", Live)
SESSIONS = web.AppKey("sessions", Sessions)
CONFIG = web.AppKey("config", dict)
JINJA = web.AppKey("jinja", jinja2.Environment)
READS = web.AppKey("reads", ThreadPoolExecutor)
WRITES = web.AppKey("writes", ThreadPoolExecutor)
AUTH = web.RequestKey("auth", str)  # "bearer" | "cookie"
SID = web.RequestKey("sid", str)  # the session id of a cookie


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("greentic_ui", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = charts.pct
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=False, default=str)
    env.filters["plain"] = _plain
    env.globals["colour"] = charts.colour
    env.globals["split_bar"] = charts.split_bar
    env.globals["analysis_charts"] = charts.analysis_charts
    env.globals["pairs"] = lambda entries: [(e["revision_id"], e["weight_bps"]) for e in entries]
    env.globals["version"] = __version__
    return env


def _plain(value: Any) -> str:
    """A value of an audit event as people read it: ``{"a": 1}`` -> ``a=1``, lists joined."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def error_json(exc: GreenticError) -> tuple[int, dict[str, Any]]:
    doc = {"ok": False, "kind": exc.kind, "message": exc.message}
    if exc.hint:
        doc["hint"] = exc.hint
    return STATUS_OF_EXIT.get(exc.exit_code, 500), doc


# --------------------------------------------------------------------------- middlewares


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The security headers (CSP first) on every answer, errors included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status in (404, 405) and exc.content_type != "application/json":
            response = web.json_response({"ok": False, "kind": "not_found" if exc.status == 404 else "usage",
                                          "message": f"{exc.reason}: {request.method} {request.path}"},
                                         status=exc.status)
            _secure_headers(request, response.headers)
            return response
        _secure_headers(request, exc.headers)
        raise
    if not response.prepared:  # an event stream set its own before it started
        _secure_headers(request, response.headers)
    return response


def _secure_headers(request: web.Request, headers: Any) -> None:
    for key, value in HEADERS.items():
        headers.setdefault(key, value)
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def _refuse(request: web.Request, status: int, kind: str, message: str) -> web.Response:
    if _wants_json(request):
        return web.json_response({"ok": False, "kind": kind, "message": message}, status=status)
    page = request.app[JINJA].get_template("refused.html").render(status=status, message=message)
    return web.Response(text=page, status=status, content_type="text/html")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[CONFIG]
    sessions = request.app[SESSIONS]
    if config["loopback"] and not is_loopback(host_of(request.headers.get("Host", ""))):
        return _refuse(request, 421, "misdirected", "this dashboard answers only to a loopback host name")
    if request.path.startswith("/static/"):
        return await handler(request)
    given = request.query.get("token")
    if given is not None:
        if not sessions.check_token(given):
            return _refuse(request, 401, "unauthorized", "the token is not this dashboard's token")
        sid = sessions.open()
        query = {k: v for k, v in request.query.items() if k != "token"}
        target = request.path + (f"?{urlencode(query)}" if query else "")
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(COOKIE, sid, **cookie_options(config["secure_cookie"]))
        return response
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and sessions.check_token(auth[7:].strip()):
        request[AUTH] = "bearer"
        return await handler(request)
    sid = request.cookies.get(COOKIE)
    if sessions.valid(sid):
        request[AUTH] = "cookie"
        request[SID] = sid
        return await handler(request)
    return _refuse(request, 401, "unauthorized",
                   "a token is required: open the URL `greentic-deployer ui` printed at start "
                   "(…/?token=…), or send Authorization: Bearer TOKEN")


# --------------------------------------------------------------------------- helpers


async def _read(request: web.Request, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[READS], lambda: call(*args, **kwargs))


def _page(request: web.Request, template: str, **context: Any) -> web.Response:
    sessions = request.app[SESSIONS]
    config = request.app[CONFIG]
    text = request.app[JINJA].get_template(template).render(
        csrf=sessions.csrf(request.get(SID)) or "", allow_actions=config["allow_actions"],
        actor=request.app[BACKEND].actor, store_url=config["store_url"], **context)
    return web.Response(text=text, content_type="text/html")


def _not_found_page(request: web.Request, exc: GreenticError) -> web.Response:
    status, doc = error_json(exc)
    page = request.app[JINJA].get_template("refused.html").render(status=status, message=doc["message"])
    return web.Response(text=page, status=status, content_type="text/html")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


# --------------------------------------------------------------------------- pages


async def index_page(request: web.Request) -> web.Response:
    envs = await _read(request, request.app[BACKEND].environments)
    return _page(request, "index.html", envs=envs, page_env="")


#: The revision table shows this many rows at first (routed and live ones first); more on request.
REVISIONS_SHOWN = 50


class Fragments:
    """Rendered sections of pages, keyed by everything they show (least recently used out).

    An environment page of 1,000 revisions is mostly its deployments' sections (a split bar, a
    legend and a split control of every revision) and its revision table; they change only
    when the document or the provider's view of them does, not on every live refresh."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[Any, Markup] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Any, render: Callable[[], str]) -> Markup:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
        value = Markup(render())
        with self._lock:
            self.misses += 1
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


FRAGMENTS = web.AppKey("fragments", Fragments)


def _revision_params(request: web.Request) -> tuple[str, int | None]:
    """``(lifecycle, shown)`` of the revision table from the URL: ``?lifecycle=ready`` (or
    ``routed``), ``?show=100`` or ``?show=all`` (None)."""
    lifecycle = request.query.get("lifecycle", "")
    raw = request.query.get("show", "")
    if raw == "all":
        return lifecycle, None
    return lifecycle, int(raw) if raw.isdigit() and int(raw) > 0 else REVISIONS_SHOWN


def _env_context(app: web.Application, env_id: str, lifecycle: str, shown: int | None) -> dict[str, Any]:
    """(blocking) The environment page's context: the document's head and its sections,
    rendered or taken from :class:`Fragments`."""
    backend, jinja, fragments = app[BACKEND], app[JINJA], app[FRAGMENTS]
    allow = app[CONFIG]["allow_actions"]
    view, env, seen = backend.environment_page(env_id)
    eid = quote(env_id, safe="")
    sections = []
    template = jinja.get_template("env_deployment.html")
    for d in env["deployments"]:
        did = d["deployment_id"]
        live = json.dumps([d["observed"], d["drift"], d["rollout"]], sort_keys=True, default=str)
        candidates = [view.by_id[rid] for rid in d["revision_ids"] if view.by_id[rid]["lifecycle"] == "ready"]
        sections.append(fragments.get(
            ("dep", env_id, did, view.digests[did], live, allow),
            lambda: template.render(d=d, env_id=env_id, colours=view.colours, candidates=candidates,
                                    allow_actions=allow)))

    if lifecycle == "routed":
        matching = [rid for rid in view.order if (view.by_id[rid]["weight_bps"] or 0) > 0]
    elif lifecycle:
        matching = [rid for rid in view.order if view.by_id[rid]["lifecycle"] == lifecycle]
    else:
        matching = view.order
    ids = matching if shown is None else matching[:shown]
    observed = [seen.get(rid) if seen is not None else None for rid in ids]

    def href(show: str | None) -> str:
        query = {k: v for k, v in (("lifecycle", lifecycle), ("show", show)) if v}
        return f"/env/{eid}" + (f"?{urlencode(query)}" if query else "") + "#revisions"

    more = shown is not None and len(matching) > shown
    choices = ([("routed", view.routed)] if view.routed else []) + [
        (name, view.counts[name]) for name in sorted(view.counts, key=lambda n: LIFECYCLE_RANK.get(n, 7))]
    shows = json.dumps([[view.by_id[rid] for rid in ids], [view.colours.get(rid) for rid in ids], observed, choices,
                        len(matching), len(view.revisions)],
                       sort_keys=True, default=str)  # a change elsewhere in the document keeps this page of rows
    table = fragments.get(
        ("revisions", env_id, lifecycle, shown, allow, shows),
        lambda: jinja.get_template("env_revisions.html").render(
            rows=list(zip((view.by_id[rid] for rid in ids), observed)), matching=len(matching),
            total=len(view.revisions), lifecycle=lifecycle, choices=choices, show_all=shown is None,
            step=REVISIONS_SHOWN, eid=eid, colours=view.colours, allow_actions=allow,
            more_href=href(str(shown + REVISIONS_SHOWN)) if more else None,
            all_href=href("all") if more else None,
            less_href=href(None) if (shown is None or shown > REVISIONS_SHOWN) and len(matching) > REVISIONS_SHOWN
            else None))
    return {"env": env, "deployment_sections": sections, "revisions_section": table, "page_env": env_id}


async def env_page(request: web.Request) -> web.Response:
    env_id = request.match_info["env"]
    lifecycle, shown = _revision_params(request)
    try:
        context = await _read(request, _env_context, request.app, env_id, lifecycle, shown)
    except GreenticError as exc:
        return _not_found_page(request, exc)
    return _page(request, "environment.html", **context)


async def rollout_page(request: web.Request) -> web.Response:
    env_id, dep = request.match_info["env"], request.match_info["deployment"]
    try:
        doc = await _read(request, request.app[BACKEND].rollout, env_id, dep)
    except GreenticError as exc:
        return _not_found_page(request, exc)
    return _page(request, "rollout.html", env_id=env_id, r=doc, page_env=env_id)


async def history_page(request: web.Request) -> web.Response:
    env_id = request.match_info["env"]
    filters = _history_filters(request)
    try:
        doc = await _read(request, request.app[BACKEND].history, env_id, **filters)
    except GreenticError as exc:
        return _not_found_page(request, exc)
    return _page(request, "history.html", env_id=env_id, h=doc, filters=filters, page_env=env_id)


async def plugins_page(request: web.Request) -> web.Response:
    doc = await _read(request, request.app[BACKEND].plugins)
    return _page(request, "plugins.html", p=doc, page_env="")


def _history_filters(request: web.Request) -> dict[str, Any]:
    filters: dict[str, Any] = {k: (request.query.get(k) or None) for k in ("actor", "verb", "outcome")}
    raw = request.query.get("limit")
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise web.HTTPBadRequest(text=json.dumps({"ok": False, "kind": "usage",
                                                      "message": "limit must be an integer >= 1"}),
                                     content_type="application/json")
        filters["limit"] = int(raw)
    else:
        filters["limit"] = 500
    return filters


# --------------------------------------------------------------------------- the JSON API


async def api_environments(request: web.Request) -> web.Response:
    return _json({"ok": True, "environments": await _read(request, request.app[BACKEND].environments)})


async def api_environment(request: web.Request) -> web.Response:
    try:
        doc = await _read(request, request.app[BACKEND].environment, request.match_info["env"])
    except GreenticError as exc:
        status, err = error_json(exc)
        return _json(err, status)
    return _json({"ok": True, "environment": doc})


async def api_runtime_config(request: web.Request) -> web.Response:
    try:
        doc = await _read(request, request.app[BACKEND].runtime_config, request.match_info["env"])
    except GreenticError as exc:
        status, err = error_json(exc)
        return _json(err, status)
    return _json({"ok": True, "runtime_config": doc})


async def api_rollout(request: web.Request) -> web.Response:
    try:
        doc = await _read(request, request.app[BACKEND].rollout, request.match_info["env"],
                          request.match_info["deployment"])
    except GreenticError as exc:
        status, err = error_json(exc)
        return _json(err, status)
    return _json({"ok": True, "rollout": doc})


async def api_history(request: web.Request) -> web.Response:
    try:
        doc = await _read(request, request.app[BACKEND].history, request.match_info["env"],
                          **_history_filters(request))
    except GreenticError as exc:
        status, err = error_json(exc)
        return _json(err, status)
    return _json({"ok": True, **doc})


async def api_plugins(request: web.Request) -> web.Response:
    return _json({"ok": True, **await _read(request, request.app[BACKEND].plugins)})


async def api_openapi(request: web.Request) -> web.Response:
    return _json(openapi_document(__version__))


async def api_events(request: web.Request) -> web.StreamResponse:
    env = request.query.get("env") or None
    live = request.app[LIVE]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    for key, value in HEADERS.items():
        response.headers[key] = value
    await response.prepare(request)
    sub = live.subscribe(env)
    live.start()
    try:
        await response.write(b"retry: 1000\n" + sse_frame("hello", {"env": env, "at": time.time()}))
        while True:
            try:
                kind, data = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(sse_frame(kind, data))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        live.unsubscribe(sub)
    return response


# --------------------------------------------------------------------------- actions


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"ok": False, "kind": "usage",
                                                            "message": "send application/json"}),
                                           content_type="application/json")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"ok": False, "kind": "usage",
                                                  "message": "the body must be a JSON object"}),
                                 content_type="application/json")
    return body


def _check_action(request: web.Request) -> web.Response | None:
    if not request.app[CONFIG]["allow_actions"]:
        return _json({"ok": False, "kind": "forbidden",
                      "message": "actions are off: start the dashboard with --allow-actions"}, 403)
    if request.get(AUTH) == "cookie":
        sessions = request.app[SESSIONS]
        if not sessions.check_csrf(request.get(SID), request.headers.get(CSRF_HEADER)):
            return _json({"ok": False, "kind": "forbidden", "message": "missing or wrong CSRF token"}, 403)
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _json({"ok": False, "kind": "forbidden", "message": "cross-origin request refused"}, 403)
    return None


async def _act(request: web.Request, env_id: str, body: dict[str, Any],
               work: Callable[[Callable[[str], None]], dict[str, Any]]) -> web.Response:
    refused = _check_action(request)
    if refused is not None:
        return refused
    live = request.app[LIVE]
    loop = asyncio.get_running_loop()
    action_id = body.get("action_id") if isinstance(body.get("action_id"), str) else None
    progress = live.publisher(loop, action_id)
    try:
        result = await loop.run_in_executor(request.app[WRITES], work, progress)
    except GreenticError as exc:
        status, doc = error_json(exc)
        if action_id:
            live.publish("progress", {"action_id": action_id, "message": doc["message"], "state": "error"})
        return _json(doc, status)
    if action_id:
        live.publish("progress", {"action_id": action_id, "message": "done", "state": "done"})
    request.app[BACKEND].forget_observation(env_id)
    return _json(result)


async def api_traffic_set(request: web.Request) -> web.Response:
    env_id, dep = request.match_info["env"], request.match_info["deployment"]
    body = await _body(request)
    backend = request.app[BACKEND]
    return await _act(request, env_id, body,
                      lambda progress: actions.traffic_set(backend, env_id, dep, body.get("weights"), progress))


async def api_traffic_rollback(request: web.Request) -> web.Response:
    env_id, dep = request.match_info["env"], request.match_info["deployment"]
    body = await _body(request)
    backend = request.app[BACKEND]
    return await _act(request, env_id, body,
                      lambda progress: actions.traffic_rollback(backend, env_id, dep, body.get("steps", 1), progress))


async def api_rollout_action(request: web.Request) -> web.Response:
    env_id, dep, action = request.match_info["env"], request.match_info["deployment"], request.match_info["action"]
    body = await _body(request)
    backend = request.app[BACKEND]
    return await _act(request, env_id, body, lambda progress: actions.rollout_action(
        backend, env_id, dep, action, body.get("reason"), progress))


async def api_revision_action(request: web.Request) -> web.Response:
    env_id, rev, action = request.match_info["env"], request.match_info["revision"], request.match_info["action"]
    body = await _body(request)
    backend = request.app[BACKEND]
    return await _act(request, env_id, body,
                      lambda progress: actions.revision_action(backend, env_id, rev, action, progress))


# --------------------------------------------------------------------------- the app


def make_app(backend: Backend, *, token: str, allow_actions: bool, loopback: bool = True,
             secure_cookie: bool = False) -> web.Application:
    app = web.Application(middlewares=[headers_middleware, auth_middleware], client_max_size=64 * 1024)
    reads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="greentic-ui-read")
    writes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="greentic-ui-action")
    app[BACKEND] = backend
    app[READS] = reads
    app[WRITES] = writes
    app[LIVE] = Live(backend, reads)
    app[SESSIONS] = Sessions(token)
    app[JINJA] = _templates()
    app[FRAGMENTS] = Fragments()
    app[CONFIG] = {"allow_actions": allow_actions, "loopback": loopback, "secure_cookie": secure_cookie,
                   "store_url": ""}

    async def on_startup(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        app[CONFIG]["store_url"] = await loop.run_in_executor(reads, lambda: backend.store_url)

    async def on_cleanup(app: web.Application) -> None:
        await app[LIVE].stop()
        reads.shutdown(wait=False, cancel_futures=True)
        writes.shutdown(wait=False, cancel_futures=True)

    async def on_shutdown(app: web.Application) -> None:
        await app[LIVE].stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    r = app.router
    r.add_get("/", index_page)
    r.add_get("/env/{env}", env_page)
    r.add_get("/env/{env}/rollout/{deployment}", rollout_page)
    r.add_get("/env/{env}/history", history_page)
    r.add_get("/plugins", plugins_page)
    r.add_get("/api/openapi.json", api_openapi)
    r.add_get("/api/events", api_events)
    r.add_get("/api/environments", api_environments)
    r.add_get("/api/environments/{env}", api_environment)
    r.add_get("/api/environments/{env}/history", api_history)
    r.add_get("/api/environments/{env}/runtime-config", api_runtime_config)
    r.add_get("/api/environments/{env}/rollouts/{deployment}", api_rollout)
    r.add_get("/api/plugins", api_plugins)
    r.add_post("/api/environments/{env}/deployments/{deployment}/traffic", api_traffic_set)
    r.add_post("/api/environments/{env}/deployments/{deployment}/rollback", api_traffic_rollback)
    r.add_post("/api/environments/{env}/deployments/{deployment}/rollout/{action:pause|resume|abort|promote}",
               api_rollout_action)
    r.add_post("/api/environments/{env}/revisions/{revision}/{action:drain|archive}", api_revision_action)
    r.add_static("/static/", HERE / "static", append_version=False)
    return app
