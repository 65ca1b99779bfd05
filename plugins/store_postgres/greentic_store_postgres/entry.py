"""The ``greentic.stores`` entry point: small, so listing store plugins costs nothing.

``greentic-deployer plugins list`` imports every store plugin's entry-point module to show
whether it loads. This one imports no driver: psycopg (about 70 ms to import) is imported by
:mod:`.store` when a ``postgresql://`` store is opened. A missing psycopg still shows here, as
the import error it would be (``plugins list`` lists the plugin as broken with that reason).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from greentic_core.store import StoreOptions

    from .store import PostgresStore

if importlib.util.find_spec("psycopg") is None:
    raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")


def open_store(url: str, options: StoreOptions) -> PostgresStore:
    """The factory for ``postgresql://`` and ``postgres://`` URLs (see :mod:`.store`)."""
    from .store import PostgresStore

    return PostgresStore(url, options)
