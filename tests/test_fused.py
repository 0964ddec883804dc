"""The fused strip kernels (dfpir.model.fused): what the reference oracle does not check.

Each kernel against the NumPy reference, in float64 and float32, is a registry row's fused twin
(``tests/reference_registry.py``, run by ``test_reference_equivalence.py``). Here: the fused model
against the plain one on any size and strip height, memory layouts, the switch, the strips and
their halos, oneDNN's post-ops, zero-padded channels, views, and half precision.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dfpir
import dfpir.model.fused as fused
from dfpir.model.perturbation import ChannelPerturbation
from dfpir.inference.speed import prepare
from .reference_registry import perturbed_state


def model_with(seed: int = 0, dtype=torch.float32, **overrides) -> dfpir.DFPIR:
    """A small DFPIR whose every parameter is moved off its initial value."""
    cfg = dfpir.get_config("tiny", dim=8, prompt_dim=16, **overrides)
    model = dfpir.DFPIR(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in perturbed_state(model, seed, scale=0.1).items()})
    return model.to(dtype).eval()


def run(model: dfpir.DFPIR, image: torch.Tensor, prompt: torch.Tensor, on: bool) -> torch.Tensor:
    model.set_fused(on)
    with torch.no_grad():
        return model(image, prompt)


@pytest.fixture
def small_strips(monkeypatch):
    """Strips of a few rows, so that every block runs several strips and their halos."""
    monkeypatch.setattr(fused, "STRIP_BYTES", 4 * 8 * 16 * 3)


@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    batch=st.integers(1, 2),
    strip_bytes=st.sampled_from([1, 600, 3000, 2**30]),
    seed=st.integers(0, 3),
)
def test_fused_matches_plain_on_any_size_and_strip(h, w, batch, strip_bytes, seed):
    model = model_with(seed)
    image = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
    prompt = torch.randn(batch, 16, generator=torch.Generator().manual_seed(seed + 1))  # one prompt each
    plain = run(model, image, prompt, False)
    saved, fused.STRIP_BYTES = fused.STRIP_BYTES, strip_bytes
    try:
        out = run(model, image, prompt, True)
    finally:
        fused.STRIP_BYTES = saved
    err = (out - plain).abs().max().item()
    assert err < 1e-5, f"max abs diff {err:.3g}"


def test_fused_variant_matches_plain_on_channels_first_and_last_input(small_strips):
    model = model_with(3)
    image, prompt = torch.rand(1, 3, 24, 32), torch.randn(1, 16)
    plain = run(model, image, prompt, False)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = run(model.to(memory_format=layout), image.contiguous(memory_format=layout), prompt, True)
        assert (out - plain).abs().max().item() < 1e-5


def test_fused_kernels_are_not_used_when_gradients_are_recorded(monkeypatch):
    model = model_with(4)
    model.set_fused()
    for kernel in ("gdfn_", "mdta", "masked_cross_attention", "perturbation"):
        monkeypatch.setattr(fused, kernel, lambda *a: pytest.fail("fused kernel used under autograd"))
    out = model(torch.rand(1, 3, 16, 16), torch.randn(1, 16))
    out.sum().backward()
    assert model.embed.weight.grad is not None


def count_kernel_calls(monkeypatch) -> dict[str, int]:
    """Count the calls of the strip kernels (still running them)."""
    calls: dict[str, int] = {}
    for kernel in ("gdfn_", "mdta", "masked_cross_attention", "perturbation"):
        original = getattr(fused, kernel)

        def counted(*args, _name=kernel, _original=original):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)

        monkeypatch.setattr(fused, kernel, counted)
    return calls


def test_the_plain_call_is_fused_by_default_in_eval_mode_on_the_cpu(monkeypatch):
    model = model_with(6)  # never switched: the default
    image, prompt = torch.rand(1, 3, 24, 16), torch.randn(1, 16)
    plain = run(model, image, prompt, False)
    model.set_fused(None)
    calls = count_kernel_calls(monkeypatch)
    with torch.no_grad():
        out = model(image, prompt)
    assert calls.get("gdfn_", 0) > 0 and calls.get("masked_cross_attention", 0) == 4  # every block, every DGPB
    assert (out - plain).abs().max().item() < 1e-5
    calls.clear()
    assert (model.restore(image, "noise25") - run(model, image, model.embed_prompts("noise25", 1), False)).abs().max() < 1e-5


@pytest.mark.parametrize("case", ["grad", "train", "autocast", "forced_off"])
def test_the_default_stays_plain_where_the_kernels_do_not_apply(case, monkeypatch):
    model = model_with(7)
    model.set_fused(False if case == "forced_off" else None)
    if case == "train":
        model.train()
    calls = count_kernel_calls(monkeypatch)
    image, prompt = torch.rand(1, 3, 16, 16), torch.randn(1, 16)
    if case == "grad":
        model(image, prompt).sum().backward()
    elif case == "autocast":
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(image, prompt)
    else:
        with torch.no_grad():
            model(image, prompt)
    assert calls == {}


def test_prepare_switches_the_fused_kernels_on_and_off():
    model = model_with(5)
    prepare(model, "fused")
    assert all(b.fused for b in model.modules() if hasattr(b, "fused"))
    prepare(model, "fast")
    assert all(b.fused is False for b in model.modules() if hasattr(b, "fused"))


@pytest.mark.parametrize("height, rows", [(1, 4), (7, 3), (12, 4), (13, 5)])
def test_strips_cover_every_row_once_with_a_one_row_halo(height, rows):
    seen = []
    for r0, r1, a, b, keep in fused.strips(height, rows):
        assert a == max(r0 - 1, 0) and b == min(r1 + 1, height)
        assert list(range(a, b))[keep] == list(range(r0, r1))
        seen += range(r0, r1)
    assert seen == list(range(height))


@given(width=st.integers(1, 300), channels=st.integers(1, 600), height=st.integers(1, 600), strip_bytes=st.integers(1, 2**26))
def test_strip_rows_split_the_height_into_equal_strips_near_the_byte_target(width, channels, height, strip_bytes):
    saved, fused.STRIP_BYTES = fused.STRIP_BYTES, strip_bytes
    try:
        rows = fused.strip_rows(width, channels, height)
    finally:
        fused.STRIP_BYTES = saved
    target = max(4, strip_bytes // (4 * channels * width))
    count = -(-height // rows)
    assert 1 <= rows <= min(target, height)
    assert count == -(-height // target)  # as few strips as the target allows
    assert height - (count - 1) * rows > rows - count  # the last strip is at most count - 1 rows shorter


@pytest.mark.skipif(not fused.POSTOPS, reason="this torch build has no oneDNN fused convolutions")
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    batch=st.integers(1, 2),
    strip_bytes=st.sampled_from([1, 3000, 2**30]),
    seed=st.integers(0, 3),
)
def test_onednn_post_ops_match_the_plain_operators(h, w, batch, strip_bytes, seed):
    model = model_with(seed).to(memory_format=torch.channels_last)
    image = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed)).contiguous(memory_format=torch.channels_last)
    prompt = torch.randn(batch, 16, generator=torch.Generator().manual_seed(seed + 1))
    plain = run(model, image, prompt, False)
    fuse_flags = []
    saved = fused.STRIP_BYTES, fused.POSTOPS, fused.gated_dwconv
    fused.STRIP_BYTES = strip_bytes

    def recording(*args):
        fuse_flags.append(args[-1])
        return saved[2](*args)

    fused.gated_dwconv = recording
    try:
        with_postops = run(model, image, prompt, True)
        fused.POSTOPS = False
        without = run(model, image, prompt, True)
    finally:
        fused.STRIP_BYTES, fused.POSTOPS, fused.gated_dwconv = saved
    n = len(fuse_flags) // 2
    assert n > 0 and all(fuse_flags[:n]) and not any(fuse_flags[n:])
    for out in (with_postops, without):
        err = (out - plain).abs().max().item()
        assert err < 1e-5, f"max abs diff {err:.3g}"


def test_post_ops_only_for_float32_channels_last_cpu_tensors():
    x = torch.rand(1, 4, 5, 6)
    assert not fused.postops(x)
    assert fused.postops(x.contiguous(memory_format=torch.channels_last)) == fused.POSTOPS
    assert not fused.postops(x.double().contiguous(memory_format=torch.channels_last))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.postops(x.contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("expansion", [2.0, 2.66, 3.0])
def test_gdfn_with_zero_padded_hidden_channels_equals_the_module(expansion):
    from dfpir.model.feedforward import GDFN
    from dfpir.model.layernorm import LayerNorm

    torch.manual_seed(0)
    ffn, norm = GDFN(8, expansion, bias=True).double(), LayerNorm(8, "WithBias").double()
    hidden = ffn.project_out.weight.shape[1]
    first, _, (w_out, _) = fused.gdfn_weights(ffn)
    assert first[0].shape[0] == w_out.shape[1] == fused.aligned(hidden) and fused.aligned(hidden) % fused.CHANNEL_ALIGN == 0
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused.gdfn_(norm, ffn, x.clone()), x + ffn(norm(x)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("heads", [1, 2])
def test_q_and_k_reach_the_gram_product_as_views_of_the_strip(heads):
    """q and k are channel slices of one channels-last convolution output; copying them would
    cost a pass over the strip."""
    qk = torch.rand(2, 8, 3, 5).contiguous(memory_format=torch.channels_last)
    q, k = qk[:, :4], qk[:, 4:]
    for t, offset in ((q, 0), (k, 4)):
        x = fused.per_head(t, heads)
        assert x.shape == (2, heads, 15, 4 // heads) and x.data_ptr() == qk.data_ptr() + offset * qk.element_size()
        assert torch.equal(x.transpose(1, 2).flatten(2), t.permute(0, 2, 3, 1).reshape(2, 15, 4))


def test_perturbation_as_one_matrix_equals_the_learnable_module():
    """The learnable mode's straight-through gate is 1 forward; the faithful mode is a registry row."""
    torch.manual_seed(0)
    module = ChannelPerturbation(6, 16, "learnable").double()
    x, prompt = torch.randn(3, 6, 5, 4, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused.perturbation(module, x, prompt), module(x, prompt))


def test_gram_of_half_precision_features_is_summed_in_float32():
    q = torch.full((1, 2, 64, 64), 8.0, dtype=torch.bfloat16)  # squared norm 262144: 8 bits of bf16 lose it
    gram = fused.new_gram(q, 2, 1)
    fused.accumulate_gram(gram, q, q.clone(), 1)
    cross, squares = gram
    assert cross.dtype == squares.dtype == torch.float32
    assert torch.all(cross == 64.0 * 64 * 64) and torch.all(squares == 64.0 * 64 * 64)


@pytest.mark.parametrize("how", ["cast", "autocast"])
def test_bfloat16_fused_is_as_accurate_as_plain_bfloat16(small_strips, how):
    """In bf16 both paths round differently at every layer; the fused one must not be worse, with
    the network cast to bf16 or under autocast (what ``--precision bf16`` runs)."""
    torch.manual_seed(0)
    model = dfpir.DFPIR(dfpir.get_config("tiny")).eval()
    image = torch.rand(2, 3, 24, 20)
    prompt = model.embed_prompts(["rain", "haze"])
    exact = run(model, image, prompt, False)
    if how == "cast":
        model, image, prompt = model.to(torch.bfloat16), image.to(torch.bfloat16), prompt.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=how == "autocast"):
        err_fused = (run(model, image, prompt, True).float() - exact).abs().max().item()
        err_plain = (run(model, image, prompt, False).float() - exact).abs().max().item()
    assert 0 < err_plain and err_fused <= 1.5 * err_plain + 1e-3, (err_fused, err_plain)
