"""The held-out evaluation, photo by photo, beside classical anchors: ``python -m dfpir.bench heldout``.

One command for the numbers of the held-out photos (``python -m dfpir.data heldout`` writes them:
the nature photos of the Debian package ``mate-backgrounds``, which nothing trains on):

1. every photo is degraded by every degradation from a generator seeded by (photo name,
   degradation) with the fixed seed [`SEED`][dfpir.bench.heldout.SEED], as ``python -m dfpir.data degrade`` does, and
   rounded to 8 bits as that command writes it: every run, on every machine, scores the same
   inputs; a blurred photo keeps its true kernel for the non-blind anchor;
2. each input is restored as ``python -m dfpir.restore`` restores a file
   ([`Restorer`][dfpir.inference.runner.Restorer], tiling included) with the true degradation's prompt (``oracle``),
   the classifier's pick (``auto``) or both;
3. the classical anchors of [`dfpir.analysis.anchors`][dfpir.analysis.anchors] restore the same inputs: BM3D (when the
   ``bm3d`` package is installed) and non-local means for noise, Wiener with the true kernel and
   the fixed filter for blur, the dark-channel prior for haze;
4. one table per degradation gives each photo's input PSNR, restored PSNR and gain, each anchor's
   gain, the means, and the photos that came out worse than their input; a summary compares the
   mean gains with the targets of [`TARGETS`][dfpir.bench.heldout.TARGETS];
5. with ``auto``, the undegraded photos are classified too (``clean``: a right pick leaves the
   photo as it is), and a confusion matrix counts every pick, the clean photos included, against
   [`AUTO_TARGET`][dfpir.bench.heldout.AUTO_TARGET].

Gains are restored minus input PSNR in dB, on RGB in [0, 1], over the whole photo.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from ..analysis.anchors import (
    FixedWiener,
    bm3d_available,
    dark_channel_prior,
    denoise_bm3d,
    denoise_nlm,
    wiener_true_kernel,
)
from ..analysis.blur_bound import WIENER_NSRS
from ..data.corpus import downscale
from ..data.pairs import pair_generator
from ..data.photos import list_images
from ..degradations import degrade, get_degradation, synthetic_names
from ..degradations.synthetic import blur_kernels, blur_with
from ..errors import CommandParser, UserError, check_at_least, cli_main
from ..files import atomic_write, check_output_folder
from ..images import read_image
from ..inference.runner import PRECISIONS, Restorer, budget_bytes
from ..metrics import psnr, ssim
from ..model.classifier import CLEAN, expected_calibration_error
from ..progress import TileProgress, progress
from ..restore import add_auto_rule_option

SEED = 0
"""Base seed of every (photo, degradation) generator: ``python -m dfpir.data degrade``'s default."""

DEFAULT_PHOTOS = Path("data/heldout/photos")
MAKE_PHOTOS = "python -m dfpir.data heldout -o data/heldout"

TARGETS: dict[str, float] = {"noise25": 8.0, "noise50": 10.0, "rain": 4.0, "haze": 4.0, "lowlight": 10.0, "blur": 1.5}
"""Issue 22's targets: mean gain (dB) over the held-out photos, restored minus degraded input."""

AUTO_TARGET = 0.95
"""Issue 22's target for ``auto``: the share of held-out images (clean ones included) it names right."""

FIXED_ENSEMBLE = 2048
"""Camera shakes the fixed Wiener filter is made for, drawn with seed ``FIXED_SEED``:
``python -m dfpir.analysis blur-bound``'s defaults."""
FIXED_SEED = 1

PHOTO_NSRS = (*WIENER_NSRS, 0.1)
"""Noise-to-signal ratios tried by the Wiener anchors: blur-bound's, and 0.1, because the 8-bit
rounding of the inputs moves the best ratio up (on a whole photo it is often 0.01)."""

BM3D, NLM, WIENER_TRUE, WIENER_FIXED, DCP = "BM3D", "NLM", "Wiener, true kernel", "Wiener, fixed filter", "DCP"
ANCHORS: dict[str, list[str]] = {"noise": [BM3D, NLM], "blur": [WIENER_TRUE, WIENER_FIXED], "haze": [DCP]}
"""Anchors by kind of degradation (noise is every registry row with a sigma)."""

KINDS = {"oracle": ["oracle"], "auto": ["auto"], "both": ["oracle", "auto"]}


@dataclass(frozen=True)
class Case:
    """One photo degraded one way: (H, W, 3) float32 clean and degraded images, and the blur kernel."""

    photo: str
    degradation: str
    clean: np.ndarray
    degraded: np.ndarray
    kernel: np.ndarray | None = None


@dataclass
class Score:
    """PSNR (dB) and SSIM of an image against the clean photo."""

    psnr: float
    ssim: float


@dataclass
class PhotoRow:
    """Everything measured on one [`Case`][dfpir.bench.heldout.Case]."""

    photo: str
    size: tuple[int, int]  # (W, H)
    input: Score
    restored: dict[str, Score] = field(default_factory=dict)  # prompt kind -> score
    picks: dict[str, tuple[str, float | None, str | None]] = field(default_factory=dict)  # kind -> (action, confidence, guess)
    anchors: dict[str, Score] = field(default_factory=dict)
    fixed: dict[float, Score] = field(default_factory=dict)  # blur: nsr -> score, one nsr kept for all photos


# --------------------------------------------------------------------------- inputs


def load_photos(folder: Path, max_side: int | None) -> list[tuple[str, np.ndarray]]:
    """(stem, (H, W, 3) float32 image) of every photo in ``folder``, sorted by name, each shrunk
    (Lanczos, from 8 bits) to ``max_side`` pixels on its longer side when given."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder of held-out photos; make them with `{MAKE_PHOTOS}` "
                        "(needs the Debian package mate-backgrounds) or pass --photos DIR")
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: no images in this folder; make the held-out photos with `{MAKE_PHOTOS}`")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:  # the seed is keyed by the name: two files would get the same degradation
            raise UserError(f"{f} and {stems[f.stem]} share the name {f.stem!r}; rename one of them")
        stems[f.stem] = f
    return [(f.stem, _scaled(read_image(f).rgb, max_side)) for f in files]


def _scaled(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None or max(rgb.shape[:2]) <= max_side:
        return rgb
    small = downscale(PILImage.fromarray(np.round(rgb * 255).astype(np.uint8)), max_side)
    return np.asarray(small, dtype=np.float32) / 255


def degrade_photo(photo: str, clean: np.ndarray, degradation: str) -> Case:
    """``clean`` degraded as ``python -m dfpir.data degrade`` degrades it (same generator, same
    seed), rounded to 8 bits; a blur keeps the kernel it was made with."""
    g = pair_generator(SEED, photo, degradation)
    x = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    kernel = None
    if degradation == "blur":  # motion_blur's own steps, so the kernel is at hand
        kernels = blur_kernels(1, g)
        out, kernel = blur_with(x, kernels), kernels[0].numpy()
    else:
        out = degrade(x, [degradation], g)
    rgb = out.clamp(0, 1)[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    return Case(photo, degradation, clean, (np.round(rgb * 255) / 255).astype(np.float32), kernel)


# --------------------------------------------------------------------------- restoring and scoring


def score(image: np.ndarray, clean: np.ndarray) -> Score:
    """PSNR and SSIM of ``image`` against ``clean`` (the metrics of ``python -m dfpir.evaluate``)."""
    return Score(psnr(image, clean), ssim(image, clean))


def restore_case(restorer: Restorer, case: Case, kinds: Sequence[str], row: PhotoRow) -> None:
    """Restore ``case`` with each prompt kind and record the scores (and the classifier's picks)."""
    for kind in kinds:
        prompt = restorer.prompt(case.degradation if kind == "oracle" else "auto", case.degraded)
        with TileProgress(f"{case.degradation} {case.photo}") as tiles:
            out, _ = restorer.restore(case.degraded, prompt, progress=tiles)
        row.restored[kind] = score(out, case.clean)
        if kind == "auto":
            row.picks[kind] = (prompt.label, prompt.confidence, prompt.guess)


def anchor_names(degradation: str, with_bm3d: bool) -> list[str]:
    """The anchors run on ``degradation``, in table order."""
    kind = "noise" if get_degradation(degradation).sigma is not None else degradation
    return [a for a in ANCHORS.get(kind, []) if a != BM3D or with_bm3d]


@dataclass
class Anchors:
    """The classical restorations, set up once: the fixed Wiener filter, and whether (and on how
    many photos per noise level) BM3D runs."""

    bm3d: bool
    bm3d_limit: int | None = None

    @property
    def runs_bm3d(self) -> bool:
        """Whether BM3D runs at all (installed, and not switched off by ``--bm3d-limit 0``)."""
        return self.bm3d and self.bm3d_limit != 0

    @cached_property
    def fixed(self) -> FixedWiener:
        """The fixed Wiener filter, built at the first blurred photo (2048 shakes take a second)."""
        return FixedWiener.from_ensemble(blur_kernels(FIXED_ENSEMBLE, torch.Generator().manual_seed(FIXED_SEED)))

    def run(self, case: Case, index: int, row: PhotoRow) -> None:
        """Restore ``case`` (the ``index``-th photo) with its anchors and record their scores."""
        sigma = get_degradation(case.degradation).sigma
        x, clean = case.degraded, case.clean
        if sigma is not None:
            if self.runs_bm3d and (self.bm3d_limit is None or index < self.bm3d_limit):
                row.anchors[BM3D] = score(denoise_bm3d(x, sigma), clean)
            row.anchors[NLM] = score(denoise_nlm(x, sigma), clean)
        elif case.degradation == "blur":
            # the non-blind bound at its best noise-to-signal ratio for this photo, as blur-bound does per crop
            outs = [wiener_true_kernel(x, case.kernel, nsr) for nsr in PHOTO_NSRS]
            best = max(outs, key=lambda out: psnr(out, clean))
            row.anchors[WIENER_TRUE] = score(best, clean)
            row.fixed = {nsr: score(self.fixed(x, nsr), clean) for nsr in PHOTO_NSRS}
        elif case.degradation == "haze":
            row.anchors[DCP] = score(dark_channel_prior(x).image, clean)


def keep_one_fixed_nsr(rows: list[PhotoRow]) -> float | None:
    """Give every blur row the fixed filter's score at the one nsr best on average (as blur-bound
    chooses it): a fixed filter cannot change with the photo. Returns that nsr (``None``: no blur rows)."""
    if not rows or not rows[0].fixed:
        return None
    nsr = max(PHOTO_NSRS, key=lambda n: float(np.mean([r.fixed[n].psnr for r in rows])))
    for r in rows:
        r.anchors[WIENER_FIXED] = r.fixed[nsr]
    return nsr


# --------------------------------------------------------------------------- the report


def json_safe(value: Any) -> Any:
    """``value`` with every infinite or NaN float written as a string (``"inf"``: the PSNR of an
    image equal to the clean photo), which JSON has no number for."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def degradation_report(degradation: str, rows: list[PhotoRow], kinds: Sequence[str], anchors: list[str]) -> dict[str, Any]:
    """One degradation's per-photo numbers, means, and the photos each restoration made worse."""
    photos = []
    for r in rows:
        entry: dict[str, Any] = {"photo": r.photo, "size": list(r.size), "input": {"psnr": r.input.psnr, "ssim": r.input.ssim}}
        for kind in kinds:
            entry[kind] = _with_gain(r.restored[kind], r.input)
            if kind in r.picks:
                entry[kind].update(pick=r.picks[kind][0], confidence=r.picks[kind][1], guess=r.picks[kind][2])
        entry["anchors"] = {a: _with_gain(s, r.input) for a, s in r.anchors.items()}
        photos.append(entry)
    mean: dict[str, Any] = {"input": {"psnr": _mean([r.input.psnr for r in rows]), "ssim": _mean([r.input.ssim for r in rows])}}
    for kind in kinds:
        mean[kind] = _mean_scores([(r.restored[kind], r.input) for r in rows])
    mean["anchors"] = {a: _mean_scores([(r.anchors[a], r.input) for r in rows if a in r.anchors]) for a in anchors}
    worse = {kind: [r.photo for r in rows if r.restored[kind].psnr < r.input.psnr] for kind in kinds}
    report = {"photos": photos, "mean": mean, "worse": worse}
    if "auto" in kinds:
        report["auto_right"] = sum(r.picks["auto"][0] == degradation for r in rows)
    return report


def _with_gain(output: Score, input: Score) -> dict[str, Any]:
    return {"psnr": output.psnr, "ssim": output.ssim, "gain": output.psnr - input.psnr}


def _mean_scores(pairs: list[tuple[Score, Score]]) -> dict[str, Any] | None:
    """Mean PSNR, SSIM and gain of (output, input) pairs, and how many photos they are."""
    if not pairs:
        return None
    return {"psnr": _mean([o.psnr for o, _ in pairs]), "ssim": _mean([o.ssim for o, _ in pairs]),
            "gain": _mean([o.psnr - i.psnr for o, i in pairs]), "photos": len(pairs)}


def summary(report: dict[str, Any], kinds: Sequence[str]) -> list[dict[str, Any]]:
    """Per degradation: the mean gains, the target and whether each restoration met it (``auto``
    must also never be below the input on average)."""
    lines = []
    for d, rep in report["degradations"].items():
        target = TARGETS.get(d)
        line: dict[str, Any] = {"degradation": d, "target": target, "photos": len(rep["photos"])}
        for kind in kinds:
            gain = rep["mean"][kind]["gain"]
            line[kind] = {"gain": gain, "met": None if target is None else gain >= target, "worse": len(rep["worse"][kind])}
        if "auto" in kinds:
            line["auto"]["not_below_input"] = rep["mean"]["auto"]["gain"] >= 0
            line["auto"]["right"] = rep["auto_right"]
        line["anchors"] = {a: {"gain": m["gain"], "photos": m["photos"]} for a, m in rep["mean"]["anchors"].items() if m is not None}
        lines.append(line)
    return lines


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _psnr(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def degradation_markdown(d: str, rep: dict[str, Any], kinds: Sequence[str]) -> list[str]:
    """One degradation's table: a row per photo, then the means, then the photos made worse."""
    main, anchors = kinds[0], list(rep["mean"]["anchors"])
    header = ["photo", "input PSNR", f"restored ({main})", "gain", "SSIM in -> out"]
    header += [f"{k} gain" for k in kinds[1:]] + (["auto pick"] if "auto" in kinds else []) + [f"{a} gain" for a in anchors]

    def cells(entry: dict[str, Any], bold: bool = False) -> list[str]:
        name = f"**{entry['photo']}**" if bold else entry["photo"]
        first = entry[main] or {}
        row = [name, _psnr(entry["input"]["psnr"]), _psnr(first.get("psnr")), _db(first.get("gain")),
               f"{entry['input']['ssim']:.3f} -> {first['ssim']:.3f}" if first else "-"]
        row += [_db((entry[k] or {}).get("gain")) for k in kinds[1:]]
        if "auto" in kinds:
            row.append(pick_text(entry["auto"]))
        return row + [_db((entry["anchors"].get(a) or {}).get("gain")) for a in anchors]

    mean = {"photo": "mean", "input": rep["mean"]["input"], **{k: rep["mean"][k] for k in kinds}, "anchors": rep["mean"]["anchors"]}
    if "auto" in kinds:
        mean["auto"] = {**mean["auto"], "pick": f"{rep['auto_right']}/{len(rep['photos'])} right", "confidence": None}
    lines = [f"## {d}: {len(rep['photos'])} photos", "", *_table(header, [*map(cells, rep["photos"]), cells(mean, bold=True)]), ""]
    lines += [f"- worse than the input ({k}): {len(v)} of {len(rep['photos'])}" + (f": {', '.join(v)}" if v else "")
              for k, v in rep["worse"].items()]
    lines += _partial_anchor_notes(rep, main)
    return lines + [""]


def _partial_anchor_notes(rep: dict[str, Any], main: str) -> list[str]:
    """For an anchor run on some photos only (``--bm3d-limit``): both means over those photos."""
    notes = []
    for a, m in rep["mean"]["anchors"].items():
        if m is None or m["photos"] == len(rep["photos"]):
            continue
        ran = [p for p in rep["photos"] if a in p["anchors"]]
        gain = _mean([p[main]["gain"] for p in ran])
        notes.append(f"- {a} ran on {m['photos']} of {len(rep['photos'])} photos; on those, {main} gains "
                     f"{_db(gain)} dB and {a} {_db(m['gain'])} dB")
    return notes


def summary_markdown(lines: list[dict[str, Any]], kinds: Sequence[str]) -> list[str]:
    """The summary table: mean gain per degradation against its target, met or missed."""
    header = ["degradation", "target"]
    for k in kinds:
        header += [f"DFPIR ({k})", "met", "worse"] + (["never below input", "auto right"] if k == "auto" else [])
    header.append("anchors")
    rows = []
    for line in lines:
        t = line["target"]
        row = [line["degradation"], "-" if t is None else f">= {t:+.1f}"]
        for k in kinds:
            s = line[k]
            row += [_db(s["gain"]), "-" if s["met"] is None else ("met" if s["met"] else "missed"), f"{s['worse']}/{line['photos']}"]
            if k == "auto":
                row += ["met" if s["not_below_input"] else "missed", f"{s['right']}/{line['photos']}"]
        row.append(", ".join(f"{a} {_db(m['gain'])}" + (f" ({m['photos']} photos)" if m["photos"] < line["photos"] else "")
                             for a, m in line["anchors"].items()) or "-")
        rows.append(row)
    return ["## Summary: mean gain (dB) over the photos against the targets", "", *_table(header, rows)]


def to_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown: settings, one table per degradation, the summary."""
    kinds = report["settings"]["prompt"]
    lines = ["# Held-out evaluation", "", *(f"- {k}: {v}" for k, v in report["settings"].items() if k != "prompt"),
             f"- prompt: {', '.join(kinds)}", *(f"- {n}" for n in report["notes"]), ""]
    for d, rep in report["degradations"].items():
        lines += degradation_markdown(d, rep, kinds)
    if "confusion" in report:
        lines += clean_markdown(report["clean"]) + confusion_markdown(report["confusion"])
    return "\n".join(lines + summary_markdown(report["summary"], kinds))


def pick_text(entry: dict[str, Any]) -> str:
    """``auto``'s action and the classifier's confidence, ``blur (0.85)``; with the guess when the
    gain rule chose something else, ``clean (blur 0.85)``."""
    pick, conf, guess = entry.get("pick"), entry.get("confidence"), entry.get("guess")
    if pick is None:
        return "-"
    if conf is None:
        return pick
    return f"{pick} ({conf:.2f})" if guess in (None, pick) else f"{pick} ({guess} {conf:.2f})"


def clean_markdown(rep: dict[str, Any]) -> list[str]:
    """The undegraded photos' table: auto's pick and how far the output is from the photo."""
    rows = [[p["photo"], pick_text(p),
             "left as it is" if not math.isfinite(p["psnr_to_photo"]) else f"{p['psnr_to_photo']:.2f} dB"] for p in rep["photos"]]
    return [f"## clean (no degradation): {len(rep['photos'])} photos, {rep['right']} recognised as clean", "",
            *_table(["photo", "auto pick", "output against the photo"], rows), ""]


def confusion_markdown(c: dict[str, Any]) -> list[str]:
    """The confusion matrix of auto's picks (rows: the truth), and the share right against the target."""
    truths = [t for t in c["matrix"] if t != CLEAN] + ([CLEAN] if CLEAN in c["matrix"] else [])
    picks = truths + sorted({p for row in c["matrix"].values() for p in row} - set(truths))  # square, then the rest
    rows = [[t, *(str(c["matrix"][t].get(p, 0)) for p in picks)] for t in truths]
    share = "-" if c["share"] is None else f"{100 * c['share']:.1f}%"
    named = c.get("named_right", c["right"])  # reports written before the gain rule have no named_right
    named_share = "-" if not c["images"] else f"{100 * named / c['images']:.1f}%"
    verdict = "-" if c["met"] is None else ("met" if c["met"] else "missed")
    return ["## auto: confusion matrix (rows: the truth, columns: the pick)", "", *_table(["truth", *picks], rows), "",
            f"- right on {c['right']} of {c['images']} images ({share}); target >= {100 * c['target']:.0f}%: {verdict}",
            *([f"- the classifier's guess is right on {named} of {c['images']} images ({named_share}); "
               "the picks differ from the guesses where the gain rule chose another action"] if named != c["right"] else []),
            *([] if c["ece"] is None else
              [f"- calibration: mean confidence {c['mean_confidence']:.3f} against {named_share} of guesses right; "
               f"expected calibration error {c['ece']:.3f} (10 bins)"]), ""]


# --------------------------------------------------------------------------- the command


def evaluate(photos: list[tuple[str, np.ndarray]], degradations: Sequence[str], restorer: Restorer, kinds: Sequence[str],
             anchors: Anchors) -> dict[str, list[PhotoRow]]:
    """Degrade, restore and score every photo with every degradation, the anchors beside."""
    rows: dict[str, list[PhotoRow]] = {d: [] for d in degradations}
    cases = [*degradations, *([CLEAN] if "auto" in kinds else [])]  # auto must also recognise a clean photo
    with progress(len(photos) * len(cases), "held-out", "image") as bar:
        for d in cases:
            for index, (name, clean) in enumerate(photos):
                if d == CLEAN:
                    case = Case(name, CLEAN, clean, clean)
                    row = PhotoRow(name, (clean.shape[1], clean.shape[0]), score(clean, clean))
                    restore_case(restorer, case, ["auto"], row)
                    rows.setdefault(CLEAN, []).append(row)
                else:
                    case = degrade_photo(name, clean, d)
                    row = PhotoRow(name, (clean.shape[1], clean.shape[0]), score(case.degraded, clean))
                    restore_case(restorer, case, kinds, row)
                    anchors.run(case, index, row)
                    rows[d].append(row)
                bar.update(1)
    return rows


def build_report(rows: dict[str, list[PhotoRow]], kinds: Sequence[str], anchors: Anchors, settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able report: settings, notes, per-degradation numbers and the summary."""
    notes = [(f"inputs: each photo degraded from a generator seeded by (photo name, degradation), seed {SEED}, "
              "as `python -m dfpir.data degrade` writes them (8 bits); gains are restored minus input PSNR (dB, RGB)")]
    if not anchors.bm3d:
        notes.append("BM3D: the bm3d package is not installed (pip install bm3d); noise has non-local means only")
    elif anchors.bm3d_limit == 0:
        notes.append("BM3D: not run (--bm3d-limit 0); noise has non-local means only")
    elif anchors.bm3d_limit is not None:
        notes.append(f"BM3D: run on the first {anchors.bm3d_limit} photos of each noise level (--bm3d-limit)")
    if (nsr := keep_one_fixed_nsr(rows.get("blur", []))) is not None:
        notes.append(f"blur anchors: {WIENER_TRUE} at its best nsr of {list(PHOTO_NSRS)} per photo (a bound: "
                     f"it knows the kernel); {WIENER_FIXED} for {FIXED_ENSEMBLE} shakes, one nsr ({nsr:g}) for all photos")
    if "haze" in rows:
        notes.append("haze anchor: dark-channel prior (He et al. 2009: 15-px window, omega 0.95, t0 0.1, guided filter)")
    report = {"settings": {**settings, "prompt": list(kinds)}, "notes": notes, "degradations": {
        d: degradation_report(d, r, kinds, anchor_names(d, anchors.runs_bm3d)) for d, r in rows.items() if d != CLEAN}}
    report["summary"] = summary(report, kinds)
    if "auto" in kinds:
        report["clean"] = clean_report(rows.get(CLEAN, []))
        report["confusion"] = confusion(rows)
    return report


def clean_report(rows: list[PhotoRow]) -> dict[str, Any]:
    """The undegraded photos through ``auto``: each pick, its confidence and how far the output
    moved from the photo (PSNR against the photo itself: infinite when it was left as it is)."""
    return {"photos": [{"photo": r.photo, "pick": r.picks["auto"][0], "confidence": r.picks["auto"][1],
                        "guess": r.picks["auto"][2], "psnr_to_photo": r.restored["auto"].psnr} for r in rows],
            "right": sum(r.picks["auto"][0] == CLEAN for r in rows)}


def confusion(rows: dict[str, list[PhotoRow]]) -> dict[str, Any]:
    """``auto``'s picks (its actions) against the truth over every held-out image, clean ones included:
    ``matrix[truth][pick]`` counts, the share right and whether it meets ``AUTO_TARGET``; how often
    the classifier's guess is right (``named_right``: the same count under the ``likely`` rule), and
    how well its confidences are calibrated on these images (their mean and the expected
    calibration error of the guesses; ``None`` when no pick has a confidence)."""
    confidences = [r.picks["auto"][1] for rs in rows.values() for r in rs]
    hits = [r.picks["auto"][0] == truth for truth, rs in rows.items() for r in rs]
    named = [(r.picks["auto"][2] or r.picks["auto"][0]) == truth for truth, rs in rows.items() for r in rs]
    calibrated = bool(confidences) and None not in confidences
    matrix: dict[str, dict[str, int]] = {}
    for truth, rs in rows.items():
        for r in rs:
            pick = r.picks["auto"][0]
            matrix.setdefault(truth, {}).setdefault(pick, 0)
            matrix[truth][pick] += 1
    share = sum(hits) / len(hits) if hits else None
    return {"matrix": matrix, "images": len(hits), "right": sum(hits), "share": share, "target": AUTO_TARGET,
            "met": None if share is None else share >= AUTO_TARGET, "named_right": sum(named),
            "mean_confidence": float(np.mean(confidences)) if calibrated else None,
            "ece": expected_calibration_error(confidences, named) if calibrated else None}


def shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it (a committed report then
    names no one's home folder), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m dfpir.bench heldout`` command line."""
    p = CommandParser(prog="python -m dfpir.bench heldout", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help=f"folder of clean photos (default {DEFAULT_PHOTOS}, from `{MAKE_PHOTOS}`)")
    p.add_argument("--max-side", type=int, help="shrink each photo to this longer side first (default: as they are)")
    p.add_argument("--degradations", nargs="+", metavar="NAME", help="default: all seven synthetic ones")
    p.add_argument("--weights", type=Path, help="dfpir checkpoint (default: the shipped weights)")
    p.add_argument("--prompt", choices=list(KINDS), default="oracle", help="the true degradation's prompt, the classifier's pick, or both")
    add_auto_rule_option(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="as dfpir.restore's (bf16, fp16: autocast)")
    p.add_argument("--tile", type=int, help="tile side (0: never tile; default: from the memory budget, as dfpir.restore)")
    p.add_argument("--memory-gb", type=float, help="activation memory budget in GiB (default 1 on the CPU)")
    p.add_argument("--bm3d-limit", type=int, metavar="N",
                   help="run BM3D (minutes per megapixel on one core) on the first N photos of each noise level only (0: not at all)")
    p.add_argument("--format", choices=["markdown", "json"], default="markdown")
    p.add_argument("-o", "--output", type=Path, help="also write the report to this file (atomically)")
    return p


def check_args(args: argparse.Namespace) -> list[str]:
    """One-line errors for values no run can use, before any photo is read; returns the degradations."""
    degradations = list(dict.fromkeys(args.degradations or synthetic_names()))
    unknown = [d for d in degradations if d not in synthetic_names()]
    if unknown:
        raise UserError(f"unknown degradation {unknown[0]!r}; choose from: {', '.join(synthetic_names())}")
    if args.max_side is not None:
        check_at_least("--max-side", args.max_side, 16, "pixels")
    if args.bm3d_limit is not None:
        check_at_least("--bm3d-limit", args.bm3d_limit, 0)
    if args.output is not None:
        if args.output.is_dir():
            raise UserError(f"-o {args.output} is a folder; give a file name, e.g. -o {args.output / 'heldout.md'}")
        check_output_folder(args.output.parent)
    return degradations


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Print the report (and write it with ``-o``); returns the exit code."""
    args = build_parser().parse_args(argv)
    degradations = check_args(args)
    photos = load_photos(args.photos, args.max_side)
    restorer = Restorer(args.weights, args.device, args.precision, tile=args.tile, budget=budget_bytes(args.memory_gb),
                        auto_rule=args.auto_rule)
    kinds = KINDS[args.prompt]
    for spec in (["auto"] if "auto" in kinds else []) + (degradations if "oracle" in kinds else []):
        restorer.check_spec(spec)
    anchors = Anchors(bm3d_available(), args.bm3d_limit)
    rows = evaluate(photos, degradations, restorer, kinds, anchors)
    settings = {"weights": shown_path(restorer.weights), "photos": f"{args.photos} ({len(photos)} photos)",
                "max_side": args.max_side or "as they are"}
    if args.precision != "fp32":  # fp32 reports read as they did before the option existed
        settings["precision"] = f"{args.precision} (autocast)"
    if "auto" in kinds and restorer.auto_rule != "likely":  # likely reports read as they did before the gain rule
        settings["auto_rule"] = f"{restorer.auto_rule} (the action of the highest expected gain; pick (guess confidence) where it is not the guess)"
    report = build_report(rows, kinds, anchors, settings)
    text = json.dumps(json_safe(report), indent=2, allow_nan=False) if args.format == "json" else to_markdown(report)
    print(text)
    if args.output is not None:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
