"""``python -m dfpir.app``: the restoration behind the button, and the page driven by Gradio's own client.

The page is served once for the module (``served``), on 127.0.0.1, with the shipped ``tiny`` demo
weights and 32-pixel tiles, so that a 40 x 56 photo goes through the tiling of ``restore``; every
client test compares what it downloads with a [`Restorer`][dfpir.inference.runner.Restorer] of the
same settings called directly.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms

from dfpir import images, restore
from dfpir.app import cli, ui
from dfpir.app.restoration import restore_photos, unique_stems
from dfpir.errors import UserError
from dfpir.images import Image, read_image, write_image
from dfpir.inference.runner import DEMO_WEIGHTS, Restorer

try:
    import httpx
    from gradio_client import Client, handle_file
except ImportError:  # optional, like the app itself: the client tests skip (see ``served``)
    Client = handle_file = httpx = None

# Gradio 6.31's own use of pandas 3 (its event statistics), not ours
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|The copy keyword is deprecated)")
SKIP_REASON = "the web app is optional (pip install 'dfpir[app]'); make test installs it"
TILE = 32
H, W = 40, 56  # larger than a tile both ways: tiled


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer(DEMO_WEIGHTS, tile=TILE)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "small.png"
    write_image(path, np.random.default_rng(0).random((H, W, 3), dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "broken.png"  # an image's name, not an image's bytes
    path.write_bytes(b"not an image")
    return path


def direct(restorer: Restorer, path: Path, spec: str) -> tuple[np.ndarray, str]:
    """The 8-bit result of the Restorer called directly (what ``restore`` writes), and its tiles."""
    rgb = read_image(path).rgb
    out, plan = restorer.restore(rgb, restorer.prompt(spec, rgb))
    return np.round(out * 255).astype(np.uint8), f"{plan.count} tiles of {plan.tile}"


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(PILImage.open(path).convert("RGB"))


# --------------------------------------------------------------------------- without Gradio


def test_unique_stems_number_clashing_names_only():
    paths = [Path("x/a.jpg"), Path("y/a.png"), Path("b.png"), Path("A.tif"), Path("a_2.png")]
    assert unique_stems(paths) == ["a", "a_2", "b", "A_3", "a_2_2"]


def test_a_bad_photo_gets_its_message_and_the_others_are_restored(restorer, photo, broken, tmp_path):
    results = restore_photos(restorer, [broken, photo], "rain", tmp_path)
    assert [r.ok for r in results] == [False, True]
    assert results[0].error == "broken.png: cannot read image (cannot identify image file 'broken.png')"
    assert str(broken.parent) not in results[0].error  # the upload's name, not its temporary path
    expected, tiles = direct(restorer, photo, "rain")
    np.testing.assert_array_equal(pixels(results[1].output), expected)
    assert results[1].tiles == tiles and results[1].output.name == "small_restored.png"


def test_the_result_is_the_file_restore_writes(restorer, photo, tmp_path):
    [result] = restore_photos(restorer, [photo], "noise25", tmp_path / "app")
    assert restore.main([str(photo), "-o", str(tmp_path / "cli"), "--degradation", "noise25", "--tile", str(TILE)]) == 0
    np.testing.assert_array_equal(pixels(result.output), pixels(tmp_path / "cli" / photo.name))


def test_a_photo_too_large_for_the_memory_is_refused_in_one_line(restorer, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(images, "available_memory", lambda: 1000)
    [result] = restore_photos(restorer, [photo], "rain", tmp_path)
    assert result.error.startswith("small.png: 56 x 40 pixels") and "more than the 0.0 GiB of memory available" in result.error
    assert not list(tmp_path.iterdir())


def test_the_result_keeps_depth_alpha_and_colour_profile(restorer, tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rng = np.random.default_rng(1)
    source = Image(rng.random((24, 20, 3), dtype=np.float32), rng.random((24, 20), dtype=np.float32), 16, icc_profile=srgb)
    write_image(tmp_path / "deep.png", source)
    [result] = restore_photos(restorer, [tmp_path / "deep.png"], "haze", tmp_path / "out")
    again = read_image(result.output)
    assert (again.bit_depth, again.icc_profile) == (16, srgb)
    np.testing.assert_array_equal(again.alpha, read_image(tmp_path / "deep.png").alpha)
    assert read_image(result.before).bit_depth == 8  # what the slider shows


def test_the_menu_offers_auto_only_with_a_classifier_and_refuses_what_it_does_not_offer(restorer, photo, tmp_path, monkeypatch):
    assert ui.choices(restorer) == ["auto", *restorer.names]
    with pytest.raises(UserError, match="unknown degradation 'snow'"):
        restore_photos(restorer, [photo], "snow", tmp_path)
    monkeypatch.setattr(restorer, "classifier", None)
    assert ui.choices(restorer) == restorer.names
    with pytest.raises(UserError, match="--degradation auto needs a degradation classifier"):
        restore_photos(restorer, [photo], "auto", tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_command_refuses_bad_weights_and_ports_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    if ui.gr is not None:
        assert cli.main(["--weights", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(bad) in err and len(err.strip().splitlines()) == 1
    assert cli.main(["--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(ui, "gr", None)
    assert cli.main([]) == 2
    assert capsys.readouterr().err.strip() == "error: the app needs Gradio, an optional dependency: pip install 'dfpir[app]'"


# --------------------------------------------------------------------------- the page, through the client


@pytest.fixture(scope="module")
def served(restorer, tmp_path_factory):
    """The app on 127.0.0.1 and a ``gradio_client.Client`` connected to it."""
    if ui.gr is None or Client is None:
        pytest.skip(SKIP_REASON)
    app = ui.build_app(restorer, tmp_path_factory.mktemp("work"))
    url = ui.serve(app, block=False)
    try:
        yield app, url, Client(url, verbose=False)
    finally:
        app.close(verbose=False)


def press(served, files: list[Path], spec: str) -> tuple:
    """The page's button through the client: (table, downloads, compare menu, slider, status)."""
    _, _, client = served
    return client.predict([handle_file(str(f)) for f in files], spec, api_name="/restore")


def test_the_page_restores_as_the_restorer_does(served, restorer, photo):
    table, downloads, menu, slider, status = press(served, [photo], "rain")
    expected, tiles = direct(restorer, photo, "rain")
    assert table["headers"] == ui.COLUMNS
    assert table["data"] == [["small.png", "rain", "", "", tiles, "small_restored.png"]]
    [download] = downloads
    assert Path(download).name == "small_restored.png"
    np.testing.assert_array_equal(pixels(download), expected)
    before, after = slider
    np.testing.assert_array_equal(pixels(before), pixels(photo))
    np.testing.assert_array_equal(pixels(after), expected)
    assert menu["value"] == "small_restored.png" and re.fullmatch(r"Restored 1 of 1 photos in [\d.]+ s\.", status)


def test_auto_shows_the_classifiers_choice_and_confidence(served, restorer, photo):
    table, downloads, *_ = press(served, [photo], "auto")
    [[name, degradation, confidence, note, _, _]] = table["data"]
    assert degradation in restorer.names and 0 <= float(confidence) <= 1
    choice, conf = restorer.classify(read_image(photo).rgb)
    assert (degradation, confidence) == (choice, f"{conf:.2f}")
    assert note.startswith("low confidence (below 0.60)") == (conf < restorer.min_confidence)
    np.testing.assert_array_equal(pixels(downloads[0]), direct(restorer, photo, "auto")[0])


def test_a_bad_upload_shows_its_message_and_no_traceback(served, photo, broken):
    table, downloads, menu, slider, status = press(served, [broken, photo], "haze")
    message = "broken.png: cannot read image (cannot identify image file 'broken.png')"
    assert table["data"][0] == ["broken.png", "", "", "", "", message]
    assert status.endswith(f"Error: {message}") and "Traceback" not in status
    assert [Path(d).name for d in downloads] == ["small_restored.png"]


def test_no_upload_asks_for_one(served):
    _, _, client = served
    *_, status = client.predict([], "rain", api_name="/restore")
    assert status == "Upload one or more photos first."


def test_a_taken_port_is_refused_in_one_line(served, restorer, tmp_path):
    app = ui.build_app(restorer, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"^cannot serve on 127.0.0.1:{port} \(in use, or not allowed\); choose another --port"):
            ui.serve(app, port, block=False)


def test_the_app_is_local_and_reports_nothing(served):
    app, url, _ = served
    assert url.startswith("http://127.0.0.1:") and not app.share and app.analytics_enabled is False
    page = httpx.get(url).text
    remote = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', page)
    assert "<html" in page and not remote, remote
