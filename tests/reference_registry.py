"""The registry of operation pairs: every public function of ``reference`` beside its PyTorch twin.

One row per operation (PyTorch OpInfo style): the reference function, the PyTorch function (or a
thin adapter with the *same signature* that builds the module from the same state dict), the
Hypothesis strategy that draws a whole consistent case, whether the result must match exactly,
the tolerance with its reason, the loop twin, and whether ``gradcheck`` applies.

A row whose operation has a fused inference kernel (:mod:`dfpir.model.fused`) names it as its
``fused`` twin, an adapter with the same signature again: the generic tests run the row a second
time through the twin, against the same reference and the same tolerances.
The generic tests live in ``test_reference_equivalence.py``.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import dfpir
import reference
import dfpir.model.attention as t_attn
import dfpir.model.fused as fused
import dfpir.model.masked_attention as t_masked
import dfpir.model.network as t_net
import dfpir.model.perturbation as t_perturb
from dfpir.model.attention import MDTA
from dfpir.model.dgpb import DGPB
from dfpir.model.feedforward import GDFN, hidden_width as t_hidden_width
from dfpir.model.layernorm import layer_norm as t_layer_norm
from dfpir.model.masked_attention import MaskedCrossAttention
from dfpir.model.perturbation import DGM, ChannelPerturbation
from dfpir.model.transformer import Downsample, TransformerBlock, Upsample
from reference.margins import decision_margins

# ---------------------------------------------------------------------------------------------
# Tolerance policy (the only place tolerances are set)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tol:
    """``|actual - expected| <= atol + rtol * |expected|`` element-wise."""

    rtol: float
    atol: float
    reason: str


TOLERANCE = {
    # semantics: reference float64 vs PyTorch float64. Only summation order differs, so errors
    # are a few ulps of float64 times the depth of the computation.
    "float64": Tol(1e-10, 1e-10, "float64 vs float64: only summation order differs"),
    # numerics: PyTorch float32 (and reference float32) vs reference float64. float32 eps is
    # 1.2e-7; reductions over up to a few hundred terms and normalisations lose ~2 digits.
    "float32": Tol(2e-5, 2e-5, "float32 vs float64: float32 rounding in reductions of <= a few hundred terms"),
}
# Below this relative gap a discrete decision (sort, top-k boundary) may legitimately flip
# between float32 and float64 (float32 resolution ~1.2e-7 times error growth); such examples
# are set aside and counted, never compared with a looser tolerance.
NEAR_TIE = {"float32": 1e-4, "float64": 1e-9}
# gradcheck perturbs inputs by 1e-6; a top-k boundary closer than this makes it non-smooth.
GRAD_NEAR_TIE = 1e-3


def tolerance(dtype: str, factor: float = 1.0) -> Tol:
    """The policy's tolerance for ``dtype``, scaled by a row's documented ``factor``."""
    t = TOLERANCE[dtype]
    return Tol(t.rtol * factor, t.atol * factor, t.reason)


# ---------------------------------------------------------------------------------------------
# Cases and rows
# ---------------------------------------------------------------------------------------------


class Case:
    """One drawn example: positional arguments (float arrays in float64) and their description.

    ``exact_inputs`` is true when the decisions (sort, top-k) are taken directly on inputs that
    are exactly representable in float32: float32 then decides exactly as float64 does.
    The repr is the drawn configuration (seeds included), a compact reproduction.
    """

    def __init__(self, config: dict, args: tuple, exact_inputs: bool = False) -> None:
        self.config, self.args, self.exact_inputs = config, args, exact_inputs

    def __repr__(self) -> str:
        return f"Case({self.config})"


@dataclass(frozen=True, kw_only=True)
class OpRow:
    """One registry row; see the module docstring. Keyword-only: each row reads as ``field=value``."""

    name: str
    ref: Callable
    torch_fn: Callable
    strategy: st.SearchStrategy
    exact: bool
    reason: str
    fused: Optional[Callable] = None  # the same op through dfpir.model.fused, torch_fn's signature
    loop: Optional[Callable] = None
    gradcheck: bool = False
    f32_factor: float = 1.0  # multiplies the float32 tolerance (reason in ``reason``)
    decisions: bool = False  # makes sort / top-k decisions on computed values (near-tie check)
    conditioning: bool = True  # set aside ill-conditioned float32 examples (approximate rows only)
    grad_ok: Optional[Callable] = None  # case -> bool: is the PyTorch op smooth at this input?
    # case -> float: the smallest gap at a decision that gradcheck's 1e-6 steps must not cross;
    # default: the reference's recorded decision margins (``Margins.any``)
    grad_margin: Optional[Callable] = None
    cost: int = 1  # the row runs max_examples // cost examples (at least 3): keeps CI in budget
    grad_args: tuple = field(default=(0,))  # positional args that gradcheck differentiates


def cast(obj: Any, dtype: np.dtype) -> Any:
    """Float arrays (also inside dicts) to ``dtype``; everything else unchanged."""
    if isinstance(obj, np.ndarray) and np.issubdtype(obj.dtype, np.floating):
        return obj.astype(dtype)
    if isinstance(obj, dict):
        return {k: cast(v, dtype) for k, v in obj.items()}
    return obj


def to_torch(obj: Any, dtype: torch.dtype, device: str) -> Any:
    """NumPy arrays (also inside dicts) to tensors; floats get ``dtype``."""
    if isinstance(obj, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(obj)).to(device)
        return t.to(dtype) if t.is_floating_point() else t
    if isinstance(obj, dict):
        return {k: to_torch(v, dtype, device) for k, v in obj.items()}
    return obj


def to_numpy(obj: Any) -> Any:
    """Tensors to float64/bool/int NumPy arrays; other values unchanged."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return obj.double().numpy() if obj.is_floating_point() else obj.numpy()
    return obj


@dataclass(frozen=True)
class Margins:
    """Smallest relative gap at any decision: ``positive`` ignores exact ties (settled by the tie
    rule, identical in every precision), ``any`` includes them (for gradcheck)."""

    positive: float = math.inf
    any: float = math.inf


def run_reference(fn: Callable, case: Case, dtype: np.dtype) -> tuple[Any, Margins]:
    """Call a reference function on the case cast to ``dtype``; also return its decision margins."""
    with decision_margins() as recorded:
        out = fn(*(cast(a, dtype) for a in case.args))
    gaps = np.concatenate(recorded) if recorded else np.zeros(0)
    pos = gaps[gaps > 0]
    return out, Margins(float(pos.min()) if pos.size else math.inf, float(gaps.min()) if gaps.size else math.inf)


def jitter(obj: Any, seed: int, rel: float) -> Any:
    """Float arrays (also inside dicts) multiplied by ``1 + rel * u``, u uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)

    def one(a):
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
            return a * (1 + rel * rng.uniform(-1, 1, a.shape))
        if isinstance(a, dict):
            return {k: one(v) for k, v in a.items()}
        return a

    return one(obj)


def float32_sensitivity(fn: Callable, case: Case, out64: np.ndarray) -> float:
    """How much the float64 output moves when every float input moves by float32's unit roundoff.

    An estimate of the error float32 arithmetic cannot avoid on this example (its conditioning),
    used to set aside ill-conditioned examples (e.g. a LayerNorm over 2 nearly equal channels
    divides by sqrt(var + 1e-5) ~ 3e-3) instead of loosening the tolerance for all.
    """
    moved = fn(*jitter(case.args, 12345, 2.0**-24))
    return float(np.abs(moved - out64).max())


def run_torch(fn: Callable, case: Case, dtype: torch.dtype, device: str) -> Any:
    """Call a PyTorch function on the case as tensors; returns NumPy."""
    with torch.no_grad():
        return to_numpy(fn(*(to_torch(a, dtype, device) for a in case.args)))


# ---------------------------------------------------------------------------------------------
# Value generation
# ---------------------------------------------------------------------------------------------

VALUE_KINDS = ("normal", "integers")


def values(seed: int, shape: tuple, kind: str = "normal", scale: float = 1.0) -> np.ndarray:
    """float64 array, exactly representable in float32 (so casting inputs loses nothing).

    ``"integers"`` draws small integers in [-3, 3]: many exact ties and zeros.
    """
    rng = np.random.default_rng(seed)
    if kind == "integers":
        return rng.integers(-3, 4, size=shape).astype(np.float64)
    return (scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


seeds = st.integers(0, 2**31 - 1)
batch = st.integers(1, 2)
side = st.integers(1, 6)


def perturbed_state(module: torch.nn.Module, seed: int, scale: float = 0.2) -> dict:
    """float64 NumPy state dict of ``module`` with every entry moved off its initial value.

    Random offsets exercise every parameter (a temperature of exactly 1 or a zero bias would hide
    a wiring error), float32-representable so both precisions start from the same numbers.
    """
    with torch.random.fork_rng():  # initial values from ``seed``, not from whatever ran before
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        v = v.double() + scale * torch.randn(v.shape, generator=g, dtype=torch.float64)
        out[k] = v.float().double().numpy()
    return out


def load(module: torch.nn.Module, params: dict) -> torch.nn.Module:
    """``module`` with ``params`` (tensors, any dtype/device) loaded strictly, in eval mode."""
    first = next(iter(params.values()))
    module = module.to(device=first.device, dtype=first.dtype)
    module.load_state_dict(params, strict=True)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# PyTorch adapters: same signature as the reference function
# ---------------------------------------------------------------------------------------------


def torch_conv2d(x, weight, bias=None, groups=1):
    """``F.conv2d`` with same padding."""
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=groups)


def torch_l2_normalize(x):
    """``F.normalize`` along the last axis."""
    return F.normalize(x, dim=-1)


def torch_masked_attention(q, k, v, temperature, kept):
    """The core of ``MaskedCrossAttention.forward`` from dfpir's functions."""
    return t_masked.masked_softmax(t_attn.channel_logits(q, k, temperature), kept) @ v


def _has(params, name):
    return name in params


def mdta_module(x, params, heads):
    return load(MDTA(x.shape[1], heads, _has(params, "qkv.bias")), params)


def torch_mdta(x, params, heads, prefix=""):
    """``MDTA`` built from ``params``."""
    return mdta_module(x, params, heads)(x)


def _expansion(params, name, channels):
    hidden = params[name].shape[1]
    return (hidden + 0.5) / channels  # int(C * factor) == hidden exactly


def gdfn_module(x, params):
    c = x.shape[1]
    return load(GDFN(c, _expansion(params, "project_out.weight", c), _has(params, "project_in.bias")), params)


def torch_gdfn(x, params, prefix=""):
    """``GDFN`` built from ``params``."""
    return gdfn_module(x, params)(x)


def torch_dgm(prompt, params, prefix=""):
    """``DGM`` built from ``params``."""
    return load(DGM(prompt.shape[1], params["linear2.weight"].shape[0]), params)(prompt)


def perturb_module(x, prompt, params):
    return load(ChannelPerturbation(x.shape[1], prompt.shape[1]), params)


def torch_perturb(x, prompt, params, prefix=""):
    """``ChannelPerturbation`` (faithful) built from ``params``."""
    return perturb_module(x, prompt, params)(x, prompt)


def masked_cross_attention_module(query, params, heads, keep_ratio):
    m = MaskedCrossAttention(query.shape[1], heads, _has(params, "q.bias"), keep_ratio)
    return load(m, params)


def torch_masked_cross_attention(query, context, params, heads, keep_ratio=0.9, prefix=""):
    """``MaskedCrossAttention`` built from ``params``."""
    return masked_cross_attention_module(query, params, heads, keep_ratio)(query, context)


def dgpb_module(x, prompt, params, heads, keep_ratio):
    c = x.shape[1]
    m = DGPB(c, heads, _expansion(params, "ffn.project_out.weight", c), _has(params, "attn.q.bias"),
             _has(params, "norm_q.bias"), prompt.shape[1], "faithful", keep_ratio)
    return load(m, params)


def torch_dgpb(x, prompt, params, heads, keep_ratio=0.9, prefix=""):
    """``DGPB`` built from ``params``."""
    return dgpb_module(x, prompt, params, heads, keep_ratio)(x, prompt)


def transformer_block_module(x, params, heads):
    c = x.shape[1]
    m = TransformerBlock(c, heads, _expansion(params, "ffn.project_out.weight", c),
                         _has(params, "attn.qkv.bias"), _has(params, "norm1.bias"))
    return load(m, params)


def torch_transformer_block(x, params, heads, prefix=""):
    """``TransformerBlock`` built from ``params``."""
    return transformer_block_module(x, params, heads)(x)


def torch_downsample(x, params, prefix=""):
    """``Downsample`` built from ``params``."""
    return load(Downsample(x.shape[1]), params)(x)


def torch_upsample(x, params, prefix=""):
    """``Upsample`` built from ``params``."""
    return load(Upsample(x.shape[1]), params)(x)


def torch_dfpir_forward(params, image, prompt, config):
    """The whole ``DFPIR`` model built from ``config`` and ``params``."""
    model = dfpir.DFPIR(dfpir.DFPIRConfig(**config))
    return load(model, params)(image, prompt)


# ---------------------------------------------------------------------------------------------
# Fused twins: the same signatures, through dfpir.model.fused as inference runs it
# ---------------------------------------------------------------------------------------------

#: Rows per strip in the fused twins: the fewest ``fused.strip_rows`` gives, so that the drawn
#: heights (up to 13) run several strips and their one-row halos, not one whole-image strip.
STRIP = 4


@contextmanager
def small_strips() -> Iterator[None]:
    """Run the fused kernels in strips of :data:`STRIP` rows (the least byte budget)."""
    saved, fused.STRIP_BYTES = fused.STRIP_BYTES, 1
    try:
        yield
    finally:
        fused.STRIP_BYTES = saved


def channels_last(obj):
    """A module converted to channels-last, or a channels-last *copy* of a (B, C, H, W) tensor.

    Inference runs the fused kernels on channels-last tensors (``inference.speed.prepare``), and
    only those take oneDNN's fused post-ops in float32. Always a copy: ``fused.gdfn_`` writes into
    its input, which may share memory with the drawn case's arrays.
    """
    if isinstance(obj, torch.nn.Module):
        return obj.to(memory_format=torch.channels_last)
    return obj.clone(memory_format=torch.channels_last)


def no_norm(x):
    """The identity in place of a block's LayerNorm, returning a new tensor as LayerNorm does:
    ``fused.gdfn_`` writes a strip's output into its input once the next strip's norm has read
    the shared halo row, so a norm that returned a view would read the written row."""
    return x.clone()


def fused_channel_logits(q, k, temperature):
    """The logits from the Gram statistics the fused attention sums strip by strip."""
    b, heads, c, hw = q.shape

    def as_image(t):  # (B, heads, c, HW) -> (B, heads*c, HW, 1): one pixel per row
        return channels_last(t.reshape(b, heads * c, hw, 1))

    qi, ki = as_image(q), as_image(k)
    gram = fused.new_gram(q, heads * c, heads)
    for r0 in range(0, hw, STRIP):
        fused.accumulate_gram(gram, qi[:, :, r0:r0 + STRIP], ki[:, :, r0:r0 + STRIP], heads)
    return fused.logits_from_gram(gram, temperature)


def fused_mdta(x, params, heads, prefix=""):
    """``fused.mdta`` (with :func:`no_norm`), less the residual it adds.

    Taking ``x`` back off costs one rounding at ``|x|``: 1e-7 in float32 and 1e-16 in float64,
    far inside both tolerances.
    """
    with small_strips():
        return fused.mdta(no_norm, channels_last(mdta_module(x, params, heads)), channels_last(x)) - x


def fused_gdfn(x, params, prefix=""):
    """``fused.gdfn_`` (with :func:`no_norm`), less the residual it adds (one rounding, as in :func:`fused_mdta`)."""
    with small_strips():
        return fused.gdfn_(no_norm, channels_last(gdfn_module(x, params)), channels_last(x)) - x


def fused_perturb(x, prompt, params, prefix=""):
    """``fused.perturbation``: the channel perturbation as one (C x C) matrix per sample."""
    return fused.perturbation(channels_last(perturb_module(x, prompt, params)), channels_last(x), prompt)


def fused_masked_cross_attention(query, context, params, heads, keep_ratio=0.9, prefix=""):
    """``fused.masked_cross_attention`` with :func:`no_norm` for both norms."""
    m = channels_last(masked_cross_attention_module(query, params, heads, keep_ratio))
    with small_strips():
        return fused.masked_cross_attention(m, channels_last(query), no_norm, channels_last(context), no_norm)


def fused_dgpb(x, prompt, params, heads, keep_ratio=0.9, prefix=""):
    """``DGPB`` with its fused path on."""
    m = channels_last(dgpb_module(x, prompt, params, heads, keep_ratio))
    m.fused = True
    with small_strips():
        return m(channels_last(x), prompt)


def fused_transformer_block(x, params, heads, prefix=""):
    """``TransformerBlock`` with its fused path on."""
    m = channels_last(transformer_block_module(x, params, heads))
    m.fused = True
    with small_strips():
        return m(channels_last(x))


def fused_dfpir_forward(params, image, prompt, config):
    """The whole ``DFPIR`` model with every block fused (``DFPIR.set_fused``), channels-last."""
    model = load(dfpir.DFPIR(dfpir.DFPIRConfig(**config)), params).set_fused(True)
    with small_strips():
        return channels_last(model)(channels_last(image), prompt)


# ---------------------------------------------------------------------------------------------
# Strategies: each draws a whole consistent case
# ---------------------------------------------------------------------------------------------


@st.composite
def layer_norm_cases(draw):
    b, c, h, w = draw(batch), draw(st.integers(1, 6)), draw(side), draw(side)
    kind, seed, with_bias = draw(st.sampled_from(VALUE_KINDS)), draw(seeds), draw(st.booleans())
    x = values(seed, (b, c, h, w), kind, scale=3.0) + (values(seed + 1, (1, c, 1, 1)) if kind == "normal" else 0)
    weight = values(seed + 2, (c,))
    bias = values(seed + 3, (c,)) if with_bias else None
    return Case(dict(shape=(b, c, h, w), kind=kind, seed=seed, with_bias=with_bias), (x, weight, bias))


@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["1x1", "depthwise3x3", "dense3x3", "grouped3x3"]))
    b, h, w, seed = draw(batch), draw(side), draw(side), draw(seeds)
    groups = 1
    c_in = draw(st.integers(1, 5))
    c_out = draw(st.integers(1, 5))
    k = 1 if kind == "1x1" else 3
    if kind == "depthwise3x3":
        groups, c_out = c_in, c_in * draw(st.integers(1, 2))
    elif kind == "grouped3x3":
        groups = draw(st.integers(1, 3))
        c_in, c_out = c_in * groups, c_out * groups
    has_bias = draw(st.booleans())
    x = values(seed, (b, c_in, h, w))
    weight = values(seed + 1, (c_out, c_in // groups, k, k))
    bias = values(seed + 2, (c_out,)) if has_bias else None
    return Case(dict(kind=kind, x=x.shape, weight=weight.shape, groups=groups, bias=has_bias, seed=seed),
                (x, weight, bias, groups))


@st.composite
def unshuffle_cases(draw):
    r, b, c, seed = draw(st.integers(1, 3)), draw(batch), draw(st.integers(1, 4)), draw(seeds)
    shape = (b, c, r * draw(st.integers(1, 4)), r * draw(st.integers(1, 4)))
    return Case(dict(shape=shape, factor=r, seed=seed), (values(seed, shape), r))


@st.composite
def shuffle_cases(draw):
    r, b, c, seed = draw(st.integers(1, 3)), draw(batch), draw(st.integers(1, 3)), draw(seeds)
    shape = (b, c * r * r, draw(side), draw(side))
    return Case(dict(shape=shape, factor=r, seed=seed), (values(seed, shape), r))


@st.composite
def elementwise_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    kind, seed = draw(st.sampled_from(VALUE_KINDS)), draw(seeds)
    return Case(dict(shape=shape, kind=kind, seed=seed), (values(seed, shape, kind, scale=3.0),))


@st.composite
def heads_config(draw):
    """(B, heads, c, H, W): a width that splits into heads."""
    return draw(batch), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(side), draw(side)


@st.composite
def split_heads_cases(draw):
    b, heads, c, h, w = draw(heads_config())
    seed = draw(seeds)
    return Case(dict(shape=(b, heads * c, h, w), heads=heads, seed=seed), (values(seed, (b, heads * c, h, w)), heads))


@st.composite
def merge_heads_cases(draw):
    b, heads, c, h, w = draw(heads_config())
    seed = draw(seeds)
    return Case(dict(shape=(b, heads, c, h * w), h=h, w=w, seed=seed), (values(seed, (b, heads, c, h * w)), h, w))


@st.composite
def qkv_cases(draw, n_inputs=3, with_kept=False):
    """q, k, v (B, heads, c, HW) and a temperature; optionally ``kept`` for the top-k mask."""
    b, heads, c, h, w = draw(heads_config())
    seed = draw(seeds)
    arrays = [values(seed + i, (b, heads, c, h * w)) for i in range(n_inputs)]
    temperature = (1 + values(seed + 9, (heads, 1, 1), scale=0.3))
    temperature = temperature.astype(np.float32).astype(np.float64)
    cfg = dict(b=b, heads=heads, c=c, hw=(h, w), seed=seed)
    args = (*arrays, temperature)
    if with_kept:
        ratio = draw(st.sampled_from([0.9, 0.5, 0.75, 1.0]))
        cfg["kept"] = reference.kept_per_row(c, ratio)
        args = (*args, cfg["kept"])
    return Case(cfg, args)


@st.composite
def logits_cases(draw, with_k=True):
    """Rows of logits, tie-rich half of the time; exactly representable in float32."""
    b, heads, c = draw(batch), draw(st.integers(1, 3)), draw(st.integers(1, 10))
    kind, seed = draw(st.sampled_from(VALUE_KINDS)), draw(seeds)
    x = values(seed, (b, heads, c, c), kind)
    k = draw(st.integers(1, c))
    cfg = dict(shape=x.shape, kind=kind, k=k, seed=seed)
    return Case(cfg, (x, k) if with_k else (x,), exact_inputs=True)


@st.composite
def module_input(draw, widths=st.integers(1, 4)):
    """(B, C, H, W) features with C = heads * c."""
    b, heads, c, h, w = draw(batch), draw(st.integers(1, 3)), draw(widths), draw(side), draw(side)
    return b, heads, heads * c, h, w


def _flags(draw):
    return draw(st.booleans()), draw(st.booleans())  # bias, with_bias_norm


@st.composite
def mdta_cases(draw):
    b, heads, c, h, w = draw(module_input())
    seed, (bias, _) = draw(seeds), _flags(draw)
    params = perturbed_state(MDTA(c, heads, bias), seed)
    return Case(dict(shape=(b, c, h, w), heads=heads, bias=bias, seed=seed),
                (values(seed, (b, c, h, w)), params, heads))


@st.composite
def gdfn_cases(draw):
    b, _, c, h, w = draw(module_input())
    seed, bias = draw(seeds), draw(st.booleans())
    factor = draw(st.sampled_from([2.66, 1.0, 0.5, 1.5]))
    if int(c * factor) < 1:
        factor = 1.0
    params = perturbed_state(GDFN(c, factor, bias), seed)
    return Case(dict(shape=(b, c, h, w), factor=factor, bias=bias, seed=seed), (values(seed, (b, c, h, w)), params))


@st.composite
def prompts(draw, b, dim, seed):
    """A batch of prompts; samples may share a prompt (mixed batches) or not."""
    distinct = values(seed, (b, dim))
    pick = draw(st.lists(st.integers(0, b - 1), min_size=b, max_size=b))
    return distinct[pick]


@st.composite
def dgm_cases(draw):
    b, dim, out, seed = draw(batch), draw(st.integers(1, 16)), draw(st.integers(1, 12)), draw(seeds)
    params = perturbed_state(DGM(dim, out), seed)
    return Case(dict(b=b, prompt_dim=dim, out=out, seed=seed), (draw(prompts(b, dim, seed)), params))


@st.composite
def order_cases(draw):
    b, n, kind, seed = draw(batch), draw(st.integers(1, 12)), draw(st.sampled_from(VALUE_KINDS)), draw(seeds)
    s = values(seed, (b, n), kind)
    if kind == "integers" and draw(st.booleans()):
        s = s * 0.0  # signed zeros: -0.0 and 0.0 are equal scores
    return Case(dict(shape=(b, n), kind=kind, seed=seed), (s,), exact_inputs=True)


def _permutations(seed, b, n):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(b)]).astype(np.int64)


@st.composite
def gather_cases(draw):
    b, n, h, w, seed = draw(batch), draw(st.integers(1, 8)), draw(side), draw(side), draw(seeds)
    return Case(dict(shape=(b, n, h, w), seed=seed), (values(seed, (b, n, h, w)), _permutations(seed, b, n)))


@st.composite
def inverse_cases(draw):
    b, n, seed = draw(batch), draw(st.integers(1, 12)), draw(seeds)
    return Case(dict(shape=(b, n), seed=seed), (_permutations(seed, b, n),))


@st.composite
def perturb_cases(draw):
    b, _, c, h, w = draw(module_input())
    dim, seed = draw(st.integers(1, 16)), draw(seeds)
    params = perturbed_state(ChannelPerturbation(c, dim), seed)
    return Case(dict(shape=(b, c, h, w), prompt_dim=dim, seed=seed),
                (values(seed, (b, c, h, w)), draw(prompts(b, dim, seed + 5)), params))


@st.composite
def kept_cases(draw):
    c = draw(st.integers(1, 200))
    ratio = draw(st.one_of(st.sampled_from([0.9, 0.5, 1.0, 0.1, 0.75, 1 / 3]),
                           st.floats(0.001, 1.0, allow_nan=False)))
    return Case(dict(c=c, keep_ratio=ratio), (c, ratio))


@st.composite
def masked_cross_attention_cases(draw):
    b, heads, c, h, w = draw(module_input(st.integers(1, 6)))
    seed, bias = draw(seeds), draw(st.booleans())
    ratio = draw(st.sampled_from([0.9, 0.5, 1.0]))
    params = perturbed_state(MaskedCrossAttention(c, heads, bias, ratio), seed)
    return Case(dict(shape=(b, c, h, w), heads=heads, bias=bias, keep_ratio=ratio, seed=seed),
                (values(seed, (b, c, h, w)), values(seed + 1, (b, c, h, w)), params, heads, ratio))


@st.composite
def dgpb_cases(draw):
    b, heads, c, h, w = draw(module_input(st.integers(1, 6)))
    seed, (bias, norm_bias) = draw(seeds), _flags(draw)
    dim, ratio = draw(st.integers(1, 16)), draw(st.sampled_from([0.9, 0.5]))
    params = perturbed_state(DGPB(c, heads, 2.66, bias, norm_bias, dim, "faithful", ratio), seed)
    cfg = dict(shape=(b, c, h, w), heads=heads, bias=bias, with_bias_norm=norm_bias, prompt_dim=dim,
               keep_ratio=ratio, seed=seed)
    return Case(cfg, (values(seed, (b, c, h, w)), draw(prompts(b, dim, seed + 7)), params, heads, ratio))


@st.composite
def transformer_block_cases(draw):
    b, heads, c, h, w = draw(module_input())
    seed, (bias, norm_bias) = draw(seeds), _flags(draw)
    params = perturbed_state(TransformerBlock(c, heads, 2.66, bias, norm_bias), seed)
    cfg = dict(shape=(b, c, h, w), heads=heads, bias=bias, with_bias_norm=norm_bias, seed=seed)
    return Case(cfg, (values(seed, (b, c, h, w)), params, heads))


@st.composite
def down_cases(draw):
    b, c, seed = draw(batch), 2 * draw(st.integers(1, 3)), draw(seeds)
    h, w = 2 * draw(st.integers(1, 3)), 2 * draw(st.integers(1, 3))
    return Case(dict(shape=(b, c, h, w), seed=seed), (values(seed, (b, c, h, w)), perturbed_state(Downsample(c), seed)))


@st.composite
def up_cases(draw):
    b, c, h, w, seed = draw(batch), 2 * draw(st.integers(1, 3)), draw(side), draw(side), draw(seeds)
    return Case(dict(shape=(b, c, h, w), seed=seed), (values(seed, (b, c, h, w)), perturbed_state(Upsample(c), seed)))


@st.composite
def pad_cases(draw):
    b, c, seed = draw(batch), draw(st.integers(1, 3)), draw(seeds)
    h, w, m = draw(st.integers(1, 17)), draw(st.integers(1, 17)), draw(st.sampled_from([8, 2, 3, 16]))
    return Case(dict(shape=(b, c, h, w), multiple=m, seed=seed), (values(seed, (b, c, h, w)), m))


@st.composite
def model_configs(draw) -> dfpir.DFPIRConfig:
    """A whole small DFPIR configuration, consistent by construction."""
    heads1 = draw(st.integers(1, 2))
    dim = heads1 * 2 * draw(st.integers(1, 2))  # even, divisible by heads[0]
    heads = [heads1]
    for level in (2, 3, 4):
        width = dim * 2 ** (level - 1)
        heads.append(draw(st.sampled_from([h for h in (1, 2, 4, 8) if width % h == 0])))
    return dfpir.DFPIRConfig(
        dim=dim,
        num_blocks=tuple(draw(st.lists(st.integers(0, 1), min_size=4, max_size=4))),
        num_refinement_blocks=draw(st.integers(0, 1)),
        heads=tuple(heads),
        ffn_expansion_factor=draw(st.sampled_from([2.66, 1.5])),
        bias=draw(st.booleans()),
        layernorm_type=draw(st.sampled_from(["WithBias", "BiasFree"])),
        use_dgpb=draw(st.booleans()) or draw(st.booleans()),  # mostly with DGPBs
        # the reference has no guidance switch: the learnable mode's forward pass is the faithful one
        guidance=draw(st.sampled_from(["faithful", "learnable"])),
        keep_ratio=draw(st.sampled_from([0.9, 0.5])),
        prompt_dim=draw(st.sampled_from([8, 16])),
    )


@st.composite
def forward_cases(draw, max_side=13):
    cfg = draw(model_configs())
    b, h, w, seed = draw(batch), draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(seeds)
    params = perturbed_state(dfpir.DFPIR(cfg), seed, scale=0.1)
    image = np.random.default_rng(seed).random((b, 3, h, w)).astype(np.float32).astype(np.float64)
    prompt = draw(prompts(b, cfg.prompt_dim, seed + 3))
    config = dataclasses.asdict(cfg)
    return Case(dict(config=cfg.to_dict(), image=image.shape, seed=seed), (params, image, prompt, config))


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

def topk_gap(logits: np.ndarray, k: int) -> float:
    """Smallest gap between the k-th and the (k+1)-th largest logit of any row (inf if k keeps all).

    ``masked_softmax`` takes its top-k decision on its input directly; gradcheck's steps must
    not cross it.
    """
    n = logits.shape[-1]
    if k >= n:
        return math.inf
    s = -np.sort(-logits.reshape(-1, n), axis=-1)
    return float((s[:, k - 1] - s[:, k]).min())


R = reference
REGISTRY: list[OpRow] = [
    OpRow(name="layer_norm", ref=R.layer_norm, torch_fn=t_layer_norm, strategy=layer_norm_cases(), exact=False,
          reason="default policy", loop=R.layer_norm_loop, gradcheck=True, grad_args=(0, 1)),
    OpRow(name="conv2d", ref=R.conv2d, torch_fn=torch_conv2d, strategy=conv_cases(), exact=False,
          reason="default policy", loop=R.conv2d_loop, gradcheck=True, grad_args=(0, 1)),
    OpRow(name="pixel_unshuffle", ref=R.pixel_unshuffle, torch_fn=F.pixel_unshuffle, strategy=unshuffle_cases(),
          exact=True, reason="index permutation: exact"),
    OpRow(name="pixel_shuffle", ref=R.pixel_shuffle, torch_fn=F.pixel_shuffle, strategy=shuffle_cases(),
          exact=True, reason="index permutation: exact"),
    OpRow(name="gelu", ref=R.gelu, torch_fn=F.gelu, strategy=elementwise_cases(), exact=False,
          reason="default policy (math.erf vs torch's erf)", gradcheck=True),
    OpRow(name="split_heads", ref=R.split_heads, torch_fn=t_attn.split_heads, strategy=split_heads_cases(),
          exact=True, reason="reshape: exact"),
    OpRow(name="merge_heads", ref=R.merge_heads, torch_fn=t_attn.merge_heads, strategy=merge_heads_cases(),
          exact=True, reason="reshape: exact"),
    OpRow(name="l2_normalize", ref=R.l2_normalize, torch_fn=torch_l2_normalize, strategy=elementwise_cases(),
          exact=False, reason="default policy; integer inputs include all-zero rows (the eps branch)", gradcheck=True,
          grad_ok=lambda case: bool((np.linalg.norm(case.args[0], axis=-1) > 1e-3).all())),  # max(norm, eps) kink
    OpRow(name="softmax", ref=R.softmax, torch_fn=lambda x: x.softmax(-1), strategy=elementwise_cases(), exact=False,
          reason="default policy", gradcheck=True),
    OpRow(name="channel_logits", ref=R.channel_logits, torch_fn=t_attn.channel_logits, strategy=qkv_cases(n_inputs=2),
          exact=False, reason="default policy", fused=fused_channel_logits, gradcheck=True, grad_args=(0, 1, 2)),
    OpRow(name="transposed_attention", ref=R.transposed_attention, torch_fn=t_attn.transposed_attention,
          strategy=qkv_cases(), exact=False, reason="default policy", loop=R.transposed_attention_loop,
          gradcheck=True, grad_args=(0, 1, 2, 3)),
    OpRow(name="mdta", ref=R.mdta, torch_fn=torch_mdta, strategy=mdta_cases(), exact=False, reason="default policy",
          fused=fused_mdta, gradcheck=True),
    OpRow(name="hidden_width", ref=R.hidden_width, torch_fn=t_hidden_width,
          strategy=st.builds(lambda c, f: Case(dict(c=c, factor=f), (c, f)), st.integers(1, 800),
                             st.sampled_from([2.66, 1.0, 0.5, 4.0, 2.0 / 3.0])),
          exact=True, reason="integer: exact"),
    OpRow(name="gdfn", ref=R.gdfn, torch_fn=torch_gdfn, strategy=gdfn_cases(), exact=False, reason="default policy",
          fused=fused_gdfn, gradcheck=True),
    OpRow(name="dgm", ref=R.dgm, torch_fn=torch_dgm, strategy=dgm_cases(), exact=False,
          reason="float32: sums of up to 16 products of O(1) terms, within the default policy"),
    OpRow(name="channel_order", ref=R.channel_order, torch_fn=t_perturb.channel_order, strategy=order_cases(),
          exact=True, reason="integer order: exact, tie rule included", loop=R.channel_order_loop),
    OpRow(name="channel_perturbation", ref=R.channel_perturbation, torch_fn=t_perturb.channel_perturbation,
          strategy=gather_cases(), exact=True, reason="gather: exact"),
    OpRow(name="inverse_order", ref=R.inverse_order, torch_fn=t_perturb.inverse_order, strategy=inverse_cases(),
          exact=True, reason="scatter: exact"),
    OpRow(name="perturb", ref=R.perturb, torch_fn=torch_perturb, strategy=perturb_cases(), exact=False,
          reason="default policy", fused=fused_perturb, decisions=True),
    OpRow(name="kept_per_row", ref=R.kept_per_row, torch_fn=t_masked.kept_per_row, strategy=kept_cases(),
          exact=True, reason="integer: exact"),
    OpRow(name="topk_mask", ref=R.topk_mask, torch_fn=t_masked.topk_mask, strategy=logits_cases(), exact=True,
          reason="boolean mask: exact, tie rule included", loop=R.topk_mask_loop),
    OpRow(name="masked_softmax", ref=R.masked_softmax, torch_fn=t_masked.masked_softmax, strategy=logits_cases(),
          exact=False, reason="default policy; masked entries are exactly 0 on both sides", gradcheck=True,
          grad_margin=lambda case: topk_gap(*case.args)),
    OpRow(name="masked_attention", ref=R.masked_attention, torch_fn=torch_masked_attention,
          strategy=qkv_cases(with_kept=True), exact=False, reason="default policy", loop=R.masked_attention_loop,
          decisions=True, gradcheck=True, grad_args=(0, 1, 2, 3)),
    OpRow(name="masked_cross_attention", ref=R.masked_cross_attention, torch_fn=torch_masked_cross_attention,
          strategy=masked_cross_attention_cases(), exact=False, reason="default policy",
          fused=fused_masked_cross_attention, decisions=True, gradcheck=True, grad_args=(0, 1)),
    OpRow(name="dgpb", ref=R.dgpb, torch_fn=torch_dgpb, strategy=dgpb_cases(), exact=False, reason="default policy",
          fused=fused_dgpb, decisions=True, gradcheck=True, cost=2),
    OpRow(name="transformer_block", ref=R.transformer_block, torch_fn=torch_transformer_block,
          strategy=transformer_block_cases(), exact=False, reason="default policy", fused=fused_transformer_block,
          gradcheck=True),
    OpRow(name="downsample", ref=R.downsample, torch_fn=torch_downsample, strategy=down_cases(), exact=False,
          reason="default policy", gradcheck=True),
    OpRow(name="upsample", ref=R.upsample, torch_fn=torch_upsample, strategy=up_cases(), exact=False,
          reason="default policy", gradcheck=True),
    OpRow(name="pad_to_multiple", ref=R.pad_to_multiple, torch_fn=t_net.pad_to_multiple, strategy=pad_cases(),
          exact=True, reason="copies values: exact"),
    OpRow(name="dfpir_forward", ref=R.dfpir_forward, torch_fn=torch_dfpir_forward, strategy=forward_cases(),
          exact=False, reason="float32: a whole U-net of tens of layers: 10x the default; ill-conditioned examples set aside",
          fused=fused_dfpir_forward, decisions=True, f32_factor=10.0, cost=3),
]
ROWS = {row.name: row for row in REGISTRY}
