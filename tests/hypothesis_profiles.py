"""Hypothesis profiles, chosen by the environment variable ``HYPOTHESIS_PROFILE`` (default ``ci``).

* ``ci``: derandomised (the same examples on every run), no example database, no deadline, few
  examples: the whole reference suite fits the CI budget on 2 cores.
* ``dev``: random examples, the local database (so failures replay), a moderate number.
* ``nightly``: many examples, for a scheduled job.

Reproduce a failure with the same profile: under ``ci`` the examples are fixed, so rerunning
the failing test id replays it; every failure message also prints the drawn configuration.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

settings.register_profile("ci", derandomize=True, database=None, max_examples=12, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=60, print_blob=True, **_COMMON)
settings.register_profile("nightly", max_examples=1000, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
