"""Where things live: one home for each concept, one value for each default."""

import re

import pytest

import contrastive_prompts as cp
from contrastive_prompts import degradations, model
from contrastive_prompts.config import TrainConfig


def test_mix_names_come_from_the_mixes(monkeypatch):
    monkeypatch.setitem(degradations.MIXES, "my_mix", degradations.MIXES["5task"])
    TrainConfig(mix="my_mix").validate()  # a mix added to MIXES is accepted
    expected = "expected mix to be one of '3task', '5task', 'my_mix', got '7task'"
    with pytest.raises(cp.InputError, match=re.escape(expected)):
        TrainConfig(mix="7task").validate()


def test_one_tuple_of_reductions():
    import torch

    from contrastive_prompts import _checks, loss

    assert loss.REDUCTIONS is _checks.REDUCTIONS
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    negatives = torch.rand(2, 1, 3, 16, 16)
    for reduction in _checks.REDUCTIONS:  # every function accepts every reduction...
        cp.psnr(x, y, reduction=reduction)
        cp.ssim(x, y, reduction=reduction)
        cp.contrastive_prompt_loss(x, y, negatives, reduction=reduction)
    for call in (  # ...and names the same choices when given another
        lambda: cp.psnr(x, y, reduction="max"),
        lambda: cp.contrastive_prompt_loss(x, y, negatives, reduction="max"),
    ):
        expected = "reduction to be one of 'none', 'mean', 'sum', got 'max'"
        with pytest.raises(cp.InputError, match=re.escape(expected)):
            call()


def test_the_model_pads_without_the_metrics():
    from contrastive_prompts import padding

    assert model.pad_to_multiple is padding.pad_to_multiple
    assert cp.pad_to_multiple is padding.pad_to_multiple
    assert cp.metrics.pad_to_multiple is padding.pad_to_multiple  # still importable there
    assert not hasattr(model, "metrics") and "metrics" not in vars(model)


def test_an_image_is_padded_in_one_place():
    """evaluate scores exactly what the model makes of the image: only the model pads."""
    import torch

    torch.manual_seed(0)
    network = cp.SparsePromptIR("tiny").eval()
    degraded, clean = torch.rand(1, 3, 20, 28), torch.rand(1, 3, 20, 28)  # not multiples of 8
    result = cp.evaluate(network, [(degraded, clean, torch.tensor([0]))], names=["x"])
    with torch.no_grad():
        expected = cp.psnr(network(degraded).clamp(0, 1), clean)
    assert result.psnr["x"] == pytest.approx(expected.item(), abs=1e-9)
    # padding first to 16 gives the network other inputs, so another score
    padded = cp.evaluate(network, [(degraded, clean, torch.tensor([0]))], pad_multiple=16)
    assert padded.psnr["0"] != pytest.approx(expected.item(), abs=1e-6)


def test_the_objective_and_the_run_configuration_share_their_defaults():
    """One default, one value: CPLObjective() trains as TrainConfig() does.

    One difference is deliberate: the trainer sends the negatives in chunks of ``batch_size``
    rows on a CPU (measured faster there), while ``CPLObjective()`` sends them in one pass; the
    negatives then come from other draws of the same distribution.
    """
    objective, config = cp.CPLObjective(), TrainConfig()
    assert objective.weight == config.cpr_weight
    assert objective.num_negatives == config.num_negatives
    assert objective.balance_weight == config.balance_weight
    assert objective.label_negatives == config.use_labels
    assert objective.loss.mode == config.cpr_mode
