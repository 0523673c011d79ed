import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive_prompts import InputError, SparsePrompt, negative_prompts
from contrastive_prompts.core import (
    PromptFusion,
    load_balance_loss,
    negative_route,
    routing_statistics,
    topk_route,
)


def promptir_generator(layer: SparsePrompt, x: torch.Tensor) -> torch.Tensor:
    """PromptIR's PromptGenBlock as in the official code (a copy of the bank per sample)."""
    weights = F.softmax(layer.router(x.mean(dim=(-2, -1))), dim=1)
    bank = layer.prompts.unsqueeze(0).repeat(x.shape[0], 1, 1, 1, 1)
    prompt = (weights[:, :, None, None, None] * bank).sum(dim=1)
    prompt = F.interpolate(prompt, x.shape[-2:], mode="bilinear")
    return layer.conv(prompt)


def make_layer(seed: int, **kwargs) -> SparsePrompt:
    torch.manual_seed(seed)
    options = dict(dim=6, prompt_dim=4, num_prompts=5, prompt_size=5, top_k=1)
    options.update(kwargs)
    return SparsePrompt(**options)


sizes = st.integers(min_value=1, max_value=19)


@given(
    batch=st.integers(1, 4), h=sizes, w=sizes, top_k=st.integers(1, 5), seed=st.integers(0, 2**16)
)
def test_shapes_and_exactly_top_k_weights(batch, h, w, top_k, seed):
    layer = make_layer(seed, top_k=top_k)
    x = torch.rand(batch, 6, h, w, generator=torch.Generator().manual_seed(seed))
    prompt, routing = layer(x, return_routing=True)
    assert prompt.shape == (batch, 4, h, w)
    assert routing.indices.shape == (batch, top_k)
    assert ((routing.weights > 0).sum(dim=1) == top_k).all()
    # kept weights are the largest probabilities, not renormalised
    kept = routing.probs.gather(1, routing.indices)
    assert torch.equal(routing.weights.gather(1, routing.indices), kept)
    assert (kept.min(dim=1).values[:, None] >= routing.probs * (routing.weights == 0)).all()


@given(h=sizes, w=sizes, seed=st.integers(0, 2**16))
def test_top_k_equal_num_prompts_is_promptir(h, w, seed):
    layer = make_layer(seed, top_k=5).double()
    x = torch.rand(3, 6, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(layer(x), promptir_generator(layer, x))


@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_batch_independence(seed, top_k):
    layer = make_layer(seed, top_k=top_k)
    x = torch.rand(4, 6, 7, 9, generator=torch.Generator().manual_seed(seed))
    whole = layer(x)
    for i in range(4):
        torch.testing.assert_close(layer(x[i : i + 1]), whole[i : i + 1], rtol=1e-5, atol=1e-6)


def test_renormalize_sums_to_one():
    layer = make_layer(0, top_k=2, renormalize=True)
    _, routing = layer(torch.rand(3, 6, 4, 4), return_routing=True)
    torch.testing.assert_close(routing.weights.sum(1), torch.ones(3))


@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_no_gradient_into_unselected_prompts(seed, top_k):
    layer = make_layer(seed, top_k=top_k)
    x = torch.rand(2, 6, 8, 8, generator=torch.Generator().manual_seed(seed))
    prompt, routing = layer(x, return_routing=True)
    prompt.square().sum().backward()
    used = torch.zeros(5, dtype=torch.bool)
    used[routing.indices.flatten()] = True
    grad_norm = layer.prompts.grad.flatten(1).abs().sum(1)
    assert (grad_norm[~used] == 0).all()
    assert (grad_norm[used] > 0).all()
    assert layer.router.weight.grad.abs().sum() > 0  # the router still learns with top-1


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_negatives_never_equal_selected(seed, top_k, batch):
    layer = make_layer(seed, top_k=top_k)
    x = torch.rand(batch, 6, 5, 5, generator=torch.Generator().manual_seed(seed))
    positive = layer.route(x)
    gen = torch.Generator().manual_seed(seed)
    with negative_prompts(layer, generator=gen):
        prompt, negative = layer(x, return_routing=True)
    assert not prompt.requires_grad
    assert negative.indices.shape == (batch, min(top_k, 5 - top_k))
    overlap = (negative.indices[:, :, None] == positive.indices[:, None, :]).any()
    assert not overlap
    # weighted by their own softmax weights
    torch.testing.assert_close(
        negative.weights.gather(1, negative.indices), positive.probs.gather(1, negative.indices)
    )


def test_negatives_reproducible_and_uniform():
    logits = torch.zeros(20000, 5)
    logits[:, 0] = 1.0  # expert 0 always selected
    positive = topk_route(logits, 1)
    first = negative_route(positive, generator=torch.Generator().manual_seed(3))
    again = negative_route(positive, generator=torch.Generator().manual_seed(3))
    other = negative_route(positive, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first.indices, again.indices)
    assert not torch.equal(first.indices, other.indices)
    counts = routing_statistics(first)[0].double() / 20000
    assert counts[0] == 0
    torch.testing.assert_close(
        counts[1:], torch.full((4,), 0.25, dtype=torch.float64), atol=0.02, rtol=0
    )


def test_labelled_negatives_come_from_other_degradations():
    # samples 0, 1 (label 0) select expert 0; samples 2, 3 (label 1) select expert 3
    logits = torch.full((4, 5), -5.0)
    logits[:2, 0] = 5.0
    logits[2:, 3] = 5.0
    positive = topk_route(logits, 1)
    for seed in range(10):
        negative = negative_route(
            positive,
            generator=torch.Generator().manual_seed(seed),
            labels=torch.tensor([0, 0, 1, 1]),
        )
        assert negative.indices.flatten().tolist() == [3, 3, 0, 0]


def test_routing_statistics_per_label():
    indices = torch.tensor([[0], [0], [2], [4]])
    labels = torch.tensor([1, 1, 0, 1])
    counts = routing_statistics(indices, 5, labels=labels, num_labels=3)
    assert counts.tolist() == [[0, 0, 1, 0, 0], [2, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_load_balance_loss_bounds():
    balanced = topk_route(torch.eye(5).repeat(2, 1) * 50, 1)
    collapsed = topk_route(torch.tensor([[50.0, 0, 0, 0, 0]]).repeat(10, 1), 1)
    torch.testing.assert_close(load_balance_loss(balanced), torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(load_balance_loss(collapsed), torch.tensor(5.0), atol=1e-4, rtol=0)


def test_fusion_shapes_and_custom_block():
    fusion = PromptFusion(dim=8, prompt_dim=4, out_dim=6, num_heads=3)
    assert fusion(torch.rand(2, 8, 5, 7), torch.rand(2, 4, 5, 7)).shape == (2, 6, 5, 7)
    identity = PromptFusion(dim=8, prompt_dim=4, block=torch.nn.Identity())
    x, p = torch.rand(1, 8, 3, 3), torch.rand(1, 4, 3, 3)
    expected = F.conv2d(torch.cat([x, p], 1), identity.proj.weight)
    torch.testing.assert_close(identity(x, p), expected)


def test_gradcheck_float64():
    layer = make_layer(0, top_k=2).double()
    x = torch.rand(2, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


def test_compile_eager_matches():
    layer = make_layer(0)
    x = torch.rand(2, 6, 8, 8)
    compiled = torch.compile(layer, backend="eager")
    torch.testing.assert_close(compiled(x), layer(x))


def test_bfloat16_autocast_finite():
    layer = make_layer(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.rand(2, 6, 8, 8))
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(top_k=0), r"SparsePrompt: expected top_k to be an integer in \[1, 5\], got 0"),
        (dict(top_k=6), r"SparsePrompt: expected top_k to be an integer in \[1, 5\], got 6"),
        (dict(dim=0), r"SparsePrompt: expected dim to be an integer >= 1, got 0"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_layer(0, **kwargs)


def test_bad_inputs():
    layer = make_layer(0)
    with pytest.raises(InputError, match=r"expected x of shape \(B, 6, H, W\), got \(2, 5, 4, 4\)"):
        layer(torch.rand(2, 5, 4, 4))
    with pytest.raises(InputError, match=r"expected x of shape \(B, 6, H, W\), got \(6, 4, 4\)"):
        layer(torch.rand(6, 4, 4))
    with pytest.raises(InputError, match="top_k < num_prompts"):
        with negative_prompts(make_layer(0, top_k=5)):
            pass
    with pytest.raises(InputError, match=r"expected labels of shape \(2\), got \(3\)"):
        with negative_prompts(layer, labels=torch.tensor([0, 1, 2])):
            layer(torch.rand(2, 6, 4, 4))
    fusion = PromptFusion(dim=8, prompt_dim=4)
    with pytest.raises(
        InputError, match=r"expected prompt of shape \(2, 4, 5, 5\), got \(2, 4, 5, 6\)"
    ):
        fusion(torch.rand(2, 8, 5, 5), torch.rand(2, 4, 5, 6))


def test_repr_names_the_options():
    assert "top_k=1" in repr(make_layer(0)) and "num_prompts=5" in repr(make_layer(0))


# ---------------------------------------------------------------------------------------------
# dtypes and degenerate sizes

FLOAT_MISMATCH = [torch.float16, torch.bfloat16, torch.float64]
NOT_FLOATING = [torch.uint8, torch.int32, torch.int64]


def dtype_message(where: str, name: str, dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return (
            rf"{where}: expected {name} of dtype torch.float32 \(the parameters' dtype\), "
            rf"got {dtype}; convert the input with {name}\.to\(torch\.float32\), the model with "
            rf"model\.to\({dtype}\), or run under torch\.autocast"
        )
    fix = (
        rf"scale 8-bit images to \[0, 1\] with {name}\.to\(torch\.float32\) / 255"
        if dtype == torch.uint8
        else rf"convert with {name}\.to\(torch\.float32\)"
    )
    return (
        rf"{where}: expected {name} to be a floating-point tensor of dtype torch.float32 "
        rf"\(the parameters' dtype\), got {dtype}; {fix}"
    )


@pytest.mark.parametrize("dtype", FLOAT_MISMATCH + NOT_FLOATING)
@pytest.mark.parametrize("method", ["forward", "route", "negative"])
def test_sparse_prompt_wrong_dtype_names_expected_given_and_fix(method, dtype):
    layer = make_layer(0)
    x = torch.zeros(2, 6, 4, 4, dtype=dtype)
    with pytest.raises(InputError, match=dtype_message("SparsePrompt", "x", dtype)):
        if method == "negative":
            with negative_prompts(layer):
                layer(x)
        else:
            (layer if method == "forward" else layer.route)(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int64])
def test_render_wrong_weights_dtype(dtype):
    with pytest.raises(InputError, match=dtype_message("SparsePrompt.render", "weights", dtype)):
        make_layer(0).render(torch.zeros(2, 5, dtype=dtype), (4, 4))


@pytest.mark.parametrize("dtype", FLOAT_MISMATCH + NOT_FLOATING)
def test_fusion_wrong_dtype(dtype):
    fusion = PromptFusion(dim=8, prompt_dim=4)
    x, prompt = torch.rand(1, 8, 3, 3), torch.rand(1, 4, 3, 3)
    with pytest.raises(InputError, match=dtype_message("PromptFusion", "x", dtype)):
        fusion(x.to(dtype), prompt)


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8])
def test_fusion_wrong_prompt_dtype(dtype):
    fusion = PromptFusion(dim=8, prompt_dim=4)
    with pytest.raises(InputError, match=dtype_message("PromptFusion", "prompt", dtype)):
        fusion(torch.rand(1, 8, 3, 3), torch.rand(1, 4, 3, 3).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_autocast_refuses_dtypes_it_cannot_cast(dtype):
    # autocast never casts float64, and cannot mix float16 with bfloat16
    layer, fusion = make_layer(0), PromptFusion(dim=8, prompt_dim=4)
    expected = (
        r"expected {} of dtype torch.float32 \(the parameters' dtype\) or torch.bfloat16 "
        rf"\(the autocast dtype\), got {dtype}"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(InputError, match="SparsePrompt: " + expected.format("x")):
            layer(torch.rand(2, 6, 4, 4, dtype=dtype))
        with pytest.raises(InputError, match="PromptFusion: " + expected.format("x")):
            fusion(torch.rand(1, 8, 3, 3, dtype=dtype), torch.rand(1, 4, 3, 3))


def test_float64_layers_give_float64():
    layer = make_layer(0).to(torch.float64)
    x = torch.rand(2, 6, 5, 7, dtype=torch.float64)
    prompt = layer(x)
    assert prompt.dtype == torch.float64
    with negative_prompts(layer):
        assert layer(x).dtype == torch.float64
    fusion = PromptFusion(dim=6, prompt_dim=4, num_heads=2).to(torch.float64)
    assert fusion(x, prompt).dtype == torch.float64


def test_bfloat16_inputs_under_bfloat16_autocast():
    layer, fusion = make_layer(0), PromptFusion(dim=6, prompt_dim=4, num_heads=2)
    x = torch.rand(2, 6, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prompt, routing = layer(x, return_routing=True)
        out = fusion(x, prompt)
    assert prompt.shape == (2, 4, 8, 8) and out.shape == (2, 6, 8, 8)
    assert torch.isfinite(out.float()).all() and ((routing.weights > 0).sum(1) == 1).all()


def test_empty_batch_gives_empty_outputs():
    layer = make_layer(0, top_k=2)
    x = torch.rand(0, 6, 5, 7)
    prompt, routing = layer(x, return_routing=True)
    assert prompt.shape == (0, 4, 5, 7) and routing.indices.shape == (0, 2)
    with negative_prompts(layer):
        assert layer(x).shape == (0, 4, 5, 7)
    fusion = PromptFusion(dim=6, prompt_dim=4, num_heads=2)
    assert fusion(x, prompt).shape == (0, 6, 5, 7)


@pytest.mark.parametrize(("h", "w"), [(0, 5), (5, 0)])
def test_empty_image_raises(h, w):
    message = rf"expected x with H, W >= 1, got H={h}, W={w}"
    with pytest.raises(InputError, match="SparsePrompt: " + message):
        make_layer(0)(torch.rand(2, 6, h, w))
    with pytest.raises(InputError, match="SparsePrompt: " + message):
        with negative_prompts(layer := make_layer(0)):
            layer(torch.rand(2, 6, h, w))
    with pytest.raises(InputError, match="PromptFusion: " + message):
        PromptFusion(dim=8, prompt_dim=4)(torch.rand(1, 8, h, w), torch.rand(1, 4, h, w))


def test_render_bad_weights_and_size():
    layer = make_layer(0)
    with pytest.raises(
        InputError, match=r"render: expected weights of shape \(B, 5\), got \(2, 4\)"
    ):
        layer.render(torch.rand(2, 4), (4, 4))
    with pytest.raises(
        InputError, match=r"render: expected size \(H, W\) with H, W >= 1, got \(0, 4\)"
    ):
        layer.render(torch.rand(2, 5), (0, 4))


def test_topk_route_keeps_the_softmax_weights_unless_asked_to_renormalise():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    kept = topk_route(logits, 2)  # CPL's default: the two largest softmax weights, as they are
    torch.testing.assert_close(kept.weights, torch.tensor([[0.0, 0.0, 0.3, 0.4]]))
    rescaled = topk_route(logits, 2, renormalize=True)
    torch.testing.assert_close(rescaled.weights, torch.tensor([[0.0, 0.0, 3 / 7, 4 / 7]]))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: topk_route(torch.zeros(2, 3, 1), 1), r"logits of shape \(B, N\), got \(2, 3, 1\)"),
        (lambda: topk_route(torch.zeros(2, 3), 4), r"top_k to be an integer in \[1, 3\], got 4"),
        (lambda: topk_route(torch.zeros(2, 3), 1, renormalize=1), "renormalize to be a bool"),
    ],
)
def test_topk_route_names_itself_and_what_it_expected(call, message):
    with pytest.raises(InputError, match=f"^topk_route: expected {message}"):
        call()


def test_topk_route_routes_bfloat16_logits_in_float32_and_answers_in_bfloat16():
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(3)).bfloat16() * 4
    routed = topk_route(logits, 2)
    assert routed.probs.dtype == routed.weights.dtype == torch.bfloat16
    exact = logits.float().softmax(dim=-1)  # the float32 softmax, rounded once
    assert torch.equal(routed.probs, exact.bfloat16())
    assert torch.equal(routed.indices, exact.topk(2, dim=-1).indices)
