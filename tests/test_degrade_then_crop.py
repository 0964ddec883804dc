"""Degrade, then crop: a training patch equals the whole photo degraded and then cropped.

The check rebuilds an item's random draws from its seed (image, crop box, generator), degrades the
*whole* photo with them and cuts the same square. Blur (a fixed kernel per draw) must then agree to
float precision everywhere, borders included; cropping first and blurring afterwards, as before,
pads the patch's border and fails it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfpir.data import SyntheticDataset, crop, crop_box, degraded_patch, item_rng, torch_generator, validation_set
from dfpir.degradations import DEFAULT_EXTENT, DEGRADATIONS, context, motion_blur, register_degradation, synthetic_names

PATCH = 48


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A textured (H, W, 3) photo stand-in: smooth gradients plus fine detail, so blur changes it."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:100] / 100.0
    base = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y), np.sin(5 * x * y)], axis=-1) * 0.3 + 0.5
    return np.clip(base + 0.15 * rng.random((120, 100, 3)), 0, 1).astype(np.float32)


def whole_then_crop(photo: np.ndarray, top: int, left: int, g: torch.Generator) -> torch.Tensor:
    """``motion_blur`` of the whole photo, then the PATCH square at (top, left): (3, P, P)."""
    whole = motion_blur(torch.from_numpy(photo.transpose(2, 0, 1).copy())[None], g)[0]
    return whole[:, top : top + PATCH, left : left + PATCH]


def test_training_patches_equal_the_whole_photo_blurred_then_cropped(photo):
    seed = 3
    ds = SyntheticDataset([("p", photo)], ["blur"], PATCH, length=24, seed=seed, augment=False)
    tops = set()
    for i in range(len(ds)):
        item = ds[i]
        rng = item_rng(seed, 0, i)
        rng.integers(1)  # the dataset's draw of the image (one photo here)
        top, left = crop_box(*photo.shape[:2], PATCH, rng)
        tops.add(top)
        expected = whole_then_crop(photo, top, left, torch_generator(rng))
        torch.testing.assert_close(item["input"], expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(item["target"], torch.from_numpy(crop(photo, top, left, PATCH).transpose(2, 0, 1).copy()))
    assert len(tops) > 5  # many positions, the photo's border and its inside both met


def test_validation_patches_are_degraded_with_their_surroundings(photo):
    items = validation_set([("p", photo)], ["blur"], PATCH, per_image=3, seed=5)
    for k, item in enumerate(items):
        rng = item_rng(5, 0x5EED, 0, 0, k)
        top, left = crop_box(*photo.shape[:2], PATCH, rng)
        torch.testing.assert_close(item["input"], whole_then_crop(photo, top, left, torch_generator(rng)), atol=1e-6, rtol=0)


def test_cropping_first_would_differ_at_the_border(photo):
    """The check above can fail: blurring the bare patch (reflect padding) gives another border."""
    top, left = 30, 20
    rng = np.random.default_rng(0)
    g = torch_generator(rng)
    state = g.get_state()
    patch = torch.from_numpy(crop(photo, top, left, PATCH).transpose(2, 0, 1).copy())[None]
    bare = motion_blur(patch, g)[0]
    g.set_state(state)
    whole = whole_then_crop(photo, top, left, g)
    assert (bare - whole).abs().max() > 1e-2


def test_a_generator_without_declared_extent_gets_the_default_context(photo):
    """A user's spatial generator that declares nothing still sees real pixels around the patch."""
    def box_blur(clean: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # 2r+1 box, reflect padding
        r = 9
        x = F.pad(clean, (r, r, r, r), mode="reflect")
        return F.avg_pool2d(x, 2 * r + 1, stride=1)

    row = register_degradation("test_box_blur", "a box blur", synthesize=box_blur)
    try:
        assert row.extent is None and context("test_box_blur") == DEFAULT_EXTENT
        top, left = 40, 30
        got, _ = degraded_patch(photo, top, left, PATCH, "test_box_blur", np.random.default_rng(0))
        whole = box_blur(torch.from_numpy(photo.transpose(2, 0, 1).copy())[None], torch.Generator())[0]
        torch.testing.assert_close(got, whole[:, top : top + PATCH, left : left + PATCH], atol=1e-6, rtol=0)
    finally:
        del DEGRADATIONS["test_box_blur"]


def test_built_in_extents_cover_their_kernels():
    """Pixel-wise degradations need no context; the spatial ones at least their kernel's half-width."""
    from dfpir.degradations.synthetic import blur_kernels, line_kernels, rain_kernel_size

    assert {n: context(n) for n in synthetic_names() if n.startswith("noise") or n == "lowlight"} == \
        dict.fromkeys([n for n in synthetic_names() if n.startswith("noise") or n == "lowlight"], 0)
    assert context("blur") >= blur_kernels(1, torch.Generator().manual_seed(0)).shape[-1] // 2
    size = rain_kernel_size()
    assert context("rain") >= line_kernels(torch.tensor([28.0]), torch.tensor([0.0]), torch.tensor([1.0]), size).shape[-1] // 2
    assert context("haze") > 0


def test_a_bad_extent_is_refused():
    with pytest.raises(ValueError, match="extent"):
        register_degradation("test_bad_extent", "x", synthesize=motion_blur, extent=-1)
    assert "test_bad_extent" not in DEGRADATIONS


def test_photos_smaller_than_the_patch_are_mirror_padded():
    tiny = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    x, y = degraded_patch(tiny, 0, 0, 32, "blur", np.random.default_rng(1))
    assert x.shape == y.shape == (3, 32, 32)
    torch.testing.assert_close(y, torch.from_numpy(crop(tiny, 0, 0, 32).transpose(2, 0, 1).copy()))
