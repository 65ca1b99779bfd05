"""greentic-conformance: the contract checks every Greentic deployer plugin must pass.

A pytest plugin (entry point ``pytest11``), inert unless ``--deployer NAME`` is given::

    pytest --deployer greentic.deployer.local-process --pyargs greentic_conformance.suite
    greentic-deployer conformance greentic.deployer.local-process

The check ids, titles and rules are in :mod:`greentic_conformance.checks`.
"""

__version__ = "0.1.0"
