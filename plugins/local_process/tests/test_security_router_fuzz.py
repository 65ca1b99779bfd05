"""Differential fuzz of the router's HTTP parsing and framing (request smuggling).

The oracle: the router parses a client's bytes with llhttp; what it forwards is parsed by a
*different* parser, h11 (a strict pure-Python HTTP/1.1 implementation), in the revision. For
every generated request (valid, borderline and malformed, including the smuggling families
CL.TE, TE.CL, TE.TE, framing headers named in ``Connection``, chunk extensions, obs-fold, bare
LF/CR, duplicate or odd Content-Length), the router must either refuse it or forward requests
that the revision parses exactly as the router did:

* every complete request the revision receives is, in order, one of the messages llhttp parsed
  from the client's bytes: same method, same target (origin form), same body bytes;
* the revision never receives a request llhttp did not see as a request (a smuggled one), never
  has bytes left over after a forwarded request on its keep-alive connection, and never fails
  to parse what the router sent;
* a request the router refuses (4xx/5xx of its own) reaches the revision not at all, or only as
  an incomplete request that the router cut off.

CI runs a bounded, derandomized number of examples (``FUZZ_EXAMPLES``, default 300). A long
campaign with fresh random draws::

    HYPOTHESIS_PROFILE=random GREENTIC_FUZZ_EXAMPLES=100000 \\
        .venv/bin/python -m pytest plugins/local_process/tests/test_security_router_fuzz.py -p no:cacheprovider

A failure prints the smallest reproducing request (hypothesis shrinks it) and a
``@reproduce_failure`` blob.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import h11
import httptools
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router_helpers import RouterProcess, deployment, make_table, read_to_close, wait_for

FUZZ_EXAMPLES = int(os.environ.get("GREENTIC_FUZZ_EXAMPLES", "300"))
pytestmark = pytest.mark.timeout(max(300, FUZZ_EXAMPLES // 2))


# --------------------------------------------------------------------------- the revision (h11)


class RecordingBackend:
    """A real HTTP server on 127.0.0.1 that parses with h11 and records what it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.busy = 0  # connections in the middle of a request
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _record(self, **fields: Any) -> None:
        with self.lock:
            self.records.append(fields)

    def _serve(self, conn: socket.socket) -> None:
        parser = h11.Connection(h11.SERVER)
        current: dict[str, Any] | None = None
        try:
            while True:
                event_ = parser.next_event()
                if event_ is h11.NEED_DATA:
                    data = conn.recv(65536)
                    parser.receive_data(data)
                    if not data and current is not None:
                        self._record(kind="incomplete", target=current["target"])
                        current = None
                        with self.lock:
                            self.busy -= 1
                    continue
                if isinstance(event_, h11.Request):
                    current = {"method": event_.method, "target": event_.target, "body": b""}
                    with self.lock:
                        self.busy += 1
                elif isinstance(event_, h11.Data) and current is not None:
                    current["body"] += bytes(event_.data)
                elif isinstance(event_, h11.EndOfMessage) and current is not None:
                    leftover, _ = parser.trailing_data
                    self._record(kind="complete", leftover=bytes(leftover), **current)
                    current = None
                    with self.lock:
                        self.busy -= 1
                    body = b"fuzz-ok"
                    conn.sendall(parser.send(h11.Response(status_code=200, headers=[
                        ("Content-Length", str(len(body))), ("X-Fuzz-Backend", "1")])))
                    conn.sendall(parser.send(h11.Data(data=body)) + parser.send(h11.EndOfMessage()))
                    if parser.our_state is h11.MUST_CLOSE:
                        return
                    parser.start_next_cycle()
                elif isinstance(event_, h11.ConnectionClosed) or event_ is h11.PAUSED:
                    return
        except h11.RemoteProtocolError as exc:
            # a body cut off by the router (it refused the request mid-way) is incomplete, not garbled
            kind = "incomplete" if str(exc).startswith("peer closed connection") else "error"
            self._record(kind=kind, error=str(exc), target=current["target"] if current else None)
            if current is not None:
                with self.lock:
                    self.busy -= 1
        except OSError:
            if current is not None:
                self._record(kind="incomplete", target=current["target"])
                with self.lock:
                    self.busy -= 1
        finally:
            conn.close()

    def since(self, index: int) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.records[index:])

    def count(self) -> int:
        with self.lock:
            return len(self.records)

    def close(self) -> None:
        self.closing = True
        self.sock.close()


# --------------------------------------------------------------------------- the router's view (llhttp)


class _LlhttpView:
    """What the router's parser makes of the client's bytes: the complete messages, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.url = b""
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.messages.append({"target": self.url, "body": self.body})
        self.url, self.body = b"", b""


def llhttp_messages(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """(complete messages, whether parsing stopped on an error) for ``raw`` fed in one piece."""
    view = _LlhttpView()
    parser = httptools.HttpRequestParser(view)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        return view.messages, False
    except httptools.HttpParserError:
        return view.messages, True
    return view.messages, False


def origin_form(target: bytes) -> bytes:
    if target[:1] == b"/" or target == b"*":
        return target
    parsed = httptools.parse_url(target)
    path = parsed.path or b"/"
    return path + (b"?" + parsed.query if parsed.query else b"")


# --------------------------------------------------------------------------- generated requests


SMUGGLED = b"GET /s/@@ HTTP/1.1\r\nHost: x\r\n\r\n"  # @@: the example's number, filled in by the test
TE_VALUES = [b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"\tchunked", b"xchunked", b"chunked, identity",
             b"identity, chunked", b"identity", b"gzip, chunked", b"chunked,", b",chunked", b"chunked\x0b", b"chu nked",
             b"\"chunked\""]
CL_ODD = [b"+5", b"-1", b" 5", b"5 ", b"5,5", b"0x5", b"05", b"99999999999999999999999", b"5\x00", b"", b"5 5"]
NAMES = [b"Content-Length", b"Transfer-Encoding", b"Connection", b"Host", b"X-Forwarded-For", b"Expect", b"Upgrade",
         b"Keep-Alive", b"TE", b"Trailer", b"X-Custom"]


def chunked(body: bytes, ext: bytes, size_style: int) -> bytes:
    if not body:
        return b"0" + ext + b"\r\n\r\n"
    size = b"%x" % len(body)
    if size_style == 1:
        size = b"000" + size
    elif size_style == 2:
        size = size.upper()
    return size + ext + b"\r\n" + body + b"\r\n0\r\n\r\n"


@st.composite
def requests(draw: Any) -> tuple[str, bytes]:
    family = draw(st.sampled_from(["plain", "cl", "te", "cl_te", "te_te", "connection", "obs_fold", "line_endings",
                                   "cl_odd", "cl_dup", "chunk_ext", "absolute", "junk_headers", "expect"]))
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]))
    target = b"/f/@@"
    body = draw(st.one_of(st.just(SMUGGLED), st.binary(max_size=64), st.just(b"")))
    headers: list[bytes] = [b"Host: fuzz.test"]
    tail = b""
    eol = b"\r\n"
    if family == "plain":
        body = b""
    elif family == "cl":
        delta = draw(st.sampled_from([0, 0, 0, -1, 1, len(SMUGGLED)]))
        headers.append(b"Content-Length: %d" % max(0, len(body) + delta))
    elif family == "te":
        headers.append(b"Transfer-Encoding: " + draw(st.sampled_from(TE_VALUES)))
        body = chunked(body, b"", draw(st.integers(0, 2)))
    elif family == "cl_te":
        cl = b"Content-Length: %d" % draw(st.sampled_from([0, 4, len(body)]))
        te = b"Transfer-Encoding: " + draw(st.sampled_from(TE_VALUES[:8]))
        headers += [cl, te] if draw(st.booleans()) else [te, cl]
        body = chunked(body, b"", 0) if draw(st.booleans()) else body
    elif family == "te_te":
        headers += [b"Transfer-Encoding: " + draw(st.sampled_from(TE_VALUES)),
                    b"Transfer-Encoding: " + draw(st.sampled_from(TE_VALUES))]
        body = chunked(body, b"", 0)
    elif family == "connection":
        named = draw(st.lists(st.sampled_from(NAMES + [b"close", b"keep-alive", b"upgrade"]), min_size=1, max_size=3))
        headers.append(b"Connection: " + b", ".join(named))
        if draw(st.booleans()):
            headers.append(b"Transfer-Encoding: chunked")
            body = chunked(body, b"", 0)
        else:
            headers.append(b"Content-Length: %d" % len(body))
    elif family == "obs_fold":
        where = draw(st.sampled_from([b"X-A: a", b"Transfer-Encoding:", b"Content-Length:"]))
        fold = draw(st.sampled_from([b"\r\n chunked", b"\r\n\t5", b"\r\n b"]))
        headers.append(where + fold)
        if draw(st.booleans()):
            headers.append(b"Content-Length: %d" % len(body))
    elif family == "line_endings":
        eol = draw(st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r"]))
        headers.append(b"Content-Length: %d" % len(body))
    elif family == "cl_odd":
        headers.append(b"Content-Length: " + draw(st.sampled_from(CL_ODD)))
    elif family == "cl_dup":
        first, second = len(body), draw(st.sampled_from([len(body), 0, len(body) + 1]))
        headers += [b"Content-Length: %d" % first, b"Content-Length: %d" % second]
    elif family == "chunk_ext":
        ext = draw(st.sampled_from([b";a=b", b";a=\"x;y\"", b";", b"; a", b";a=\"\r\n\"", b";" + b"e" * 200, b"\x00"]))
        headers.append(b"Transfer-Encoding: chunked")
        body = chunked(body, ext, draw(st.integers(0, 2)))
        if draw(st.booleans()):
            body = body[:-2] + b"X-Trailer: t\r\n\r\n"
    elif family == "absolute":
        target = draw(st.sampled_from([b"http://fuzz.test/f/@@?q=1", b"http://other/f/@@", b"/f/@@?x=%2F"]))
        headers.append(b"Content-Length: %d" % len(body))
    elif family == "junk_headers":
        name = draw(st.binary(min_size=1, max_size=8))
        value = draw(st.binary(max_size=16))
        headers += [name + b": " + value, b"Content-Length: %d" % len(body)]
    elif family == "expect":
        headers += [b"Expect: 100-continue", b"Content-Length: %d" % len(body)]
    if draw(st.booleans()):
        tail = SMUGGLED  # bytes after the request: a pipelined request, or a smuggled one
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    raw = method + b" " + target + b" " + version + eol + eol.join(headers) + eol + eol + body + tail
    return family, raw


# --------------------------------------------------------------------------- the test


def exchange(address: tuple[str, int], raw: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused before we finished sending
        return read_to_close(sock)


@pytest.fixture(scope="module")
def fuzz_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordingBackend, RouterProcess]]:
    backend = RecordingBackend()
    table = make_table([deployment("dep", [("rev-fuzz", 10000, backend.address)])])
    state_dir: Path = tmp_path_factory.mktemp("fuzz-router")
    try:
        with RouterProcess.start(state_dir, table, "--body-timeout", "2", "--header-timeout", "2") as router:
            yield backend, router
    finally:
        backend.close()


def test_router_framing_matches_an_independent_parser(fuzz_setup: tuple[RecordingBackend, RouterProcess]) -> None:
    backend, router = fuzz_setup
    host, port = router.listen.rsplit(":", 1)
    address = (host, int(port))
    seen: Counter[str] = Counter()
    numbers = iter(range(10**9))

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests())
    def check(generated: tuple[str, bytes]) -> None:
        family, raw = generated
        number = b"%d" % next(numbers)
        raw = raw.replace(b"@@", number)  # every target of this example names it, so records are its own
        answer = exchange(address, raw)
        wait_for(lambda: backend.busy == 0, 10, "the revision to finish with what it was sent")
        ours = (b"/" + number, b"/" + number + b"?")
        received = [r for r in backend.since(0) if r.get("target") is None
                    or r["target"].endswith(ours[0]) or ours[1] in r["target"]]
        expected, parse_error = llhttp_messages(raw)
        errors = [r for r in received if r["kind"] == "error"]
        assert not errors, f"the revision could not parse what the router forwarded: {errors}\n{raw!r}"
        complete = [r for r in received if r["kind"] == "complete"]
        for record in complete:
            assert record["leftover"] == b"", f"bytes after a forwarded request (smuggling): {record}\n{raw!r}"
        assert len(complete) <= len(expected), f"more requests reached the revision than the router parsed\n" \
                                               f"{complete}\n{expected}\n{raw!r}"
        for record, message in zip(complete, expected):
            assert record["target"] == origin_form(message["target"]), (record, message, raw)
            assert record["body"] == message["body"], (record, message, raw)
        forwarded = answer.count(b"X-Fuzz-Backend: 1")
        assert forwarded == len(complete) or not answer, (answer[:300], complete, raw)
        outcome = "forwarded" if complete else "refused"
        seen[outcome] += 1
        seen[f"{family}:{outcome}"] += 1
        event(f"{family}: {outcome}{' (llhttp error)' if parse_error else ''}")

    check()
    everything = backend.since(0)
    assert [r for r in everything if r["kind"] == "error"] == []
    assert [r for r in everything if r["kind"] == "complete" and r["leftover"]] == []
    print("\nfuzz outcomes:", dict(sorted(seen.items())))
    assert seen["forwarded"] > 0 and seen["refused"] > 0, seen  # the generator reaches both sides
