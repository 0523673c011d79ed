"""prompt_effect: own against negative prompts, in closed forms, and its errors."""

import json
import math
import re

import pytest
import torch
from torch import nn

from contrastive_prompts import InputError, SparsePrompt, add_prompts
from contrastive_prompts.app.effect import PromptEffect, prompt_effect
from contrastive_prompts.app.metrics import evaluate
from contrastive_prompts.core import prompt_layers

from .networks import PlainUNet, PromptedUNet


class AddedPrompt(nn.Module):
    """``x + prompt(x)`` with a hand-set SparsePrompt: own and negative outputs in closed form.

    The router ignores the image (zero weights) and always picks expert 0, whose bank is 0, so
    the own output is ``x``. Expert ``i > 0`` is the constant ``offsets[i - 1] / p_i`` with
    ``p_i`` its softmax weight, and the conv is the identity, so a negative prompt that draws
    expert ``i`` makes ``x + offsets[i - 1]`` everywhere.
    """

    def __init__(self, offsets=(0.1,)) -> None:
        super().__init__()
        experts = len(offsets) + 1
        self.prompt = SparsePrompt(dim=3, prompt_dim=3, num_prompts=experts, prompt_size=2)
        with torch.no_grad():
            self.prompt.router.weight.zero_()
            self.prompt.router.bias.copy_(torch.tensor([2.0] + [0.0] * (experts - 1)))
            probs = self.prompt.router.bias.softmax(-1)
            self.prompt.prompts.zero_()
            for i, offset in enumerate(offsets, start=1):
                self.prompt.prompts[i] = offset / probs[i]
            self.prompt.conv.weight.zero_()
            for c in range(3):
                self.prompt.conv.weight[c, c, 1, 1] = 1.0

    def forward(self, x):
        return x + self.prompt(x)


class ByBrightness(nn.Module):
    """Routes each image by its mean brightness: dark ones to expert 1, bright ones to expert 0."""

    def __init__(self, num_prompts=2, top_k=1) -> None:
        super().__init__()
        self.prompt = SparsePrompt(
            dim=3, prompt_dim=2, num_prompts=num_prompts, prompt_size=2, top_k=top_k
        )
        with torch.no_grad():
            self.prompt.router.weight.zero_()
            self.prompt.router.weight[0] = 10.0
            self.prompt.router.weight[1] = -10.0
            self.prompt.router.bias.zero_()
            self.prompt.router.bias[0], self.prompt.router.bias[1] = -15.0, 15.0

    def forward(self, x):
        return x + 0 * self.prompt(x).mean()


def flat(values, size=8):
    """One flat image per value, ``(N, 3, size, size)``."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, size, size)


def test_a_prompt_without_effect_costs_exactly_nothing():
    torch.manual_seed(0)
    net = add_prompts(PlainUNet(), {"decoder.0": {"dim": 16, "prompt_size": 4},
                                    "decoder.1": {"dim": 8, "prompt_size": 4}})  # fmt: skip
    clean = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    degraded = (clean + 0.1).clamp(0, 1)
    effect = prompt_effect(net, degraded, clean, [0, 1, 2, 0, 1, 2], num_negatives=3)
    # new stages are the identity: every negative prompt gives the own output
    assert effect.cost == {"0": 0.0, "1": 0.0, "2": 0.0}
    assert effect.own == effect.negative
    assert effect.average("cost") == 0.0
    assert list(effect.experts) == list(prompt_layers(net))  # call order: the decoder's order


def test_a_known_negative_gives_a_known_psnr():
    clean = 0.2 + 0.5 * torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    degraded = clean + 0.05
    effect = prompt_effect(AddedPrompt([0.1]), degraded, clean, [0, 1, 1, 0], names=["a", "b"])
    own, negative = 20 * math.log10(1 / 0.05), 20 * math.log10(1 / 0.15)
    for name in ("a", "b"):
        assert effect.degraded[name] == pytest.approx(own, abs=1e-4)
        assert effect.own[name] == pytest.approx(own, abs=1e-4)  # the own output is x
        assert effect.negative[name] == pytest.approx(negative, abs=1e-3)
        assert effect.cost[name] == pytest.approx(20 * math.log10(3), abs=1e-3)
        assert effect.experts["prompt"][name] == (0, 1.0)


def test_negatives_are_averaged_over_draws_and_reproducible():
    clean = 0.2 + 0.5 * torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    net = AddedPrompt([0.1, 0.2])  # a draw of expert 1 gives 20 dB, of expert 2 about 13.98 dB
    labels = [0] * 8

    def run(seed, m):
        return prompt_effect(
            net,
            clean,
            clean,
            labels,
            num_negatives=m,
            generator=torch.Generator().manual_seed(seed),
        )

    one, many = run(0, 1), run(0, 16)
    assert run(0, 16) == many  # the same generator gives the same numbers
    low, high = 20 * math.log10(1 / 0.2), 20 * math.log10(1 / 0.1)
    for effect in (one, many):
        assert low - 1e-3 <= effect.negative["0"] <= high + 1e-3
    # 128 draws of two equally likely experts: the mean lands strictly between the two
    assert low + 0.5 < many.negative["0"] < high - 0.5
    assert many.own["0"] == math.inf  # the own output is the clean image
    assert prompt_effect(net, clean, clean, labels).negative == run(0, 1).negative  # seed 0


def test_expert_shares_count_the_samples_of_each_degradation():
    # label 0: three dark images and a bright one; label 1: two bright images
    degraded = flat([0.2, 0.2, 0.8, 0.2, 0.8, 0.8])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    effect = prompt_effect(ByBrightness(), degraded, degraded, labels, batch_size=4)
    assert effect.experts["prompt"] == {"0": (1, 0.75), "1": (0, 1.0)}
    assert effect.expert_counts["prompt"] == {"0": [1, 3], "1": [2, 0]}
    assert effect.count == {"0": 4, "1": 2}
    # top_k = 2 of 3 experts: each sample selects two, so a degradation's row sums to 2 per image
    # (expert 2's logit is 0: second for every image, dark or bright)
    top2 = prompt_effect(ByBrightness(3, 2), degraded, degraded, labels)
    assert top2.expert_counts["prompt"] == {"0": [1, 3, 4], "1": [2, 0, 2]}
    for name, rows in top2.expert_counts["prompt"].items():
        assert sum(rows) == 2 * top2.count[name]
    # expert 2 serves every image of label 0; for label 1, the tie goes to the first expert
    assert top2.experts["prompt"] == {"0": (2, 1.0), "1": (0, 1.0)}


def test_batches_and_sizes_do_not_change_the_numbers():
    torch.manual_seed(0)
    net = PromptedUNet()
    clean = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    degraded = (clean + 0.1 * torch.randn(5, 3, 16, 16)).clamp(0, 1)
    labels = [0, 1, 0, 1, 1]
    whole = prompt_effect(net, degraded, clean, labels, batch_size=8)
    single = prompt_effect(net, list(degraded), list(clean), labels, batch_size=1)
    for row in ("degraded", "own"):
        for name in whole.names:
            assert getattr(single, row)[name] == pytest.approx(getattr(whole, row)[name], abs=1e-5)
    assert single.experts == whole.experts
    # images of two sizes in one call: each size is scored as on its own
    small = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    mixed = prompt_effect(net, [*degraded[:2], *small], [*clean[:2], *small], [0, 0, 1, 1])
    alone = prompt_effect(net, small, small, [1, 1])
    assert mixed.own["1"] == pytest.approx(alone.own["1"], abs=1e-5)


def test_own_prompts_score_as_evaluate_scores():
    torch.manual_seed(0)
    net = PromptedUNet()
    clean = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    degraded = (clean + 0.2 * torch.randn(4, 3, 16, 16)).clamp(0, 1)
    labels = torch.tensor([0, 1, 1, 0])
    effect = prompt_effect(net, degraded, clean, labels, names=["noise", "rain"])
    table = evaluate(net, [(degraded, clean, labels)], names=["noise", "rain"])
    for name in ("noise", "rain"):
        assert effect.own[name] == pytest.approx(table.psnr[name], abs=1e-6)
        assert effect.count[name] == table.count[name]


def test_training_flags_are_restored_and_the_run_is_in_eval_mode():
    seen = []

    class Watch(nn.Module):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return x

    net = nn.Sequential(Watch(), AddedPrompt(), nn.BatchNorm2d(3))
    net.train()
    net[2].eval()  # a frozen batch norm inside a training model stays frozen
    before = [m.training for m in net.modules()]
    x = torch.rand(2, 3, 8, 8)
    prompt_effect(net, x, x, [0, 0])
    assert seen and all(flags == (False, False) for flags in seen)
    assert [m.training for m in net.modules()] == before
    assert torch.is_grad_enabled()

    class Broken(AddedPrompt):
        def forward(self, x):
            return super().forward(x)[..., :4]

    broken = nn.Sequential(Broken(), nn.BatchNorm2d(3)).train()
    message = "expected the model to return images of shape (2, 3, 8, 8), got (2, 3, 8, 4)"
    with pytest.raises(InputError, match=re.escape(message)):
        prompt_effect(broken, x, x, [0, 0])
    assert all(m.training for m in broken.modules())


def test_table_and_json():
    clean = 0.2 + 0.5 * torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    effect = prompt_effect(AddedPrompt([0.1]), clean + 0.05, clean, [0, 1, 1, 0],
                           names=["haze", "low light"])  # fmt: skip
    lines = str(effect).splitlines()
    assert lines[0].startswith("| degradation | images | degraded | own | negative | swap |")
    # both degradations use expert 0: a swap gives each the expert it has, and costs nothing
    assert lines[2] == "| haze | 2 | 26.02 | 26.02 | 16.48 | 26.02 | 9.54 | 0.00 |"
    assert lines[4].startswith("| average | 4 | 26.02 |")
    assert "| prompt | 0 (100%) | 0 (100%) |" in lines
    assert "| prompt | 0.00 | 1 | yes | no |" in lines
    assert lines[-1].startswith("Warning: the experts do not specialise at prompt (collapsed")
    plain = json.loads(json.dumps(effect.to_dict()))
    assert plain["cost"]["haze"] == pytest.approx(effect.cost["haze"])
    assert plain["average"]["own"] == pytest.approx(effect.average("own"))
    assert plain["experts"]["prompt"]["low light"] == {"expert": 0, "share": 1.0}
    assert set(plain) >= {f.name for f in PromptEffect.__dataclass_fields__.values()}


def test_bad_inputs_say_what_was_expected():
    net, x = AddedPrompt(), torch.rand(2, 3, 8, 8)
    cases = [
        (lambda: prompt_effect(net, x[0], x[0], [0]),
         "prompt_effect: expected degraded of shape (N, C, H, W), got (3, 8, 8)"),
        (lambda: prompt_effect(net, x, x[:, :, :4], [0, 0]),
         "prompt_effect: expected clean of the same shape as degraded (2, 3, 8, 8), "
         "got (2, 3, 4, 8)"),
        (lambda: prompt_effect(net, x, x[:1], [0, 0]),
         "prompt_effect: expected 2 clean images (one per degraded), got 1"),
        (lambda: prompt_effect(net, x, x, [0]),
         "prompt_effect: expected labels of shape (2), got (1)"),
        (lambda: prompt_effect(net, x, x, torch.tensor([0.0, 1.0])),
         "prompt_effect: expected integer labels, got torch.float32"),
        (lambda: prompt_effect(net, x, x, [0, 2], names=["a", "b"]),
         "prompt_effect: expected labels in [0, 2) (one per name in names: ['a', 'b']), "
         "got labels from 0 to 2"),
        (lambda: prompt_effect(net, x, x, [-1, 0]),
         "prompt_effect: expected labels >= 0, got labels from -1 to 0"),
        (lambda: prompt_effect(net, x[:0], x[:0], []),
         "prompt_effect: expected at least one image, got none"),
        (lambda: prompt_effect(net, x, x, [0, 0], num_negatives=0),
         "prompt_effect: expected num_negatives to be an integer >= 1, got 0"),
        (lambda: prompt_effect(net, x, x, [0, 0], batch_size=0),
         "prompt_effect: expected batch_size to be an integer >= 1, got 0"),
        (lambda: prompt_effect(nn.Conv2d(3, 3, 1), x, x, [0, 0]),
         "prompt_effect: expected a model containing SparsePrompt layers, got Conv2d with none"),
        (lambda: prompt_effect(PromptedUNet(top_k=5), x, x, [0, 0]),
         "prompt_effect: expected prompt layers with top_k < num_prompts (experts left for "
         "negative prompts), got top_k == num_prompts in ['prompt_mid', 'prompt_dec']"),
        (lambda: prompt_effect(net, [x[0], x[1, :, :4]], [x[0], x[1]], [0, 0]),
         "prompt_effect: expected clean[1] of the same shape as degraded[1] (3, 4, 8), "
         "got (3, 8, 8)"),
        (lambda: prompt_effect(net, "images", x, [0, 0]),
         "prompt_effect: expected degraded to be a (N, C, H, W) tensor or a sequence of "
         "(C, H, W) tensors, got str"),
        (lambda: prompt_effect(net, x, x, [0, 1], names=["x", "x"]),
         "prompt_effect: expected one name per degradation, each once, got ['x'] more than "
         "once in names=['x', 'x']"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            call()


def test_memory_follows_the_images_not_the_largest_label():
    # a (largest label + 1, experts) table per batch and layer would take 16 GB here
    net, x = AddedPrompt(offsets=(0.1, 0.2)), torch.rand(4, 3, 8, 8)
    labels = [4 * 10**8, 3, 4 * 10**8, 3]
    effect = prompt_effect(net, x, x, labels)
    assert effect.names == ("3", "400000000") and effect.count == {"3": 2, "400000000": 2}
    assert effect.expert_counts["prompt"] == {"3": [2, 0, 0], "400000000": [2, 0, 0]}
    spread = prompt_effect(net, x, x, [0, 1, 0, 1])
    assert effect.own == {"3": spread.own["1"], "400000000": spread.own["0"]}


def test_what_prompt_effect_once_took_silently_is_refused_in_one_line():
    net, x = AddedPrompt(), torch.rand(2, 3, 8, 8)
    cases = [
        ((x * 255).to(torch.uint8), [0, 1], {}, "images in [0, 1], got torch.uint8"),
        (x * 255, [0, 1], {}, "(0-255 images? divide by 255)"),
        (x > 0.5, [0, 1], {}, "got torch.bool"),
        (x, [0.5, 1.7], {}, "expected integer labels, got torch.float32"),
        (x, [True, False], {}, "expected integer labels, got torch.bool"),
        (x, [0, 1], {"y_channel": "no"}, "expected y_channel to be a bool"),
        (x, [0, 1], {"label_negatives": "yes"}, "expected label_negatives to be a bool"),
        (x, [0, 1], {"forward": lambda t: t}, "expected forward to run the prompt layers"),
        (x.clone().fill_(float("nan")), [0, 1], {}, "values from nan to nan"),
    ]  # fmt: skip
    for images, labels, options, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            prompt_effect(net, images, x, labels, **options)
    noisy = x + 0.3 * torch.randn_like(x)  # a little outside [0, 1] is a noisy input, not a scale
    prompt_effect(net, noisy, x, [0, 1])


def test_names_that_are_not_plain_words_keep_the_tables_whole():
    net, x = AddedPrompt(), torch.rand(2, 3, 8, 8)
    table = str(prompt_effect(net, x, x, [0, 1], names=["haze | rain", "low\nlight"]))
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert "| haze \\| rain | 1 |" in table and "| low light | 1 |" in table
    first = rows[0].count(" | ")
    for row in rows[:4]:  # the PSNR table: every row has its columns
        assert row.replace("\\|", "").count(" | ") == first, row
