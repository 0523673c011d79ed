"""Hostile inputs, second round: the API cases.

Each mistake a user can make with the public API (an option of the wrong type, a label out of
range, an empty batch, a network whose output does not fit the target, a removed method) gets
one clear line saying what was expected and what came, before anything deep inside torch fails.
"""

import math

import pytest
import torch
from torch import nn

from contrastive_prompts import (
    ContrastivePromptLoss,
    CPLObjective,
    InputError,
    InputTypeError,
    PromptStage,
    SparsePrompt,
    SparsePromptIR,
    add_prompts,
)
from contrastive_prompts.core import PromptFusion, contrastive_prompt_loss, topk_route

from .networks import PromptedUNet


def plain_net(stride: int = 1) -> nn.Sequential:
    """Three layers; ``stride=2`` makes its output half the input's size."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(16, 3, 3, stride=stride, padding=1),
    )


@pytest.fixture(scope="module")
def prompted() -> PromptedUNet:
    torch.manual_seed(0)
    return PromptedUNet()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


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
    # the stage, or the part of it that takes the option, names it
    with pytest.raises(InputTypeError, match=rf"^\w+: expected {name} to be an int"):
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
        ({"num_blocks": (1, "2", 2, 2)}, r"expected num_blocks\[1\] to be an integer in \[0, 64\]"),
        ({"prompt_dims": (16, "32", 80)}, r"expected prompt_dims\[1\] to be an integer >= 1"),
        ({"ffn_expansion_factor": -1.0}, r"expected ffn_expansion_factor to be a number > 0"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_sparsepromptir_checks_every_size_of_its_config(override, message):
    with pytest.raises(InputError, match=rf"^SparsePromptIR: {message}"):
        SparsePromptIR("tiny", **override)


# -- 2. a flag given as a string -----------------------------------------------------------------


def _loss_call(**options):
    a = torch.rand(1, 3, 8, 8)
    return contrastive_prompt_loss(a, a, torch.rand(1, 2, 3, 8, 8), **options)


@pytest.mark.parametrize(
    ("make", "where", "name"),
    [
        (
            lambda: SparsePrompt(dim=16, prompt_dim=8, prompt_size=4, renormalize="yes"),
            "SparsePrompt",
            "renormalize",
        ),
        # the stage's prompt takes the option, and says so
        (lambda: PromptStage(dim=16, renormalize="no"), "SparsePrompt", "renormalize"),
        (
            lambda: add_prompts(plain_net(), {"1": {"dim": 16, "renormalize": "false"}}),
            "SparsePrompt",
            "renormalize",
        ),
        (lambda: topk_route(torch.rand(2, 4), 1, renormalize="yes"), "topk_route", "renormalize"),
        (lambda: SparsePromptIR("tiny", use_prompts="false"), "SparsePromptIR", "use_prompts"),
        (lambda: CPLObjective(label_negatives="no"), "CPLObjective", "label_negatives"),
        (lambda: ContrastivePromptLoss(normalize="no"), "ContrastivePromptLoss", "normalize"),
        (lambda: _loss_call(normalize="no"), "contrastive_prompt_loss", "normalize"),
    ],
    ids=[
        "SparsePrompt",
        "PromptStage",
        "add_prompts",
        "topk_route",
        "SparsePromptIR",
        "CPLObjective",
        "ContrastivePromptLoss",
        "contrastive_prompt_loss",
    ],
)
def test_a_string_flag_is_refused_not_taken_as_true(make, where, name):
    with pytest.raises(InputTypeError, match=rf"^{where}: expected {name} to be a bool.*got str"):
        make()


# -- 3. a wrong option of the objective or the loss, refused at construction ---------------------


@pytest.mark.parametrize("loss", ["l1", "infonce"])
def test_a_string_loss_of_the_objective_is_refused_at_construction(loss):
    with pytest.raises(
        InputTypeError,
        match=rf"CPLObjective: expected loss to be None or a module such as "
        rf"ContrastivePromptLoss\(mode=m\), m one of 'infonce', 'ratio', 'subtractive'.*'{loss}'",
    ):
        CPLObjective(loss=loss)


def test_features_that_are_not_a_module_are_refused_at_construction():
    with pytest.raises(InputTypeError, match=r"expected features to be a module.*got str 'vgg'"):
        ContrastivePromptLoss(features="vgg")


@pytest.mark.parametrize(
    ("weights", "error"),
    [
        ((-1.0, 1.0, 1.0), InputError),
        ((math.nan, 1.0, 1.0), InputError),
        ((0.0, 0.0, 0.0), InputError),
        ("abc", InputTypeError),
        ((1.0, "1", 1.0), InputTypeError),
    ],
    ids=["negative", "nan", "all-zero", "string", "string-entry"],
)
def test_layer_weights_must_be_non_negative_numbers_with_a_positive_sum(weights, error):
    message = r"expected layer_weights to be finite numbers >= 0 with a positive sum"
    with pytest.raises(error, match=rf"^ContrastivePromptLoss: {message}"):
        ContrastivePromptLoss(layer_weights=weights)
    with pytest.raises(error, match=rf"^contrastive_prompt_loss: {message}"):
        _loss_call(layer_weights=weights)


@pytest.mark.parametrize(
    ("num_labels", "error"), [(0, InputError), (-2, InputError), ("3", InputTypeError)]
)
def test_num_labels_must_be_a_positive_integer(num_labels, error):
    with pytest.raises(error, match=r"CPLObjective: expected num_labels to be an integer >= 1"):
        CPLObjective(num_labels=num_labels)


# -- 4. labels out of range or not integers ------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "num_labels", "message"),
    [
        (torch.tensor([0, 5]), 3, r"expected labels in \[0, 2\] \(num_labels=3\), got \[5\]"),
        (torch.tensor([-1, 0]), 3, r"expected labels in \[0, 2\] \(num_labels=3\), got \[-1\]"),
        (torch.tensor([-1, 1]), None, r"expected labels >= 0, got \[-1\]"),
        (
            torch.tensor([0.0, 1.0]),
            3,
            r"expected labels to be an integer tensor, got torch.float32",
        ),
        (
            torch.tensor([True, False]),
            3,
            r"expected labels to be an integer tensor, got torch.bool",
        ),
    ],
    ids=["above", "negative", "negative-without-num_labels", "float", "bool"],
)
@pytest.mark.parametrize("weight", [0.01, 0.0], ids=["cpr", "l1-only"])
def test_labels_outside_the_range_are_refused_naming_them(
    prompted, images, labels, num_labels, message, weight
):
    """Where labels enter: ``check_labels`` reads their values; the call checks their dtype
    and leaves the values to the indexing that uses them (torch's own error)."""
    objective = CPLObjective(weight=weight, num_negatives=2, num_labels=num_labels)
    with pytest.raises(InputError, match=rf"^CPLObjective: {message}$"):
        objective.check_labels(labels)
    if "integer tensor" in message:
        with pytest.raises(InputError, match=rf"^CPLObjective: {message}$"):
            objective(prompted, images, images, labels)
    else:
        with pytest.raises((IndexError, RuntimeError), match=r"out of (bounds|range)"):
            objective(prompted, images, images, labels)


# -- 5. an empty batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_an_empty_batch_through_the_loss_is_refused(reduction):
    empty, negatives = torch.rand(0, 3, 8, 8), torch.rand(0, 2, 3, 8, 8)
    message = r"expected a batch of at least one image, got 0"
    with pytest.raises(InputError, match=rf"^contrastive_prompt_loss: {message}"):
        ContrastivePromptLoss(reduction=reduction)(empty, empty, negatives)
    with pytest.raises(InputError, match=rf"^contrastive_prompt_loss: {message}"):
        contrastive_prompt_loss(empty, empty, negatives, reduction=reduction)


@pytest.mark.parametrize("weight", [0.01, 0.0], ids=["cpr", "l1-only"])
def test_an_empty_batch_through_the_objective_is_refused(prompted, weight):
    empty = torch.rand(0, 3, 16, 16)
    with pytest.raises(
        InputError, match=r"^CPLObjective: expected a batch of at least one image, got 0"
    ):
        CPLObjective(weight=weight, num_negatives=2)(prompted, empty, empty)


# -- 6. a network whose output does not have the target's shape ----------------------------------


@pytest.mark.parametrize("weight", [0.01, 0.0], ids=["cpr", "l1-only"])
def test_an_output_of_another_shape_than_the_target_is_named_as_such(images, weight):
    torch.manual_seed(0)
    half = add_prompts(plain_net(stride=2), {"1": {"dim": 16, "prompt_size": 4}})
    with pytest.raises(
        InputError,
        match=r"^CPLObjective: expected model\(degraded\) to return a tensor of the shape of "
        r"clean \(2, 3, 16, 16\) \(the target\), got an output of shape \(2, 3, 8, 8\)$",
    ):
        CPLObjective(weight=weight, num_negatives=2)(half, images, images)


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


def test_a_generator_that_is_not_one_is_named():
    model, x = SparsePromptIR("tiny"), torch.rand(1, 3, 16, 16)
    with pytest.raises(
        InputTypeError, match=r"expected generator to be a torch\.Generator or None"
    ):
        CPLObjective()(model, x, x, generator=3)
