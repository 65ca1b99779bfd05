"""The local-process answers: schema (checked by the core before any hook runs) and parsed form."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import attrs

ANSWERS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "warm_timeout_seconds": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 60,
            "description": "How long warm waits for the health path to answer 2xx.",
        },
        "stop_grace_seconds": {
            "type": "number", "minimum": 0, "maximum": 600, "default": 10,
            "description": "After SIGTERM, how long to wait before SIGKILL.",
        },
        "keep_logs": {
            "type": "boolean", "default": True,
            "description": "Keep a revision's stdout/stderr logs when it is archived.",
        },
        "log_max_bytes": {
            "type": "integer", "minimum": 1024, "default": 5 * 1024 * 1024,
            "description": "A log larger than this is rotated (one old copy kept) when the revision starts.",
        },
        "listen_addr": {
            "type": "string", "pattern": "^[^\\s]+:[0-9]{1,5}$",
            "description": "Router address; overrides the environment's host_config.listen_addr.",
        },
        "state_dir": {
            "type": "string", "minLength": 1, "format": "path",
            "description": "Directory for process and router files (default: the environment directory). "
                           "Made absolute when `env init` records it; created 0700.",
        },
        "pass_env": {
            "type": "array", "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*\\*?$"},
            "default": ["PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME"],
            "description": "Variables of the caller's environment a revision process gets (names, or "
                           "PREFIX* patterns); recorded when the revision is staged. workload.env is laid over them.",
        },
        "router_admin_port": {
            "type": "integer", "minimum": 0, "maximum": 65535, "default": 0,
            "description": "The router's admin port on 127.0.0.1 (status, reload, /metrics); 0: a free port at each "
                           "start. Fix it to scrape /metrics from a static Prometheus config.",
        },
        "router_max_body_bytes": {
            "type": "integer", "minimum": 0, "default": 64 * 1024 * 1024,
            "description": "Largest request body the router accepts (413 above).",
        },
    },
}


@attrs.frozen(kw_only=True)
class Answers:
    warm_timeout_seconds: float = 60.0
    stop_grace_seconds: float = 10.0
    keep_logs: bool = True
    log_max_bytes: int = 5 * 1024 * 1024
    listen_addr: str | None = None
    state_dir: Path | None = None
    router_max_body_bytes: int = 64 * 1024 * 1024
    router_admin_port: int = 0
    pass_env: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER", "LOGNAME")

    @classmethod
    def parse(cls, answers: Mapping[str, Any] | None) -> "Answers":
        data = dict(answers or {})
        if "state_dir" in data:
            data["state_dir"] = Path(data["state_dir"])
        if "pass_env" in data:
            data["pass_env"] = tuple(data["pass_env"])
        return cls(**data)

    def root(self, state_dir: Path | None) -> Path:
        """Where this provider keeps its files for the environment."""
        root = self.state_dir or state_dir
        if root is None:
            raise ValueError("local-process needs a state directory (run it through greentic-deployer)")
        if not Path(root).is_absolute():
            # a relative path would mean another directory from every working directory
            from greentic_core import ProviderError

            raise ProviderError(f"the state_dir answer {str(root)!r} is relative",
                                hint="record an absolute path (`env init` makes it absolute for you)")
        return Path(root)
