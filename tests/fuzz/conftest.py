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

# One runtime per backend for a module (tests/fuzz/test_schema.py), as in tests/web.
from tests.web.conftest import shared_http, shared_rt  # noqa: F401

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=2000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """How many requests the schema-driven fuzz sent (tests/fuzz/test_schema.py)."""
    from tests.fuzz.test_schema import REQUESTS

    if REQUESTS:
        total = sum(REQUESTS.values())
        ops = len({key.rsplit(" ", 2)[0] for key in REQUESTS})
        terminalreporter.write_line(
            f"schema fuzz: {total} generated requests over {ops} operations "
            f"({len(REQUESTS)} operation/mode/way combinations)"
        )
