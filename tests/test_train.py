"""A few steps of the tiny preset through data, loss, backward, checkpoint, resume and validation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dfpir
from dfpir import restore, train
from dfpir.checkpoint import load_classifier, read
from dfpir.data import SyntheticDataset
from dfpir.errors import UserError
from dfpir.model.classifier import with_pooling
from dfpir.train import resolve
from dfpir.train.classifier import clean_mask, clean_share
from dfpir.train.config import resume_changes
from dfpir.train.refit_classifier import write_refit

QUICK = [
    "model.preset=tiny",
    "data.patch_size=32",
    "data.val_patches_per_image=1",
    "data.val_crop=32",
    'data.degradations=["noise25", "rain", "lowlight"]',
    "optim.batch_size=2",
    "optim.lr=5e-4",
    "train.val_every=2",
    "train.ckpt_every=2",
    "train.log_every=1",
    "train.threads=1",
]


def quick(tmp_path, *extra: str):
    return resolve("demo", overrides=[*QUICK, f"train.out_dir={tmp_path}", *extra])


def losses(folder) -> list[float]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_short_run_writes_loadable_checkpoints_and_a_table(tmp_path, capsys):
    table = train.run(quick(tmp_path, "train.steps=4"))
    assert set(table) == {"noise25", "rain", "lowlight"}
    assert all(0 < r["psnr"] < 100 and 0 <= r["accuracy"] <= 1 for r in table.values())
    model = dfpir.load(tmp_path / "best.safetensors")
    assert model.config.preset == "tiny"
    assert load_classifier(tmp_path / "last.safetensors").classes == ["noise25", "rain", "lowlight", "clean"]
    assert (tmp_path / "config.toml").read_text().count("[optim]") == 1
    assert len(losses(tmp_path)) == 4
    out = capsys.readouterr().out
    assert "noise25" in out and f"results in {tmp_path}" in out


def records(folder, key: str) -> list[dict]:
    return [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if key in r]


# Two degradations: the classifier's clean class (on by default) then shows half the samples' targets, a seeded subset.
RESUMED = ["train.steps=4", "train.ema_decay=0.9", 'data.degradations=["rain", "haze"]']


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 4-step run never interrupted: what every interrupted and resumed run must end as.

    Its folder is ``run`` relative to the working directory, like the runs it is compared with:
    checkpoints record the config, ``train.out_dir`` included.
    """
    folder = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        train.run(quick("run", *RESUMED))
    return folder / "run"


def interrupt_validation(monkeypatch):
    """Ctrl-C inside the first validation (at step 2)."""
    real = train.Trainer.validate

    def validate(self, samples):
        monkeypatch.setattr(train.Trainer, "validate", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(train.Trainer, "validate", validate)


def interrupt_update(monkeypatch):
    """Ctrl-C (a real SIGINT) in step 3, after the optimiser stepped, before the step is counted."""
    real, calls = torch.amp.GradScaler.update, []

    def update(self, *args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(torch.amp.GradScaler, "update", update)


@pytest.mark.parametrize("stop", ["stop_at", "validation", "update"])
def test_resume_continues_exactly(stop, straight, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    if stop == "stop_at":
        train.run(quick("run", *RESUMED), stop_at=2)
        assert "stopped after step 2 of 4 (--stop-at); run/last.safetensors saved; " \
               "continue with: python -m dfpir.train train.out_dir=run --resume" in capsys.readouterr().out
    else:
        with monkeypatch.context() as patch:
            (interrupt_validation if stop == "validation" else interrupt_update)(patch)
            with pytest.raises(KeyboardInterrupt):
                train.run(quick("run", *RESUMED))
    train.run(quick("run", *RESUMED), resume="auto")
    assert losses(run) == losses(straight)
    assert records(run, "val") == records(straight, "val")  # the interrupted validation is redone
    assert [r["resumed_at"] for r in records(run, "resumed_at")] == [{"stop_at": 2, "validation": 2, "update": 3}[stop]]
    for name in ("best.safetensors", "last.safetensors"):  # checkpoints are byte-identical (sorted metadata)
        assert (run / name).read_bytes() == (straight / name).read_bytes(), name


def test_channels_last_training_matches_plain_and_resumes_exactly(straight, tmp_path, monkeypatch):
    # train.channels_last only changes the memory layout, so the losses are the plain run's up to
    # float rounding (the convolutions sum in another order), and resuming stays exact.
    layout = [*RESUMED, "train.channels_last=true"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for folder in (whole, parts):  # both write to ./run: the checkpoints record the config
        folder.mkdir()
    monkeypatch.chdir(whole)
    train.run(quick("run", *layout))
    monkeypatch.chdir(parts)
    train.run(quick("run", *layout), stop_at=2)
    train.run(quick("run", *layout), resume="auto")
    assert losses(parts / "run") == losses(whole / "run")
    assert records(parts / "run", "val") == records(whole / "run", "val")
    for name in ("best.safetensors", "last.safetensors"):
        assert (parts / "run" / name).read_bytes() == (whole / "run" / name).read_bytes(), name
    np.testing.assert_allclose(losses(whole / "run"), losses(straight), rtol=1e-5, atol=0)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train.run(quick(tmp_path, "train.steps=2"))
    before = (tmp_path / "last.safetensors").read_bytes()
    real = torch.nn.functional.l1_loss
    monkeypatch.setattr(torch.nn.functional, "l1_loss", lambda a, b: real(a, b) * float("nan"))
    with pytest.raises(UserError, match="non-finite at step 2"):
        train.run(quick(tmp_path, "train.steps=4"), resume="auto")
    assert (tmp_path / "last.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["optim.lrr=1"], "unknown config key optim.lrr"),
        (["optim.lr=fast"], "optim.lr must be float"),
        (["train.steps=1.5"], "train.steps must be int"),
        (["nosection=1"], "must look like section.key=value"),
        (["--preset", "7task"], "unknown training preset '7task'"),
        (['data.degradations=["snow"]'], "unknown degradation 'snow'"),
        (["train.out_dir=/proc/forbidden"], "cannot write to output folder"),
        (["data.ratios=[1, 2]"], "data.ratios must be 7 non-negative numbers"),
        (["data.ratios=[0, 0, 0, 0, 0, 0, 0]"], "data.ratios must be 7 non-negative numbers"),
        (["data.ratios=[1, 1, 1, 1, 1, -1, 1]"], "data.ratios must be 7 non-negative numbers"),
        (["optim.fft_weight=-0.5"], "optim.fft_weight must be >= 0"),
        (["data.layout=3task", "data.root=/tmp", "data.ratios=[1, 1, 1, 1, 1, 1, 1]"], "data.ratios needs synthetic degradations"),
        (["model.preset=huge"], "unknown model preset 'huge'"),
        (["data.workers=-1"], "data.workers must be >= 0"),
        (["train.precision=fp16", "train.device=cpu"], "train.precision=fp16 needs a CUDA device"),
        (["model.dim=15"], "model section: dim must be a positive even number"),
        (["model.num_blocks=[1, 1]"], "model section: num_blocks and heads need 4 entries"),
        (["model.heads=[1, 3, 4, 8]"], "model section: level 2: 32 channels cannot be split into 3 heads"),
        # intervals and counts: a 0 divided by (ZeroDivisionError mid-run) or ran without a word
        (["train.log_every=0"], "train.log_every must be >= 1, got 0"),
        (["train.val_every=0"], "train.val_every must be >= 1, got 0"),
        (["train.ckpt_every=-2"], "train.ckpt_every must be >= 1, got -2"),
        (["data.val_patches_per_image=0"], "data.val_patches_per_image must be >= 1, got 0"),
        (["train.threads=-2"], "train.threads must be >= 0 (0: torch's default), got -2"),
        (["train.device=gpu"], "train.device must be auto, cpu, cuda or cuda:N (N: a GPU number), got 'gpu'"),
        (["train.device=cuda:first"], "train.device must be auto, cpu, cuda or cuda:N"),
        # the optimiser and its schedule
        (["optim.betas=[0.9]"], "optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got [0.9]"),
        (["optim.betas=[0.9, 1.5]"], "optim.betas must be two numbers in [0, 1)"),
        (["optim.lr=0"], "optim.lr must be a finite number > 0, got 0.0"),
        (["optim.lr=-1e-4"], "optim.lr must be a finite number > 0, got -0.0001"),
        (["optim.lr=nan"], "optim.lr must be a finite number > 0, got nan"),
        (["optim.lr=inf"], "optim.lr must be a finite number > 0, got inf"),
        (["optim.min_lr=-1e-5"], "optim.min_lr must be in [0, optim.lr = 0.001]"),
        (["optim.min_lr=0.01"], "optim.min_lr must be in [0, optim.lr = 0.001] (the floor of the cosine decay), got 0.01"),
        (["optim.warmup_steps=-1"], "optim.warmup_steps must be >= 0 (0: no warm-up), got -1"),
        (["optim.cosine_steps=-1"], "optim.cosine_steps must be >= 0 (0: decay over the whole run), got -1"),
        (["optim.grad_clip=-1"], "optim.grad_clip must be >= 0 (0: off), got -1.0"),
        (["optim.weight_decay=-0.1"], "optim.weight_decay must be >= 0 (0: Adam, > 0: AdamW), got -0.1"),
        (["optim.weight_decay=nan"], "optim.weight_decay must be >= 0"),
        # data: the key named is the user's, and the layout name is checked before its root
        (["data.val_crop=0"], "data.val_crop must be a multiple of 8 (8, 16, 24, ...), got 0"),
        (["data.val_crop=13"], "data.val_crop must be a multiple of 8 (8, 16, 24, ...), got 13"),
        (["data.patch_size=4"], "data.patch_size must be a multiple of 8 (8, 16, 24, ...), got 4"),
        (["data.degradations=[]"], "data.degradations must name at least one degradation; known: noise15"),
        (["data.layout=nope"], "unknown data.layout 'nope'; known: builtin, clean"),
        (["data.layout=clean"], "data.layout=clean needs data.root=FOLDER"),
        (["--stop-at", "0"], "--stop-at must be a step >= 1 (save and stop after it), got 0"),
        (["--stop-at", "-1"], "--stop-at must be a step >= 1 (save and stop after it), got -1"),
        # the model section: DFPIRConfig's own fields, types and checks
        (["model.dimm=3"], "unknown config key model.dimm; known: bias, dim, ffn_expansion_factor, guidance, heads, keep_ratio"),
        (["model.dim=fast"], "config key model.dim must be int, got 'fast'"),
        (["model.num_blocks=[1, 1.5, 1, 1]"], "config key model.num_blocks[] must be int, got 1.5"),
        (["model.guidance=sometimes"], "model section: guidance must be one of ('faithful', 'learnable'), got 'sometimes'"),
        # files under data.root: how they are paired and held out
        (["data.size_mismatch=cut"], 'data.size_mismatch must be "error" or "crop"'),
        (["data.holdout=-1"], "data.holdout must be >= 0 (0: no files held out), got -1"),
        (["data.holdout=5"], "data.holdout is for files under data.root; the builtin layout validates on the right 30% of its photos"),
        (["data.layout=clean", "data.root=/tmp", "data.holdout=1"], "data.holdout=1 would hold every file out of training"),
        (["data.layout=3task", "data.root=/tmp"], "data.layout=3task validates on files held out of its training files: set data.holdout=N"),
        (["data.blur_curriculum=-5"], "data.blur_curriculum must be >= 0 (0: off), got -5"),
        (["data.blur_curriculum=100", 'data.degradations=["rain"]'], 'data.blur_curriculum needs synthetic motion blur: data.layout builtin or clean, with "blur"'),
        (["data.blur_curriculum=100", "data.layout=5task", "data.root=/tmp", "data.holdout=5"], "(got layout 5task,"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default train.out_dir, runs/demo, would land here
    assert train.main([*args, "train.steps=1"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # refused before anything is written: no out_dir, no config.toml


def test_model_keys_override_the_presets_architecture(tmp_path):
    cfg = quick(tmp_path, "model.dim=24", "model.num_blocks=[1, 2, 2, 4]", "model.num_refinement_blocks=0", "train.steps=1")
    arch = cfg.model.config()
    tiny = dfpir.get_config("tiny")
    assert (arch.dim, arch.num_blocks, arch.num_refinement_blocks) == (24, (1, 2, 2, 4), 0)
    assert (arch.heads, arch.ffn_expansion_factor) == (tiny.heads, tiny.ffn_expansion_factor)  # untouched keys
    assert quick(tmp_path).model.config() == tiny
    train.run(cfg)
    # the checkpoint carries the overridden architecture, so it loads without naming it again
    assert dfpir.load(tmp_path / "best.safetensors").config == arch


class EpochStamped(torch.utils.data.Dataset):
    """Item i of epoch e is the number 100 e + i (and the degradation "rain")."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict:
        x = torch.full((1,), float(100 * self.epoch + i))
        return {"input": x, "target": x, "degradation": "rain", "label": 0}


def test_worker_processes_prepare_the_same_batches_across_epochs():
    dataset = EpochStamped()

    def stream(workers: int, steps: range) -> list[list[float]]:
        order = train.SampleOrder(dataset, seed=3)
        return [b["input"].flatten().tolist() for b in train.micro_batches(dataset, order, steps, 2, 2, workers=workers)]

    inline = stream(0, range(0, 6))  # 6 steps x 2 micro-batches x 2 items = 24 samples: 5 epochs
    assert len(inline) == 12 and {int(v) // 100 for b in inline for v in b} == {0, 1, 2, 3, 4}
    for epoch in range(4):  # each full epoch is a permutation of the 5 items
        assert sorted(v % 100 for b in inline for v in b if v // 100 == epoch) == [0, 1, 2, 3, 4]
    assert stream(2, range(0, 6)) == inline
    assert stream(2, range(2, 6)) == inline[4:]  # a resumed run starts mid-stream


def test_training_with_workers_matches_training_without(tmp_path):
    a = train.run(quick(tmp_path / "a", "train.steps=2"))
    b = train.run(quick(tmp_path / "b", "train.steps=2", "data.workers=2"))
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and a == b
    weights_a, weights_b = (dfpir.load(tmp_path / run / "last.safetensors").state_dict() for run in "ab")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stop-at", "x"], "argument --stop-at: invalid int value: 'x'"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: python -m dfpir.train: {message} (see python -m dfpir.train --help)\n"


def test_config_file_and_print_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[optim]\nlr = 3e-4\n[train]\nsteps = 7\n')
    assert train.main(["--config", str(cfg), "--print-config", "train.steps=9"]) == 0
    out = capsys.readouterr().out
    assert "lr = 0.0003" in out and "steps = 9" in out
    # --print-config shows only configs that would train
    assert train.main(["--config", str(cfg), "--print-config", "train.log_every=0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: train.log_every must be >= 1, got 0\n"


def test_config_file_errors_name_the_file(tmp_path, capsys):
    folder, image = tmp_path / "in", tmp_path / "some.png"
    folder.mkdir()
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    cases = [
        (folder, f"error: config file {folder} is a folder; give a TOML file (--config FILE.toml)"),
        (image, f"error: config file {image} is not a TOML text file (not UTF-8 text); give a .toml file"),
        (tmp_path / "missing.toml", f"error: config file not found: {tmp_path / 'missing.toml'}"),
    ]
    for path, message in cases:
        assert train.main(["--config", str(path), f"train.out_dir={tmp_path / 'run'}"]) == 2
        assert capsys.readouterr().err == message + "\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_is_one_line_with_or_without_workers(workers, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "bad.png", 64, 64)
    (photos / "bad.png").write_bytes((photos / "bad.png").read_bytes()[:200])  # a good header, then nothing
    args = [*QUICK, "data.layout=clean", f"data.root={photos}", f"data.workers={workers}", f"train.out_dir={tmp_path / 'run'}", "train.steps=1"]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("train:", "checking files:"))]  # less the progress
    assert len(lines) == 1 and lines[0].startswith(f"error: {photos / 'bad.png'}: cannot read image (")
    assert "Traceback" not in err and "DataLoader worker" not in err
    # a file that is no image at all is found before the first step, before anything is written
    (photos / "bad.png").write_bytes(b"not an image at all")
    shutil.rmtree(tmp_path / "run")
    assert train.main(args) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {photos / 'bad.png'}: cannot read image (")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="torchrun not installed")
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    args = [*QUICK, "train.steps=2", "optim.batch_size=4", "train.classifier=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    for folder, procs in [(one, 1), (two, 2)]:
        subprocess.run(
            [torchrun, "--standalone", f"--nproc_per_node={procs}", "-m", "dfpir.train", *args, f"train.out_dir={folder}"],
            check=True, env=env, capture_output=True, timeout=300,
        )
    a, b = dfpir.load(one / "last.safetensors"), dfpir.load(two / "last.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        # All-reduce sums gradients in another order than one process does: rounding only.
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_ratios_set_each_degradations_share_of_the_training_samples(tmp_path):
    cfg = quick(tmp_path, "data.ratios=[1, 3, 0]")
    train_set, _ = train.build_data(cfg, length=400)
    names = [train_set[i]["degradation"] for i in range(len(train_set))]
    assert names.count("lowlight") == 0
    assert names.count("rain") == 3 * names.count("noise25")


def test_spectral_loss_is_the_mean_abs_of_the_orthonormal_spectrum():
    torch.manual_seed(0)
    restored, target = torch.rand(2, 3, 8, 6), torch.rand(2, 3, 8, 6)
    pixel = (restored - target).abs().mean()
    assert torch.equal(train.restoration_loss(restored, target), pixel)
    spectrum = np.fft.rfft2((restored - target).double().numpy(), norm="ortho")  # (2, 3, 8, 4)
    expected = pixel.item() + 0.5 * np.mean(np.abs(np.stack([spectrum.real, spectrum.imag], -1)))
    assert train.restoration_loss(restored, target, 0.5).item() == pytest.approx(expected, rel=1e-6)
    assert train.restoration_loss(target, target, 0.5).item() == 0


def test_init_starts_from_a_checkpoints_restorer_and_matching_classifier(tmp_path):
    first = tmp_path / "first"
    train.run(quick(first, "train.steps=2"))
    saved = dfpir.load(first / "best.safetensors").state_dict()
    classes = load_classifier(first / "best.safetensors")

    same = train.Trainer(quick(tmp_path / "same", f"train.init={first / 'best.safetensors'}", "train.ema_decay=0.9"), train.Dist(), torch.device("cpu"))
    fresh = train.Trainer(quick(tmp_path / "fresh"), train.Dist(), torch.device("cpu"))
    for model in (same.restorer, same.eval_joint().restorer):  # the EMA copy starts there too
        for key, value in model.state_dict().items():
            assert torch.equal(value, saved[key]), key
    assert not all(torch.equal(v, saved[k]) for k, v in fresh.restorer.state_dict().items())
    for key, value in same.joint.classifier.state_dict().items():
        assert torch.equal(value, classes.state_dict()[key]), key

    other = train.Trainer(
        quick(tmp_path / "other", f"train.init={first / 'best.safetensors'}", 'data.degradations=["blur", "haze"]'),
        train.Dist(), torch.device("cpu"),
    )
    assert all(torch.equal(v, saved[k]) for k, v in other.restorer.state_dict().items())
    assert other.joint.classifier.classes == ["blur", "haze", "clean"]  # other classes: a fresh classifier


def test_init_from_a_classifier_with_a_wider_pooling_keeps_what_both_poolings_share(tmp_path):
    """The shipped weights' classifier pools mean, std and top; dfpir.train trains mean and std."""
    first = tmp_path / "first"
    train.run(quick(first, "train.steps=1"))
    wide = with_pooling(load_classifier(first / "best.safetensors"), "meanstdtop")
    torch.nn.init.normal_(wide.head.weight)  # as if refitted: every statistic weighs
    write_refit(first / "best.safetensors", tmp_path / "wide.safetensors", wide, {})
    run = train.Trainer(quick(tmp_path / "run", f"train.init={tmp_path / 'wide.safetensors'}"), train.Dist(), torch.device("cpu"))
    clf = run.joint.classifier
    assert clf.pooling == "meanstd"
    for key, value in clf.features.state_dict().items():
        assert torch.equal(value, wide.features.state_dict()[key]), key
    c = clf.head.in_features // 2
    assert torch.equal(clf.head.weight, wide.head.weight[:, : 2 * c]) and torch.equal(clf.head.bias, wide.head.bias)


def test_init_errors_are_one_line(tmp_path, capsys):
    first = tmp_path / "first"
    train.run(quick(first, "train.steps=1"))
    capsys.readouterr()
    cases = [
        ([f"train.init={first / 'best.safetensors'}", "model.preset=small"], "does not fit this run's; set model.preset"),
        ([f"train.init={tmp_path / 'missing.safetensors'}"], "weights file not found"),
    ]
    for args, message in cases:
        assert train.main([*QUICK, f"train.out_dir={tmp_path / 'run'}", "train.steps=1", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_a_changed_setting_and_names_what_may_change(tmp_path, capsys):
    first = tmp_path / "first"
    train.run(quick(first, "train.steps=1"))
    capsys.readouterr()
    checkpoint = first / "last.safetensors"
    made = f"error: {checkpoint} was made with "
    advice = (f"; --resume continues a run as it was configured and may change only {', '.join(train.SAFE_ON_RESUME)}; "
              f"for other settings start a new train.out_dir (train.init={checkpoint} starts from its weights)\n")
    cases = [
        (["model.preset=small"], 'model.dim=16 (now 24); model.num_blocks=[1, 1, 1, 1] (now [2, 2, 2, 2]); model.preset="tiny" (now "small")'),
        (['data.degradations=["blur", "haze"]'], 'data.degradations=["noise25", "rain", "lowlight"] (now ["blur", "haze"])'),
        (["train.classifier=false"], "train.classifier=true (now false)"),
        (["train.ema_decay=0"], "train.ema_decay=0.995 (now 0.0)"),  # the demo preset keeps EMA weights
        (["optim.batch_size=8", "data.patch_size=64"], "data.patch_size=32 (now 64); optim.batch_size=2 (now 8)"),
    ]
    for args, made_with in cases:
        run = tmp_path / "run"
        assert train.main([f"train.out_dir={run}", *args, "--resume", str(checkpoint)]) == 2
        assert capsys.readouterr().err == made + made_with + advice
        assert not run.exists()
    # a stop before the checkpoint's step would train nothing
    assert train.main([f"train.out_dir={first}", "train.steps=2", "--resume", "--stop-at", "1"]) == 2
    assert capsys.readouterr().err == f"error: --stop-at 1 is not after step 1, where {checkpoint} stopped; give a later step\n"


def test_resume_changes_name_settings_not_spellings(tmp_path):
    made = quick(tmp_path)
    assert resume_changes(made, quick(tmp_path, "model.dim=16"), tmp_path) == {}  # tiny's own dim
    assert resume_changes(made, quick(tmp_path, "train.steps=9", "train.threads=2"), tmp_path) == {
        "train.steps": [600, 9], "train.threads": [1, 2]}
    with pytest.raises(UserError, match=r"was made with model.dim=16 \(now 24\); optim.lr=0.0005 \(now 0.0001\); --resume"):
        resume_changes(made, quick(tmp_path, "model.dim=24", "optim.lr=1e-4"), tmp_path)


def test_state_mismatch_counts_what_does_not_fit():
    own = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    assert train.state_mismatch(own, dict(own)) == ""
    saved = {"a": torch.zeros(2), "b": torch.zeros(4), "d": torch.zeros(1)}
    assert train.state_mismatch(own, saved) == "its tensors do not match this model (1 missing, 1 unexpected, 1 of another shape)"


def test_table_shows_a_dash_for_accuracy_without_a_classifier():
    row = {"input_psnr": 20.0, "psnr": 23.5, "input_ssim": 0.5, "ssim": 0.6}
    text = train.format_table({"blur": {**row, "accuracy": float("nan")}, "rain": {**row, "accuracy": float("nan")}})
    assert "nan" not in text and text.splitlines()[1].split()[-1] == "-" and "+3.50" in text
    assert train.format_table({"blur": {**row, "accuracy": 0.75}}).splitlines()[1].split()[-1] == "75.0%"


# --- the classifier: its clean class and its calibration -----------------------------------------


def test_clean_picks_depend_on_the_sample_alone_and_take_one_degradations_share():
    picks = clean_mask(0, range(4000), 0.25)
    assert abs(picks.double().mean().item() - 0.25) < 0.03
    assert torch.equal(clean_mask(0, [7, 3, 1999], 0.25), picks[[7, 3, 1999]])  # any batching or split picks the same
    assert not torch.equal(clean_mask(1, range(4000), 0.25), picks)  # the run's seed chooses
    assert clean_share(["rain", "haze", "blur"]) == pytest.approx(1 / 3)


def test_the_classifier_trains_on_its_batch_and_a_seeded_share_of_the_clean_targets(tmp_path, monkeypatch):
    cfg = quick(tmp_path, 'data.degradations=["rain", "haze"]', "optim.batch_size=8", "train.ema_decay=0")
    trainer = train.Trainer(cfg, train.Dist(), torch.device("cpu"))
    assert trainer.joint.classifier.classes == ["rain", "haze", "clean"]
    dataset, _ = train.build_data(cfg, 8 * cfg.train.steps)
    batch = next(trainer.batches(dataset, 1))
    seen, labels = [], []
    trainer.joint.classifier.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda x, y, *a, **k: labels.append(y) or real(x, y, *a, **k))
    trainer.train_step(trainer.batches(dataset, 1))
    picked = clean_mask(cfg.train.seed, range(8), 0.5)  # samples 0..7 make step 0
    assert 0 < picked.sum() < 8
    assert torch.equal(seen[0], torch.cat([batch["input"], batch["target"][picked]]))
    assert labels[0].tolist() == batch["label"].tolist() + [2] * int(picked.sum())
    off = train.Trainer(quick(tmp_path, "train.clean_class=false"), train.Dist(), torch.device("cpu"))
    assert off.joint.classifier.classes == ["noise25", "rain", "lowlight"] and off.clean_targets(batch["target"], 0) is None


def test_validation_fits_the_temperature_that_the_checkpoints_keep(tmp_path, capsys):
    cfg = quick(tmp_path, "train.steps=1", "train.ema_decay=0")
    train.run(cfg)
    [record] = records(tmp_path, "val")
    fitted = record["classifier"]
    assert fitted["crops"] == 8 * 3 + 8  # 8 photos x 3 degradations, and one degradation's share of clean targets
    assert 0 <= fitted["ece_after"] <= 1 and 0 <= fitted["ece_before"] <= 1 and fitted["temperature"] != 1
    for name in ("best.safetensors", "last.safetensors"):
        assert load_classifier(tmp_path / name).temperature == fitted["temperature"]
    assert f"temperature {fitted['temperature']:.3g}; ECE {fitted['ece_before']:.3f} before" in capsys.readouterr().out
    resumed = train.Trainer(cfg, train.Dist(), torch.device("cpu"))
    resumed.resume(*read(tmp_path / "last.safetensors"), tmp_path / "last.safetensors")
    assert resumed.eval_joint().classifier.temperature == fitted["temperature"]


def test_configs_recorded_before_the_clean_class_read_as_trained_without_it(tmp_path):
    recorded = quick(tmp_path).to_dict()
    assert recorded["train"]["clean_class"] is True  # new runs learn it
    del recorded["train"]["clean_class"]
    assert train.TrainConfig.from_dict(recorded, "old").train.clean_class is False  # resuming an old run keeps it off
    without = quick(tmp_path, "train.classifier=false").to_dict()
    assert "clean_class" not in without["train"]  # a run without a classifier records what it recorded before


# --- a run's folder: never mixed with another run ------------------------------------------------


def test_a_new_run_refuses_a_folder_holding_a_run_unless_told(tmp_path, capsys):
    args = [*QUICK, 'data.degradations=["rain"]', f"train.out_dir={tmp_path}", "train.steps=1"]
    assert train.main(args) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train.main([*args, "optim.lr=1e-4"]) == 2
    assert capsys.readouterr().err == (
        f"error: train.out_dir {tmp_path} already holds a run (best.safetensors, last.safetensors, config.toml, metrics.jsonl); "
        "continue it with --resume, or start over with --overwrite (deletes those files)\n")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert train.main([*args, "--overwrite", "--resume"]) == 2
    assert "--overwrite would delete the run" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    assert train.main([*args, "optim.lr=1e-4", "--overwrite"]) == 0
    assert len(records(tmp_path, "loss")) == 1  # the old run's lines are gone, not appended to
    assert "lr = 0.0001" in (tmp_path / "config.toml").read_text() and (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_continues_the_run_as_configured_and_records_what_changed(tmp_path, capsys):
    run = tmp_path / "run"
    made = [*QUICK, 'data.degradations=["rain"]', "train.steps=2", "train.val_every=10"]
    assert train.main([*made, f"train.out_dir={run}"]) == 0
    capsys.readouterr()
    # only the folder named: the run's own settings (patch 32, batch 2), not the demo preset's (64, 8)
    assert train.main([f"train.out_dir={run}", "--resume", "--print-config"]) == 0
    shown = capsys.readouterr().out
    assert "patch_size = 32" in shown and "batch_size = 2" in shown and "steps = 2" in shown
    assert train.main([f"train.out_dir={run}", "--resume", "train.steps=3", "train.log_every=3"]) == 0
    assert records(run, "resumed_at") == [{"resumed_at": 2, "changed": {"train.steps": [2, 3], "train.log_every": [1, 3]}}]
    recorded = resolve(None, str(run / "config.toml"))
    assert (recorded.train.steps, recorded.train.log_every, recorded.data.patch_size) == (3, 3, 32)
    assert [r["step"] for r in records(run, "loss")] == [1, 2, 3]


# --- the data: checked before anything is written, and held out of training ----------------------


def write_image(path, width: int = 40, height: int = 40, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def rain_pairs(root, sizes) -> None:
    """``root/rainy/rain-i.png`` and ``root/gt/norain-i.png`` (the rain100l layout), target sizes given."""
    for i, (width, height) in enumerate(sizes):
        write_image(root / "rainy" / f"rain-{i}.png", seed=i)
        write_image(root / "gt" / f"norain-{i}.png", width, height, seed=10 + i)


RAIN = [*QUICK, "data.layout=rain100l", 'data.degradations=["rain"]', "data.holdout=2", "train.steps=1"]


def test_a_bad_pair_stops_training_before_anything_is_written(tmp_path, capsys):
    rain_pairs(tmp_path / "rain", [(40, 40), (40, 40), (40, 40), (40, 48)])
    out = tmp_path / "run"
    assert train.main([*RAIN, f"data.root={tmp_path / 'rain'}", f"train.out_dir={out}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("checking files:")]
    assert err == [f"error: {tmp_path / 'rain/rainy/rain-3.png'}: size 40x40 differs from its target {tmp_path / 'rain/gt/norain-3.png'} "
                   '(40x48); fix the files, or set data.size_mismatch="crop" to train on their common part']
    assert not out.exists()
    assert train.main([*RAIN, f"data.root={tmp_path / 'rain'}", f"train.out_dir={out}", 'data.size_mismatch="crop"']) == 0


def test_a_data_error_mid_run_keeps_the_last_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    real, calls = SyntheticDataset.__getitem__, []

    def getitem(self, index):
        calls.append(index)
        if len(calls) == 5:  # step 3's first sample
            raise UserError("photos/x.png: cannot read image (truncated)")
        return real(self, index)

    monkeypatch.setattr(SyntheticDataset, "__getitem__", getitem)
    args = [*QUICK, 'data.degradations=["rain"]', "train.val_every=10", f"train.out_dir={tmp_path}", "train.steps=4"]
    assert train.main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("train:")]
    assert err == [f"error: photos/x.png: cannot read image (truncated); training stopped before step 3, "
                   f"{tmp_path / 'last.safetensors'} (step 2) is kept: fix it, then continue with --resume"]
    assert read(tmp_path / "last.safetensors")[1]["step"] == "2"


@pytest.fixture(scope="module")
def three_tasks(tmp_path_factory):
    """A tiny 3task ROOT: two clean images to denoise, two rain pairs, two haze pairs."""
    root = tmp_path_factory.mktemp("3task")
    for i in range(2):
        write_image(root / "denoise" / f"clean-{i}.png", seed=20 + i)
    rain_pairs(root / "derain", [(40, 40), (40, 40)])
    for i in range(2):
        write_image(root / "dehaze" / "synthetic" / f"000{i}_0.8_0.1.png", seed=30 + i)
        write_image(root / "dehaze" / "original" / f"000{i}.png", seed=40 + i)
    return root


def test_paper_layouts_validate_on_held_out_files_and_save_only_their_prompts(three_tasks, tmp_path, capsys):
    cfg = resolve("3task", overrides=[*QUICK, 'data.degradations=["noise15", "noise25", "noise50", "rain", "haze"]',
                                      f"data.root={three_tasks}", "data.holdout=2", "train.steps=1", f"train.out_dir={tmp_path}"])
    train_set, val = train.build_data(cfg, length=8)
    trained = {train_set[i]["name"] for i in range(len(train_set))}
    held_out = {val[i]["name"].split("/")[0] for i in range(len(val))}
    assert held_out == {"clean-0", "rain-0", "0000_0.8_0.1"} and not trained & held_out
    assert sorted({val[i]["degradation"] for i in range(len(val))}) == sorted(cfg.data.degradations)
    train.run(cfg)
    assert dfpir.load(tmp_path / "best.safetensors").prompts.names == cfg.data.degradations
    capsys.readouterr()
    write_image(tmp_path / "photo.png")
    assert restore.main([str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "best.safetensors"),
                         "--degradation", "blur"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown degradation 'blur'; these weights know: noise15, noise25, noise50, rain, haze, ")
    assert len(err.splitlines()) == 1
    # the 3task preset trains no classifier: blind restoration is refused with what to do instead
    assert restore.main([str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "best.safetensors"),
                         "--degradation", "auto"]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'best.safetensors'}: --degradation auto needs a degradation classifier, "
                                       "and these weights have none; name the degradation instead (one of: noise15, noise25, noise50, rain, haze)\n")


def test_a_layout_holding_other_degradations_than_the_config_is_refused(three_tasks, tmp_path, capsys):
    args = ["--preset", "3task", *QUICK, 'data.degradations=["noise25", "rain", "haze"]', f"data.root={three_tasks}",
            f"train.out_dir={tmp_path / 'run'}"]
    assert train.main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("checking files:")]
    assert err == [f'error: data.degradations=["noise25", "rain", "haze"], but data.layout=3task under {three_tasks} holds '
                   '["noise15", "noise25", "noise50", "rain", "haze"]; set data.degradations to those']


# --- what a run prints -----------------------------------------------------------------------------


def test_progress_and_warnings_are_plain_lines_off_a_terminal(tmp_path, capsys):
    rain_pairs(tmp_path / "rain", [(40, 40), (40, 40), (40, 40)])
    write_image(tmp_path / "rain" / "rainy" / "rain-9.png")  # an input without a target: skipped, with a warning
    assert train.main([*RAIN, f"data.root={tmp_path / 'rain'}", f"train.out_dir={tmp_path / 'run'}"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "train: 1/1 steps, " in err
    assert f"warning: {tmp_path / 'rain'}: 1 input files have no target (e.g. rain-9.png); they are skipped\n" in err
    assert "DataWarning" not in err and "warnings.warn" not in err


def test_print_config_shows_only_the_model_keys_set(capsys):
    assert train.main(["--print-config", "model.dim=24", "model.guidance=learnable"]) == 0
    model = capsys.readouterr().out.split("[model]\n")[1].split("\n\n")[0]
    assert model == 'preset = "tiny"\ndim = 24\nguidance = "learnable"'
    assert train.main(["--print-config"]) == 0
    assert capsys.readouterr().out.startswith('[model]\npreset = "tiny"\n\n[data]')
