"""Properties of the reference (and the model) beyond "equals the other side", plus the
whole-model checks: the official fixture, float64 agreement, any H x W, no torch import."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dfpir
import reference

from .helpers import load_fixture
from .reference_registry import perturbed_state, seeds, side, values

subset = pytest.mark.reference_subset


@subset
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), seeds)
def test_unshuffle_then_shuffle_is_identity(r, c, h, w, seed):
    x = values(seed, (2, c, r * h, r * w))
    assert np.array_equal(reference.pixel_shuffle(reference.pixel_unshuffle(x, r), r), x)


@subset
@given(st.integers(1, 2), st.integers(1, 16), st.sampled_from(["normal", "integers"]), seeds)
def test_perturbation_is_a_permutation_and_inverse_restores(b, n, kind, seed):
    order = reference.channel_order(values(seed, (b, n), kind))
    assert (np.sort(order, axis=-1) == np.arange(n)).all()
    x = values(seed + 1, (b, n, 3, 2))
    y = reference.channel_perturbation(x, order)
    assert np.array_equal(reference.channel_perturbation(y, reference.inverse_order(order)), x)


@subset
@given(st.integers(1, 12), st.sampled_from(["normal", "integers"]), seeds, st.data())
def test_masked_rows_sum_to_one_with_exact_zeros(c, kind, seed, data):
    k = data.draw(st.integers(1, c))
    logits = values(seed, (2, 3, c, c), kind)
    p = reference.masked_softmax(logits, k)
    mask = reference.topk_mask(logits, k)
    assert (mask.sum(-1) == k).all()
    assert (p[~mask] == 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)


@subset
@given(st.integers(1, 5), st.integers(1, 5), side, side, seeds)
def test_conv1x1_equals_einsum(c_in, c_out, h, w, seed):
    x, wt = values(seed, (2, c_in, h, w)), values(seed + 1, (c_out, c_in, 1, 1))
    np.testing.assert_allclose(reference.conv2d(x, wt), np.einsum("oc,bchw->bohw", wt[:, :, 0, 0], x), rtol=1e-12, atol=1e-12)


@subset
@given(st.integers(1, 4), st.integers(3, 6), st.integers(3, 6), seeds)
def test_depthwise_delta_kernel_is_identity_away_from_border(c, h, w, seed):
    x = values(seed, (1, c, h, w))
    delta = np.zeros((c, 1, 3, 3))
    delta[:, 0, 1, 1] = 1.0
    assert np.array_equal(reference.conv2d(x, delta, groups=c)[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1])


@subset
@given(st.integers(1, 3), st.integers(1, 4), side, side, seeds)
def test_transposed_attention_is_pixel_permutation_equivariant(heads, c, h, w, seed):
    q, k, v = (values(seed + i, (1, heads, c, h * w)) for i in range(3))
    t = 1 + values(seed + 5, (heads, 1, 1), scale=0.3)
    perm = np.random.default_rng(seed).permutation(h * w)
    out = reference.transposed_attention(q, k, v, t)
    permuted = reference.transposed_attention(q[..., perm], k[..., perm], v[..., perm], t)
    np.testing.assert_allclose(permuted, out[..., perm], rtol=1e-12, atol=1e-12)


def _tiny(seed: int = 0, **overrides) -> tuple[dfpir.DFPIR, dict]:
    cfg = dfpir.get_config("tiny", dim=4, prompt_dim=16, **overrides)
    model = dfpir.DFPIR(cfg)
    params = perturbed_state(model, seed, scale=0.1)
    model.load_state_dict({k: torch.from_numpy(v).float() for k, v in params.items()})
    return model.eval(), params


@subset
@pytest.mark.parametrize("hw", [(1, 1), (5, 3), (8, 8), (9, 17), (16, 7)])
def test_any_size_is_restored_at_its_own_size(hw):
    model, params = _tiny()
    image = np.random.default_rng(1).random((2, 3, *hw))
    prompt = values(2, (2, 16))
    out = reference.dfpir_forward(params, image, prompt, dataclasses.asdict(model.config))
    assert out.shape == image.shape and out.dtype == np.float64
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(image), torch.from_numpy(prompt)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_official_fixture_float32():
    """The reference reproduces the original code's output (via dfpir.from_official) to 1e-5."""
    fx = load_fixture()
    model = dfpir.from_official(fx["state_dict"], **fx["kwargs"])
    params = {k: v.numpy() for k, v in model.state_dict().items()}
    config = dataclasses.asdict(model.config)
    out = reference.dfpir_forward(params, fx["input"], fx["text_code"], config)
    assert out.dtype == np.float32
    err = float(np.abs(out - fx["output"]).max())
    assert err <= 1e-5, f"fixture: max abs err {err:.3e} > 1e-5"
    for name, level in [("encoder_shuffle_channel1", 1), ("encoder_shuffle_channel2", 2),
                        ("encoder_shuffle_channel3", 3), ("latent_shuffle_channel", 4)]:
        scores = reference.dgm(fx["text_code"], params, f"dgpb{level}.perturb.dgm.")
        assert np.array_equal(reference.channel_order(scores), fx["order"][name]), name


def test_official_fixture_float64_against_model():
    fx = load_fixture()
    model = dfpir.from_official(fx["state_dict"], **fx["kwargs"]).double()
    params = {k: v.numpy() for k, v in model.state_dict().items()}
    image, prompt = fx["input"].astype(np.float64), fx["text_code"].astype(np.float64)
    out = reference.dfpir_forward(params, image, prompt, dataclasses.asdict(model.config))
    with torch.no_grad():
        expected = model(torch.from_numpy(image), torch.from_numpy(prompt)).numpy()
    err = float(np.abs(out - expected).max())
    assert err <= 1e-10, f"float64: max abs err {err:.3e}"


@pytest.mark.parametrize("overrides", [dict(use_dgpb=False), dict(bias=True, layernorm_type="BiasFree")],
                         ids=["restormer", "bias-biasfree"])
def test_variants_float64(overrides):
    model, params = _tiny(3, **overrides)
    image, prompt = np.random.default_rng(4).random((2, 3, 12, 10)), values(5, (2, 16))
    out = reference.dfpir_forward(params, image, None if not model.config.use_dgpb else prompt,
                                  dataclasses.asdict(model.config))
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(image), torch.from_numpy(prompt)).numpy()
    assert float(np.abs(out - expected).max()) <= 1e-10


def test_reference_never_imports_torch():
    code = "import sys, reference; reference.pixel_shuffle; assert 'torch' not in sys.modules, 'torch'; " \
           "assert 'dfpir' not in sys.modules, 'dfpir'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("fast_path", ["float32", "channels_last", "bf16_autocast"])
def test_cuda_fast_paths_against_reference(fast_path):
    """The model on the GPU (its fast paths at their own tolerances) against the float64 reference."""
    model, params = _tiny(6)
    image, prompt = np.random.default_rng(7).random((2, 3, 24, 24)), values(8, (2, 16))
    ref = reference.dfpir_forward(params, image, prompt, dataclasses.asdict(model.config))
    model = model.cuda()
    x, p = torch.from_numpy(image).float().cuda(), torch.from_numpy(prompt).float().cuda()
    tol = {"float32": 1e-4, "channels_last": 1e-4, "bf16_autocast": 1e-1}[fast_path]  # bf16: 8-bit mantissa
    with torch.no_grad():
        if fast_path == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        if fast_path == "bf16_autocast":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x, p)
        else:
            out = model(x, p)
    err = float(np.abs(out.float().cpu().numpy() - ref).max())
    assert err <= tol, f"{fast_path}: max abs err {err:.3e} > {tol}"


@subset
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), seeds, st.sampled_from(["normal", "integers"]))
def test_loop_twins_match_vectorised(heads, c, h, w, seed, kind):
    """The loop kernels (pure Python under NUMBA_DISABLE_JIT=1) against the vectorised versions."""
    x = values(seed, (1, heads * c, h, w), kind)
    wd, w3 = values(seed + 1, (heads * c, 1, 3, 3)), values(seed + 2, (2, heads * c, 3, 3))
    close = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(reference.conv2d_loop(x, wd, groups=heads * c), reference.conv2d(x, wd, groups=heads * c), **close)
    np.testing.assert_allclose(reference.conv2d_loop(x, w3), reference.conv2d(x, w3), **close)
    np.testing.assert_allclose(reference.layer_norm_loop(x, x[0, :, 0, 0], None), reference.layer_norm(x, x[0, :, 0, 0], None), **close)
    q, k, v = (values(seed + i, (1, heads, c, h * w)) for i in range(3))
    t = np.ones((heads, 1, 1))
    np.testing.assert_allclose(reference.transposed_attention_loop(q, k, v, t), reference.transposed_attention(q, k, v, t), **close)
    logits = values(seed, (heads, c, c), kind)
    kept = reference.kept_per_row(c)
    assert np.array_equal(reference.topk_mask_loop(logits, kept), reference.topk_mask(logits, kept))
    assert np.array_equal(reference.channel_order_loop(logits[0]), reference.channel_order(logits[0]))
