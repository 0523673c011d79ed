"""The README's code blocks run as written, in order, and compute what they say."""

import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastive_prompts import PromptStage, SparsePromptIR
from contrastive_prompts.app.data import write_image

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def readme_files(tmp_path, monkeypatch, exported_weights, promptir_checkpoint):
    """What the README's journeys read: exported weights, a PromptIR checkpoint, Rain100L."""
    monkeypatch.chdir(tmp_path)
    for folder in ("gt", "rainy"):
        (tmp_path / "Rain100L/test" / folder).mkdir(parents=True)
    for k in (1, 2):
        image = torch.rand(3, 24, 32)
        write_image(tmp_path / "Rain100L/test/gt" / f"norain-{k}.png", image)
        write_image(tmp_path / "Rain100L/test/rainy" / f"rain-{k}.png", (image + 0.3).clamp(0, 1))
    shutil.copy(exported_weights, tmp_path / "mine.safetensors")
    shutil.copy(promptir_checkpoint, tmp_path / "promptir.ckpt")
    return tmp_path


def test_readme_runs_and_computes_what_it_says(readme_files, capsys):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 3, "README: the quickstart, evaluation and PromptIR blocks"
    ns = {"__name__": "__readme__"}
    for block in blocks:  # in order, in one namespace, as a reader would run them
        exec(compile(block, "README.md", "exec"), ns)

    # 1. the modules
    prompt, routing, fused, negative = ns["prompt"], ns["routing"], ns["fused"], ns["negative"]
    assert prompt.shape == (2, 64, 32, 32) and fused.shape == (2, 96, 32, 32)
    assert negative.shape == prompt.shape
    num_prompts = ns["prompt_layer"].num_prompts
    assert routing.indices.shape == (2, 1) and routing.weights.shape == (2, num_prompts)
    assert ((routing.weights != 0).sum(dim=1) == 1).all()  # top-1: one expert per sample
    assert (routing.weights.gather(1, routing.indices) > 0).all()
    assert prompt.requires_grad and not negative.requires_grad
    assert not torch.allclose(negative, prompt)

    # 2. CPL in a plain network: a stage added by name, four negatives made by the network
    net, parts = ns["net"], ns["parts"]
    stage = net[2].prompt_stage  # the stage is a child of the prompted conv, which stays net[2]
    assert isinstance(net[2], nn.Conv2d) and isinstance(stage, PromptStage)
    assert parts.stages == ("2.prompt_stage.prompt",)
    torch.testing.assert_close(parts.loss, parts.l1 + 0.01 * parts.cpr)
    assert stage.fusion.proj.weight.grad.abs().sum() > 0  # the new stage learns
    assert stage.fusion.proj.weight.abs().sum() > 0  # and the step moved it off the identity

    # 3. evaluation of exported weights and of PromptIR's weights on the Rain100L layout
    assert isinstance(ns["model"], SparsePromptIR) and len(ns["rain100l"]) == 2
    promptir, start = ns["promptir"], ns["start"]
    assert promptir.config.top_k == 5 and start.config.top_k == 1
    assert torch.equal(promptir.prompt1.prompts, start.prompt1.prompts)  # same weights
    printed = capsys.readouterr().out
    assert printed.count("| rain |") == 2  # two tables, one row each


def test_docs_quickstart_is_the_readme_quickstart():
    readme = python_blocks((ROOT / "README.md").read_text())[0]
    assert (ROOT / "docs/snippets/quickstart.py").read_text() == readme
