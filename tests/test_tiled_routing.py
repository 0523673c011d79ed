"""One routing per image: pooled_routing, fixed_routing, image_routing and tiled(routing=...).

Closed forms: the router is affine in the mean of its input, so the routing of equal tiles side
by side is the pooled routing of the tiles; a network whose only global operation is the routing
gives, tiled with one routing per image, exactly its single pass, and tiled per tile does not.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import InputError, InputTypeError, SparsePrompt, SparsePromptIR
from contrastive_prompts.core import (
    fixed_routing,
    pooled_routing,
    record_routing,
    topk_route,
)
from contrastive_prompts.reference import image_routing, tiled

# -- pooled_routing: the routing of the whole is the pooled routing of its parts ---------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    tiles=st.integers(1, 4),
    side=st.integers(1, 6),
    num_prompts=st.integers(2, 6),
    data=st.data(),
)
def test_routing_side_by_side_tiles_is_their_pooled_routing(seed, tiles, side, num_prompts, data):
    torch.manual_seed(seed)
    top_k = data.draw(st.integers(1, num_prompts), label="top_k")
    renormalize = data.draw(st.booleans(), label="renormalize")
    layer = SparsePrompt(
        dim=5, prompt_dim=2, prompt_size=2, num_prompts=num_prompts, top_k=top_k,
        renormalize=renormalize, dtype=torch.float64,
    )  # fmt: skip
    with torch.no_grad():
        layer.router.weight.mul_(20)  # decisive routers, far from ties
        parts = [torch.randn(3, 5, side, side, dtype=torch.float64) for _ in range(tiles)]
        whole = layer.route(torch.cat(parts, dim=-1))
        pooled = pooled_routing(
            [layer.route(p) for p in parts], top_k=top_k, renormalize=renormalize
        )
    torch.testing.assert_close(pooled.probs, whole.probs)
    torch.testing.assert_close(pooled.weights, whole.weights)
    assert torch.equal(pooled.indices.sort(-1).values, whole.indices.sort(-1).values)


def test_pooling_one_routing_gives_it_back_in_its_dtype():
    routed = topk_route(torch.randn(4, 5, dtype=torch.bfloat16), top_k=2)
    pooled = pooled_routing([routed], top_k=2)
    assert pooled.probs.dtype == pooled.weights.dtype == torch.bfloat16
    assert torch.equal(pooled.indices.sort(-1).values, routed.indices.sort(-1).values)
    torch.testing.assert_close(pooled.probs, routed.probs)


def test_an_expert_one_tile_all_but_rules_out_is_outweighed_not_vetoed():
    # logits (0, -60) and (0, 80): their mean (0, 10) picks expert 1
    unlikely = topk_route(torch.tensor([[0.0, -60.0]]), top_k=1)
    assert 0 < unlikely.probs[0, 1] < 1e-25
    strong = topk_route(torch.tensor([[0.0, 80.0]]), top_k=1)
    pooled = pooled_routing([unlikely, strong], top_k=1)
    assert pooled.indices.item() == 1
    torch.testing.assert_close(pooled.probs, torch.tensor([[0.0, 10.0]]).softmax(-1))
    # probabilities that underflow to 0 in float32 stay finite: no NaN from log(0)
    zero_one = topk_route(torch.tensor([[0.0, -200.0]]), top_k=1)
    one_zero = topk_route(torch.tensor([[0.0, 300.0]]), top_k=1)
    assert torch.isfinite(pooled_routing([zero_one, one_zero], top_k=1).probs).all()


def test_pooled_routing_checks_its_input():
    routed = topk_route(torch.randn(2, 3), top_k=1)
    with pytest.raises(InputTypeError, match="one Routing: wrap it in a list"):
        pooled_routing(routed, top_k=1)
    with pytest.raises(InputTypeError, match="non-empty sequence of Routing, got list"):
        pooled_routing([], top_k=1)
    with pytest.raises(InputTypeError, match="expected Routing items, got Tensor"):
        pooled_routing([routed, torch.zeros(2, 3)], top_k=1)
    with pytest.raises(InputError, match=r"of one shape, got \(2, 3\) and \(1, 3\)"):
        pooled_routing([routed, topk_route(torch.randn(1, 3), top_k=1)], top_k=1)
    with pytest.raises(InputError, match="top_k"):
        pooled_routing([routed], top_k=4)


# -- fixed_routing ------------------------------------------------------------------------------


def test_a_recorded_routing_fixed_again_reproduces_the_pass_and_is_what_layers_report():
    torch.manual_seed(0)
    model, x = SparsePromptIR("tiny").eval(), torch.rand(2, 3, 16, 16)
    with torch.no_grad(), record_routing(model) as log:
        first = model(x)
    other = torch.rand(2, 3, 16, 16)
    with torch.no_grad(), fixed_routing(model, dict(zip(log.names, log, strict=True))):
        assert torch.equal(model(x), first)
        with record_routing(model) as again:
            model(other)  # another input routes as the fixed routing says
    for before, after in zip(log, again, strict=True):
        assert torch.equal(before.weights, after.weights)
        assert torch.equal(before.indices, after.indices)
    assert all(layer._fixed is None for layer in model.modules() if isinstance(layer, SparsePrompt))


def test_one_fixed_row_serves_every_sample():
    layer = SparsePrompt(dim=4, prompt_dim=2, prompt_size=2, num_prompts=3)
    row = topk_route(torch.tensor([[0.0, 5.0, 0.0]]), top_k=1)
    with torch.no_grad(), fixed_routing(layer, {"": row}):
        prompt, routing = layer(torch.rand(5, 4, 3, 3), return_routing=True)
    assert routing.indices.flatten().tolist() == [1] * 5
    torch.testing.assert_close(prompt, prompt[:1].expand(5, -1, -1, -1))


def test_fixed_routing_checks_its_input_and_restores_the_layers_on_error():
    layer = SparsePrompt(dim=4, prompt_dim=2, prompt_size=2, num_prompts=3)
    two = topk_route(torch.randn(2, 3), top_k=1)
    with pytest.raises(InputError, match=r"among \[''\], got 'x'"):
        with fixed_routing(layer, {"x": two}):
            pass
    with pytest.raises(InputTypeError, match="expected a Routing for '', got Tensor"):
        with fixed_routing(layer, {"": torch.zeros(2, 3)}):
            pass
    with pytest.raises(InputError, match=r"weights of shape \(B, 3\) for '', got \(2, 4\)"):
        with fixed_routing(layer, {"": topk_route(torch.randn(2, 4), top_k=1)}):
            pass
    with pytest.raises(InputTypeError, match="mapping of prompt layer names to Routing, got list"):
        with fixed_routing(layer, [two]):
            pass
    with pytest.raises(InputError, match=r"fixed_routing: expected a routing for 1 or 5 samples"):
        with fixed_routing(layer, {"": two}):
            layer(torch.rand(5, 4, 3, 3))
    assert layer._fixed is None


# -- tiled(routing="image") -------------------------------------------------------------------


class RoutedByBrightness(nn.Module):
    """``x + conv1x1(prompt)``: the routing (bright or dark) is its only global operation.

    Its prompts are constant maps (1x1 bank entries), so a tile's prompt is the crop of the whole
    image's prompt except on the one-pixel border the prompt's 3x3 convolution pads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.prompt = SparsePrompt(dim=3, prompt_dim=2, prompt_size=1, num_prompts=2, top_k=1)
        self.out = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.prompt.router.weight.copy_(torch.tensor([[40.0, 0, 0], [-40.0, 0, 0]]))
            self.prompt.router.bias.copy_(torch.tensor([-20.0, 20.0]))  # expert 0 above 0.5
            self.prompt.prompts.copy_(torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]]))

    def forward(self, x):
        return x + self.out(self.prompt(x))


def _bright_left(height: int, width: int) -> torch.Tensor:
    image = torch.full((1, 3, height, width), 0.1)
    image[..., : 3 * width // 4] = 0.9  # mean brightness 0.7: expert 0 for the image
    return image


def test_one_routing_per_image_gives_the_single_pass_and_per_tile_does_not():
    torch.manual_seed(0)
    net, image = RoutedByBrightness().eval(), _bright_left(32, 64)
    with torch.no_grad():
        single = net(image)
        shared = tiled(net, image, tile=16, overlap=8)
        per_tile = tiled(net, image, tile=16, overlap=8, routing="tile")
        routes = image_routing(net, image, tile=16)
    assert routes["prompt"].indices.tolist() == [[0]]
    torch.testing.assert_close(shared, single, rtol=0, atol=1e-6)
    # the dark tiles on the right route to expert 1 on their own: that part of the image changes
    assert (per_tile - single)[..., -8:].abs().max() > 0.1
    torch.testing.assert_close(per_tile[..., :32], single[..., :32], rtol=0, atol=1e-6)


@pytest.mark.parametrize("tile_batch", [1, 3, 16])
def test_the_routing_of_an_image_does_not_depend_on_the_tile_batch_or_its_batch(tile_batch):
    torch.manual_seed(1)
    model = SparsePromptIR("tiny").eval()
    images = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        alone = [image_routing(model, images[i : i + 1], tile=16) for i in range(2)]
        together = image_routing(model, images, tile=16, tile_batch=tile_batch)
    for name, routed in together.items():
        for i in range(2):
            torch.testing.assert_close(routed.probs[i : i + 1], alone[i][name].probs)
            assert torch.equal(routed.indices[i : i + 1], alone[i][name].indices)


def test_restore_gives_every_tile_the_routing_of_the_image():
    torch.manual_seed(2)
    model = SparsePromptIR("tiny").eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, SparsePrompt):
                layer.router.weight.mul_(50)  # a router that notices what each tile holds
    image = torch.rand(1, 3, 48, 48)
    image[..., :24, :] *= 0.2
    with torch.no_grad():
        expected = image_routing(model, image, tile=16)
        with record_routing(model) as log:
            model.restore(image, tile=16, overlap=8)
        with record_routing(model) as own:
            model.restore(image, tile=16, overlap=8, routing="tile")
    tiles = len(log) - len(own)  # the first pass over the grid of tiles, then the tiles
    restored = list(zip(log.names[tiles:], log[tiles:], strict=True))
    assert {tuple(r.indices.flatten().tolist()) for _, r in restored} != set()
    for name, routed in restored:
        assert torch.equal(routed.weights, expected[name].weights)
    picked: dict[str, set] = {}
    for name, routed in zip(own.names, own, strict=True):
        picked.setdefault(name, set()).add(tuple(routed.indices.flatten().tolist()))
    assert any(len(found) > 1 for found in picked.values()), "the tiles all route alike"


def test_an_image_no_larger_than_a_tile_is_routed_once_and_unprompted_models_tile_as_before():
    torch.manual_seed(3)
    model, image = SparsePromptIR("tiny").eval(), torch.rand(1, 3, 16, 16)
    with torch.no_grad(), record_routing(model) as log:
        out = tiled(model, image, tile=16, overlap=8)
        assert torch.equal(out, model(image))
    assert len(log) == 2 * 3  # tiled's one pass and model(image): no first pass
    conv, picture = nn.Conv2d(3, 3, 3, padding=1), torch.rand(1, 3, 20, 20)
    with torch.no_grad():  # nothing to route: both routings tile alike
        assert torch.equal(
            tiled(conv, picture, tile=8, overlap=4),
            tiled(conv, picture, tile=8, overlap=4, routing="tile"),
        )
    expected = r"tiled: expected routing to be one of \('image', 'tile'\), got 'once'"
    with pytest.raises(InputError, match=expected):
        tiled(conv, torch.rand(1, 3, 20, 20), tile=8, overlap=4, routing="once")
    with pytest.raises(InputError, match="image_routing: expected a model containing SparsePrompt"):
        image_routing(conv, torch.rand(1, 3, 20, 20), tile=8)
