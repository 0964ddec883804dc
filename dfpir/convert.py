"""Convert a released DFPIR checkpoint to our format.

Usage::

    python -m dfpir.convert ORIGINAL.pth.tar -o dfpir_3task.safetensors --prompts clip_prompts.npz \\
        [--degradations noise15,noise25,noise50,rain,haze]
    python -m dfpir.convert ORIGINAL.pth.tar -o dfpir_3task.safetensors --clip --clip-weights ViT-B-32.pt \\
        [--prompt-set detailed|simple] [--precision fp16|fp32] [--degradations ...]

The architecture is read off the tensor shapes; ``--dim`` etc. are not needed. The file is read
with ``torch.load(weights_only=True)``, so a malicious checkpoint cannot run code. Released weights
were trained with CLIP ViT-B/32 prompt embeddings: pass them with ``--prompts`` (name -> 512-d
vector, ``.npz`` or ``.safetensors``, e.g. from ``python -m dfpir.clip prompts``), or compute them
here with ``--clip`` (the [`dfpir.clip`][dfpir.clip] options); otherwise the local hashing embeddings are
stored and the model will not restore as published. The prompt file must hold a finite, non-zero
vector for every degradation the checkpoint was trained for (``--degradations``; by default every
registered one), and every vector in it is stored.

Every conversion also checks whether the checkpoint's DGM weights still look like PyTorch's
default initialisation ([`dgm_init_fits`][dfpir.convert.dgm_init_fits]): the original code never trains them (only the integer
order of their output is used), so a released checkpoint's DGMs should; the line it prints says
what that implies about the prompts the checkpoint can have been trained with.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import save
from .clip.cli import DEFAULTS as CLIP_DEFAULTS, add_clip_options, encoder_from_args, names_from
from .clip.prompts import encode_texts, prompt_texts
from .clip.text_encoder import ClipTextEncoder
from .degradations import DEGRADATIONS
from .errors import CommandParser, UserError, cli_main
from .files import check_output_folder
from .model.network import DFPIR
from .model.perturbation import DGM
from .model.prompts import PromptBank
from .official import from_official, infer_official_kwargs, load_official_file, official_config

KS_ALPHA = 1e-6
"""False-alarm rate of the initialisation check per tensor: a uniform sample is called "trained"
this rarely (16 tensors in the paper's model: about 2e-5 per checkpoint)."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m dfpir.convert``."""
    p = CommandParser(prog="python -m dfpir.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="the original .pth / .pth.tar / .ckpt file")
    p.add_argument("-o", "--output", required=True, help="our checkpoint to write (.safetensors)")
    p.add_argument("--prompts", help="prompt embeddings, name -> vector (.npz or .safetensors), e.g. CLIP text features")
    p.add_argument("--clip", action="store_true",
                   help="compute the prompt embeddings with CLIP ViT-B/32 as the original did (needs pip install 'dfpir[clip]' "
                   "and CLIP weights: --clip-weights or --download)")
    p.add_argument(
        "--degradations",
        metavar="NAMES",
        help="comma-separated degradations the checkpoint was trained for; --prompts (or --clip) must hold each of them "
        f"(default: every registered one, {','.join(DEGRADATIONS)})",
    )
    add_clip_options(p, defaults=False)
    return p


def check_output(path: Path) -> None:
    """Refuse an output that cannot be a checkpoint file, before the (large) input is read."""
    if path.suffix != ".safetensors":
        raise UserError(f"-o {path}: our checkpoints are safetensors files; name it with a .safetensors suffix")
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give a file name ending in .safetensors")
    check_output_folder(path.parent)


def trained_for(option: str | None) -> list[str]:
    """The registered degradations named by ``--degradations`` (all of them when it is not given)."""
    return names_from(option)


def load_prompts(path: str, required: list[str]) -> PromptBank:
    """The prompt file, refused in one line unless it holds every ``required`` name (each entry is
    checked by [`PromptBank.from_file`][dfpir.model.prompts.PromptBank.from_file]): a checkpoint must know every degradation it was trained for."""
    bank = PromptBank.from_file(path)
    missing = [n for n in required if n not in bank]
    if missing:
        raise UserError(
            f"{path} lacks prompt embeddings for {', '.join(missing)}; it must hold every degradation the checkpoint "
            f"was trained for ({', '.join(required)}); if it was trained for fewer, name them with --degradations"
        )
    return bank


@dataclass(frozen=True)
class InitFit:
    """How one DGM tensor compares with PyTorch's default initialisation of ``nn.Linear``.

    Both the weight (Kaiming-uniform with ``a = sqrt(5)``) and the bias start uniform on
    ``[-b, b]`` with ``b = 1 / sqrt(fan_in)``, whose standard deviation is ``b / sqrt(3)``.
    """

    name: str
    size: int
    bound: float
    max_ratio: float
    """``max |w| / b``: at most 1 at initialisation."""
    std_ratio: float
    """``std(w) / (b / sqrt(3))``: about 1 at initialisation."""
    ks: float
    """Kolmogorov-Smirnov distance between the values and the uniform distribution on ``[-b, b]``."""

    @property
    def threshold(self) -> float:
        """The KS distance a uniform sample of this size exceeds with probability [`KS_ALPHA`][dfpir.convert.KS_ALPHA]."""
        return math.sqrt(-0.5 * math.log(KS_ALPHA / 2)) / math.sqrt(self.size)

    @property
    def initial(self) -> bool:
        """Whether the tensor looks like its initialisation: inside ``[-b, b]`` (to float16 rounding) and
        uniform by the KS test."""
        return self.max_ratio <= 1 + 1e-3 and self.ks <= self.threshold


def uniform_ks(values: torch.Tensor, bound: float) -> float:
    """Kolmogorov-Smirnov distance between ``values``' empirical distribution and uniform on ``[-bound, bound]``."""
    x = values.detach().flatten().double().sort().values
    n = x.numel()
    cdf = ((x + bound) / (2 * bound)).clamp(0, 1)  # the uniform's CDF at each sorted value
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(steps - cdf, cdf - (steps - 1 / n)).max())


def init_fit(name: str, tensor: torch.Tensor, fan_in: int) -> InitFit:
    """Compare one tensor of a linear layer with ``fan_in`` inputs with its default initialisation."""
    bound = 1 / math.sqrt(fan_in)
    values = tensor.detach().double()
    return InitFit(name, values.numel(), bound, float(values.abs().max()) / bound,
                   float(values.std()) / (bound / math.sqrt(3)) if values.numel() > 1 else 1.0, uniform_ks(values, bound))


def dgm_init_fits(model: DFPIR) -> list[InitFit]:
    """Every DGM weight and bias of ``model`` compared with PyTorch's default initialisation."""
    fits = []
    for name, module in model.named_modules():
        if isinstance(module, DGM):
            for layer in ("linear1", "linear2"):
                linear = getattr(module, layer)
                fits += [init_fit(f"{name}.{layer}.{kind}", getattr(linear, kind), linear.in_features) for kind in ("weight", "bias")]
    return fits


def dgm_diagnostic(fits: list[InitFit]) -> str:
    """The one line ``convert`` prints about the DGMs' weights and what they imply about the prompts."""
    if not fits:
        return "DGM check: this model has no DGMs"
    off = [f for f in fits if not f.initial]
    if not off:
        worst = max(fits, key=lambda f: f.ks / f.threshold)
        return (f"DGM check: all {len(fits)} DGM tensors look like PyTorch's default initialisation (uniform on +-1/sqrt(fan_in); "
                f"largest KS distance {worst.ks:.4f}, {worst.ks / worst.threshold:.0%} of the p={KS_ALPHA:g} threshold): never trained, "
                "as in the original code, so they reveal nothing about the prompts and each channel order is set by the prompt "
                "embedding alone; only the exact CLIP embeddings of the texts it was trained with reproduce it (detailed for most "
                "released checkpoints, simple for the 3-task simple-prompt one; see docs/guide/convert.md)")
    worst = max(off, key=lambda f: max(f.max_ratio, f.ks / f.threshold))
    return (f"DGM check: {len(off)} of {len(fits)} DGM tensors do not look like their initialisation (e.g. {worst.name}: "
            f"max |w| {worst.max_ratio:.2f}x the bound 1/sqrt(fan_in), std {worst.std_ratio:.2f}x, KS {worst.ks:.4f} > {worst.threshold:.4f}): "
            "they were trained, which the original code never does (no gradient reaches them), so this checkpoint is not from the "
            "original training as published and its channel orders were fitted to whatever embeddings it was trained with; "
            "CLIP embeddings of the original prompts reproduce it only if those were the ones")


def order_changes(model: DFPIR, a: PromptBank, b: PromptBank) -> tuple[dict[str, int], int]:
    """For each name in both banks, how many of the DGPBs' channel positions differ between the orders
    its two embeddings give; and the number of positions (2C summed over the four DGPBs)."""
    dgms = [getattr(model, f"dgpb{level}").perturb for level in range(1, 5)]
    changes = {}
    for name in (n for n in a.names if n in b):
        pa, pb = (torch.from_numpy(bank[name])[None] for bank in (a, b))  # (1, prompt_dim)
        changes[name] = sum(int((p.order(pa) != p.order(pb)).sum()) for p in dgms)
    return changes, sum(p.dgm.linear2.out_features for p in dgms)


def clip_banks(encoder: ClipTextEncoder, prompt_set: str, names: list[str], precision: str) -> tuple[PromptBank, PromptBank]:
    """The CLIP banks of ``names`` in ``precision`` and in the other precision (for [`order_changes`][dfpir.convert.order_changes]).

    The encoder holds float32 weights; float32 embeddings are computed first, since casting the
    weights to float16 is one way only.
    """
    texts = prompt_texts(prompt_set, names)
    fp32 = PromptBank(encode_texts(encoder.set_precision("fp32"), texts), texts)
    fp16 = PromptBank(encode_texts(encoder.set_precision("fp16"), texts), texts)
    return (fp16, fp32) if precision == "fp16" else (fp32, fp16)


def check_clip_options(args: argparse.Namespace) -> bool:
    """Whether CLIP computes the prompts (``--clip``, or a CLIP weights option); fills in the CLIP defaults.

    Raises
    ------
    UserError
        For ``--clip`` with ``--prompts``, or CLIP's options without ``--clip``.
    """
    use_clip = bool(args.clip or args.clip_weights or args.download)
    if use_clip and args.prompts:
        raise UserError("--prompts and --clip both give the prompt embeddings; use one")
    given = [f"--{k.replace('_', '-')}" for k in CLIP_DEFAULTS if getattr(args, k) is not None]
    if given and not use_clip:
        raise UserError(f"{' and '.join(given)} choose how --clip computes the prompts; add --clip (or give none)")
    for key, value in CLIP_DEFAULTS.items():
        setattr(args, key, getattr(args, key) or value)
    return use_clip


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.convert CHECKPOINT -o OUTPUT [--prompts FILE | --clip ...] [--degradations NAMES]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    use_clip = check_clip_options(args)
    check_output(Path(args.output))
    required = trained_for(args.degradations)
    prompts = load_prompts(args.prompts, required) if args.prompts else None  # small: checked before the checkpoint
    encoder, source = encoder_from_args(args, "fp32") if use_clip else (None, "")  # missing weights fail before the checkpoint is read
    state_dict = load_official_file(args.checkpoint)
    kwargs = infer_official_kwargs(state_dict)
    try:
        config = official_config(**kwargs)
    except UserError as exc:
        raise UserError(f"{args.checkpoint}: its tensor shapes make no valid DFPIR ({exc}); is it a checkpoint of the original DFPIR?") from None
    if prompts is not None and prompts.dim != config.prompt_dim:
        raise UserError(f"{args.prompts}: prompt embeddings have width {prompts.dim}, DFPIR needs {config.prompt_dim}")
    other = None
    if encoder is not None:
        prompts, other = clip_banks(encoder, args.prompt_set, required, args.precision)
    model = from_official(state_dict, prompts=prompts, **kwargs)
    save(model, args.output)
    print(f"wrote {args.output}: {model.num_parameters():,} parameters, config {kwargs}")
    print(f"prompt embeddings for: {', '.join(model.prompts.names)}")
    if other is not None:
        print(f"CLIP ViT-B/32, {args.prompt_set} prompts, {args.precision}; weights {source}")
        changes, positions = order_changes(model, prompts, other)
        flip = "fp32" if args.precision == "fp16" else "fp16"
        moved = ", ".join(f"{n} {c}" for n, c in changes.items() if c) or "none"
        print(f"channel orders with {flip} embeddings instead: positions (of {positions}) that change per prompt: {moved}")
    print(dgm_diagnostic(dgm_init_fits(model)))
    if prompts is None:
        print("note: neither --prompts nor --clip given; stored local hashing embeddings, not the CLIP ones the weights were trained with", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
