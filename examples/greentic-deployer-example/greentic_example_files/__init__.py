"""greentic-deployer-example: a minimal third-party deployer plugin (the "files" deployer)."""

__version__ = "1.0.0"
