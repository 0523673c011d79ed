"""The README's code blocks run as written, and the docs show the same quickstart."""

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastive_prompts import contrastive_prompt_loss

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_quickstart_runs_and_computes_what_it_says():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README has no python block"
    ns = {"__name__": "__readme__"}
    for block in blocks:  # in order, in one namespace, as a reader would run them
        exec(compile(block, "README.md", "exec"), ns)

    prompt, routing, fused, negative = ns["prompt"], ns["routing"], ns["fused"], ns["negative"]
    assert prompt.shape == (2, 64, 32, 32) and fused.shape == (2, 96, 32, 32)
    assert negative.shape == prompt.shape
    # top-1 routing over the bank: one expert per sample, its weight the only nonzero one
    num_prompts = ns["prompt_layer"].num_prompts
    assert routing.indices.shape == (2, 1) and routing.weights.shape == (2, num_prompts)
    assert ((routing.indices >= 0) & (routing.indices < num_prompts)).all()
    assert ((routing.weights != 0).sum(dim=1) == 1).all()
    assert (routing.weights.gather(1, routing.indices) > 0).all()
    # the prompt carries gradient, the negative does not and is another prompt
    assert prompt.requires_grad and not negative.requires_grad
    assert not torch.allclose(negative, prompt)

    # loss = L1 + 0.01 * CPR, a positive scalar; the default (subtractive) CPR lowers it
    anchor, clean, negatives, loss = ns["anchor"], ns["clean"], ns["negatives"], ns["loss"]
    assert negatives.shape == (2, 4, 3, 64, 64)
    cpr = contrastive_prompt_loss(anchor, clean, negatives)
    assert cpr < 0
    assert loss.shape == () and torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(loss, F.l1_loss(anchor, clean) + 0.01 * cpr)


def test_docs_quickstart_is_the_readme_quickstart():
    readme = python_blocks((ROOT / "README.md").read_text())[0]
    assert (ROOT / "docs/snippets/quickstart.py").read_text() == readme
