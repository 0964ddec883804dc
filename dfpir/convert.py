"""Convert a released DFPIR checkpoint to our format.

Usage::

    python -m dfpir.convert ORIGINAL.pth.tar -o dfpir_3task.safetensors --prompts clip_prompts.npz \\
        [--degradations noise15,noise25,noise50,rain,haze]

The architecture is read off the tensor shapes; ``--dim`` etc. are not needed. The file is read
with ``torch.load(weights_only=True)``, so a malicious checkpoint cannot run code. Released weights
were trained with CLIP ViT-B/32 prompt embeddings: pass them with ``--prompts`` (name -> 512-d
vector, ``.npz`` or ``.safetensors``), otherwise the local hashing embeddings are stored and the
model will not restore as published. The prompt file must hold a finite, non-zero vector for
every degradation the checkpoint was trained for (``--degradations``; by default every registered
one), and every vector in it is stored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import save
from .degradations import DEGRADATIONS, get_degradation
from .errors import CommandParser, UserError, cli_main
from .files import check_output_folder
from .official import from_official, infer_official_kwargs, load_official_file, official_config
from .model.prompts import PromptBank


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m dfpir.convert``."""
    p = CommandParser(prog="python -m dfpir.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="the original .pth / .pth.tar / .ckpt file")
    p.add_argument("-o", "--output", required=True, help="our checkpoint to write (.safetensors)")
    p.add_argument("--prompts", help="prompt embeddings, name -> vector (.npz or .safetensors), e.g. CLIP text features")
    p.add_argument(
        "--degradations",
        metavar="NAMES",
        help="comma-separated degradations the checkpoint was trained for; --prompts must hold each of them "
        f"(default: every registered one, {','.join(DEGRADATIONS)})",
    )
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
    if option is None:
        return list(DEGRADATIONS)
    names = list(dict.fromkeys(n.strip() for n in option.split(",") if n.strip()))
    if not names:
        raise UserError("--degradations needs at least one degradation name")
    try:
        return [get_degradation(n).name for n in names]
    except UserError as exc:
        raise UserError(f"--degradations: {exc}") from None


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


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.convert CHECKPOINT -o OUTPUT [--prompts FILE] [--degradations NAMES]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    check_output(Path(args.output))
    required = trained_for(args.degradations)
    prompts = load_prompts(args.prompts, required) if args.prompts else None  # small: checked before the checkpoint
    state_dict = load_official_file(args.checkpoint)
    kwargs = infer_official_kwargs(state_dict)
    try:
        config = official_config(**kwargs)
    except UserError as exc:
        raise UserError(f"{args.checkpoint}: its tensor shapes make no valid DFPIR ({exc}); is it a checkpoint of the original DFPIR?") from None
    if prompts is not None and prompts.dim != config.prompt_dim:
        raise UserError(f"{args.prompts}: prompt embeddings have width {prompts.dim}, DFPIR needs {config.prompt_dim}")
    model = from_official(state_dict, prompts=prompts, **kwargs)
    save(model, args.output)
    print(f"wrote {args.output}: {model.num_parameters():,} parameters, config {kwargs}")
    print(f"prompt embeddings for: {', '.join(model.prompts.names)}")
    if prompts is None:
        print("note: no --prompts given; stored local hashing embeddings, not the CLIP ones the weights were trained with", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
