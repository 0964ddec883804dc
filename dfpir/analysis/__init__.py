"""Placeholder: re-exports while the package is split."""

from .core import main
