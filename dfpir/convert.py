"""Convert a released DFPIR checkpoint to our format.

Usage::

    python -m dfpir.convert ORIGINAL.pth.tar -o dfpir_3task.safetensors [--prompts clip_prompts.npz]

The architecture is read off the tensor shapes; ``--dim`` etc. are not needed. The file is read
with ``torch.load(weights_only=True)``, so a malicious checkpoint cannot run code. Released weights
were trained with CLIP ViT-B/32 prompt embeddings: pass them with ``--prompts`` (name -> 512-d
vector, ``.npz`` or ``.safetensors``), otherwise the local hashing embeddings are stored and the
model will not restore as published.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import save
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
    return p


def check_output(path: Path) -> None:
    """Refuse an output that cannot be a checkpoint file, before the (large) input is read."""
    if path.suffix != ".safetensors":
        raise UserError(f"-o {path}: our checkpoints are safetensors files; name it with a .safetensors suffix")
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give a file name ending in .safetensors")
    check_output_folder(path.parent)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.convert CHECKPOINT -o OUTPUT [--prompts FILE]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    check_output(Path(args.output))
    state_dict = load_official_file(args.checkpoint)
    kwargs = infer_official_kwargs(state_dict)
    try:
        official_config(**kwargs)
    except ValueError as exc:
        raise UserError(f"{args.checkpoint}: its tensor shapes make no valid DFPIR ({exc}); is it a checkpoint of the original DFPIR?") from None
    prompts = PromptBank.from_file(args.prompts) if args.prompts else None
    if prompts is not None and prompts.dim != 512:
        raise UserError(f"{args.prompts}: prompt embeddings have width {prompts.dim}, DFPIR needs 512")
    model = from_official(state_dict, prompts=prompts, **kwargs)
    save(model, args.output)
    print(f"wrote {args.output}: {model.num_parameters():,} parameters, config {kwargs}")
    if prompts is None:
        print("note: no --prompts given; stored local hashing embeddings, not the CLIP ones the weights were trained with", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
