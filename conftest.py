"""Settings shared by every test directory of the repository (pytest loads this first).

Property tests are derandomized by default, so the suite draws the same examples on every run
and a CI run can never fail by the luck of a seed. ``HYPOTHESIS_PROFILE=random`` draws fresh
examples (a failure prints the reproducing example and a ``@reproduce_failure`` blob).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
