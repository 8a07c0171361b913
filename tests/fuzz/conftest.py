"""Hypothesis profiles: `ci` (the default, in `make test`: few examples, derandomized so a run is repeatable on a
loaded machine) and `fuzz` (`make fuzz`: many examples, random). SEAWALL_HYPOTHESIS_PROFILE picks one."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=int(os.environ.get("SEAWALL_FUZZ_EXAMPLES", "3000")), **_COMMON)
settings.load_profile(os.environ.get("SEAWALL_HYPOTHESIS_PROFILE", "ci"))
