"""Who may use the dashboard: the start-up token, the session cookie, CSRF, headers.

* A random token is printed at start (as Jupyter does); ``--token`` sets one. A request
  carries it once (``?token=...`` in the printed URL, or ``Authorization: Bearer ...`` for
  scripts); the browser then gets a session in an ``HttpOnly; SameSite=Strict`` cookie and is
  redirected to the same URL without the token.
* Actions (``POST``) with the cookie need the session's CSRF token in ``X-CSRF-Token`` (the
  pages carry it in a ``<meta>``) and, when the browser sends one, a same-origin ``Origin``.
* Bound to a loopback address, only ``Host`` headers naming a loopback address are served
  (a DNS-rebinding page cannot reach the dashboard through a name of its own).
* Every response carries a strict Content-Security-Policy: scripts and styles only from the
  dashboard's own ``/static/`` files (no inline script, no inline style), no frames, no
  plugins, forms and connections only to itself.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any

COOKIE = "greentic_ui_session"
CSRF_HEADER = "X-CSRF-Token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8765`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Sessions:
    """Sessions of this server run (they end when it stops); each has its own CSRF token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._csrf: dict[str, str] = {}

    def check_token(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def open(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._csrf[sid] = secrets.token_urlsafe(32)
        return sid

    def csrf(self, sid: str | None) -> str | None:
        return self._csrf.get(sid) if sid else None

    def valid(self, sid: str | None) -> bool:
        return bool(sid) and sid in self._csrf

    def check_csrf(self, sid: str | None, given: str | None) -> bool:
        expected = self.csrf(sid)
        return bool(expected and given) and hmac.compare_digest(expected.encode(), str(given).encode())


def cookie_options(secure: bool) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "path": "/", "secure": secure}
