"""Layouts: where a data set keeps its files, found without reading them.

[`LAYOUTS`][dfpir.data.layouts.LAYOUTS] names every layout (the paper's data sets, generic paired folders, a folder of clean
images, the built-in photos); [`scan`][dfpir.data.layouts.scan] lists one layout's files under a ROOT folder as one
[`TaskFiles`][dfpir.data.layouts.TaskFiles] per task, pairing inputs with targets by name ([`NameRule`][dfpir.data.layouts.NameRule],
[`match_pairs`][dfpir.data.layouts.match_pairs]).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..degradations import DEGRADATIONS, get_degradation, noise_names
from ..errors import UserError
from .corpus import PHOTOS_FOLDER
from .photos import IMAGE_SUFFIXES, builtin_folder, list_images

SPLITS = ("train", "val", "test")
"""The three splits; see [`dfpir.data.datasets`][dfpir.data.datasets] for what each means."""


def check_split(split: str) -> None:
    """A ``UserError`` unless ``split`` is one of [`SPLITS`][dfpir.data.layouts.SPLITS]."""
    if split not in SPLITS:
        raise UserError(f"split must be 'train', 'val' or 'test', got {split!r}")


def check_degradations(names: Sequence[str]) -> list[str]:
    """``names`` as a list, every one a registered degradation (else a ``UserError``, as for none at all)."""
    names = list(names)
    if not names:
        raise UserError("need at least one degradation")
    for name in names:
        get_degradation(name)  # raises naming the known ones
    return names


@dataclass(frozen=True)
class NameRule:
    """How an input file's stem maps to its target's stem: ``re.sub(pattern, replacement, stem)``.

    Matching tries the rule first, then the identical stem, so one rule serves folders with either
    naming. Parse ``"PATTERN=>REPLACEMENT"`` with [`parse`][dfpir.data.layouts.NameRule.parse] (e.g. ``"^rain-=>norain-"``).
    """

    pattern: str = ""
    replacement: str = ""

    @classmethod
    def parse(cls, text: str | "NameRule" | None) -> "NameRule":
        """``"PATTERN=>REPLACEMENT"`` (or an existing rule, or ``None`` for identity)."""
        if text is None or isinstance(text, NameRule):
            return text or cls()
        if "=>" not in text:
            raise UserError(f"name rule must look like 'PATTERN=>REPLACEMENT', got {text!r}")
        pattern, replacement = text.split("=>", 1)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(f"name rule pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return cls(pattern, replacement)

    def __call__(self, stem: str) -> str:
        return re.sub(self.pattern, self.replacement, stem) if self.pattern else stem


@dataclass
class TaskFiles:
    """The files found for one task of a layout (or why none could be found)."""

    task: str
    degradations: list[str]
    folder: Path
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)
    unpaired_inputs: list[Path] = field(default_factory=list)
    unpaired_targets: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def count(self) -> int:
        """Number of clean images, or of input/target pairs, found for the task."""
        return len(self.clean) if self.clean else len(self.pairs)


def match_pairs(input_dir: Path, target_dir: Path, rule: NameRule, recursive: bool = False) -> tuple[list[tuple[Path, Path]], list[Path], list[Path]]:
    """Pair input and target images by stem: ``(pairs, unpaired inputs, unused targets)``.

    Raises ``UserError`` if a folder is missing or two targets share a stem (ambiguous).
    """
    inputs = list_images(input_dir, recursive)
    targets: dict[str, Path] = {}
    for t in list_images(target_dir, recursive):
        if t.stem in targets:
            raise UserError(f"{t}: two targets share the name {t.stem!r} ({targets[t.stem].name}); the pairing is ambiguous")
        targets[t.stem] = t
    pairs, unpaired, used = [], [], set()
    for p in inputs:
        key = rule(p.stem)
        key = key if key in targets else p.stem
        if key in targets:
            pairs.append((p, targets[key]))
            used.add(key)
        else:
            unpaired.append(p)
    return pairs, unpaired, [t for s, t in targets.items() if s not in used]


def _subfolder(root: Path, split: str, aliases: dict[str, tuple[str, ...]]) -> Path:
    """``root/<split folder>`` if the dataset's split folder exists inside ``root``, else ``root``."""
    for name in aliases.get(split, ()):
        if (root / name).is_dir():
            return root / name
    return root


_SPLIT_DIRS = {"train": ("train", "Train", "training"), "val": ("train", "Train", "training"), "test": ("test", "Test", "testing")}


@dataclass(frozen=True)
class PairedLayout:
    """Where a paired data set keeps its files: candidate (input, target) folders and a name rule."""

    task: str
    degradation: str
    folders: tuple[tuple[str, str], ...]
    rule: str | None = None
    recursive: bool = False
    split_dirs: tuple[tuple[str, tuple[str, ...]], ...] = ()


PAIRED_LAYOUTS: dict[str, PairedLayout] = {
    "rain100l": PairedLayout("derain", "rain", (("rainy", "gt"), ("input", "target")), r"^rain-=>norain-"),
    "reside_ots": PairedLayout("dehaze", "haze", (("synthetic", "original"), ("hazy", "clear"), ("input", "target")), r"_.*$=>", recursive=True),
    "sots_outdoor": PairedLayout("dehaze", "haze", (("input", "target"), ("hazy", "gt"), ("hazy", "clear")), r"_.*$=>"),
    "gopro": PairedLayout("deblur", "blur", (("blur", "sharp"), ("input", "target"))),
    "lol": PairedLayout("lowlight", "lowlight", (("low", "high"), ("input", "target")), split_dirs=(("train", ("our485",)), ("val", ("our485",)), ("test", ("eval15",))))
}

LAYOUTS: dict[str, str] = {
    "builtin": "scikit-image's colour photos + synthetic degradations (no ROOT needed)",
    "clean": "ROOT: a folder of clean images + synthetic degradations",
    "paired": "ROOT/input, ROOT/target matched by name (--degradation, --name-rule)",
    "bsd400_wed": "ROOT: BSD400 + WED clean images (any sub-folders), noise 15/25/50 on the fly",
    "cbsd68": "ROOT: CBSD68 clean images, noise 15/25/50 synthesised with a fixed seed",
    "rain100l": "ROOT/rainy/rain-N.png + ROOT/gt/norain-N.png (train) or ROOT/input + ROOT/target (test)",
    "reside_ots": "ROOT/synthetic/**/XXXX_A_beta.jpg + ROOT/original/XXXX.jpg",
    "sots_outdoor": "ROOT/input/XXXX_*.jpg + ROOT/target/XXXX.png",
    "gopro": "ROOT/blur/NAME + ROOT/sharp/NAME, or ROOT/SEQUENCE/blur + ROOT/SEQUENCE/sharp",
    "lol": "ROOT/low/NAME + ROOT/high/NAME (or ROOT/our485, ROOT/eval15)",
    "3task": "ROOT/denoise, ROOT/derain, ROOT/dehaze, each in its task's layout; the original's repeats",
    "5task": "3task + ROOT/deblur (gopro), ROOT/lowlight (lol)",
}
"""Layout name -> where its files live under ROOT."""

# Which layout each task folder of a multi-task ROOT uses, per split.
_TASK_LAYOUTS = {
    "train": {"denoise": "bsd400_wed", "derain": "rain100l", "dehaze": "reside_ots", "deblur": "gopro", "lowlight": "lol"},
    "test": {"denoise": "cbsd68", "derain": "rain100l", "dehaze": "sots_outdoor", "deblur": "gopro", "lowlight": "lol"},
}
_TASK_LAYOUTS["val"] = _TASK_LAYOUTS["train"]


def _scan_paired(layout: PairedLayout, root: Path, split: str, rule: str | None) -> TaskFiles:
    folder = _subfolder(_subfolder(root, split, _SPLIT_DIRS), split, dict(layout.split_dirs))
    files = TaskFiles(layout.task, [layout.degradation], folder)
    name_rule = NameRule.parse(rule if rule is not None else layout.rule)
    try:
        for a, b in layout.folders:
            if (folder / a).is_dir() or (folder / b).is_dir():
                files.pairs, files.unpaired_inputs, files.unpaired_targets = match_pairs(folder / a, folder / b, name_rule, layout.recursive)
                break
        else:
            sequences = [d for d in sorted(folder.iterdir()) if (d / layout.folders[0][0]).is_dir()] if folder.is_dir() else []
            if not sequences:  # e.g. GoPro's ROOT/SEQUENCE/blur, else nothing we know
                wanted = " or ".join(f"{a}/ + {b}/" for a, b in layout.folders)
                raise UserError(f"{folder}: expected sub-folders {wanted}" if folder.is_dir() else f"{folder}: folder not found")
            for seq in sequences:
                p, ui, ut = match_pairs(seq / layout.folders[0][0], seq / layout.folders[0][1], name_rule, layout.recursive)
                files.pairs += p
                files.unpaired_inputs += ui
                files.unpaired_targets += ut
        if not files.pairs:
            raise UserError(f"{folder}: no input/target image pairs found")
    except UserError as exc:
        files.error = str(exc)
    return files


def _scan_clean(task: str, degradations: list[str], root: Path) -> TaskFiles:
    files = TaskFiles(task, degradations, root)
    try:
        if not root.exists():
            # A missing corpus photo folder is made by making its corpus; naming the folder itself would nest
            # a second corpus inside it.
            out = root.parent if root.name == PHOTOS_FOLDER else root
            raise UserError(f"{root}: folder not found; give a folder of clean photos, or make the training corpus "
                            f"with `python -m dfpir.data corpus -o {out}`")
        files.clean = list_images(root, recursive=True)
        if not files.clean:
            raise UserError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    except UserError as exc:
        files.error = str(exc)
    return files


def scan(layout: str, root: str | Path | None, split: str = "train", *, degradations: Sequence[str] | None = None, degradation: str | None = None,
         name_rule: str | None = None, input_dir: str = "input", target_dir: str = "target") -> list[TaskFiles]:
    """Find a layout's files under ``root`` without reading them: one [`TaskFiles`][dfpir.data.layouts.TaskFiles] per task.

    Problems (missing folders, no pairs) are recorded in ``TaskFiles.error`` rather than raised,
    so [`check`][dfpir.data.checker.check] can report every task; [`build_dataset`][dfpir.data.datasets.build_dataset]
    raises the first one.
    """
    check_split(split)
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if layout == "builtin":
        return [TaskFiles("builtin", check_degradations(degradations or list(DEGRADATIONS)), builtin_folder())]
    if root is None:
        raise UserError(f"layout {layout!r} needs a ROOT folder")
    root = Path(root)
    if layout in ("3task", "5task"):
        tasks = ["denoise", "derain", "dehaze"] + (["deblur", "lowlight"] if layout == "5task" else [])
        out = []
        for task in tasks:
            sub = _TASK_LAYOUTS[split][task]
            denoise = ["noise25"] if (layout == "5task" and split == "test") else None
            out += scan(sub, root / task, split, degradations=denoise)
        return out
    if layout == "paired":
        if degradation is None:
            raise UserError(f"the paired layout needs the degradation of its pairs; one of: {', '.join(DEGRADATIONS)}")
        check_degradations([degradation])
        spec = PairedLayout(degradation, degradation, ((input_dir, target_dir),), name_rule)
        return [_scan_paired(spec, root, split, None)]
    if layout in PAIRED_LAYOUTS:
        return [_scan_paired(PAIRED_LAYOUTS[layout], root, split, name_rule)]
    if layout in ("bsd400_wed", "cbsd68"):
        return [_scan_clean("denoise", check_degradations(degradations or noise_names()), root)]
    return [_scan_clean("clean", check_degradations(degradations or list(DEGRADATIONS)), root)]  # "clean"

