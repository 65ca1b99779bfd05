"""Choosing the store: ``--store URL``, else ``$GREENTIC_STORE``, else ``file://`` at the home.

Backends are found in the entry-point group ``greentic.stores`` (one entry per URL scheme, its
value a factory ``(url, options) -> StoreBackend``); ``file`` is built in. A store plugin is
imported only when its scheme is used, so a broken one never breaks a command that does not
use it. URLs are shown only through :func:`redact_url`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import GreenticError, StoreError

if TYPE_CHECKING:
    from .contract import StoreBackend, StoreOptions

STORE_GROUP = "greentic.stores"
STORE_ENV = "GREENTIC_STORE"
_SECRET_PARAM = re.compile(r"pass|secret|key|token|credential|signature|auth", re.IGNORECASE)
_PLUGIN_HINTS = {"postgresql": "greentic-store-postgres", "postgres": "greentic-store-postgres",
                 "s3": "greentic-store-s3"}


class StorePluginError(GreenticError):
    """The store a URL names cannot be used: unknown scheme, plugin missing or broken."""

    kind = "plugin"
    exit_code = 7


class InvalidStoreUrl(StoreError):
    kind = "usage"
    exit_code = 2


def unit_environment(home: str | None, store_url: str | None) -> list[str]:
    """The ``Environment=`` lines of a systemd unit that runs greentic for ``home`` / ``store_url``:
    the store URL with its password replaced by ``***`` (and a comment saying where it goes)."""
    lines = []
    if home:
        lines.append(f"Environment=GREENTIC_HOME={home}")
    if store_url:
        shown = redact_url(store_url)
        if shown != store_url:
            lines.append("# the store's password is not printed: give it in an EnvironmentFile= (0600)")
        lines.append(f"Environment=GREENTIC_STORE={shown}")
    return lines


def redact_url(url: str) -> str:
    """``url`` with its password and any secret-looking query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:***@{hostport}" if sep else f"{user}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="/:*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}://***" if scheme.isalnum() else "***"


def file_home(url: str) -> Path:
    """The greentic home a ``file://`` URL names (environments under ``<home>/environments``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidStoreUrl(f"store URL {redact_url(url)} names a remote host; a file store is local",
                              hint="use file:///absolute/path (three slashes)")
    path = unquote(parts.path)
    if not path:
        raise InvalidStoreUrl("store URL file:// has no path", hint="use file:///absolute/path, e.g. file:///srv/greentic")
    return Path(path).expanduser()


def open_store(url: str | None = None, *, home: Path | None = None, options: StoreOptions | None = None) -> StoreBackend:
    """The store ``url`` names (else ``$GREENTIC_STORE``, else the file store at ``home``)."""
    from .contract import StoreBackend, StoreOptions  # here: listing store plugins needs neither
    from .file import FileStore, environments_root

    options = options if options is not None else StoreOptions()
    url = url or os.environ.get(STORE_ENV) or None
    if url is None:
        return FileStore(environments_root(home) if home else None, max_backups=options.max_backups, options=options)
    url = url.strip()
    if options.home is None:
        options.home = home
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if not scheme or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) or "://" not in url:
        raise InvalidStoreUrl(f"store URL {redact_url(url)!r} has no scheme",
                              hint="e.g. file:///srv/greentic, postgresql://user@host/db, s3://bucket/prefix")
    if scheme == "file":
        return FileStore(environments_root(file_home(url)), max_backups=options.max_backups, options=options)
    factory = _factory(scheme, url)
    try:
        store = factory(url, options)
    except GreenticError:
        raise
    except Exception as exc:  # a plugin's own bug or a driver error: one line, no secret
        raise StorePluginError(f"store {redact_url(url)} cannot be opened: {_scrub(str(exc), url)}",
                               hint="run `greentic-deployer store doctor` for details") from None
    if not isinstance(store, StoreBackend):
        raise StorePluginError(f"the {scheme} store plugin returned {type(store).__name__}, not a StoreBackend")
    return store


def _factory(scheme: str, url: str) -> Any:
    from ..registry import discover, load_object

    try:
        entry_points = discover(STORE_GROUP)
    except Exception:
        entry_points = []
    found = [ep for ep in entry_points if ep.name == scheme]
    if not found:
        known = sorted({"file", *(ep.name for ep in entry_points)})
        dist = _PLUGIN_HINTS.get(scheme)
        hint = (f"install it: `pip install {dist}`" if dist else "install a store plugin for it") + \
            f" (installed schemes: {', '.join(known)})"
        raise StorePluginError(f"no store plugin for {scheme}:// URLs", hint=hint, scheme=scheme)
    ep = found[0]
    try:
        return load_object(ep.value)
    except Exception as exc:
        raise StorePluginError(
            f"store plugin {ep.distribution} {ep.version} ({scheme}://) cannot be loaded: "
            f"{type(exc).__name__}: {_scrub(str(exc), url)}".splitlines()[0],
            hint=f"reinstall it: pip install --force-reinstall {ep.distribution}", scheme=scheme) from None


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's password (a driver may quote the URL or its password)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = text.replace(url, redact_url(url))
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def store_plugins() -> list[dict[str, Any]]:
    """Each installed store plugin: scheme, distribution, version, status and reason (imported
    here, so ``plugins list`` shows a broken one without breaking anything else)."""
    from ..registry import discover, load_object

    rows: list[dict[str, Any]] = [{"scheme": "file", "distribution": "greentic-core", "status": "ok", "reason": None}]
    try:
        entry_points = discover(STORE_GROUP)
    except Exception:
        entry_points = []
    for ep in entry_points:
        if ep.name == "file":
            continue
        row = {"scheme": ep.name, "distribution": ep.distribution, "version": ep.version, "status": "ok", "reason": None}
        try:
            load_object(ep.value)
        except Exception as exc:
            row["status"], row["reason"] = "broken", f"{type(exc).__name__}: {exc}".splitlines()[0]
        rows.append(row)
    return rows
