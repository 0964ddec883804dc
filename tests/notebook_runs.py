"""The tutorials, executed at most once per test session.

``tests/test_notebooks.py`` checks that each notebook runs; the site build in ``tests/test_docs.py``
needs each one's executed copy (``build/notebooks/NAME.ipynb``, written by ``docs/hooks.py``) to
show its outputs. Both ask the session fixture ``notebook_runs`` (``tests/conftest.py``), an
instance of :class:`NotebookRuns`, so that a full run of the suite executes each notebook once,
whichever test asks first.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_hooks() -> ModuleType:
    """``docs/hooks.py`` as a module (``docs/`` is not a package), where the notebook logic lives."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


@dataclass
class Run:
    """One execution of a notebook: its wall time, or the error that stopped it."""

    seconds: float | None = None
    error: Exception | None = None


class NotebookRuns:
    """Executes each tutorial at most once, each in its own empty folder under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.hooks = load_hooks()
        self.workdir = workdir
        self.runs: dict[str, Run] = {}

    def run(self, path: Path) -> Run:
        """Execute ``path`` unless it ran already in this session; a success leaves its executed copy."""
        if path.name not in self.runs:
            folder = self.workdir / path.stem
            folder.mkdir()
            try:
                self.runs[path.name] = Run(seconds=self.hooks.execute_notebook(path, folder))
            except Exception as exc:  # kept for the notebook's own test to raise; the site shows no outputs
                self.runs[path.name] = Run(error=exc)
        return self.runs[path.name]

    def refresh(self, path: Path) -> None:
        """Make sure ``path`` has an executed copy of its current text, executing it only if it has none."""
        if path.name not in self.runs and self.hooks.executed_copy(path) is None:
            self.run(path)
