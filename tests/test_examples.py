"""The example scripts run end to end (shortened)."""

import importlib.util
import json
import math
import runpy
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch


def run_example(path: str, *args: str) -> None:
    argv = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        sys.argv = argv


def load_example(path: str) -> ModuleType:
    """Import an example script by path, as a module."""
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_plug_into_your_network_shows_the_effect():
    """At its default budget the example shows what it teaches, on held-out images.

    Two minutes of training: in the slow set. The default suite runs every line of the example
    through its command line, at two steps.
    """
    example = load_example("examples/plug_into_your_network.py")
    result = example.run()  # seed 0, about 100 s on a 2-core CPU
    assert all(math.isfinite(loss) for loss in result.losses)
    # the network restores: far above the degraded input under its own prompts
    assert result.average("own") > result.average("degraded") + 5
    # the prompt controls the restoration: a negative prompt costs at least 1 dB
    assert result.cost >= 1.0, result.psnr
    # each degradation's most-used expert differs at the stage nearest the output
    near, far = "decoder.0.prompt_stage.prompt", "decoder.1.prompt_stage.prompt"
    assert list(result.experts) == [near, far]
    assert result.separated_at(far), result.experts[far].tolist()
    # the counts cover every held-out image once per stage
    assert all(int(counts.sum()) == 48 for counts in result.experts.values())


def test_plug_into_your_network_keeps_training_and_report_images_apart():
    example = load_example("examples/plug_into_your_network.py")
    with pytest.raises(ValueError, match="held_out_seed other than the training seed"):
        example.run(steps=1, seed=example.HELD_OUT_SEED)


def test_plug_into_your_network_command_line(capsys):
    run_example("examples/plug_into_your_network.py", "--steps", "2", "--degradations", "haze")
    printed = capsys.readouterr().out
    assert "| own prompts |" in printed and "| decoder.1.prompt_stage.prompt haze |" in printed


def load_fine_tune_example(monkeypatch) -> ModuleType:
    """The fine-tuning example imports the plug-in example from its folder, as when it is run."""
    monkeypatch.syspath_prepend(str(Path("examples").resolve()))
    return load_example("examples/fine_tune_with_prompts.py")


def test_fine_tune_with_prompts_keeps_the_trained_network_and_gives_it_back(tmp_path, monkeypatch):
    import copy

    from contrastive_prompts import PromptStage, remove_prompts
    from contrastive_prompts.app.degradations import DegradationMix
    from contrastive_prompts.app.metrics import psnr

    example = load_fine_tune_example(monkeypatch)
    result = example.run(
        pretrain_steps=3, steps=2, size=16, batch=4, held_out=6, folder=tmp_path / "weights"
    )
    # (a) the plain network's weights were saved, and load strictly into a plain U-Net
    assert result.weights == tmp_path / "weights" / "plain.pt"
    saved = torch.load(result.weights, weights_only=True)
    example.UNet(16).load_state_dict(saved)
    assert list(saved) == result.plain_keys
    # (b) add_prompts kept every key, found each stage's dim, and changed no output
    model = result.model
    assert set(saved) <= set(model.state_dict())
    assert result.new_keys and all(
        key.startswith(("decoder.0.prompt_stage.", "decoder.1.prompt_stage."))
        for key in result.new_keys
    )
    stages = [model.decoder[i].prompt_stage for i in (0, 1)]
    assert all(isinstance(stage, PromptStage) for stage in stages)
    assert [stage.prompt.dim for stage in stages] == [32, 16]  # from example_input
    assert result.start_difference == 0.0
    assert result.start.cost == {"haze": 0.0, "low_light": 0.0}
    # the start row is the plain network from the file, on the same held-out images
    mix = DegradationMix({name: example.DEGRADATIONS[name]() for name in result.names})
    scoring = torch.Generator().manual_seed(example.HELD_OUT_SEED)
    degraded, clean, labels = example.make_batch(mix, 6, 16, scoring)
    plain = example.UNet(16)
    plain.load_state_dict(saved)
    with torch.no_grad():
        values = psnr(plain.eval()(degraded).clamp(0, 1), clean)
    for k, name in enumerate(result.names):
        assert result.pretrained[name] == pytest.approx(values[labels == k].mean().item())
        assert result.start.own[name] == pytest.approx(result.pretrained[name])
    # (c, d) fine-tuned: a report per degradation, of both prompt layers, and the control
    effect = result.effect
    assert effect.names == ("haze", "low_light") and effect.count == {"haze": 3, "low_light": 3}
    assert list(effect.experts) == [
        "decoder.0.prompt_stage.prompt",
        "decoder.1.prompt_stage.prompt",
    ]
    assert len(result.fine_tune_losses) == 2 and len(result.pretrain_losses) == 3
    assert result.control is not None and set(result.control) == set(result.names)
    assert result.gain() == pytest.approx(effect.average("own") - sum(values.tolist()) / 6)
    # (e) the weights without the stages load strictly into the plain U-Net; the model keeps them
    assert result.shared_keys == result.plain_keys
    plain = example.UNet(16)
    plain.load_state_dict(remove_prompts(copy.deepcopy(model)).state_dict())
    with torch.no_grad():
        values = psnr(plain.eval()(degraded).clamp(0, 1), clean)
    for k, name in enumerate(result.names):  # and the report scores that network
        assert result.without_stages[name] == pytest.approx(values[labels == k].mean().item())
    assert all(isinstance(model.decoder[i].prompt_stage, PromptStage) for i in (0, 1))


def test_fine_tune_with_prompts_keeps_training_and_report_images_apart(monkeypatch):
    example = load_fine_tune_example(monkeypatch)
    with pytest.raises(ValueError, match="held_out_seed other than the training seed"):
        example.run(pretrain_steps=1, steps=1, seed=example.HELD_OUT_SEED)


def test_fine_tune_with_prompts_command_line(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path("examples").resolve()))
    run_example(
        "examples/fine_tune_with_prompts.py",
        *("--pretrain-steps", "2", "--steps", "1", "--no-control", "--folder", str(tmp_path)),
    )
    assert (tmp_path / "plain.pt").is_file()  # --folder keeps the plain network's weights


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])


def test_train_all_in_one(tmp_path):
    from contrastive_prompts.app.checkpoints import read_checkpoint
    from contrastive_prompts.app.data import DegradedCopies, read_image, write_image
    from contrastive_prompts.app.degradations import make_mix
    from contrastive_prompts.app.metrics import psnr

    out, photo = tmp_path / "demo", tmp_path / "held_out.png"
    write_image(photo, torch.rand(3, 40, 56))  # a small held-out image keeps the test fast
    run_example(
        "examples/train_all_in_one.py", "--steps", "2", "--out", str(out), "--held-out", str(photo)
    )
    for name in ("grid.png", "metrics.md", "run/loss.png"):
        assert (out / name).is_file(), name
    # the run trained the steps asked for, and its weights are in the checkpoint
    checkpoint = read_checkpoint(out / "run" / "last.pt")
    assert checkpoint["step"] == 2 and checkpoint["config"]["steps"] == 2
    # the report scores the photo under every degradation of the mix: the degraded column is
    # what an independent computation on the same seeded copies gives
    report = json.loads((out / "metrics.json").read_text())
    names = make_mix("3task").names
    assert list(report) == list(names)
    for degraded, clean, label in DegradedCopies([read_image(photo)], "3task", seed=1):
        name = names[int(label)]
        expected = psnr(degraded.clamp(0, 1)[None], clean[None]).item()
        assert report[name]["degraded_psnr"] == pytest.approx(expected, abs=1e-6)
        assert math.isfinite(report[name]["restored_psnr"])
        assert 0 < report[name]["restored_ssim"] <= 1
