"""The conformance suite: run with ``pytest --deployer NAME --pyargs greentic_conformance.suite``."""
