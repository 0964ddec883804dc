"""Placeholder: re-exports while the package is split."""

from .suites import main
