"""greentic-deployer-local-process: revisions as local processes behind a weighted router."""

__version__ = "0.1.0"
