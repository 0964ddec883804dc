"""Progress reporting: a bar on a terminal, plain lines in a log, tiles counted one by one."""

from __future__ import annotations

import io

import torch
from tqdm import tqdm

import dfpir
from dfpir.inference.tiling import restore_image
from dfpir.progress import LogLines, TileProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_and_a_terminal_a_bar():
    log = io.StringIO()
    bar = progress(5, "restoring", "image", every=0, file=log)  # every=0: a line at every update
    assert isinstance(bar, LogLines)
    for _ in range(5):
        bar.update(1)
    bar.close()  # the last line already says 5/5: no repeat
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split(",")[0] for line in lines] == [f"restoring: {n}/5 images" for n in (1, 2, 3, 4, 5)]
    assert isinstance(progress(5, "restoring", "image", file=Terminal()), tqdm)


def test_short_work_without_summary_prints_nothing():
    log = io.StringIO()
    with progress(3, "restoring", "image", file=log, summary=False) as bar:  # the default 30 s between lines
        bar.update(3)
    assert log.getvalue() == ""
    with progress(3, "restoring", "image", file=log) as bar:
        bar.update(3)
        assert log.getvalue() == ""  # not 30 s yet
    assert log.getvalue().startswith("restoring: 3/3 images, 0 s")  # the closing line, once
    bar.close()
    assert log.getvalue().count("\n") == 1


def test_tiles_of_one_image_are_counted():
    torch.manual_seed(0)
    model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
    image, prompt = torch.rand(1, 3, 24, 24), model.embed_prompts("rain")
    log = io.StringIO()
    with TileProgress("photo.png", every=0, file=log) as tiles:
        _, plan = restore_image(model, image, prompt, tile=16, progress=tiles)
    lines = log.getvalue().splitlines()
    assert plan.count > 1 and [line.split(",")[0] for line in lines] == [f"photo.png: {n}/{plan.count} tiles" for n in range(1, plan.count + 1)]
    with TileProgress("whole.png", every=0, file=log) as tiles:
        restore_image(model, image, prompt, tile=0, progress=tiles)  # one pass, no tiles: nothing shown
    assert "whole.png" not in log.getvalue()
