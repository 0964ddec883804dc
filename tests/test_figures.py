"""The site's figures (``docs/figures/``): drawn by ``docs/figures/make_figures.py`` from the code
and from numbers that the repository's commands wrote, and committed exactly as the script draws them."""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import matplotlib
import matplotlib.pyplot as plt
import pytest

from dfpir.model.config import get_config

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """``docs/figures/make_figures.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drawn(script: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every figure, drawn afresh into a temporary folder."""
    return script.make_figures(tmp_path_factory.mktemp("figures"))


def _drawn_with(svg: Path) -> str:
    """The matplotlib version recorded in an SVG's metadata."""
    match = re.search(r"Matplotlib v([\w.+-]+),", svg.read_text(encoding="utf-8"))
    return match.group(1) if match else "unknown"


def test_the_committed_figures_are_what_the_script_draws(drawn: list[Path]) -> None:
    for fresh in drawn:
        committed = FIGURES / fresh.name
        assert committed.is_file(), f"docs/figures/{fresh.name} is not committed: run python docs/figures/make_figures.py"
        if _drawn_with(committed) == matplotlib.__version__:
            assert fresh.read_bytes() == committed.read_bytes(), (
                f"docs/figures/{fresh.name} is not what the script draws now (the model, the data or the script "
                "changed): run python docs/figures/make_figures.py and commit the result")
        else:  # another matplotlib writes other bytes; the drawing must still be the same size
            a, b = ET.parse(fresh).getroot(), ET.parse(committed).getroot()
            assert (a.get("width"), a.get("height")) == (b.get("width"), b.get("height")), fresh.name


def test_every_figure_is_shown_on_a_page_and_every_shown_figure_is_drawn(drawn: list[Path]) -> None:
    pages = {p: p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}
    shown = {m for text in pages.values() for m in re.findall(r"figures/([\w-]+\.svg)", text)}
    assert shown == {p.name for p in drawn}


def test_the_architecture_figures_read_their_numbers_from_the_config(script: ModuleType) -> None:
    def texts(fig) -> str:
        words = " | ".join(t.get_text() for t in fig.axes[0].texts)
        plt.close(fig)
        return words

    paper = texts(script.architecture.network_figure(get_config("paper")))
    tiny = texts(script.architecture.network_figure(get_config("tiny")))
    assert "384 ch, 8 heads, H/8 x W/8" in paper and "Latent L4: 8 blocks" in paper
    assert "128 ch, 8 heads, H/8 x W/8" in tiny and "Latent L4: 1 block" in tiny
    # the top-k mask keeps int(c * 9 / 10) of c = 48 channels per head; a ratio of 0.5 keeps 24
    assert "keeps its k = 43 largest of c = 48" in texts(script.architecture.dgpb_figure(get_config("paper")))
    assert "keeps its k = 24 largest of c = 48" in texts(script.architecture.dgpb_figure(get_config("paper", keep_ratio=0.5)))


def _table_before(page: str, marker: str) -> list[dict[str, str]]:
    """The last Markdown table above ``marker`` on ``page``, as one dict per row."""
    lines = page[: page.index(marker)].rstrip().splitlines()
    rows = []
    for line in reversed(lines):
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _, *body = rows[::-1]
    return [dict(zip(header, row)) for row in body]


def test_the_demo_plot_shows_the_numbers_of_the_table_above_it(script: ModuleType) -> None:
    # the plot is drawn from data/demo.json; the page's table must come from the same run
    record = script.results_plots.read(FIGURES / "data" / "demo.json")
    table = _table_before((DOCS / "results.md").read_text(encoding="utf-8"), "figures/demo_psnr.svg")
    assert [row["degradation"] for row in table] == list(record["results"])
    for row in table:
        r = record["results"][row["degradation"]]
        assert (row["input PSNR"], row["restored"]) == (f"{r['input_psnr']:.2f}", f"{r['psnr']:.2f}"), (
            f"{row['degradation']}: docs/results.md and docs/figures/data/demo.json disagree; rerun "
            "python docs/figures/make_figures.py --measure after a new demo run")
