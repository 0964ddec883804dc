"""``python -m dfpir.export``: the fold into one convolution, the ONNX files against PyTorch, the command.

The network is traced once for the whole module (the trace takes tens of seconds; every
degradation shares it): the ``exported`` fixture runs the command on the tiny preset for two
degradations, and the other tests read what it wrote.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dfpir
from dfpir import export
from dfpir.model.dgpb import DGPB
from dfpir.model.perturbation import ChannelPerturbation

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "export.md"
SKIP_REASON = "the ONNX export is optional (pip install 'dfpir[export]'); make test installs it"
NAMES = ["rain", "haze"]
SIZES = ["37x53", "2x16x24", "8x8"]  # as the command is given them
# onnxruntime against model.restore on shapes the command did not verify: odd, a batch of 2, the smallest
CHECKED = [(1, 3, 29, 43), (2, 3, 24, 40), (1, 3, 8, 8), (1, 3, 64, 48)]


def need_onnx() -> None:
    for name in export.PACKAGES:
        pytest.importorskip(name, reason=SKIP_REASON)


def tiny(guidance: str = "faithful") -> dfpir.DFPIR:
    torch.manual_seed(0)
    return dfpir.DFPIR(dfpir.get_config("tiny", guidance=guidance)).eval()


def run(argv: list[str]) -> tuple[int, str, str]:
    """``python -m dfpir.export argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = export.main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The command run on a saved tiny model for rain and haze: its outputs, and the traced program."""
    need_onnx()
    root = tmp_path_factory.mktemp("export")
    dfpir.save(tiny(), root / "tiny.safetensors")
    programs = []

    def recording(model, optimize=True):
        programs.append(original(model, optimize))
        return programs[-1]

    original = export.onnx_program
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "onnx_program", recording)
        result = run(["--weights", str(root / "tiny.safetensors"), "--degradations", *NAMES,
                      "-o", str(root / "onnx"), "--sizes", *SIZES])
    return {"root": root, "model": dfpir.load(root / "tiny.safetensors"), "result": result, "program": programs[0],
            "traced": len(programs)}


# --------------------------------------------------------------------------- the fold, in PyTorch


@pytest.mark.parametrize("guidance", ["faithful", "learnable"])
def test_the_folded_convolution_is_the_channel_perturbation(guidance):
    torch.manual_seed(0)
    perturb = ChannelPerturbation(12, 32, guidance)
    prompt, x = torch.randn(1, 32), torch.randn(2, 12, 5, 7)
    folded = export.FoldedPerturbation(perturb, prompt)
    with torch.no_grad():
        expected = perturb(x, prompt.expand(2, -1))
        torch.testing.assert_close(folded(x), expected, rtol=0, atol=1e-5)
        # the order matters: another prompt's fold gives another result
        assert (export.FoldedPerturbation(perturb, torch.randn(1, 32))(x) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("guidance", ["faithful", "learnable"])
def test_the_specialised_model_restores_as_the_model_and_leaves_it_untouched(guidance):
    model = tiny(guidance)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    specialised = export.specialise(model, "rain")
    assert sum(isinstance(m, export.FoldedPerturbation) for m in specialised.modules()) == 4
    for shape in [(1, 3, 37, 53), (2, 3, 16, 24), (1, 3, 8, 8)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(specialised(x), model.restore(x, "rain"), rtol=0, atol=1e-5)
    assert all(isinstance(m.perturb, ChannelPerturbation) for m in model.modules() if isinstance(m, DGPB))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_specialise_refuses_a_degradation_the_model_has_no_prompt_for():
    with pytest.raises(dfpir.errors.UserError, match=r"no prompt for 'fog'.*rain"):
        export.specialise(tiny(), "fog")


# --------------------------------------------------------------------------- the ONNX files


def test_the_command_traces_once_and_prints_every_file_and_difference(exported):
    code, out, err = exported["result"]
    assert code == 0, err
    assert exported["traced"] == 1
    folder = exported["root"] / "onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["haze.onnx", "rain.onnx"]  # no temporary file left
    lines = [re.split(r"\s{2,}", line) for line in out.strip().splitlines()]  # cells: 2+ spaces apart
    assert lines[0] == ["degradation", "file", "MB", *(f"max|diff| {s}" for s in SIZES)]
    for name, cells in zip(NAMES, lines[1:], strict=True):
        assert cells[:2] == [name, str(folder / f"{name}.onnx")]
        assert float(cells[2]) == pytest.approx((folder / f"{name}.onnx").stat().st_size / 1e6, abs=0.06)
        diffs = [float(c) for c in cells[3:]]
        assert len(diffs) == len(SIZES) and all(0 <= d <= export.TOLERANCE for d in diffs)
    assert [line for line in err.splitlines() if line.startswith("exporting")] == [
        f"exporting {n} ({i} of 2) to {folder / (n + '.onnx')} and verifying it ..." for i, n in enumerate(NAMES, 1)]


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_restores_as_the_model_at_any_size(exported, name):
    import onnxruntime

    model = exported["model"]
    session = onnxruntime.InferenceSession(str(exported["root"] / "onnx" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    other = NAMES[1 - NAMES.index(name)]
    for shape in CHECKED:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
        (restored,) = session.run(["restored"], {"image": x.numpy()})
        assert restored.shape == shape
        expected = model.restore(x, name).numpy()
        assert np.abs(restored - expected).max() <= 1e-4, shape
        # each file holds its own degradation's weights, not the traced one's
        assert np.abs(restored - model.restore(x, other).numpy()).max() > 1e-3, shape


def test_a_failed_verification_exits_1_and_leaves_no_file(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "onnx_program", lambda model, optimize=True: exported["program"])  # no second trace
    monkeypatch.setattr(export, "TOLERANCE", 0.0)
    (tmp_path / "rain.onnx").write_text("from an earlier run")
    code, out, err = run(["--weights", str(exported["root"] / "tiny.safetensors"), "--degradations", "rain",
                          "-o", str(tmp_path), "--sizes", "16x16"])
    assert code == 1
    assert list(tmp_path.iterdir()) == []
    assert re.search(r"^error: rain: onnxruntime differs from PyTorch by up to \S+ \(tolerance 0e\+00\); \S+ not written$",
                     err, re.MULTILINE)
    assert re.split(r"\s{2,}", out.splitlines()[1])[:3] == ["rain", "(not written)", "-"]


def test_the_onnxruntime_example_of_the_docs_restores_as_the_model(exported, tmp_path, monkeypatch):
    import shutil

    block = re.search(r"```python\n(.*?)```", DOCS_PAGE.read_text(encoding="utf-8"), re.DOTALL).group(1)
    (tmp_path / "onnx").mkdir()
    shutil.copy(exported["root"] / "onnx" / "rain.onnx", tmp_path / "onnx")
    rgb = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rainy.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOCS_PAGE), "exec"), {"__name__": "__docs__"})
    restored = np.asarray(Image.open(tmp_path / "restored.png"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    expected = (exported["model"].restore(x, "rain")[0].permute(1, 2, 0).clamp(0, 1) * 255).round().numpy()
    assert np.abs(restored - expected).max() <= 1  # rounding of values 1e-4 apart


# --------------------------------------------------------------------------- a model without DGPBs


def test_a_model_without_dgpbs_is_exported_once_without_a_prompt(tmp_path):
    need_onnx()
    import onnxruntime

    torch.manual_seed(0)
    config = dfpir.get_config("restormer", dim=8, num_blocks=(0, 0, 0, 0), num_refinement_blocks=0, heads=(1, 1, 1, 1))
    dfpir.save(dfpir.DFPIR(config).eval(), tmp_path / "restormer.safetensors")
    code, out, err = run(["--weights", str(tmp_path / "restormer.safetensors"), "--degradations", "rain", "haze",
                          "-o", str(tmp_path / "onnx"), "--sizes", "21x34"])
    assert code == 0, err
    assert "no DGPBs" in err and "restormer.onnx" in err
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == ["restormer.onnx"]
    assert out.splitlines()[1].split()[0] == "restormer"
    model = dfpir.load(tmp_path / "restormer.safetensors")
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "restormer.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 13, 19)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(session.run(["restored"], {"image": x.numpy()})[0] - expected).max() <= 1e-4


# --------------------------------------------------------------------------- bad input


def test_an_unknown_degradation_is_one_line_listing_the_known_ones_and_writes_nothing(exported, tmp_path):
    code, out, err = run(["--weights", str(exported["root"] / "tiny.safetensors"), "--degradations", "rain", "fog",
                          "-o", str(tmp_path / "onnx")])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: unknown degradation fog; these weights know: noise15")
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("case", ["missing weights", "output is a file"])
def test_a_bad_weights_file_or_output_folder_is_one_line(case, tmp_path):
    need_onnx()
    (tmp_path / "file").write_text("")
    argv = ["--weights", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "onnx")]
    if case == "output is a file":
        argv[-1] = str(tmp_path / "file")
    code, out, err = run(argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: weights file not found" if case == "missing weights" else f"error: -o {tmp_path / 'file'} is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_missing_onnx_packages_are_one_line_naming_the_extra(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec

    def only_onnxruntime_missing(name, *args):
        if name in export.PACKAGES:
            return None if name == "onnxruntime" else object()
        return find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", only_onnxruntime_missing)
    code, _, err = run(["-o", str(tmp_path / "onnx")])
    assert code == 2
    assert err == "error: ONNX export needs onnxruntime (not installed): pip install 'dfpir[export]'\n"
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("size", ["7x20", "20x4", "0x16x16", "16", "16x16x16x16", "ax16"])
def test_sizes_below_8_or_malformed_are_refused_in_one_line(size, tmp_path):
    code, _, err = run(["-o", str(tmp_path), "--sizes", size])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: python -m dfpir.export: argument --sizes")


def test_sizes_are_read_as_batch_height_width():
    assert export.parse_size("37x53") == (1, 37, 53)
    assert export.parse_size("2x16x24") == (2, 16, 24)
    assert [export.size_label(s) for s in [(1, 37, 53), (2, 16, 24)]] == ["37x53", "2x16x24"]
