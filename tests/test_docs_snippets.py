"""The code on the docs page 'CPL in your own network' runs as written and does what it says."""

import math
import runpy
from pathlib import Path

import torch

from contrastive_prompts import PromptStage

SNIPPETS = Path(__file__).resolve().parents[1] / "docs" / "snippets"


def run(name: str) -> dict:
    return runpy.run_path(str(SNIPPETS / name), run_name="__snippet__")


def test_add_prompts_snippet_trains_a_network_that_knew_no_prompts():
    found = run("own_network_add_prompts.py")
    assert isinstance(found["model"].decoder, PromptStage)
    assert found["parts"].stages == ("decoder.prompt",)
    assert math.isfinite(found["parts"].loss.item())
    assert found["model"].decoder.fusion.proj.weight.abs().sum() > 0  # the step moved the stage


def test_own_layers_snippet_gets_negatives_and_routing():
    found = run("own_network_layers.py")
    assert found["negatives"].shape == (4, 2, 3, 32, 32)
    assert found["routing"].names == ["prompt"]
    assert found["model"].prompt.router.weight.grad is not None


def test_trainer_snippet_trains_ones_own_network(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.mkdtemp", lambda: str(tmp_path))
    found = run("own_network_trainer.py")
    assert len(found["history"]) == 4
    assert (tmp_path / "last.pt").is_file()
    assert torch.isfinite(torch.tensor([r["loss"] for r in found["history"]])).all()
