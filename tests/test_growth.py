"""New experts for a new degradation: add_experts, only_new_experts and a growing training run.

Closed forms: a grown layer is a layer of ``N + count`` experts holding the old values; an old
expert's weight after growth is its weight before times ``1 - p_new`` (the share of the softmax
the new experts take), the only way an old output can move; a new expert's logit is the mean of
the others', never above the largest. Under ``only_new_experts`` an optimiser step (AdamW with
weight decay, even) leaves every old value bit-identical.
"""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import (
    CPLObjective,
    InputError,
    InputTypeError,
    PromptStage,
    SparsePrompt,
    SparsePromptIR,
    add_prompts,
)
from contrastive_prompts.app.building import build_model
from contrastive_prompts.app.checkpoints import load_checkpoint_model, read_checkpoint
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.degradations import make_mix
from contrastive_prompts.app.files import CheckpointError
from contrastive_prompts.app.growth import GrowthPlan, build_mix, growth_plan
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.core import (
    add_experts,
    label_routing_loss,
    only_new_experts,
    prompt_layers,
    topk_route,
)

from .networks import PlainUNet

# -- one layer ---------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_prompts=st.integers(1, 5),
    count=st.integers(1, 3),
    batch=st.integers(1, 4),
    renormalize=st.booleans(),
)
def test_grown_layer_is_a_bigger_layer_holding_the_old_values(
    seed, num_prompts, count, batch, renormalize
):
    torch.manual_seed(seed)
    options = dict(dim=6, prompt_dim=3, prompt_size=2, renormalize=renormalize)
    layer = SparsePrompt(num_prompts=num_prompts, dtype=torch.float64, **options)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(batch, 6, 5, 4, dtype=torch.float64)
    old = layer.route(x)

    assert layer.add_experts(count) == range(num_prompts, num_prompts + count)
    state = layer.state_dict()
    assert list(state) == list(before)
    for key, value in before.items():
        torch.testing.assert_close(state[key][:num_prompts] if key != "conv.weight" else state[key],
                                   value, rtol=0, atol=0)  # fmt: skip
    bigger = SparsePrompt(num_prompts=num_prompts + count, dtype=torch.float64, **options)
    bigger.load_state_dict(state)
    torch.testing.assert_close(layer(x), bigger(x), rtol=0, atol=0)

    # each new expert: the mean of the bank, a logit that is the mean of the old ones
    torch.testing.assert_close(
        layer.prompts[num_prompts:], before["prompts"].mean(0).expand(count, -1, -1, -1)
    )
    logits = layer.router(x.mean(dim=(-2, -1)))
    torch.testing.assert_close(
        logits[:, num_prompts:], logits[:, :num_prompts].mean(-1, keepdim=True).expand(-1, count)
    )
    largest = logits[:, :num_prompts].max(-1, keepdim=True).values
    assert bool((logits[:, num_prompts:] <= largest + 1e-12).all())
    grown = layer.route(x)
    # routed to its old experts (a tie with the mean, N = 1 say, may not be), an input's old
    # expert's weight moves only by the share the new experts take of the softmax
    kept = (grown.indices < num_prompts).all(-1)
    if not renormalize:
        share = grown.probs[kept, num_prompts:].sum(-1, keepdim=True)
        torch.testing.assert_close(
            grown.weights[kept, :num_prompts], old.weights[kept] * (1 - share)
        )


def test_stage_and_network_of_another_style_grow_keeping_every_key():
    net = PlainUNet()
    add_prompts(net, {"decoder.0": {"prompt_size": 4}}, example_input=torch.rand(1, 3, 16, 16))
    keys = {k: v.shape for k, v in net.state_dict().items()}
    (name,) = prompt_layers(net)
    stage = net.get_submodule(name.removesuffix(".prompt"))
    assert isinstance(stage, PromptStage)
    assert stage.add_experts(2) == range(5, 7)
    assert add_experts(net) == {name: range(7, 8)}
    grown = {k: v.shape for k, v in net.state_dict().items()}
    assert list(grown) == list(keys)
    changed = sorted(k for k in keys if grown[k] != keys[k])
    assert changed == [f"{name}.{k}" for k in ("prompts", "router.bias", "router.weight")]
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_reference_model_grows_its_configuration_and_loads_back():
    model = SparsePromptIR("tiny")
    assert model.add_experts(2) == {f"prompt{i}": range(5, 7) for i in (1, 2, 3)}
    assert model.config.num_prompts == 7
    again = SparsePromptIR("tiny", num_prompts=7)
    again.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    with pytest.raises(InputError, match="use_prompts=False"):
        SparsePromptIR("tiny", use_prompts=False).add_experts()


@pytest.mark.parametrize("count", [0, -1])
def test_add_experts_refuses_a_count_below_one(count):
    with pytest.raises(InputError, match=rf"count to be an integer >= 1, got {count}"):
        SparsePrompt(dim=4, prompt_dim=2, prompt_size=2).add_experts(count)


@pytest.mark.parametrize("count", [1.0, True, "1"])
def test_add_experts_refuses_a_count_that_is_not_an_integer(count):
    layer = SparsePrompt(dim=4, prompt_dim=2, prompt_size=2)
    with pytest.raises(InputTypeError, match="count to be an integer"):
        add_experts(layer, count)
    assert layer.num_prompts == 5


def test_add_experts_refuses_a_model_without_prompt_layers():
    with pytest.raises(InputError, match="add_experts: expected a model containing SparsePrompt"):
        add_experts(nn.Conv2d(3, 3, 1))


# -- training the new experts alone ------------------------------------------------------------


def _grown_net() -> tuple[nn.Module, dict[str, range]]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        SparsePrompt(dim=8, prompt_dim=8, prompt_size=4),
        nn.Conv2d(8, 3, 3, padding=1),
    )
    return net, add_experts(net, 2)


def test_only_new_experts_leaves_every_old_value_bit_identical_under_adamw():
    net, new = _grown_net()
    layer = net[1]
    with torch.no_grad():  # the new experts win, so their bank rows get a gradient
        layer.router.bias[5:] += 50.0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with only_new_experts(net, new) as frozen:
        optimizer = torch.optim.AdamW(frozen.param_groups, lr=0.1, weight_decay=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            net(torch.rand(4, 3, 8, 8)).square().mean().backward()
            optimizer.step()
        assert frozen.trained == 2 * (8 * 4 * 4 + 8 + 1)
    after = net.state_dict()
    for key in ("prompts", "router.weight", "router.bias"):
        old, now = before[f"1.{key}"], after[f"1.{key}"]
        assert torch.equal(now[:5], old[:5]), key
        assert not torch.equal(now[5:], old[5:]), key
    for key in before:
        if not key.startswith("1.prompts") and not key.startswith("1.router"):
            assert torch.equal(after[key], before[key]), key
    # undone on exit: every parameter trains again, and no gradient is masked
    assert all(p.requires_grad for p in net.parameters())
    net(torch.rand(2, 3, 8, 8)).square().mean().backward()
    assert bool(layer.router.weight.grad[:5].ne(0).any())


def test_only_new_experts_restores_parameters_a_user_had_frozen():
    net, new = _grown_net()
    net[0].weight.requires_grad_(False)
    only_new_experts(net, new).remove()
    assert [p.requires_grad for p in net.parameters()] == [False] + [True] * 7


@pytest.mark.parametrize(
    ("experts", "error", "match"),
    [
        ({"9": range(5, 7)}, InputError, r"names of prompt layers of Sequential, among \['1'\]"),
        ({"1": range(5, 8)}, InputError, r"experts in \[0, 6\] for '1', got \[5, 6, 7\]"),
        ({"1": [True]}, InputError, r"experts in \[0, 6\]"),
        ({"1": []}, InputError, "at least one expert to train"),
        ({"1": 5}, InputTypeError, "a sequence of experts for '1'"),
        ([("1", range(5, 7))], InputTypeError, "expected a mapping of prompt layer names"),
    ],
)
def test_only_new_experts_refuses_what_it_cannot_train(experts, error, match):
    net, _ = _grown_net()
    with pytest.raises(error, match=match):
        only_new_experts(net, experts)
    assert all(p.requires_grad for p in net.parameters())


# -- the routing term: the expert of each label ------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6), num_prompts=st.integers(1, 6))
def test_label_routing_loss_with_a_table_is_the_cross_entropy_at_the_table(
    seed, batch, num_prompts
):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_prompts, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (batch,), generator=generator)
    table = torch.randint(0, num_prompts, (4,), generator=generator)
    routing = topk_route(logits, 1)
    expected = nn.functional.cross_entropy(logits, table[labels])
    torch.testing.assert_close(label_routing_loss(routing, labels, experts=table), expected)
    modulo = torch.arange(4) % num_prompts
    torch.testing.assert_close(
        label_routing_loss(routing, labels), label_routing_loss(routing, labels, experts=modulo)
    )


def test_label_routing_loss_refuses_a_table_that_is_not_integers():
    routing = topk_route(torch.zeros(2, 3), 1)
    with pytest.raises(InputError, match=r"integer table of experts, got torch\.float32"):
        label_routing_loss(routing, torch.tensor([0, 1]), experts=torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize(
    ("table", "error", "match"),
    [
        ([0, -1], InputError, r"one integer >= 0 per label, got \[0, -1\]"),
        ([0, True], InputError, "one integer >= 0 per label"),
        ([], InputError, "one integer >= 0 per label"),
        ("01", InputTypeError, "a sequence of integers, got str"),
    ],
)
def test_objective_refuses_a_bad_label_experts_table(table, error, match):
    with pytest.raises(error, match=match):
        CPLObjective(label_experts=table)


def test_objective_checks_the_table_against_the_layers_and_the_labels():
    model, x = SparsePromptIR("tiny"), torch.rand(2, 3, 16, 16)
    with pytest.raises(InputError, match="label_experts below the 5 experts of prompt layer"):
        CPLObjective(weight=0.0, label_experts=[0, 5])(model, x, x, torch.tensor([0, 1]))
    objective = CPLObjective(weight=0.0, label_experts=[0, 4])
    with pytest.raises(
        InputError, match=r"labels in \[0, 1\] \(len\(label_experts\)=2\), got \[2\]"
    ):
        objective.check_labels(torch.tensor([0, 2]))  # where labels enter
    with pytest.raises(IndexError, match="out of bounds"):  # the call reads no label's value
        objective(model, x, x, torch.tensor([0, 2]))
    model.add_experts()
    parts = CPLObjective(weight=0.0, label_experts=[0, 5])(model, x, x, torch.tensor([1, 1]))
    with torch.no_grad():
        from contrastive_prompts.core import record_routing

        with record_routing(model) as log:
            model(x)
    expected = torch.stack([-r.probs[:, 5].log().mean() for r in log]).mean()
    torch.testing.assert_close(parts.routing, expected)


# -- a training run that grows a model ---------------------------------------------------------


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("growth") / "base"
    config = TrainConfig(steps=2, batch_size=2, crop=32, val_crop=32, out_dir=str(folder),
                         save_every=2, log_every=1)  # fmt: skip
    Trainer(config).fit()
    return config, folder / "last.pt"


def test_a_grown_run_trains_only_the_new_experts_and_resumes(base_run, tmp_path):
    base, checkpoint = base_run
    config = dataclasses.replace(
        base, out_dir=str(tmp_path / "grown"), grow_from=str(checkpoint),
        add_degradations=["low_light"], growth="experts",
    )  # fmt: skip
    trainer = Trainer(config)
    assert trainer.growth == GrowthPlan(make_mix("3task").names, 5, ("low_light",))
    assert trainer.objective.label_experts == (0, 1, 2, 3, 4, 5)
    assert trainer.mix.probs == pytest.approx([0.1] * 5 + [0.5])
    start = load_checkpoint_model(checkpoint).state_dict()
    trainer.fit()
    for weights in (trainer.model.state_dict(), trainer.ema.module.state_dict()):
        for key, value in start.items():
            assert torch.equal(weights[key][: value.shape[0]], value), key
    state = read_checkpoint(tmp_path / "grown" / "last.pt")
    assert state["model_config"]["num_prompts"] == 6
    assert state["label_names"][-1] == "low_light"
    assert load_checkpoint_model(tmp_path / "grown" / "last.pt").config.num_prompts == 6
    # resumed: the same plan is rebuilt from grow_from and the run's checkpoint fits it
    again = Trainer(dataclasses.replace(config, steps=3))
    again.load(tmp_path / "grown" / "last.pt")
    again.fit()
    assert again.step == 3


def test_a_growing_run_reads_its_checkpoint_once(base_run, tmp_path, monkeypatch):
    from contrastive_prompts.app import checkpoints, growth

    base, checkpoint = base_run
    config = dataclasses.replace(
        base, out_dir=str(tmp_path / "grown"), grow_from=str(checkpoint),
        add_degradations=["low_light"], growth="experts",
    )  # fmt: skip
    reads = []

    def counted(path):
        reads.append(path)
        return read_checkpoint(path)

    for module in (growth, checkpoints):
        monkeypatch.setattr(module, "read_checkpoint", counted)
    trainer = Trainer(config)
    assert reads == [str(checkpoint)]
    expected = load_checkpoint_model(checkpoint)
    expected.add_experts(1)
    for key, value in expected.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[key], value), key


def test_a_checkpoint_of_an_earlier_version_without_the_growth_fields_resumes(base_run, tmp_path):
    base, checkpoint = base_run
    state = read_checkpoint(checkpoint)
    for name in ("add_degradations", "grow_from", "growth"):
        del state["config"][name]
    older = tmp_path / "older.pt"
    torch.save(state, older)
    trainer = Trainer(dataclasses.replace(base, out_dir=str(tmp_path / "resumed"), steps=3))
    trainer.load(older)
    assert trainer.step == 2
    with pytest.raises(CheckpointError, match=r"add_degradations: run \['blur'\], checkpoint \[\]"):
        Trainer(dataclasses.replace(base, add_degradations=["blur"])).load(older)


def test_growth_plans_refuse_degradations_that_do_not_extend_the_checkpoints(base_run):
    base, checkpoint = base_run
    with pytest.raises(InputError, match=r"begin with the 5 the checkpoint was trained on"):
        growth_plan(dataclasses.replace(base, grow_from=str(checkpoint)))
    with pytest.raises(InputError, match=r"begin with the 5 .*got \['noise', 'rain'"):
        growth_plan(dataclasses.replace(base, grow_from=str(checkpoint), mix="5task",
                                        add_degradations=["jpeg"]))  # fmt: skip


def test_growth_refuses_a_checkpoint_of_a_network_of_ones_own(tmp_path):
    config = TrainConfig(steps=1, batch_size=1, crop=16, val_crop=16, out_dir=str(tmp_path / "own"),
                         cpr_weight=0.0, save_every=1)  # fmt: skip
    Trainer(config, model=nn.Conv2d(3, 3, 3, padding=1)).fit()
    grow = dataclasses.replace(config, grow_from=str(tmp_path / "own" / "last.pt"),
                               add_degradations=["blur"])  # fmt: skip
    with pytest.raises(InputError, match="a checkpoint of the reference model"):
        growth_plan(grow)


def test_growth_options_are_checked_where_they_enter(tmp_path):
    with pytest.raises(InputError, match=r"add_degradations: expected added degradations that the"):
        TrainConfig(add_degradations=["rain"]).validate()
    with pytest.raises(InputError, match=r"add_degradations: expected degradation name to be"):
        TrainConfig(add_degradations=["fog"]).validate()
    with pytest.raises(InputError, match=r"add_degradations: Composite: expected a part to be"):
        TrainConfig(add_degradations=["haze+fog"]).validate()
    with pytest.raises(InputError, match="grow_from or init_promptir, got both"):
        TrainConfig(preset="base", grow_from="a.pt", init_promptir="b.ckpt").validate()
    with pytest.raises(InputError, match="grow_from=None with your own model"):
        build_model(TrainConfig(grow_from="a.pt"), nn.Conv2d(3, 3, 1))


def test_a_run_with_added_degradations_and_no_checkpoint_trains_them_from_the_start():
    config = TrainConfig(add_degradations=["low_light", "blur"])
    mix = build_mix(config)
    assert mix.names == (*make_mix("3task").names, "low_light", "blur")
    assert mix.kinds[-2:] == ("low_light", "blur")
    assert mix.probs == pytest.approx([1 / 7] * 7)


def test_the_command_line_grows_a_model_and_evaluates_its_new_degradation(base_run, tmp_path):
    _, checkpoint = base_run
    out = tmp_path / "grown"
    command = [sys.executable, "-m", "contrastive_prompts"]
    done = subprocess.run(
        [*command, "train", "--grow-from", str(checkpoint), "--add-degradations", "low_light",
         "--growth", "experts", "--steps", "1", "--batch-size", "1", "--crop", "32",
         "--val-crop", "32", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the new experts of low_light and their router rows" in done.stderr
    image = tmp_path / "photo.png"
    from contrastive_prompts.app.data import sample_split, write_image

    write_image(image, sample_split()[1][0][:, :48, :48])
    done = subprocess.run(
        [*command, "evaluate", "--checkpoint", str(out / "last.pt"), "--data", str(image),
         "--add-degradations", "low_light", "--json", str(tmp_path / "scores.json"),
         "--no-prompt-effect"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert "low_light" in json.dumps(scores) and "noise_15" in json.dumps(scores)
    assert prompt_layers(load_checkpoint_model(out / "last.pt"))["prompt1"].num_prompts == 6
