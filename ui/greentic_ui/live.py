"""Live updates: poll the store cheaply, push Server-Sent Events to the open pages.

One task per server polls, every :data:`POLL_SECONDS`, the fingerprint of each environment an
open page watches (the file store: ``stat`` of ``environment.json``, the audit log and the
rollout states, nothing decoded; other stores: generation and audit length through the
contract) and the list of environments. A change made by anyone (the CLI, the agent, another
dashboard user) reaches the pages as an event within one poll plus the time to send it. The
provider's observation (serving, restarts, enforced weights) is polled less often
(:data:`OBSERVE_SECONDS`), only for environments someone watches.

Events (``data`` is JSON):

* ``change``: ``{"env": ID or null, "what": "store" | "observe" | "list", "at": epoch seconds}``
* ``progress``: ``{"action_id", "message", "state": "running" | "done" | "error", "at"}``
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .backend import Backend

POLL_SECONDS = 0.2
OBSERVE_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0


class Subscriber:
    def __init__(self, env: str | None) -> None:
        self.env = env  # None: every environment (the environments page)
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=256)

    def wants(self, env: str | None) -> bool:
        return self.env is None or env is None or env == self.env

    def put(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((kind, data))
        except asyncio.QueueFull:  # a stalled page: it reloads on its next event anyway
            pass


class Live:
    def __init__(self, backend: Backend, executor: Executor) -> None:
        self.backend = backend
        self.executor = executor
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._prints: dict[str, Any] = {}
        self._observed: dict[str, str] = {}
        self._observed_at: dict[str, float] = {}
        self._envs: list[str] | None = None
        self.polls = 0
        self.poll_seconds = 0.0  # time spent in the last poll (the benchmark reads it)

    # ----------------------------------------------------------------- subscribers

    def subscribe(self, env: str | None) -> Subscriber:
        sub = Subscriber(env)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def publish(self, kind: str, data: dict[str, Any], env: str | None = None) -> None:
        data = {**data, "at": time.time()}
        for sub in list(self.subscribers):
            if sub.wants(env):
                sub.put(kind, data)

    def publisher(self, loop: asyncio.AbstractEventLoop, action_id: str | None) -> Callable[[str], None]:
        """A progress callback for a worker thread: each message becomes a ``progress`` event."""
        def progress(message: str) -> None:
            if action_id:
                loop.call_soon_threadsafe(self.publish, "progress",
                                          {"action_id": action_id, "message": message, "state": "running"})
        return progress

    # ----------------------------------------------------------------- polling

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _watched(self) -> tuple[bool, set[str]]:
        everything = any(sub.env is None for sub in self.subscribers)
        return everything, {sub.env for sub in self.subscribers if sub.env is not None}

    def _poll(self, everything: bool, envs: set[str], observe: set[str]) -> list[tuple[str | None, str]]:
        """(blocking) what changed since the last poll: [(env or None, what)]."""
        started = time.perf_counter()
        changes: list[tuple[str | None, str]] = []
        if everything:
            listed = self.backend.store().list()
            if self._envs is not None and listed != self._envs:
                changes.append((None, "list"))
            self._envs = listed
            envs = envs | set(listed)
        for env_id in sorted(envs):
            try:
                stamp = self.backend.fingerprint(env_id)
            except Exception as exc:  # an unreadable environment is a state too
                stamp = ("error", str(exc))
            if env_id in self._prints and self._prints[env_id] != stamp:
                changes.append((env_id, "store"))
                self.backend.forget_observation(env_id)  # a changed split: observe again
            self._prints[env_id] = stamp
        now = time.monotonic()
        for env_id in sorted(observe):
            if now - self._observed_at.get(env_id, 0.0) < OBSERVE_SECONDS:
                continue
            self._observed_at[env_id] = now
            try:
                seen = self.backend.observation_fingerprint(env_id)
            except Exception as exc:
                seen = str(exc)
            if env_id in self._observed and self._observed[env_id] != seen:
                changes.append((env_id, "observe"))
            self._observed[env_id] = seen
        self.poll_seconds = time.perf_counter() - started
        self.polls += 1
        return changes

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                everything, envs = self._watched()
                if everything or envs:
                    observe = set(envs) if envs else set()
                    changes = await loop.run_in_executor(self.executor, self._poll, everything, envs, observe)
                    for env_id, what in changes:
                        self.publish("change", {"env": env_id, "what": what}, env=env_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep polling: a store hiccup must not end live updates
                pass
            await asyncio.sleep(POLL_SECONDS)


def sse_frame(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
