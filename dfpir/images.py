"""Full-fidelity image files: read and write without losing bit depth, alpha or grey-ness.

:func:`read_image` returns an :class:`Image`: float32 RGB in [0, 1] for the network, plus what it
takes to write the result back the way the input was stored (alpha channel, 8 or 16 bits,
single-channel grey). EXIF orientation is applied on reading, so the pixels are upright and the
written file carries no orientation tag.

Which library reads what, and why:

- Pillow for 8-bit PNG, JPEG, BMP, WebP and TIFF, palette images and 16-bit *grey* files.
- **pypng** for every 16-bit PNG: Pillow has no 16-bit RGB mode and silently reduces 16-bit RGB(A)
  PNGs to 8 bits (checked with Pillow 13; imageio's Pillow plugin does the same). pypng is pure
  Python, so it is used only where it is needed.
- **tifffile** for 16-bit multi-channel TIFF (Pillow reduces those too) and for writing all TIFFs.

Anything that cannot be read (missing, truncated, not an image, an unsupported sample type)
raises :class:`~dfpir.errors.UserError` with ``"<file>: <reason>"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .files import atomic_write
from .errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PILLOW_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}
EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".bmp", ".webp"}
NO_ALPHA = {".jpg", ".jpeg"}
ORIENTATION_TAG = 0x0112


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
        The file held one colour channel; :func:`write_image` writes one back.
    path : Path or None
        Where it was read from.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    was_gray: bool = False
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.rgb.shape[:2]

    def with_rgb(self, rgb: np.ndarray) -> "Image":
        """A copy holding new pixels (same size) and this image's alpha, bit depth and grey-ness."""
        if rgb.shape != self.rgb.shape:
            raise UserError(f"new pixels have shape {rgb.shape}, the image has {self.rgb.shape}")
        return Image(np.asarray(rgb, dtype=np.float32), self.alpha, self.bit_depth, self.was_gray, self.path)


# --------------------------------------------------------------------------- reading


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` has one of the supported image suffixes (case-insensitive)."""
    return Path(path).suffix.lower() in SUFFIXES


def read_image(path: str | Path) -> Image:
    """Read an image file as an :class:`Image` (EXIF orientation applied).

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, TIFF, BMP or WebP file; grey, grey + alpha, RGB, RGBA or palette; 8 or 16 bits.

    Raises
    ------
    UserError
        ``"<file>: <reason>"`` for a missing, truncated, corrupt or unsupported file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    try:
        samples, orientation = _decode(path)
        samples = _orient(samples, orientation)
        return _to_image(samples, path)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure means "cannot read this file"
        raise UserError(f"{path}: cannot read image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Integer samples (H, W) or (H, W, C) with C in 1-4, and the EXIF orientation (1 = upright)."""
    head = _head(path)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and _png_bit_depth(head) == 16:
        return _read_png16(path), _pillow_orientation(path)
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
    import png

    with open(path, "rb") as f:  # pypng's Reader(filename=...) never closes the file it opens
        width, height, rows, info = png.Reader(file=f).asDirect()
        planes = info["planes"]
        data = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])  # (H, W * planes)
    return data.reshape(height, width, planes)


def _read_tiff16(path: Path) -> tuple[np.ndarray, int] | None:
    """16-bit multi-sample TIFF through tifffile; ``None`` for anything Pillow reads in full.

    Refuses more than 4 samples per pixel at any depth: Pillow reads a 5-channel 8-bit TIFF as RGB.
    """
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[0]
        _check_channels(path, page.samplesperpixel)  # Pillow would silently drop the extra ones
        if page.bitspersample != 16 or page.samplesperpixel < 2:
            return None
        samples = page.asarray()
        tag = page.tags.get(274)
        orientation = int(tag.value) if tag is not None else 1
    if samples.ndim == 3 and samples.shape[0] == page.samplesperpixel and samples.shape[-1] != page.samplesperpixel:
        samples = np.moveaxis(samples, 0, -1)  # planar (C, H, W) -> (H, W, C)
    return samples, orientation


def _pillow_orientation(path: Path) -> int:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - no readable EXIF means upright
        return 1


def _read_pillow(path: Path) -> tuple[np.ndarray, int]:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im.load()  # decodes now, so a truncated file fails here
        orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
        return _pillow_samples(im), orientation


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


def _to_image(samples: np.ndarray, path: Path) -> Image:
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
    return Image(np.ascontiguousarray(colour), alpha, bit_depth, channels <= 2, path)


# --------------------------------------------------------------------------- writing


def write_image(path: str | Path, image: Image | np.ndarray, bit_depth: int | None = None) -> None:
    """Write ``image`` atomically, in the format its suffix names, keeping depth, alpha and grey.

    Parameters
    ----------
    path : str or Path
        Destination; the suffix picks the format (``.png .jpg .jpeg .tif .tiff .bmp .webp``).
    image : Image or np.ndarray
        An :class:`Image`, or a float (H, W, 3) / (H, W) array in [0, 1] (written as 8-bit).
    bit_depth : int, optional
        Overrides the image's bit depth (8 or 16).

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
    if suffix in (".tif", ".tiff"):
        encode = _write_tiff
    elif suffix == ".png" and depth == 16:
        encode = _write_png16
    else:
        encode = partial(_write_pillow, fmt=PILLOW_FORMATS[suffix])
    atomic_write(path, lambda tmp: encode(tmp, samples))


def check_writable(path: str | Path, image: Image) -> None:
    """Raise ``ValueError`` now if :func:`write_image` could not write ``image`` to ``path``.

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


def _write_pillow(tmp: str, samples: np.ndarray, fmt: str) -> None:
    from PIL import Image as PILImage

    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[-1]]
    im = PILImage.fromarray(samples[..., 0] if mode == "L" else samples, mode=mode)
    options = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}.get(fmt, {})
    if fmt == "BMP" and mode == "LA":
        im = im.convert("RGBA")
    im.save(tmp, format=fmt, **options)


def _write_png16(tmp: str, samples: np.ndarray) -> None:
    import png

    h, w, c = samples.shape
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    with open(tmp, "wb") as f:
        png.from_array(samples.reshape(h, w * c), f"{mode};16").write(f)


def _write_tiff(tmp: str, samples: np.ndarray) -> None:
    import tifffile

    c = samples.shape[-1]
    photometric = "minisblack" if c <= 2 else "rgb"
    extras = ["unassalpha"] if c in (2, 4) else None
    data = samples[..., 0] if c == 1 else samples
    tifffile.imwrite(tmp, data, photometric=photometric, extrasamples=extras, compression="zlib")
