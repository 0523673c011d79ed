"""The contract of forward_with_negatives on networks of many shapes: the negatives equal the
full computation (a forward under negative_prompts per chunk, same generator), or a clear error.

The networks are drawn, not written: depth, skips, a module shared before and after the prompt,
in-place operations on kept outputs, attention over tokens in either axis order (with as many
tokens as images, where a guessed batch axis goes wrong), user hooks that change outputs, and
prompt layers placed by add_prompts (as a Sequential's layer or from a hook), called as
``layer(h)``, as ``layer.forward(h)`` or from a method of the network.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import (
    InputError,
    SparsePrompt,
    add_prompts,
    forward_with_negatives,
    record_routing,
)
from contrastive_prompts.core import PromptFusion, negatives_reuse, prompt_layers

from .test_negatives import naive_negatives as full_negatives

WIDTH = 4


def spread(model: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, fusion projections included (add_prompts starts them at 0,
    which would make every negative equal the output and hide a wrong one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


class Tokens(nn.Module):
    """Attention over the H * W positions, sequence-first ``(L, B, E)`` unless batch_first."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.attention = nn.MultiheadAttention(WIDTH, 2, batch_first=batch_first)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        tokens = (
            h.flatten(2).permute(0, 2, 1) if self.batch_first else h.flatten(2).permute(2, 0, 1)
        )
        mixed, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        if self.batch_first:
            return mixed.permute(0, 2, 1).reshape(b, c, hh, ww)
        return mixed.permute(1, 2, 0).reshape(b, c, hh, ww)


class Encoder(nn.Module):
    """Returns its tokens sequence-first, so its output's batch axis is not the first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, WIDTH, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        h = self.conv(x)
        return h.flatten(2).permute(2, 0, 1), h.shape[-1]  # (L, B, C) and the width


class Drawn(nn.Module):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.stem = Encoder()
        self.act = nn.GELU()  # shared: called before and after the prompt
        self.enc = nn.ModuleList(nn.Conv2d(WIDTH, WIDTH, 3, padding=1) for _ in spec["enc"])
        self.tokens = Tokens(spec["attention"]) if spec["attention"] is not None else None
        self.dec = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * WIDTH, WIDTH, 3, padding=1), nn.GELU()) for _ in spec["enc"]
        )
        if spec["own_prompt"] is not None:
            self.prompt = SparsePrompt(dim=WIDTH, prompt_dim=2, prompt_size=3, num_prompts=3)
            self.fuse = PromptFusion(dim=WIDTH, prompt_dim=2)
        self.out = nn.Conv2d(WIDTH, 3, 1)

    def prompted(self, h: torch.Tensor) -> torch.Tensor:
        """The network's own prompt, called as the drawn style says."""
        how = self.spec["own_prompt"]
        prompt = self.prompt.forward(h) if how == "forward" else self.prompt(h)
        return h + self.fuse(h, prompt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, width = self.stem(x)
        h = tokens.permute(1, 2, 0).unflatten(2, (-1, width))
        skips = []
        for conv, in_place in zip(self.enc, self.spec["enc"], strict=True):
            h = self.act(conv(h))
            if in_place:
                h.mul_(0.5)  # in place, after the call returned
            skips.append(h)
        if self.tokens is not None:
            h = h + self.tokens(h)
        if self.spec["own_prompt"] is not None:
            h = self.prompted(h)
        for dec, skip in zip(self.dec, reversed(skips), strict=True):
            h = self.act(dec(torch.cat([h, skip], dim=1)))
        return x + self.out(h)


@st.composite
def networks(draw: st.DrawFn) -> tuple[nn.Module, dict[str, Any]]:
    depth = draw(st.integers(1, 3))
    spec = {
        "enc": draw(st.lists(st.booleans(), min_size=depth, max_size=depth)),
        "attention": draw(st.sampled_from([None, True, False])),
        "own_prompt": draw(st.sampled_from([None, "call", "forward"])),
    }
    model = Drawn(spec)
    staged = draw(
        st.lists(
            st.sampled_from(
                [f"dec.{i}" for i in range(depth)] + [f"dec.{i}.0" for i in range(depth)]
            ),
            unique_by=lambda n: n.split(".")[1],
            min_size=0 if spec["own_prompt"] else 1,
            max_size=2,
        )
    )
    if staged:
        add_prompts(model, {n: {"dim": WIDTH, "prompt_size": 3, "num_prompts": 3} for n in staged})
    hooks = draw(
        st.lists(st.sampled_from(["stem", "stem.conv", "enc.0", "act"]), unique=True, max_size=2)
    )
    for name in hooks:
        module = model.get_submodule(name)
        if name == "stem":
            module.register_forward_hook(lambda m, a, out: (out[0] * 2, out[1]))
        else:
            module.register_forward_hook(lambda m, a, out: out * 2)
    spec["staged"], spec["hooks"] = staged, hooks
    return model, spec


@settings(deadline=None, max_examples=60)
@given(
    drawn=networks(),
    batch=st.integers(1, 4),
    size=st.sampled_from([(1, 2), (2, 2), (2, 3), (3, 3)]),
    num_negatives=st.integers(1, 3),
    chunk=st.sampled_from([None, 1, 5]),
    with_labels=st.booleans(),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_negatives_equal_the_full_computation_on_drawn_networks(
    drawn, batch, size, num_negatives, chunk, with_labels, training, seed
):
    model, spec = drawn
    note(f"network: {spec}")
    # in float64: weights of spread 0.5 make outputs of tens, where float32's rounding alone
    # differs by 1e-4 between batch sizes (the negatives run in a larger batch than the output)
    spread(model, seed).train(training).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (batch,), generator=g) if with_labels else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # full passes are allowed, if right
        fast = forward_with_negatives(
            model,
            x,
            num_negatives=num_negatives,
            labels=labels,
            chunk_size=chunk,
            generator=torch.Generator().manual_seed(seed),
        )
    slow = full_negatives(model, x, num_negatives, seed, labels=labels, chunk_size=chunk)
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-9, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(fast.output, model(x), rtol=1e-9, atol=1e-10)
    assert len(fast.routing) == len(prompt_layers(model))


# -- the cases that were silently wrong, one by one -------------------------------------------


class Plain(nn.Module):
    """An encoder, then a prompt called as the test says, then a decoder."""

    def __init__(self, how: str = "call") -> None:
        super().__init__()
        self.how = how
        self.encoder = nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH))
        self.prompt = SparsePrompt(dim=WIDTH, prompt_dim=2, prompt_size=3, num_prompts=3)
        self.fuse = PromptFusion(dim=WIDTH, prompt_dim=2)
        self.decoder = nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH))
        self.out = nn.Conv2d(WIDTH, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        if self.how == "forward":
            prompt = self.prompt.forward(h)
        elif self.how == "route":  # around forward: nothing is logged, no negative is drawn
            prompt = self.prompt.render(self.prompt.route(h).weights, h.shape[-2:])
        else:
            prompt = self.prompt(h)
        return x + self.out(self.decoder(h + self.fuse(h, prompt)))


def check_contract(model: nn.Module, x: torch.Tensor, num_negatives: int = 3, **options: Any):
    fast = forward_with_negatives(
        model, x, num_negatives=num_negatives, generator=torch.Generator().manual_seed(7), **options
    )
    slow = full_negatives(model, x, num_negatives, 7, chunk_size=options.get("chunk_size"))
    torch.testing.assert_close(fast.negatives, slow, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fast.negatives[:, 0], fast.output)  # the prompt matters here
    return fast


def test_a_prompt_called_through_forward_is_seen_starting():
    model, x = spread(Plain("forward"), 0).eval(), torch.rand(2, 3, 6, 6)
    check_contract(model, x)
    assert negatives_reuse(model, x).served == ("encoder",)


def test_a_prompt_called_around_forward_is_refused():
    model = spread(Plain("route"), 0)
    with pytest.raises(
        InputError,
        match=r"expected model\(x\) to call its prompt layers .* none "
        r"of \['prompt'\] ran",
    ):
        forward_with_negatives(model, torch.rand(2, 3, 6, 6), num_negatives=2)


def test_a_prompt_inside_a_module_compiled_with_module_compile():
    model = spread(Plain(), 0).eval()
    inner = nn.Sequential()
    inner.prompt, inner.fuse = model.prompt, model.fuse

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.inner, self.decoder = model.encoder, inner, model.decoder
            self.out = model.out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.encoder(x)
            return x + self.out(self.decoder(h + self.inner.fuse(h, self.inner.prompt(h))))

    outer = Outer()
    outer.inner.compile(backend="eager")
    x = torch.rand(2, 3, 6, 6)
    check_contract(outer, x)
    assert negatives_reuse(outer, x).served == ("encoder",)


def test_user_hooks_run_once_per_real_computation():
    model, x = spread(Plain(), 0).eval(), torch.rand(2, 3, 6, 6)
    calls = []
    model.encoder.register_forward_hook(lambda m, a, out: calls.append(1) or out * 2)
    forward_with_negatives(model, x, num_negatives=3)  # measures the batch axes
    calls.clear()
    fast = check_contract(model, x)  # a doubling hook, applied once to the served output
    assert fast.negatives.shape == (2, 3, 3, 6, 6)
    assert len(calls) == 2  # the check's positive pass and the full computation: not the served


def test_the_measured_plan_lives_with_its_network_and_outside_its_state():
    """The look-only pass runs once per network, not once per call: what it found stays with the
    network (not in a module-level cache), adds nothing to its state dict, parameters or
    submodules, and goes when the network goes."""
    import copy
    import gc
    import weakref

    model, x = spread(Plain(), 5).eval(), torch.rand(2, 3, 6, 6)
    keys, children = list(model.state_dict()), [name for name, _ in model.named_modules()]
    probes = []
    model.encoder.register_forward_hook(lambda m, a, out: probes.append(a[0].shape[0]))
    forward_with_negatives(model, x, num_negatives=3)
    assert probes == [2, 3]  # the positive pass, then the look-only pass on B + 1 rows
    probes.clear()
    forward_with_negatives(model, x, num_negatives=3)
    assert probes == [2]  # remembered: the positive pass alone
    assert list(model.state_dict()) == keys
    assert [name for name, _ in model.named_modules()] == children
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # copying the network copies no plan (nor its warnings)
        twin = copy.deepcopy(model)
    probes.clear()
    forward_with_negatives(twin, x, num_negatives=3)
    assert probes == [2, 3]  # the copy (its hook copied too) measures its own, once
    probes.clear()
    forward_with_negatives(twin, x, num_negatives=3)
    assert probes == [2]
    gone = weakref.ref(model)
    del model, twin
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("batch", "size"), [(4, (2, 2)), (3, (2, 2)), (1, (1, 1))])
def test_attention_with_either_axis_order_is_served_along_its_batch_axis(batch_first, batch, size):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, WIDTH, 1)
            self.tokens = Tokens(batch_first)
            self.prompt = SparsePrompt(dim=WIDTH, prompt_dim=2, prompt_size=3, num_prompts=3)
            self.out = nn.Conv2d(WIDTH + 2, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.tokens(self.embed(x))
            return self.out(torch.cat([h, self.prompt(h)], dim=1))

    model, x = spread(Net(), 1).eval(), torch.rand(batch, 3, *size)  # L == H * W == B or not
    check_contract(model, x)
    served = negatives_reuse(model, x).served
    assert "tokens" in served or "tokens.attention" in served


def test_a_sequence_first_output_is_repeated_along_its_batch_axis():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = Encoder()
            self.prompt = SparsePrompt(dim=WIDTH, prompt_dim=2, prompt_size=3, num_prompts=3)
            self.out = nn.Conv2d(WIDTH + 2, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens, width = self.stem(x)
            h = tokens.permute(1, 2, 0).unflatten(2, (-1, width))
            return self.out(torch.cat([h, self.prompt(h)], dim=1))

    for batch in (2, 4):  # 4 rows of 2 x 2: as many tokens as images
        model, x = spread(Net(), 2).eval(), torch.rand(batch, 3, 2, 2)
        check_contract(model, x)
        assert negatives_reuse(model, x).served == ("stem",)


def test_a_network_whose_calls_change_with_the_batch_gets_full_passes_and_one_warning():
    class Net(Plain):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.encoder(x)
            for _ in range(x.shape[0]):  # as many calls as rows
                h = self.encoder[1](h)
            return x + self.out(self.decoder(h + self.fuse(h, self.prompt(h))))

    model, x = spread(Net(), 3).eval(), torch.rand(2, 3, 6, 6)
    with pytest.warns(
        RuntimeWarning,
        match=r"Net gets full negative passes, since its submodule "
        r"calls before the first prompt layer change",
    ):
        check_contract(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per structure
        check_contract(model, x)
    assert negatives_reuse(model, x).served == ()


def test_negatives_leave_batch_norm_statistics_as_they_were():
    model, x = spread(Plain(), 4).train(), torch.rand(3, 3, 6, 6)
    with torch.no_grad():
        model(x)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(x)
    after_one_pass = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(expected)
    forward_with_negatives(model, x, num_negatives=3, chunk_size=2)
    for key, value in model.state_dict().items():  # the positive pass moved them, once
        torch.testing.assert_close(value, after_one_pass[key], msg=key)
    fast = check_contract(model, x, chunk_size=4)  # batch statistics of whole copies of x
    fast.output.sum().backward()  # the statistics restored without breaking the backward


def test_record_routing_refuses_a_network_without_prompt_layers():
    with pytest.raises(
        InputError,
        match=r"record_routing: expected a model containing "
        r"SparsePrompt layers, got Sequential with none",
    ):
        with record_routing(nn.Sequential(nn.Conv2d(3, 3, 1))):
            pass
