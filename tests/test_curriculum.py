"""The blur curriculum: one kernel at first, the full distribution later, the crops unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfpir import train
from dfpir.data import SyntheticDataset
from dfpir.data.curriculum import full_share, one_kernel, one_kernel_blur, uses_one_kernel
from dfpir.degradations.synthetic import filter2d
from dfpir.train import resolve
from dfpir.train.sampling import SampleOrder, micro_batches

STEPS = 100


def photo(seed: int = 0, size: int = 72) -> np.ndarray:
    """Random pixels: every 24-px crop of it appears once, so a target says where it was cut."""
    return np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)


def dataset(curriculum: int, degradations=("blur",), augment: bool = True) -> SyntheticDataset:
    return SyntheticDataset([photo()], list(degradations), 24, length=64, seed=3, augment=augment,
                            blur_curriculum=curriculum)


def item(ds: SyntheticDataset, index: int, step: int, epoch: int = 0) -> dict:
    ds.set_epoch(epoch)
    ds.set_step(step)
    return ds[index]


def test_the_share_of_the_full_distribution_grows_from_0_to_1_then_stays():
    assert [full_share(s, STEPS) for s in (0, 25, 50, 100, 500)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert full_share(0, 0) == 1.0  # off


def test_the_one_kernel_is_fixed_and_ignores_the_generator():
    k = one_kernel()
    assert k.shape == (17, 17) and torch.isclose(k.sum(), torch.tensor(1.0)) and (k >= 0).all()
    x = torch.rand(2, 3, 32, 32)
    a = one_kernel_blur(x, torch.Generator().manual_seed(1))
    b = one_kernel_blur(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert torch.allclose(a, filter2d(x, k.expand(2, -1, -1), padding="reflect").clamp(0, 1))


def test_from_the_curriculums_end_the_items_are_those_of_a_run_without_it():
    on, off = dataset(STEPS), dataset(0)
    for i in range(8):
        a, b = item(on, i, STEPS, epoch=1), item(off, i, STEPS, epoch=1)
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])


def test_at_step_0_every_blurred_crop_is_the_one_kernel_applied_to_the_whole_photo_then_cut():
    ds, whole = dataset(STEPS, augment=False), photo()
    blurred = one_kernel_blur(torch.from_numpy(whole).permute(2, 0, 1)[None], torch.Generator())[0]  # (3, 72, 72)
    for i in range(6):
        it = item(ds, i, 0)
        target = it["target"].permute(1, 2, 0).numpy()
        (top, left), = [(t, l) for t in range(72 - 23) for l in range(72 - 23) if np.array_equal(whole[t:t + 24, l:l + 24], target)]
        assert torch.allclose(it["input"], blurred[:, top:top + 24, left:left + 24], atol=1e-6)


def test_midway_the_coin_picks_which_crops_get_the_one_kernel_and_the_rest_are_unchanged():
    on, off = dataset(STEPS), dataset(0)
    picked = []
    for i in range(64):
        one = uses_one_kernel(on.seed, 0, (i,), STEPS // 2, STEPS)
        a, b = item(on, i, STEPS // 2), item(off, i, STEPS // 2)
        assert torch.equal(a["target"], b["target"])  # the same crop either way
        assert torch.equal(a["input"], b["input"]) != one
        picked.append(one)
    assert 0.3 < np.mean(picked) < 0.7  # half expected: 64 coins


def test_other_degradations_are_untouched():
    on, off = dataset(STEPS, ("noise25", "blur")), dataset(0, ("noise25", "blur"))
    for i in range(16):
        a, b = item(on, i, 0), item(off, i, 0)
        assert torch.equal(a["input"], b["input"]) == (a["degradation"] == "noise25")


@pytest.mark.parametrize("workers", [0, 1])
def test_the_training_batches_carry_their_step_to_the_dataset(workers):
    on, off = dataset(STEPS), dataset(0)
    order = SampleOrder(on, seed=0)
    early = next(micro_batches(on, order, range(0, 1), 4, 1, workers=workers))
    late = next(micro_batches(on, order, range(STEPS, STEPS + 1), 4, 1, workers=workers))
    early_off = next(micro_batches(off, order, range(0, 1), 4, 1))
    late_off = next(micro_batches(off, order, range(STEPS, STEPS + 1), 4, 1))
    assert torch.equal(early["target"], early_off["target"]) and not torch.equal(early["input"], early_off["input"])
    assert torch.equal(late["input"], late_off["input"])


def test_a_run_records_the_curriculum_only_when_it_is_on(tmp_path):
    base = ["model.preset=tiny", "data.patch_size=32", "data.val_crop=32", "data.val_patches_per_image=1",
            'data.degradations=["blur"]', "optim.batch_size=2", "train.classifier=false", "train.steps=2",
            "train.val_every=2", "train.ckpt_every=2", "train.threads=1"]
    assert "blur_curriculum" not in resolve("demo", overrides=base).to_dict()["data"]
    cfg = resolve("demo", overrides=[*base, "data.blur_curriculum=2", f"train.out_dir={tmp_path}"])
    assert cfg.to_dict()["data"]["blur_curriculum"] == 2
    train.run(cfg)
    stored = train.TrainConfig.from_dict(cfg.to_dict(), "run")
    assert stored.data.blur_curriculum == 2 and "blur_curriculum = 2" in (tmp_path / "config.toml").read_text()
