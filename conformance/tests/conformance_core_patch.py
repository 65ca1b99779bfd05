"""Switch one of greentic-core's contract guards off, to prove the suite notices.

Loaded into the suite's pytest process with ``-p conformance_core_patch`` (this directory on
``PYTHONPATH``); ``GREENTIC_CONFORMANCE_CORE_PATCH`` names the guard:

* ``unknown-revision-rejected``: ``require_revision`` accepts every revision id;
* ``invalid-split-rejected``: ``require_valid_split`` only checks that a split exists;
* ``missing-split-rejected``: ``require_valid_split`` only checks sums when a split exists;
* ``hostile-routes-rejected``: the shared route rules accept everything (a plugin without its
  own ``greentic_validate_routes`` then accepts hostile routes).

BoundDeployer looks these functions up in :mod:`greentic_core.contract` at call time, so
replacing the module attributes is enough.
"""

from __future__ import annotations

import os

from greentic_core import SplitNotFound, contract

_original_valid_split = contract.require_valid_split
PATCH = os.environ.get("GREENTIC_CONFORMANCE_CORE_PATCH", "")


def _accept_any_revision(env, revision_id):
    return None


def _only_existence(env, deployment_id):
    if env.split_for(deployment_id) is None:
        raise SplitNotFound(env.environment_id, deployment_id)


def _only_sums(env, deployment_id):
    if env.split_for(deployment_id) is not None:
        _original_valid_split(env, deployment_id)


if PATCH == "unknown-revision-rejected":
    contract.require_revision = _accept_any_revision
elif PATCH == "invalid-split-rejected":
    contract.require_valid_split = _only_existence
elif PATCH == "missing-split-rejected":
    contract.require_valid_split = _only_sums
elif PATCH == "hostile-routes-rejected":
    contract.route_problems = lambda hosts, path_prefixes: []
elif PATCH:
    raise RuntimeError(f"unknown GREENTIC_CONFORMANCE_CORE_PATCH {PATCH!r}")
