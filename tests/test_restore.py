"""Tiling and ``python -m dfpir.restore``: every input kind, seams, bad inputs, partial failures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image as PILImage

import dfpir
from dfpir import restore
import dfpir.inference.runner as runner
from dfpir.checkpoint import save
from dfpir.model.classifier import DegradationClassifier
from dfpir.images import Image, read_image, write_image
from dfpir.progress import TileProgress
from dfpir.inference.tiling import (
    BYTES_PER_PIXEL_PER_DIM,
    DEFAULT_CPU_BUDGET,
    activation_bytes,
    auto_tile,
    plan_tiles,
    ramp,
    restore_image,
    restore_tiled,
    restore_whole,
    tile_starts,
    tiling_discrepancy,
)

# Measured by test_tiled_versus_whole_on_a_smooth_image (tiny preset, random weights, seed 0,
# 96 x 96 smooth image, 48-pixel tiles with 16-pixel overlap, 9 tiles): see that test.
TILED_VS_WHOLE_MIN_PSNR = 28.0  # dB between the tiled and the whole-image result
TILED_VS_WHOLE_MAX_ABS = 0.2


@pytest.fixture(scope="module")
def model() -> dfpir.DFPIR:
    torch.manual_seed(0)
    return dfpir.DFPIR(dfpir.get_config("tiny")).eval()


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    dfpir.save(model, path)
    return path


@pytest.fixture(scope="module")
def weights_with_classifier(model, tmp_path_factory) -> Path:
    torch.manual_seed(1)
    clf = DegradationClassifier(model.prompts.names)
    path = tmp_path_factory.mktemp("w") / "tiny_clf.safetensors"
    tensors = {f"classifier.{k}": v for k, v in clf.state_dict().items()}
    save(model, path, extra_metadata={"classifier_classes": json.dumps(clf.classes)}, extra_tensors=tensors)
    return path


def smooth_image(h: int, w: int) -> torch.Tensor:
    """(1, 3, H, W) slowly varying colours, one period across the image."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.5 + 0.3 * torch.sin(2 * math.pi * xx), 0.5 + 0.3 * torch.cos(2 * math.pi * yy), 0.3 + 0.4 * xx * yy])[None]


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 8), (64, 64, 8), (65, 64, 16), (1000, 296, 32), (17, 64, 16)])
def test_tiles_cover_the_axis_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and min(length, starts[-1] + tile) == length
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap and b > a


def test_ramp_is_positive_and_flat_inside():
    w = ramp(64, 16, rise=True, fall=True)
    assert float(w.min()) > 0 and torch.all(w[16:48] == 1)
    assert torch.all(ramp(64, 16, rise=False, fall=False) == 1)


class Pointwise(torch.nn.Module):
    """A per-pixel 'network': its tiled result must equal its whole-image one."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.7))

    def forward(self, image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return image * self.scale + 0.1


def test_blending_is_exact_for_a_pointwise_model():
    net, image = Pointwise(), torch.rand(1, 3, 70, 90)
    plan = plan_tiles(70, 90, 32, 8)
    assert plan.count > 4
    torch.testing.assert_close(restore_tiled(net, image, torch.zeros(1, 4), plan), restore_whole(net, image, torch.zeros(1, 4)), atol=1e-6, rtol=0)


def test_auto_tile_whole_when_it_fits_and_within_budget_when_not():
    paper = dfpir.get_config("paper")
    assert auto_tile(256, 256, paper, DEFAULT_CPU_BUDGET) is None
    tile = auto_tile(4096, 4096, paper, DEFAULT_CPU_BUDGET)
    assert tile is not None and tile % 8 == 0 and activation_bytes(tile, tile, paper) <= DEFAULT_CPU_BUDGET
    assert activation_bytes(256, 256, paper) == 256 * 256 * 48 * BYTES_PER_PIXEL_PER_DIM
    assert activation_bytes(256, 256, paper, torch.bfloat16) == activation_bytes(256, 256, paper) // 2


def test_restore_image_tiles_only_when_needed(model):
    image, prompt = torch.rand(1, 3, 24, 40), model.embed_prompts("noise25")
    _, plan = restore_image(model, image, prompt)
    assert plan is None
    out, plan = restore_image(model, image, prompt, tile=24)
    assert plan is not None and plan.count == 3 and out.shape == image.shape and torch.isfinite(out).all()


def test_tiled_versus_whole_on_a_smooth_image(model):
    """The documented difference: channel attention sees per-tile statistics (module docstring).

    Measured (tiny preset, random weights, CPU): PSNR 32.1 dB, max |diff| 0.136, mean |diff|
    0.018, against a mean change of 0.029 that the whole-image pass makes to its input: with
    random weights the per-tile statistics matter about as much as the restoration itself.
    """
    stats = tiling_discrepancy(model, smooth_image(96, 96), model.embed_prompts("noise25"), tile=48, overlap=16)
    print("tiled vs whole:", stats)
    assert stats["tiles"] == 9
    assert stats["psnr"] > TILED_VS_WHOLE_MIN_PSNR
    assert stats["max_abs"] < TILED_VS_WHOLE_MAX_ABS


# --------------------------------------------------------------------------- the CLI


def write_inputs(folder: Path) -> dict[str, Path]:
    """One small file of each kind."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "gray": folder / "gray.png",
        "rgba": folder / "rgba.png",
        "rgb16": folder / "rgb16.png",
        "tif16": folder / "rgb16.tif",
        "jpeg": folder / "photo.jpg",
        "bmp": folder / "x.bmp",
        "webp": folder / "y.webp",
    }
    PILImage.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(files["gray"])
    PILImage.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)).save(files["rgba"])
    png.from_array(rng.integers(0, 65536, (20, 24 * 3), dtype=np.uint16), "RGB;16").save(str(files["rgb16"]))
    write_image(files["tif16"], Image(rng.random((18, 22, 3), dtype=np.float32), None, 16))
    im = PILImage.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(files["jpeg"], exif=exif.tobytes())
    PILImage.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(files["bmp"])
    PILImage.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(files["webp"], lossless=True)
    return files


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = restore.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_restores_every_kind_and_keeps_format_depth_alpha_gray(tmp_path, capsys, weights):
    files = write_inputs(tmp_path / "in")
    code, out, err = run_cli(capsys, tmp_path / "in", "-o", tmp_path / "out", "--degradation", "noise25", "--weights", weights)
    assert code == 0, err
    assert "restored 7 of 7" in out
    for src in files.values():
        a, b = read_image(src), read_image(tmp_path / "out" / src.name)
        assert (a.shape, a.bit_depth, a.was_gray, a.alpha is None) == (b.shape, b.bit_depth, b.was_gray, b.alpha is None), src
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "rgba.png").alpha, read_image(files["rgba"]).alpha)
    assert read_image(tmp_path / "out" / "photo.jpg").shape == (24, 16)  # EXIF rotation applied
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_one_bad_file_among_good_ones_is_reported_and_skipped(tmp_path, capsys, weights):
    files = write_inputs(tmp_path / "in")
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(files["rgba"].read_bytes()[:70])
    (tmp_path / "in" / "notes.jpg").write_text("not a picture")
    code, out, err = run_cli(capsys, files["gray"], bad, tmp_path / "in" / "notes.jpg", files["bmp"], "-o", tmp_path / "out",
                             "--degradation", "rain", "--weights", weights, "--suffix", "_r")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "broken.png" in errors[0] and "notes.jpg" in errors[1]
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gray_r.png", "x_r.bmp"]
    assert "restored 2 of 4" in out and "2 failed" in out


def test_inputs_are_never_overwritten_unless_asked(tmp_path, capsys, weights):
    files = write_inputs(tmp_path / "in")
    before = files["bmp"].read_bytes()
    code, _, err = run_cli(capsys, files["bmp"], "-o", tmp_path / "in", "--degradation", "haze", "--weights", weights)
    assert code == 1 and "is the input itself" in err and files["bmp"].read_bytes() == before
    code, _, _ = run_cli(capsys, files["bmp"], "-o", tmp_path / "in", "--degradation", "haze", "--weights", weights, "--overwrite")
    assert code == 0 and files["bmp"].read_bytes() != before


def test_globs_free_text_and_tiles(tmp_path, capsys, weights, monkeypatch):
    files = write_inputs(tmp_path / "in")
    monkeypatch.setattr(restore, "TileProgress", partial(TileProgress, every=0))  # a log line per tile
    code, out, err = run_cli(capsys, str(tmp_path / "in" / "*.bmp"), "-o", tmp_path / "out", "--weights", weights,
                             "--degradation", "heavy rain streaks", "--tile", "16")
    assert code == 0, err
    assert "hashing encoder, not semantic" in out and "tiles of 16" in out
    assert (tmp_path / "out" / files["bmp"].name).is_file()
    count = int(out.split(" tiles of 16")[0].rsplit(" ", 1)[-1])
    assert [line.split(",")[0] for line in err.splitlines()] == [f"x.bmp: {n}/{count} tiles" for n in range(1, count + 1)]


def test_auto_prints_choice_and_confidence(tmp_path, capsys, weights_with_classifier):
    files = write_inputs(tmp_path / "in")
    code, out, err = run_cli(capsys, files["webp"], "-o", tmp_path / "out", "--degradation", "auto", "--weights", weights_with_classifier)
    assert code == 0, err
    assert "confidence 0." in out or "confidence 1.00" in out


def wrong_architecture(weights: Path, tmp_path: Path) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(weights), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps(dfpir.get_config("small").to_dict())
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata=meta)
    return tmp_path / "other.safetensors"


def prompt_width(weights: Path, tmp_path: Path, width: int) -> Path:
    """The checkpoint with every stored prompt cut to ``width`` (the model still takes 512)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(weights), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v[:width].contiguous() if k.startswith("prompt.") else v for k, v in tensors.items()}
    save_file(tensors, str(tmp_path / "narrow.safetensors"), metadata=meta)
    return tmp_path / "narrow.safetensors"


def five_channel_tiff(path: Path) -> Path:
    """An 8-bit TIFF with RGB plus two extra samples: Pillow alone reads it as RGB."""
    import tifffile

    data = np.random.default_rng(0).integers(0, 256, (20, 24, 5), dtype=np.uint8)
    tifffile.imwrite(path, data, photometric="rgb", extrasamples=["unspecified"] * 2)
    return path


BAD_INPUTS = {  # case -> (what the one error line must contain, exit code)
    "missing": ("nope.png", 2), "empty_dir": ("no images", 2), "truncated": ("t.png", 1), "unknown_name": ("snow", 2),
    "architecture": ("other.safetensors", 2), "unwritable": ("cannot write to output folder", 2), "auto_without_classifier": ("classifier", 2),
    "no_default_weights": ("python -m dfpir.train", 2),
    "memory_inf": ("--memory-gb must be a positive number of GiB, got inf", 2),
    "memory_nan": ("--memory-gb must be a positive number of GiB, got nan", 2),
    "memory_zero": ("--memory-gb must be a positive number of GiB, got 0.0", 2),
    "suffix_escapes": ("--suffix '/../../evil' must not contain a path separator or '..'", 2),
    "suffix_dots": ("--suffix '..x' must not contain", 2),
    "empty_degradation": ("--degradation '' is empty; these weights know: noise15, noise25", 2),
    "punctuation_degradation": ("--degradation '!!!' has no letters or digits; these weights know: noise15", 2),
    "five_channels": ("five.tif: 5 channels per pixel are not supported (grey, grey + alpha, RGB or RGBA only)", 1),
    "weights_folder": ("in is a folder", 2),  # checkpoint.read, not "weights file not found"
    "prompt_width": ("narrow.safetensors: its prompt embeddings have width 5", 2),  # checkpoint.load, before any image
    "outdir_is_file": ("x.bmp is a file, not a folder; give -o a folder", 2),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_no_output(tmp_path, capsys, weights, monkeypatch, case):
    files = write_inputs(tmp_path / "in")
    inputs, deg, w, outdir, extra = [files["bmp"]], "noise15", weights, tmp_path / "out", []
    if case == "missing":
        inputs = [tmp_path / "nope.png"]
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        inputs = [tmp_path / "empty"]
    elif case == "truncated":
        inputs = [tmp_path / "t.png"]
        inputs[0].write_bytes(files["gray"].read_bytes()[:50])
    elif case == "unknown_name":
        deg = "snow"
    elif case == "architecture":
        w = wrong_architecture(weights, tmp_path)
    elif case == "unwritable":
        outdir = files["bmp"] / "sub"  # a folder under a file can never be created
    elif case == "auto_without_classifier":
        deg = "auto"
    elif case == "no_default_weights":
        monkeypatch.setattr(runner, "DEMO_WEIGHTS", tmp_path / "absent.safetensors")
    elif case.startswith("memory_"):
        extra = ["--memory-gb", {"memory_inf": "inf", "memory_nan": "nan", "memory_zero": "0"}[case]]
    elif case.startswith("suffix_"):
        extra = ["--suffix", "/../../evil" if case == "suffix_escapes" else "..x"]
    elif case.endswith("_degradation"):
        deg = "" if case == "empty_degradation" else "!!!"
    elif case == "five_channels":
        inputs = [five_channel_tiff(tmp_path / "five.tif")]
    elif case == "weights_folder":
        w = tmp_path / "in"
    elif case == "prompt_width":
        w = prompt_width(weights, tmp_path, 5)
    elif case == "outdir_is_file":
        outdir = files["bmp"]
    argv = [*inputs, "-o", outdir, "--degradation", deg, *extra] + ([] if case == "no_default_weights" else ["--weights", w])
    code, _, err = run_cli(capsys, *argv)
    expected, expected_code = BAD_INPUTS[case]
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert outdir.is_file() if case == "outdir_is_file" else not outdir.exists()  # no empty folder left behind
    assert not list(tmp_path.glob("**/evil*"))


def test_memory_budget_in_bytes():
    assert runner.budget_bytes(None) is None  # not given: the device's default budget
    assert runner.budget_bytes(1) == 2**30 and runner.budget_bytes(0.5) == 2**29
    assert runner.budget_bytes(1e-12) == 1  # tiny but positive: the smallest tiles, not an error


def test_input_without_an_image_suffix_is_written_as_png(tmp_path, capsys, weights):
    files = write_inputs(tmp_path / "in")
    noext = tmp_path / "in" / "scan"
    noext.write_bytes(files["rgba"].read_bytes())
    code, out, err = run_cli(capsys, noext, "-o", tmp_path / "out", "--degradation", "rain", "--weights", weights, "--suffix", "_r")
    assert code == 0, err
    assert f"-> {tmp_path / 'out' / 'scan_r.png'} (rain, written as PNG: the input has no suffix)" in out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scan_r.png"]
    back, source = read_image(tmp_path / "out" / "scan_r.png"), read_image(noext)
    assert (back.shape, back.bit_depth, back.alpha is None) == (source.shape, source.bit_depth, False)


@pytest.mark.parametrize("case", ["folder", "alpha_in_jpeg"])
def test_unwritable_output_is_refused_before_restoring(tmp_path, capsys, weights, monkeypatch, case):
    files = write_inputs(tmp_path / "in")
    source = files["bmp"]
    if case == "folder":
        (tmp_path / "out" / source.name).mkdir(parents=True)  # --overwrite cannot replace a folder
        expected = f"error: {source}: output {tmp_path / 'out' / source.name} is a folder; remove it or choose another -o/--suffix"
    else:
        source = tmp_path / "in" / "fake.jpg"  # an RGBA PNG under a JPEG name: JPEG has no alpha
        source.write_bytes(files["rgba"].read_bytes())
        expected = f"error: {source}: cannot write {tmp_path / 'out' / 'fake.jpg'} (JPEG cannot store an alpha channel"

    def never(*args, **kwargs):
        raise AssertionError("restored although the output cannot be written")

    monkeypatch.setattr(runner.Restorer, "restore", never)
    code, out, err = run_cli(capsys, source, "-o", tmp_path / "out", "--degradation", "rain", "--weights", weights, "--overwrite")
    assert code == 1 and "restored 0 of 1" in out
    assert err.strip().startswith(expected) and err.count("\n") == 1, err
    assert "Errno" not in err and ".tmp" not in err


def test_command_line_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dfpir.restore", str(tmp_path / "none.png"), "-o", str(tmp_path / "o"),
                           "--degradation", "rain", "--weights", str(tmp_path / "w.safetensors")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_fused_strips_run_on_the_cpu_only(device):
    """The fused strips speed up the CPU and slowed an H200 down (docs/results.md, Speed)."""
    from dfpir.model.dgpb import DGPB
    from dfpir.model.transformer import TransformerBlock

    model = runner.Restorer(device=device).model
    blocks = [m for m in model.modules() if isinstance(m, (TransformerBlock, DGPB))]
    assert blocks and all(b.fused == (device == "cpu") for b in blocks)


# --------------------------------------------------------------------------- no gradients, slow bf16, bugs


def test_inference_records_no_gradients_unless_asked():
    torch.manual_seed(0)
    net = dfpir.DFPIR(dfpir.get_config("tiny"))  # training mode, trainable parameters
    image, prompt = torch.rand(1, 3, 24, 24), net.embed_prompts("rain")
    assert any(p.requires_grad for p in net.parameters()) and torch.is_grad_enabled()
    out = net.restore(image, "rain")
    assert not out.requires_grad and out.grad_fn is None
    assert net.restore(image, "rain", grad=True).grad_fn is not None  # asked for: to differentiate through it
    assert net(image, prompt).grad_fn is not None  # the plain call keeps autograd's rules (training)
    for tile in (0, 16):  # whole and tiled
        restored, _ = restore_image(net, image, prompt, tile=tile)
        assert not restored.requires_grad and restored.grad_fn is None


@pytest.mark.parametrize("flags, native", [("fpu sse avx2 avx512f avx512bw", False), ("fpu avx512f avx512_bf16", True),
                                           ("fpu avx2 amx_bf16 amx_tile", True), (None, None)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(runner, "CPUINFO", cpuinfo)
    assert runner.cpu_has_native_bf16() is native


@pytest.mark.parametrize("native, precision, warned", [(False, "bf16", True), (True, "bf16", False), (None, "bf16", False),
                                                       (False, "fp32", False)])
def test_bf16_on_a_cpu_without_it_is_one_warning_line(weights, capsys, monkeypatch, native, precision, warned):
    monkeypatch.setattr(runner, "cpu_has_native_bf16", lambda: native)
    runner.Restorer(weights, "cpu", precision)
    err = capsys.readouterr().err
    if warned:
        assert err.startswith("warning: ") and err.count("\n") == 1 and "--precision fp32 will be faster" in err
    else:
        assert err == ""


def test_bf16_restores_under_autocast_with_float32_weights(weights, monkeypatch):
    """Casting the whole network to bf16 lost 2.2 dB on noise25 photos; under autocast the weights,
    normalisations and sums stay float32, and the result stays near the fp32 one."""
    monkeypatch.setattr(runner, "cpu_has_native_bf16", lambda: True)
    rgb = np.random.default_rng(0).random((40, 56, 3)).astype(np.float32)
    exact, half = runner.Restorer(weights, "cpu", "fp32"), runner.Restorer(weights, "cpu", "bf16")
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    out_exact, _ = exact.restore(rgb, exact.prompt("rain"))
    out_half, _ = half.restore(rgb, half.prompt("rain"))
    err = np.abs(out_half - out_exact).max()
    assert 0 < err < 5e-2, err  # rounded (autocast was on), within test_speed's bf16 bound


@pytest.mark.parametrize("error, one_input", [
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes"), True),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (OSError(28, "No space left on device"), True),
    (RuntimeError("The size of tensor a (8) must match the size of tensor b (16)"), False),  # our bug
    (TypeError("restore() got an unexpected keyword argument"), False),
    (AttributeError("'NoneType' object has no attribute 'embed'"), False),
])
def test_only_failures_of_one_input_are_recorded_bugs_are_raised(tmp_path, capsys, weights, monkeypatch, error, one_input):
    files = write_inputs(tmp_path / "in")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(runner.Restorer, "restore", fail)
    argv = [str(files["bmp"]), "-o", str(tmp_path / "out"), "--degradation", "rain", "--weights", str(weights)]
    if one_input:
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and "restored 0 of 1" in out and err.startswith(f"error: {files['bmp']}: "), err
    else:
        with pytest.raises(type(error)):
            restore.main(argv)
