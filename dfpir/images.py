"""Full-fidelity image files: read and write without losing bit depth, alpha or grey-ness.

[`read_image`][dfpir.images.read_image] returns an [`Image`][dfpir.images.Image]: float32 RGB in [0, 1] for the network, plus what it
takes to write the result back the way the input was stored (alpha channel, 8 or 16 bits,
single-channel grey, colour profile and EXIF). EXIF orientation is applied on reading, so the
pixels are upright and the written EXIF says orientation 1.

Colour profile (ICC) and EXIF are carried from [`read_image`][dfpir.images.read_image] to [`write_image`][dfpir.images.write_image] wherever
the output format and its writer can hold them: JPEG, PNG (8 and 16 bits) and WebP get both; TIFF
gets the profile and EXIF's text tags (make, model, date, description, software, artist,
copyright: tifffile writes no EXIF sub-directory); BMP gets neither. A profile whose colour space
does not match the written channels (a grey profile on an RGB WebP) is left out rather than
mislabel the colours. [`write_image`][dfpir.images.write_image] can also add text chunks to a PNG
(``tEXt``: how ``auto`` chose the prompt); the other formats get none.

Pillow's decompression-bomb limit (about 179 MP, with a multi-line warning from 89 MP) is lifted
while *our* reader opens a file the user gave us, and only there; instead, an image whose decoded
samples would not fit in the memory available is refused with a one-line error.

Which library reads what, and why:

- Pillow for 8-bit PNG, JPEG, BMP, WebP and TIFF, palette images and 16-bit *grey* files.
- **pypng** for every 16-bit PNG: Pillow has no 16-bit RGB mode and silently reduces 16-bit RGB(A)
  PNGs to 8 bits (checked with Pillow 13; imageio's Pillow plugin does the same). pypng is pure
  Python, so it is used only where it is needed.
- **tifffile** for 16-bit multi-channel TIFF (Pillow reduces those too) and for writing all TIFFs.

Anything that cannot be read (missing, truncated, not an image, an unsupported sample type)
raises [`UserError`][dfpir.errors.UserError] with ``"<file>: <reason>"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import png
import tifffile
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from .files import atomic_write
from .errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PILLOW_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}
EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".bmp", ".webp"}
NO_ALPHA = {".jpg", ".jpeg"}
ORIENTATION_TAG = 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825  # pointers to EXIF's sub-directories
#: IFD0 tags that describe the photo rather than how a TIFF stores its pixels (kept from TIFF inputs).
DESCRIPTIVE_TAGS = (270, 271, 272, ORIENTATION_TAG, 282, 283, 296, 305, 306, 315, 33432)
#: The text tags of those that tifffile can write (besides description and software).
TIFF_TEXT_TAGS = (271, 272, 306, 315, 33432)
#: Peak bytes per pixel while reading: integer samples (<= 8, 16-bit RGBA), a float32 copy of every
#: channel (<= 16), the contiguous RGB (12) and alpha (4) arrays of the returned Image.
READ_BYTES_PER_PIXEL = 40


@dataclass
class Image:
    """A decoded image and how it was stored.

    Parameters
    ----------
    rgb : np.ndarray
        (H, W, 3) float32 in [0, 1]; a grey image has three equal channels.
    alpha : np.ndarray or None
        (H, W) float32 in [0, 1], or ``None`` for an opaque image.
    bit_depth : int
        8 or 16 bits per sample in the file.
    was_gray : bool
        The file held one colour channel; [`write_image`][dfpir.images.write_image] writes one back.
    path : Path or None
        Where it was read from.
    icc_profile : bytes or None
        The file's embedded ICC colour profile.
    exif : bytes or None
        The file's EXIF block as Pillow writes it (``Exif\\0\\0`` + a TIFF structure), with the
        orientation set to 1 (the pixels are already upright).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    was_gray: bool = False
    path: Path | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.rgb.shape[:2]

    def with_rgb(self, rgb: np.ndarray) -> "Image":
        """A copy holding new pixels (same size) and everything else of this image (alpha, bit
        depth, grey-ness, colour profile, EXIF)."""
        if rgb.shape != self.rgb.shape:
            raise UserError(f"new pixels have shape {rgb.shape}, the image has {self.rgb.shape}")
        return dataclasses.replace(self, rgb=np.asarray(rgb, dtype=np.float32))


@dataclass
class FileTags:
    """What a file says about its pixels besides the samples: orientation, colour profile, EXIF
    (and, written to PNG only, text chunks)."""

    orientation: int = 1
    icc_profile: bytes | None = None
    exif: bytes | None = None
    text: dict[str, str] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- reading


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` has one of the supported image suffixes (case-insensitive)."""
    return Path(path).suffix.lower() in SUFFIXES


def read_image(path: str | Path) -> Image:
    """Read an image file as an [`Image`][dfpir.images.Image] (EXIF orientation applied, profile and EXIF kept).

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, TIFF, BMP or WebP file; grey, grey + alpha, RGB, RGBA or palette; 8 or 16 bits.

    Raises
    ------
    UserError
        ``"<file>: <reason>"`` for a missing, truncated, corrupt or unsupported file, or one too
        large for the memory available.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    try:
        samples, tags = _decode(path)
        samples = _orient(samples, tags.orientation)
        return _to_image(samples, path, tags)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure means "cannot read this file"
        raise UserError(f"{path}: cannot read image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def available_memory() -> int | None:
    """Bytes of memory the system can still give this process (Linux ``MemAvailable``), or ``None``
    where unknown (then no image is refused for its size)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(path: Path, width: int, height: int) -> None:
    """Refuse, in one line, an image whose decoded samples would not fit in the memory available."""
    need = width * height * READ_BYTES_PER_PIXEL
    free = available_memory()
    if free is not None and need > free:
        raise UserError(
            f"{path}: {width} x {height} pixels ({width * height / 1e6:.0f} MP) need about {need / 2**30:.1f} GiB "
            f"to read, more than the {free / 2**30:.1f} GiB of memory available; split or downscale it first"
        )


@contextlib.contextmanager
def _open_pillow(path: Path, check: bool = True) -> Iterator[PILImage.Image]:
    """``PIL.Image.open`` without its decompression-bomb limit, the size checked by [`check_fits`][dfpir.images.check_fits]
    (unless ``check`` is off: the pixels were decoded by another library, after its own check).

    The limit protects servers from hostile uploads; here the user chose the file, and a 100 MP
    photo is ordinary. It is lifted only while this reader runs (not thread-safe: Pillow keeps it
    in a module global), so other code in the process keeps Pillow's default.
    """
    limit = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        with PILImage.open(path) as im:
            if check:
                check_fits(path, *im.size)
            yield im
    finally:
        PILImage.MAX_IMAGE_PIXELS = limit


def _decode(path: Path) -> tuple[np.ndarray, FileTags]:
    """Integer samples (H, W) or (H, W, C) with C in 1-4, and the file's tags."""
    head = _head(path)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and _png_bit_depth(head) == 16:
        check_fits(path, int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
        return _read_png16(path), _png16_tags(path)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        tiff = _read_tiff16(path)
        if tiff is not None:
            return tiff
    return _read_pillow(path)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(32)


def _png_bit_depth(head: bytes) -> int:
    # IHDR is always the first chunk: signature(8) length(4) "IHDR"(4) width(4) height(4) depth(1)
    return head[24] if len(head) > 24 and head[12:16] == b"IHDR" else 8


def _read_png16(path: Path) -> np.ndarray:
    with open(path, "rb") as f:  # pypng's Reader(filename=...) never closes the file it opens
        width, height, rows, info = png.Reader(file=f).asDirect()
        planes = info["planes"]
        data = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])  # (H, W * planes)
    return data.reshape(height, width, planes)


def _png16_tags(path: Path) -> FileTags:
    """Tags of a 16-bit PNG from Pillow's header pass (without decoding the pixels a second time).

    An ``eXIf`` chunk after the pixel data (the PNG specification allows it) is not seen.
    """
    try:
        with _open_pillow(path, check=False) as im:
            exif = PILImage.Exif()
            if "exif" in im.info:  # Pillow's getexif() would decode the whole image to look further
                exif.load(im.info["exif"])
            return _tags(exif, im.info.get("icc_profile"), from_tiff=False)
    except Exception:  # noqa: BLE001 - tags Pillow cannot read: the pixels still come back (pypng read them)
        return FileTags()


def _read_tiff16(path: Path) -> tuple[np.ndarray, FileTags] | None:
    """16-bit multi-sample TIFF through tifffile; ``None`` for anything Pillow reads in full.

    Refuses more than 4 samples per pixel at any depth: Pillow reads a 5-channel 8-bit TIFF as RGB.
    """
    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[0]
        _check_channels(path, page.samplesperpixel)  # Pillow would silently drop the extra ones
        if page.bitspersample != 16 or page.samplesperpixel < 2:
            return None
        check_fits(path, page.imagewidth, page.imagelength)
        samples = page.asarray()
        icc = page.tags.get(34675)
        icc = icc.value if icc is not None else None
    if samples.ndim == 3 and samples.shape[0] == page.samplesperpixel and samples.shape[-1] != page.samplesperpixel:
        samples = np.moveaxis(samples, 0, -1)  # planar (C, H, W) -> (H, W, C)
    return samples, _tiff_tags(path, icc)


def _tiff_tags(path: Path, icc: bytes | None) -> FileTags:
    """Tags of a TIFF that tifffile decoded, read by Pillow without decoding (its own pixels are not needed)."""
    try:
        with _open_pillow(path, check=False) as im:
            return _tags(im.getexif(), im.info.get("icc_profile", icc), from_tiff=True)
    except Exception:  # noqa: BLE001 - a TIFF Pillow cannot open still has its orientation and profile
        with tifffile.TiffFile(str(path)) as tif:
            tag = tif.pages[0].tags.get(ORIENTATION_TAG)
        return FileTags(int(tag.value) if tag is not None else 1, icc)


def _read_pillow(path: Path) -> tuple[np.ndarray, FileTags]:
    with _open_pillow(path) as im:
        im.load()  # decodes now, so a truncated file fails here
        tags = _tags(im.getexif(), im.info.get("icc_profile"), from_tiff=im.format == "TIFF")
        return _pillow_samples(im), tags


def _tags(exif: PILImage.Exif, icc: bytes | None, from_tiff: bool) -> FileTags:
    """The orientation, and the profile and EXIF to write back (orientation 1: the pixels will be upright)."""
    orientation = int(exif.get(ORIENTATION_TAG, 1))
    try:
        block = _exif_block(exif, from_tiff)
    except Exception:  # noqa: BLE001 - EXIF Pillow cannot re-encode (corrupt values): the pixels matter more
        block = None
    return FileTags(orientation, icc or None, block)


def _exif_block(exif: PILImage.Exif, from_tiff: bool) -> bytes | None:
    """EXIF bytes with orientation 1, or ``None`` for no tags.

    A TIFF's "EXIF" (as Pillow reads it) is its first directory, which also says how that TIFF
    stores its pixels (strip offsets, compression...): only the tags that describe the photo, and
    the EXIF and GPS sub-directories, are carried to another file.
    """
    if from_tiff:
        kept = PILImage.Exif()
        for tag in DESCRIPTIVE_TAGS:
            if tag in exif:
                kept[tag] = exif[tag]
        for pointer in (EXIF_IFD, GPS_IFD):
            if pointer in exif:
                kept.get_ifd(pointer).update(exif.get_ifd(pointer))
        exif = kept
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    return exif.tobytes() if len(exif) else None


def _pillow_samples(im) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise UserError(f"{im.filename}: 32-bit integer samples are not supported")
        return arr.astype(np.uint16)
    if mode == "F":
        raise UserError(f"{im.filename}: floating-point images are not supported (8- or 16-bit only)")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    target = {"1": "L", "La": "LA", "RGBa": "RGBA", "LAB": "RGB"}.get(mode, "RGBA" if "A" in mode else "RGB")
    return np.asarray(im.convert(target))


def _check_channels(path: Path, channels: int) -> None:
    if channels not in (1, 2, 3, 4):
        raise UserError(
            f"{path}: {channels} channels per pixel are not supported (grey, grey + alpha, RGB or RGBA only); "
            "save it with at most 4 channels"
        )


def _orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so that the pixels are upright."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(samples)) if op else samples


def _to_image(samples: np.ndarray, path: Path, tags: FileTags) -> Image:
    if samples.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif samples.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    else:
        raise UserError(f"{path}: unsupported sample type {samples.dtype} (8- or 16-bit integers only)")
    if samples.ndim == 2:
        samples = samples[..., None]
    if samples.ndim != 3 or 0 in samples.shape:
        raise UserError(f"{path}: unsupported image shape {samples.shape}")
    channels = samples.shape[-1]
    _check_channels(path, channels)
    values = samples.astype(np.float32) / scale
    colour = values[..., :1].repeat(3, axis=-1) if channels <= 2 else values[..., :3]
    alpha = values[..., -1] if channels in (2, 4) else None
    return Image(np.ascontiguousarray(colour), alpha, bit_depth, channels <= 2, path, tags.icc_profile, tags.exif)


# --------------------------------------------------------------------------- writing


def write_image(path: str | Path, image: Image | np.ndarray, bit_depth: int | None = None,
                text: dict[str, str] | None = None) -> None:
    """Write ``image`` atomically, in the format its suffix names, keeping depth, alpha, grey,
    colour profile and EXIF (as far as the format holds them, see the module docstring).

    Parameters
    ----------
    path : str or Path
        Destination; the suffix picks the format (``.png .jpg .jpeg .tif .tiff .bmp .webp``).
    image : Image or np.ndarray
        An [`Image`][dfpir.images.Image], or a float (H, W, 3) / (H, W) array in [0, 1] (written as 8-bit).
    bit_depth : int, optional
        Overrides the image's bit depth (8 or 16).
    text : dict of str, optional
        ``keyword: text`` pairs written as PNG ``tEXt`` chunks (Latin-1; keywords of 1 to 79
        characters); other formats ignore them.

    Raises
    ------
    ValueError
        For an unknown suffix, or content the format cannot hold (16 bits or alpha in JPEG...).
    """
    path = Path(path)
    image = _as_image(image)
    depth = bit_depth or image.bit_depth
    suffix = path.suffix.lower()
    _check_writable(path, suffix, depth, image.alpha is not None)
    samples = _quantise(_channels(image, suffix), depth)
    tags = dataclasses.replace(_tags_to_write(image, samples.shape[-1]), text=dict(text or {}))
    if suffix in (".tif", ".tiff"):
        encode = _write_tiff
    elif suffix == ".png" and depth == 16:
        encode = _write_png16
    else:
        encode = partial(_write_pillow, fmt=PILLOW_FORMATS[suffix])
    atomic_write(path, lambda tmp: encode(tmp, samples, tags=tags))


def check_writable(path: str | Path, image: Image) -> None:
    """Raise ``ValueError`` now if [`write_image`][dfpir.images.write_image] could not write ``image`` to ``path``.

    Lets a caller refuse before slow work (a restoration) instead of after it.
    """
    path = Path(path)
    _check_writable(path, path.suffix.lower(), image.bit_depth, image.alpha is not None)


def _as_image(image: Image | np.ndarray) -> Image:
    if isinstance(image, Image):
        return image
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        return Image(arr[..., None].repeat(3, axis=-1), None, 8, True)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return Image(arr[..., :3], arr[..., 3] if arr.shape[-1] == 4 else None, 8, False)
    raise UserError(f"cannot write an array of shape {arr.shape} as an image (need (H, W), (H, W, 3) or (H, W, 4))")


def _check_writable(path: Path, suffix: str, depth: int, has_alpha: bool) -> None:
    if suffix not in SUFFIXES:
        raise UserError(f"{path}: unknown image suffix {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if depth not in (8, 16):
        raise UserError(f"{path}: bit depth must be 8 or 16, got {depth}")
    if depth == 16 and suffix in EIGHT_BIT_ONLY:
        raise UserError(f"{path}: {suffix} cannot store 16-bit samples; use .png or .tif")
    if has_alpha and suffix in NO_ALPHA:
        raise UserError(f"{path}: JPEG cannot store an alpha channel; use .png, .tif or .webp")


def _channels(image: Image, suffix: str) -> np.ndarray:
    """(H, W, C) floats: grey (mean of RGB) when the source was grey, plus alpha when present."""
    gray = image.was_gray and suffix != ".webp"  # WebP has no grey mode
    colour = image.rgb.mean(axis=-1, keepdims=True) if gray else image.rgb
    if image.alpha is not None:
        colour = np.concatenate([colour, image.alpha[..., None]], axis=-1)
    return colour


def _quantise(values: np.ndarray, depth: int) -> np.ndarray:
    top = 255 if depth == 8 else 65535
    dtype = np.uint8 if depth == 8 else np.uint16
    scaled = np.clip(values, 0.0, 1.0)  # one float copy; the rest in place (large images)
    scaled *= top
    return np.round(scaled, out=scaled).astype(dtype)


def _tags_to_write(image: Image, channels: int) -> FileTags:
    """The image's profile and EXIF, without a profile whose colour space the written channels do not have."""
    icc = image.icc_profile
    space = icc[16:20] if icc else b""  # the ICC header's data colour space field
    if space != (b"GRAY" if channels <= 2 else b"RGB "):
        icc = None  # a grey profile on RGB samples (WebP has no grey mode), or a CMYK one read as RGB
    return FileTags(1, icc, image.exif)


def _write_pillow(tmp: str, samples: np.ndarray, fmt: str, tags: FileTags) -> None:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[-1]]
    im = PILImage.fromarray(samples[..., 0] if mode == "L" else samples, mode=mode)
    options = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}.get(fmt, {})
    if fmt == "BMP" and mode == "LA":
        im = im.convert("RGBA")
    if fmt != "BMP":  # Pillow's BMP writer stores neither
        options.update({k: v for k, v in (("icc_profile", tags.icc_profile), ("exif", tags.exif)) if v})
    if fmt == "PNG" and tags.text:
        info = PngInfo()
        for keyword, value in tags.text.items():
            info.add_text(keyword, value)
        options["pnginfo"] = info
    im.save(tmp, format=fmt, **options)


class _PngWriter(png.Writer):
    """pypng's writer, adding chunks (``iCCP``, ``eXIf``, ``tEXt``) right after the header: pypng writes none of them."""

    def __init__(self, extra_chunks: list[tuple[bytes, bytes]], **options) -> None:
        super().__init__(**options)
        self.extra_chunks = extra_chunks

    def write_preamble(self, outfile) -> None:
        super().write_preamble(outfile)  # signature, IHDR (and no PLTE: these images are never palette)
        for kind, data in self.extra_chunks:
            png.write_chunk(outfile, kind, data)


def _write_png16(tmp: str, samples: np.ndarray, tags: FileTags) -> None:
    h, w, c = samples.shape
    chunks = []
    if tags.icc_profile:  # name, NUL, compression method 0 (zlib), compressed profile
        chunks.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(tags.icc_profile)))
    if tags.exif:  # the TIFF structure alone, without JPEG's "Exif\0\0" marker
        chunks.append((b"eXIf", tags.exif.removeprefix(b"Exif\x00\x00")))
    chunks += [(b"tEXt", keyword.encode("latin-1") + b"\0" + value.encode("latin-1")) for keyword, value in tags.text.items()]
    writer = _PngWriter(chunks, width=w, height=h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16)
    with open(tmp, "wb") as f:
        writer.write(f, samples.reshape(h, w * c))


def _write_tiff(tmp: str, samples: np.ndarray, tags: FileTags) -> None:
    c = samples.shape[-1]
    photometric = "minisblack" if c <= 2 else "rgb"
    extras = ["unassalpha"] if c in (2, 4) else None
    data = samples[..., 0] if c == 1 else samples
    tifffile.imwrite(tmp, data, photometric=photometric, extrasamples=extras, compression="zlib", **_tiff_options(tags))


def _tiff_options(tags: FileTags) -> dict:
    """tifffile's arguments for the profile and EXIF's text tags (tifffile writes no EXIF sub-directory)."""
    options: dict = {"iccprofile": tags.icc_profile} if tags.icc_profile else {}
    if not tags.exif:
        return options
    exif = PILImage.Exif()
    exif.load(tags.exif)
    text = {tag: exif[tag] for tag in (270, 305, *TIFF_TEXT_TAGS)
            if isinstance(exif.get(tag), str) and exif[tag].isascii()}  # TIFF's ASCII type
    if 270 in text:
        options["description"] = text.pop(270)
    if 305 in text:
        options["software"] = text.pop(305)
    options["extratags"] = [(tag, "s", 0, value, True) for tag, value in text.items()]
    return options
