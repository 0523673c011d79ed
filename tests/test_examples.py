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


def test_plug_into_your_network_shows_the_effect():
    """At its default budget the example shows what it teaches, on held-out images."""
    example = load_example("examples/plug_into_your_network.py")
    result = example.run()  # seed 0, about 100 s on a 2-core CPU
    assert all(math.isfinite(loss) for loss in result.losses)
    # the network restores: far above the degraded input under its own prompts
    assert result.average("own") > result.average("degraded") + 5
    # the prompt controls the restoration: a negative prompt costs at least 1 dB
    assert result.cost >= 1.0, result.psnr
    # each degradation's most-used expert differs at the stage nearest the output
    assert list(result.experts) == ["decoder.0.prompt", "decoder.1.prompt"]
    assert result.separated_at("decoder.1.prompt"), result.experts["decoder.1.prompt"].tolist()
    # the counts cover every held-out image once per stage
    assert all(int(counts.sum()) == 48 for counts in result.experts.values())


def test_plug_into_your_network_keeps_training_and_report_images_apart():
    example = load_example("examples/plug_into_your_network.py")
    with pytest.raises(ValueError, match="held_out_seed other than the training seed"):
        example.run(steps=1, seed=example.HELD_OUT_SEED)


def test_plug_into_your_network_command_line(capsys):
    run_example("examples/plug_into_your_network.py", "--steps", "2", "--degradations", "haze")
    printed = capsys.readouterr().out
    assert "| own prompts |" in printed and "| decoder.1.prompt haze |" in printed


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])


def test_train_all_in_one(tmp_path):
    from contrastive_prompts.checkpoints import read_checkpoint
    from contrastive_prompts.data import DegradedCopies, read_image, write_image
    from contrastive_prompts.degradations import make_mix
    from contrastive_prompts.metrics import psnr

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
