"""Hostile inputs, second round: the API cases.

Each mistake a user can make with the public API (an option of the wrong type, a label out of
range, an empty batch, a network whose output does not fit the target, a removed method) gets
one clear line saying what was expected and what came, before anything deep inside torch fails.
"""

import pytest
import torch
from torch import nn

from contrastive_prompts import (
    InputError,
    InputTypeError,
    PromptFusion,
    PromptStage,
    SparsePrompt,
    SparsePromptIR,
    add_prompts,
    topk_route,
)


def plain_net(stride: int = 1) -> nn.Sequential:
    """Three layers; ``stride=2`` makes its output half the input's size."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(16, 3, 3, stride=stride, padding=1),
    )


# -- 1. a size given as a string -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: PromptStage(dim="16"), "dim"),
        (lambda: add_prompts(plain_net(), {"1": {"dim": "16"}}), "dim"),
        (
            lambda: add_prompts(
                plain_net(), {"1": {"dim": "16"}}, example_input=torch.rand(1, 3, 8, 8)
            ),
            "dim",
        ),
        (lambda: PromptStage(dim=16, prompt_dim="8"), "prompt_dim"),
        (lambda: PromptStage(dim=16, num_heads="1"), "num_heads"),
    ],
    ids=["PromptStage", "add_prompts", "add_prompts-example_input", "prompt_dim", "num_heads"],
)
def test_a_string_size_of_a_prompt_stage_is_refused_naming_int_and_str(make, name):
    with pytest.raises(InputTypeError, match=rf"^PromptStage: expected {name} to be an int"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: PromptStage(dim=16, ffn_expansion_factor="2"),
        lambda: PromptFusion(dim=16, prompt_dim=8, ffn_expansion_factor="2"),
        lambda: SparsePromptIR("tiny", ffn_expansion_factor="2"),
    ],
    ids=["PromptStage", "PromptFusion", "SparsePromptIR"],
)
def test_a_string_ffn_expansion_factor_is_refused(make):
    with pytest.raises(InputTypeError, match=r"expected ffn_expansion_factor to be a number > 0"):
        make()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"prompt_heads": 0}, r"expected prompt_heads to be an integer >= 1, got 0"),
        ({"prompt_heads": "4"}, r"expected prompt_heads to be an integer >= 1, got '4'"),
        ({"num_refinement_blocks": "1"}, r"expected num_refinement_blocks to be an integer"),
        ({"num_blocks": (1, "2", 2, 2)}, r"expected num_blocks\[1\] to be an integer >= 0"),
        ({"prompt_dims": (16, "32", 80)}, r"expected prompt_dims\[1\] to be an integer >= 1"),
        ({"ffn_expansion_factor": -1.0}, r"expected ffn_expansion_factor to be a number > 0"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_sparsepromptir_checks_every_size_of_its_config(override, message):
    with pytest.raises(InputError, match=rf"^SparsePromptIR: {message}"):
        SparsePromptIR("tiny", **override)


# -- 2. a flag given as a string -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "where", "name"),
    [
        (
            lambda: SparsePrompt(dim=16, prompt_dim=8, prompt_size=4, renormalize="yes"),
            "SparsePrompt",
            "renormalize",
        ),
        (lambda: PromptStage(dim=16, renormalize="no"), "PromptStage", "renormalize"),
        (
            lambda: add_prompts(plain_net(), {"1": {"dim": 16, "renormalize": "false"}}),
            "PromptStage",
            "renormalize",
        ),
        (lambda: topk_route(torch.rand(2, 4), 1, renormalize="yes"), "topk_route", "renormalize"),
        (lambda: SparsePromptIR("tiny", use_prompts="false"), "SparsePromptIR", "use_prompts"),
    ],
    ids=[
        "SparsePrompt",
        "PromptStage",
        "add_prompts",
        "topk_route",
        "SparsePromptIR",
    ],
)
def test_a_string_flag_is_refused_not_taken_as_true(make, where, name):
    with pytest.raises(InputTypeError, match=rf"^{where}: expected {name} to be a bool.*got str"):
        make()


# -- 7. the removed methods of SparsePromptIR ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "replacement"),
    [
        ("forward_with_negatives", r"contrastive_prompts\.forward_with_negatives\(model, x"),
        ("forward_negative", r"contrastive_prompts\.negative_prompts"),
    ],
)
def test_a_removed_method_says_what_replaces_it(name, replacement):
    model = SparsePromptIR("tiny")
    with pytest.raises(
        AttributeError, match=rf"^SparsePromptIR\.{name} was removed: .*{replacement}"
    ):
        getattr(model, name)
    assert not hasattr(model, name)
    # every other name is still nn.Module's: submodules found, unknown names its usual error
    assert isinstance(model.patch_embed, nn.Conv2d)
    with pytest.raises(AttributeError, match=r"'SparsePromptIR' object has no attribute 'nope'"):
        model.nope  # noqa: B018
