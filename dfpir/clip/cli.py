"""``python -m dfpir.clip``: CLIP prompt embeddings of the registry's texts, as the original computed them.

Command line::

    python -m dfpir.clip prompts -o clip_prompts.safetensors --clip-weights ViT-B-32.pt
    python -m dfpir.clip prompts -o clip_prompts.safetensors --download            # OpenAI's file, SHA-256 checked
    python -m dfpir.clip prompts -o simple.safetensors --prompt-set simple --precision fp16 --degradations noise15,noise25,noise50,rain,haze

The file (``.safetensors`` or ``.npz``, name -> 512 float32 values, with the texts) is what
``python -m dfpir.convert --prompts`` reads; ``convert --clip`` does both in one go. The CLIP
weights come from ``--clip-weights PATH``, or from ``--download`` (OpenAI's ViT-B-32.pt into
[`default_weights_path`][dfpir.clip.weights.default_weights_path]), or from that cache when an earlier ``--download`` left them there;
nothing is downloaded without ``--download``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..degradations import DEGRADATIONS, get_degradation
from ..errors import CommandParser, UserError, cli_main
from ..files import atomic_write, check_output_folder
from ..model.prompts import PromptBank
from .prompts import PROMPT_SETS, clip_prompt_bank
from .text_encoder import PRECISIONS, ClipTextEncoder
from .tokenizer import require_extra
from .weights import VIT_B_32_URL, default_weights_path, describe, download, is_vit_b_32, load_text_encoder

PROMPT_WIDTH = 512  # DFPIR's prompt_dim: the width of CLIP ViT-B/32's text features

PRECISION_NOTES = {
    "fp16": "float16 as the original's clip.load on a GPU; computed here on the CPU, so equal to a GPU's to float16 rounding",
    "fp32": "float32, as clip.load on a CPU",
}


DEFAULTS = {"prompt_set": "detailed", "precision": "fp16"}
"""``--prompt-set`` and ``--precision`` when not given: the detailed prompts, in float16 as the original."""


def add_clip_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options that say which CLIP weights, prompt texts and precision to use (shared with ``convert --clip``).

    With ``defaults=False``, ``--prompt-set`` and ``--precision`` default to ``None``, so a command
    can tell whether they were given (``convert`` refuses them without ``--clip``); fill them in
    with [`DEFAULTS`][dfpir.clip.cli.DEFAULTS].
    """
    parser.add_argument("--prompt-set", choices=PROMPT_SETS, default=DEFAULTS["prompt_set"] if defaults else None,
                        help="the registry's prompt texts: detailed (most released checkpoints) or simple "
                        "('Noise', 'Rain', 'Haze': the original's 3-task simple-prompt checkpoint); default detailed")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS["precision"] if defaults else None,
                        help="fp16 (default: what the original computed on its GPU) or fp32 (CLIP on a CPU)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--clip-weights", metavar="PATH",
                        help="a local CLIP ViT-B/32 file: OpenAI's ViT-B-32.pt, or Hugging Face's openai/clip-vit-base-patch32 weights")
    source.add_argument("--download", action="store_true",
                        help=f"download OpenAI's ViT-B-32.pt ({VIT_B_32_URL}, about 350 MB, SHA-256 checked) "
                        f"into {default_weights_path()} unless it is there")


def weights_path(args: argparse.Namespace) -> Path:
    """The CLIP weights the options name: ``--clip-weights``, a ``--download``, or an earlier download."""
    if args.clip_weights:
        return Path(args.clip_weights)
    if args.download:
        return download()
    cached = default_weights_path()
    if cached.is_file():
        return cached
    raise UserError(f"no CLIP weights: pass --clip-weights PATH (OpenAI's ViT-B-32.pt), or --download to fetch it from "
                    f"{VIT_B_32_URL} into {cached}")


def encoder_from_args(args: argparse.Namespace, precision: str | None = None) -> tuple[ClipTextEncoder, str]:
    """The text encoder the options name, in ``precision`` (default ``--precision``), and a description of its weights.

    Raises
    ------
    UserError
        Without the ``clip`` extra, without weights, or for weights that are not a CLIP text tower
        with 512-value features (ViT-B/32's, which DFPIR's released checkpoints were trained with).
    """
    require_extra()  # before a download or a 350 MB read that could not be used
    path = weights_path(args)
    encoder = load_text_encoder(path, precision or args.precision)
    if encoder.config.embed_dim != PROMPT_WIDTH:
        raise UserError(f"{path}: its text features have {encoder.config.embed_dim} values, DFPIR's prompts {PROMPT_WIDTH} "
                        "(CLIP ViT-B/32's); give ViT-B/32's weights")
    sizes = "" if is_vit_b_32(encoder.config) else f"; its text tower is not of ViT-B/32's sizes ({encoder.config})"
    return encoder, f"{path}: {describe(path)}{sizes}"


def names_from(option: str | None) -> list[str]:
    """The registered degradations named by a comma-separated option (all of them when it is not given)."""
    if option is None:
        return list(DEGRADATIONS)
    names = list(dict.fromkeys(n.strip() for n in option.split(",") if n.strip()))
    if not names:
        raise UserError("--degradations needs at least one degradation name")
    try:
        return [get_degradation(n).name for n in names]
    except UserError as exc:
        raise UserError(f"--degradations: {exc}") from None


def check_prompt_output(path: Path) -> None:
    """Refuse an output that [`PromptBank.from_file`][dfpir.model.prompts.PromptBank.from_file] could not read, before any work."""
    if path.suffix not in (".safetensors", ".npz"):
        raise UserError(f"-o {path}: prompt files are .safetensors or .npz; name it with one of those suffixes")
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give a file name ending in .safetensors or .npz")
    check_output_folder(path.parent)


def write_bank(bank: PromptBank, path: Path) -> None:
    """Write ``bank`` to ``path`` atomically (the format follows the suffix, as in [`PromptBank.to_file`][dfpir.model.prompts.PromptBank.to_file])."""

    def write(tmp: str) -> None:
        staged = Path(tmp + path.suffix)  # to_file picks the format by suffix, and numpy appends .npz otherwise
        try:
            bank.to_file(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)

    atomic_write(path, write)


def describe_bank(bank: PromptBank) -> list[str]:
    """One line per prompt: name, vector norm, text."""
    return [f"  {name:<9} |v| = {float((bank[name] ** 2).sum() ** 0.5):7.3f}  {bank.texts.get(name, '')!r}" for name in bank.names]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m dfpir.clip``."""
    p = CommandParser(prog="python -m dfpir.clip", description="Compute the CLIP ViT-B/32 embeddings of the registry's prompt texts as the original DFPIR did.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    c = sub.add_parser("prompts", help="write the CLIP embeddings of the registry's prompt texts")
    c.add_argument("-o", "--output", required=True, help="the prompt file to write (.safetensors or .npz)")
    c.add_argument("--degradations", metavar="NAMES",
                   help=f"comma-separated degradations (default: every registered one, {','.join(DEGRADATIONS)})")
    add_clip_options(c)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.clip prompts -o FILE [...]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    check_prompt_output(output)
    names = names_from(args.degradations)
    encoder, source = encoder_from_args(args)
    bank = clip_prompt_bank(encoder, args.prompt_set, names)
    write_bank(bank, output)
    print(f"wrote {output}: {len(bank.names)} CLIP ViT-B/32 text embeddings of the {args.prompt_set} prompts, "
          f"{args.precision} ({PRECISION_NOTES[args.precision]}), not normalised")
    print(f"weights {source}")
    print("\n".join(describe_bank(bank)))
    return 0
