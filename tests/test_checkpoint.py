"""Our checkpoint format, the prompt bank, and the conversion command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dfpir
from dfpir.errors import UserError
from dfpir import convert
from dfpir.model.prompts import HashingTextEncoder, PromptBank

from .helpers import FIXTURE, load_fixture, to_official_names

ROOT = Path(__file__).resolve().parents[1]


def tiny() -> dfpir.DFPIR:
    torch.manual_seed(1)
    return dfpir.DFPIR(dfpir.get_config("tiny")).eval()


def test_save_load_roundtrip_keeps_weights_config_and_prompts(tmp_path):
    model = tiny()
    model.prompts.add("snow", np.arange(512, dtype=np.float32), text="Snow degradation")
    path = tmp_path / "m.safetensors"
    dfpir.save(model, path)
    loaded = dfpir.load(path)
    assert loaded.config == model.config and not loaded.training
    assert loaded.prompts.names == model.prompts.names and loaded.prompts.texts["snow"] == "Snow degradation"
    image = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded.restore(image, "snow"), model.restore(image, "snow"), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def save_reference_model(path) -> None:
    """Build one model the same way in any process and save it with many metadata keys (safetensors'
    own writer orders them differently from call to call)."""
    model = tiny()
    model.prompts.add("snow", np.arange(512, dtype=np.float32), text="Snow degradation")
    dfpir.save(model, path, extra_metadata={f"key{i}": str(i) for i in range(8)})


def test_saving_the_same_model_gives_the_same_bytes_in_any_process(tmp_path):
    save_reference_model(tmp_path / "a.safetensors")
    save_reference_model(tmp_path / "b.safetensors")
    other = {**os.environ, "PYTHONHASHSEED": "12345"}
    script = "import sys; from tests.test_checkpoint import save_reference_model; save_reference_model(sys.argv[1])"
    subprocess.run([sys.executable, "-c", script, tmp_path / "c.safetensors"], env=other, check=True, cwd=ROOT)
    first = (tmp_path / "a.safetensors").read_bytes()
    assert (tmp_path / "b.safetensors").read_bytes() == first, "two saves in one process differ"
    assert (tmp_path / "c.safetensors").read_bytes() == first, "a save in another process differs"
    # Loading and saving again loses nothing: the bank's order and texts come back the same.
    plain = tiny()
    plain.prompts.add("snow", np.arange(512, dtype=np.float32), text="Snow degradation")
    dfpir.save(plain, tmp_path / "d.safetensors")
    dfpir.save(dfpir.load(tmp_path / "d.safetensors"), tmp_path / "e.safetensors")
    assert (tmp_path / "e.safetensors").read_bytes() == (tmp_path / "d.safetensors").read_bytes()


def test_checkpoints_get_the_permissions_of_any_new_file(tmp_path):
    import os

    dfpir.save(tiny(), tmp_path / "m.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_loading_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(dfpir.CheckpointError, match="not a safetensors checkpoint"):
        dfpir.load(junk)
    with pytest.raises(dfpir.CheckpointError, match="not found"):
        dfpir.load(tmp_path / "missing.safetensors")
    with pytest.raises(dfpir.CheckpointError, match="is a folder"):
        dfpir.load(tmp_path)


def test_plain_safetensors_without_our_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(dfpir.CheckpointError, match="not a dfpir checkpoint"):
        dfpir.load(path)


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    dfpir.save(tiny(), path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta["config"] = json.dumps(dfpir.get_config("tiny", dim=8).to_dict())
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(dfpir.CheckpointError, match="has shape"):
        dfpir.load(path)


def _rewrite(path, metadata=None, tensors=None):
    """Rewrite checkpoint ``path`` with some metadata or tensors changed (what a damaged file holds)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file({**load_file(str(path)), **(tensors or {})}, str(path), metadata={**meta, **(metadata or {})})


def test_every_missing_weight_is_named(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m.safetensors"
    dfpir.save(tiny(), path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    del tensors["model.output.weight"], tensors["model.dgpb4.attn.scale"]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(dfpir.CheckpointError, match="2 missing weight") as info:
        dfpir.load(path)
    assert "'output.weight'" in str(info.value) and "'dgpb4.attn.scale'" in str(info.value)


def test_damaged_prompt_banks_and_classifiers_name_the_file_and_the_problem(tmp_path):
    from dfpir.checkpoint import load_classifier

    path = tmp_path / "m.safetensors"
    dfpir.save(tiny(), path)
    _rewrite(path, metadata={"prompt_texts": "not json"})
    with pytest.raises(dfpir.CheckpointError, match=r"m\.safetensors: invalid prompt bank in the checkpoint"):
        dfpir.load(path)
    dfpir.save(tiny(), path)
    _rewrite(path, tensors={f"prompt.{name}": torch.zeros(5) for name in tiny().prompts.names})
    with pytest.raises(dfpir.CheckpointError, match="prompt embeddings have width 5, its model needs 512"):
        dfpir.load(path)
    from dfpir.model.classifier import DegradationClassifier
    from dfpir.checkpoint import save

    clf = DegradationClassifier(["rain", "haze"])
    tensors = {f"classifier.{k}": v for k, v in clf.state_dict().items()}
    save(tiny(), path, extra_metadata={"classifier_classes": json.dumps(["rain", "haze", "blur"])}, extra_tensors=tensors)
    with pytest.raises(dfpir.CheckpointError, match="the stored classifier does not fit its classes: size mismatch for") as info:
        load_classifier(path)
    assert "\n" not in str(info.value)


def test_prompt_bank_files_roundtrip(tmp_path):
    bank = PromptBank.default()
    for suffix in (".npz", ".safetensors"):
        bank.to_file(tmp_path / f"p{suffix}")
        again = PromptBank.from_file(tmp_path / f"p{suffix}")
        assert again.names == bank.names
        assert all(np.array_equal(again[n], bank[n]) for n in bank.names)
    assert again.texts == bank.texts  # .safetensors (the last) carries the prompt texts too


def test_a_prompt_file_names_every_unusable_embedding(tmp_path):
    vectors = {n: v.copy() for n, v in PromptBank.default().embeddings.items()}
    vectors["rain"][:] = 0
    vectors["haze"][3] = np.nan
    vectors["blur"] = vectors["blur"][:256]
    vectors["lowlight"] = np.array(["a", "b"])
    np.savez(tmp_path / "p.npz", **vectors)
    with pytest.raises(UserError) as info:
        PromptBank.from_file(tmp_path / "p.npz")
    message = str(info.value)
    assert "\n" not in message
    for expected in ("rain (all zeros", "haze (NaN or infinite", "blur (width 256, the others have 512", "lowlight (shape (2,), dtype <U1"):
        assert expected in message
    assert "noise15" not in message
    with pytest.raises(UserError, match=r"noise15 \(width 512, the model needs 256\)"):
        PromptBank.from_file(tmp_path / "p.npz", dim=256)


def test_prompt_bank_errors_are_clear(tmp_path):
    bank = PromptBank.default()
    with pytest.raises(ValueError, match="no prompt embedding for 'snow'"):
        bank["snow"]
    with pytest.raises(ValueError, match="width 3"):
        bank.add("bad", np.zeros(3))
    with pytest.raises(ValueError, match="not found"):
        PromptBank.from_file(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="path is a folder"):
        PromptBank.from_file(tmp_path)
    (tmp_path / "model.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="must be an .npz or .safetensors file"):
        PromptBank.from_file(tmp_path / "model.pth")
    (tmp_path / "fake.npz").write_bytes(b"\x80\x02garbage")  # a pickle, not an archive
    with pytest.raises(ValueError, match="not an .npz archive") as info:
        PromptBank.from_file(tmp_path / "fake.npz")
    assert "allow_pickle" not in str(info.value)  # numpy's advice to unpickle is not ours to give
    with pytest.raises(ValueError, match="unknown degradation 'snow'"):
        dfpir.get_degradation("snow")


def test_default_embeddings_are_deterministic_and_similar_texts_are_close():
    a, b = PromptBank.default(), PromptBank.default()
    assert all(np.array_equal(a[n], b[n]) for n in a.names)

    def cos(u, v):
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    assert cos(a["noise15"], a["noise25"]) > 0.7 > cos(a["noise15"], a["haze"])
    assert HashingTextEncoder(512)("Rain") .shape == (512,)


def test_registry_is_extensible():
    name = "snow_test"
    deg = dfpir.register_degradation(name, "Snow degradation with snowflakes", "Snow")
    try:
        assert dfpir.get_degradation(name) is deg
        with pytest.raises(ValueError, match="already registered"):
            dfpir.register_degradation(name, "again")
    finally:
        dfpir.DEGRADATIONS.pop(name)


# --- python -m dfpir.convert ---------------------------------------------------------------------


@pytest.fixture
def official_file(tmp_path):
    if not FIXTURE.exists():
        pytest.skip("shared fixture not present")
    fx = load_fixture()
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 80, "state_dict": {f"net.{k}": torch.from_numpy(v) for k, v in fx["state_dict"].items()}}, path)
    return path, fx


def test_convert_writes_a_checkpoint_that_reproduces_the_original(official_file, tmp_path, capsys):
    path, fx = official_file
    prompts = tmp_path / "clip.npz"
    vectors = {**PromptBank.default().embeddings, "rain": fx["text_code"][0]}
    np.savez(prompts, **vectors, fixture=fx["text_code"][0])
    out = tmp_path / "out.safetensors"
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts)]) == 0
    model = dfpir.load(out)
    assert model.prompts.names == [*vectors, "fixture"]  # every vector of the file, in its order
    with torch.no_grad():
        restored = model.restore(torch.from_numpy(fx["input"]), "rain")
    assert np.abs(restored.numpy() - fx["output"]).max() < 1e-5


def test_convert_rejects_a_non_checkpoint_without_writing(tmp_path, capsys):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"\x00garbage")
    out = tmp_path / "out.safetensors"
    assert convert.main([str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert convert.main([str(tmp_path), "-o", str(out)]) == 2
    assert "is a folder; give the checkpoint file" in capsys.readouterr().err


def test_convert_names_every_missing_key(made_official_file, tmp_path, capsys):
    path, model = made_official_file
    sd = to_official_names(model.state_dict())
    del sd["latent_shuffle_channel.select_attn.attn4"], sd["output.weight"]
    torch.save({"state_dict": sd}, path)
    out = tmp_path / "out.safetensors"
    assert convert.main([str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 missing key(s)" in err and "'dgpb4.attn.scale'" in err and "'output.weight'" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_convert_never_unpickles_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    assert convert.main([str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
    out, err = capsys.readouterr()
    assert "pwned" not in out
    assert "holds code or objects (print) that a safe load refuses; dfpir never unpickles code" in err
    assert "weights_only" not in err and "can still be loaded" not in err  # torch's advice is not ours to give
    assert len(err.strip().splitlines()) == 1


def _png(path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format="PNG")


@pytest.mark.parametrize("make, message", [
    (_png, "is not a PyTorch checkpoint: it is a PNG image"),
    (lambda p: p.write_bytes(b""), "is not a PyTorch checkpoint: it is empty"),
    (lambda p: p.write_text("hello"), "is not a PyTorch checkpoint: it is neither the zip archive nor the pickle"),
    (lambda p: p.write_bytes(b"\x80\x02Pjunk"), "that a safe load refuses; dfpir never unpickles code"),
    (lambda p: dfpir.save(tiny(), p), "it is a safetensors file (if it is a dfpir checkpoint, use it directly)"),
    (lambda p: torch.save({"epoch": 80, "x": torch.zeros(1)}, p), "does not hold a state dict of tensors (not tensors: 'epoch')"),
], ids=["png", "empty", "text", "damaged-pickle", "safetensors", "not-tensors"])
def test_convert_says_what_a_file_that_is_not_a_checkpoint_is(tmp_path, capsys, make, message):
    path = tmp_path / "model.pth"
    make(path)
    assert convert.main([str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert "weights_only" not in err and "pop from empty list" not in err


@pytest.fixture
def made_official_file(tmp_path):
    """An original-format checkpoint of a tiny model, made without the shared fixture."""
    torch.manual_seed(0)
    model = tiny()
    path = tmp_path / "made.pth.tar"
    torch.save({"state_dict": to_official_names(model.state_dict())}, path)
    return path, model


def test_convert_without_the_fixture_reproduces_the_model(made_official_file, tmp_path):
    path, model = made_official_file
    out = tmp_path / "out.safetensors"
    assert convert.main([str(path), "-o", str(out)]) == 0
    image = torch.rand(1, 3, 24, 16)
    with torch.no_grad():
        torch.testing.assert_close(dfpir.load(out).restore(image, "rain"), model.restore(image, "rain"), rtol=0, atol=0)


@pytest.mark.parametrize("output, message", [
    ("out.pth", "name it with a .safetensors suffix"),
    ("folder.safetensors/", "is a folder"),
    ("afile/out.safetensors", "it is a file"),
])
def test_convert_refuses_an_unusable_output_before_reading(made_official_file, tmp_path, capsys, output, message):
    path, _ = made_official_file
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "afile").write_text("")
    assert convert.main([str(path), "-o", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.pth").exists()


def test_a_failed_convert_leaves_no_new_folder(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    assert convert.main([str(bad), "-o", str(tmp_path / "new" / "sub" / "out.safetensors")]) == 2
    assert "is not a PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the output check made and removed it


def test_convert_says_when_shapes_make_no_dfpir(made_official_file, tmp_path, capsys):
    path, model = made_official_file
    sd = to_official_names(model.state_dict())
    sd["patch_embed.proj.weight"] = torch.zeros(3, 3, 3, 3)  # dim 3: no DFPIR has an odd width
    torch.save(sd, path)
    assert convert.main([str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "its tensor shapes make no valid DFPIR" in capsys.readouterr().err


def test_convert_refuses_a_prompt_file_without_every_trained_degradation(made_official_file, tmp_path, capsys):
    path, model = made_official_file
    prompts, out = tmp_path / "clip.npz", tmp_path / "out.safetensors"
    np.savez(prompts, rain=model.prompts["rain"], haze=model.prompts["haze"])
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert "lacks prompt embeddings for noise15, noise25, noise50, blur, lowlight;" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    # A checkpoint trained for fewer degradations says so, and gets exactly the file's prompts.
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts), "--degradations", "rain,haze"]) == 0
    assert dfpir.load(out).prompts.names == ["rain", "haze"]
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts), "--degradations", "rain,snow"]) == 2
    assert "--degradations: unknown degradation 'snow'" in capsys.readouterr().err


def test_convert_refuses_zero_and_non_finite_prompts_naming_each(made_official_file, tmp_path, capsys):
    path, model = made_official_file
    vectors = {n: v.copy() for n, v in model.prompts.embeddings.items()}
    vectors["rain"][:] = 0  # its argsort would be an arbitrary order
    vectors["haze"][0] = np.inf
    prompts, out = tmp_path / "clip.npz", tmp_path / "out.safetensors"
    np.savez(prompts, **vectors)
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert "rain (all zeros" in err and "haze (NaN or infinite values)" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    np.savez(prompts, **{n: v[:256] for n, v in model.prompts.embeddings.items()})
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts)]) == 2
    assert "prompt embeddings have width 256, DFPIR needs 512" in capsys.readouterr().err
