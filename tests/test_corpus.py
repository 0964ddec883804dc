"""The training corpus (dfpir.data.corpus): dead leaves, the curated tables, building, the commands.

Everything here runs offline on fake sources in a temporary folder; the tests that look at the
real Debian packages skip, saying which package to install, when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter

from dfpir import data
from dfpir.data import corpus
from dfpir.data.corpus import HELDOUT, TRAINING, Photo, Source, build_corpus, build_heldout, dead_leaves, disk_radii
from dfpir.errors import UserError
from dfpir.files import atomic_write

# --------------------------------------------------------------------------- dead leaves


def test_dead_leaves_is_deterministic_per_seed():
    a = dead_leaves(48, np.random.default_rng(7))
    assert np.array_equal(a, dead_leaves(48, np.random.default_rng(7)))
    assert not np.array_equal(a, dead_leaves(48, np.random.default_rng(8)))


@pytest.mark.parametrize("size, batch", [(1, 4096), ((5, 9), 4096), (40, 4096), (40, 16)])
def test_dead_leaves_covers_the_canvas_with_8bit_colours(size, batch):
    img = dead_leaves(size, np.random.default_rng(0), batch=batch)  # 16 disks a round: many rounds
    h, w = (size, size) if isinstance(size, int) else size
    assert img.shape == (h, w, 3) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1
    assert np.array_equal(img * 255, np.rint(img * 255)), "colours are 8-bit levels, saved without rounding"
    # The canvas starts black; a disk drawn exactly black has probability 2**-24: black pixels were never covered.
    assert not (img == 0).all(-1).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dead_leaves_edges_are_sharp(seed):
    def jumps(img):
        d = np.abs(np.diff(img, axis=1)).max(-1)  # largest channel change between horizontal neighbours
        return (d == 0).mean(), np.median(d[d > 0])

    img = dead_leaves(96, np.random.default_rng(seed))
    flat, jump = jumps(img)
    assert flat > 0.5 and jump > 0.3, (flat, jump)  # inside a disk nothing changes; across an edge, a step
    blurred_flat, blurred_jump = jumps(uniform_filter(img, (3, 3, 1)))  # what an anti-aliased edge would look like
    assert blurred_flat < 0.5 and blurred_jump < 0.3, (blurred_flat, blurred_jump)


def test_disk_radii_follow_the_inverse_cube_law():
    rmin, rmax = 2.0, 50.0
    r = disk_radii(np.random.default_rng(0), 200_000, rmin, rmax)
    assert r.min() >= rmin and r.max() <= rmax
    for x in (2.5, 4.0, 10.0, 30.0):  # CDF of a density proportional to r^-3 on [rmin, rmax]
        expected = (rmin**-2 - x**-2) / (rmin**-2 - rmax**-2)
        assert abs((r <= x).mean() - expected) < 0.005, x


def test_dead_leaves_refuses_bad_radii():
    with pytest.raises(UserError, match="rmin"):
        dead_leaves(16, np.random.default_rng(0), rmin=5, rmax=2)


# --------------------------------------------------------------------------- the curated tables

FREE = ("CC0-1.0", "CC-BY-", "CC-BY-SA-", "GPL-", "LGPL-", "BSD-", "MIT", "public domain", "no known copyright restrictions")


@pytest.mark.parametrize("source", [*TRAINING, HELDOUT], ids=lambda s: s.package)
def test_every_curated_photo_has_a_free_licence_a_copyright_and_a_unique_name(source):
    assert source.registry in ("debian", "pypi")
    assert len({p.path for p in source.photos}) == len(source.photos)
    assert len({p.stem for p in source.photos}) == len(source.photos), "two photos would be written to one file"
    for photo in source.photos:
        licence = source.licence_of(photo)
        assert licence.startswith(FREE) and "-NC" not in licence and "-ND" not in licence, (photo.path, licence)
        assert source.copyright_of(photo) and photo.shows, photo.path
        assert source.decision(photo.path) == "kept"


def test_training_sources_never_include_the_heldout_package():
    assert HELDOUT.package not in {s.package for s in TRAINING}
    assert not any(Path(s.root).is_relative_to(corpus.HELDOUT_ROOT) for s in TRAINING if s.registry == "debian")
    assert len(HELDOUT.photos) == 12 and Path(HELDOUT.root).is_relative_to(corpus.HELDOUT_ROOT)


def test_the_docs_table_of_sources_matches_the_tables():
    page = (Path(__file__).resolve().parent.parent / "docs/guide/corpus.md").read_text(encoding="utf-8")
    rows = {cells[0]: cells for line in page.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]}
    assert {s.package: rows[s.package][2] for s in TRAINING} == {s.package: str(len(s.photos)) for s in TRAINING}
    assert f"{sum(len(s.photos) for s in TRAINING)} photographs in all" in page


def test_install_commands():
    assert Source("pkg", "debian", "/x", ()).install == "apt-get install -y pkg"
    assert Source("pkg", "pypi", "mod/x", ()).install == "pip install pkg"


# --------------------------------------------------------------------------- building from fake sources


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake package folder with a large colour photo, a grey photo, a fine checkerboard and a
    cut-out, three fake sources (one installed, one Debian and one PyPI package missing), and a
    held-out folder outside /usr/share."""
    pkg = tmp_path / "pkg"
    rng = np.random.default_rng(0)
    _save(pkg / "big.png", rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    _save(pkg / "grey.png", rng.integers(0, 256, (80, 100), dtype=np.uint8), "L")
    _save(pkg / "checker.png", ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8), "L")
    cutout = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    cutout[..., 3] = 0
    _save(pkg / "cutout.png", cutout, "RGBA")
    photos = tuple(Photo(f"{n}.png", f"fake {n}", licence="CC0-1.0", copyright="nobody") for n in ("big", "grey", "checker", "cutout"))
    sources = [
        Source("fake-debian", "debian", str(pkg), photos),
        Source("fake-missing", "debian", str(tmp_path / "absent"), (Photo("x.jpg", "x", licence="CC0-1.0", copyright="nobody"),)),
        Source("fake-wheel", "pypi", "no_such_module_for_dfpir/data", (Photo("y.jpg", "y", licence="CC0-1.0", copyright="nobody"),)),
    ]
    monkeypatch.setattr(corpus, "TRAINING", tuple(sources))
    return tmp_path, sources


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_build_corpus_downscales_converts_and_records_every_file(fake):
    tmp, sources = fake
    out = tmp / "out"
    report = build_corpus(out, sources, dead_leaves=2, dead_leaves_size=64, max_side=128, seed=3)

    big = Image.open(out / "photos/fake-debian/big.png")
    assert big.mode == "RGB" and big.size == (128, 85)  # 300 x 200 -> longer side 128
    grey = np.asarray(Image.open(out / "photos/fake-debian/grey.png"))
    assert grey.shape == (80, 100, 3) and (grey == grey[..., :1]).all()  # small: not resized; grey repeated
    checker = np.asarray(Image.open(out / "photos/fake-debian/checker.png"), np.float64)
    # antialiased: a 1-pixel checkerboard halved becomes even mid-grey (point sampling gives all black or all white)
    assert checker.shape == (128, 128, 3) and abs(checker.mean() - 127.5) < 5 and checker.std() < 20
    for i in range(2):
        leaves = Image.open(out / f"deadleaves/deadleaves-{i:04d}.png")
        assert leaves.mode == "RGB" and leaves.size == (64, 64)

    entries = {e["file"]: e for e in _manifest(out)["files"]}
    assert set(entries) == {"photos/fake-debian/big.png", "photos/fake-debian/grey.png", "photos/fake-debian/checker.png",
                            "deadleaves/deadleaves-0000.png", "deadleaves/deadleaves-0001.png"}
    for file, e in entries.items():
        assert e["sha256"] == hashlib.sha256((out / file).read_bytes()).hexdigest()
    e = entries["photos/fake-debian/big.png"]
    assert (e["source"], e["licence"], e["copyright"]) == ("fake-debian", "CC0-1.0", "nobody")
    assert e["original"] == str(tmp / "pkg/big.png") and e["original_size"] == [300, 200] and e["size"] == [128, 85]
    assert "grey -> RGB" in entries["photos/fake-debian/grey.png"]["conversions"]
    assert report.skipped == [(str(tmp / "pkg/cutout.png"), "transparent pixels (a cut-out, not a photograph)")]
    assert not (out / "photos/fake-debian/cutout.png").exists()
    licences = (out / "LICENSES.md").read_text(encoding="utf-8")
    assert "photos/fake-debian/big.png | CC0-1.0 | nobody" in licences and "## dead leaves" in licences


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped():
    im, done = corpus.to_srgb8(Image.fromarray(np.full((4, 4), 128 * 257, np.uint16)))  # mode I;16
    assert im.mode == "RGB" and (np.asarray(im) == 128).all() and "16-bit -> 8-bit" in done


def test_missing_sources_are_listed_with_their_install_commands(fake):
    tmp, sources = fake
    report = build_corpus(tmp / "out", sources, dead_leaves=0, max_side=128)
    assert [(m.package, m.install, m.whole) for m in report.missing] == [
        ("fake-missing", "apt-get install -y fake-missing", True), ("fake-wheel", "pip install fake-wheel", True)]
    assert [m["install"] for m in _manifest(tmp / "out")["missing"]] == ["apt-get install -y fake-missing", "pip install fake-wheel"]
    with pytest.raises(UserError, match="apt-get install -y fake-missing.*pip install fake-wheel"):
        build_corpus(tmp / "strict", sources, require_all=True)
    assert not (tmp / "strict").exists(), "--require-all fails before writing anything"


def test_build_corpus_is_idempotent_and_removes_what_it_no_longer_makes(fake, monkeypatch):
    tmp, sources = fake
    out = tmp / "out"
    first = build_corpus(out, sources, dead_leaves=3, dead_leaves_size=32, max_side=128)
    manifest = (out / "manifest.json").read_bytes()
    writes = []
    monkeypatch.setattr(corpus, "atomic_write", lambda path, write: writes.append(Path(path).name) or atomic_write(path, write))
    again = build_corpus(out, sources, dead_leaves=3, dead_leaves_size=32, max_side=128)
    assert (again.written, again.unchanged, again.removed) == (0, first.written, 0)
    assert writes == ["manifest.json", "LICENSES.md"] and (out / "manifest.json").read_bytes() == manifest

    (out / "photos/fake-debian/big.png").write_bytes(b"damaged")  # a changed output is rewritten
    _save(tmp / "pkg/grey.png", np.zeros((8, 8), np.uint8), "L")  # so is the output of a changed source
    fewer = build_corpus(out, sources, dead_leaves=1, dead_leaves_size=32, max_side=128)
    assert (fewer.written, fewer.removed) == (2, 2)
    assert sorted(p.name for p in (out / "deadleaves").iterdir()) == ["deadleaves-0000.png"]
    assert np.asarray(Image.open(out / "photos/fake-debian/grey.png")).shape == (8, 8, 3)


def test_dead_leaves_files_depend_on_the_seed_only(fake):
    tmp, _ = fake
    sha = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        build_corpus(tmp / name, [], dead_leaves=1, dead_leaves_size=32, seed=seed)
        sha[name] = _manifest(tmp / name)["files"][0]["sha256"]
    assert sha["a"] == sha["b"] != sha["c"]


def test_the_heldout_package_is_refused_as_a_training_source(fake, monkeypatch):
    tmp, sources = fake
    mate = Source("anything", "debian", str(corpus.HELDOUT_ROOT / "nature"), (Photo("Aqua.jpg", "a", licence="GPL-2+", copyright="x"),))
    with pytest.raises(UserError, match="reserved for held-out evaluation"):
        build_corpus(tmp / "out", [*sources, mate])
    # A symbolic link into the held-out folder is refused too (the folder moved to tmp for the test).
    monkeypatch.setattr(corpus, "HELDOUT_ROOT", tmp / "mate")
    _save(tmp / "mate/nature/Aqua.png", np.zeros((4, 4, 3), np.uint8))
    (tmp / "pkg/link.png").symlink_to(tmp / "mate/nature/Aqua.png")
    linked = Source("sneaky", "debian", str(tmp / "pkg"), (Photo("link.png", "a", licence="CC0-1.0", copyright="x"),))
    with pytest.raises(UserError, match="reserved"):
        build_corpus(tmp / "out", [linked])
    assert not (tmp / "out/manifest.json").exists()


def test_build_heldout_writes_a_flat_folder_or_names_the_apt_command(fake, monkeypatch):
    tmp, _ = fake
    monkeypatch.setattr(corpus, "HELDOUT", Source("mate-backgrounds", "debian", str(tmp / "pkg"), (Photo("big.png", "b", licence="GPL-2+", copyright="x"),)))
    report = build_heldout(tmp / "held", max_side=128)
    assert report.counts() == {"mate-backgrounds": 1} and (tmp / "held/photos/big.png").is_file()
    monkeypatch.setattr(corpus, "HELDOUT", Source("mate-backgrounds", "debian", str(tmp / "none"), (Photo("big.png", "b"),)))
    with pytest.raises(UserError, match="apt-get install -y mate-backgrounds"):
        build_heldout(tmp / "held2")


# --------------------------------------------------------------------------- the commands


def test_corpus_command_prints_counts_and_missing_install_commands(fake, capsys):
    tmp, _ = fake
    assert data.main(["corpus", "-o", str(tmp / "out"), "--dead-leaves", "1", "--dead-leaves-size", "32", "--max-side", "128"]) == 0
    out = capsys.readouterr().out
    assert "3 photos (fake-debian 3), 1 dead-leaves images" in out
    assert "install with: apt-get install -y fake-missing" in out and "install with: pip install fake-wheel" in out
    assert "skipped" in out and "cutout.png" in out


@pytest.mark.parametrize("argv, message", [
    (["corpus", "-o", "OUT", "--max-side", "10"], "--max-side must be >= 128"),
    (["corpus", "-o", "OUT", "--dead-leaves", "-1"], "--dead-leaves must be >= 0"),
    (["corpus", "-o", "OUT", "--dead-leaves-size", "2"], "--dead-leaves-size must be >= 16"),
    (["corpus", "-o", "OUT", "--require-all"], "install them first"),
    (["corpus", "-o", "FILE"], "it is a file"),
    (["corpus"], "required: -o/--outdir"),
    (["heldout", "-o", "OUT", "--max-side", "0"], "--max-side must be >= 128"),
])
def test_corpus_commands_bad_input_is_one_line_exit_2(fake, capsys, argv, message):
    tmp, _ = fake
    (tmp / "FILE").write_text("")
    argv = [str(tmp / a) if a in ("OUT", "FILE") else a for a in argv]
    try:
        code = data.main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside the parser
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and "\n" not in err, err


def test_heldout_command_without_the_package_names_the_apt_command(fake, capsys, monkeypatch):
    tmp, _ = fake
    monkeypatch.setattr(corpus, "HELDOUT", Source("mate-backgrounds", "debian", str(tmp / "none"), (Photo("a.jpg", "a"),)))
    assert data.main(["heldout", "-o", str(tmp / "held")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "apt-get install -y mate-backgrounds" in err and "\n" not in err


# --------------------------------------------------------------------------- the real packages


def _installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and "installed" in done.stdout.split()


DEBIAN = [s for s in TRAINING if s.registry == "debian"]


@pytest.mark.parametrize("source", DEBIAN, ids=lambda s: s.package)
def test_every_picture_of_an_installed_package_was_looked_at(source):
    if not _installed(source.package):
        pytest.skip(f"{source.package} is not installed ({source.install})")
    listed = subprocess.run(["dpkg", "-L", source.package], capture_output=True, text=True, check=True).stdout.split("\n")
    root = Path(source.root)
    pictures = [Path(p).relative_to(root).as_posix() for p in listed
                if Path(p).suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and Path(p).is_relative_to(root)]
    undecided = [p for p in pictures if source.decision(p) is None]
    assert pictures and not undecided, f"{source.package} ships pictures nobody looked at: {undecided}"
    assert all((root / p.path).is_file() for p in source.photos)


def _thumbnail(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.draft("L", (64, 64))  # JPEG: decode at 1/8 scale
        small = np.asarray(im.convert("L").resize((16, 16), Image.Resampling.BOX), np.float64).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) or 1)


def test_no_training_photo_is_a_copy_of_a_heldout_photo():
    if not Path(HELDOUT.root).is_dir():
        pytest.skip(f"the held-out photos are not installed ({HELDOUT.install})")
    training = [(s.folder() / p.path) for s in TRAINING if s.folder() is not None for p in s.photos if (s.folder() / p.path).is_file()]
    if not training:
        pytest.skip("no training source is installed")
    held = np.stack([_thumbnail(Path(HELDOUT.root) / p.path) for p in HELDOUT.photos])
    similarity = np.stack([_thumbnail(p) for p in training]) @ held.T  # (training, held-out) correlations of 16 x 16 thumbnails
    worst = np.unravel_index(similarity.argmax(), similarity.shape)
    assert similarity.max() < 0.9, f"{training[worst[0]]} looks like {HELDOUT.photos[worst[1]].path}"
