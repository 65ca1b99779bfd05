"""The router's data plane: an HTTP/1.1 reverse proxy on ``asyncio.Protocol`` with llhttp.

Why not aiohttp's request/response objects: at tens of thousands of requests per second the
time goes into per-request framework work (header multidicts, request and response objects,
tasks, the client's connection pool), not into the network. This module does the minimum
per request, with no task and no coroutine on the fast path:

* the client side (:class:`ClientConn`) parses with ``httptools`` (the C llhttp parser also
  used by uvicorn), callbacks straight into this protocol;
* the request head for the backend is built once, as bytes, in a single pass over the raw
  header pairs (hop-by-hop and ``Connection``-named headers dropped, ``X-Forwarded-*`` set);
* backends are reached over pooled keep-alive connections (:class:`UpstreamPool`, LIFO per
  backend address, idle ones closed after ``idle_timeout``); a new connection is the only
  step that needs a coroutine;
* the response (:class:`UpstreamConn`) is parsed the same way, its head rebuilt as bytes, its
  body relayed as it arrives (``Content-Length`` bodies unchanged, chunked or close-delimited
  bodies re-chunked for HTTP/1.1 clients), one ``write`` per received segment;
* flow control both ways: a full client send buffer pauses reading from the backend, a full
  backend send buffer pauses reading from the client, and a request body waiting for a
  backend connection is buffered up to :data:`MAX_PENDING` before the client is paused;
* reusing parsed state: a keep-alive client that sends the same bytes as in its previous
  segment, when that segment was exactly one whole bodyless request, gets the upstream head
  built for it then (llhttp would make the same calls); routing, the weighted pick and the
  counters still run for every request.

An answer that goes out before the request body was all read (a backend answering early, a
502, a 503) is followed by reading and dropping the rest of the body (up to the body limit,
for :data:`DRAIN_TIMEOUT` s), so the connection stays usable. When the connection must close
while the client may still be sending (413, ``Connection: close``), the close lingers: FIN
first, input dropped for :data:`LINGER_TIMEOUT` s, so the client reads the answer instead of
a reset.

Pipelined requests are answered in order (a request that arrives before the previous answer
is complete waits; reading from that client is paused meanwhile).

The routing state, counters and limits come from the owner (:class:`greentic_local_process.router.Proxy`):
this module reads ``proxy.state`` (swapped as one reference on reload), ``proxy.unrouted``,
``proxy.max_body`` and ``proxy.trust_forwarded``, and counts into each target's stats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from bisect import bisect_left
from collections import deque
from typing import Any

import httptools

log = logging.getLogger("greentic.router")

CRLF = b"\r\n"
SEP = b": "
LAST_CHUNK = b"0\r\n\r\n"
MAX_PENDING = 256 * 1024  # request body bytes buffered while no backend connection is ready
DRAIN_TIMEOUT = 10.0  # an answer went out before the request body was read: seconds to read and drop the rest
LINGER_TIMEOUT = 2.0  # closing while the client may still send: seconds to read and drop before the close

# request headers the head builder looks at; every other header is copied as it came
_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-connection",
})
_REQ_SPECIAL = _HOP | {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto",
                       b"x-forwarded-host", b"expect", b"forwarded", b"x-real-ip"}
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})  # bodyless: safe to send again elsewhere
# framing headers: a request naming one of them in Connection is refused (never "hop-by-hop")
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_RESP_SPECIAL = _HOP | {b"content-length", b"x-greentic-revision"}
_CONNECTION_PLAIN = frozenset({b"keep-alive", b"close", b"upgrade", b""})

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
_STATUS_PREFIX: dict[int, bytes] = {}

# ClientConn reading-pause reasons (bits)
_PAUSE_UPSTREAM = 1  # the backend's send buffer is full
_PAUSE_PIPELINE = 2  # a request arrived before the previous answer was complete
_PAUSE_PENDING = 4  # request body buffered while connecting


def _status_prefix(status: int) -> bytes:
    prefix = _STATUS_PREFIX.get(status)
    if prefix is None:
        prefix = b"HTTP/1.1 %d " % status
        if len(_STATUS_PREFIX) < 1000:
            _STATUS_PREFIX[status] = prefix
    return prefix


def json_answer(status: int, payload: dict[str, Any], *, revision_line: bytes = b"", close: bool = False,
                keep_alive_10: bool = False) -> bytes:
    body = json.dumps(payload).encode()
    return b"".join((
        _status_prefix(status), _REASONS.get(status, "Error").encode(), CRLF,
        b"Content-Type: application/json\r\nContent-Length: ", str(len(body)).encode(), CRLF,
        revision_line,
        b"Connection: close\r\n" if close else (b"Connection: keep-alive\r\n" if keep_alive_10 else b""),
        CRLF, body,
    ))


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing and answer ``status`` (then close)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")} - _CONNECTION_PLAIN


def _is_websocket_handshake(method: bytes, upgrade: bytes, tokens: bytes | None) -> bool:
    """A bodyless GET with ``Connection: upgrade`` and ``Upgrade: websocket`` (h2c and other
    protocols are served as ordinary requests, without their Upgrade)."""
    if method != b"GET" or tokens is None:
        return False
    if b"upgrade" not in {t.strip().lower() for t in tokens.split(b",")}:
        return False
    return b"websocket" in {t.strip().lower() for t in upgrade.split(b",")}


# --------------------------------------------------------------------------- exchange


class Exchange:
    """One request/response: parsed head, chosen backend, state of both directions."""

    __slots__ = (
        "client", "route", "target", "method", "is_head", "http10", "keep_alive",
        "head", "line_len", "needs_host", "body", "body_total", "req_done", "out", "out_size", "sent_body",
        "upstream", "connecting", "counted", "retried", "stale_retried", "started", "head_sent",
        "close_after", "done", "local", "status", "expect", "upgrade", "tunnel",
    )

    def __init__(self, client: ClientConn) -> None:
        self.client = client
        self.target: Any = None
        self.upstream: UpstreamConn | None = None
        self.out: list[bytes] = []
        self.out_size = 0
        self.body_total = 0
        self.req_done = False
        self.sent_body = False
        self.connecting = False
        self.counted = False
        self.retried = False
        self.stale_retried = False
        self.head_sent = False
        self.close_after = False
        self.done = False
        self.local: bytes | None = None
        self.status = 0
        self.expect = False
        self.upgrade: bytes | None = None  # the Upgrade value of a WebSocket handshake to forward
        self.tunnel = False  # switched protocols: bytes are relayed both ways until a side closes


# --------------------------------------------------------------------------- client side


class ClientConn(asyncio.Protocol):
    """One client connection: parses requests, hands them to backends, relays the answers."""

    __slots__ = (
        "server", "proxy", "loop", "transport", "parser", "peer", "active", "queue", "parsing",
        "url", "headers", "in_head", "head_bytes", "idle_since", "closed", "pauses", "write_paused",
        "drain_timer", "begun", "last", "tpl_data", "tpl", "heads", "head_mark", "body_mark",
        "upgrading", "early", "finished",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.proxy = server.proxy
        self.loop = server.loop
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b""
        self.active: Exchange | None = None
        self.queue: deque[Exchange] | None = None
        self.parsing: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = False
        self.head_bytes = 0
        self.idle_since: float | None = None
        self.closed = False
        self.pauses = 0
        self.write_paused = False
        self.drain_timer: asyncio.TimerHandle | None = None
        # reusing parsed state: a segment equal to the previous one, when that held exactly one
        # whole bodyless request, parses the same: its upstream head is reused (see data_received)
        self.begun = 0
        self.last: tuple[Any, ...] | None = None
        self.tpl_data = b""
        self.tpl: tuple[Any, ...] = ()
        # the sweep's progress marks: (heads begun, first seen) and (exchange, body bytes, last change)
        self.heads = 0
        self.head_mark: tuple[int, float] | None = None
        self.body_mark: tuple[Exchange, int, float] | None = None
        # after a WebSocket handshake request: its exchange (no more HTTP is parsed), and the
        # bytes the client sent before the revision agreed to switch (sent on at 101)
        self.upgrading: Exchange | None = None
        self.early: list[bytes] = []
        self.finished = False  # a request that ends the connection was read: nothing after it is

    # ----------------------------------------------------------------------- transport events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        if len(server.conns) >= server.max_connections:
            # over the connection limit: refuse at once, so descriptors are never exhausted
            server.refused_connections += 1
            self.closed = True
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0] if isinstance(peer, tuple) else str(peer or "")).encode()
        self.idle_since = self.server.now
        self.server.conns.add(self)
        if self.server.draining:
            self._shut()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.server.conns.discard(self)
        if self.head_bytes:
            self._release_head()
        # the parser refers back to this protocol: break the cycle, so what a half-read head
        # holds is freed now rather than at the next (rare, see router._settle_gc) collection
        self.parser = None
        self.headers = []
        self.url = b""
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        ex = self.active
        self.active = None
        self.queue = None
        if ex is not None and not ex.done:
            if ex.tunnel:  # the client closed its tunnel: a normal end
                ex.done = True
                _end_tunnel(ex)
                return
            _abandon(ex)

    def eof_received(self) -> bool | None:
        ex = self.upgrading
        if ex is not None and ex.tunnel:
            up = ex.upstream
            if up is not None and not up.closed:
                up.transport.close()  # the client is done: end the tunnel once its bytes are sent
            return None
        if self.parsing is not None:
            # half-closed before its request body was complete: that request can never finish,
            # so end both connections now (the client and the backend's) instead of waiting
            self._shut(abort=True)
            return None
        ex = self.active
        if ex is not None and not ex.done:
            ex.close_after = True  # half-closed client, request complete: answer, then close
            return True
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume()

    def _shut(self, abort: bool = False) -> None:
        """Stop serving this connection: nothing more is parsed or written."""
        if not self.closed:
            self.closed = True
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _linger(self) -> None:
        """Close after an answer while the client may still be sending: FIN first, then read and
        drop what still comes for a while, so the client reads the answer rather than a reset."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if self.pauses:
            self.pauses = 0
            transport.resume_reading()
        try:
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()
            return
        self.loop.call_later(LINGER_TIMEOUT, transport.close)

    def _drain_expired(self) -> None:
        self.drain_timer = None
        self._shut()

    def _pause(self, bit: int) -> None:
        if not self.pauses and not self.closed:
            self.transport.pause_reading()
        self.pauses |= bit

    def _resume(self, bit: int) -> None:
        if self.pauses & bit:
            self.pauses &= ~bit
            if not self.pauses and not self.closed:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.upgrading is not None:
            self._tunnel_in(data)
            return
        if self.finished:  # after a request without keep-alive: answer it, then close; drop the rest
            return
        at_boundary = self.active is None and self.parsing is None and not self.in_head
        if at_boundary and data == self.tpl_data:
            # the same bytes as the previous segment, which was one whole bodyless request parsed
            # from a message boundary: llhttp would make the same calls and end at a boundary again
            self._replay(self.tpl)
            return
        self.begun = 0
        self.last = None
        if self.in_head:
            self._hold(len(data))  # the segment may end the head and hold a body: checked below
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            last = self.queue[-1] if self.queue else self.active
            if last is not None and last.upgrade is not None and not last.done:
                # a WebSocket handshake: what follows is the tunnel's, not HTTP
                self.upgrading = last
                if offset < len(data):
                    self._tunnel_in(data[offset:])
                return
            # another Upgrade (h2c) or CONNECT: served as an ordinary request (Upgrade is
            # hop-by-hop and not forwarded); continue with a fresh parser after it
            self.parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])
                return
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refuse):
                if not self.closed:
                    self._refused(refused)
            else:
                log.exception("router: internal error on a request", exc_info=refused)
                self._parse_error("internal error")
            return
        except httptools.HttpParserError as exc:
            if not self.finished:  # (llhttp refuses bytes after a request that closes the connection)
                self._parse_error(str(exc))
            return
        if self.in_head:  # a head is still unfinished after this segment: is it over a limit?
            if not self.head_bytes:
                self._hold(len(data))  # begun in this segment
            if self._over_head_limits():
                return
        ex = self.parsing
        if ex is None:
            if (at_boundary and self.begun == 1 and self.last is not None and not self.in_head
                    and data.find(b"\r\n\r\n") == len(data) - 4):
                self.tpl_data = data  # exactly one whole request head, nothing after it
                self.tpl = self.last
        elif ex.out:
            up = ex.upstream
            if up is not None:
                up.transport.write(b"".join(ex.out))
                ex.out.clear()
                ex.out_size = 0
                ex.sent_body = True
            elif ex.out_size > MAX_PENDING:
                self._pause(_PAUSE_PENDING)

    def _tunnel_in(self, data: bytes) -> None:
        """Bytes from the client after a WebSocket handshake request."""
        ex = self.upgrading
        assert ex is not None
        up = ex.upstream
        if ex.tunnel and up is not None:
            up.transport.write(data)
            return
        if ex.done:  # the revision refused the switch: the answer went out, the rest is dropped
            return
        self.early.append(data)  # before the revision agreed: held until its 101
        if sum(map(len, self.early)) > MAX_PENDING:
            self._pause(_PAUSE_PENDING)

    def _replay(self, tpl: tuple[Any, ...]) -> None:
        ex = Exchange(self)
        ex.method, ex.is_head, ex.http10, ex.keep_alive, ex.head, ex.line_len, ex.needs_host, host, path = tpl
        ex.body = 0
        ex.expect = False
        ex.req_done = True
        self._dispatch(ex, host, path, None)

    # ----------------------------------------------------------------------- parser callbacks

    def on_url(self, url: bytes) -> None:
        # the first callback of every request (llhttp needs a target): starts the request
        if self.in_head:
            url = self.url + url
        else:
            if self.closed:
                raise _Refuse(0, "closed")
            self.in_head = True
            self.begun += 1
            self.heads += 1
            if self.active is not None:
                self._pause(_PAUSE_PIPELINE)  # pipelining: parse what we have, read no more for now
        self.url = url
        if len(url) > self.server.max_line:
            raise _Refuse(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # sizes are checked in on_headers_complete; data_received bounds the whole head meanwhile
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_bytes:
            self._release_head()
        parser = self.parser
        proxy = self.proxy
        ex = Exchange(self)
        method = parser.get_method()
        ex.method = method
        ex.is_head = method == b"HEAD"
        ex.http10 = parser.get_http_version() == "1.0"
        ex.keep_alive = parser.should_keep_alive()
        url = self.url
        self.url = b""
        headers = self.headers
        self.headers = []
        self.parsing = ex
        server = self.server
        if len(headers) > server.max_headers:
            raise _Refuse(431, "too many request headers")
        max_field = server.max_field
        if url[:1] == b"/" or url == b"*":
            path = url
        else:  # absolute-form target: forward the origin-form
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise _Refuse(400, "invalid request target") from None
            path = parsed.path or b"/"
            if parsed.query:
                path += b"?" + parsed.query
        trust = proxy.trust_forwarded
        out: list[bytes] = [method, b" ", path, b" HTTP/1.1\r\n"]
        host = xff = length = tokens = upgrade = None
        chunked = expect = xfp = xfh = False
        filtered = False
        hosts = 0
        head_size = len(url)
        while True:
            for name, value in headers:
                field = len(name) + len(value)
                if field >= max_field:
                    raise _Refuse(431, "request header too large")
                head_size += field
                lname = name.lower()
                if lname not in _REQ_SPECIAL:
                    out += (name, SEP, value, CRLF)
                elif lname == b"host":
                    hosts += 1
                    if hosts > 1:  # which one would the revision use? (RFC 9112 3.2: 400)
                        raise _Refuse(400, "more than one Host header")
                    host = value
                    out += (name, SEP, value, CRLF)
                elif lname == b"content-length":
                    length = value
                    out += (name, SEP, value, CRLF)
                elif lname == b"transfer-encoding":
                    chunked = True
                elif lname == b"x-forwarded-for":
                    xff = value if xff is None else xff + b", " + value
                elif lname == b"x-forwarded-proto":
                    if trust:
                        xfp = True
                        out += (name, SEP, value, CRLF)
                elif lname == b"x-forwarded-host":
                    if trust:
                        xfh = True
                        out += (name, SEP, value, CRLF)
                elif lname == b"expect":  # (an HTTP/1.0 client's expectation is ignored: RFC 9110 10.1.1)
                    expect = value.strip().lower() == b"100-continue" and not ex.http10
                elif lname == b"forwarded" or lname == b"x-real-ip":
                    if trust:  # client-supplied addresses are believed only behind a trusted proxy
                        out += (name, SEP, value, CRLF)
                elif lname == b"connection":
                    tokens = value if tokens is None else tokens + b"," + value
                elif lname == b"upgrade":
                    upgrade = value
            if not filtered and tokens is not None and tokens.lower() not in _CONNECTION_PLAIN:
                drop = _connection_tokens(tokens) - {b"host"}
                if drop & _FRAMING:
                    # the body's framing would be dropped while the body is still forwarded: the
                    # revision would read that body as another request (smuggling). nginx and
                    # Envoy refuse such a request too.
                    raise _Refuse(400, "Connection names a framing header (Content-Length or Transfer-Encoding)")
                if drop:  # headers named in Connection are hop-by-hop too: build again without them
                    filtered = True
                    headers = [(n, v) for n, v in headers if n.lower() not in drop]
                    head_size = 0
                    out = [method, b" ", path, b" HTTP/1.1\r\n"]
                    host = xff = length = tokens = upgrade = None
                    chunked = expect = xfp = xfh = False
                    hosts = 0
                    continue
            break
        if head_size + 4 * len(headers) > server.max_head:  # a whole head that arrived in one read
            raise _Refuse(431, "request header block too large")
        peer = self.peer
        out += (b"X-Forwarded-For: ", xff + b", " + peer if xff else peer, CRLF)
        if not xfp:
            out.append(b"X-Forwarded-Proto: http\r\n")
        if host is not None and not xfh:
            out += (b"X-Forwarded-Host: ", host, CRLF)
        if chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
            ex.body = 2
        elif length is not None and int(length) > 0:
            ex.body = 1
        else:
            ex.body = 0
            if upgrade is not None and _is_websocket_handshake(method, upgrade, tokens):
                ex.upgrade = upgrade  # forwarded, so the revision can accept the switch
                out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, CRLF)
        out.append(CRLF)
        head = ex.head = b"".join(out)
        line_len = ex.line_len = len(method) + len(path) + 12  # "METHOD PATH HTTP/1.1\r\n"
        needs_host = ex.needs_host = host is None
        if ex.body == 0 and ex.upgrade is None:
            self.last = (method, ex.is_head, ex.http10, ex.keep_alive, head, line_len, needs_host, host, path)
        else:
            ex.expect = expect
        self._dispatch(ex, host, path, length)

    def _dispatch(self, ex: Exchange, host: bytes | None, path: bytes, length: bytes | None) -> None:
        """Route and pick for a parsed request head, then start it or queue it (pipelining)."""
        proxy = self.proxy
        state = proxy.state  # this request's table, whatever reloads happen meanwhile
        route = state.single
        if route is None:
            deployment = state.table.route(host.decode("latin-1") if host is not None else None,
                                           path.decode("latin-1"))
            route = state.routes[deployment.deployment_id] if deployment is not None else None
        if route is None:
            proxy.unrouted += 1
            self._local(ex, 503, {"error": "no routable revision", "deployment_id": None})
        else:
            ex.route = route
            target = route.pick()
            if target is None:
                proxy.unrouted += 1
                self._local(ex, 503, {"error": "no routable revision",
                                      "deployment_id": route.deployment.deployment_id})
            elif ex.body == 1 and int(length) > proxy.max_body:
                ex.local = json_answer(413, {"error": "request body too large", "limit_bytes": proxy.max_body},
                                       close=True)
                ex.close_after = True
            else:
                ex.target = target
        if self.active is None:
            self.active = ex
            self.idle_since = None
            self._start(ex)
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None:  # pragma: no cover - llhttp calls on_body only inside a message
            return
        if ex.body == 0:  # never forward bytes the head we built does not frame
            raise _Refuse(400, "request body without framing")
        n = len(body)
        ex.body_total += n
        if ex.body_total > self.proxy.max_body:
            raise _Refuse(413, "request body too large")
        if ex.local is not None or ex.done:
            return  # refused request: the body is read and dropped
        if ex.body == 2:
            ex.out += (b"%x\r\n" % n, body, CRLF)
        else:
            ex.out.append(body)
        ex.out_size += n

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        if ex is None:  # pragma: no cover
            return
        ex.req_done = True
        if not ex.keep_alive:
            self.finished = True
        if ex.done:
            if ex is self.active:  # answered before its body was all read: now drained, go on
                self._next(ex)
            return
        if ex.local is not None:  # a queued local answer: the body was dropped
            ex.out.clear()
            return
        if ex.body == 2:
            ex.out.append(LAST_CHUNK)
        up = ex.upstream
        if up is not None and ex.out:
            up.transport.write(b"".join(ex.out))
            ex.out.clear()
            ex.out_size = 0
            ex.sent_body = True
        if self.pauses:
            self._resume(_PAUSE_PENDING)

    # ----------------------------------------------------------------------- exchange flow

    def _local(self, ex: Exchange, status: int, payload: dict[str, Any]) -> None:
        """A local answer (503); a request body is then read and dropped (see :meth:`_next`)."""
        close = not ex.keep_alive
        ex.local = json_answer(status, payload, close=close, keep_alive_10=ex.http10 and not close)
        ex.close_after = close

    def _start(self, ex: Exchange, fresh: bool = False) -> None:
        """``ex`` became the active exchange: answer locally or send it to its backend."""
        if ex.local is not None:
            self._answer_local(ex)
            return
        if ex.expect:
            ex.expect = False
            if not ex.req_done:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        target = ex.target
        target.stats.in_flight += 1
        ex.counted = True
        ex.started = self.loop.time()
        up = None if fresh else self.server.pool.acquire(target.key)
        if up is not None:
            self._bind(ex, up)
        else:
            self._connect(ex)

    def _answer_local(self, ex: Exchange) -> None:
        ex.done = True
        self.transport.write(ex.local)  # type: ignore[arg-type]
        ex.local = b""
        self._next(ex)

    def _bind(self, ex: Exchange, up: UpstreamConn) -> None:
        ex.upstream = up
        up.ex = ex
        up.got = False
        up.in_body = False
        if up.server.read_timeout:
            up.last_read = self.loop.time()
        if self.write_paused:
            up.pause()
        head = ex.head
        if ex.needs_host:
            line_len = ex.line_len
            head = head[:line_len] + ex.target.host_line + head[line_len:]
        if ex.out:
            ex.out.insert(0, head)
            head = b"".join(ex.out)
            ex.out.clear()
            ex.out_size = 0
            ex.sent_body = True
        up.transport.write(head)
        if self.pauses:
            self._resume(_PAUSE_PENDING)

    def _connect(self, ex: Exchange) -> None:
        ex.connecting = True
        task = self.loop.create_task(self._connect_task(ex, ex.target))
        tasks = self.server.tasks  # a reference until it is done (the loop keeps only weak ones)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _connect_task(self, ex: Exchange, target: Any) -> None:
        server = self.server
        try:
            _, up = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConn(server, target.key), target.host, target.port),
                server.connect_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure to connect is answered
            ex.connecting = False
            if not ex.done:
                self._connect_failed(ex, target, exc)
            return
        ex.connecting = False
        if ex.done or self.closed:
            server.pool.release(up)  # fresh and unused: keep it for the next request
            return
        self._bind(ex, up)

    def _connect_failed(self, ex: Exchange, target: Any, exc: BaseException) -> None:
        stats = target.stats
        stats.in_flight -= 1
        stats.errors += 1
        stats.connect_errors += 1
        ex.counted = False
        if not ex.retried:
            other = ex.route.pick_other(target)
            if other is not None:
                ex.retried = True
                other.stats.retries += 1
                ex.target = other
                self._start(ex)
                return
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            detail = f"could not connect to {target.address} in time"
        else:
            detail = f"could not connect to {target.address}: {getattr(exc, 'strerror', None) or exc}"
        self._fail(ex, target, 502, detail)

    def _fail(self, ex: Exchange, target: Any, status: int, detail: str) -> None:
        """Answer a failed exchange (no response head sent yet) with a JSON 502/504."""
        log.warning("%s %s -> %s", status, target.revision_id, detail)
        ex.done = True
        close = not ex.keep_alive
        self.transport.write(json_answer(
            status, {"error": "bad gateway" if status == 502 else "gateway timeout", "detail": detail,
                     "deployment_id": ex.route.deployment.deployment_id, "revision_id": target.revision_id},
            revision_line=target.rev_line, close=close, keep_alive_10=ex.http10 and not close))
        ex.close_after = close
        self._next(ex)

    def _next(self, ex: Exchange) -> None:
        """``ex`` is answered (or failed): go on with the next request, or close."""
        if self.closed:
            self.active = None
            return
        if self.pauses:
            self._resume(_PAUSE_UPSTREAM | _PAUSE_PENDING)
        if not ex.req_done:
            if ex.close_after or self.server.draining:
                self.active = None
                self._linger()
                return
            # the answer went out before the request body was all read (an early answer from the
            # backend, a 502, a 503): read the rest and drop it, then go on (on_message_complete)
            if self.drain_timer is None:
                self.drain_timer = self.loop.call_later(DRAIN_TIMEOUT, self._drain_expired)
            return
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None
        self.active = None
        if ex.close_after or self.server.draining:
            self._shut()
            return
        queue = self.queue
        if queue:
            nxt = queue.popleft()
            self.active = nxt
            self._start(nxt)
            return
        self.idle_since = self.server.now  # coarse clock: the keep-alive sweep runs once a second
        if self.pauses:
            self._resume(_PAUSE_PIPELINE)

    # ----------------------------------------------------------------------- errors

    def _refuse_head(self, status: int, error: str) -> None:
        self.parser = httptools.HttpRequestParser(self)  # parse nothing more
        self.in_head = False
        if self.head_bytes:
            self._release_head()
        self._close_with(json_answer(status, {"error": error}, close=True))

    def _hold(self, n: int) -> None:
        """Count ``n`` more bytes of an unfinished request head, per connection and in total."""
        server = self.server
        self.head_bytes += n
        held = server.head_held = server.head_held + n
        if held > server.head_peak:
            server.head_peak = held

    def _over_head_limits(self) -> bool:
        """True when this unfinished head, or all of them together, crossed a limit (the
        connection was then refused)."""
        server = self.server
        if self.head_bytes > server.max_head:
            self._refuse_head(431, "request header block too large")
            return True
        if server.head_held > server.max_head_total:
            server.head_budget_refusals += 1
            self._refuse_head(503, "too many unfinished request heads; try again")
            return True
        return False

    def _release_head(self) -> None:
        self.server.head_held -= self.head_bytes
        self.head_bytes = 0

    def _timed_out(self, what: str) -> None:
        """The sweep found a request head or body that stopped arriving: answer 408 if nothing
        was answered yet, and end both connections (nothing waits for ever on a silent client)."""
        if self.closed:
            return
        ex = self.active
        if ex is not None and not ex.done:
            _abandon(ex)
            if ex.head_sent:  # an answer is already streaming: it cannot be completed
                self._shut(abort=True)
                return
        elif ex is not None:  # answered; the rest of the body was being dropped
            self.active = None
            self._shut(abort=True)
            return
        self.active = None
        self.parsing = None
        self.transport.write(json_answer(408, {"error": f"request {what} not received in time"}, close=True))
        self._shut()

    def _close_with(self, answer: bytes) -> None:
        if self.active is None and not self.closed:
            self.transport.write(answer)
            self._shut()
        else:
            self._shut(abort=True)

    def _refused(self, refused: _Refuse) -> None:
        ex = self.parsing
        if ex is None or refused.status != 413:
            self._close_with(json_answer(refused.status, {"error": refused.error}, close=True))
            return
        # the request body grew past the limit
        self.parsing = None
        if ex is not self.active:
            self._shut(abort=True)
            return
        if ex.counted:
            ex.target.stats.in_flight -= 1
            ex.counted = False
        up = ex.upstream
        if up is not None:
            ex.upstream = None
            up.ex = None
            up.abort()
        if ex.done:  # answered already, the rest of the body was being dropped: stop reading it
            self.active = None
            self._linger()
            return
        if ex.head_sent:  # the answer is streaming: it cannot be completed any more
            self._shut(abort=True)
            return
        ex.done = True
        self.active = None
        self.transport.write(json_answer(413, {"error": "request body too large",
                                               "limit_bytes": self.proxy.max_body}, close=True))
        self._linger()

    def _parse_error(self, reason: str) -> None:
        ex = self.parsing
        if ex is None:
            self._close_with(json_answer(400, {"error": "bad request", "detail": reason}, close=True))
            return
        # a broken request body (bad chunk framing...): the upload is incomplete
        self.parsing = None
        if ex is not self.active or ex.done:
            self._shut(abort=True)
            return
        _abandon(ex)
        if ex.head_sent:
            self._shut(abort=True)
            return
        self.transport.write(json_answer(400, {"error": "request body incomplete"}, close=True))
        self._shut()


# --------------------------------------------------------------------------- backend side


class UpstreamConn(asyncio.Protocol):
    """One keep-alive connection to a backend; bound to one exchange at a time."""

    __slots__ = (
        "server", "pool", "key", "transport", "parser", "ex", "headers", "reason", "got", "closed",
        "reused", "idle_since", "paused", "chunk_out", "eof_body", "skip", "last_read", "in_body", "head_bytes",
        "tunnel",
    )

    def __init__(self, server: ProxyServer, key: tuple[str, int]) -> None:
        self.server = server
        self.pool = server.pool
        self.key = key
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.got = False
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.paused = False
        self.chunk_out = False
        self.eof_body = False
        self.skip = False
        self.in_body = False
        self.head_bytes = 0
        self.last_read = 0.0
        self.tunnel = False

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # ----------------------------------------------------------------------- transport events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.client._pause(_PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.client._resume(_PAUSE_UPSTREAM)

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if self.tunnel:
            if ex is not None:
                ex.client.transport.write(data)
            return
        if ex is None:  # nothing asked: a stray byte from an idle connection makes it unusable
            self.abort()
            self.pool.discard(self)
            return
        self.got = True
        if self.server.read_timeout:
            self.last_read = self.server.loop.time()
        if not self.in_body:
            self.head_bytes += len(data)  # the segment may hold body bytes too: checked below
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self.tunnel and offset < len(data) and self.ex is ex:
                ex.client.transport.write(data[offset:])  # the revision's first tunnel bytes
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Refuse):
                log.exception("router: internal error on a response", exc_info=cause)
            self._broken(ex, f"invalid response: {cause}")
            return
        except httptools.HttpParserError as exc:
            self._broken(ex, f"invalid response: {exc}")
            return
        if not self.in_body and self.head_bytes > self.server.max_head and self.ex is ex:
            self._broken(ex, "response header block too large")  # still no end of the head
            return
        if ex.out and self.ex is ex:
            ex.client.transport.write(b"".join(ex.out))
            ex.out.clear()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is None:
            self.pool.discard(self)
            return
        if self.tunnel:  # the revision closed the tunnel: a normal end
            if not ex.done:
                ex.done = True
                _end_tunnel(ex)
            return
        self.ex = None
        if ex.done:
            return
        if self.in_body and self.eof_body and exc is None:
            self._finish(ex, reusable=False)  # a close-delimited body ends with the connection
            return
        ex.upstream = None
        target = ex.target
        if ex.head_sent:
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection closed"
            log.warning("%s broke off mid-response: %s", target.revision_id, reason)
            self._cut(ex)
            return
        client = ex.client
        if self.reused and not self.got and ex.body == 0 and not ex.stale_retried and not client.closed:
            # a pooled connection the backend had closed meanwhile: once more on a fresh one
            ex.stale_retried = True
            target.stats.in_flight -= 1
            target.stats.retries += 1
            ex.counted = False
            client._start(ex, fresh=True)
            return
        if (not self.got and ex.body == 0 and not ex.retried and ex.method in _IDEMPOTENT and ex.upgrade is None
                and not client.closed):
            # the backend died before answering a bodyless idempotent request (a replica killed,
            # a revision restarting): once on another replica or revision, as nginx's
            # proxy_next_upstream does; nothing reached the client yet
            other = ex.route.pick_other(target)
            if other is not None:
                ex.retried = True
                target.stats.in_flight -= 1
                target.stats.errors += 1
                other.stats.retries += 1
                ex.counted = False
                ex.target = other
                client._start(ex)
                return
        target.stats.in_flight -= 1
        target.stats.errors += 1
        ex.counted = False
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else \
            "ServerDisconnected: Server disconnected"
        client._fail(ex, target, 502, f"{target.address} failed: {reason}")

    # ----------------------------------------------------------------------- parser callbacks

    def on_status(self, reason: bytes) -> None:
        self.reason = reason if not self.reason else self.reason + reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))  # the head's size is bounded in data_received

    def on_headers_complete(self) -> None:
        ex = self.ex
        if ex is None:  # pragma: no cover
            return
        status = self.parser.get_status_code()
        headers = self.headers
        reason = self.reason
        self.headers = []
        self.reason = b""
        self.head_bytes = 0
        if status < 200:
            if status == 101:
                if ex.upgrade is None:
                    raise _Refuse(502, "unexpected protocol switch")
                self._switch(ex, headers, reason)
                return
            self.skip = True  # 1xx informational: wait for the real answer
            return
        ex.status = status
        client = ex.client
        target = ex.target
        out: list[bytes] = [_STATUS_PREFIX.get(status) or _status_prefix(status), reason, CRLF]
        length = tokens = None
        chunked = filtered = False
        while True:
            for name, value in headers:
                lname = name.lower()
                if lname not in _RESP_SPECIAL:
                    out += (name, SEP, value, CRLF)
                elif lname == b"content-length":
                    length = value
                elif lname == b"transfer-encoding":
                    chunked = True
                elif lname == b"connection":
                    tokens = value if tokens is None else tokens + b"," + value
            if not filtered and tokens is not None and tokens.lower() not in _CONNECTION_PLAIN:
                drop = _connection_tokens(tokens)
                if drop:  # headers named in Connection are hop-by-hop too: build again without them
                    filtered = True
                    headers = [(n, v) for n, v in headers if n.lower() not in drop]
                    out = [_status_prefix(status), reason, CRLF]
                    length = tokens = None
                    chunked = False
                    continue
            break
        out.append(target.rev_line)
        no_body = ex.is_head or status == 204 or status == 304
        # a refused WebSocket handshake closes too: the client may already be sending frames
        close = ex.close_after or not ex.keep_alive or client.server.draining or ex.upgrade is not None
        self.chunk_out = False
        self.eof_body = False
        if no_body:
            if length is not None:
                out += (b"Content-Length: ", length, CRLF)
        elif chunked:
            if ex.http10:
                close = True  # no chunked framing for HTTP/1.0: the body ends with the connection
            else:
                out.append(b"Transfer-Encoding: chunked\r\n")
                self.chunk_out = True
        elif length is not None:
            out += (b"Content-Length: ", length, CRLF)
        else:
            self.eof_body = True
            if ex.http10:
                close = True
            else:
                out.append(b"Transfer-Encoding: chunked\r\n")
                self.chunk_out = True
        if close:
            out.append(b"Connection: close\r\n")
        elif ex.http10:
            out.append(b"Connection: keep-alive\r\n")
        out.append(CRLF)
        ex.close_after = close
        ex.head_sent = True
        ex.out += out  # ex.out is free: the request body was flushed before any response
        self.in_body = True
        if no_body and ex.is_head:
            # llhttp does not know the request was HEAD: the answer is complete now, and the
            # next answer on this connection gets a fresh parser
            keep = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._finish(ex, reusable=keep)

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is None or self.skip:
            return
        if self.chunk_out:
            ex.out += (b"%x\r\n" % len(body), body, CRLF)
        else:
            ex.out.append(body)

    def on_message_complete(self) -> None:
        if self.skip:
            self.skip = False
            return
        if self.tunnel:  # the 101 ends the HTTP part; the tunnel goes on
            return
        ex = self.ex
        if ex is None:
            return
        self._finish(ex, reusable=self.parser.should_keep_alive())

    def _switch(self, ex: Exchange, headers: list[tuple[bytes, bytes]], reason: bytes) -> None:
        """The revision accepted a WebSocket handshake (101): send its answer on, then relay
        bytes both ways (:meth:`ClientConn._tunnel_in`, :meth:`data_received`) until a side closes.
        The tunnel stays counted in flight, so drain waits for it."""
        out: list[bytes] = [_status_prefix(101), reason, CRLF]
        upgrade = ex.upgrade
        for name, value in headers:
            lname = name.lower()
            if lname == b"upgrade":
                upgrade = value
            elif lname not in _RESP_SPECIAL:
                out += (name, SEP, value, CRLF)
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade or b"websocket", CRLF, ex.target.rev_line, CRLF)
        self.tunnel = True
        ex.tunnel = True
        ex.head_sent = True
        ex.status = 101
        client = ex.client
        client.transport.write(b"".join(out))
        if client.early:
            self.transport.write(b"".join(client.early))
            client.early.clear()
            client._resume(_PAUSE_PENDING)

    # ----------------------------------------------------------------------- endings

    def _finish(self, ex: Exchange, *, reusable: bool) -> None:
        """The response is complete: flush it, give the connection back, count, go on."""
        if self.chunk_out:
            ex.out.append(LAST_CHUNK)
        client = ex.client
        if ex.out:
            if not client.closed:
                client.transport.write(b"".join(ex.out))
            ex.out.clear()
        self.ex = None
        self.in_body = False
        ex.upstream = None
        ex.done = True
        if self.paused:
            self.resume()
        if reusable and ex.req_done and not self.closed:
            self.pool.release(self)
        else:
            self.abort()
        stats = ex.target.stats
        if ex.counted:
            ex.counted = False
            stats.in_flight -= 1
            stats.completed += 1
            if ex.status >= 500:
                stats.upstream_5xx += 1
            elapsed = client.loop.time() - ex.started
            stats.hist[bisect_left(self.server.bounds, elapsed)] += 1
            stats.classes[ex.status // 100 % 6] += 1
            stats.seconds += elapsed
        client._next(ex)

    def _cut(self, ex: Exchange) -> None:
        """The backend broke off mid-response: cut the client so the truncation shows."""
        ex.done = True
        if ex.counted:
            ex.counted = False
            ex.target.stats.in_flight -= 1
            ex.target.stats.errors += 1
        client = ex.client
        if ex.out and not client.closed:
            client.transport.write(b"".join(ex.out))
            ex.out.clear()
        client._shut(abort=True)

    def _broken(self, ex: Exchange, detail: str) -> None:
        """An unparsable response: 502 when nothing was relayed yet, else cut the client."""
        self.ex = None
        ex.upstream = None
        self.abort()
        if ex.done:
            return
        if ex.head_sent:
            log.warning("%s sent an invalid response body: %s", ex.target.revision_id, detail)
            self._cut(ex)
            return
        ex.target.stats.in_flight -= 1
        ex.target.stats.errors += 1
        ex.counted = False
        ex.client._fail(ex, ex.target, 502, f"{ex.target.address} failed: {detail}")


def _abandon(ex: Exchange) -> None:
    """The client gave up on (or was cut off from) an unanswered exchange: count it a client
    abort and drop its backend connection, which may be mid-request."""
    ex.done = True
    if ex.counted:
        ex.counted = False
        stats = ex.target.stats
        stats.in_flight -= 1
        stats.client_aborts += 1
    up = ex.upstream
    if up is not None:
        ex.upstream = None
        up.ex = None
        up.abort()


def _end_tunnel(ex: Exchange) -> None:
    """A tunnel ended (either side closed): count it answered and close the other side once
    what it still has to send is sent."""
    if ex.counted:
        ex.counted = False
        stats = ex.target.stats
        stats.in_flight -= 1
        stats.completed += 1
        stats.classes[1] += 1  # 101: answered by switching protocols
    up = ex.upstream
    ex.upstream = None
    if up is not None:
        up.ex = None
        if not up.closed:
            up.closed = True
            up.transport.close()
    client = ex.client
    client.active = None
    client._shut()


# --------------------------------------------------------------------------- pool


class UpstreamPool:
    """Idle keep-alive connections per backend address, most recently used first."""

    def __init__(self, server: ProxyServer, *, max_idle: int = 1024, idle_timeout: float = 30.0) -> None:
        self.server = server
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = {}
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout

    def acquire(self, key: tuple[str, int]) -> UpstreamConn | None:
        conns = self.idle.get(key)
        while conns:
            up = conns.pop()
            if not up.closed:
                up.reused = True  # it may have been closed by the backend meanwhile (a stale one)
                return up
        return None

    def release(self, up: UpstreamConn) -> None:
        conns = self.idle.get(up.key)
        if conns is None:
            conns = self.idle[up.key] = []
        if len(conns) >= self.max_idle:
            up.abort()
            return
        up.idle_since = self.server.now
        conns.append(up)

    def discard(self, up: UpstreamConn) -> None:
        conns = self.idle.get(up.key)
        if conns:
            try:
                conns.remove(up)
            except ValueError:
                pass

    def sweep(self, now: float) -> None:
        limit = now - self.idle_timeout
        for conns in self.idle.values():
            while conns and conns[0].idle_since < limit:
                conns.pop(0).abort()

    def close(self) -> None:
        for conns in self.idle.values():
            for up in conns:
                up.abort()
            conns.clear()


# --------------------------------------------------------------------------- server


_TRIM_AFTER = 4 * 1024 * 1024  # head bytes held at once above which their memory is handed back


def _malloc_trim() -> None:
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class ProxyServer:
    """The listener, its client connections, the backend pool and the periodic sweep."""

    def __init__(self, proxy: Any, *, bounds: list[float], connect_timeout: float, read_timeout: float | None,
                 keepalive_timeout: float, max_line: int, max_field: int, max_headers: int,
                 backlog: int = 1024, max_head_bytes: int = 64 * 1024, max_head_total: int = 64 * 1024 * 1024,
                 max_connections: int = 10000, header_timeout: float = 30.0, body_timeout: float = 60.0) -> None:
        self.proxy = proxy
        self.bounds = bounds
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout or 0.0
        self.header_timeout = header_timeout or 0.0
        self.body_timeout = body_timeout or 0.0
        # idle connections, slow clients and silent backends are looked for at this interval (a
        # timeout fires between its value and its value + interval)
        shortest = min([t for t in (self.read_timeout, self.header_timeout, self.body_timeout) if t] or [4.0])
        self.sweep_interval = min(1.0, max(0.05, shortest / 4))
        self.keepalive_timeout = keepalive_timeout
        self.max_line = max_line
        self.max_field = max_field
        self.max_headers = max_headers
        # bytes of one unfinished request head, and of all of them together (memory a slow or
        # hostile client can make the router hold)
        self.max_head = min(max_head_bytes, max_line + max_headers * (max_field + 4) + 4)
        self.max_head_total = max_head_total
        self.head_held = 0
        self.head_peak = 0
        self.head_budget_refusals = 0
        self.max_connections = max_connections
        self.refused_connections = 0
        self.backlog = backlog
        self.conns: set[ClientConn] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # backend connections being made
        self.draining = False
        self.now = 0.0  # loop.time() at the last sweep: the coarse clock of idle connections
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.pool: UpstreamPool = None  # type: ignore[assignment]
        self.server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        self.pool = UpstreamPool(self)
        self.server = await self.loop.create_server(lambda: ClientConn(self), sock=sock, backlog=self.backlog)
        self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        now = self.now = self.loop.time()
        keepalive = self.keepalive_timeout
        read_timeout = self.read_timeout
        header_timeout = self.header_timeout
        body_timeout = self.body_timeout
        for conn in list(self.conns):
            if conn.closed:
                continue
            if header_timeout:
                # a head is timed from when the sweep first saw it unfinished (within one interval)
                if not conn.in_head:
                    conn.head_mark = None
                elif conn.head_mark is None or conn.head_mark[0] != conn.heads:
                    conn.head_mark = (conn.heads, now)
                elif now - conn.head_mark[1] > header_timeout:
                    conn._timed_out("head")
                    continue
            if body_timeout:
                # a body must keep arriving: timed from its last progress, not while we stopped reading
                parsing = conn.parsing
                if parsing is None:
                    conn.body_mark = None
                else:
                    mark = conn.body_mark
                    if mark is None or mark[0] is not parsing or mark[1] != parsing.body_total or conn.pauses:
                        conn.body_mark = (parsing, parsing.body_total, now)
                    elif now - mark[2] > body_timeout:
                        conn._timed_out("body")
                        continue
            ex = conn.active
            if ex is None:
                if conn.idle_since is not None and now - conn.idle_since > keepalive:
                    conn._shut()
            elif read_timeout and not ex.done and not ex.tunnel:
                up = ex.upstream
                if up is not None and now - up.last_read > read_timeout:
                    self._read_timed_out(ex, up)
        self.pool.sweep(now)
        if self.head_peak > _TRIM_AFTER and self.head_held == 0:
            # many large unfinished heads were held and are all gone: give the memory back to the
            # system (the C allocator keeps freed small blocks in its heap otherwise)
            self.head_peak = 0
            _malloc_trim()
        self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def _read_timed_out(self, ex: Exchange, up: UpstreamConn) -> None:
        up.ex = None
        ex.upstream = None
        up.abort()
        target = ex.target
        if ex.head_sent:
            log.warning("%s went silent mid-response", target.revision_id)
            up._cut(ex)
            return
        target.stats.in_flight -= 1
        target.stats.errors += 1
        ex.counted = False
        ex.client._fail(ex, target, 504, f"{target.address} did not answer in time")

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let the requests in flight finish (at most ``timeout`` s), close the rest."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            if conn.active is None:
                conn._shut()
        deadline = self.loop.time() + timeout
        while self.conns and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.conns):
            if conn.closed:
                conn.transport.abort()  # closing but still flushing: cut it
            conn._shut(abort=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self.tasks):
            task.cancel()
        self.pool.close()
        await asyncio.sleep(0)
