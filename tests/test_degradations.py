"""Statistical and structural tests of the synthetic degradation models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dfpir.degradations as D


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(batch: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0.1, 0.9]: texture to blur, not white noise."""
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=gen(seed))
    return 0.1 + 0.8 * F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- registry


def test_every_row_of_the_registry_is_complete():
    assert D.synthetic_names() == list(D.DEGRADATIONS)  # the seven built-in types all have a generator
    assert D.noise_names() == ["noise15", "noise25", "noise50"]
    for name, row in D.DEGRADATIONS.items():
        assert row.name == name and row.detailed and row.simple and row.official_id is not None
    for name in D.noise_names():  # the sigma in the name is the generator's sigma
        assert D.get_degradation(name).sigma == float(name.removeprefix("noise"))
        assert D.synthesizer(name).keywords["sigma"] == D.get_degradation(name).sigma


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="known: noise15, noise25"):
        D.synthesizer("snow")
    with pytest.raises(ValueError, match="unknown degradation 'snow'"):
        D.degrade(textured(1), ["snow"], gen())


@pytest.mark.parametrize("name", D.synthetic_names())
def test_shape_range_and_determinism(name):
    x = textured(3, 48)
    a = D.synthesizer(name)(x, gen(7))
    b = D.synthesizer(name)(x, gen(7))
    c = D.synthesizer(name)(x, gen(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, b), "same seed must give the same degradation"
    assert not torch.equal(a, c), "another seed must give another degradation"
    assert float((a - x).abs().mean()) > 1e-3, "the degradation must change the image"


@pytest.mark.parametrize("bad", [torch.rand(3, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)])
def test_bad_batches_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        D.gaussian_noise(bad, gen())


def test_degrade_routes_each_sample_to_its_own_model():
    x = torch.full((6, 3, 64, 64), 0.5)
    names = ["noise15", "noise50", "noise15", "noise50", "noise25", "noise25"]
    y = D.degrade(x, names, gen(1))
    stds = (y - x).std(dim=(1, 2, 3)) * 255
    for s, n in zip(stds.tolist(), names):
        assert abs(s - D.get_degradation(n).sigma) < 0.1 * D.get_degradation(n).sigma, (n, s)
    assert torch.equal(y, D.degrade(x, names, gen(1)))


def test_degrade_of_one_name_equals_the_model_itself():
    x = textured(3, 32)
    assert torch.equal(D.degrade(x, ["haze"] * 3, gen(4)), D.synthesizer("haze")(x, gen(4)))


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_noise_std_matches_sigma(sigma):
    x = torch.full((2, 3, 128, 128), 0.5)  # mid-grey: clipping is negligible up to sigma 50
    noise = (D.gaussian_noise(x, gen(), sigma=sigma) - x) * 255
    assert abs(float(noise.std()) - sigma) < 0.02 * sigma
    assert abs(float(noise.mean())) < 0.02 * sigma


def test_noise_sigma_range_is_per_sample():
    x = torch.full((8, 3, 64, 64), 0.5)
    stds = ((D.gaussian_noise(x, gen(), sigma=(5.0, 45.0)) - x) * 255).std(dim=(1, 2, 3))
    assert float(stds.min()) > 4.5 and float(stds.max()) < 47
    assert float(stds.max() - stds.min()) > 5, "each sample must draw its own sigma"


def test_original_uint8_formula_is_exact():
    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    expected = np.clip(image + np.random.RandomState(3).randn(*image.shape) * 25, 0, 255).astype(np.uint8)
    assert np.array_equal(D.gaussian_noise_uint8(image, 25, np.random.RandomState(3)), expected)
    np.random.seed(3)  # None means the global stream, as the original's np.random.randn
    assert np.array_equal(D.gaussian_noise_uint8(image, 25), expected)


def test_quantized_noise_follows_the_truncating_formula():
    x = torch.full((1, 3, 128, 128), 100 / 255)
    y = D.gaussian_noise(x, gen(), sigma=25.0, quantize=True) * 255
    assert torch.equal(y, torch.round(y)), "values must be 8-bit levels"
    # Truncation lowers the mean by about half a level compared with the clean value.
    assert -0.8 < float(y.mean()) - 100 < -0.2


# --------------------------------------------------------------------------- blur


def test_blur_kernels_sum_to_one_and_are_not_trivial():
    k = D.blur_kernels(32, gen(), length=(4.0, 24.0))
    assert k.shape[-1] % 2 == 1
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(32), atol=1e-5)
    assert float(k.min()) >= 0
    assert float(k.amax(dim=(1, 2)).max()) < 0.5, "a kernel concentrated on one pixel is no blur"
    support = (k > 1e-3).sum(dim=(1, 2)).float()
    assert float(support.min()) >= 4
    assert float(support.max()) > 2 * float(support.min()), "kernel sizes must vary"


def test_blur_kernels_are_centred():
    k = D.blur_kernels(16, gen(2), length=12.0)
    r = torch.arange(k.shape[-1], dtype=torch.float32) - k.shape[-1] // 2
    cy = (k.sum(dim=2) * r).sum(dim=1)
    cx = (k.sum(dim=1) * r).sum(dim=1)
    assert float(cx.abs().max()) < 1.0 and float(cy.abs().max()) < 1.0, "blur must not shift the image"


def test_filter2d_is_a_true_convolution_with_reflect_padding():
    imgs = torch.rand(3, 2, 20, 26, generator=gen())
    k = torch.rand(3, 7, 7, generator=gen(1))
    out = D.filter2d(imgs, k)
    padded = F.pad(imgs.reshape(1, 6, 20, 26), (3, 3, 3, 3), mode="reflect")
    ref = F.conv2d(padded, k.flip(-1, -2).repeat_interleave(2, 0)[:, None], groups=6).reshape(3, 2, 20, 26)
    assert torch.allclose(out, ref, atol=1e-5)


def test_filter2d_delta_is_identity():
    imgs = torch.rand(2, 3, 16, 16, generator=gen())
    delta = torch.zeros(2, 5, 5)
    delta[:, 2, 2] = 1
    assert torch.allclose(D.filter2d(imgs, delta), imgs, atol=1e-5)


def test_motion_blur_smooths_and_keeps_flat_images():
    x = textured(4, 64)
    y = D.motion_blur(x, gen(), length=(8.0, 16.0))

    def grad_energy(t: torch.Tensor) -> float:
        return float((t[..., 1:, :] - t[..., :-1, :]).pow(2).mean() + (t[..., :, 1:] - t[..., :, :-1]).pow(2).mean())

    assert grad_energy(y) < 0.8 * grad_energy(x)
    flat = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(D.motion_blur(flat, gen()), flat, atol=1e-5)


# --------------------------------------------------------------------------- haze


def test_haze_transmission_in_range_and_decreasing_with_depth():
    x = textured(4, 64)
    _, t, depth = D.haze(x, gen(), return_maps=True)
    assert float(t.min()) > 0 and float(t.max()) <= 1
    assert float(depth.min()) == 0 and abs(float(depth.max()) - 1) < 1e-6
    for b in range(4):
        order = torch.argsort(depth[b].flatten())
        assert bool((torch.diff(t[b].flatten()[order]) <= 1e-6).all()), "t must not increase with depth"


def high_pass(x: torch.Tensor) -> torch.Tensor:
    return (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)).abs().mean(dim=1)


def test_haze_brighter_and_flatter_far_away():
    x = textured(4, 64) * 0.5  # darker than any airlight
    hazy, _, depth = D.haze(x, gen(3), return_maps=True)
    for b in range(4):
        d = depth[b, 0]
        near, far = d < torch.quantile(d, 0.25), d > torch.quantile(d, 0.75)
        lum = hazy[b].mean(dim=0)
        assert float(lum[far].mean()) > float(lum[near].mean()), "far must be brighter"
        # Local contrast is scaled by t: what is left of the clean texture shrinks with depth.
        kept = high_pass(hazy[b : b + 1])[0] / high_pass(x[b : b + 1])[0].clamp_min(1e-4)
        assert float(kept[far].median()) < float(kept[near].median()), "far must be flatter"


def test_haze_matches_scattering_model():
    x = textured(2, 32)
    hazy, t, _ = D.haze(x, gen(5), airlight=0.9, tint=0.0, return_maps=True)
    assert torch.allclose(hazy, (x * t + 0.9 * (1 - t)).clamp(0, 1), atol=1e-6)


# --------------------------------------------------------------------------- low light


def test_low_light_reduces_the_mean():
    x = textured(4, 64)
    y = D.low_light(x, gen())
    assert float(y.mean()) < 0.5 * float(x.mean())


def test_low_light_noise_is_signal_dependent_poisson_gaussian():
    levels = torch.tensor([0.3, 0.9])
    x = levels[:, None, None, None].expand(2, 3, 128, 128).contiguous()
    gain, gamma, photons, read = 0.2, 1.5, 400.0, 0.005
    y = D.low_light(x, gen(), gain=gain, gamma=gamma, photons=photons, read_noise=read)
    mean = gain * levels**gamma
    var = y.var(dim=(1, 2, 3))
    expected = mean / photons + read**2
    assert torch.allclose(y.mean(dim=(1, 2, 3)), mean, rtol=0.03)
    assert torch.allclose(var, expected, rtol=0.1), (var, expected)
    assert float(var[1]) > 2 * float(var[0]), "brighter pixels must be noisier"


# --------------------------------------------------------------------------- rain


def directional_energy(r: torch.Tensor, dx: int, dy: int) -> float:
    """Mean squared difference between pixels one step (dx, dy) apart."""
    h, w = r.shape[-2:]
    a = r[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    b = r[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return float((a - b).pow(2).mean())


@pytest.mark.parametrize("angle, along, across", [(0.0, (0, 1), (1, 0)), (45.0, (1, 1), (-1, 1)), (-45.0, (-1, 1), (1, 1))])
def test_rain_streaks_are_oriented(angle, along, across):
    x = torch.zeros(2, 3, 96, 96)
    y = D.rain_streaks(x, gen(), angle=angle, width=1.5, length=20.0)
    assert float(y.min()) >= 0 and float(y.mean()) > 0.005
    ratio = directional_energy(y, *across) / directional_energy(y, *along)
    assert ratio > 3, f"streaks at {angle} degrees: across/along gradient energy {ratio:.2f}"


def test_rain_only_brightens():
    x = textured(2, 64)
    y = D.rain_streaks(x, gen())
    assert float((y - x).min()) >= -1e-6
    assert float((y - x).max()) > 0.3


def test_rain_density_controls_coverage():
    x = torch.zeros(2, 3, 96, 96)
    light = float(D.rain_streaks(x, gen(), density=0.002).mean())
    heavy = float(D.rain_streaks(x, gen(), density=0.01).mean())
    assert heavy > 2.5 * light


# --------------------------------------------------------------------------- devices


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", D.synthetic_names())
def test_cpu_generator_gives_the_same_result_on_gpu(name):
    x = textured(2, 48)
    cpu = D.synthesizer(name)(x, gen(9))
    gpu = D.synthesizer(name)(x.cuda(), gen(9))
    assert gpu.is_cuda
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)
