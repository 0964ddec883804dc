"""Placeholder: re-exports while the package is split."""

from .loop import main
