"""Image files of every kind the restore tool accepts: read them right, write them back the same."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

import dfpir.images as images
from dfpir.errors import UserError
from dfpir.images import Image, check_writable, read_image, write_image

RNG = np.random.default_rng(0)
H, W = 9, 13  # odd sizes, non-square, so a transposition shows


def u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, (H, W, *shape), dtype=np.uint8)


def u16(*shape: int) -> np.ndarray:
    return RNG.integers(0, 65536, (H, W, *shape), dtype=np.uint16)


def save_pillow(path: Path, arr: np.ndarray, **options) -> Path:
    PILImage.fromarray(arr).save(path, **options)
    return path


def save_png16(path: Path, arr: np.ndarray) -> Path:
    c = 1 if arr.ndim == 2 else arr.shape[-1]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    png.from_array(arr.reshape(H, W * c), f"{mode};16").save(str(path))
    return path


# --------------------------------------------------------------------------- every input kind


def test_gray_png_is_gray_8bit(tmp_path):
    g = u8()
    img = read_image(save_pillow(tmp_path / "g.png", g))
    assert (img.bit_depth, img.was_gray, img.alpha) == (8, True, None)
    assert img.rgb.shape == (H, W, 3) and img.rgb.dtype == np.float32
    np.testing.assert_array_equal(img.rgb[..., 1], g / np.float32(255))


def test_rgb_and_rgba_png(tmp_path):
    rgb, rgba = u8(3), u8(4)
    a = read_image(save_pillow(tmp_path / "rgb.png", rgb))
    b = read_image(save_pillow(tmp_path / "rgba.png", rgba))
    assert (a.bit_depth, a.was_gray, a.alpha) == (8, False, None)
    np.testing.assert_array_equal(np.round(a.rgb * 255), rgb)
    np.testing.assert_array_equal(np.round(b.alpha * 255), rgba[..., 3])
    np.testing.assert_array_equal(np.round(b.rgb * 255), rgba[..., :3])


def test_gray_alpha_png(tmp_path):
    la = u8(2)
    img = read_image(save_pillow(tmp_path / "la.png", la, format="PNG"))
    assert img.was_gray and img.alpha is not None
    np.testing.assert_array_equal(np.round(img.alpha * 255), la[..., 1])


def test_pillow_reduces_16bit_rgb_png_so_we_do_not_use_it(tmp_path):
    """The reason for pypng: Pillow (13) reads a 16-bit RGB PNG as 8 bits; read_image keeps 16."""
    arr = u16(3)
    path = save_png16(tmp_path / "rgb16.png", arr)
    assert np.asarray(PILImage.open(path)).dtype == np.uint8  # the problem
    img = read_image(path)
    assert img.bit_depth == 16 and not img.was_gray
    np.testing.assert_array_equal(np.round(img.rgb.astype(np.float64) * 65535), arr)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_16bit_png_gray_gray_alpha_rgba(tmp_path, channels):
    arr = u16() if channels == 1 else u16(channels)
    img = read_image(save_png16(tmp_path / "x.png", arr))
    assert img.bit_depth == 16 and img.was_gray == (channels <= 2) and (img.alpha is not None) == (channels in (2, 4))
    np.testing.assert_array_equal(np.round(img.rgb[..., 0].astype(np.float64) * 65535), arr if channels == 1 else arr[..., 0])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_tiff(tmp_path, channels):
    arr = u16() if channels == 1 else u16(channels)
    extras = ["unassalpha"] if channels == 4 else None
    tifffile.imwrite(tmp_path / "x.tif", arr, photometric="minisblack" if channels == 1 else "rgb", extrasamples=extras)
    img = read_image(tmp_path / "x.tif")
    assert img.bit_depth == 16 and img.was_gray == (channels == 1) and (img.alpha is not None) == (channels == 4)
    colour = arr if channels == 1 else arr[..., 0]
    np.testing.assert_array_equal(np.round(img.rgb[..., 0].astype(np.float64) * 65535), colour)


def test_8bit_tiff_bmp_webp(tmp_path):
    rgb = u8(3)
    for name, options in [("x.tif", {}), ("x.bmp", {}), ("x.webp", {"lossless": True})]:
        img = read_image(save_pillow(tmp_path / name, rgb, **options))
        assert img.bit_depth == 8, name
        np.testing.assert_array_equal(np.round(img.rgb * 255), rgb, err_msg=name)


def test_webp_with_alpha(tmp_path):
    rgba = u8(4)
    rgba[..., 3] = np.maximum(rgba[..., 3], 1)  # lossless WebP may drop colour under alpha 0
    img = read_image(save_pillow(tmp_path / "x.webp", rgba, lossless=True, exact=True))
    np.testing.assert_array_equal(np.round(img.alpha * 255), rgba[..., 3])


def test_palette_png_with_and_without_transparency(tmp_path):
    rgb = PILImage.fromarray(u8(3)).convert("P", palette=PILImage.Palette.ADAPTIVE, colors=16)
    rgb.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.alpha is None and not img.was_gray
    np.testing.assert_array_equal(np.round(img.rgb * 255), np.asarray(rgb.convert("RGB")))
    rgb.info["transparency"] = 0
    rgb.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png").alpha is not None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    arr = u8(3)
    im = PILImage.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(PILImage.open(tmp_path / "o.png")).convert("RGB"))
    got = read_image(tmp_path / "o.png").rgb
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.round(got * 255), expected)


def test_jpeg_with_exif_rotation_is_upright(tmp_path):
    im = PILImage.fromarray(u8(3))
    exif = im.getexif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    im.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    img = read_image(tmp_path / "o.jpg")
    assert img.rgb.shape == (W, H, 3) and img.bit_depth == 8


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("kind", ["truncated_png", "truncated_jpeg", "text", "empty", "missing", "folder"])
def test_bad_files_raise_one_line_user_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.png"
    if kind == "truncated_png":
        save_pillow(tmp_path / "ok.png", u8(3))
        path.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    elif kind == "truncated_jpeg":
        path = tmp_path / "bad.jpg"
        PILImage.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:400])
    elif kind == "text":
        path.write_text("not an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(UserError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_more_than_four_channels_are_refused_not_dropped(tmp_path, dtype):
    """Pillow reads an 8-bit RGB + 2 extra samples TIFF as plain RGB; read_image must not."""
    arr = RNG.integers(0, np.iinfo(dtype).max, (H, W, 5)).astype(dtype)
    tifffile.imwrite(tmp_path / "five.tif", arr, photometric="rgb", extrasamples=["unspecified"] * 2)
    with pytest.raises(UserError) as info:
        read_image(tmp_path / "five.tif")
    assert str(info.value) == (f"{tmp_path / 'five.tif'}: 5 channels per pixel are not supported "
                               "(grey, grey + alpha, RGB or RGBA only); save it with at most 4 channels")


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    "name, depth, gray, alpha",
    [("a.png", 8, False, False), ("a.png", 8, True, False), ("a.png", 8, False, True), ("a.png", 16, False, False),
     ("a.png", 16, True, True), ("a.png", 16, False, True), ("a.tif", 16, False, True), ("a.tif", 16, True, False),
     ("a.tif", 8, False, False), ("a.bmp", 8, False, False), ("a.bmp", 8, True, False), ("a.webp", 8, False, True)],
)
def test_write_then_read_keeps_depth_alpha_and_gray(tmp_path, name, depth, gray, alpha):
    top = 255 if depth == 8 else 65535
    rgb = RNG.integers(0, top + 1, (H, W, 1 if gray else 3)).astype(np.float32) / top
    rgb = rgb.repeat(3, axis=-1) if gray else rgb
    a = RNG.integers(1, top + 1, (H, W)).astype(np.float32) / top if alpha else None
    write_image(tmp_path / name, Image(rgb, a, depth, gray))
    back = read_image(tmp_path / name)
    assert (back.bit_depth, back.was_gray, back.alpha is not None) == (depth, gray, alpha)
    np.testing.assert_allclose(back.rgb, rgb, atol=0.5 / top)
    if alpha:
        np.testing.assert_allclose(back.alpha, a, atol=0.5 / top)


def test_write_jpeg_is_close(tmp_path):
    rgb = np.full((H, W, 3), 0.5, np.float32)
    write_image(tmp_path / "a.jpg", rgb)
    np.testing.assert_allclose(read_image(tmp_path / "a.jpg").rgb, rgb, atol=2 / 255)


@pytest.mark.parametrize("name, depth, alpha", [("a.jpg", 8, True), ("a.bmp", 16, False), ("a.gif", 8, False)])
def test_formats_that_cannot_hold_the_image_refuse_before_writing(tmp_path, name, depth, alpha):
    img = Image(np.zeros((H, W, 3), np.float32), np.ones((H, W), np.float32) if alpha else None, depth)
    with pytest.raises(ValueError, match=name):
        check_writable(tmp_path / name, img)  # the same refusal, before any pixels exist (restore checks first)
    with pytest.raises(ValueError, match=name):
        write_image(tmp_path / name, img)
    assert list(tmp_path.iterdir()) == []
    check_writable(tmp_path / "a.png", img)  # PNG holds all of them


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import dfpir.images as images

    def broken(tmp, samples, fmt, tags):
        Path(tmp).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(images, "_write_pillow", broken)
    with pytest.raises(UserError, match=r"cannot write .*a\.png: disk full"):  # the output's name, not the temporary file's
        write_image(tmp_path / "a.png", np.zeros((H, W, 3)))
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((H, W, 3)))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- colour profile and EXIF

MAKE, MODEL, EXPOSURE = 0x010F, 0x0110, 0x829A


SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # made once: it holds a timestamp


def camera_jpeg(path: Path) -> Path:
    """A JPEG as a phone writes it: an ICC profile, camera tags, stored rotated (orientation 6)."""
    exif = PILImage.Exif()
    exif[MAKE], exif[MODEL], exif[0x0112] = "TestCam", "Model 1", 6
    exif.get_ifd(0x8769)[EXPOSURE] = (1, 125)
    PILImage.fromarray(u8(3)).save(path, exif=exif.tobytes(), icc_profile=SRGB_PROFILE, quality=95)
    return path


@pytest.mark.parametrize("name, depth", [("out.jpg", 8), ("out.png", 8), ("out.png", 16), ("out.webp", 8)])
def test_profile_and_exif_survive_a_restoration(tmp_path, name, depth):
    image = read_image(camera_jpeg(tmp_path / "phone.jpg"))
    assert image.rgb.shape == (W, H, 3) and image.icc_profile == SRGB_PROFILE
    write_image(tmp_path / name, image.with_rgb(image.rgb[::-1].copy()), bit_depth=depth)  # new pixels, same tags
    with PILImage.open(tmp_path / name) as out:
        exif = out.getexif()
        assert out.info.get("icc_profile") == SRGB_PROFILE
        assert (exif[MAKE], exif[MODEL], exif.get_ifd(0x8769)[EXPOSURE]) == ("TestCam", "Model 1", (1, 125))
        assert exif[0x0112] == 1  # upright pixels: a viewer must not turn them again
    again = read_image(tmp_path / name)  # our reader too (16-bit PNG: pypng, with Pillow for the tags)
    assert again.rgb.shape == (W, H, 3) and again.icc_profile == SRGB_PROFILE and again.exif == image.exif


@pytest.mark.parametrize("depth", [8, 16])
def test_png_text_chunks_are_added_beside_the_profile_and_exif(tmp_path, depth):
    image = read_image(camera_jpeg(tmp_path / "phone.jpg"))
    text = {"dfpir:degradation": "rain", "dfpir:confidence": "0.450", "dfpir:low-confidence": "yes"}
    write_image(tmp_path / "out.png", image, bit_depth=depth, text=text)
    with PILImage.open(tmp_path / "out.png") as out:
        assert out.text == text and out.info.get("icc_profile") == SRGB_PROFILE
        assert (out.getexif()[MAKE], out.getexif().get_ifd(0x8769)[EXPOSURE]) == ("TestCam", (1, 125))
    again = read_image(tmp_path / "out.png")
    assert (again.bit_depth, again.icc_profile, again.exif) == (depth, SRGB_PROFILE, image.exif)
    np.testing.assert_array_equal(np.round(again.rgb * 255), np.round(image.rgb * 255))
    write_image(tmp_path / "out.jpg", image, text=text)  # no text chunks in JPEG: ignored, the rest kept
    assert read_image(tmp_path / "out.jpg").icc_profile == SRGB_PROFILE


def test_tiff_gets_the_profile_and_the_camera_text_tags(tmp_path):
    image = read_image(camera_jpeg(tmp_path / "phone.jpg"))
    write_image(tmp_path / "out.tif", image, bit_depth=16)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        tags = tif.pages[0].tags
        assert tags[34675].value == SRGB_PROFILE
        assert (tags[MAKE].value, tags[MODEL].value) == ("TestCam", "Model 1")
        assert 274 not in tags  # no orientation tag: upright
    again = read_image(tmp_path / "out.tif")  # tifffile's 16-bit path; Pillow reads the tags
    assert again.icc_profile == SRGB_PROFILE and PILImage.Exif().load(again.exif) is None


def test_tiff_structure_tags_are_not_carried_as_exif(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", u16(3), photometric="rgb", iccprofile=SRGB_PROFILE, metadata=None,
                     software=False, extratags=[(MAKE, "s", 0, "TestCam", True)])
    image = read_image(tmp_path / "in.tif")
    exif = PILImage.Exif()
    exif.load(image.exif)
    assert image.icc_profile == SRGB_PROFILE and exif[MAKE] == "TestCam"
    assert not {256, 257, 258, 259, 273, 277, 278, 279, 34675} & set(exif)  # how the TIFF stored its pixels
    write_image(tmp_path / "out.jpg", image, bit_depth=8)
    with PILImage.open(tmp_path / "out.jpg") as out:
        assert out.getexif()[MAKE] == "TestCam" and out.info["icc_profile"] == SRGB_PROFILE


def test_a_profile_of_another_colour_space_is_not_written(tmp_path):
    grey_profile = SRGB_PROFILE[:16] + b"GRAY" + SRGB_PROFILE[20:]  # header says grey
    image = Image(np.zeros((H, W, 3), np.float32), icc_profile=grey_profile)  # RGB samples
    write_image(tmp_path / "out.png", image)
    with PILImage.open(tmp_path / "out.png") as out:
        assert "icc_profile" not in out.info


# --------------------------------------------------------------------------- size limits


def test_pillows_pixel_limit_is_lifted_for_our_reader_only(tmp_path, monkeypatch):
    save_pillow(tmp_path / "a.png", u8(3))
    save_pillow(tmp_path / "b.jpg", u8(3))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)  # H x W = 117 pixels: a "bomb" to Pillow
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        assert read_image(tmp_path / "a.png").shape == (H, W)
        assert read_image(tmp_path / "b.jpg").shape == (H, W)
    assert PILImage.MAX_IMAGE_PIXELS == 10  # the process keeps its limit
    with pytest.raises(PILImage.DecompressionBombError):
        PILImage.open(tmp_path / "a.png")


@pytest.mark.parametrize("name", ["a.png", "a16.png", "a16.tif"])
def test_an_image_too_large_for_memory_is_one_line(tmp_path, monkeypatch, name):
    if name == "a16.png":
        save_png16(tmp_path / name, u16(3))
    elif name == "a16.tif":
        tifffile.imwrite(tmp_path / name, u16(3), photometric="rgb")
    else:
        save_pillow(tmp_path / name, u8(3))
    monkeypatch.setattr(images, "available_memory", lambda: 1000)  # bytes
    with pytest.raises(UserError) as info:
        read_image(tmp_path / name)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / name}: {W} x {H} pixels") and "memory available" in message
    assert "\n" not in message
