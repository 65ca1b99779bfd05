"""Where environments live: the store contract, its backends and how one is chosen.

:mod:`.contract` declares and documents what every backend provides (read it to write one);
:mod:`.leased` is the transaction protocol shared by backends whose lease lives in the store
itself (PostgreSQL, S3); :mod:`.file` is the default backend; :mod:`.select` opens the store a
URL names (entry-point group ``greentic.stores``). Import from here, not from the submodules.
"""

from __future__ import annotations

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
