"""The pluggy markers of the ``greentic`` project.

Plugin authors decorate their hook functions with :data:`hookimpl`; the core declares the
contract in :mod:`greentic_core.hookspecs` with :data:`hookspec`.
"""

import pluggy

PROJECT_NAME = "greentic"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
