"""Discovery of installed plugins: entry points read from distribution metadata, never imported.

Apart from the registry so that what needs only names (``--help`` listing plugin commands,
shell completion of plugin names, store selection) does not import pluggy, packaging or the
plugin contract. Cached on disk, keyed on the state of ``sys.path`` (each entry and its mtime),
in a cache directory outside ``sys.path`` (writing inside it would change the key it depends on).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, NamedTuple

GROUP = "greentic.deployers"
CACHE_ENV = "GREENTIC_CACHE_DIR"
CACHE_FORMAT = 2  # 2: the key is the list of sys.path entries and mtimes, not their digest
_PLAIN_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,100}", re.ASCII)


class EntryPointInfo(NamedTuple):
    """One discovered entry point (metadata only, nothing imported). A NamedTuple: listing
    names (``--help``, completion) imports no attrs."""

    name: str
    value: str
    distribution: str
    version: str


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "greentic"


def sys_path_fingerprint(paths: Iterable[str]) -> list:
    """A key that changes when anything is installed or removed on ``sys.path``: every entry
    with its mtime, kept as it is (JSON) and compared exactly, so no hash function (``hashlib``
    costs ~3 ms to import) and no collision can hide a change."""
    key: list = [CACHE_FORMAT, GROUP, sys.version]
    for entry in paths:
        try:
            mtime = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = -1
        key.append([entry, mtime])
    return key


def _cache_name(group: str) -> str:
    if _PLAIN_GROUP.fullmatch(group):
        return f"entry-points-{group}.json"
    import hashlib  # an unusual group name: a file name of its digest

    return f"entry-points-{hashlib.sha256(group.encode()).hexdigest()[:12]}.json"


def scan_entry_points(group: str = GROUP, paths: list[str] | None = None) -> list[EntryPointInfo]:
    """Read every distribution's entry points of ``group`` (first distribution of a name wins)."""
    found: list[EntryPointInfo] = []
    seen: set[str] = set()
    from importlib import metadata  # only on a cache miss: it costs ~15 ms to import

    for dist in metadata.distributions(path=paths if paths is not None else sys.path):
        try:
            dist_name = dist.metadata["Name"] or "unknown"
        except Exception:
            continue
        key = dist_name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            eps = dist.entry_points
        except Exception:
            continue
        for ep in eps:
            if ep.group == group:
                found.append(EntryPointInfo(ep.name, ep.value, dist_name, dist.version or "?"))
    return found


def discover(group: str = GROUP, *, use_cache: bool = True, cache_dir: Path | None = None) -> list[EntryPointInfo]:
    """Entry points of ``group``, from the on-disk cache when ``sys.path`` has not changed."""
    if not use_cache:
        return scan_entry_points(group)
    key = sys_path_fingerprint(sys.path)
    cache_file = (cache_dir or default_cache_dir()) / _cache_name(group)
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return [EntryPointInfo(**item) for item in cached["entry_points"]]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    found = scan_entry_points(group)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "entry_points": [e._asdict() for e in found]}))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs a rescan next time
    return found
