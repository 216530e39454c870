"""Hypothesis profiles for the fuzz tests (tests/fuzz).

``ci`` (the default): a bounded number of examples per property, derandomized (a failure in
CI reproduces on every run and every machine), no per-example deadline (two shared cores
make timings noisy; bounds on work are asserted by the properties themselves).
``dev``: ten times the examples, random seeds, for a longer local hunt::

    HYPOTHESIS_PROFILE=dev ./dev test tests/fuzz -q
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=2000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
