"""A run that grows a model with ``growth="gated"``: a copy of it learns the new degradations, a
gate chooses, and the old model restores what it restored, bit for bit.

The invariants: the gated checkpoint's first network is the grown-from model exactly, and the
copy trained every part of itself; an image the gate gives the first network is restored exactly
as the grown-from model restores it; every file the model is written to gives it back exactly;
and nothing in a gated file is allocated before its sizes are checked.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from contrastive_prompts import InputError
from contrastive_prompts.app import train as train_module
from contrastive_prompts.app.checkpoints import (
    export_weights,
    load_checkpoint_model,
    read_checkpoint,
)
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.export import export_onnx
from contrastive_prompts.app.files import CheckpointError
from contrastive_prompts.app.growth import fit_gate
from contrastive_prompts.app.pretrained import export_folder, from_pretrained
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.reference import GatedRestorer

STAGES = ("prompt", "fusion")  # the parameter names of the reference model's prompt stages


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A base run (2 steps) and a gated run grown from it (2 steps, a quickly fitted gate)."""
    folder = tmp_path_factory.mktemp("gated")
    base = TrainConfig(steps=2, batch_size=2, crop=32, val_crop=32, out_dir=str(folder / "base"),
                       save_every=2, log_every=1)  # fmt: skip
    Trainer(base).fit()
    grown = dataclasses.replace(
        base, out_dir=str(folder / "grown"), grow_from=str(folder / "base" / "last.pt"),
        add_degradations=["low_light"],
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "fit_gate", functools.partial(fit_gate, samples=1500))
        trainer = Trainer(grown)
        trainer.fit()
    return base, grown, trainer, folder


def test_the_gated_run_trains_a_whole_copy_on_the_new_degradation(runs):
    _, grown, trainer, _ = runs
    assert grown.growth == "gated"  # the default
    assert trainer.mix.probs == pytest.approx([0.0] * 5 + [1.0])  # the copy sees low light only
    assert trainer.objective.label_experts is None  # label % experts: low light teaches expert 0
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert all(p.requires_grad for p in trainer.model.parameters())
    assert trainer.validations[-1]["gate"].keys() == set(trainer.label_names)


def test_the_gated_checkpoint_holds_the_old_model_exactly_and_a_copy_trained_throughout(runs):
    _, _, _, folder = runs
    old = load_checkpoint_model(folder / "base" / "last.pt")
    model = load_checkpoint_model(folder / "grown" / "last.pt")
    assert isinstance(model, GatedRestorer)
    assert model.label_networks == (0, 0, 0, 0, 0, 1)
    first, copy = (network.state_dict() for network in model.networks)
    for key, value in old.state_dict().items():
        assert torch.equal(first[key], value), key
    for part in (STAGES, ("encoder", "decoder", "latent", "refinement", "output")):
        moved = [k for k, v in old.state_dict().items() if k.startswith(part)
                 and not torch.equal(copy[k], v)]  # fmt: skip
        assert moved, part  # the prompt stages and the rest of the copy both learnt


def test_an_image_the_gate_keeps_is_restored_exactly_as_by_the_old_model(runs):
    _, _, trainer, folder = runs
    old = load_checkpoint_model(folder / "base" / "last.pt")
    model = load_checkpoint_model(folder / "grown" / "last.pt")
    kept = 0
    for index in range(len(trainer.val_data)):
        degraded, _, _ = trainer.val_data[index]
        x = degraded[None]
        route = int(model.route(x)[0])
        if route == 0:
            kept += 1
            assert torch.equal(model(x), old(x))
            assert torch.equal(
                model.restore(x, tile=16, overlap=4), old.restore(x, tile=16, overlap=4)
            )
        else:
            assert torch.equal(model(x), model.networks[1](x))
    assert kept >= 1


def test_a_gated_run_resumes_exactly_with_its_saved_gate(runs, tmp_path, monkeypatch):
    _, grown, _, folder = runs
    # a rougher gate than the saved one: loading must replace it
    monkeypatch.setattr(train_module, "fit_gate", functools.partial(fit_gate, samples=100))
    state = read_checkpoint(folder / "grown" / "last.pt")
    config = dataclasses.replace(grown, out_dir=str(tmp_path / "again"), steps=3)
    again = Trainer(config)
    again.load(folder / "grown" / "last.pt")
    for key, value in state["gated"]["gate"].items():
        assert torch.equal(again.gated.gate.state_dict()[key], value), key
    again.fit()
    assert again.step == 3
    state["gated"] = None  # a checkpoint of the same options holding one network: edited
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="is for a model of one network, the run trains a"):
        Trainer(config).load(tmp_path / "edited.pt")


def test_every_file_a_gated_model_is_written_to_gives_it_back_exactly(runs, tmp_path):
    _, _, _, folder = runs
    checkpoint = folder / "grown" / "last.pt"
    model = load_checkpoint_model(checkpoint)
    weights = export_weights(checkpoint, tmp_path / "gated.safetensors")
    shared = export_folder(checkpoint, tmp_path / "folder")
    x = torch.rand(2, 3, 40, 40)
    x[1] *= 0.1  # dark
    for loaded in (load_checkpoint_model(weights), from_pretrained(shared)):
        assert isinstance(loaded, GatedRestorer)
        assert loaded.label_networks == model.label_networks
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        assert torch.equal(loaded(x), model(x))
    card = (shared / "README.md").read_text()
    assert "| 0 | noise_15, noise_25, noise_50, rain, haze |" in card
    assert "| 1 | low_light |" in card
    with pytest.raises(InputError, match="got a GatedRestorer, whose gate chooses a network"):
        export_onnx(model, tmp_path / "gated.onnx")


def test_a_gated_model_grows_again_keeping_every_network_it_had(runs, tmp_path):
    base, _, _, folder = runs
    again = dataclasses.replace(
        base, out_dir=str(tmp_path / "twice"), grow_from=str(folder / "grown" / "last.pt"),
        add_degradations=["low_light", "blur"], steps=1,
    )  # fmt: skip
    with pytest.raises(InputError, match=r"expected growth='gated' to grow .*, a gated model"):
        Trainer(dataclasses.replace(again, growth="experts"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "fit_gate", functools.partial(fit_gate, samples=300))
        Trainer(again).fit()
    before = load_checkpoint_model(folder / "grown" / "last.pt")
    after = load_checkpoint_model(tmp_path / "twice" / "last.pt")
    assert after.label_networks == (0, 0, 0, 0, 0, 1, 2)
    for kept, network in zip(before.networks, after.networks[:2], strict=True):
        for key, value in kept.state_dict().items():
            assert torch.equal(network.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s["gated"].update(classes=10**9), "one class per network, got 1000000000"),
        (lambda s: s["gated"].update(hidden=10**12), r"gate's weights do not fit"),
        (lambda s: s["gated"].update(label_networks=[0, 5]), r"label_networks of integers"),
        (lambda s: s["gated"].pop("tile"), "expected a gated layout holding classes, tile"),
        (lambda s: s["gated"]["gate"].pop("mean"), r"missing keys \['mean'\]"),
        (lambda s: s["gated"].update(networks="x"), "expected a gated entry holding networks"),
        (
            lambda s: s["gated"].update(networks=s["gated"]["networks"] * 1000, classes=1001),
            r"1000 networks whose .* tensors share .* storages",
        ),
    ],
)
def test_a_hostile_gated_checkpoint_is_refused_before_anything_is_built(runs, change, match):
    _, _, _, folder = runs
    state = read_checkpoint(folder / "grown" / "last.pt")
    change(state)
    path = folder / "hostile.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint_model(path)


def test_a_gated_export_with_tensors_of_other_names_is_refused(runs, tmp_path):
    _, _, _, folder = runs
    weights = export_weights(folder / "grown" / "last.pt", tmp_path / "g.safetensors")
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(weights)
    tensors["networks.7.extra"] = torch.zeros(1)
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=r"expected tensors named networks.<0..1>. or gate."):
        load_checkpoint_model(tmp_path / "bad.safetensors")
    save_file(
        load_file(weights), tmp_path / "json.safetensors", metadata={**metadata, "gated": "{"}
    )
    with pytest.raises(CheckpointError, match="its gated layout is not JSON"):
        load_checkpoint_model(tmp_path / "json.safetensors")


def test_the_command_line_grows_a_gated_model_restores_and_evaluates_with_it(runs, tmp_path):
    _, _, _, folder = runs
    command = [sys.executable, "-m", "contrastive_prompts"]
    out = tmp_path / "grown"
    done = subprocess.run(
        [*command, "train", "--grow-from", str(folder / "base" / "last.pt"),
         "--add-degradations", "low_light", "--steps", "1", "--batch-size", "1", "--crop", "32",
         "--val-crop", "32", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "a copy of the model, for low_light (a gate gives each image" in done.stderr
    from contrastive_prompts.app.data import sample_split, write_image

    image = tmp_path / "photo.png"
    write_image(image, sample_split()[1][0][:, :48, :48])
    done = subprocess.run(
        [*command, "evaluate", "--checkpoint", str(out / "last.pt"), "--data", str(image),
         "--add-degradations", "low_light", "--json", str(tmp_path / "scores.json")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Prompt effect: not measured for a gated model" in done.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["psnr"]) == {"noise_15", "noise_25", "noise_50", "rain", "haze", "low_light"}
    done = subprocess.run(
        [*command, "restore", "--checkpoint", str(out / "last.pt"), str(image),
         "--output", str(tmp_path / "restored")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "restored" / "photo.png").is_file()
