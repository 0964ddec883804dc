"""Every tutorial in notebooks/ runs top to bottom (its last cells assert what it taught).

The jupytext percent ``.py`` files are the source of truth: each is converted to a notebook and
executed with nbclient in an empty temporary folder (so no cell can rely on files from the
repository checkout), by ``docs/hooks.py``'s ``execute_notebook``. A successful run also leaves the
executed notebook in ``build/notebooks/NAME.ipynb``, which the site renders with its outputs; the
session fixture ``notebook_runs`` shares that one execution with the site build in
``test_docs.py``. ``python -m tests.test_notebooks [NAME ...]`` runs some (default: all), prints
their wall times and refreshes their executed copies.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from tests.notebook_runs import NotebookRuns

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))
TIME_LIMIT_S = 240  # the bound per notebook on 2 cores (on 2 busy cores each took between 11 and 130 s)


def test_there_are_four_tutorials():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, notebook_runs):
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:") and "# %% [markdown]" in text  # a jupytext percent file
    assert "assert " in text.rsplit("# %%", 1)[-1]  # it ends by checking what it taught
    run = notebook_runs.run(path)
    if run.error is not None:
        raise run.error
    assert run.seconds <= TIME_LIMIT_S, f"{path.name} took {run.seconds:.0f} s (limit {TIME_LIMIT_S} s)"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        runs = NotebookRuns(Path(tmp))
        for name in sys.argv[1:] or [p.stem for p in NOTEBOOKS]:
            (path,) = [p for p in NOTEBOOKS if p.stem.startswith(name)]
            run = runs.run(path)
            if run.error is not None:
                raise run.error
            print(f"{path.name}: {run.seconds:.1f} s", flush=True)
