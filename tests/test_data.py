"""Datasets, layouts, image reading and the check/bench commands, on tiny generated folders."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from dfpir import data
from dfpir.data.bench import bench
from dfpir.degradations import synthetic_names
from dfpir.errors import UserError

PATCH = 32


def write(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A random 8-bit RGB image file (any suffix PIL knows); returns the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    iio.imwrite(path, pixels)
    return pixels


def png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit colour PNG, written by hand (Pillow cannot write one)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def check_item(item: dict, size: int | None = PATCH) -> None:
    assert set(item) >= {"input", "target", "degradation", "label", "name"}
    for key in ("input", "target"):
        t = item[key]
        assert t.dtype == torch.float32 and t.shape[0] == 3
        if size is not None:
            assert t.shape == (3, size, size)
        assert 0 <= float(t.min()) and float(t.max()) <= 1


# --------------------------------------------------------------------------- read_image


def test_read_rgb_png_roundtrip(tmp_path):
    pixels = write(tmp_path / "a.png")
    img = data.read_image(tmp_path / "a.png")
    assert img.dtype == np.float32 and img.shape == (40, 48, 3)
    assert np.array_equal(np.round(img * 255).astype(np.uint8), pixels)


def test_read_grayscale_becomes_rgb(tmp_path):
    grey = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    iio.imwrite(tmp_path / "g.png", grey)
    img = data.read_image(tmp_path / "g.png")
    assert img.shape == (20, 30, 3)
    assert np.array_equal(img[..., 0], img[..., 2]) and np.allclose(img[..., 1], grey / 255)


def test_read_rgba_drops_alpha_with_a_warning(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "t.png", rgba)
    with pytest.warns(data.DataWarning, match=r"t\.png: alpha channel dropped"):
        img = data.read_image(tmp_path / "t.png")
    assert np.allclose(img, rgba[..., :3] / 255)
    rgba[..., 3] = 255  # opaque: nothing lost, nothing to say
    iio.imwrite(tmp_path / "o.png", rgba)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.read_image(tmp_path / "o.png").shape == (10, 12, 3)


def test_read_16bit_scaled_by_65535(tmp_path):
    grey = np.array([[0, 1000, 65535]], dtype=np.uint16).repeat(4, 0)
    iio.imwrite(tmp_path / "g16.png", grey)
    img = data.read_image(tmp_path / "g16.png")
    assert np.allclose(img[0, :, 0], [0, 1000 / 65535, 1], atol=1e-6)
    colour = np.random.default_rng(1).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    png16_rgb(tmp_path / "c16.png", colour)
    assert np.abs(data.read_image(tmp_path / "c16.png") - colour / 65535).max() < 1 / 255 + 1e-6


def test_read_palette_and_bilevel(tmp_path):
    pixels = write(tmp_path / "rgb.png")
    PILImage.fromarray(pixels).convert("P").save(tmp_path / "p.png")
    expected = np.asarray(PILImage.open(tmp_path / "p.png").convert("RGB")) / 255
    assert np.allclose(data.read_image(tmp_path / "p.png"), expected, atol=1e-6)
    PILImage.fromarray(pixels[..., 0]).convert("1").save(tmp_path / "b.png")
    assert set(np.unique(data.read_image(tmp_path / "b.png"))) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing", "empty"])
def test_unreadable_files_raise_user_error_naming_the_file(tmp_path, kind):
    path = tmp_path / "bad.png"
    if kind == "truncated":
        write(path)
        path.write_bytes(path.read_bytes()[:-200])
    elif kind == "garbage":
        path.write_bytes(b"this is not a picture")
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(UserError, match=r"bad\.png: ") as info:
        data.read_image(path)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- augmentation


def test_dihedral_gives_eight_distinct_transforms_and_identity_first():
    a = np.arange(3 * 3 * 1, dtype=np.float32).reshape(3, 3, 1)
    outs = [data.dihedral(a, k) for k in range(8)]
    assert np.array_equal(outs[0], a)
    assert len({o.tobytes() for o in outs}) == 8


def test_center_crop_multiple():
    from dfpir.metrics import centre_crop_multiple

    assert centre_crop_multiple(np.zeros((35, 50, 3)), 16).shape == (32, 48, 3)


# --------------------------------------------------------------------------- built-in photos


def test_builtin_photos_split_is_spatial_and_disjoint():
    full = dict(data.builtin_photos("all"))
    train, val = dict(data.builtin_photos("train")), dict(data.builtin_photos("val"))
    assert list(full) == [Path(f).stem for f in data.BUILTIN_PHOTOS]
    for name, img in full.items():
        assert img.dtype == np.float32 and img.shape[-1] == 3 and 0 <= img.min() and img.max() <= 1
        assert train[name].shape[1] + val[name].shape[1] == img.shape[1]
        assert np.array_equal(np.concatenate([train[name], val[name]], axis=1), img)
        assert val[name].shape[1] >= 128, "a 128 validation crop must fit"
    with pytest.raises(ValueError):
        data.builtin_photos("test")


def test_builtin_photos_are_read_only():
    _, img = data.builtin_photos("train")[0]
    with pytest.raises(ValueError):
        img[0, 0, 0] = 0


# --------------------------------------------------------------------------- synthetic datasets


def small_images():
    rng = np.random.default_rng(0)
    return [(f"im{i}", rng.random((48, 56, 3), dtype=np.float32)) for i in range(3)]


def test_synthetic_dataset_items_are_deterministic_and_epoch_dependent():
    degs = ["noise25", "rain", "lowlight"]
    a = data.SyntheticDataset(small_images(), degs, PATCH, length=12, seed=5)
    b = data.SyntheticDataset(small_images(), degs, PATCH, length=12, seed=5)
    for i in range(12):
        x, y = a[i], b[i]
        check_item(x)
        assert torch.equal(x["input"], y["input"]) and torch.equal(x["target"], y["target"])
        assert x["label"] == degs.index(x["degradation"])
    before = a[3]["target"]
    a.set_epoch(1)
    assert not torch.equal(a[3]["target"], before)


def test_decoded_photos_decode_each_file_once_and_hand_out_read_only_arrays(tmp_path, monkeypatch):
    from dfpir.data import photos

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write(a, 1), write(b, 2)
    decoded, calls = [], photos.read_image
    monkeypatch.setattr(photos, "read_image", lambda p: decoded.append(Path(p).name) or calls(p))
    cache = photos.DecodedPhotos()
    first = cache.read(a)
    assert np.array_equal(first, calls(a)) and not first.flags.writeable
    assert cache.read(a) is first and decoded == ["a.png"]
    one_image = photos.DecodedPhotos(budget=first.nbytes)  # room for one: reading b pushes a out
    for p in (a, b, a, a):
        one_image.read(p)
    assert decoded == ["a.png", "a.png", "b.png", "a.png"] and one_image.used == first.nbytes
    write(a, 3)  # a file rewritten on disk is read again
    assert np.array_equal(cache.read(a), calls(a)) and decoded[-1] == "a.png" and len(decoded) == 5


def test_decoded_photos_change_no_item_of_a_dataset_of_files(tmp_path):
    files = [tmp_path / f"im{i}.png" for i in range(3)]
    for i, f in enumerate(files):
        write(f, i, size=(48, 56))
    degs = ["noise25", "blur", "rain"]
    kept = data.SyntheticDataset(files, degs, PATCH, length=12, seed=5)
    fresh = data.SyntheticDataset(files, degs, PATCH, length=12, seed=5)
    fresh.decoded.budget = 0  # decodes every time, as before the cache
    for _ in range(2):  # the second pass comes from memory
        for i in range(12):
            assert torch.equal(kept[i]["input"], fresh[i]["input"]) and torch.equal(kept[i]["target"], fresh[i]["target"])
    assert kept.decoded.used > 0 and not fresh.decoded.arrays


def test_synthetic_ratios_are_exact_per_epoch():
    ds = data.SyntheticDataset(small_images(), ["noise15", "haze"], 8, length=40, ratios=[3, 1])
    labels = [ds._choose(i, np.random.default_rng(0))[1] for i in range(40)]
    assert labels.count(0) == 30 and labels.count(1) == 10


def test_synthetic_without_length_covers_every_image_and_degradation_once():
    ds = data.SyntheticDataset(small_images(), ["noise15", "noise50"], PATCH)
    seen = {(ds[i]["name"], ds[i]["degradation"]) for i in range(len(ds))}
    assert len(ds) == 6 and len(seen) == 6


def test_loader_output_does_not_depend_on_worker_count():
    ds = data.SyntheticDataset(small_images(), ["noise25", "blur"], 16, length=8, seed=1)
    one = [b["input"] for b in DataLoader(ds, batch_size=4, num_workers=0)]
    two = [b["input"] for b in DataLoader(ds, batch_size=4, num_workers=2)]
    assert all(torch.equal(p, q) for p, q in zip(one, two))


def test_validation_set_is_fixed_and_complete():
    degs = ["haze", "blur"]
    v1 = data.validation_set(small_images(), degs, PATCH, per_image=2, seed=0)
    v2 = data.validation_set(small_images(), degs, PATCH, per_image=2, seed=0)
    assert len(v1) == 3 * 2 * 2
    for x, y in zip(v1, v2):
        check_item(x)
        assert torch.equal(x["input"], y["input"]) and x["label"] == degs.index(x["degradation"])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown degradation 'fog'"):
        data.SyntheticDataset(small_images(), ["fog"], PATCH)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        data.SyntheticDataset([np.zeros((8, 8))], ["rain"], PATCH)


# --------------------------------------------------------------------------- paired data


def make_pairs(inp: Path, tgt: Path, names: list[tuple[str, str]], size=(40, 48)) -> None:
    """Target = random image; input = its negative, so pairing can be verified from pixels."""
    for i, (a, b) in enumerate(names):
        pixels = write(tgt / b, seed=zlib.crc32(b.encode()), size=size)  # one content per target name
        (inp / a).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(inp / a, 255 - pixels)


def test_paired_dataset_crops_and_augments_input_and_target_alike(tmp_path):
    make_pairs(tmp_path / "input", tmp_path / "target", [(f"{i}.png", f"{i}.png") for i in range(4)])
    ds = data.build_dataset("paired", tmp_path, patch_size=PATCH, degradation="rain")
    assert len(ds) == 4
    for i in range(4):
        for epoch in range(3):
            ds.set_epoch(epoch)
            item = ds[i]
            check_item(item)
            assert torch.allclose(item["input"], 1 - item["target"], atol=1e-6)


def test_paired_name_rule_and_unpaired_warning(tmp_path):
    make_pairs(tmp_path / "low", tmp_path / "gt", [("a_low.png", "a.png"), ("b_low.png", "b.png")])
    write(tmp_path / "low" / "orphan_low.png")
    with pytest.warns(data.DataWarning, match="1 input files have no target"):
        ds = data.build_dataset("paired", tmp_path, "train", PATCH, degradation="lowlight", name_rule="_low$=>", input_dir="low", target_dir="gt")
    assert len(ds) == 2 and ds[0]["degradation"] == "lowlight"


def test_size_mismatch_is_a_user_error_or_cropped(tmp_path):
    write(tmp_path / "input" / "x.png", size=(40, 48))
    write(tmp_path / "target" / "x.png", size=(41, 48))
    ds = data.build_dataset("paired", tmp_path, "test", degradation="haze")
    with pytest.raises(UserError, match=r"x\.png: size 48x40 differs"):
        ds[0]
    ds = data.build_dataset("paired", tmp_path, "test", degradation="haze", size_mismatch="crop")
    assert ds[0]["input"].shape == ds[0]["target"].shape == (3, 40, 48)


def test_missing_folders_and_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        data.build_dataset("rain100l", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"folder not found; .*python -m dfpir.data corpus -o .*nowhere`$"):
        data.build_dataset("clean", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"corpus/photos: folder not found; .*python -m dfpir.data corpus -o \S*corpus`$"):
        data.build_dataset("clean", tmp_path / "corpus" / "photos")
    with pytest.raises(UserError, match="expected sub-folders rainy/ \\+ gt/"):
        data.build_dataset("rain100l", tmp_path)
    with pytest.raises(UserError, match="needs the degradation"):
        data.build_dataset("paired", tmp_path)
    with pytest.raises(ValueError, match="unknown layout"):
        data.build_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match="bad name rule|PATTERN=>REPLACEMENT"):
        data.NameRule.parse("no-arrow")


# --------------------------------------------------------------------------- the paper's layouts


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> Path:
    """Tiny copies of every paper layout, arranged as a 5-task ROOT (task folders)."""
    root = tmp_path_factory.mktemp("paper")
    for i in range(2):
        write(root / "denoise" / "BSD400" / f"{i}.jpg", seed=i)
        write(root / "denoise" / "WED" / f"{i}.bmp", seed=10 + i)
        write(root / "cbsd68" / f"{i}.png", seed=20 + i)
    make_pairs(root / "derain" / "rainy", root / "derain" / "gt", [(f"rain-{i}.png", f"norain-{i}.png") for i in range(3)])
    make_pairs(root / "rain_test" / "input", root / "rain_test" / "target", [(f"rain-{i}.png", f"norain-{i}.png") for i in range(2)])
    make_pairs(root / "dehaze" / "synthetic", root / "dehaze" / "original",
               [(f"part{i % 2}/000{i // 2}_0.8_0.{i}.jpg", f"000{i // 2}.jpg") for i in range(4)])
    make_pairs(root / "sots" / "input", root / "sots" / "target", [("0001_0.8_0.2.jpg", "0001.png"), ("0002_1_0.16.jpg", "0002.png")])
    for seq in ("GOPR0001_00", "GOPR0002_00"):
        make_pairs(root / "deblur" / seq / "blur", root / "deblur" / seq / "sharp", [("000001.png", "000001.png")])
    make_pairs(root / "lowlight" / "our485" / "low", root / "lowlight" / "our485" / "high", [("1.png", "1.png"), ("2.png", "2.png")])
    make_pairs(root / "lowlight" / "eval15" / "low", root / "lowlight" / "eval15" / "high", [("9.png", "9.png")])
    return root


@pytest.mark.parametrize(
    "layout, sub, split, count, degradation",
    [
        ("bsd400_wed", "denoise", "train", 4 * 3, None),
        ("cbsd68", "cbsd68", "test", 2 * 3, None),
        ("rain100l", "derain", "train", 3, "rain"),
        ("rain100l", "rain_test", "test", 2, "rain"),
        ("reside_ots", "dehaze", "train", 4, "haze"),
        ("sots_outdoor", "sots", "test", 2, "haze"),
        ("gopro", "deblur", "train", 2, "blur"),
        ("lol", "lowlight", "train", 2, "lowlight"),
        ("lol", "lowlight", "test", 1, "lowlight"),
        ("clean", "cbsd68", "train", 2 * 7, None),
    ],
)
def test_every_layout_builds(paper, layout, sub, split, count, degradation):
    ds = data.build_dataset(layout, paper / sub, split, PATCH)
    assert len(ds) == count
    item = ds[len(ds) - 1]
    check_item(item, PATCH if split != "test" else None)
    if degradation:
        assert item["degradation"] == degradation
    if split == "test":
        assert item["input"].shape == (3, 40, 48), "test items are whole images"
    else:
        assert torch.is_tensor(item["input"])


def test_paper_pairs_match_by_the_original_names(paper):
    ds = data.build_dataset("reside_ots", paper / "dehaze", "test", None)
    for a, b in ds.pairs:
        assert b.stem == a.stem.split("_")[0]
    for i in range(len(ds)):
        item = ds[i]
        error = float((item["input"] - (1 - item["target"])).abs().mean())
        assert error < 0.1, "JPEG pairs stay negatives, within JPEG error (a wrong pair is about 0.33 off)"


def test_denoise_test_set_uses_original_8bit_noise_with_a_fixed_seed(paper):
    a = data.build_dataset("cbsd68", paper / "cbsd68", "test")
    b = data.build_dataset("cbsd68", paper / "cbsd68", "test")
    assert [a[i]["degradation"] for i in range(6)] == ["noise15"] * 2 + ["noise25"] * 2 + ["noise50"] * 2
    for i in range(6):
        x = a[i]["input"]
        assert torch.equal(x, b[i]["input"])
        assert torch.equal(x * 255, torch.round(x * 255)), "8-bit levels, as the original"


def test_five_task_mixture_applies_the_original_repeats(paper):
    ds = data.build_dataset("5task", paper, "train", PATCH)
    assert ds.degradations == ["noise15", "noise25", "noise50", "rain", "haze", "blur", "lowlight"]
    assert len(ds) == 12 * 1 + 3 * 80 + 4 * 1 + 2 * 30 + 2 * 60
    starts = {int(o): ds[int(o)] for o in ds.offsets[:-1]}
    assert [it["degradation"] for it in starts.values()] == ["noise15", "rain", "haze", "blur", "lowlight"]
    for it in starts.values():
        check_item(it)
        assert it["label"] == ds.degradations.index(it["degradation"])
    # Repeats of one rain pair are different crops of the same file.
    r0, r1 = ds[int(ds.offsets[1])], ds[int(ds.offsets[1]) + 3]
    assert r0["name"] == r1["name"] and not torch.equal(r0["target"], r1["target"])


def test_three_task_custom_repeats(paper):
    ds = data.build_dataset("3task", paper, "train", PATCH, repeats={"derain": 2})
    assert ds.degradations == ["noise15", "noise25", "noise50", "rain", "haze"]
    assert len(ds) == 12 + 3 * 2 + 4


def test_holdout_gives_disjoint_train_and_val(paper):
    train = data.build_dataset("reside_ots", paper / "dehaze", "train", PATCH, holdout=2)
    val = data.build_dataset("reside_ots", paper / "dehaze", "val", PATCH, holdout=2)
    assert len(train) == len(val) == 2 and not set(train.pairs) & set(val.pairs)
    with pytest.raises(UserError, match="holdout"):
        data.build_dataset("reside_ots", paper / "dehaze", "val", PATCH)


def test_builtin_layout_splits():
    train = data.build_dataset("builtin", None, "train", PATCH, degradations=["rain", "noise50"], length=10)
    val = data.build_dataset("builtin", None, "val", PATCH, degradations=["rain", "noise50"])
    assert len(train) == 10 and len(val) == len(data.BUILTIN_PHOTOS) * 2
    check_item(train[0])
    check_item(val[-1])


# --------------------------------------------------------------------------- the check command


def test_check_reports_a_usable_layout(paper, capsys):
    assert data.main(["check", str(paper / "derain"), "--layout", "rain100l", "--patch-size", str(PATCH)]) == 0
    out = capsys.readouterr().out
    assert "derain" in out and " ok" in out


def test_check_reports_unreadable_and_mismatched_files(tmp_path, capsys):
    make_pairs(tmp_path / "input", tmp_path / "target", [("a.png", "a.png"), ("b.png", "b.png")])
    bad = tmp_path / "input" / "a.png"
    bad.write_bytes(bad.read_bytes()[:100])
    write(tmp_path / "target" / "b.png", size=(30, 30))
    write(tmp_path / "target" / "lonely.png")
    code = data.main(["check", str(tmp_path), "--layout", "paired", "--degradation", "rain", "--patch-size", "16"])
    out = capsys.readouterr().out
    assert code == 1
    assert "UNUSABLE" in out and "a.png: cannot read image" in out and "b.png: 48x40 vs target b.png 30x30" in out
    assert "no input:" in out and "lonely.png" in out


def test_check_counts_every_conversion_reading_makes(tmp_path, capsys):
    folder = tmp_path / "clean"
    pixels = write(folder / "rgb.png")
    iio.imwrite(folder / "grey.png", pixels[..., 0])
    PILImage.fromarray(pixels).convert("P").save(folder / "palette.png")
    png16_rgb(folder / "deep.png", pixels.astype(np.uint16) * 257)
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    iio.imwrite(folder / "opaque.png", rgba)
    rgba[0, 0, 3] = 0
    iio.imwrite(folder / "cutout.png", rgba)
    [row] = data.check("clean", folder, patch_size=PATCH)
    found = {Path(c.split(": ")[0]).name: c.split(": ", 1)[1] for c in row.converted}
    assert found == {"grey.png": "grey -> RGB", "palette.png": "palette -> RGB", "deep.png": "16-bit -> float",
                     "opaque.png": "opaque alpha dropped", "cutout.png": "alpha dropped (1 of 1920 pixels not opaque)"}
    assert row.usable and not row.unreadable
    assert data.main(["check", str(folder), "--layout", "clean", "--patch-size", str(PATCH)]) == 0
    table_row = capsys.readouterr().out.splitlines()[2].split()
    assert table_row[-3:] == ["5", "0", "ok"], "5 converted, 0 small"


@pytest.mark.parametrize("layout", ["clean", "paired"])
def test_check_flags_small_images_for_training_splits_only(tmp_path, layout):
    for name, size in (("small.png", (20, 24)), ("big.png", (40, 48))):
        if layout == "clean":
            write(tmp_path / name, size=size)
        else:
            make_pairs(tmp_path / "input", tmp_path / "target", [(name, name)], size=size)
    options = {"degradation": "rain"} if layout == "paired" else {}
    small = (tmp_path / "input" if layout == "paired" else tmp_path) / "small.png"
    for split, flagged in (("train", 1), ("val", 1), ("test", 0)):  # a test image is restored whole
        [row] = data.check(layout, tmp_path, split, patch_size=PATCH, **options)
        assert row.count == 2 and row.usable
        assert len(row.small) == flagged, split
        assert all(s.startswith(f"{small}: 24x20 is smaller than the 32 patch") for s in row.small)


def test_check_five_task_reports_every_task(paper, capsys):
    assert data.main(["check", str(paper), "--layout", "5task", "--patch-size", str(PATCH)]) == 0
    out = capsys.readouterr().out
    for task in ("denoise", "derain", "dehaze", "deblur", "lowlight"):
        assert task in out


def test_check_missing_root_is_a_one_line_error(tmp_path, capsys):
    assert data.main(["check", str(tmp_path / "nope"), "--layout", "lol"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "folder not found" in err and err.count("\n") == 1


def test_check_missing_task_folder_is_unusable(tmp_path, capsys):
    (tmp_path / "derain").mkdir()
    assert data.main(["check", str(tmp_path), "--layout", "3task"]) == 1
    assert "UNUSABLE" in capsys.readouterr().out


def test_bench_runs_small():
    import io

    buf = io.StringIO()
    res = bench(size=16, batch=2, repeats=1, workers=[0], model=None, out=buf)
    assert set(res) == set(synthetic_names()) | {"loader0"} and all(v > 0 for v in res.values())
    assert "patches/s" in buf.getvalue()


def test_bench_times_items_read_from_files(tmp_path):
    import io

    for i in range(2):
        write(tmp_path / "photos" / f"p{i}.png", i, size=(40, 40))
    buf = io.StringIO()
    res = bench(size=16, batch=2, repeats=1, workers=[], model=None, out=buf, photos=tmp_path / "photos")
    assert res["files_afresh"] > 0 and res["files_kept"] > 0
    assert "2 files, decoded afresh" in buf.getvalue() and "2 files, decoded once, kept" in buf.getvalue()


@pytest.mark.parametrize("args, message", [
    (["check", "--layout", "builtin", "--limit", "0"], "--limit must be >= 1"),
    (["check", "--layout", "builtin", "--patch-size", "-5"], "--patch-size must be >= 1"),
    (["bench", "--size", "0"], "--size must be >= 1"),
    (["bench", "--batch", "0"], "--batch must be >= 1"),
    (["bench", "--repeats", "0"], "--repeats must be >= 1"),
    (["bench", "--threads", "-1"], "--threads must be >= 1"),
    (["bench", "--workers", "0", "-1"], "--workers must be >= 0"),
    (["bench", "--photos", "no/such/folder"], "no/such/folder: not a folder with image files"),
    (["bench", "--model", "huge"], "unknown --model 'huge'"),
])
def test_impossible_values_are_one_line_errors_before_any_work(args, message, capsys):
    assert data.main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # nothing was read or timed


def test_check_a_file_given_as_root_says_so(tmp_path, capsys):
    (tmp_path / "f.png").write_bytes(b"")
    assert data.main(["check", str(tmp_path / "f.png"), "--layout", "clean"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
