"""A training corpus from the package registries, dead-leaves images, and the held-out photos.

Restoration networks learn from clean photographs, and the built-in default (scikit-image's few
colour photos) is small. This module assembles a larger, licensed corpus from files that Debian
packages and Python wheels install, so that any machine can rebuild it with a package manager
and no other download:

- [`TRAINING`][dfpir.data.corpus.TRAINING]: the curated photographs, one [`Source`][dfpir.data.corpus.Source] per package, each file chosen by
  looking at it (drawings, renders, abstract art, logos, microscopy, telescope and medical images
  are left out, with the reason, in ``Source.rejected``);
- [`dead_leaves`][dfpir.data.corpus.dead_leaves]: procedural images of overlapping disks, whose sharp edges and scale-free
  statistics teach denoising and deblurring;
- [`HELDOUT`][dfpir.data.corpus.HELDOUT]: the twelve nature photographs of the Debian package ``mate-backgrounds``,
  reserved for evaluation; the training corpus refuses any file under [`HELDOUT_ROOT`][dfpir.data.corpus.HELDOUT_ROOT].

[`build_corpus`][dfpir.data.corpus.build_corpus] and [`build_heldout`][dfpir.data.corpus.build_heldout] (``python -m dfpir.data corpus`` / ``heldout``) write
every image as an 8-bit RGB PNG whose longer side is at most ``max_side``, a ``manifest.json``
(source, licence, sizes, checksums) and a ``LICENSES.md``. Nothing is downloaded here: a source
that is not installed is reported with the command that installs it.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import io
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from ..errors import UserError
from ..files import atomic_write, check_output_folder, file_sha256
from ..progress import progress

HELDOUT_ROOT = Path("/usr/share/backgrounds/mate")
"""Where ``mate-backgrounds`` installs its pictures: reserved for held-out evaluation, never trained on."""

DEFAULT_MAX_SIDE = 1024
PHOTOS_FOLDER = "photos"  # a corpus's (and the held-out set's) photos: OUT/photos/...
"""Longer side of every written image. Wallpapers are 2 to 6 thousand pixels wide: a 128-pixel
training patch of a 4K photo is nearly flat, and downscaling also hides JPEG artefacts."""


# --------------------------------------------------------------------------- the curated sources


@dataclass(frozen=True)
class Photo:
    """One curated file of a [`Source`][dfpir.data.corpus.Source].

    Parameters
    ----------
    path : str
        Path relative to the source's folder (an explicit file, not a pattern).
    shows : str
        What the photograph shows: the record of the look that kept it.
    name : str
        Output name (default: the file's stem; needed where files share a stem).
    licence, copyright : str
        As the package's copyright file states them (default: the source's).
    """

    path: str
    shows: str
    name: str = ""
    licence: str = ""
    copyright: str = ""

    @property
    def stem(self) -> str:
        """The written file's name, without ``.png``."""
        return self.name or PurePosixPath(self.path).stem


@dataclass(frozen=True)
class Source:
    """A package that installs photographs, and the ones chosen from it.

    Parameters
    ----------
    package : str
        The Debian package or the PyPI distribution.
    registry : {"debian", "pypi"}
        Where it comes from, which decides the install command.
    root : str
        Debian: the absolute folder the files are in. PyPI: ``module/sub/folder``, a folder of the
        importable ``module`` (found without importing it).
    photos : tuple of Photo
        The files kept.
    licence, copyright : str
        Defaults for the photos that do not state their own.
    rejected : tuple of (pattern, reason)
        Files looked at and left out: ``fnmatch`` patterns relative to ``root``. A kept file
        wins over a pattern that also matches it.
    """

    package: str
    registry: str
    root: str
    photos: tuple[Photo, ...]
    licence: str = ""
    copyright: str = ""
    rejected: tuple[tuple[str, str], ...] = ()

    @property
    def install(self) -> str:
        """The command that installs the package (as root for Debian packages)."""
        return f"apt-get install -y {self.package}" if self.registry == "debian" else f"pip install {self.package}"

    def folder(self) -> Path | None:
        """Where the files are, or ``None`` when a PyPI source's module is not installed."""
        if self.registry == "debian":
            return Path(self.root)
        module, _, sub = self.root.partition("/")
        spec = importlib.util.find_spec(module)  # the package's folder without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / sub

    def licence_of(self, photo: Photo) -> str:
        """``photo``'s licence, or the source's."""
        return photo.licence or self.licence

    def copyright_of(self, photo: Photo) -> str:
        """``photo``'s copyright line, or the source's."""
        return photo.copyright or self.copyright

    def decision(self, path: str) -> str | None:
        """``"kept"``, the reason a file was rejected, or ``None`` if nobody looked at ``path``."""
        if any(p.path == path for p in self.photos):
            return "kept"
        return next((reason for pattern, reason in self.rejected if fnmatch.fnmatchcase(path, pattern)), None)


_LOMIRI_16 = "Debian copyright file of lomiri-wallpapers"
_PLASMA = "Debian copyright file: 2014 KDE Visual Design Group (Files: *); photographer from the wallpaper's metadata"
_SKIMAGE = "scikit-image's skimage.data docstring"

TRAINING: tuple[Source, ...] = (
    Source(
        "lomiri-wallpapers-16.04", "debian", "/usr/share/backgrounds",
        photos=(
            Photo("Bridge_by_Sander_Klootwijk.jpg", "bridge cables over a tidal estuary, sky", licence="CC-BY-SA-4.0", copyright="2018 Sander Klootwijk"),
            Photo("Dragonfly_by_Bolly.jpg", "leafy branch against a blue sky", licence="CC-BY-SA-4.0", copyright='2018 "Bolly"'),
            Photo("Picture_0B_by_freespace.jpg", "halved fig in a red bowl on concrete", licence="CC-BY-4.0", copyright='2018 Trevor "Freespace"'),
            Photo("Wine_by_Jakkub_Mede.jpg", "living room: drum, table, wine bottle, loudspeaker", licence="CC-BY-4.0", copyright="2018 Jakub Mede"),
            Photo("aitzgorri_by_Aitzol_Berasategi.jpg", "mountain ridge over autumn forest and meadow", licence="CC-BY-4.0", copyright="2018 Aitzol Berasategi"),
            Photo("analogpattern_by_Peter_Nerlich.jpg", "pebbled surface, colour-graded green to violet", licence="CC-BY-SA-4.0", copyright="2018 Peter Nerlich"),
            Photo("free_by_Peter_Nerlich.jpg", "carved wooden bird hanging under ceiling lamps", licence="CC-BY-SA-4.0", copyright="2018 Peter Nerlich"),
            Photo("friends_by_Aitzol_Berasategi.jpg", "two spaniels looking out of a wooden house", licence="CC-BY-4.0", copyright="2018 Aitzol Berasategi"),
            Photo("greentock_by_Peter_Nerlich.jpg", "wall clock at an angle, lit textured wall", licence="CC-BY-SA-4.0", copyright="2018 Peter Nerlich"),
            Photo("life_by_Aitzol_Berasategi.jpg", "stream over mossy rocks in a forest", licence="CC-BY-4.0", copyright="2018 Aitzol Berasategi"),
            Photo("picosdeeuropa_by_Aitzol_Berasategi.jpg", "snowy mountains, clouds, path through grass", licence="CC-BY-4.0", copyright="2018 Aitzol Berasategi"),
            Photo("seeding_by_Clements_Engelhardt.jpg", "dandelion clocks in a meadow at sunset", licence="CC0-1.0", copyright="2018 Clemens Engelhardt"),
            Photo("sunset_by_Aitzol_Berasategi.jpg", "sun low over hills, rocky foreground", licence="CC-BY-4.0", copyright="2018 Aitzol Berasategi"),
        ),
        rejected=(
            ("Picture_1A_by_freespace.jpg", "drawing (cartoon creature)"),
            ("umang_by_Abhishek_Mudgal.jpg", "abstract render"),
            ("warty-final-ubuntu.png", "other package (lomiri-wallpapers): abstract gradient"),
        ),
    ),
    Source(
        "lomiri-wallpapers-20.04", "debian", "/usr/share/backgrounds",
        photos=(Photo("Kleiber_by_Lukas_Baubkus.jpg", "nuthatch on a tree trunk, blurred background", licence="CC-BY-SA-3.0", copyright="2021 Lukas Baubkus"),),
        rejected=(
            ("Fossa_by_Jasper_Roks.jpg", "abstract render"),
            ("Infinite-Sea_by_Aury88.jpg", "digital composite (Milky Way pasted over a gradient sea)"),
            ("Painting-Colors_by__herobrine7gamer.jpg", "abstract graphic"),
        ),
    ),
    Source(
        "plasma-workspace-wallpapers", "debian", "/usr/share/wallpapers",
        licence="GPL-2+", copyright="2014 KDE Visual Design Group",
        photos=(
            Photo("BytheWater/contents/images/2560x1600.jpg", "wooden jetty planks, lake, warm light (photographer: Maciej Wiklo)", "BytheWater"),
            Photo("ColdRipple/contents/images/2560x1600.jpg", "pier into a misty lake, nearly monochrome (Risto Saukonpää)", "ColdRipple"),
            Photo("ColorfulCups/contents/images/2560x1600.jpg", "rows of coloured cups from above (Dmitri Popov)", "ColorfulCups"),
            Photo("DarkestHour/contents/images/2560x1600.jpg", "lake and tree line in blue fog (Risto Saukonpää)", "DarkestHour"),
            Photo("EveningGlow/contents/images/2560x1600.jpg", "rowing boats on a lake shore at sunset (Ian Hex)", "EveningGlow"),
            Photo("FallenLeaf/contents/images/2560x1600.jpg", "autumn maple leaves on the ground, shallow focus (Martin Klapetek)", "FallenLeaf"),
            Photo("Grey/contents/images/2560x1600.jpg", "woven metal facade, grey-level photo (Sigi Sagi)", "Grey"),
            Photo("Kite/contents/images/2560x1600.jpg", "kite in a blue sky with clouds (Risto Saukonpää)", "Kite"),
            Photo("OneStandsOut/contents/images/2560x1600.jpg", "moss shoots from above, one orange (Risto Saukonpää)", "OneStandsOut"),
            Photo("Path/contents/images/2560x1600.jpg", "path through a spruce forest (Risto Saukonpää)", "Path"),
            Photo("summer_1am/contents/images/2560x1600.jpg", "lake with reeds at dusk (Risto Saukonpää)", "summer_1am"),
        ),
        rejected=(
            ("*/contents/images/*", "a smaller copy of a kept wallpaper"),
            ("*/contents/images_dark/*", "dark variant of a rejected render"),
            ("*/contents/screenshot.*", "preview thumbnail"),
            *((f"{name}/*", "render or drawing") for name in (
                "Altai", "Autumn", "Canopee", "Cascade", "Cluster", "Elarun", "Flow", "FlyingKonqui", "Honeywave",
                "IceCold", "Kay", "Kokkini", "MilkyWay", "Opal", "PastelHills", "Patak", "SafeLanding", "Shell", "Volna")),
        ),
    ),
    Source(
        "scikit-image", "pypi", "skimage/data",
        photos=(
            Photo("astronaut.png", "astronaut Eileen Collins, portrait", licence="public domain", copyright="NASA"),
            Photo("chelsea.png", "cat's face", licence="CC0-1.0", copyright="Stefan van der Walt"),
            Photo("coffee.png", "cup of coffee on a wooden table", licence="CC0-1.0", copyright="Rachel Michetti"),
            Photo("rocket.jpg", "rocket on a launch pad at dusk (Adobe RGB, converted)", licence="public domain", copyright="SpaceX"),
            Photo("motorcycle_left.png", "motorcycle in a workshop (left view of a stereo pair)",
                  licence="BSD-3-Clause (scikit-image's licence; no per-image notice)",
                  copyright="Middlebury College, 2014 stereo data set (Scharstein et al.)"),
            Photo("camera.png", "man with a camera on a tripod, grey-level", licence="CC0-1.0", copyright="Lav Varshney"),
            Photo("coins.png", "ancient Greek coins, grey-level", licence="no known copyright restrictions", copyright="Brooklyn Museum"),
            Photo("brick.png", "brick wall, grey-level texture", licence="CC0-1.0", copyright="CC0Textures"),
            Photo("grass.png", "grass, grey-level texture", licence="CC0-1.0", copyright="DeviantArt user linolafett"),
            Photo("gravel.png", "gravel, grey-level texture", licence="CC0-1.0", copyright="CC0Textures"),
        ),
        rejected=(
            ("motorcycle_right.png", "the stereo twin of motorcycle_left: the same scene twice"),
            ("clock_motion.png", "motion-blurred on purpose: not a clean target"),
            ("hubble_deep_field.jpg", "telescope image"),
            ("moon.png", "telescope image"),
            ("ihc.png", "microscopy"),
            ("cell.png", "microscopy"),
            ("retina.jpg", "medical (fundus) image"),
            ("microaneurysms.png", "medical image"),
            ("page.png", "scanned text"),
            ("text.png", "text"),
            ("color.png", "synthetic colour wheel"),
            ("chessboard_*.png", "synthetic pattern"),
            ("phantom.png", "synthetic phantom"),
            ("horse.png", "silhouette drawing"),
            ("logo.png", "logo"),
        ),
    ),
    Source(
        "scikit-learn", "pypi", "sklearn/datasets/images",
        licence="CC-BY-2.0",
        photos=(
            Photo("china.jpg", "Chinese pagoda on a hill over a lake", copyright="danielbuechele (Flickr), retrieved by Robert Layton"),
            Photo("flower.jpg", "orange dahlia, dark green background", copyright="vultilion (Flickr), retrieved by Robert Layton"),
        ),
    ),
    Source(
        "matplotlib", "pypi", "matplotlib/mpl-data/sample_data",
        photos=(Photo("grace_hopper.jpg", "Grace Hopper in uniform, portrait",
                      licence="public domain (U.S. Navy photograph; matplotlib ships it without a per-file notice)",
                      copyright="U.S. Navy"),),
        rejected=(("Minduka_Present_Blue_Pack.png", "drawing (icon)"), ("logo2.png", "logo")),
    ),
)
"""The training photographs, one row per package. A package listed here is installed by its
``install`` command; files not found (another package version) are reported, not guessed."""

HELDOUT = Source(
    "mate-backgrounds", "debian", str(HELDOUT_ROOT / "nature"),
    licence="GPL-2+",
    photos=(
        Photo("Aqua.jpg", "water drop splash", copyright="2008 Charles Barbin"),
        Photo("Blinds.jpg", "backlit leaf veins", copyright="2008 Lennart Poettering, 2008 Andrea Cimitan"),
        Photo("Dune.jpg", "dune grass, sea behind", copyright="2007 Marco Cogoni, 2008 Hylke Bons"),
        Photo("FreshFlower.jpg", "orange flower, close up", copyright="2005 Jens Ansorg"),
        Photo("Garden.jpg", "red marigold, blurred garden", copyright="2008 Charles Barbin"),
        Photo("GreenMeadow.jpg", "young grass blades", copyright="2005 Timothy Schellhase, 2008 Lapo Calamandrei"),
        Photo("LadyBird.jpg", "ladybird on a stem among forget-me-nots", copyright="2008 Charles Barbin"),
        Photo("RainDrops.jpg", "rain drops on leaves", copyright='2008 "blackcombwhistler07"'),
        Photo("Storm.jpg", "storm clouds over a road, motion-streaked", copyright="2008 Sergey Nazarov"),
        Photo("TwoWings.jpg", "dandelion seeds before an orange flower", copyright="2008 Charles Barbin, 2008 Hylke Bons"),
        Photo("Wood.jpg", "weathered wooden boards", copyright="2008 Jean-François Fortin Tam"),
        Photo("YellowFlower.jpg", "yellow daisy, close up", copyright="2008 Charles Barbin"),
    ),
)
"""The held-out evaluation photos: another source than every training file, never trained on."""

REJECTED_PACKAGES: dict[str, str] = {
    "lomiri-wallpapers": "one abstract gradient (warty-final-ubuntu.png) and a blank image",
    "ukui-wallpapers": "all twelve are renders or drawings",
    "gnome-backgrounds": "version 43: renders and SVG drawings only",
    "sway-backgrounds": "logo on a gradient",
    "xfdesktop4-data": "logo on gradients, SVG drawings",
    "desktop-base": "Debian themes: SVG drawings",
    "gcompris-qt-data": "its photos are packed in Qt resource files, small, without per-file licences",
    "opencv-doc": "96 MB; per-photo licences not stated (it includes press photos)",
    "visp-images-data": "225 MB, mostly calibration patterns",
}
"""Packages looked at and not used, with the reason (the docs' table of sources lists them)."""


# --------------------------------------------------------------------------- dead leaves


def disk_radii(rng: np.random.Generator, n: int, rmin: float, rmax: float, alpha: float = 3.0) -> np.ndarray:
    """``n`` radii with density proportional to ``r ** -alpha`` on ``[rmin, rmax]`` (inverse CDF)."""
    u = rng.random(n)
    lo, hi = rmin ** (1 - alpha), rmax ** (1 - alpha)
    return (lo + u * (hi - lo)) ** (1 / (1 - alpha))


def dead_leaves(size: int | tuple[int, int], rng: np.random.Generator, rmin: float = 1.0, rmax: float | None = None,
                alpha: float = 3.0, batch: int = 4096) -> np.ndarray:
    """A dead-leaves image: opaque disks of random colour and size, stacked until nothing else shows.

    The model (Matheron's; Lee, Mumford & Huang, 2001, showed that with radii drawn from
    ``r ** -3`` it reproduces the scale invariance and the sharp occlusion edges of natural
    images) drops disks one after another, each falling *behind* those already there, until the
    canvas is covered. Each disk has a uniform 8-bit colour and a centre uniform over the canvas;
    a pixel belongs to a disk when its centre lies inside it, so edges are hard steps, never
    anti-aliased: the point of the images is that a restorer must keep such edges sharp.
    Achddou, Gousseau & Ladjal (2021) trained denoising and super-resolution networks on such
    images to nearly the performance of training on photographs.

    Parameters
    ----------
    size : int or (int, int)
        Height and width (one number: a square).
    rng : numpy.random.Generator
        The only source of randomness: the same seed gives the same image.
    rmin, rmax : float
        Smallest and largest radius in pixels (``rmax`` default: half the longer side, at least ``rmin``).
    alpha : float
        Exponent of the radius density ``r ** -alpha`` (3: the scale-invariant choice).
    batch : int
        Disks drawn per round. Disks that fall wholly behind covered pixels change nothing and
        are skipped a round at a time; the batch size is part of the random stream.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) float32, every value a multiple of 1/255.
    """
    h, w = (size, size) if isinstance(size, int) else size
    rmax = max(max(h, w) / 2, rmin) if rmax is None else rmax
    if not 0 < rmin <= rmax:
        raise UserError(f"dead_leaves needs 0 < rmin <= rmax, got rmin={rmin}, rmax={rmax}")
    image = np.zeros((h, w, 3), np.float32)
    covered = np.zeros((h, w), bool)
    while not covered.all():
        radii = disk_radii(rng, batch, rmin, rmax, alpha)
        centres = rng.random((batch, 2)) * (h, w)  # (batch, 2): y, x in pixel units
        colours = rng.integers(0, 256, (batch, 3)).astype(np.float32) / 255
        # Pixel (i, j) has its centre at (i + 0.5, j + 0.5); these rows and columns can be inside.
        y0 = np.clip(np.ceil(centres[:, 0] - radii - 0.5), 0, h).astype(int)
        y1 = np.clip(np.floor(centres[:, 0] + radii - 0.5) + 1, 0, h).astype(int)
        x0 = np.clip(np.ceil(centres[:, 1] - radii - 0.5), 0, w).astype(int)
        x1 = np.clip(np.floor(centres[:, 1] + radii - 0.5) + 1, 0, w).astype(int)
        # Uncovered pixels per bounding box, from a summed-area table taken before the round:
        # a box with none cannot gain any during the round either.
        table = np.zeros((h + 1, w + 1), np.int64)
        table[1:, 1:] = (~covered).cumsum(0).cumsum(1)
        open_ = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0] > 0
        for k in np.flatnonzero(open_):
            dy = np.arange(y0[k], y1[k])[:, None] + 0.5 - centres[k, 0]
            dx = np.arange(x0[k], x1[k])[None, :] + 0.5 - centres[k, 1]
            box = np.s_[y0[k]:y1[k], x0[k]:x1[k]]
            new = (dy * dy + dx * dx <= radii[k] ** 2) & ~covered[box]
            image[box][new] = colours[k]
            covered[box] |= new
    return image


# --------------------------------------------------------------------------- one photo


class UnusableImage(Exception):
    """A curated file that cannot become a training image (unreadable, transparent): the build
    skips it and reports it, since one changed file in a package must not stop the others."""


@dataclass
class Written:
    """What one image of a build needs: its output, how to make it, and its manifest entry."""

    file: str  # relative to the output folder, POSIX
    make: Callable[[], PILImage.Image]
    entry: dict
    recipe: dict  # everything the pixels depend on: an unchanged recipe and file are not rewritten


def check_not_heldout(path: Path) -> None:
    """Refuse a training file under [`HELDOUT_ROOT`][dfpir.data.corpus.HELDOUT_ROOT] (symbolic links followed)."""
    for candidate in (Path(path).absolute(), Path(path).resolve()):
        if candidate.is_relative_to(HELDOUT_ROOT.resolve()) or candidate.is_relative_to(HELDOUT_ROOT):
            raise UserError(f"{path}: mate-backgrounds ({HELDOUT_ROOT}) is reserved for held-out evaluation; "
                            "remove it from the training sources")


def to_srgb8(im: PILImage.Image) -> tuple[PILImage.Image, list[str]]:
    """``im`` as 8-bit RGB in sRGB, and the conversions that took.

    Grey photos are repeated in the three channels rather than left out: they are genuine
    photographs (and the only textures of bricks, grass and gravel here), and inventing colour
    for them would teach the network colours that were never there. An embedded colour profile
    is converted to sRGB, the space every other image is in. Transparency cannot be flattened
    without inventing a background, so a transparent file is refused ([`UnusableImage`][dfpir.data.corpus.UnusableImage]; the
    build skips it and says so).
    """
    done = []
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: Pillow's convert("L") clips at 255 instead of scaling
        im = PILImage.fromarray((np.asarray(im, np.float64) / 257).round().clip(0, 255).astype(np.uint8))
        done.append("16-bit -> 8-bit")
    if "A" in im.getbands() or "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            raise UnusableImage("transparent pixels (a cut-out, not a photograph)")
        done.append("opaque alpha dropped")
    if im.mode in ("L", "LA", "1"):
        done.append("grey -> RGB")
    icc = im.info.get("icc_profile") if im.mode in ("RGB", "RGBA", "CMYK") else None
    im = im.convert("CMYK" if im.mode == "CMYK" else "RGB")
    if icc:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        im = ImageCms.profileToProfile(im, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
        done.append(f"colour profile {ImageCms.getProfileDescription(profile).strip()} -> sRGB")
    return im.convert("RGB"), done


def downscale(im: PILImage.Image, max_side: int) -> PILImage.Image:
    """``im`` shrunk (Lanczos, antialiased) so that its longer side is at most ``max_side``."""
    scale = max_side / max(im.size)
    if scale >= 1:
        return im
    size = tuple(max(1, round(s * scale)) for s in im.size)
    return im.resize(size, PILImage.Resampling.LANCZOS)


def read_photo(path: Path, max_side: int) -> tuple[PILImage.Image, tuple[int, int], list[str]]:
    """Open, orient, convert and downscale one photo: (image, original (W, H), conversions).

    Raises [`UnusableImage`][dfpir.data.corpus.UnusableImage] for a file that cannot be used (unreadable, transparent).
    """
    try:
        with PILImage.open(path) as opened:
            opened.load()
            original = opened.size
            im = ImageOps.exif_transpose(opened)
    except (OSError, SyntaxError) as exc:  # Pillow's errors for corrupt or unknown files
        raise UnusableImage(f"cannot read ({exc})") from None
    im, done = to_srgb8(im)
    small = downscale(im, max_side)
    if small.size != im.size:
        done.append(f"downscaled {im.size[0]}x{im.size[1]} -> {small.size[0]}x{small.size[1]}")
    return small, original, done


# --------------------------------------------------------------------------- building


@dataclass
class Missing:
    """Curated files of one source that are not on this machine."""

    package: str
    install: str
    files: list[str]
    whole: bool  # nothing of the source was found (rather than a few files of another version)


@dataclass
class BuildReport:
    """What [`build_corpus`][dfpir.data.corpus.build_corpus] or [`build_heldout`][dfpir.data.corpus.build_heldout] did."""

    out: Path
    entries: list[dict]
    written: int
    unchanged: int
    removed: int
    missing: list[Missing] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per source package (``"dead leaves"`` for the generated ones)."""
        out: dict[str, int] = {}
        for e in self.entries:
            out[e["source"]] = out.get(e["source"], 0) + 1
        return out


def package_version(source: Source) -> str | None:
    """The installed version of ``source``'s package, for the manifest (``None`` if unknown)."""
    if source.registry == "pypi":
        try:
            return importlib.metadata.version(source.package)
        except importlib.metadata.PackageNotFoundError:
            return None
    if shutil.which("dpkg-query") is None:
        return None
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", source.package], capture_output=True, text=True)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def photo_jobs(sources: Sequence[Source], max_side: int, folder: str, *, refuse_heldout: bool = True,
               by_package: bool = True) -> tuple[list[Written], list[Missing]]:
    """One [`Written`][dfpir.data.corpus.Written] per curated file found, and the files not found per source.

    Outputs are ``folder/<package>/<name>.png`` (``folder/<name>.png`` without ``by_package``).
    With ``refuse_heldout`` a file under [`HELDOUT_ROOT`][dfpir.data.corpus.HELDOUT_ROOT] is refused whether it exists or not:
    it is an error in the table, not a missing file.
    """
    jobs, missing = [], []
    for source in sources:
        root = source.folder()
        if refuse_heldout and root is not None:
            for photo in source.photos:
                check_not_heldout(root / photo.path)
        absent = [p.path for p in source.photos if root is None or not (root / p.path).is_file()]
        if absent:
            missing.append(Missing(source.package, source.install, absent, len(absent) == len(source.photos)))
        version = package_version(source) if len(absent) < len(source.photos) else None
        for photo in source.photos:
            if photo.path in absent:
                continue
            path = root / photo.path
            shown = str(path) if source.registry == "debian" else f"{source.root}/{photo.path}"
            entry = {"source": source.package, "version": version, "original": shown,
                     "licence": source.licence_of(photo), "copyright": source.copyright_of(photo), "shows": photo.shows}
            file = f"{folder}/{source.package}/{photo.stem}.png" if by_package else f"{folder}/{photo.stem}.png"
            jobs.append(Written(file, _photo_maker(path, max_side, entry), entry, {"source_sha256": file_sha256(path), "max_side": max_side}))
    return jobs, missing


def _photo_maker(path: Path, max_side: int, entry: dict) -> Callable[[], PILImage.Image]:
    def make() -> PILImage.Image:
        im, original, done = read_photo(path, max_side)
        entry.update(original_size=list(original), conversions=done)
        return im
    return make


def dead_leaves_jobs(count: int, size: int, seed: int, folder: str) -> list[Written]:
    """The ``count`` dead-leaves images, each from its own stream of ``seed`` (adding images keeps the others)."""
    jobs = []
    for index in range(count):
        recipe = {"seed": seed, "index": index, "size": size, "rmin": 1.0, "rmax": size / 2, "alpha": 3.0}
        entry = {"source": "dead leaves", "version": None, "original": None, "licence": "MIT (generated by dfpir)",
                 "copyright": "none: procedural", "shows": "dead-leaves model, disks with r^-3 radii",
                 "original_size": [size, size], "conversions": []}

        def make(recipe: dict = recipe) -> PILImage.Image:
            rng = np.random.default_rng([recipe["seed"], recipe["index"]])
            pixels = dead_leaves(recipe["size"], rng, recipe["rmin"], recipe["rmax"], recipe["alpha"])
            return PILImage.fromarray(np.rint(pixels * 255).astype(np.uint8))

        jobs.append(Written(f"{folder}/deadleaves-{index:04d}.png", make, entry, recipe))
    return jobs


def build_corpus(out: str | Path, sources: Sequence[Source] | None = None, *, dead_leaves: int = 40,
                 dead_leaves_size: int = 512, max_side: int = DEFAULT_MAX_SIDE, seed: int = 0,
                 require_all: bool = False) -> BuildReport:
    """Write the training corpus: ``out/photos/<package>/<name>.png`` and ``out/deadleaves/*.png``.

    Every curated photo that is installed is copied as an 8-bit RGB PNG whose longer side is at
    most ``max_side`` (see [`read_photo`][dfpir.data.corpus.read_photo]); ``dead_leaves`` generated images of
    ``min(dead_leaves_size, max_side)`` pixels follow. ``out/manifest.json`` records every file
    (source, version, original path, licence, copyright, sizes, SHA-256) and ``out/LICENSES.md``
    the attributions. Re-running rewrites only files whose source or settings changed, and
    removes the files an earlier run wrote that this one no longer makes.

    Parameters
    ----------
    out : path
        Output folder (created).
    sources : list of Source, optional
        Default [`TRAINING`][dfpir.data.corpus.TRAINING].
    require_all : bool
        Refuse to build when any curated file is missing (the report lists the install commands).

    Raises
    ------
    UserError
        A source under [`HELDOUT_ROOT`][dfpir.data.corpus.HELDOUT_ROOT], missing files with ``require_all``, an unwritable ``out``.
    """
    check_output_folder(Path(out))  # before hashing every source file: a bad path fails at once
    jobs, missing = photo_jobs(TRAINING if sources is None else sources, max_side, PHOTOS_FOLDER)
    if require_all and missing:
        raise UserError("missing training photos; install them first: " + "; ".join(f"{m.install} ({len(m.files)} files)" for m in missing))
    jobs += dead_leaves_jobs(dead_leaves, min(dead_leaves_size, max_side), seed, "deadleaves")
    settings = {"corpus": "training", "max_side": max_side, "dead_leaves": dead_leaves, "seed": seed}
    return _build(Path(out), jobs, missing, settings)


def build_heldout(out: str | Path, max_side: int = DEFAULT_MAX_SIDE) -> BuildReport:
    """Write the held-out evaluation photos ([`HELDOUT`][dfpir.data.corpus.HELDOUT]) as ``out/photos/<name>.png``, with their manifest.

    Raises
    ------
    UserError
        ``mate-backgrounds`` is not installed (the message gives the command).
    """
    check_output_folder(Path(out))
    jobs, missing = photo_jobs([HELDOUT], max_side, PHOTOS_FOLDER, refuse_heldout=False, by_package=False)
    if missing and missing[0].whole:
        raise UserError(f"the held-out photos need the Debian package {HELDOUT.package}: {HELDOUT.install} (as root)")
    if missing:
        raise UserError(f"{HELDOUT.root}: {', '.join(missing[0].files)} not found (another version of {HELDOUT.package}?); "
                        "the held-out set must be complete")
    return _build(Path(out), jobs, missing, {"corpus": "held-out", "max_side": max_side})


def _build(out: Path, jobs: list[Written], missing: list[Missing], settings: dict) -> BuildReport:
    previous = _read_manifest(out / "manifest.json")
    report = BuildReport(out, [], 0, 0, 0, missing)
    with progress(len(jobs), desc=f"{settings['corpus']} images", unit="image") as bar:
        for job in jobs:
            target = out / job.file
            old = previous.get(job.file)
            if old is not None and old.get("recipe") == job.recipe and target.is_file() and file_sha256(target) == old.get("sha256"):
                report.entries.append({**old, **job.entry})  # the table's text and the version may have changed
                report.unchanged += 1
            else:
                try:
                    image = job.make()
                except UnusableImage as exc:
                    report.skipped.append((job.entry["original"], str(exc)))
                    bar.update(1)
                    continue
                atomic_write(target, lambda tmp, image=image: image.save(tmp, format="PNG"))
                report.entries.append({"file": job.file, **job.entry, "size": list(image.size),
                                       "sha256": file_sha256(target), "recipe": job.recipe})
                report.written += 1
            bar.update(1)
    made = {e["file"] for e in report.entries}
    for stale in sorted(set(previous) - made):  # only files an earlier run of ours wrote
        path = out / stale
        if path.is_file():
            path.unlink()
            report.removed += 1
    manifest = {**settings, "files": report.entries,
                "missing": [{"package": m.package, "install": m.install, "files": m.files} for m in missing],
                "skipped": [{"original": o, "reason": r} for o, r in report.skipped]}
    atomic_write(out / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"))
    atomic_write(out / "LICENSES.md", lambda tmp: Path(tmp).write_text(licenses_markdown(report.entries, settings["corpus"]), encoding="utf-8"))
    return report


def _read_manifest(path: Path) -> dict[str, dict]:
    """The entries of an earlier run by output file; empty when there is none or it is unreadable
    (then every file is rewritten, which is always safe)."""
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        return {e["file"]: e for e in files if isinstance(e, dict) and isinstance(e.get("file"), str)
                and not PurePosixPath(e["file"]).is_absolute() and ".." not in PurePosixPath(e["file"]).parts}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def licenses_markdown(entries: list[dict], corpus: str) -> str:
    """The attribution file: one table row per image, grouped by source package."""
    lines = [f"# Licences of the {corpus} images", "",
             "Each image is a downscaled copy of a file installed by the package named; the package's",
             "own copyright file (`/usr/share/doc/PACKAGE/copyright` for Debian packages, the",
             "distribution's metadata for Python packages) holds the licence texts.", ""]
    for package in dict.fromkeys(e["source"] for e in entries):
        lines += [f"## {package}", "", "| file | licence | copyright | original |", "|---|---|---|---|"]
        lines += [f"| {e['file']} | {e['licence']} | {e['copyright']} | {e['original'] or ''} |" for e in entries if e["source"] == package]
        lines.append("")
    return "\n".join(lines)
