"""The demo behind `make demo`: files written, table complete, clear error without weights."""

from __future__ import annotations

import json

import imageio.v3 as iio
import torch

import dfpir
from dfpir import demo


def test_demo_writes_gallery_page_and_table(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    dfpir.save(dfpir.DFPIR(dfpir.get_config("tiny")), weights)
    results = demo.run_demo(weights, tmp_path / "out", photos=1)
    assert list(results) == dfpir.DFPIR(dfpir.get_config("tiny")).prompts.names
    sheet = iio.imread(tmp_path / "out" / "gallery.png")
    assert sheet.shape[0] > 7 * 64 and sheet.ndim == 3
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("<tr>") == 1 + 7
    assert json.loads((tmp_path / "out" / "results.json").read_text()).keys() == results.keys()
    table = demo.format_results(results)
    assert all(name in table for name in results)


def test_demo_without_weights_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import dfpir.inference.runner as runner

    monkeypatch.setattr(runner, "DEMO_WEIGHTS", tmp_path / "missing.safetensors")
    assert demo.main(["-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "python -m dfpir.train" in err and len(err.strip().splitlines()) == 1


def test_a_failing_demo_leaves_no_output_behind(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    dfpir.save(dfpir.DFPIR(dfpir.get_config("tiny")), weights)
    calls = []

    def failing_contact_sheet(rows):  # the last step: every image file has been written by then
        calls.append(len(rows))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo, "contact_sheet", failing_contact_sheet)
    assert demo.main(["--weights", str(weights), "-o", str(tmp_path / "out"), "--photos", "1"]) == 2
    assert calls and "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no out/, no staging folder


def test_bad_demo_arguments_are_one_line_errors(tmp_path, capsys):
    assert demo.main(["--photos", "0", "-o", str(tmp_path / "o")]) == 2
    assert "--photos must be >= 1" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert demo.main(["-o", str(tmp_path / "afile"), "--photos", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
