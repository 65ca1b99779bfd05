"""The ``greentic.stores`` entry point: small, so listing store plugins costs nothing.

``greentic-deployer plugins list`` imports every store plugin's entry-point module to show
whether it loads. This one imports neither boto3 nor :mod:`.store` (with the core's store
package, ``email.utils`` and ``hashlib``: about 10 ms); both are imported when an ``s3://``
store is opened. A missing boto3 still shows here, as the import error it would be (``plugins
list`` lists the plugin as broken with that reason), as in ``greentic_store_postgres.entry``.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from greentic_core.store import StoreOptions

    from .store import S3Store

if importlib.util.find_spec("boto3") is None:
    raise ModuleNotFoundError("No module named 'boto3'", name="boto3")


def open_store(url: str, options: StoreOptions) -> S3Store:
    """The factory for ``s3://`` URLs (see :mod:`.store`)."""
    from .store import S3Store

    return S3Store(url, options)
