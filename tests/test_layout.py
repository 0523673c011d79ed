"""Where things live: one home for each concept, one value for each default."""

import pathlib
import re
import types

import pytest
import torch

import contrastive_prompts as cp
from contrastive_prompts.app import degradations
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.metrics import evaluate, psnr, ssim
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.core import contrastive_prompt_loss

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def test_every_public_name_resolves_and_has_a_reference_entry():
    """Each name of ``contrastive_prompts.__all__`` imports and has a ``:::`` entry in the docs,
    under the package or under the module that defines it."""
    pages = "\n".join(page.read_text() for page in sorted(DOCS.rglob("*.md")))
    entries = set(re.findall(r"^::: *(contrastive_prompts[\w.]*)", pages, re.M))
    missing = []
    for name in cp.__all__:
        obj = getattr(cp, name)  # an AttributeError names a listed name that does not resolve
        if name == "__version__" or isinstance(obj, types.ModuleType):
            continue
        homes = {f"contrastive_prompts.{name}", f"{getattr(obj, '__module__', None)}.{name}"}
        if not homes & entries:
            missing.append(name)
    assert missing == []


def test_mix_names_come_from_the_mixes(monkeypatch):
    monkeypatch.setitem(degradations.MIXES, "my_mix", degradations.MIXES["5task"])
    TrainConfig(mix="my_mix").validate()  # a mix added to MIXES is accepted
    expected = "expected mix to be one of '3task', '5task', 'cdd11', 'my_mix', got '7task'"
    with pytest.raises(cp.InputError, match=re.escape(expected)):
        TrainConfig(mix="7task").validate()


def test_every_function_takes_the_same_reductions_with_the_same_meaning():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    negatives = torch.rand(2, 1, 3, 16, 16)
    for function in (
        lambda r: psnr(x, y, reduction=r),
        lambda r: ssim(x, y, reduction=r),
        lambda r: contrastive_prompt_loss(x, y, negatives, reduction=r),
    ):
        per_sample = function("none")  # one value per image...
        assert per_sample.shape == (2,)
        torch.testing.assert_close(function("mean"), per_sample.mean())  # ...averaged
        torch.testing.assert_close(function("sum"), per_sample.sum())  # ...or added
        expected = "reduction to be one of 'none', 'mean', 'sum', got 'max'"
        with pytest.raises(cp.InputError, match=re.escape(expected)):
            function("max")


def test_an_image_is_padded_in_one_place():
    """evaluate scores exactly what the model makes of the image: only the model pads."""
    import torch

    torch.manual_seed(0)
    network = cp.SparsePromptIR("tiny").eval()
    degraded, clean = torch.rand(1, 3, 20, 28), torch.rand(1, 3, 20, 28)  # not multiples of 8
    result = evaluate(network, [(degraded, clean, torch.tensor([0]))], names=["x"])
    with torch.no_grad():
        expected = psnr(network(degraded).clamp(0, 1), clean)
    assert result.psnr["x"] == pytest.approx(expected.item(), abs=1e-9)
    # padding first to 16 gives the network other inputs, so another score
    padded = evaluate(network, [(degraded, clean, torch.tensor([0]))], pad_multiple=16)
    assert padded.psnr["0"] != pytest.approx(expected.item(), abs=1e-6)


def test_the_objective_and_the_run_configuration_share_their_defaults():
    """One default, one value: CPLObjective() scores a batch as the trainer's objective from
    TrainConfig() does (same weights, negatives, loss mode, feature space, balance, labels).

    One difference is deliberate: the trainer sends the negatives in chunks of ``batch_size``
    rows on a CPU (measured faster there), while ``CPLObjective()`` sends them in one pass; the
    negatives then come from other draws of the same distribution. Here the trainer's chunk
    holds every row, so both see the same draws.
    """
    batch = 2  # two labels in the batch, so that label_negatives changes the negatives
    config = TrainConfig(device="cpu", chunk_size=batch * TrainConfig().num_negatives)
    torch.manual_seed(0)
    trainer = Trainer(config, model=cp.SparsePromptIR("tiny"), label_names=["a", "b", "c"])
    # a dark and a bright image: their layers pick different experts, so labels matter
    degraded = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    clean, labels = torch.rand(batch, 3, 16, 16), torch.tensor([0, 2])

    def score(objective):
        generator = torch.Generator().manual_seed(3)
        return objective(trainer.model, degraded, clean, labels, generator=generator)

    mine, trainers = score(cp.CPLObjective(num_labels=3)), score(trainer.objective)
    labelled = score(cp.CPLObjective(num_labels=3, label_negatives=not config.use_labels))
    assert labelled.cpr != trainers.cpr  # the batch tells label_negatives apart
    for field in ("loss", "l1", "cpr", "balance", "output"):
        torch.testing.assert_close(getattr(mine, field), getattr(trainers, field), msg=field)
    for a, b in zip(mine.expert_counts, trainers.expert_counts, strict=True):
        assert torch.equal(a, b)
