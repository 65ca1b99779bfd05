"""greentic-deployer-ui: the web dashboard (``greentic-deployer ui``)."""

__version__ = "0.1.0"
