"""Do the experts specialise? specialisation, the routing term, fixed experts and the swap cost.

Closed forms: a one-to-one match of labels and experts, a full collapse, labels spread alike;
the router's cross-entropy at a uniform and a certain router; a swapped prompt on a network
whose outputs are known in closed form; and a collapse, where a swap changes nothing.
"""

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import CPLObjective, InputError, InputTypeError, SparsePrompt
from contrastive_prompts.app.effect import collapse_warning, prompt_effect
from contrastive_prompts.core import (
    Routing,
    fixed_experts,
    label_routing_loss,
    load_balance_loss,
    record_routing,
    specialisation,
    topk_route,
)

from .networks import PromptedUNet

# -- specialisation: closed forms ------------------------------------------------------------


def test_one_expert_per_label_is_full_specialisation():
    found = specialisation(torch.tensor([[5, 0, 0, 0], [0, 0, 7, 0], [0, 3, 0, 0]]))
    assert found.nmi == pytest.approx(1.0)
    assert (found.dead, found.collapsed, found.separated) == (1, False, True)
    assert found.experts == (0, 2, 1)


def test_one_expert_for_all_is_a_collapse():
    found = specialisation(torch.tensor([[9, 0, 0], [6, 0, 0], [4, 0, 0]]))
    assert found.nmi == 0.0
    assert (found.dead, found.collapsed, found.separated) == (2, True, False)
    assert found.experts == (0, 0, 0)
    # 90 % of the picks on one expert is a collapse; just under it is not
    assert specialisation(torch.tensor([[9, 1], [9, 1]])).collapsed
    assert not specialisation(torch.tensor([[89, 11], [90, 10]])).collapsed


def test_labels_spread_alike_carry_no_information():
    found = specialisation(torch.tensor([[2, 2, 0], [1, 1, 0]]))
    assert found.nmi == pytest.approx(0.0, abs=1e-12)
    assert not found.collapsed and not found.separated  # both favour expert 0 (the first tie)


def test_a_known_mutual_information():
    # two labels, two experts: label 0 always expert 0; label 1 half and half
    # joint = [[1/2, 0], [1/4, 1/4]]: H(L) = log 2, H(E) = H(3/4, 1/4), I = H(E) - H(E|L)
    # H(E|L) = 1/2 * log 2 (label 1's coin)
    h_label = math.log(2)
    h_expert = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mutual = h_expert - 0.5 * math.log(2)
    found = specialisation(torch.tensor([[2, 0], [1, 1]]))
    assert found.nmi == pytest.approx(2 * mutual / (h_label + h_expert), rel=1e-12)
    assert found.separated is False  # label 1's tie goes to expert 0, label 0's favourite


def test_labels_without_picks_are_left_out_and_one_label_has_no_figure():
    with_empty = specialisation(torch.tensor([[4, 0], [0, 0], [0, 4]]))
    assert with_empty.nmi == pytest.approx(1.0)
    assert with_empty.experts == (0, -1, 1)
    alone = specialisation(torch.tensor([[3, 1]]))
    assert math.isnan(alone.nmi) and not alone.collapsed and alone.separated


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 20), min_size=4, max_size=4), min_size=2, max_size=5).filter(
        lambda rows: sum(1 for r in rows if sum(r) > 0) >= 2
    ),
    st.permutations(range(4)),
    st.integers(1, 5),
)
def test_nmi_ignores_the_names_of_experts_and_labels_and_the_scale(rows, order, scale):
    counts = torch.tensor(rows)
    found = specialisation(counts)
    assert 0.0 <= found.nmi <= 1.0
    assert specialisation(counts[:, list(order)]).nmi == pytest.approx(found.nmi, abs=1e-9)
    assert specialisation(counts.flip(0)).nmi == pytest.approx(found.nmi, abs=1e-9)
    assert specialisation(counts * scale).nmi == pytest.approx(found.nmi, abs=1e-9)
    assert found.dead == int((counts.sum(0) == 0).sum())


def test_specialisation_refuses_what_is_not_a_count_table():
    with pytest.raises(InputError, match=re.escape("expected counts of shape (L, N), got (3)")):
        specialisation(torch.tensor([1, 2, 3]))
    with pytest.raises(InputError, match=r"expected finite non-negative counts, got \[\[1, -1\]"):
        specialisation(torch.tensor([[1, -1], [0, 2]]))


def test_the_warning_names_each_layer_that_does_not_specialise():
    good = specialisation(torch.tensor([[3, 0], [0, 3]]))
    shared = specialisation(torch.tensor([[3, 2], [3, 2]]))
    collapsed = specialisation(torch.tensor([[3, 0], [3, 0]]))
    assert collapse_warning({"a": good}) is None
    text = collapse_warning({"a": good, "b": shared, "c": collapsed})
    assert text is not None
    assert "a (" not in text
    assert "b (degradations share their most used expert)" in text
    assert "c (collapsed: one expert takes nearly every image)" in text
    assert "routing_weight" in text


# -- the routing term ------------------------------------------------------------------------


def test_routing_term_is_log_n_for_a_uniform_router_and_zero_for_a_certain_one():
    uniform = topk_route(torch.zeros(3, 5), top_k=1)
    assert label_routing_loss(uniform, torch.tensor([0, 3, 4])).item() == pytest.approx(math.log(5))
    certain = topk_route(torch.tensor([[60.0, 0.0], [0.0, 60.0], [60.0, 0.0]]), top_k=1)
    # labels 0, 1 and 2: label 2 shares expert 0 with label 0 (2 mod 2)
    assert label_routing_loss(certain, torch.tensor([0, 1, 2])).item() == pytest.approx(
        0.0, abs=1e-12
    )
    wrong = label_routing_loss(certain, torch.tensor([1, 0, 1]))
    assert wrong.item() == pytest.approx(60.0, rel=1e-4)


def test_routing_term_trains_the_router_towards_the_labels_expert():
    logits = torch.zeros(4, 3, requires_grad=True)
    loss = label_routing_loss(topk_route(logits, top_k=1), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert logits.grad is not None
    for row, label in enumerate([0, 1, 2, 0]):  # the label's logit goes up, the others down
        assert logits.grad[row, label] < 0
        assert all(logits.grad[row, e] > 0 for e in range(3) if e != label)


def test_routing_term_refuses_labels_that_are_not_one_integer_per_sample():
    routing = topk_route(torch.zeros(2, 3), top_k=1)
    with pytest.raises(InputError, match=re.escape("expected labels of shape (2), got (3)")):
        label_routing_loss(routing, torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match=r"expected integer labels, got torch\.float32"):
        label_routing_loss(routing, torch.tensor([0.0, 1.0]))


def test_routing_term_refuses_a_bad_table_of_experts_naming_itself():
    routing = topk_route(torch.zeros(2, 3), top_k=1)
    labels = torch.tensor([0, 1])
    with pytest.raises(InputError, match=r"^label_routing_loss: expected labels of shape \(2\)"):
        label_routing_loss(routing, labels[:1])
    with pytest.raises(InputError, match=r"^label_routing_loss: expected experts of shape \(L\)"):
        label_routing_loss(routing, labels, experts=torch.tensor([[0, 1]]))
    with pytest.raises(InputError, match=r"^label_routing_loss: expected an integer table"):
        label_routing_loss(routing, labels, experts=torch.tensor([0.0, 1.0]))


def test_routing_term_with_a_table_of_experts_is_the_mean_negative_log_of_their_weights():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.2, 0.2, 0.1], [0.25, 0.25, 0.4, 0.1]])
    routing = topk_route(probs.log(), top_k=1)
    experts = torch.tensor([3, 0, 2])  # label l's expert is experts[l]
    loss = label_routing_loss(routing, torch.tensor([0, 1, 1]), experts=experts)
    expected = -(math.log(0.4) + math.log(0.5) + math.log(0.25)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_routing_term_of_low_precision_probabilities_is_float32():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.2, 0.2, 0.1]])
    routing = topk_route(probs.log().bfloat16(), top_k=1)
    loss = label_routing_loss(routing, torch.tensor([3, 1]))
    assert loss.dtype == torch.float32
    weights = routing.probs.float()[[0, 1], [3, 1]]
    assert loss.item() == pytest.approx(-weights.log().mean().item(), rel=1e-6)


def test_balance_loss_counts_each_of_the_k_picks_of_a_sample_once():
    # two samples, top-2 of four experts: picks {0, 1} and {0, 2}, so the fractions of the
    # B * k = 4 picks are (1/2, 1/4, 1/4, 0); the mean probabilities are explicit
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.4, 0.1, 0.3, 0.2]])
    indices = torch.tensor([[0, 1], [0, 2]])
    routing = Routing(probs, torch.zeros_like(probs), indices)
    mean = probs.mean(dim=0).tolist()
    expected = 4 * (0.5 * mean[0] + 0.25 * mean[1] + 0.25 * mean[2])
    assert load_balance_loss(routing).item() == pytest.approx(expected, rel=1e-6)


def test_objective_adds_the_routing_term_only_with_labels():
    torch.manual_seed(0)
    net = PromptedUNet()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    objective = CPLObjective(weight=0.0, routing_weight=0.5)
    parts = objective(net, x, y, labels)
    with record_routing(net) as log:
        net(x)
    expected = torch.stack([label_routing_loss(r, labels) for r in log]).mean()
    assert parts.routing.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts.loss.item() == pytest.approx(parts.l1.item() + 0.5 * expected.item(), rel=1e-6)
    unlabelled = objective(net, x, y)
    assert unlabelled.routing.item() == 0.0
    assert unlabelled.loss.item() == pytest.approx(unlabelled.l1.item(), rel=1e-6)
    with pytest.raises(InputError, match=r"expected routing_weight to be"):
        CPLObjective(routing_weight=-1.0)


# -- fixed experts ---------------------------------------------------------------------------


def test_fixed_experts_route_to_the_given_experts_at_their_own_weights():
    torch.manual_seed(0)
    net = PromptedUNet()
    x = torch.rand(3, 3, 16, 16)
    with record_routing(net) as free:
        net(x)
    given_experts = {"prompt_mid": torch.tensor([4, 0, 2]), "prompt_dec": 1}
    with fixed_experts(net, given_experts), record_routing(net) as log:
        out = net(x)
    assert log.names == free.names
    mid, dec = log
    assert mid.indices.flatten().tolist() == [4, 0, 2]
    assert dec.indices.flatten().tolist() == [1, 1, 1]
    for routing in (mid, dec):  # the weight of a fixed expert is the router's own
        chosen = routing.weights.gather(-1, routing.indices)
        assert torch.equal(chosen, routing.probs.gather(-1, routing.indices))
        assert int((routing.weights != 0).sum()) == 3
    assert torch.equal(mid.probs, free[0].probs)  # the router itself runs as usual
    with record_routing(net) as after:  # the flag is gone on exit
        again = net(x)
    assert torch.equal(after[1].indices, free[1].indices)
    assert not torch.equal(again, out) or torch.equal(after[0].indices, mid.indices)


def test_fixed_experts_are_restored_after_an_exception_and_check_their_input():
    net = PromptedUNet()
    with pytest.raises(RuntimeError), fixed_experts(net, {"prompt_dec": 0}):
        raise RuntimeError
    assert all(layer._fixed is None for layer in net.modules()
               if isinstance(layer, SparsePrompt))  # fmt: skip
    with pytest.raises(InputError, match=r"among \['prompt_dec', 'prompt_mid'\], got 'prompt'"):
        with fixed_experts(net, {"prompt": 0}):
            pass
    expected = "expected experts in [0, 4] for 'prompt_dec', got [5]"
    with pytest.raises(InputError, match=re.escape(expected)):
        with fixed_experts(net, {"prompt_dec": 5}):
            pass
    expected = "expected an int or an integer tensor for 'prompt_dec', got float"
    with pytest.raises(InputTypeError, match=expected):
        with fixed_experts(net, {"prompt_dec": 1.0}):
            pass
    expected = "expected experts for 1 or 2 samples (the batch this layer routes), got 3"
    with pytest.raises(InputError, match=re.escape(expected)):
        with fixed_experts(net, {"prompt_dec": torch.tensor([0, 1, 2])}):
            net(torch.rand(2, 3, 16, 16))


# -- the swap cost ---------------------------------------------------------------------------


class BrightnessExperts(nn.Module):
    """``x + prompt(x)``: dark images route to expert 1, bright ones to expert 0, softly.

    The router reads the mean brightness ``b`` (over three channels) with logits
    ``l_0 = (b - 0.5) / 0.3 = -l_1``, so a flat image of 0.2 has ``l = (-1, 1)`` and one of 0.8
    ``l = (1, -1)``. Expert ``e``'s bank is the constant ``offsets[e]`` and the conv is the
    identity, so under expert ``e`` an image ``x`` becomes ``x + p_e(x) * offsets[e]``.
    """

    def __init__(self, offsets=(0.2, 0.1)) -> None:
        super().__init__()
        self.prompt = SparsePrompt(dim=3, prompt_dim=3, num_prompts=2, prompt_size=2)
        with torch.no_grad():
            self.prompt.router.weight.zero_()
            self.prompt.router.weight[0] = 1 / (3 * 0.3)
            self.prompt.router.weight[1] = -1 / (3 * 0.3)
            self.prompt.router.bias.copy_(torch.tensor([-0.5 / 0.3, 0.5 / 0.3]))
            for e, offset in enumerate(offsets):
                self.prompt.prompts[e] = offset
            self.prompt.conv.weight.zero_()
            for c in range(3):
                self.prompt.conv.weight[c, c, 1, 1] = 1.0

    def forward(self, x):
        return x + self.prompt(x)


def shift_psnr(shift):
    return 20 * math.log10(1 / abs(shift))


def test_a_known_swap_gives_a_known_psnr():
    x = torch.tensor([0.2, 0.2, 0.8]).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    labels = [0, 0, 1]  # label 0: dark images, label 1: a bright one
    effect = prompt_effect(BrightnessExperts(), x, x, labels, names=["dark", "bright"])
    sure, unsure = torch.tensor([1.0, -1.0]).softmax(0).tolist()  # 0.881, 0.119
    # own: dark -> expert 1 at weight `sure`, bright -> expert 0 at `sure`
    assert effect.own["dark"] == pytest.approx(shift_psnr(sure * 0.1), abs=1e-4)
    assert effect.own["bright"] == pytest.approx(shift_psnr(sure * 0.2), abs=1e-4)
    # swap: each gets the other's expert, at the router's weight for it (`unsure`)
    assert effect.swap["dark"] == pytest.approx(shift_psnr(unsure * 0.2), abs=1e-4)
    assert effect.swap["bright"] == pytest.approx(shift_psnr(unsure * 0.1), abs=1e-4)
    assert effect.swap_cost["dark"] == pytest.approx(
        effect.own["dark"] - effect.swap["dark"], abs=1e-9
    )
    assert effect.specialisation["prompt"].nmi == pytest.approx(1.0)
    assert effect.specialisation["prompt"].separated
    row = effect.to_dict()
    assert row["average"]["swap_cost"] == pytest.approx(effect.average("swap_cost"))
    assert row["specialisation"]["prompt"]["separated"] is True


def test_after_a_collapse_a_swap_changes_nothing():
    torch.manual_seed(0)
    net = PromptedUNet()
    with torch.no_grad():  # every router sends every image to expert 3
        for layer in net.modules():
            if isinstance(layer, SparsePrompt):
                layer.router.weight.zero_()
                layer.router.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))
    clean = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    degraded = (clean + 0.1).clamp(0, 1)
    effect = prompt_effect(net, degraded, clean, [0, 1, 2, 0, 1, 2])
    assert effect.swap == effect.own
    assert effect.average("swap_cost") == 0.0
    assert effect.average("cost") != 0.0  # a negative prompt still changes the output
    for found in effect.specialisation.values():
        assert found.collapsed and found.nmi == 0.0 and found.dead == 4
    table = effect.table()
    assert "| prompt_mid | 0.00 | 4 | yes | no |" in table
    assert table.splitlines()[-1].startswith("Warning: the experts do not specialise at ")


def test_one_degradation_has_no_swap():
    x = torch.rand(2, 3, 8, 8)
    effect = prompt_effect(BrightnessExperts(), x, x, [0, 0])
    assert math.isnan(effect.swap["0"]) and math.isnan(effect.average("swap_cost"))


# -- one default, one value ------------------------------------------------------------------


def test_the_objective_the_trainer_and_the_docs_share_their_defaults():
    from pathlib import Path

    from contrastive_prompts.app.building import build_objective
    from contrastive_prompts.app.config import RECIPES, TrainConfig
    from contrastive_prompts.core.objective import ROUTING_WEIGHT

    config, objective = TrainConfig(), CPLObjective()
    assert config.routing_weight == objective.routing_weight == ROUTING_WEIGHT > 0
    assert config.cpr_weight == objective.weight
    assert config.num_negatives == objective.num_negatives
    assert config.balance_weight == objective.balance_weight
    assert config.use_labels == objective.label_negatives
    assert RECIPES["demo"].routing_weight == ROUTING_WEIGHT
    assert build_objective(config, num_labels=5, device="cpu").routing_weight == ROUTING_WEIGHT
    guide = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert f"| `routing_weight` | {ROUTING_WEIGHT:g} |" in guide
