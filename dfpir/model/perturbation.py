"""Degradation-guided channel perturbation: the DGM, the channel order and the shuffle.

The DGM maps the prompt embedding to one score per expanded channel; the channels are then
re-ordered by descending score, so each degradation selects its own fixed permutation.

Tie rule
--------
The order is a *stable* descending sort: among equal scores the lower channel index comes
first. ``torch.topk`` promises no order among ties, so we never use it for the order.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class DGM(nn.Module):
    """Degradation guidance module: two linear layers with no nonlinearity between them.

    Parameters
    ----------
    prompt_dim : int
        Width of the prompt embedding (512).
    out_channels : int
        Number of scores, 2C for a DGPB on C channels.
    """

    def __init__(self, prompt_dim: int, out_channels: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(prompt_dim, prompt_dim)
        self.linear2 = nn.Linear(prompt_dim, out_channels)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        """(B, prompt_dim) prompt embeddings -> (B, 2C) channel scores (two linears, no activation)."""
        return self.linear2(self.linear1(prompt))  # (B, 2C)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context in which autocast is off on ``device_type`` (a no-op where autocast does not
    exist, e.g. the "meta" device used for FLOP counting by dfpir.summary)."""
    if device_type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def channel_order(scores: torch.Tensor) -> torch.Tensor:
    """Per-sample channel order: stable descending argsort of ``scores`` (B, N) -> (B, N) int64."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def channel_perturbation(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Gather channels per sample: ``out[b, i] = x[b, order[b, i]]``.

    Parameters
    ----------
    x : Tensor
        (B, N, H, W) features.
    order : Tensor
        (B, N) int64 permutation of ``range(N)`` for each sample.
    """
    b, n = order.shape
    flat = order + n * torch.arange(b, device=order.device)[:, None]  # (B, N) rows of x.flatten(0, 1)
    return x.flatten(0, 1).index_select(0, flat.flatten()).view_as(x)


def inverse_order(order: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes ``order``: ``channel_perturbation(y, inverse_order(o))`` restores x."""
    inv = torch.empty_like(order)
    inv.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return inv


class ChannelPerturbation(nn.Module):
    """Expand C -> 2C, shuffle the 2C channels in the DGM's order, reduce 2C -> C.

    In ``"faithful"`` guidance the DGM is frozen and run without autograd, exactly as in the
    original, where only the integer order of its output is used so no gradient can reach it.

    In ``"learnable"`` guidance each gathered channel is multiplied by a straight-through gate
    ``(s - s.detach()) + 1`` where ``s`` is its (sorted) DGM score: the forward values are identical
    to the faithful mode (the gate is exactly 1), but the backward pass sends
    ``dL/ds_i = <dL/dX'_i, X'_i>`` to the DGM, so the scores of channels that help the task rise
    and the order can change during training.

    Parameters
    ----------
    channels : int
        Feature width C.
    prompt_dim : int
        Prompt embedding width.
    guidance : {"faithful", "learnable"}
        See above.
    """

    def __init__(self, channels: int, prompt_dim: int, guidance: str = "faithful") -> None:
        super().__init__()
        self.guidance = guidance
        self.dgm = DGM(prompt_dim, 2 * channels)
        self.expand = nn.Conv2d(channels, 2 * channels, kernel_size=1, bias=True)
        self.reduce = nn.Conv2d(2 * channels, channels, kernel_size=1, bias=True)
        if guidance == "faithful":
            self.dgm.requires_grad_(False)

    def scores(self, prompt: torch.Tensor) -> torch.Tensor:
        """(B, prompt_dim) -> (B, 2C) DGM scores, always in full precision.

        The order is discrete, so a bf16/fp16 autocast would change the permutation itself, not
        just round the output; the DGM therefore runs outside autocast.
        """
        with autocast_off(prompt.device.type):
            return self.dgm(prompt.to(self.dgm.linear1.weight.dtype))

    def order(self, prompt: torch.Tensor) -> torch.Tensor:
        """(B, prompt_dim) -> (B, 2C) channel order."""
        with torch.no_grad():
            return channel_order(self.scores(prompt))

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Features (B, C, H, W) and prompts (B, prompt_dim) -> perturbed features (B, C, H, W)."""
        if self.guidance == "faithful":
            order = self.order(prompt)  # (B, 2C)
            shuffled = channel_perturbation(self.expand(x), order)  # (B, 2C, H, W)
        else:
            scores = self.scores(prompt)
            order = channel_order(scores.detach())
            sorted_scores = torch.gather(scores, 1, order)  # (B, 2C)
            gate = (sorted_scores - sorted_scores.detach()) + 1  # exactly 1.0 forward: x - x == 0
            shuffled = channel_perturbation(self.expand(x), order) * gate[:, :, None, None]
        return self.reduce(shuffled)  # (B, C, H, W)
