"""Where environments live: the store contract, its backends and how one is chosen.

:mod:`.contract` declares and documents what every backend provides (read it to write one);
:mod:`.leased` is the transaction protocol shared by backends whose lease lives in the store
itself (PostgreSQL, S3); :mod:`.file` is the default backend; :mod:`.select` opens the store a
URL names (entry-point group ``greentic.stores``). Import from here, not from the submodules.

Names resolve on first access (PEP 562, as in ``greentic_core``): listing the store plugins
or opening a PostgreSQL or S3 store does not import the file backend and its codec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contract import (
        DEFAULT_LOCK_TIMEOUT,
        DEFAULT_LOCK_TTL,
        InvalidEnvironment,
        LeaseInfo,
        LeaseLost,
        LockTimeout,
        PartialSave,
        SaveConflict,
        SchemaOutdated,
        Snapshot,
        StoreBackend,
        StoreOptions,
        Transaction,
    )
    from .file import (
        AUDIT_FILE,
        DEFAULT_MAX_BACKUPS,
        ENVIRONMENT_FILE,
        RUNTIME_CONFIG_FILE,
        FileStore,
        Store,
        StoreEnvIdMismatch,
        StoreWriteError,
        UnsafeEnvDir,
        atomic_write,
        default_root,
        environments_root,
        remove_stale_temp_files,
    )
    from .select import STORE_ENV, STORE_GROUP, open_store, redact_url

#: each public name and the submodule that defines it
_WHERE = {
    "AUDIT_FILE": "file",
    "DEFAULT_LOCK_TIMEOUT": "contract",
    "DEFAULT_LOCK_TTL": "contract",
    "DEFAULT_MAX_BACKUPS": "file",
    "ENVIRONMENT_FILE": "file",
    "FileStore": "file",
    "InvalidEnvironment": "contract",
    "LeaseInfo": "contract",
    "LeaseLost": "contract",
    "LockTimeout": "contract",
    "PartialSave": "contract",
    "RUNTIME_CONFIG_FILE": "file",
    "STORE_ENV": "select",
    "STORE_GROUP": "select",
    "SaveConflict": "contract",
    "SchemaOutdated": "contract",
    "Snapshot": "contract",
    "Store": "file",
    "StoreBackend": "contract",
    "StoreEnvIdMismatch": "file",
    "StoreOptions": "contract",
    "StoreWriteError": "file",
    "Transaction": "contract",
    "UnsafeEnvDir": "file",
    "atomic_write": "file",
    "default_root": "file",
    "environments_root": "file",
    "open_store": "select",
    "redact_url": "select",
    "remove_stale_temp_files": "file",
}
_SUBMODULES = frozenset({"contract", "file", "leased", "select"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "AUDIT_FILE",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_LOCK_TTL",
    "DEFAULT_MAX_BACKUPS",
    "ENVIRONMENT_FILE",
    "RUNTIME_CONFIG_FILE",
    "STORE_ENV",
    "STORE_GROUP",
    "FileStore",
    "InvalidEnvironment",
    "LeaseInfo",
    "LeaseLost",
    "LockTimeout",
    "PartialSave",
    "SaveConflict",
    "SchemaOutdated",
    "Snapshot",
    "Store",
    "StoreBackend",
    "StoreEnvIdMismatch",
    "StoreOptions",
    "StoreWriteError",
    "Transaction",
    "UnsafeEnvDir",
    "atomic_write",
    "default_root",
    "environments_root",
    "open_store",
    "redact_url",
    "remove_stale_temp_files",
]
