"""Placeholder: re-exports while the package is split."""

from .datasets import main
