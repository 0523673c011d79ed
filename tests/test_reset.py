"""Every module with parameters has a ``reset_parameters`` that restores its documented start.

A module built on the meta device holds no values; ``to_empty`` gives it memory with whatever
was there, and ``reset_parameters`` must then set every parameter and buffer. Checked against the
same module filled with a sentinel and reset under the same seed: a value that reset leaves alone
differs between the two, so the check fails for it. Then each documented start: norms at the
identity, attention temperatures at one, a prompt bank in [0, 1), a new prompt stage the identity.
"""

import pytest
import torch
from torch import nn

from contrastive_prompts import PromptStage, SparsePrompt, SparsePromptIR
from contrastive_prompts.core import PromptFusion, TransformerBlock
from contrastive_prompts.core.restormer import Attention, FeedForward, LayerNorm2d

BUILDERS = {
    "LayerNorm2d": lambda **f: LayerNorm2d(8, **f),
    "Attention": lambda **f: Attention(8, num_heads=2, **f),
    "FeedForward": lambda **f: FeedForward(8, ffn_expansion_factor=2.0, **f),
    "TransformerBlock": lambda **f: TransformerBlock(8, num_heads=2, **f),
    "PromptFusion": lambda **f: PromptFusion(dim=8, prompt_dim=4, num_heads=2, **f),
    "PromptFusion with a block of its own": lambda **f: PromptFusion(
        dim=8,
        prompt_dim=4,
        block=nn.Sequential(nn.Conv2d(12, 12, 1, **f), LayerNorm2d(12, **f)),
        **f,
    ),
    "SparsePrompt": lambda **f: SparsePrompt(dim=8, prompt_dim=4, prompt_size=2, **f),
    "PromptStage": lambda **f: PromptStage(dim=8, prompt_size=2, **f),
    "SparsePromptIR": lambda **f: SparsePromptIR("tiny", **f),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_module_built_on_meta_and_materialised_gets_its_start_from_reset(name):
    build = BUILDERS[name]
    empty = build(device="meta").to_empty(device="cpu")
    torch.manual_seed(7)
    empty.reset_parameters()
    filled = build()
    with torch.no_grad():
        for tensor in [*filled.parameters(), *filled.buffers()]:
            tensor.fill_(3.0)
    torch.manual_seed(7)
    filled.reset_parameters()
    expected, got = filled.state_dict(), empty.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert not any(bool(v.eq(3.0).all()) for v in got.values() if v.numel() > 1)


def test_the_documented_starts():
    norm = BUILDERS["LayerNorm2d"](device="meta").to_empty(device="cpu")
    norm.reset_parameters()
    assert bool(norm.weight.eq(1).all()) and bool(norm.bias.eq(0).all())
    attention = BUILDERS["Attention"](device="meta").to_empty(device="cpu")
    attention.reset_parameters()
    assert bool(attention.temperature.eq(1).all())
    prompt = BUILDERS["SparsePrompt"](device="meta").to_empty(device="cpu")
    prompt.reset_parameters()
    assert bool(((prompt.prompts >= 0) & (prompt.prompts < 1)).all())
    stage = BUILDERS["PromptStage"](device="meta").to_empty(device="cpu")
    stage.reset_parameters()
    h = torch.rand(2, 8, 6, 6)
    assert torch.equal(stage(h), h)  # a new stage is the identity
    with torch.no_grad():
        stage.fusion.proj.weight.normal_()  # trained: no longer the identity
    assert not torch.equal(stage(h), h)
    stage.reset_parameters()
    assert torch.equal(stage(h), h)


def test_reset_draws_what_construction_draws_for_the_restormer_parts():
    for name in ("Attention", "FeedForward", "TransformerBlock"):
        torch.manual_seed(3)
        built = BUILDERS[name]()
        again = BUILDERS[name](device="meta").to_empty(device="cpu")
        torch.manual_seed(3)
        again.reset_parameters()
        for key, value in built.state_dict().items():
            assert torch.equal(again.state_dict()[key], value), (name, key)
