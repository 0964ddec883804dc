"""The demo behind ``make demo``: degrade the built-in photos, restore them, show the gain.

``python -m dfpir.demo [--weights W] [-o demo_output]`` takes the held-out (validation) part of
every built-in photograph, applies each degradation with a fixed seed, restores it with the
shipped weights (the true degradation's prompt, and the classifier's guess), and writes

- ``gallery.png``: a contact sheet, one row per degradation: degraded | restored | clean;
- ``index.html``: the same images, full size, with their PSNR;
- ``results.json``: the numbers of the printed table.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from .errors import CommandParser, UserError, check_at_least, cli_main
from .metrics import psnr, ssim
from .model.classifier import CLEAN
from .progress import progress

if TYPE_CHECKING:  # pragma: no cover
    from .inference.runner import Restorer

SEED = 2025
MAX_SIDE = 192  # centre crop, so the demo runs in a minute or two on 2 CPU cores


def centre_crop(image: np.ndarray, side: int = MAX_SIDE) -> np.ndarray:
    """The central ``side`` x ``side`` part of an (H, W, C) image (smaller sides are kept)."""
    h, w = image.shape[:2]
    th, tw = min(h, side), min(w, side)
    top, left = (h - th) // 2, (w - tw) // 2
    return image[top : top + th, left : left + tw]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float -> (H, W, 3) uint8, clipped and rounded."""
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], pad: int = 4) -> np.ndarray:
    """Rows of equally sized uint8 tiles, each row labelled by its name in a left margin."""
    from PIL import Image, ImageDraw

    tile_h, tile_w = rows[0][1][0].shape[:2]
    margin = 80
    cols = len(rows[0][1])
    sheet = Image.new("RGB", (margin + cols * (tile_w + pad) + pad, len(rows) * (tile_h + pad) + pad + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(["degraded", "restored", "clean"][:cols]):
        draw.text((margin + pad + c * (tile_w + pad), 2), title, fill="black")
    for r, (name, tiles) in enumerate(rows):
        y = 16 + pad + r * (tile_h + pad)
        draw.text((4, y + tile_h // 2), name, fill="black")
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (margin + pad + c * (tile_w + pad), y))
    return np.asarray(sheet)


def run_demo(weights: Path | None, out: Path, photos: int | None = None, precision: str = "fp32", device: str = "cpu") -> dict:
    """Degrade, restore and measure; write the gallery into ``out``. Returns the results table.

    Restoration goes through [`dfpir.inference.runner.Restorer`][dfpir.inference.runner.Restorer], exactly as ``python -m dfpir.restore``.
    """
    from .data import builtin_photos
    from .inference.runner import Restorer

    if photos is not None:
        check_at_least("--photos", photos, 1)
    restorer = Restorer(weights, device, precision)
    # The degradations to show: the classifier's order when there is one, without its "clean"
    # class (nothing to degrade with; auto may still pick it for a degraded photo).
    names = [n for n in restorer.classifier.classes if n != CLEAN] if restorer.classifier is not None else restorer.names
    images = [(n, centre_crop(img)) for n, img in builtin_photos("val")][:photos]
    with staged_folder(out) as stage:
        results = _degrade_restore_measure(restorer, names, images, stage)
    return results


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write into; its files move into ``out`` only on success,
    so an interrupted or failed run leaves no half-written gallery (and no empty ``out``)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file, not a folder; choose another output folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as exc:
        raise UserError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
    except OSError as exc:  # a full disk or a vanished folder while the gallery is written
        raise UserError(f"cannot write the demo's output to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _degrade_restore_measure(restorer: Restorer, names: list[str], images: list[tuple[str, np.ndarray]], out: Path) -> dict:
    """The demo's loop: every degradation of every photo, restored (and classified); files into ``out``."""
    from .degradations import degrade
    import imageio.v3 as iio

    results: dict[str, dict] = {}
    gallery_rows, page = [], []
    bar = progress(len(names) * len(images), "demo", "image", summary=False)  # a bar, or log lines when not a terminal
    for d, name in enumerate(names):
        stats = {"input_psnr": [], "psnr": [], "input_ssim": [], "ssim": [], "auto_psnr": [], "classified": []}
        for i, (photo, clean) in enumerate(images):
            generator = torch.Generator().manual_seed(SEED + 1000 * d + i)
            batch = torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1)))[None]
            degraded = degrade(batch, [name], generator).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            restored, _ = restorer.restore(degraded, restorer.prompt(name))
            if restorer.classifier is not None:
                guess, _ = restorer.classify(degraded)
                stats["classified"].append(guess == name)
                auto = restored if guess == name else restorer.restore(degraded, restorer.prompt("auto", degraded))[0]  # "clean" too
                stats["auto_psnr"].append(psnr(auto, clean))
            stats["input_psnr"].append(psnr(degraded, clean))
            stats["psnr"].append(psnr(restored, clean))
            stats["input_ssim"].append(ssim(degraded, clean))
            stats["ssim"].append(ssim(restored, clean))
            tiles = [to_uint8(degraded), to_uint8(restored), to_uint8(clean)]
            for kind, tile in zip(["degraded", "restored", "clean"], tiles):
                iio.imwrite(out / f"{photo}_{name}_{kind}.png", tile)
            page.append((photo, name, stats["input_psnr"][-1], stats["psnr"][-1]))
            if i == 0:
                gallery_rows.append((name, tiles))
            bar.update(1)
        results[name] = {k: float(np.mean(v)) if v else None for k, v in stats.items()}
    bar.close()
    iio.imwrite(out / "gallery.png", contact_sheet(gallery_rows))
    (out / "index.html").write_text(gallery_html(page))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def gallery_html(rows: list[tuple[str, str, float, float]]) -> str:
    """The HTML page of the gallery: one table row per photo and degradation, with PSNR before and after."""
    cells = "\n".join(
        f"<tr><td>{html.escape(d)}</td><td>{html.escape(p)}</td>"
        + "".join(f'<td><img src="{html.escape(p)}_{html.escape(d)}_{k}.png"></td>' for k in ("degraded", "restored", "clean"))
        + f"<td>{a:.2f} &rarr; {b:.2f} dB</td></tr>"
        for p, d, a, b in rows
    )
    return (
        "<!doctype html><meta charset=utf-8><title>dfpir demo</title>"
        "<style>body{font-family:sans-serif}img{max-width:220px}td{padding:4px}</style>"
        "<h1>dfpir demo: degraded, restored, clean</h1><p>Held-out parts of the built-in photos; PSNR of input and output.</p>"
        f"<table><tr><th>degradation</th><th>photo</th><th>degraded</th><th>restored</th><th>clean</th><th>PSNR</th></tr>{cells}</table>"
    )


def format_results(results: dict) -> str:
    """The demo's results as a fixed-width text table, one line per degradation."""
    lines = [f"{'degradation':<12}{'input PSNR':>12}{'restored':>12}{'gain dB':>10}{'input SSIM':>12}{'SSIM':>8}{'auto PSNR':>11}{'cls acc':>9}"]
    for name, r in results.items():
        auto = f"{r['auto_psnr']:>11.2f}{r['classified']:>9.0%}" if r["auto_psnr"] is not None else f"{'-':>11}{'-':>9}"
        lines.append(f"{name:<12}{r['input_psnr']:>12.2f}{r['psnr']:>12.2f}{r['psnr'] - r['input_psnr']:>+10.2f}{r['input_ssim']:>12.3f}{r['ssim']:>8.3f}{auto}")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m dfpir.demo [--weights W] [-o DIR] [--photos N]``; returns the exit code."""
    p = CommandParser(prog="python -m dfpir.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, help="checkpoint (default: the shipped demo weights)")
    p.add_argument("-o", "--output", type=Path, default=Path("demo_output"))
    p.add_argument("--photos", type=int, help="use only the first N built-in photos")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    results = run_demo(args.weights, args.output, args.photos, args.precision, args.device)
    print(format_results(results))
    if args.weights is None:
        print("note: the shipped weights were trained on the clean corpus (make corpus), which holds some of these "
              "pictures whole; for photos they never saw: python -m dfpir.bench heldout")
    print(f"gallery: {args.output / 'gallery.png'} and {args.output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
