"""Export a model to ONNX: ``python -m dfpir.export [--weights W] [--degradations NAME... | all] -o DIR``.

One ONNX file per degradation, ``DIR/<degradation>.onnx``, taking an image (B, 3, H, W) float32
in [0, 1] and returning the restored image of the same shape (not clipped, as ``model(x, prompt)``).
Batch, height and width are dynamic; H and W must be at least 8.

Why one file per degradation: each DGPB's channel order is a stable descending sort of a function
of the prompt, which torch's ONNX exporter cannot translate (torch 2.13 has no ONNX function for
``aten.sort.stable``). A fixed prompt fixes the order, and then ``reduce(shuffle(expand(x)))`` is linear in ``x``: each DGPB's
channel perturbation becomes one 1x1 convolution ``C -> C`` with ``W = W_r P W_e`` and
``b = W_r P b_e + b_r`` ([`FoldedPerturbation`][dfpir.export.FoldedPerturbation]), exact up to rounding. The learnable
guidance folds the same way (its straight-through gate is exactly 1 in the forward pass). A model
without DGPBs (the ``restormer`` preset) takes no prompt, so it is exported once, as
``restormer.onnx``, whatever ``--degradations`` says.

Every file is checked before it is put in place: onnxruntime restores random images of each
``--sizes`` entry and the largest absolute difference to the PyTorch model (``model.restore``)
is printed. Above 1e-4 (fp32) the file is not written and the exit code is 1.
Existing files are replaced. Needs the optional packages: ``pip install 'dfpir[export]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import logging
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load
from .errors import CommandParser, UserError, cli_main
from .files import atomic_write, check_output_folder
from .inference.runner import resolve_weights
from .model.dgpb import DGPB
from .model.network import DFPIR, MULTIPLE
from .model.perturbation import ChannelPerturbation, inverse_order

#: Largest absolute difference (fp32) between onnxruntime and PyTorch that a file may show.
TOLERANCE = 1e-4
#: Smallest height and width: the padding to a multiple of 8 reflects, which needs 8 rows.
MIN_SIZE = MULTIPLE
#: ``--sizes`` by default, as (batch, height, width): odd sizes, a batch of 2 and the smallest.
DEFAULT_SIZES = ((1, 64, 48), (1, 37, 53), (2, 40, 72), (1, 8, 8))
#: The name of the one file a model without DGPBs is exported to.
PROMPT_FREE = "restormer"
PACKAGES = ("onnx", "onnxruntime", "onnxscript")
#: The shape traced by the exporter; its batch is 2 because torch.export fixes a dimension of size 1.
EXAMPLE_SHAPE = (2, 3, 32, 40)


def require_onnx() -> None:
    """Raise a one-line [`UserError`][dfpir.errors.UserError] unless the optional ONNX packages are installed."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)} (not installed): pip install 'dfpir[export]'")


class FoldedPerturbation(nn.Module):
    """A [`ChannelPerturbation`][dfpir.model.perturbation.ChannelPerturbation] for one fixed prompt, as one 1x1 convolution.

    With ``e = W_e x + b_e`` and ``shuffled[i] = e[order[i]]``, ``reduce(shuffled) = W_r P e + b_r``
    where ``W_r P = W_r[:, inv]`` and ``inv`` undoes ``order`` (as in
    [`dfpir.model.fused.perturbation`][dfpir.model.fused.perturbation]). The product is taken in float64, so the folded weights
    are the exact ones rounded once.

    Parameters
    ----------
    perturb : ChannelPerturbation
        The module to fold (read, not changed).
    prompt : torch.Tensor
        (1, prompt_dim) embedding that fixes the channel order.
    """

    def __init__(self, perturb: ChannelPerturbation, prompt: torch.Tensor) -> None:
        super().__init__()
        weight = perturb.expand.weight
        channels = weight.shape[1]
        inv = inverse_order(perturb.order(prompt))[0]  # (2C,)
        w_r = perturb.reduce.weight.detach().flatten(1).double()[:, inv]  # (C, 2C): W_r P
        w_e, b_e = weight.detach().flatten(1).double(), perturb.expand.bias.detach().double()  # (2C, C), (2C,)
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=True, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_((w_r @ w_e)[:, :, None, None])  # (C, C, 1, 1)
            self.conv.bias.copy_(w_r @ b_e + perturb.reduce.bias.double())

    def forward(self, x: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, C, H, W) -> perturbed features (B, C, H, W); ``prompt`` is ignored (it is folded in)."""
        return self.conv(x)


class Specialised(nn.Module):
    """A network for one degradation: ``image`` (B, 3, H, W) -> restored, for any H, W >= 8.

    It pads bottom and right by reflection to a multiple of 8 and crops back, as
    [`DFPIR.forward`][dfpir.model.network.DFPIR.forward] does for every image of at least 8 x 8 pixels, but without the shape
    checks and branches that the exporter cannot trace with a symbolic size.

    Parameters
    ----------
    network : DFPIR
        A network whose DGPBs (if any) hold [`FoldedPerturbation`][dfpir.export.FoldedPerturbation] modules; it is used, not copied.
    """

    def __init__(self, network: DFPIR) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Restore ``image`` (B, 3, H, W) -> (B, 3, H, W), unclipped."""
        h, w = image.shape[-2:]
        # H_padded = 8 * ceil(H / 8), written so that the tracer's symbolic sizes stay products
        # (``-h % 8`` would carry a Mod through every layer and make the export many times slower)
        ph, pw = MULTIPLE * ((h + MULTIPLE - 1) // MULTIPLE) - h, MULTIPLE * ((w + MULTIPLE - 1) // MULTIPLE) - w
        padded = F.pad(image, (0, pw, 0, ph), mode="reflect")
        return self.network.forward_padded(padded, None)[..., :h, :w]


def check_degradation(model: DFPIR, degradation: str | None) -> None:
    """Refuse a degradation the model has no prompt for (one line listing the names it has)."""
    if not model.config.use_dgpb:
        return  # no DGPB reads a prompt
    if degradation is None or degradation not in model.prompts:
        what = "needs a degradation" if degradation is None else f"has no prompt for {degradation!r}"
        raise UserError(f"the model {what}; it knows: {', '.join(model.prompts.names)} (or all)")


def specialise(model: DFPIR, degradation: str | None) -> Specialised:
    """A copy of ``model`` for one degradation, ready to export (``model`` itself is untouched).

    Each DGPB's channel perturbation is folded into one 1x1 convolution
    ([`FoldedPerturbation`][dfpir.export.FoldedPerturbation]) for ``degradation``'s prompt. A model without DGPBs takes no
    prompt, so ``degradation`` may be ``None`` for it and is ignored.

    Parameters
    ----------
    model : DFPIR
        The network, in the dtype and on the device the export should use.
    degradation : str or None
        A name in ``model.prompts``.
    """
    check_degradation(model, degradation)
    network = copy.deepcopy(model).eval().set_fused(False)  # the strip kernels would read the prompt
    if network.config.use_dgpb:
        prompt = network.embed_prompts(degradation, 1)  # (1, prompt_dim)
        for block in network.modules():
            if isinstance(block, DGPB):
                block.perturb = FoldedPerturbation(block.perturb, prompt)
    return Specialised(network).eval()


def onnx_program(model: DFPIR, optimize: bool = True):
    """Trace ``model`` with dynamic batch, height and width into a ``torch.onnx.ONNXProgram``.

    The trace is the slow part of an export (tens of seconds for the ``tiny`` preset, most of it
    symbolic shape arithmetic) and the graph is the same for every degradation: only the folded
    weights differ. So the model is traced once, specialised to its first prompt, and
    [`export_onnx`][dfpir.export.export_onnx] puts in each degradation's weights. ``optimize`` runs onnxscript's graph
    optimiser (about 2.5x fewer nodes, faster in onnxruntime); ``verify`` and ``report`` stay off,
    as [`verify_onnx`][dfpir.export.verify_onnx] checks every file itself.

    Parameters
    ----------
    model : DFPIR
        The network (not changed).
    optimize : bool
        Optimise the graph.
    """
    require_onnx()
    specialised = specialise(model, model.prompts.names[0] if model.config.use_dgpb else None)
    p = next(specialised.parameters())
    example = torch.rand(*EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=MIN_SIZE), 3: torch.export.Dim("width", min=MIN_SIZE)}
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(
            specialised, (example,), dynamo=True, dynamic_shapes=(dims,), input_names=["image"],
            output_names=["restored"], optimize=optimize, verify=False, report=False, verbose=False,
        )
    # the crop's sizes come out as "Min(height, 8*(((height + 7)//8)))", which is the height
    restored = program.model.graph.outputs[0].shape
    program.rename_axes({restored[2]: "height", restored[3]: "width"})
    return program


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence what ``torch.onnx.export`` says about itself and not about our model: that it skips
    torchvision's operators (we use none) and a deprecation inside torch's own code."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def folded_weights(specialised: Specialised) -> dict[str, torch.Tensor]:
    """The weights that differ from one degradation to the next: each [`FoldedPerturbation`][dfpir.export.FoldedPerturbation]'s,
    by their names in ``specialised``'s state dict (and so in the ONNX graph)."""
    return {name: tensor for name, tensor in specialised.state_dict().items() if ".perturb.conv." in name}


def put_weights(program, specialised: Specialised) -> None:
    """Put ``specialised``'s folded weights into ``program`` (from [`onnx_program`][dfpir.export.onnx_program] of the same model)."""
    weights = folded_weights(specialised)
    missing = sorted(set(weights) - set(program.model.graph.initializers))
    if missing:  # onnxscript's optimiser renamed or folded them: the program cannot be reused
        raise RuntimeError(f"the ONNX graph has no initializer {missing[0]}; export without reusing the program")
    program.apply_weights(weights)


def reference_output(model: DFPIR, degradation: str | None, image: torch.Tensor) -> torch.Tensor:
    """What the PyTorch model gives for ``image`` (B, 3, H, W): ``model.restore``, or for a model
    without DGPBs ``model(image)`` (it takes no prompt)."""
    if model.config.use_dgpb:
        return model.restore(image, degradation)
    with torch.no_grad():
        return model(image)


def verify_onnx(path: str | Path, model: DFPIR, degradation: str | None,
                sizes: tuple[tuple[int, int, int], ...] = DEFAULT_SIZES, seed: int = 0) -> list[float]:
    """The largest absolute difference between onnxruntime running ``path`` and ``model`` on random
    images, one per ``sizes`` entry (batch, height, width), in that order.

    Parameters
    ----------
    path : str or Path
        An ONNX file written by [`export_onnx`][dfpir.export.export_onnx] for ``degradation``.
    model : DFPIR
        The PyTorch model it was exported from.
    degradation : str or None
        Its prompt (``None`` for a model without DGPBs).
    sizes : tuple of (batch, height, width)
        Input shapes; height and width at least 8.
    seed : int
        Seed of the random images (uniform in [0, 1]).
    """
    require_onnx()
    import onnxruntime  # optional dependency (dfpir[export]): the core install has no onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    diffs = []
    for batch, height, width in sizes:
        image = torch.rand(batch, 3, height, width, generator=generator)
        expected = reference_output(model, degradation, image.to(p.device, p.dtype)).float().cpu().numpy()
        (restored,) = session.run(["restored"], {"image": image.numpy()})
        diffs.append(float(np.abs(restored - expected).max()))
    return diffs


class VerificationError(Exception):
    """onnxruntime and PyTorch differ by more than ``TOLERANCE`` (``diffs``: one per size)."""

    def __init__(self, diffs: list[float]) -> None:
        super().__init__(f"onnxruntime differs from PyTorch by up to {max(diffs):.1e} (tolerance {TOLERANCE:.0e})")
        self.diffs = diffs


def export_onnx(model: DFPIR, degradation: str | None, path: str | Path, *,
                sizes: tuple[tuple[int, int, int], ...] = DEFAULT_SIZES, optimize: bool = True,
                program=None) -> list[float]:
    """Write ``model`` for ``degradation`` to the ONNX file ``path``, checked before it is put in place.

    The file is written atomically and only once [`verify_onnx`][dfpir.export.verify_onnx] has found every difference
    within ``TOLERANCE``; otherwise [`VerificationError`][dfpir.export.VerificationError] is raised and no file is
    written. Returns the differences, one per ``sizes`` entry.

    Parameters
    ----------
    model : DFPIR
        The network (not changed; see [`specialise`][dfpir.export.specialise]).
    degradation : str or None
        A name in ``model.prompts`` (``None`` only for a model without DGPBs).
    path : str or Path
        The ``.onnx`` file to write (replaced if it exists).
    sizes : tuple of (batch, height, width)
        Shapes to verify on (empty: no verification).
    optimize : bool
        Optimise the graph (see [`onnx_program`][dfpir.export.onnx_program]); ignored when ``program`` is given.
    program : torch.onnx.ONNXProgram, optional
        [`onnx_program`][dfpir.export.onnx_program] of ``model``, to reuse instead of tracing again (its folded weights
        are replaced by ``degradation``'s).
    """
    specialised = specialise(model, degradation)
    if program is None:
        program = onnx_program(model, optimize)
    put_weights(program, specialised)
    diffs: list[float] = []

    def write(tmp: str) -> None:
        program.save(tmp, external_data=False)  # one self-contained file: every preset is far below 2 GB
        diffs.extend(verify_onnx(tmp, model, degradation, sizes))
        if diffs and max(diffs) > TOLERANCE:
            raise VerificationError(diffs)

    atomic_write(path, write)
    return diffs


# --------------------------------------------------------------------------- the command


def parse_size(text: str) -> tuple[int, int, int]:
    """``HxW`` or ``BxHxW`` -> (batch, height, width), for argparse (one-line errors)."""
    if not re.fullmatch(r"\d+(x\d+){1,2}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW or BxHxW, e.g. 37x53 or 2x64x48")
    numbers = [int(n) for n in text.split("x")]
    batch, height, width = numbers if len(numbers) == 3 else [1, *numbers]
    if batch < 1 or min(height, width) < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"{text}: the batch must be >= 1 and height and width >= {MIN_SIZE}")
    return batch, height, width


def size_label(size: tuple[int, int, int]) -> str:
    """(batch, height, width) -> ``HxW``, or ``BxHxW`` for a batch of more than one."""
    batch, height, width = size
    return f"{height}x{width}" if batch == 1 else f"{batch}x{height}x{width}"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m dfpir.export``."""
    p = CommandParser(prog="python -m dfpir.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, help="dfpir checkpoint (default: the shipped demo weights)")
    p.add_argument("--degradations", nargs="+", metavar="NAME", default=["all"],
                   help="degradations to export, one file each (default: all the weights know)")
    p.add_argument("-o", "--outdir", required=True, type=Path, help="folder for the .onnx files (created if missing)")
    p.add_argument("--sizes", nargs="+", type=parse_size, metavar="[Bx]HxW", default=list(DEFAULT_SIZES),
                   help=f"input shapes to verify on (default: {' '.join(size_label(s) for s in DEFAULT_SIZES)})")
    p.add_argument("--no-optimize", action="store_true", help="skip onnxscript's graph optimiser (faster export, more nodes)")
    return p


def chosen(model: DFPIR, names: list[str]) -> list[str | None]:
    """The degradations to export: ``names`` (``all``: every one the model knows), checked, without
    repeats; ``[None]`` for a model without DGPBs."""
    if not model.config.use_dgpb:
        return [None]
    wanted = model.prompts.names if names == ["all"] else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in model.prompts]
    if unknown:
        raise UserError(f"unknown degradation {', '.join(unknown)}; these weights know: {', '.join(model.prompts.names)} (or all)")
    return wanted


@dataclass
class Row:
    """One exported (or refused) file of the closing table."""

    name: str
    path: Path
    diffs: list[float] = field(default_factory=list)
    written: bool = False


def table(rows: list[Row], sizes: list[tuple[int, int, int]]) -> str:
    """degradation / file / size / the max abs difference at each verification size."""
    head = ["degradation", "file", "MB", *(f"max|diff| {size_label(s)}" for s in sizes)]
    body = [[r.name, str(r.path) if r.written else "(not written)",
             f"{r.path.stat().st_size / 1e6:.1f}" if r.written else "-", *(f"{d:.1e}" for d in r.diffs)] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [head, *body])


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.export -o DIR [--weights W] [--degradations NAME... | all] [--sizes ...]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    require_onnx()
    if args.outdir.exists() and not args.outdir.is_dir():
        raise UserError(f"-o {args.outdir} is a file; give a folder (it is created if missing)")
    check_output_folder(args.outdir)
    model = load(resolve_weights(args.weights)).eval()
    names = chosen(model, args.degradations)
    if names == [None] and args.degradations != ["all"]:
        print(f"note: this model has no DGPBs and takes no prompt; one file, {PROMPT_FREE}.onnx, serves every degradation",
              file=sys.stderr)
    print("tracing the network (once for every degradation) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    program = onnx_program(model, optimize=not args.no_optimize)
    print(f"traced in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    rows = []
    for i, name in enumerate(names, start=1):
        row = Row(name or PROMPT_FREE, args.outdir / f"{name or PROMPT_FREE}.onnx")
        print(f"exporting {row.name} ({i} of {len(names)}) to {row.path} and verifying it ...", file=sys.stderr, flush=True)
        try:
            row.diffs = export_onnx(model, name, row.path, sizes=tuple(args.sizes), program=program)
            row.written = True
        except VerificationError as exc:
            row.diffs = exc.diffs
            row.path.unlink(missing_ok=True)  # a file from an earlier run would pass for this one
            print(f"error: {row.name}: {exc}; {row.path} not written", file=sys.stderr)
        rows.append(row)
    print(table(rows, args.sizes))
    return 0 if all(r.written for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
