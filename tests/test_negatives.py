"""CPL for any network: negative mode, routing records, negatives at decoder cost, add_prompts."""

import os
import socket

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
    prompt_layers,
    record_routing,
)

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
    size = chunk_size or rows.numel()
    if labels is not None:
        size = -(-size // batch) * batch
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
    expected = inner.negative(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(negative, expected)
    assert not torch.equal(negative, inner(x))
    assert not negative.requires_grad


def test_negative_mode_is_restored_on_exit_on_error_and_when_nested(unet):
    x = torch.rand(2, 3, 16, 16)
    own = unet(x)
    outer, inner = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with negative_prompts(unet, generator=outer):
        with negative_prompts(unet, generator=inner):
            unet(x)
        assert all(p._negative_mode.generator is outer for p in prompt_layers(unet).values())
    with pytest.raises(RuntimeError, match="boom"), negative_prompts(unet):
        raise RuntimeError("boom")
    assert all(p._negative_mode is None for p in prompt_layers(unet).values())
    assert torch.equal(unet(x), own)
    assert torch.is_grad_enabled()


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
    assert all(p._routing_logs == () for p in prompt_layers(unet).values())


# -- forward_with_negatives on networks that are not the reference model ------------------------


def test_negative_pass_runs_nothing_that_ran_before_the_first_prompt(unet):
    runs: dict[str, int] = {}

    def counting(name, forward):
        def run(*args, **kwargs):
            runs[name] = runs.get(name, 0) + 1
            return forward(*args, **kwargs)

        return run

    modules = {name: m for name, m in unet.named_modules() if name}
    for name, module in modules.items():
        module.forward = counting(name, module.forward)
    try:
        out = forward_with_negatives(unet, torch.rand(2, 3, 16, 16), num_negatives=3)
    finally:
        for module in modules.values():
            del module.forward
    assert out.negatives.shape == (2, 3, 3, 16, 16)
    assert runs["enc1"] == 1  # the positive pass only: served to the negatives
    assert runs["enc2"] == 2  # its output was changed in place afterwards: run again
    assert runs["act"] == 3  # shared: its encoder call is served, its decoder calls run
    assert runs["dec"] == runs["prompt_mid"] == runs["out"] == 2


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
    fast = forward_with_negatives(unet, x, num_negatives=num_negatives, labels=labels,
                                  chunk_size=chunk, generator=generator)  # fmt: skip
    slow = naive_negatives(unet, x, num_negatives, seed, labels=labels, chunk_size=chunk)
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.output, unet(x))
    assert fast.routing.names == ["prompt_mid", "prompt_dec"]


def test_a_prompt_first_network_gets_the_naive_cost():
    torch.manual_seed(0)
    model, x = PromptFirst(), torch.rand(2, 3, 8, 8)
    fast = forward_with_negatives(model, x, num_negatives=2,
                                  generator=torch.Generator().manual_seed(4))  # fmt: skip
    torch.testing.assert_close(fast.negatives, naive_negatives(model, x, 2, seed=4))


def test_the_reference_model_equals_the_naive_way():
    torch.manual_seed(0)
    model, x = SparsePromptIR("tiny"), torch.rand(2, 3, 20, 12)
    fast = forward_with_negatives(model, x, num_negatives=2, chunk_size=2,
                                  generator=torch.Generator().manual_seed(5))  # fmt: skip
    slow = naive_negatives(model, x, 2, seed=5, chunk_size=2)
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-5, atol=1e-6)
    assert fast.routing.names == ["prompt3", "prompt2", "prompt1"]


def test_forward_with_negatives_checks_its_arguments(unet):
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(InputError, match="expected a model containing SparsePrompt layers"):
        forward_with_negatives(PlainUNet(), x, num_negatives=1)
    with pytest.raises(InputError, match="expected num_negatives to be an integer >= 1, got 0"):
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
    stages = {"decoder.0": {"dim": 16, "prompt_size": 4},
              "decoder.1": {"dim": 8, "prompt_dim": 4, "num_heads": 2}}  # fmt: skip
    same = add_prompts(model, stages)
    assert same is model
    assert isinstance(model.decoder[0], PromptStage) and isinstance(model.decoder[1], PromptStage)
    assert list(prompt_layers(model)) == ["decoder.0.prompt", "decoder.1.prompt"]
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    seed = 3
    fast = forward_with_negatives(model, x, num_negatives=2,
                                  generator=torch.Generator().manual_seed(seed))  # fmt: skip
    torch.testing.assert_close(fast.negatives, naive_negatives(model, x, 2, seed))


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


def test_add_prompts_bad_requests():
    model = PlainUNet()
    with pytest.raises(InputError, match=r"expected names of submodules of PlainUNet, got 'dec"):
        add_prompts(model, {"dec": {"dim": 8}})
    with pytest.raises(InputError, match=r"expected options with 'dim' \(the output channels"):
        add_prompts(model, {"decoder.1": {"prompt_size": 4}})
    with pytest.raises(InputError, match=r"expected options among .* got \['heads'\]"):
        add_prompts(model, {"decoder.1": {"dim": 8, "heads": 2}})
    with pytest.raises(InputError, match=r"got 'decoder.1.0' inside \['decoder.1'\]"):
        add_prompts(model, {"decoder.1": {"dim": 8}, "decoder.1.0": {"dim": 16}})
    with pytest.raises(InputError, match=r"expected num_heads to divide dim \+ prompt_dim = 12"):
        add_prompts(model, {"decoder.1": {"dim": 8, "num_heads": 5}})
    with pytest.raises(InputError, match=r"expected the wrapped module's output of shape \(B, 9"):
        add_prompts(model, {"decoder.1": {"dim": 9, "num_heads": 1}})(torch.rand(1, 3, 8, 8))
    assert not prompt_layers(PlainUNet())
