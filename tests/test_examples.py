"""The example scripts run end to end (shortened)."""

import importlib.util
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


def test_train_all_in_one(tmp_path, capsys):
    from contrastive_prompts.data import write_image

    out, photo = tmp_path / "demo", tmp_path / "held_out.png"
    write_image(photo, torch.rand(3, 40, 56))  # a small held-out image keeps the test fast
    run_example(
        "examples/train_all_in_one.py", "--steps", "2", "--out", str(out), "--held-out", str(photo)
    )
    printed = capsys.readouterr().out
    assert "average PSNR:" in printed and "| haze |" in printed
    for name in ("grid.png", "metrics.md", "metrics.json", "run/last.pt", "run/loss.png"):
        assert (out / name).is_file(), name
