"""Hostile and mistaken inputs: files that would run code, restores that would lose files,
runs that diverge, and options that cannot work. Each case ends in a clear error and harms
nothing."""

import dataclasses
import json
import os
import pickle
import shlex
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from contrastive_prompts import InputError
from contrastive_prompts.app.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    export_weights,
    load_checkpoint_model,
    load_promptir,
    read_checkpoint,
    safe_load,
)
from contrastive_prompts.app.cli import main
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.data import SyntheticDataset, read_image, write_image
from contrastive_prompts.app.train import Trainer, TrainingDiverged

from .leftovers import temporaries
from .test_model import random_promptir_state_dict

# -- a small trained run, shared ----------------------------------------------------------------


def photos(n: int = 2, size: int = 24) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def small_config(out_dir, **kwargs) -> TrainConfig:
    options = dict(
        steps=2, batch_size=1, crop=16, num_negatives=1, log_every=1, save_every=100,
        warmup_steps=1, lr=1e-3, out_dir=str(out_dir),
    )  # fmt: skip
    options.update(kwargs)
    return TrainConfig(**options)


def small_trainer(out_dir, train_data=None, **kwargs) -> Trainer:
    config = small_config(out_dir, **kwargs)
    data = train_data or SyntheticDataset(photos(), config.mix, crop_size=config.crop)
    return Trainer(config, train_data=data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "run"
    small_trainer(out).fit()
    return out


@pytest.fixture
def folder(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "s.png", torch.rand(3, 20, 18))
    return inputs


# -- 1. no file can run code --------------------------------------------------------------------


class Payload:
    """Pickles as a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    checkpoint = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "x": Payload(marker)}, checkpoint)
    promptir = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"net.patch_embed.proj.weight": Payload(marker)}}, promptir)
    return marker, checkpoint, promptir


def unpickle_unsafely(path) -> None:
    """Unpickle a torch.save file's records with plain pickle (they hold no tensors)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        pickle.loads(archive.read(name))  # on purpose: the payload must run


def test_the_payload_is_live(evil):
    """The files below do run code when unpickled the unsafe way, so the tests can fail."""
    marker, checkpoint, promptir = evil
    unpickle_unsafely(checkpoint)
    assert marker.exists()
    marker.unlink()
    unpickle_unsafely(promptir)
    assert marker.exists()


REFUSED = r"was refused: it asks for Python objects .*\(posix\.system\).* can run code"

API_LOADS = {
    "read_checkpoint": lambda ckpt, tmp: read_checkpoint(ckpt),
    "load_checkpoint_model": lambda ckpt, tmp: load_checkpoint_model(ckpt),
    "from_pretrained": lambda ckpt, tmp: load_checkpoint_model(ckpt),
    "export_weights": lambda ckpt, tmp: export_weights(ckpt, tmp / "w.safetensors"),
    "safe_load": lambda ckpt, tmp: safe_load(ckpt),
    "Trainer.load": lambda ckpt, tmp: small_trainer(tmp / "r").load(ckpt),
}


@pytest.mark.parametrize("load", API_LOADS.values(), ids=API_LOADS.keys())
def test_no_api_load_runs_a_checkpoint_payload(evil, tmp_path, load):
    marker, checkpoint, _ = evil
    with pytest.raises(CheckpointError, match=REFUSED):
        load(checkpoint, tmp_path)
    assert not marker.exists()


def test_from_promptir_refuses_a_payload_with_no_way_around(evil):
    marker, _, promptir = evil
    with pytest.raises(CheckpointError, match=REFUSED.replace("was", "PromptIR checkpoint .* was")):
        load_promptir(promptir, top_k=1)
    assert not marker.exists()
    # no switch reads it anyway: the message points to a safe copy instead
    with pytest.raises(CheckpointError, match=r"never does\. Ask the file's source for a "):
        load_promptir(promptir, top_k=1)
    with pytest.raises(TypeError, match="trust"):
        load_promptir(promptir, top_k=1, trust=True)
    with pytest.raises(SystemExit):
        main(["train", "--init-promptir", str(promptir), "--trust-checkpoint"])
    assert not marker.exists()


def test_init_promptir_refuses_a_payload(evil, tmp_path):
    marker, _, promptir = evil
    config = small_config(tmp_path / "r", preset="base", init_promptir=str(promptir))
    with pytest.raises(CheckpointError, match=REFUSED):
        Trainer(config, train_data=SyntheticDataset(photos(), crop_size=16))
    assert not marker.exists()


def test_no_command_runs_a_payload(evil, folder, tmp_path, capsys):
    marker, checkpoint, promptir = evil
    commands = [
        ["evaluate", "--checkpoint", str(checkpoint), "--data", str(folder)],
        ["restore", "--checkpoint", str(checkpoint), str(folder), "--output", str(tmp_path / "o")],
        ["export", "--checkpoint", str(checkpoint), str(tmp_path / "w.safetensors")],
        ["train", "--resume", str(checkpoint), "--out-dir", str(tmp_path / "r")],
        ["train", "--preset", "base", "--init-promptir", str(promptir), "--data", str(folder),
         "--steps", "1", "--out-dir", str(tmp_path / "r")],
    ]  # fmt: skip
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "posix.system" in err and "can run code" in err, command
        assert len(err.strip().splitlines()) == 1, err
    assert not marker.exists()
    assert not (tmp_path / "w.safetensors").exists()


# -- shared weights: safetensors ------------------------------------------------------------------


def test_export_and_from_pretrained_round_trip(run, tmp_path):
    target = export_weights(run / "last.pt", tmp_path / "model.safetensors")
    with safe_open(str(target), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "contrastive_prompts.weights/1" and metadata["weights"] == "ema"
    assert json.loads(metadata["model_config"])["dim"] == 16
    assert json.loads(metadata["label_names"]) == ["noise_15", "noise_25", "noise_50", "rain",
                                                   "haze"]  # fmt: skip
    shared = load_checkpoint_model(target)
    original = load_checkpoint_model(run / "last.pt")
    raw = load_checkpoint_model(run / "last.pt", ema=False)
    assert not shared.training
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(shared(x), original(x), rtol=0, atol=0)
        assert not torch.equal(raw(x), original(x))  # EMA and raw weights differ after training
    raw_target = export_weights(run / "last.pt", tmp_path / "raw.safetensors", ema=False)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint_model(raw_target)(x), raw(x))


def test_export_never_writes_over_a_file_unasked(run, tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match=r"exists; pass overwrite=True \(--overwrite\)"):
        export_weights(run / "last.pt", target)
    assert target.read_bytes() == b"precious"
    with pytest.raises(InputError, match=r"expected a target ending in \.safetensors, got"):
        export_weights(run / "last.pt", tmp_path / "model.pt")
    export_weights(run / "last.pt", target, overwrite=True)
    assert load_checkpoint_model(target).config.dim == 16
    assert not temporaries(tmp_path)


def test_foreign_safetensors_and_checkpoints_are_clear_errors(run, tmp_path):
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(2)}, bare)
    with pytest.raises(
        CheckpointError, match=r"not a contrastive_prompts export .*load_state_dict"
    ):
        load_checkpoint_model(bare)
    with pytest.raises(CheckpointError, match=r"holds shared weights \(safetensors\)"):
        read_checkpoint(bare)
    state = torch.load(run / "last.pt", weights_only=True)
    del state["model_config"]
    torch.save(state, tmp_path / "no_config.pt")
    with pytest.raises(CheckpointError, match=r"lacks model_config: it is damaged"):
        load_checkpoint_model(tmp_path / "no_config.pt")
    state = torch.load(run / "last.pt", weights_only=True)
    state["model_config"]["dim"] = 24
    torch.save(state, tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match=r"weights do not fit its model_config: shape mis"):
        load_checkpoint_model(tmp_path / "misfit.pt")
    state["model_config"] = {"dim": "wide"}
    torch.save(state, tmp_path / "invalid.pt")
    with pytest.raises(CheckpointError, match=r"its model_config is not a valid model"):
        load_checkpoint_model(tmp_path / "invalid.pt")


def test_commands_read_both_formats(run, folder, tmp_path, capsys):
    shared = tmp_path / "model.safetensors"
    assert main(["export", "--checkpoint", str(run / "last.pt"), str(shared)]) == 0
    assert main(["export", "--checkpoint", str(run / "last.pt"), str(shared)]) == 2
    assert "pass overwrite=True (--overwrite)" in capsys.readouterr().err
    for checkpoint in (shared, run / "last.pt"):
        out = tmp_path / f"out_{checkpoint.suffix[1:]}"
        assert main(["restore", "--checkpoint", str(checkpoint), str(folder),
                     "--output", str(out)]) == 0  # fmt: skip
        assert read_image(out / "s.png").shape == (3, 20, 18)
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(folder)]) == 0
    assert torch.equal(read_image(tmp_path / "out_pt/s.png"),
                       read_image(tmp_path / "out_safetensors/s.png"))  # fmt: skip


# -- PromptIR checkpoints in every layout --------------------------------------------------------


def test_from_promptir_reads_basicsr_layouts(tmp_path):
    ema, raw = random_promptir_state_dict(0), random_promptir_state_dict(1)
    torch.save({"params": raw, "params_ema": ema}, tmp_path / "both.pth")
    torch.save({"params": raw}, tmp_path / "raw.pth")
    save_file(ema, tmp_path / "ema.safetensors")
    both = load_promptir(tmp_path / "both.pth", top_k=1)
    assert torch.equal(both.prompt3.prompts, ema["prompt3.prompt_param"][0])
    only_raw = load_promptir(tmp_path / "raw.pth", top_k=1)
    assert torch.equal(only_raw.prompt3.prompts, raw["prompt3.prompt_param"][0])
    shared = load_promptir(tmp_path / "ema.safetensors", top_k=1)
    assert torch.equal(shared.prompt3.prompts, ema["prompt3.prompt_param"][0])


def test_from_promptir_non_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"cannot be read .* not a PyTorch file"):
        load_promptir(tmp_path / "notes.txt", top_k=1)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"expected a PromptIR state dict .* got list"):
        load_promptir(tmp_path / "list.pt", top_k=1)
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(
        InputError, match=r"missing keys \['decoder.* and 532 more; unexpected keys"
    ):
        load_promptir(tmp_path / "empty.pt", top_k=1)


# -- 2. restore never loses a file --------------------------------------------------------------


def test_restore_into_its_own_input_folder_is_refused(run, folder, capsys):
    before = (folder / "s.png").read_bytes()
    for extra in ([], ["--overwrite"]):
        code = main(["restore", "--checkpoint", str(run / "last.pt"), str(folder),
                     "--output", str(folder), *extra])  # fmt: skip
        assert code == 2
        assert "are input files" in capsys.readouterr().err
    assert (folder / "s.png").read_bytes() == before


def test_restore_never_writes_over_an_existing_file_unasked(run, folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "s.png").write_bytes(b"precious")
    command = ["restore", "--checkpoint", str(run / "last.pt"), str(folder), "--output", str(out)]
    assert main(command) == 2
    assert f"got 1 that exist ({out / 's.png'}); pass --overwrite" in capsys.readouterr().err
    assert (out / "s.png").read_bytes() == b"precious"
    assert main([*command, "--overwrite"]) == 0
    assert read_image(out / "s.png").shape == (3, 20, 18)
    assert sorted(p.name for p in out.iterdir()) == ["s.png"]  # no temporary file is left


def test_restore_refuses_inputs_that_share_an_output_name(run, tmp_path, capsys):
    for name, ext in (("a", "png"), ("b", "jpg")):
        (tmp_path / name).mkdir()
        write_image(tmp_path / name / f"x.{ext}", torch.rand(3, 8, 8))
    out = tmp_path / "out"
    code = main(["restore", "--checkpoint", str(run / "last.pt"), str(tmp_path / "a"),
                 str(tmp_path / "b"), "--output", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a' / 'x.png'}, {tmp_path / 'b' / 'x.jpg'} -> {out / 'x.png'}" in err
    assert not out.exists()  # refused before any work
    # the same file named twice is restored once
    again = ["restore", "--checkpoint", str(run / "last.pt"), str(tmp_path / "a"),
             str(tmp_path / "a" / "x.png"), "--output", str(out)]  # fmt: skip
    assert main(again) == 0
    assert [p.name for p in out.iterdir()] == ["x.png"]


# -- 3. divergence stops the run ----------------------------------------------------------------


class PoisonedAfter(torch.utils.data.Dataset):
    """Clean items until ``after`` have been read, then a NaN-filled degraded image."""

    def __init__(self, dataset, after: int):
        self.dataset, self.after, self.reads = dataset, after, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        degraded, clean, label = self.dataset[index]
        self.reads += 1
        return (degraded.fill_(float("nan")) if self.reads > self.after else degraded), clean, label


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path):
    data = PoisonedAfter(SyntheticDataset(photos(), crop_size=16), after=3)  # step 4 is poisoned
    trainer = small_trainer(tmp_path / "run", data, steps=6, save_every=3)
    with pytest.raises(TrainingDiverged, match=r"at step 4: non-finite loss \(L1 nan") as error:
        trainer.fit()
    last = tmp_path / "run" / "last.pt"
    assert f"the last checkpoint, '{last}' (step 3), is intact" in str(error.value)
    state = read_checkpoint(last)
    assert state["step"] == 3 and trainer.step == 3
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().split("\n")
               if line]  # fmt: skip
    assert records[-1]["diverged"]["step"] == 4


def test_a_non_finite_gradient_stops_before_the_update(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path / "run")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: torch.tensor(torch.inf))
    with pytest.raises(TrainingDiverged, match=r"at step 1: non-finite gradient norm .* no check"):
        trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_non_finite_weights_are_never_saved(run, tmp_path):
    trainer = small_trainer(tmp_path / "run")
    trainer.save()
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with torch.no_grad():
        next(trainer.model.parameters())[0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"a weight is not finite; not saved"):
        trainer.save()
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_a_diverging_command_exits_non_zero(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(folder), "--steps", "3", "--batch-size", "1", "--crop",
                 "16", "--num-negatives", "1", "--lr", "1e30", "--warmup-steps", "0",
                 "--save-every", "1", "--out-dir", str(out)])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged at step 2: non-finite loss (L1 nan" in err
    assert "Lower lr (now 1e+30)" in err
    assert read_checkpoint(out / "last.pt")["step"] == 1  # step 1's finite state, kept


BAD_OPTIONS = [
    ({"lr": float("inf")}, "expected lr to be a finite number > 0, got inf"),
    ({"lr": float("nan")}, "expected lr to be a finite number > 0, got nan"),
    ({"lr": 0.0}, "expected lr to be a number > 0, got 0.0"),
    ({"min_lr": 1.0}, r"expected min_lr in \[0, lr=0.001\], got 1.0"),
    ({"cpr_weight": float("inf")}, "expected cpr_weight to be a finite number >= 0, got inf"),
    ({"cpr_weight": -1.0}, "expected cpr_weight to be a number >= 0, got -1.0"),
    ({"balance_weight": float("nan")}, "expected balance_weight to be a finite number"),
    ({"temperature": float("inf")}, "expected temperature to be a finite number"),
    ({"weight_decay": -0.1}, "expected weight_decay to be a number >= 0"),
    ({"grad_clip": float("inf")}, "expected grad_clip to be a finite number >= 0, got inf"),
    ({"ema_decay": 1.0}, r"expected ema_decay in \[0, 1\), got 1.0"),
    ({"betas": 0.9}, "expected betas to be 2 numbers, got 0.9"),
    ({"betas": (0.9, 1.5)}, r"expected betas of two numbers in \[0, 1\)"),
    ({"steps": 1.5}, "expected steps to be an integer >= 1, got 1.5"),
    ({"top_k": 0}, "expected top_k to be an integer >= 1, got 0"),
    ({"use_labels": 1}, r"expected use_labels to be a bool \(True or False\), got int 1"),
    ({"data": "photos/"}, "expected data to be a list of strings, got 'photos/'"),
    ({"growth": "copy"}, "expected growth to be one of 'gated', 'experts', got 'copy'"),
    ({"precision": "fp16", "device": "cpu"}, "expected precision 'fp32' or 'bf16' on a CPU"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_train_config_rejects_bad_values(tmp_path, options, message):
    with pytest.raises(InputError, match=f"TrainConfig: {message}"):
        small_config(tmp_path, **options).validate()


# one value of a wrong kind for every field: each is refused with an error that names its field
WRONG_KIND = {
    "preset": 3, "top_k": 1.0, "use_prompts": "true", "init_promptir": 1, "data": "photos/",
    "val_data": [1], "max_pixels": 1e6, "mix": ["3task"], "add_degradations": "snow",
    "grow_from": ["last.pt"], "growth": 1, "crop": "64", "batch_size": True, "workers": None,
    "cpr_weight": "0.1", "num_negatives": 2.0, "cpr_mode": None, "cpr_features": ["filters"],
    "temperature": [0.1], "balance_weight": None, "routing_weight": "0", "use_labels": 1,
    "chunk_size": "8", "steps": 1.5, "lr": "1e-3", "betas": [0.9, "0.99"], "weight_decay": None,
    "warmup_steps": 2.5, "min_lr": "0", "grad_clip": "1", "ema_decay": None, "precision": 32,
    "compile": 0, "seed": -1.0, "val_every": "10", "val_crop": 12.5, "val_pad_multiple": "8",
    "log_every": None, "tensorboard": "no", "save_every": [5], "out_dir": 3, "device": 0,
}  # fmt: skip


def test_every_field_refuses_a_value_of_the_wrong_kind_naming_itself(tmp_path):
    assert set(WRONG_KIND) == {f.name for f in dataclasses.fields(TrainConfig)}
    for name, value in WRONG_KIND.items():
        with pytest.raises(InputError, match=f"^TrainConfig: expected {name}"):
            dataclasses.replace(small_config(tmp_path), **{name: value}).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on CPUs only")
def test_fp16_on_the_cpu_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match=r"Trainer: expected precision 'fp32' or 'bf16' on a CPU"):
        small_trainer(tmp_path, precision="fp16")


# -- 4. command-line mistakes: one line, exit 2 -------------------------------------------------


def one_line_error(capsys, expected: str) -> None:
    err = capsys.readouterr().err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1 or "Warning" in err, err
    assert "Traceback" not in err


def test_unreadable_training_and_validation_data(folder, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.png").write_bytes(b"")
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (bad / "notes.txt").write_text("not an image")
    train = ["train", "--steps", "1", "--batch-size", "1", "--crop", "16", "--num-negatives", "1",
             "--out-dir", str(tmp_path / "r")]  # fmt: skip
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        assert main([*train, "--data", str(bad)]) == 2
    # the files are read once training starts: its first line, then the error in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("training SparsePromptIR") and len(err) == 2
    assert "expected at least one readable image, got none of 2" in err[1]
    assert main([*train, "--data", str(folder), "--val-data", str(bad)]) == 2
    one_line_error(capsys, "Trainer: cannot read validation image")
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "notes.txt").write_text("not an image")
    assert main([*train, "--data", str(only_text)]) == 2
    one_line_error(capsys, "expected image files")


def test_devices_that_do_not_exist(run, folder, tmp_path, capsys):
    assert main(["train", "--device", "bogus", "--out-dir", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "Trainer: expected a device such as 'auto', 'cpu', 'cuda'")
    evaluate = ["evaluate", "--checkpoint", str(run / "last.pt"), "--data", str(folder)]
    assert main([*evaluate, "--device", "bogus"]) == 2
    one_line_error(capsys, "evaluate: expected a device such as")
    if not torch.cuda.is_available():
        assert main([*evaluate, "--device", "cuda"]) == 2
        one_line_error(capsys, "evaluate: expected an available device, got 'cuda'")


def test_config_files_of_the_wrong_shape(tmp_path, capsys):
    as_list = tmp_path / "list.json"
    as_list.write_text("[1, 2]")
    assert main(["train", "--config", str(as_list)]) == 2
    one_line_error(capsys, "expected a JSON object of TrainConfig fields, got a JSON list")
    scalar = tmp_path / "betas.json"
    scalar.write_text('{"betas": 0.9}')
    assert main(["train", "--config", str(scalar)]) == 2
    one_line_error(capsys, "TrainConfig: expected betas to be 2 numbers, got 0.9")


def test_resume_refuses_what_it_would_ignore(folder, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--data", str(folder), "--batch-size", "1", "--crop", "16",
             "--num-negatives", "1", "--out-dir", str(out)]  # fmt: skip
    assert main([*train, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--out-dir", str(out), "--resume", "--steps", "1"]) == 2
    one_line_error(capsys, "expected --steps beyond the checkpoint's step 2 to train on, got 1")
    config = tmp_path / "c.json"
    config.write_text('{"steps": 5}')
    assert main(["train", "--out-dir", str(out), "--resume", "--config", str(config)]) == 2
    one_line_error(capsys, "expected --resume or --config, got both")


def test_resume_after_a_crash_logs_each_step_once(folder, tmp_path):
    out = tmp_path / "run"
    train = ["train", "--data", str(folder), "--batch-size", "1", "--crop", "16",
             "--num-negatives", "1", "--log-every", "1", "--out-dir", str(out)]  # fmt: skip
    assert main([*train, "--steps", "2"]) == 0
    # what a run killed (kill -9) after logging steps 3 and 4 and half of 5 leaves behind
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 3, "loss": 0.1}\n{"validation": {"step": 4}}\n{"step": 4, "lo')
    assert main(["train", "--out-dir", str(out), "--resume", "--steps", "4"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "step" in r]
    assert steps == [1, 2, 3, 4]
    assert all("validation" not in r for r in records)


def test_checkpoints_keep_no_pickled_python_objects(run):
    """Resume state is tensors, numbers, strings and containers: the safe loader reads it."""
    state = torch.load(run / "last.pt", weights_only=True)
    assert isinstance(state["rng"]["numpy"][1], list)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(run / "last.pt") == []


def test_numpy_arrays_load_as_the_safety_page_says(tmp_path):
    """uint32 arrays (numpy's random state in 0.1 checkpoints) load; an array of another dtype
    saved by torch.save is refused and named, not called corrupt."""
    import numpy as np

    from contrastive_prompts.app.files import CheckpointError, safe_load

    state = {"numpy": np.random.RandomState(0).get_state(), "weights": torch.zeros(2)}
    torch.save(state, tmp_path / "ok.pt")
    loaded = safe_load(tmp_path / "ok.pt")
    assert np.array_equal(loaded["numpy"][1], state["numpy"][1])
    torch.save({"a": np.zeros(3)}, tmp_path / "float64.pt")
    with pytest.raises(CheckpointError, match=r"was refused: .*Float64DType"):
        safe_load(tmp_path / "float64.pt")
