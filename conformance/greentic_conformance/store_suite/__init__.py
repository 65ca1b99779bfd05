"""The store contract suite, for any store backend: ``greentic-deployer conformance --store URL``.

Runs the rules of :mod:`greentic_core.store.contract` against the store a URL names (ours or a
third party's, e.g. an etcd or GCS store published in ``greentic.stores``): create and load,
documents byte for byte, the audit gap-free, backups bounded, compare-and-swap refusing a stale
writer, leases across processes, a killed holder's lease taken only after its TTL, unlock,
``store migrate`` to and from a file store, the whole CLI, and the URL's password in no output.
Every test works in environments of its own (``c<random>``), so the store need not be empty;
it must be initialised (``store init``).
"""
