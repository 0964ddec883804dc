"""Every tutorial in notebooks/ runs top to bottom (its last cells assert what it taught).

The jupytext percent ``.py`` files are the source of truth: each is converted to a notebook in a
temporary folder and executed there with nbclient (so no cell can rely on files from the
repository checkout), with a time limit. ``python tests/test_notebooks.py NAME`` runs one and
prints its wall time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))
TIME_LIMIT_S = 240  # the bound per notebook on 2 cores; each is designed for well under 90 s


def execute(path: Path, workdir: Path, timeout: int = TIME_LIMIT_S) -> float:
    """Convert ``path`` with jupytext and execute it in ``workdir``; returns the wall time in s."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    if elapsed > timeout:
        raise AssertionError(f"{path.name} took {elapsed:.0f} s (limit {timeout} s)")
    return elapsed


def test_there_are_four_tutorials():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path):
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:") and "# %% [markdown]" in text  # a jupytext percent file
    assert "assert " in text.rsplit("# %%", 1)[-1]  # it ends by checking what it taught
    execute(path, tmp_path)


if __name__ == "__main__":
    import tempfile

    for name in sys.argv[1:] or [p.stem for p in NOTEBOOKS]:
        (path,) = [p for p in NOTEBOOKS if p.stem.startswith(name)]
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{path.name}: {execute(path, Path(tmp)):.1f} s", flush=True)
