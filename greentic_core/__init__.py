"""greentic-core: the public API for users and plugin authors.

Everything a deployer plugin needs is importable from here; nothing else is public.
"""

__version__ = "0.1.0"
