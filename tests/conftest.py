"""Shared pytest configuration. Each block below belongs to one part of the suite."""

# --- reference suite (issue 3): Hypothesis profiles and the no-JIT subset marker -------------
from tests import hypothesis_profiles  # noqa: F401,E402 - registers and loads the profile


def pytest_configure(config):  # noqa: D103 - pytest hook
    config.addinivalue_line(
        "markers",
        "reference_subset: reference tests cheap enough to run with NUMBA_DISABLE_JIT=1 (make test-nojit)",
    )
# --- end of reference suite block ----------------------------------------------------------------
