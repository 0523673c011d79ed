"""CPL for any network: negative mode, routing records, negatives at decoder cost, add_prompts."""

import copy
import logging
import os
import pickle
import socket
from collections import Counter

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import (
    CPLObjective,
    InputError,
    PromptStage,
    SparsePrompt,
    SparsePromptIR,
    add_prompts,
    forward_with_negatives,
    negative_prompts,
    record_routing,
    remove_prompts,
)
from contrastive_prompts.core import negative_route, negatives_reuse, prompt_layers

from .networks import PlainUNet, PromptedUNet, PromptFirst


@pytest.fixture(scope="module")
def unet() -> PromptedUNet:
    torch.manual_seed(0)
    return PromptedUNet()


def naive_negatives(model, x, num_negatives, seed, labels=None, chunk_size=None):
    """A full forward under negative_prompts per chunk of rows: the slow reference."""
    batch = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(batch * num_negatives) % batch
    size = -(-(chunk_size or rows.numel()) // batch) * batch  # whole copies of the batch
    pieces = []
    for index in rows.split(size):
        chunk_labels = None if labels is None else labels[index]
        with negative_prompts(model, generator=generator, labels=chunk_labels):
            pieces.append(model(x[index]))
    return torch.cat(pieces).view(num_negatives, batch, *x.shape[1:]).transpose(0, 1)


# -- negative_prompts ----------------------------------------------------------------------------


def test_negative_mode_reaches_every_layer_at_any_depth():
    torch.manual_seed(0)
    inner = SparsePrompt(dim=4, prompt_dim=2, prompt_size=2)
    model = nn.ModuleDict({"a": nn.Sequential(nn.Identity(), inner), "b": PromptedUNet()})
    assert list(prompt_layers(model)) == ["a.1", "b.prompt_mid", "b.prompt_dec"]
    x = torch.rand(3, 4, 5, 5)
    with negative_prompts(model, generator=torch.Generator().manual_seed(1)):
        negative = model["a"](x)
    # the closed form: the layer's negative route of its own routing, rendered
    draw = negative_route(inner.route(x), generator=torch.Generator().manual_seed(1))
    expected = inner.render(draw.weights, x.shape[-2:])
    assert torch.equal(negative, expected)
    assert not torch.equal(negative, inner(x))
    assert not negative.requires_grad


def test_negative_mode_is_restored_on_exit_on_error_and_when_nested(unet):
    x = torch.rand(2, 3, 16, 16)
    own = unet(x)

    def negatives(seed):
        """The first negative pass drawn from a fresh generator of ``seed``: the reference."""
        with negative_prompts(unet, generator=torch.Generator().manual_seed(seed)):
            return unet(x)

    outer, inner = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with negative_prompts(unet, generator=outer):
        with negative_prompts(unet, generator=inner):
            in_inner = unet(x)
        after_inner = unet(x)
    assert torch.equal(in_inner, negatives(2))  # the innermost block's generator applies...
    assert torch.equal(after_inner, negatives(1))  # ...and the outer one's again after it
    assert not torch.equal(negatives(1), negatives(2)) and not torch.equal(negatives(1), own)
    with pytest.raises(RuntimeError, match="boom"), negative_prompts(unet):
        raise RuntimeError("boom")
    restored = unet(x)  # after an error and after the blocks: the network's own prompts
    assert torch.equal(restored, own)
    assert restored.requires_grad and torch.is_grad_enabled()


def test_negative_mode_refuses_models_it_cannot_serve():
    with pytest.raises(
        InputError, match=r"expected a model containing SparsePrompt layers, got Co"
    ):
        with negative_prompts(nn.Conv2d(3, 3, 1)):
            pass
    with pytest.raises(InputError, match=r"top_k == num_prompts in \['prompt_mid', 'prompt_dec'\]"):
        with negative_prompts(PromptedUNet(top_k=5)):
            pass


def _ddp_negatives(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=1)
    torch.manual_seed(0)
    model = PromptedUNet()
    wrapped = nn.parallel.DistributedDataParallel(model)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with negative_prompts(wrapped, generator=torch.Generator().manual_seed(1)):
        through_ddp = wrapped(x)
    with negative_prompts(model, generator=torch.Generator().manual_seed(1)):
        direct = model(x)
    torch.save({"ddp": through_ddp, "direct": direct}, out)
    dist.destroy_process_group()


def test_negative_mode_through_distributed_data_parallel(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_negatives, args=(port, str(tmp_path / "n.pt")), nprocs=1)
    result = torch.load(tmp_path / "n.pt")
    assert torch.equal(result["ddp"], result["direct"])


# -- record_routing -------------------------------------------------------------------------------


def test_routing_is_recorded_in_call_order_with_names(unet):
    x = torch.rand(3, 3, 16, 16)
    with record_routing(unet) as outer:
        with record_routing(unet) as inner:
            unet(x)
        unet(x)
    assert inner.names == ["prompt_mid", "prompt_dec"]
    assert outer.names == ["prompt_mid", "prompt_dec"] * 2
    mid = unet.prompt_mid.route(
        unet.enc2(nn.functional.avg_pool2d(unet.act(unet.enc1(x)), 2)) + 0.5
    )
    assert torch.equal(inner[0].indices, mid.indices)
    assert inner[0].probs.requires_grad  # a balance loss can flow through it
    with record_routing(unet) as log, negative_prompts(unet):
        unet(x)
    assert len(log) == 0  # negatives are not logged
    unet(x)  # a closed log records nothing more
    assert (len(inner), len(outer), len(log)) == (2, 4, 0)


# -- forward_with_negatives on networks that are not the reference model ------------------------


def test_negative_pass_runs_nothing_that_ran_before_the_first_prompt(unet):
    x = torch.rand(2, 3, 16, 16)
    forward_with_negatives(unet, x, num_negatives=3)  # the first call measures the batch axes
    generator = torch.Generator().manual_seed(5)
    runs: Counter[str] = Counter()
    handles = [
        m.register_forward_hook(lambda m, a, o, name=name: runs.update([name]))
        for name, m in unet.named_modules()
        if name
    ]
    try:
        out = forward_with_negatives(unet, x, num_negatives=3, generator=generator)
    finally:
        for handle in handles:
            handle.remove()
    assert out.negatives.shape == (2, 3, 3, 16, 16)
    # what was served is what full passes make
    torch.testing.assert_close(out.negatives, naive_negatives(unet, x, 3, seed=5))
    assert runs["enc1"] == 1  # the positive pass only: served to the negatives, hooks not run
    assert runs["enc2"] == 2  # its output was changed in place afterwards: run again
    assert runs["act"] == 3  # shared: its encoder call is served, its decoder calls run
    assert runs["dec"] == runs["prompt_mid"] == runs["out"] == 2
    reuse = negatives_reuse(unet, x, num_negatives=3)
    assert reuse.served == ("enc1", "act") and reuse.full_passes is None
    assert dict(reuse.rerun)["enc2"] == "an in-place operation changed its output after it returned"


@given(
    batch=st.integers(1, 3),
    num_negatives=st.integers(1, 3),
    chunk=st.sampled_from([None, 1, 2, 5]),
    with_labels=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_negatives_equal_the_naive_way(unet, batch, num_negatives, chunk, with_labels, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 12, 16, generator=g)
    labels = torch.randint(0, 3, (batch,), generator=g) if with_labels else None
    generator = torch.Generator().manual_seed(seed)
    fast = forward_with_negatives(
        unet, x, num_negatives=num_negatives, labels=labels, chunk_size=chunk, generator=generator
    )
    slow = naive_negatives(unet, x, num_negatives, seed, labels=labels, chunk_size=chunk)
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.output, unet(x))
    assert fast.routing.names == ["prompt_mid", "prompt_dec"]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the encoder is still reused
@given(batch=st.integers(1, 3), chunk=st.sampled_from([None, 1, 4]), seed=st.integers(0, 2**16))
def test_negatives_under_fixed_experts_avoid_them_and_equal_the_naive_way(unet, batch, chunk, seed):
    from contrastive_prompts.core import fixed_experts

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 12, 16, generator=g)
    experts = torch.randint(0, 5, (batch,), generator=g)
    fixed = {name: experts for name in prompt_layers(unet)}
    with fixed_experts(unet, fixed):
        fast = forward_with_negatives(
            unet,
            x,
            num_negatives=3,
            chunk_size=chunk,
            generator=torch.Generator().manual_seed(seed),
        )
        slow = naive_negatives(unet, x, 3, seed, chunk_size=chunk)
        with negative_prompts(unet, generator=torch.Generator().manual_seed(seed)):
            drawn = [
                unet.get_submodule(name)(
                    torch.rand(3 * batch, layer.dim, 4, 4), return_routing=True
                )
                for name, layer in prompt_layers(unet).items()
            ]
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-5, atol=1e-6)
    for _, routing in drawn:  # three copies of the batch, none given its own expert
        assert not bool((routing.indices == experts.repeat(3)[:, None]).any())


def test_a_prompt_first_network_gets_the_naive_cost():
    torch.manual_seed(0)
    model, x = PromptFirst(), torch.rand(2, 3, 8, 8)
    fast = forward_with_negatives(
        model, x, num_negatives=2, generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(fast.negatives, naive_negatives(model, x, 2, seed=4))


def test_the_reference_model_equals_the_naive_way():
    torch.manual_seed(0)
    model, x = SparsePromptIR("tiny"), torch.rand(2, 3, 20, 12)
    fast = forward_with_negatives(
        model, x, num_negatives=2, chunk_size=2, generator=torch.Generator().manual_seed(5)
    )
    slow = naive_negatives(model, x, 2, seed=5, chunk_size=2)
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-5, atol=1e-6)
    assert fast.routing.names == ["prompt3", "prompt2", "prompt1"]


def test_forward_with_negatives_checks_its_arguments(unet):
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(InputError, match="expected a model containing SparsePrompt layers"):
        forward_with_negatives(PlainUNet(), x, num_negatives=1)
    with pytest.raises(
        InputError, match=r"expected num_negatives to be an integer in \[1, 64\], got 0"
    ):
        forward_with_negatives(unet, x, num_negatives=0)
    with pytest.raises(InputError, match="expected labels of shape \\(2\\), got \\(3\\)"):
        forward_with_negatives(unet, x, num_negatives=1, labels=torch.zeros(3, dtype=torch.long))

    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = PromptFirst()

        def forward(self, x):
            return self.inner(x), 0

    with pytest.raises(InputError, match="expected model\\(x\\) to return a tensor of batch 2"):
        forward_with_negatives(TupleOut(), x, num_negatives=1)


# -- the objective on any network -----------------------------------------------------------------


def test_objective_trains_a_network_of_ones_own(unet):
    degraded, clean = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 0, 1])
    objective = CPLObjective(num_negatives=2, balance_weight=0.1, num_labels=2)
    parts = objective(unet, degraded, clean, labels, generator=torch.Generator().manual_seed(0))
    parts.loss.backward()
    assert parts.cpr.item() < 0 and parts.balance.item() >= 1 - 1e-6
    assert parts.stages == ("prompt_mid", "prompt_dec")
    assert [tuple(c.shape) for c in parts.expert_counts] == [(2, 5), (2, 5)]
    assert [int(c.sum()) for c in parts.expert_counts] == [4, 4]
    assert unet.prompt_mid.router.weight.grad is not None
    unet.zero_grad()


def test_objective_needs_prompt_layers_only_for_negatives():
    degraded, clean = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    with pytest.raises(InputError, match="expected a model containing SparsePrompt layers"):
        CPLObjective()(PlainUNet(), degraded, clean)
    plain = CPLObjective(weight=0.0)(PlainUNet(), degraded, clean)
    assert plain.expert_counts == () and plain.cpr.item() == 0
    with pytest.raises(InputError, match="expected model\\(degraded\\) to return a tensor of the"):
        CPLObjective(weight=0.0)(nn.Conv2d(3, 1, 1), degraded, clean)


# -- add_prompts ----------------------------------------------------------------------------------


def test_add_prompts_gives_a_plain_network_prompt_stages_that_start_as_the_identity():
    torch.manual_seed(0)
    model = PlainUNet()
    x = torch.rand(2, 3, 16, 16)
    before = model(x)
    stages = {
        "decoder.0": {"dim": 16, "prompt_size": 4},
        "decoder.1": {"dim": 8, "prompt_dim": 4, "num_heads": 2},
    }
    decoder = model.decoder[0]
    same = add_prompts(model, stages)
    assert same is model and model.decoder[0] is decoder  # nothing moved
    assert isinstance(model.decoder[0].prompt_stage, PromptStage)
    assert list(prompt_layers(model)) == [
        "decoder.0.prompt_stage.prompt",
        "decoder.1.prompt_stage.prompt",
    ]
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    seed = 3
    fast = forward_with_negatives(
        model, x, num_negatives=2, generator=torch.Generator().manual_seed(seed)
    )
    torch.testing.assert_close(fast.negatives, naive_negatives(model, x, 2, seed))


class Gated(nn.Module):
    """A block that is no container: add_prompts runs its stage from a forward hook."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, 2 * width, 1)
        self.norm = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return self.norm(a * b)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Gated(8), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)))
        self.alias = self.blocks[0]  # one module, two names
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@pytest.mark.parametrize("host", ["blocks.0", "blocks.1", "alias"])
def test_add_prompts_keeps_every_key_and_the_way_back_restores_the_plain_network(host):
    torch.manual_seed(0)
    plain, x = Net(), torch.rand(2, 3, 8, 8)
    plain.eval()
    pretrained = {k: v.clone() for k, v in plain.state_dict().items()}
    names = [name for name, _ in plain.named_parameters()]
    before = plain(x)

    model = add_prompts(Net(), {host: {"prompt_size": 4}}, example_input=x)  # dim found: 8
    model.eval()
    missing, unexpected = model.load_state_dict(pretrained, strict=False)
    assert not unexpected and missing and all(".prompt_stage." in k for k in missing)
    assert [n for n, _ in model.named_parameters() if ".prompt_stage." not in n] == names
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # pretrained, unchanged

    with torch.no_grad():  # training moves the stage: the output changes
        for name, p in model.named_parameters():
            if ".prompt_stage." in name:
                p.normal_(std=0.5)
    assert not torch.allclose(model(x), before)
    weights = {k: v for k, v in model.state_dict().items() if ".prompt_stage." not in k}
    Net().load_state_dict(weights)  # strict: the prompted network's weights minus the stages

    assert remove_prompts(model) is model and not prompt_layers(model)
    assert list(model.state_dict()) == list(pretrained)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


class OwnStage(nn.Module):
    """A network that calls a PromptStage of its own, under the name add_prompts uses."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.prompt_stage = PromptStage(dim=8, prompt_size=4)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.prompt_stage(self.stem(x))))


def test_remove_prompts_takes_out_only_what_add_prompts_added_and_names_it(caplog):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    plain = OwnStage().eval()
    with torch.no_grad():  # the user's stage is trained: it changes the output
        plain.prompt_stage.fusion.proj.weight.normal_()
    before, keys = plain(x), list(plain.state_dict())
    model = add_prompts(copy.deepcopy(plain), {"body": {"dim": 8, "prompt_size": 4}})
    with caplog.at_level(logging.INFO, logger="contrastive_prompts"):
        shared = remove_prompts(copy.deepcopy(model))  # the documented way to share weights
    assert "removed the prompt stages of ['body']" in caplog.text
    assert isinstance(shared.prompt_stage, PromptStage)
    assert "prompt_stage" not in shared.body._modules
    assert list(shared.state_dict()) == keys
    torch.testing.assert_close(shared(x), before, rtol=0, atol=0)
    kept = r"without any .* own PromptStage modules stay: \['prompt_stage'\]"
    with pytest.raises(InputError, match=kept):
        remove_prompts(shared)  # nothing left that add_prompts added: said, nothing changed
    assert isinstance(shared.prompt_stage, PromptStage)
    with pytest.raises(InputError, match="without any"):
        remove_prompts(nn.Conv2d(3, 3, 1))
    # the mark survives a copy by pickling
    restored = pickle.loads(pickle.dumps(model))
    remove_prompts(restored)
    assert list(restored.state_dict()) == keys


def test_a_stage_prompts_every_call_of_its_module_and_copies_run_their_own():
    torch.manual_seed(0)
    model = add_prompts(Net(), {"blocks.0": {"dim": 8, "prompt_size": 4}}).eval()
    assert model.alias.prompt_stage is model.blocks[0].prompt_stage
    with torch.no_grad():
        model.blocks[0].prompt_stage.fusion.proj.weight.normal_()
    x = torch.rand(2, 3, 8, 8)
    with record_routing(model) as log:
        out = model(x)
    assert log.names == ["blocks.0.prompt_stage.prompt"]
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(x), out)
    with torch.no_grad():
        twin.blocks[0].prompt_stage.fusion.proj.weight.zero_()  # the copy's own stage
    assert not torch.allclose(twin(x), out) and torch.equal(model(x), out)
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), out)


def test_cpl_moves_the_added_prompts():
    torch.manual_seed(0)
    model = add_prompts(PlainUNet(), {"decoder.1": {"dim": 8, "prompt_size": 4}})
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = CPLObjective(num_negatives=1, weight=0.1)
    g = torch.Generator().manual_seed(0)
    degraded, clean = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    for _ in range(3):
        optimiser.zero_grad()
        objective(model, degraded, clean, generator=g).loss.backward()
        optimiser.step()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad(), negative_prompts(model, generator=torch.Generator().manual_seed(1)):
        negative = model(x)
    assert not torch.equal(negative, model(x))  # the prompt now steers the output


class ChildrenInTurn(nn.Module):
    """Calls its children one after the other, as nn.Sequential does, but is none."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        return x


def test_add_prompts_bad_requests():
    model = PlainUNet()
    with pytest.raises(
        InputError, match=r"PlainUNet .*, got 'decoders.1'; did you mean 'decoder.1'"
    ):
        add_prompts(model, {"decoders.1": {"dim": 8}})
    with pytest.raises(InputError, match=r"expected options with 'dim' \(the output channels"):
        add_prompts(model, {"decoder.1": {"prompt_size": 4}})
    with pytest.raises(InputError, match=r"expected options among .* got \['heads'\]"):
        add_prompts(model, {"decoder.1": {"dim": 8, "heads": 2}})
    with pytest.raises(InputError, match=r"got 'decoder.1.0' inside \['decoder.1'\]"):
        add_prompts(model, {"decoder.1": {"dim": 8}, "decoder.1.0": {"dim": 16}})
    with pytest.raises(
        InputError, match=r"^Attention: expected dim divisible by num_heads=5, got dim=12$"
    ):
        add_prompts(model, {"decoder.1": {"dim": 8, "num_heads": 5}})
    with pytest.raises(
        InputError, match=r"^SparsePrompt: expected top_k to be an integer in \[1, 3\], got 4$"
    ):
        add_prompts(model, {"decoder.1": {"dim": 8, "num_prompts": 3, "top_k": 4}})
    with pytest.raises(InputError, match=r"expected dim=8 for 'decoder.1' \(its output on "):
        add_prompts(model, {"decoder.1": {"dim": 9}}, example_input=torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match=r"got 'decoder', a ModuleList: name one of its entries"):
        add_prompts(model, {"decoder": {"dim": 8}})
    net = Net()
    with pytest.raises(InputError, match=r"got 'alias' and 'blocks.0', two names of one module"):
        add_prompts(net, {"blocks.0": {"dim": 8}, "alias": {"dim": 8}})
    assert not prompt_layers(PlainUNet()) and not prompt_layers(model)  # nothing was changed
    add_prompts(net, {"alias": {"dim": 8}})
    with pytest.raises(InputError, match=r"got 'blocks.0', which is or has one already"):
        add_prompts(net, {"blocks.0": {"dim": 8}})
    with pytest.raises(InputError, match=r"the prompted module's output of shape \(B, 9"):
        add_prompts(PlainUNet(), {"decoder.1": {"dim": 9, "num_heads": 1}})(torch.rand(1, 3, 8, 8))
    odd = add_prompts(ChildrenInTurn(), {"b": {"dim": 8}})
    odd(torch.rand(1, 3, 4, 4))  # a leaf host is fine
    odd = add_prompts(nn.Sequential(ChildrenInTurn()), {"0": {"dim": 8}})
    with pytest.raises(InputError, match=r"got a call from the host's forward \(it calls its ch"):
        odd(torch.rand(1, 3, 4, 4))


# -- the trainer on any network -------------------------------------------------------------------


def own_trainer(out_dir, steps=4, **options):
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.app.data import SyntheticDataset, degraded_copies
    from contrastive_prompts.app.train import Trainer

    torch.manual_seed(0)
    model = add_prompts(PlainUNet(), {"decoder.1": {"dim": 8, "prompt_size": 4}})
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 24, 24, generator=g) for _ in range(3)]
    config = TrainConfig(
        steps=steps,
        batch_size=2,
        crop=16,
        num_negatives=2,
        log_every=1,
        warmup_steps=1,
        lr=1e-2,
        val_every=2,
        val_crop=16,
        use_labels=True,
        balance_weight=0.01,
        out_dir=str(out_dir),
        **options,
    )
    train = SyntheticDataset(images, config.mix, crop_size=16)
    return Trainer(
        config,
        model=model,
        train_data=train,
        val_data=degraded_copies(images[:1], config.mix, crop=16),
    )


def test_trainer_trains_resumes_and_validates_a_network_of_ones_own(tmp_path, monkeypatch):
    from contrastive_prompts.app.checkpoints import (
        CheckpointError,
        load_checkpoint_model,
        read_checkpoint,
    )

    straight = own_trainer(tmp_path / "a")
    history = straight.fit()
    assert [r["stages"] for r in history][-1] == ["decoder.1.prompt_stage.prompt"]
    assert history[-1]["cpr"] < 0  # the prompt stage has moved off the identity
    assert [v["step"] for v in straight.validations] == [2, 4]
    for name in ("last.pt", "log.jsonl", "loss.png", "experts.png", "validation.png"):
        assert (tmp_path / "a" / name).is_file(), name
    first = own_trainer(tmp_path / "b")
    original = first.train_step

    def stop_after_two(*args):
        if first.step == 2:
            raise KeyboardInterrupt  # as Ctrl-C: a checkpoint is written before leaving
        return original(*args)

    monkeypatch.setattr(first, "train_step", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = own_trainer(tmp_path / "b")
    resumed.load(tmp_path / "b" / "last.pt")
    resumed.fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    for a, b in zip(resumed.ema.parameters(), straight.ema.parameters(), strict=True):
        assert torch.equal(a, b)
    state = read_checkpoint(tmp_path / "a" / "last.pt")
    assert state["model_config"] is None
    rebuilt = add_prompts(PlainUNet(), {"decoder.1": {"dim": 8, "prompt_size": 4}})
    rebuilt.load_state_dict(state["ema"])
    with pytest.raises(CheckpointError, match="holds the weights of a network of your own"):
        load_checkpoint_model(tmp_path / "a" / "last.pt")
    reference = SparsePromptIR("tiny")
    reference_trainer = own_trainer(tmp_path / "c")
    reference_trainer.model = reference
    with pytest.raises(CheckpointError, match="is for your own network, the run trains the ref"):
        reference_trainer.load(tmp_path / "a" / "last.pt")


def test_trainer_refuses_what_cannot_work_with_ones_own_network(tmp_path):
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.app.train import Trainer

    config = TrainConfig(out_dir=str(tmp_path))
    with pytest.raises(InputError, match="expected cpr_weight=0 for a model without negatives"):
        Trainer(config, model=PlainUNet())
    with pytest.raises(InputError, match="expected init_promptir=None with your own model"):
        Trainer(TrainConfig(preset="base", init_promptir="x.ckpt"), model=PromptedUNet())
    with pytest.raises(InputError, match=r"expected model to be an nn\.Module, got str"):
        Trainer(config, model="unet")


def _ddp_own_network(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    trainer = own_trainer(out_dir, steps=2)
    trainer.fit()
    torch.save(trainer.model.state_dict(), f"{out_dir}/params{rank}.pt")
    dist.destroy_process_group()


def test_ddp_trains_a_network_of_ones_own_with_cpr(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_own_network, args=(2, port, str(tmp_path)), nprocs=2)
    p0, p1 = (torch.load(tmp_path / f"params{r}.pt") for r in range(2))
    assert all(torch.equal(p0[k], p1[k]) for k in p0)  # one model, updated alike on both ranks
    assert not torch.equal(
        p0["decoder.1.prompt_stage.fusion.proj.weight"],
        torch.zeros_like(p0["decoder.1.prompt_stage.fusion.proj.weight"]),
    )
