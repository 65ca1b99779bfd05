"""Webhook notifications of rollout and agent events (``notify:`` in the desired-state file).

A rollout or the agent calls :meth:`Notifier.emit` when something happens; a background thread
POSTs the event as JSON (``greentic.notify-event.v1``, :class:`NotifyEvent`) to each configured
webhook, in the order the events were emitted, once each. Delivery never delays or fails the
caller: ``emit`` only queues, errors are swallowed, retries happen in the background, and a
delivery that finally fails is reported through the ``audit`` callback (:func:`store_audit`
appends it to the environment's audit log) with the secret left out.

Event types (:class:`EventType`) and what their ``data`` carries:

==================== ==============================================================================
``rollout.started``  a canary rollout began (baseline and target splits, steps)
``rollout.step``     a step's weights were set (step number, weights by revision)
``rollout.paused``   a rollout is held: ``rollout pause`` or an inconclusive analysis (reason)
``rollout.aborted``  traffic went back to the stable revisions (reason, the failed ``analysis``)
``rollout.promoted`` ``rollout promote`` jumped to the target
``rollout.completed`` every step passed; the target split is set
``agent.repair``     the agent repaired drift (what it found, what it did)
``agent.failure``    the agent could not bring something back (error, attempts)
==================== ==============================================================================

Each POST carries ``Content-Type: application/json``, ``X-Greentic-Event: <type>``,
``X-Greentic-Delivery: <event id>`` and, when a secret is configured,
``X-Greentic-Signature-256: sha256=<hex HMAC-SHA256 of the exact body>`` (GitHub's webhook
convention). Connection errors, timeouts, 5xx and 429 are retried with exponential backoff
(:class:`Retry`: bounded attempts and bounded total time); other answers are final.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NewType
from urllib.parse import urlsplit

import attrs

from .errors import SpecError, bounded
from .ids import BundleId, DeploymentId, EnvId, mint_ulid

if TYPE_CHECKING:
    from .store.contract import StoreBackend

__all__ = [
    "EVENT_TYPES",
    "NOTIFY_EVENT_V1",
    "EventDeployment",
    "EventType",
    "Notifier",
    "NotifyConfig",
    "NotifyConfigError",
    "NotifyEvent",
    "Retry",
    "parse",
    "parse_many",
    "redact_url",
    "sign",
    "store_audit",
]

NOTIFY_EVENT_V1 = "greentic.notify-event.v1"
REDACTED = "***"
SIGNATURE_HEADER = "X-Greentic-Signature-256"
#: Events a webhook's queue holds before new ones are dropped (and the drop audited).
QUEUE_SIZE = 1000
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 300.0

log = logging.getLogger(__name__)

EventId = NewType("EventId", str)  # a ULID


class EventType(str, enum.Enum):
    """What happened (the ``type`` of an event and its ``X-Greentic-Event`` header)."""

    ROLLOUT_STARTED = "rollout.started"
    ROLLOUT_STEP = "rollout.step"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_ABORTED = "rollout.aborted"
    ROLLOUT_PROMOTED = "rollout.promoted"
    ROLLOUT_COMPLETED = "rollout.completed"
    AGENT_REPAIR = "agent.repair"
    AGENT_FAILURE = "agent.failure"


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)


class NotifyConfigError(SpecError):
    """A ``notify`` entry is malformed (the message names the key path)."""

    rule = "Notify"


# --------------------------------------------------------------------------- the payload


@attrs.frozen(kw_only=True)
class EventDeployment:
    """The deployment an event is about."""

    id: DeploymentId
    bundle: BundleId


@attrs.frozen(kw_only=True)
class NotifyEvent:
    """A notification of a rollout or agent event, POSTed as JSON to a webhook.

    ``id`` is unique per event (a ULID; also the ``X-Greentic-Delivery`` header, so a receiver
    can drop a duplicate), ``time`` when it happened (RFC 3339, UTC), ``environment`` and
    ``deployment`` (absent for an event about the whole environment) where, ``actor`` who
    (``user@host`` or ``agent@host``), ``data`` the details, which depend on ``type``.
    Receivers should ignore keys they do not know: keys may be added within v1.
    """

    schema: str = NOTIFY_EVENT_V1
    id: EventId
    type: EventType
    time: datetime
    environment: EnvId
    deployment: EventDeployment | None = None
    actor: str
    data: dict[str, Any]


def _new_id() -> str:
    return mint_ulid()


def _now() -> str:
    now = datetime.now(timezone.utc)
    micro = now.microsecond - now.microsecond % 1000  # milliseconds, as the audit log writes them
    return now.strftime("%Y-%m-%dT%H:%M:%S") + (f".{micro // 1000:03d}Z" if micro else "Z")


def make_event(event_type: str, *, env_id: str, actor: str, deployment: Mapping[str, Any] | None = None,
               data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The payload of one event (``greentic.notify-event.v1``) as a JSON-able dict."""
    event: dict[str, Any] = {"schema": NOTIFY_EVENT_V1, "id": _new_id(), "type": str(EventType(event_type).value),
                             "time": _now(), "environment": env_id}
    if deployment is not None:
        event["deployment"] = dict(deployment)
    event["actor"] = actor
    event["data"] = dict(data or {})
    return event


def sign(secret: str, body: bytes) -> str:
    """The ``X-Greentic-Signature-256`` header value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- the configuration


def _secret_repr(value: str | None) -> str:
    return "None" if value is None else repr(REDACTED)


def _url_repr(value: str) -> str:
    return repr(redact_url(value))


@attrs.frozen(kw_only=True)
class NotifyConfig:
    """A webhook that receives rollout and agent events.

    ``url``: where events are POSTed (http or https; a ``user:password@`` in it is sent as
    HTTP basic authentication). ``secret`` or, better, ``secret_env`` (the name of an
    environment variable read when an event is delivered): signs each body with HMAC-SHA256.
    ``events``: the event types to send (left out: all of them). ``timeout_seconds``: per
    attempt.
    """

    url: str = attrs.field(repr=_url_repr)
    secret: str | None = attrs.field(default=None, repr=_secret_repr)
    secret_env: str | None = None
    events: tuple[EventType, ...] | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    def wants(self, event_type: str) -> bool:
        return self.events is None or event_type in self.events

    def to_record(self) -> dict[str, Any]:
        """Everything needed to deliver later, JSON-able (an inline secret included: keep the
        record private). :meth:`from_record` reads it back."""
        record: dict[str, Any] = {"url": self.url}
        if self.secret is not None:
            record["secret"] = self.secret
        if self.secret_env is not None:
            record["secret_env"] = self.secret_env
        if self.events is not None:
            record["events"] = [e.value for e in self.events]
        if self.timeout_seconds != DEFAULT_TIMEOUT_SECONDS:
            record["timeout_seconds"] = self.timeout_seconds
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NotifyConfig:
        """A record of :meth:`to_record`. Keys and event types a later version added are
        ignored (a newer record still delivers what this version knows); a bad url is an error."""
        if not isinstance(record, Mapping):
            raise NotifyConfigError(f"notify record must be a mapping, got {type(record).__name__}")
        known = {k: v for k, v in record.items() if k in _KEYS}
        if isinstance(known.get("events"), list):
            known["events"] = [e for e in known["events"] if e in EVENT_TYPES]
        return parse(known, "notify record")

    def redacted(self) -> dict[str, Any]:
        """The configuration safe to print: secret as ``***``, url without credentials or query."""
        record = self.to_record()
        record["url"] = redact_url(self.url)
        if self.secret is not None:
            record["secret"] = REDACTED
        return record


_KEYS = frozenset(f.name for f in attrs.fields(NotifyConfig))
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str):
        raise NotifyConfigError(f"{where}.url: expected a string, got {type(url).__name__}")
    shown = repr(redact_url(url)[:100])
    if not url:
        raise NotifyConfigError(f"{where}.url is empty", hint="e.g. https://hooks.example.com/greentic")
    if len(url) > 2048 or _UNSAFE.search(url):
        raise NotifyConfigError(f"{where}.url: {shown} has spaces or control characters, or is over 2048 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise NotifyConfigError(f"{where}.url: {shown} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise NotifyConfigError(f"{where}.url: {shown} must be an http:// or https:// URL")
    if not parts.hostname:
        raise NotifyConfigError(f"{where}.url: {shown} has no host")
    if parts.fragment:
        raise NotifyConfigError(f"{where}.url: {shown} has a #fragment, which is never sent")
    return url


def parse(raw: Any, where: str = "notify") -> NotifyConfig:
    """One webhook as written (a mapping) -> :class:`NotifyConfig`.

    Strict: unknown keys, wrong types and unknown event types are :class:`NotifyConfigError`,
    one line naming the key path (``notify[1].events[0]: ...``). The secret is never quoted.
    """
    if not isinstance(raw, Mapping):
        raise NotifyConfigError(f"{where}: expected a mapping with a url, got {type(raw).__name__}",
                                hint="notify: {url: https://hooks.example.com/greentic, secret_env: HOOK_SECRET}")
    unknown = [k for k in raw if k not in _KEYS]
    if unknown:
        raise NotifyConfigError(f"{where}: unknown key {str(unknown[0])[:60]!r} (known: {', '.join(sorted(_KEYS))})")
    if "url" not in raw:
        raise NotifyConfigError(f"{where} is missing required key 'url'")
    url = _check_url(raw["url"], where)

    secret = raw.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise NotifyConfigError(f"{where}.secret: expected a non-empty string",
                                hint="or give secret_env: the name of an environment variable holding it")
    secret_env = raw.get("secret_env")
    if secret_env is not None:
        if not isinstance(secret_env, str) or not _ENV_NAME.fullmatch(secret_env):
            shown = repr(secret_env[:60]) if isinstance(secret_env, str) else type(secret_env).__name__
            raise NotifyConfigError(f"{where}.secret_env: {shown} is not an environment variable name",
                                    hint="letters, digits and '_', not starting with a digit (e.g. HOOK_SECRET)")
    if secret is not None and secret_env is not None:
        raise NotifyConfigError(f"{where}: give secret or secret_env, not both")

    events = raw.get("events")
    if events is not None:
        if isinstance(events, str) or not isinstance(events, Sequence):
            raise NotifyConfigError(f"{where}.events: expected a list of event types, got {type(events).__name__}",
                                    hint=f"event types: {', '.join(EVENT_TYPES)}")
        if not events:
            raise NotifyConfigError(f"{where}.events is empty", hint="leave events out to send every event type")
        chosen: list[EventType] = []
        for index, name in enumerate(events):
            if not isinstance(name, str) or name not in EVENT_TYPES:
                shown = repr(name[:60]) if isinstance(name, str) else type(name).__name__
                raise NotifyConfigError(f"{where}.events[{index}]: unknown event type {shown}",
                                        hint=f"event types: {', '.join(EVENT_TYPES)}")
            if EventType(name) not in chosen:
                chosen.append(EventType(name))
        events = tuple(chosen)

    timeout = raw.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise NotifyConfigError(f"{where}.timeout_seconds: expected a number of seconds above 0 and at most "
                                f"{MAX_TIMEOUT_SECONDS:g}, got {timeout!r}"[:200])
    return NotifyConfig(url=url, secret=secret, secret_env=secret_env, events=events, timeout_seconds=float(timeout))


def parse_many(raw: Any, where: str = "notify") -> tuple[NotifyConfig, ...]:
    """``notify:`` as written: one webhook (a mapping) or a list of them."""
    if isinstance(raw, Mapping):
        return (parse(raw, where),)
    if isinstance(raw, (list, tuple)):
        configs = tuple(parse(item, f"{where}[{index}]") for index, item in enumerate(raw))
        for index, config in enumerate(configs):
            if any(other.url == config.url for other in configs[:index]):
                raise NotifyConfigError(f"{where}[{index}].url: {redact_url(config.url)!r} is listed twice",
                                        hint="list each webhook once (events: chooses what it receives)")
        return configs
    raise NotifyConfigError(f"{where}: expected a webhook (a mapping with a url) or a list of them, "
                            f"got {type(raw).__name__}",
                            hint="notify: {url: https://hooks.example.com/greentic, secret_env: HOOK_SECRET}")


def redact_url(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to print and audit."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    host = parts.netloc.rpartition("@")[2]
    if not parts.scheme or not host:
        return REDACTED
    return f"{parts.scheme}://{host}{parts.path}"


# --------------------------------------------------------------------------- delivery


@attrs.frozen(kw_only=True)
class Retry:
    """How a delivery is retried: at most ``attempts`` tries, waiting ``first_delay`` seconds
    after the first failure and ``factor`` times longer after each next one (at most
    ``max_delay``, or a ``Retry-After`` the receiver sent, within ``max_delay``), and giving up
    when ``max_total`` seconds have passed since the first try."""

    attempts: int = 5
    first_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0
    max_total: float = 60.0


@attrs.frozen
class _Outcome:
    ok: bool
    retryable: bool = False
    error: str = ""
    retry_after: float | None = None


@attrs.frozen
class _Delivery:
    ok: bool
    attempts: int
    error: str = ""


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return " ".join(text.split())


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: not worth parsing, the backoff applies
    return seconds if seconds >= 0 else None


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> _Outcome:
    """One POST. No redirects (a 3xx is a final failure), proxies as the environment says."""
    import http.client
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return _Outcome(ok=True)
    except urllib.error.HTTPError as exc:
        try:
            said = exc.read(300).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - the body is only decoration
            said = ""
        finally:
            exc.close()
        error = f"HTTP {exc.code} {exc.reason}" + (f": {said[:200]}" if said else "")
        retryable = exc.code == 429 or exc.code >= 500
        return _Outcome(ok=False, retryable=retryable, error=error,
                        retry_after=_retry_after(exc.headers.get("Retry-After")) if retryable else None)
    except urllib.error.URLError as exc:
        return _Outcome(ok=False, retryable=True, error=f"cannot connect: {exc.reason}")
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        return _Outcome(ok=False, retryable=True, error=f"{kind}: {exc}" if str(exc) else kind)


def _deliver(config: NotifyConfig, event: dict[str, Any], body: bytes, retry: Retry,
             stop: threading.Event) -> _Delivery:
    """POST one event with retries; never raises."""
    secret = config.secret
    if config.secret_env is not None:
        secret = os.environ.get(config.secret_env) or None
        if secret is None:
            return _Delivery(ok=False, attempts=0,
                             error=f"environment variable {config.secret_env} (secret_env) is not set: "
                                   "not sent unsigned")
    parts = urlsplit(config.url)
    userinfo, _, host = parts.netloc.rpartition("@")
    url = parts._replace(netloc=host).geturl()
    headers = {"Content-Type": "application/json", "User-Agent": _user_agent(),
               "X-Greentic-Event": event["type"], "X-Greentic-Delivery": event["id"]}
    secrets = [s for s in (secret, config.url, parts.query, parts.password) if s]
    if userinfo:
        import base64
        from urllib.parse import unquote

        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
        secrets.append(token)
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body)

    start = time.monotonic()
    delay = retry.first_delay
    attempts = 0
    error = ""
    while True:
        attempts += 1
        remaining = retry.max_total - (time.monotonic() - start)
        try:
            outcome = _post(url, body, headers, max(0.05, min(config.timeout_seconds, remaining)))
        except Exception as exc:  # noqa: BLE001 - a notification never raises into anyone
            outcome = _Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        if outcome.ok:
            return _Delivery(ok=True, attempts=attempts)
        error = bounded(_scrub(outcome.error, secrets))
        if not outcome.retryable or attempts >= retry.attempts:
            break
        wait = min(retry.max_delay, delay if outcome.retry_after is None else max(delay, outcome.retry_after))
        wait *= random.uniform(0.8, 1.0)  # spread the retries of many senders
        if time.monotonic() - start + wait >= retry.max_total:
            error += f" (gave up after {time.monotonic() - start:.1f} s)"
            break
        if stop.wait(wait):
            error += " (the notifier was closed before a retry)"
            break
        delay *= retry.factor
    return _Delivery(ok=False, attempts=attempts, error=error)


def _user_agent() -> str:
    from . import __version__

    return f"greentic-deployer/{__version__}"


class _Channel:
    """One webhook's queue and the daemon thread that delivers it, in order."""

    def __init__(self, config: NotifyConfig, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier
        self.queue: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue(maxsize=notifier.queue_size)
        self.pending = 0
        self.dropped = 0
        self.stop = threading.Event()
        self.lock = threading.Condition()
        self.thread: threading.Thread | None = None

    def put(self, event: dict[str, Any], body: bytes) -> None:
        with self.lock:
            if self.stop.is_set():
                return
            try:
                self.queue.put_nowait((event, body))
            except queue.Full:
                self.dropped += 1
                return
            self.pending += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="greentic-notify", daemon=True)
                self.thread.start()

    def close(self) -> None:
        """No more events; the thread ends once what is queued is delivered or given up."""
        with self.lock:
            self.stop.set()
        try:
            self.queue.put_nowait(None)  # wakes an idle thread (a full queue has a busy one)
        except queue.Full:
            pass

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            event, body = item
            try:
                if self.stop.is_set():
                    result = _Delivery(ok=False, attempts=0, error="not sent: the notifier was closed first")
                else:
                    result = _deliver(self.config, event, body, self.notifier.retry, self.stop)
                if not result.ok:
                    self._failed(event, result)
                with self.lock:
                    dropped, self.dropped = self.dropped, 0
                if dropped:
                    self.notifier._report({"verb": "notify.dropped", "outcome": "error",
                                           "url": redact_url(self.config.url), "dropped": dropped,
                                           "error": f"{dropped} event(s) dropped: more than {self.notifier.queue_size} "
                                                    "waiting for delivery"})
            except BaseException:  # noqa: BLE001 - the worker must outlive anything
                log.exception("notification worker error")
            finally:
                with self.lock:
                    self.pending -= 1
                    self.lock.notify_all()
            if self.stop.is_set() and self.queue.empty():
                return

    def _failed(self, event: dict[str, Any], result: _Delivery) -> None:
        url = redact_url(self.config.url)
        log.warning("notification %s (%s) to %s failed after %d attempt(s): %s",
                    event["type"], event["id"], url, result.attempts, result.error)
        record: dict[str, Any] = {"verb": "notify.failed", "outcome": "error", "event_type": event["type"],
                                  "event_id": event["id"], "url": url, "attempts": result.attempts,
                                  "error": result.error}
        deployment = event.get("deployment") or {}
        if isinstance(deployment, Mapping) and deployment.get("id"):
            record["deployment_id"] = deployment["id"]
        self.notifier._report(record)

    def wait(self, deadline: float) -> bool:
        with self.lock:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
            return True


class Notifier:
    """Sends events to the webhooks of ``config`` (one :class:`NotifyConfig`, several, or
    None: then every call does nothing).

    :meth:`emit` never blocks and never raises; each webhook has its own daemon thread that
    delivers its events once each, in order, retrying per ``retry``. A delivery that finally
    fails calls ``audit`` with a ``notify.failed`` event (see :func:`store_audit`). Call
    :meth:`close` before the process ends (or use the notifier as a context manager).
    """

    def __init__(self, config: NotifyConfig | Sequence[NotifyConfig] | None, *, env_id: str, actor: str,
                 audit: Callable[[dict[str, Any]], None] | None = None, retry: Retry | None = None,
                 queue_size: int = QUEUE_SIZE) -> None:
        configs = () if config is None else (config,) if isinstance(config, NotifyConfig) else tuple(config)
        self.env_id = env_id
        self.actor = actor
        self.audit = audit
        self.retry = retry or Retry()
        self.queue_size = queue_size
        self.closed = False
        self._channels = [_Channel(c, self) for c in configs]
        if self._channels:
            _new_id()  # import the ULID library now, not in the first emit

    @property
    def enabled(self) -> bool:
        return bool(self._channels)

    def emit(self, event_type: str, *, deployment: Mapping[str, Any] | None = None,
             data: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Queue an event for every webhook that wants it; return its payload (None when no
        webhook wants it). Returns at once; never raises."""
        try:
            if event_type not in EVENT_TYPES:
                log.warning("unknown notification type %r: not sent", event_type)
                return None
            wanted = [c for c in self._channels if c.config.wants(event_type)]
            if not wanted or self.closed:
                return None
            event = make_event(event_type, env_id=self.env_id, actor=self.actor, deployment=deployment, data=data)
            body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
            for channel in wanted:
                channel.put(event, body)
            return event
        except Exception:  # noqa: BLE001 - a notification must never fail a rollout
            log.warning("notification %s not sent", event_type, exc_info=True)
            return None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait at most ``timeout`` seconds for every queued event to be delivered (or to fail
        for good); True when nothing is pending."""
        deadline = time.monotonic() + timeout
        return all([c.wait(deadline) for c in self._channels])

    def close(self, timeout: float = 5.0) -> bool:
        """Stop taking events and return within ``timeout`` seconds: wait for the pending
        deliveries for most of it, then give up (no more retries) and leave the last fifth (at
        most 1 s) to the threads to audit what was not delivered. True when every event was
        delivered or had failed for good before giving up."""
        self.closed = True
        grace = min(1.0, max(timeout, 0.0) / 5)
        done = self.flush(max(timeout, 0.0) - grace)
        for channel in self._channels:
            channel.close()
        if not done:
            self.flush(grace)
            left = sum(c.pending for c in self._channels)
            if left:
                log.warning("%d notification(s) neither delivered nor audited after %.1f s: giving up",
                            left, timeout)
        return done

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _report(self, event: dict[str, Any]) -> None:
        if self.audit is None:
            return
        try:
            self.audit(event)
        except Exception:  # noqa: BLE001
            log.warning("could not audit %s", event.get("verb"), exc_info=True)


def store_audit(store: StoreBackend, env_id: str, actor: str, command: str, *,
                timeout: float = 30.0) -> Callable[[dict[str, Any]], None]:
    """An ``audit`` callback for :class:`Notifier` that appends each event to the
    environment's audit log (``actor`` and ``command`` added, as the operator does), waiting
    at most ``timeout`` seconds for the environment's lease. It never raises: a failure is
    logged."""

    def audit(event: dict[str, Any]) -> None:
        record = {"actor": actor, "command": command}
        record.update({k: v for k, v in event.items() if v is not None})
        try:
            with store.transaction(env_id, timeout=timeout) as tx:
                tx.audit(record)
        except Exception as exc:  # noqa: BLE001 - a notifier never raises
            log.warning("could not write %s to the audit log of %s: %s", record.get("verb"), env_id, exc)

    return audit
