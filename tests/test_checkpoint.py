"""Our checkpoint format, the prompt bank, and the conversion command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dfpir
from dfpir.errors import UserError
from dfpir import convert
from dfpir.model.prompts import ClipTextEncoder, HashingTextEncoder, PromptBank

from .helpers import FIXTURE, load_fixture, to_official_names


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


def test_clip_encoder_without_clip_fails_clearly(tmp_path):
    with pytest.raises(UserError, match="CLIP"):
        ClipTextEncoder(tmp_path / "ViT-B-32.pt")


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
    np.savez(prompts, fixture=fx["text_code"][0])
    out = tmp_path / "out.safetensors"
    assert convert.main([str(path), "-o", str(out), "--prompts", str(prompts)]) == 0
    model = dfpir.load(out)
    with torch.no_grad():
        restored = model.restore(torch.from_numpy(fx["input"]), "fixture")
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


def test_convert_names_a_missing_key(official_file, tmp_path, capsys):
    path, _ = official_file
    sd = torch.load(path, weights_only=True)["state_dict"]
    del sd["net.latent_shuffle_channel.select_attn.attn4"]
    torch.save({"state_dict": sd}, path)
    out = tmp_path / "out.safetensors"
    assert convert.main([str(path), "-o", str(out)]) == 2
    assert "dgpb4.attn.scale" in capsys.readouterr().err
    assert not out.exists()


def test_convert_never_unpickles_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, path)
    assert convert.main([str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "pwned" not in capsys.readouterr().out


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
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the output check made and removed it


def test_convert_says_when_shapes_make_no_dfpir(made_official_file, tmp_path, capsys):
    path, model = made_official_file
    sd = to_official_names(model.state_dict())
    sd["patch_embed.proj.weight"] = torch.zeros(3, 3, 3, 3)  # dim 3: no DFPIR has an odd width
    torch.save(sd, path)
    assert convert.main([str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "its tensor shapes make no valid DFPIR" in capsys.readouterr().err
