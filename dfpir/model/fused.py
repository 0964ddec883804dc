"""Fused inference kernels: the same blocks, computed in row strips that stay in cache.

At full resolution a block's hidden tensors are far larger than the CPU's caches (the ``paper``
preset's GDFN at 256 x 256 holds 510 x 65,536 floats, 134 MB), so the plain block streams each
one to memory and back between every two ops. Here the blocks run strip by strip: a few rows
(plus a one-row halo for the 3x3 depthwise convolutions) go through LayerNorm, the 1x1 and
depthwise convolutions and the gate while they are still in cache. The arithmetic is the plain
model's, operation for operation, except where noted:

- the GDFN's ``project_in`` is applied as two convolutions (``h1`` and ``h2``) so that each half
  is a contiguous tensor (elementwise kernels on a channel slice of a channels-last tensor are
  several times slower);
- the attention logits come from statistics accumulated over the strips: ``q k^T`` and the
  squared norms of ``q`` and ``k``, so ``q`` and ``k`` are never kept whole and never normalised;
- the GDFN's hidden channels are padded with zero channels to a multiple of 16, which oneDNN's
  kernels handle faster (the padded channels stay exactly zero);
- on float32 channels-last CPU tensors, the GDFN's GELU and residual sum are post-ops of
  oneDNN's convolutions ([`postops`][dfpir.model.fused.postops]), and its output overwrites its input;
- ``project_out(attn @ v)`` is one product ``v @ (W_out attn)^T``: the small (C x C) matrix
  ``W_out attn`` is formed first, which saves a full-resolution pass.

Results equal the plain path up to float rounding (``tests/test_fused.py``: within 1e-5 of the
plain model in float32; each kernel is a fused twin in the reference oracle's registry, within
1e-10 of the NumPy reference in float64). Only used under
``torch.no_grad`` / inference mode: training keeps the plain modules, whose backward torch
derives.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .layernorm import LayerNorm
from .masked_attention import masked_softmax
from .perturbation import autocast_off, inverse_order

#: Bytes of one strip's widest hidden tensor: of 2 to 32 MB, 16 MB ran the ``paper`` preset at
#: 256 x 256 fastest on a 2-core Xeon with 48 MB of L3 cache (the differences were within 10%).
STRIP_BYTES = 16 * 2**20


#: Hidden channels are padded with zero channels to a multiple of this (16 float32 = one AVX-512
#: register): oneDNN's kernels are slower on odd counts such as the ``paper`` GDFN's 127.
CHANNEL_ALIGN = 16


def wanted(switch: bool | None, module: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether a block runs the strip kernels on ``x``.

    Never while gradients are recorded (training derives its backward from the plain modules).
    ``switch`` is the block's ``fused`` setting: True or False as set by
    [`DFPIR.set_fused`][dfpir.model.network.DFPIR.set_fused]; ``None`` (the default) decides by itself: in eval
    mode, on the CPU, in float32 or float64 without autocast, where the kernels are faster than the
    plain modules (on CUDA they are not).
    """
    if torch.is_grad_enabled():
        return False
    if switch is not None:
        return switch
    return (not module.training and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu"))


def strip_rows(width: int, channels: int, height: int) -> int:
    """Rows per strip so that a (channels, rows, width) float32 tensor is at most about
    STRIP_BYTES, with the height split into strips of equal size (no small last strip)."""
    target = max(4, STRIP_BYTES // (4 * channels * width))
    count = -(-height // target)  # ceil
    return -(-height // count)


def strips(height: int, rows: int) -> Iterator[tuple[int, int, int, int, slice]]:
    """``(r0, r1, a, b, keep)`` for each strip: its rows ``[r0, r1)``, with the halo ``[a, b)``, and
    ``keep``, where rows ``[r0, r1)`` lie within the halo strip."""
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        a, b = max(r0 - 1, 0), min(r1 + 1, height)
        yield r0, r1, a, b, slice(r0 - a, r1 - a)


def channels(conv: torch.nn.Conv2d, index: slice | torch.Tensor = slice(None)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A convolution's weight and bias restricted to the output channels ``index``."""
    return conv.weight[index], None if conv.bias is None else conv.bias[index]


def zero_extend(tensor: torch.Tensor | None, size: int, dim: int = 0) -> torch.Tensor | None:
    """``tensor`` with zeros appended along ``dim`` up to ``size`` (``None`` stays ``None``)."""
    if tensor is None or tensor.shape[dim] == size:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = size - shape[dim]
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def aligned(channels: int) -> int:
    """``channels`` rounded up to a multiple of ``CHANNEL_ALIGN``."""
    return -(-channels // CHANNEL_ALIGN) * CHANNEL_ALIGN


def dwconv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, keep: slice) -> torch.Tensor:
    """3x3 depthwise conv of a strip that carries its halo rows.

    Zero padding on all sides, as the whole-image convolution has; only the output rows ``keep``
    are returned, so a halo row's output (which would wrongly see the padding) is dropped, and at
    the image's top and bottom edges the padding is exactly the whole image's.
    """
    return F.conv2d(x, weight, bias, padding=1, groups=x.shape[1])[:, :, keep]


def store(buffer: torch.Tensor | None, strip: torch.Tensor, r0: int, height: int) -> torch.Tensor:
    """Put ``strip`` at rows ``r0:`` of a (B, C, height, W) channels-last buffer, allocated on the
    first call (``buffer=None``); a strip that already is the whole image is returned as it is."""
    b, c, rows, w = strip.shape
    if buffer is None:
        if rows == height:
            return strip
        buffer = torch.empty(b, c, height, w, dtype=strip.dtype, device=strip.device, memory_format=torch.channels_last)
    buffer[:, :, r0:r0 + rows] = strip
    return buffer


def pixel_major(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last -> (B, H*W, C) without a copy."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def gdfn_weights(ffn) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The GDFN's convolutions as ``(project_in, dwconv)`` weight/bias pairs for each half of
    the hidden channels, and ``project_out``'s, all zero-extended to [`aligned`][dfpir.model.fused.aligned] channels.

    A padded hidden channel is exactly zero (no weight, no bias), so is its gate
    ``gelu(0) * 0``, and ``project_out`` gives it zero weight: the output is unchanged.
    """
    hidden = ffn.project_out.weight.shape[1]
    size = aligned(hidden)
    halves = []
    for half in (slice(0, hidden), slice(hidden, 2 * hidden)):
        convs = (*channels(ffn.project_in, half), *channels(ffn.dwconv, half))
        halves.append(tuple(zero_extend(t, size) for t in convs))
    out = (zero_extend(ffn.project_out.weight, size, dim=1), ffn.project_out.bias)
    return halves[0], halves[1], out


#: Whether this torch build has oneDNN's fused convolutions (see [`postops`][dfpir.model.fused.postops]).
POSTOPS = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def postops(x: torch.Tensor) -> bool:
    """Whether the GDFN's GELU and residual sum can ride on oneDNN's convolutions for ``x``.

    ``torch.ops.mkldnn._convolution_pointwise`` (the fused convolutions that ``torch.compile``
    emits on the CPU) applies GELU or a sum to a convolution's output while it is still in
    registers, saving a pass over memory each. Used for float32 channels-last CPU
    tensors when this torch build has it; everything else takes the plain operators.
    """
    return (
        POSTOPS
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu")
    )


def gated_dwconv(h1: torch.Tensor, h2: torch.Tensor, first: tuple, second: tuple, keep: slice, fuse: bool) -> torch.Tensor:
    """The GDFN's gate ``gelu(dwconv(h1)) * dwconv(h2)`` of a strip with its halo rows, cut to ``keep``.

    ``first`` and ``second`` are (weight, bias) of the two halves' depthwise convolutions; with
    ``fuse`` the GELU is a oneDNN post-op of the first ([`postops`][dfpir.model.fused.postops]). (oneDNN has no fused
    product for depthwise convolutions: torch would run it as a separate multiply anyway.)
    """
    if fuse:
        g = torch.ops.mkldnn._convolution_pointwise(
            h1, *first, [1, 1], [1, 1], [1, 1], h1.shape[1], "gelu", [], "none"  # "none": erf, as F.gelu
        )
        return dwconv(h2, *second, keep).mul_(g[:, :, keep])
    g1, g2 = dwconv(h1, *first, keep), dwconv(h2, *second, keep)
    # (B, rows, W, hidden) views are contiguous, which the fast elementwise kernels need
    return F.gelu(g1.permute(0, 2, 3, 1)).mul_(g2.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def project_add_(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fuse: bool) -> None:
    """``residual += conv1x1(x)`` in place; with ``fuse`` the sum is a post-op of the convolution."""
    if fuse:
        torch.ops.mkldnn._convolution_pointwise_.binary(
            residual, x, weight, bias, [0, 0], [1, 1], [1, 1], 1, "add", None, None, [], None
        )
    else:
        residual.add_(F.conv2d(x, weight, bias))


def gdfn_(block_norm: LayerNorm, ffn, x: torch.Tensor) -> torch.Tensor:
    """``x += ffn(block_norm(x))`` in place, for a [`GDFN`][dfpir.model.feedforward.GDFN], in strips.

    Writing into ``x`` saves a fresh output tensor and a copy per strip. A strip's output is
    written only after the next strip has read its halo row (which is this strip's last row),
    so every strip sees the input as it was; ``block_norm`` must therefore return a new tensor
    (as LayerNorm does), not a view of ``x``.
    """
    h, w = x.shape[-2:]
    first, second, project_out = gdfn_weights(ffn)
    fuse = postops(x)
    pending = None
    for r0, r1, a, bottom, keep in strips(h, strip_rows(w, first[0].shape[0], h)):
        n = block_norm(x[:, :, a:bottom])  # (B, C, rows + halo, W)
        if pending is not None:
            project_add_(x[:, :, pending[0]:pending[1]], pending[2], *project_out, fuse)
        h1, h2 = F.conv2d(n, *first[:2]), F.conv2d(n, *second[:2])
        pending = r0, r1, gated_dwconv(h1, h2, first[2:], second[2:], keep, fuse)
    project_add_(x[:, :, pending[0]:pending[1]], pending[2], *project_out, fuse)
    return x


#: Pixels per chunk when summing squares: a few hundred kB, so each chunk's squares stay in cache.
SQUARES_CHUNK = 4096


def new_gram(like: torch.Tensor, channels: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero accumulators for the attention's Gram statistics: ``q k^T`` (B, heads, c, c) and the
    squared norms of ``q`` and ``k`` (B, heads, 2c); float64 for float64 features, else float32."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    per = channels // heads
    cross = torch.zeros(like.shape[0], heads, per, per, dtype=dtype, device=like.device)
    return cross, torch.zeros(like.shape[0], heads, 2 * per, dtype=dtype, device=like.device)


def per_head(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, rows, W) channels-last (a channel slice too) -> (B, heads, rows*W, c), a view."""
    x = pixel_major(t)  # (B, HW, C)
    return x.unflatten(2, (heads, -1)).transpose(1, 2) if heads > 1 else x[:, None]


def accumulate_gram(gram: tuple[torch.Tensor, torch.Tensor], q: torch.Tensor, k: torch.Tensor, heads: int) -> None:
    """Add a strip's ``q_h k_h^T`` and squared channel norms to the [`new_gram`][dfpir.model.fused.new_gram] accumulators.

    ``q``, ``k``: (B, C, rows, W) channels-last. These are the blocks of the Gram matrix of
    ``[q_h | k_h]`` that the logits need (a quarter of it, plus its diagonal). Half-precision
    features are summed in float32: squared norms over a whole image overflow float16 and lose
    most of their digits in bfloat16.
    """
    cross, squares = gram
    per = cross.shape[-1]
    with autocast_off(q.device.type):
        qh, kh = per_head(q, heads).to(cross.dtype), per_head(k, heads).to(cross.dtype)  # (B, heads, HW, c)
        cross.add_(qh.transpose(-2, -1) @ kh)
        for t, part in ((qh, squares[..., :per]), (kh, squares[..., per:])):
            for chunk in t.split(SQUARES_CHUNK, dim=-2):
                part.add_((chunk * chunk).sum(dim=-2))


def logits_from_gram(gram: tuple[torch.Tensor, torch.Tensor], temperature: torch.Tensor) -> torch.Tensor:
    """[`new_gram`][dfpir.model.fused.new_gram] statistics -> (B, heads, c, c) cosine logits times the temperature.

    The same quantity as [`dfpir.model.attention.channel_logits`][dfpir.model.attention.channel_logits]: ``q k^T`` divided by the norms
    of ``q`` and ``k`` (eps 1e-12).
    """
    cross, squares = gram
    per = cross.shape[-1]
    q_norm = squares[..., :per].sqrt().clamp_min(1e-12)
    k_norm = squares[..., per:].sqrt().clamp_min(1e-12)
    return cross / (q_norm[..., :, None] * k_norm[..., None, :]) * temperature


def fold_project_out(weight: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``W_out`` (C, C, 1, 1) and per-head ``attn`` (B, heads, c, c) -> (B, C, C) ``W_out attn``.

    ``project_out(concat_h(attn_h @ v_h)) = (W_out blockdiag(attn)) @ v``.
    """
    heads, per = attn.shape[1:3]
    w = weight.flatten(1).unflatten(1, (heads, per))  # (C_out, heads, c)
    return torch.einsum("ohi,bhij->bohj", w, attn).flatten(2)  # (B, C_out, C)


def project(v: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    """``residual + matrix @ v (+ bias)`` at every pixel: (B, C, H, W) -> (B, C_out, H, W) channels-last.

    ``matrix``: (B, C_out, C), one per sample; ``bias``: (C_out,) or (B, C_out). The residual,
    or else the bias, is the base that ``baddbmm`` adds the product to, so neither costs a pass.
    """
    b, _, h, w = v.shape
    vp = pixel_major(v)  # (B, HW, C)
    if bias is not None:
        bias = bias[:, None, :] if bias.dim() == 2 else bias  # per sample (B, 1, C_out) or shared (C_out,)
    if residual is not None:
        out = torch.baddbmm(pixel_major(residual), vp, matrix.transpose(1, 2))
        if bias is not None:
            out.add_(bias)
    elif bias is not None:
        out = torch.baddbmm(bias.expand(b, h * w, matrix.shape[1]), vp, matrix.transpose(1, 2))
    else:
        out = vp @ matrix.transpose(1, 2)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, C_out, H, W), channels-last strides


def gram_and_values(height: int, width: int, channels: int, heads: int, like: torch.Tensor,
                    strip: Callable[[int, int, slice], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-head Gram statistics ([`new_gram`][dfpir.model.fused.new_gram]) of ``q`` and ``k`` over the whole image,
    and ``v`` whole, built strip by strip.

    ``strip(a, b, keep)`` computes the strip with halo rows ``[a, b)`` and returns its ``q``,
    ``k`` and ``v``, each (B, C, rows, W) and cut to ``keep``.
    """
    gram = new_gram(like, channels, heads)
    v_all = None
    for r0, _, a, bottom, keep in strips(height, strip_rows(width, 2 * channels, height)):
        q, k, v = strip(a, bottom, keep)
        accumulate_gram(gram, q, k, heads)
        v_all = store(v_all, v, r0, height)
    return gram, v_all


def mdta(block_norm: LayerNorm, attn, x: torch.Tensor) -> torch.Tensor:
    """``x + attn(block_norm(x))`` for an [`MDTA`][dfpir.model.attention.MDTA], in strips."""
    c, h, w = x.shape[1:]
    rows_qk, rows_v = slice(0, 2 * c), slice(2 * c, 3 * c)
    conv_qk, dw_qk = channels(attn.qkv, rows_qk), channels(attn.qkv_dwconv, rows_qk)  # q and k by one conv
    conv_v, dw_v = channels(attn.qkv, rows_v), channels(attn.qkv_dwconv, rows_v)

    def strip(a: int, b: int, keep: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = block_norm(x[:, :, a:b])
        qk = dwconv(F.conv2d(n, *conv_qk), *dw_qk, keep)
        return qk[:, :c], qk[:, c:], dwconv(F.conv2d(n, *conv_v), *dw_v, keep)

    gram, v = gram_and_values(h, w, c, attn.heads, x, strip)
    weights = logits_from_gram(gram, attn.temperature.to(gram[0].dtype)).softmax(dim=-1).to(x.dtype)  # (B, heads, c, c)
    return project(v, fold_project_out(attn.project_out.weight, weights), attn.project_out.bias, x)


def masked_cross_attention(attn, query: torch.Tensor, norm_q: LayerNorm, context: torch.Tensor, norm_kv: LayerNorm) -> torch.Tensor:
    """``attn(norm_q(query), norm_kv(context))`` for a
    [`MaskedCrossAttention`][dfpir.model.masked_attention.MaskedCrossAttention], in strips."""
    c, h, w = query.shape[1:]
    rows_k, rows_v = slice(0, c), slice(c, 2 * c)
    conv_k, dw_k = channels(attn.kv, rows_k), channels(attn.kv_dwconv, rows_k)
    conv_v, dw_v = channels(attn.kv, rows_v), channels(attn.kv_dwconv, rows_v)

    def strip(a: int, b: int, keep: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = dwconv(F.conv2d(norm_q(query[:, :, a:b]), *channels(attn.q)), *channels(attn.q_dwconv), keep)
        n = norm_kv(context[:, :, a:b])
        return q, dwconv(F.conv2d(n, *conv_k), *dw_k, keep), dwconv(F.conv2d(n, *conv_v), *dw_v, keep)

    gram, v = gram_and_values(h, w, c, attn.heads, query, strip)
    weights = masked_softmax(logits_from_gram(gram, attn.temperature.to(gram[0].dtype)), attn.k).to(query.dtype) * attn.scale
    return project(v, fold_project_out(attn.project_out.weight, weights), attn.project_out.bias, None)


def perturbation(module, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """A [`ChannelPerturbation`][dfpir.model.perturbation.ChannelPerturbation] as one (C x C) matrix per sample.

    ``reduce(shuffle(expand(x)))`` is linear in ``x``: with ``e = W_e x + b_e`` and
    ``shuffled[i] = e[order[i]]``, it equals ``W_r[:, inv] W_e x + W_r[:, inv] b_e + b_r`` where
    ``inv`` undoes ``order``. One C x C product replaces two C x 2C convolutions and the gather.
    (The learnable mode's straight-through gate is exactly 1 in the forward pass.)
    """
    inv = inverse_order(module.order(prompt))  # (B, 2C)
    w_r = module.reduce.weight.flatten(1)  # (C, 2C)
    w_shuffled = w_r[:, inv].permute(1, 0, 2)  # (B, C, 2C): W_r[:, inv[b]]
    matrix = w_shuffled @ module.expand.weight.flatten(1)  # (B, C, C)
    bias = w_shuffled @ module.expand.bias + module.reduce.bias  # (B, C)
    return project(x, matrix, bias, None)
