"""Mixed precision: what must stay in float32 under bfloat16 autocast does."""

import pytest
import torch

from contrastive_prompts import ContrastivePromptLoss, SparsePrompt
from contrastive_prompts.app.metrics import psnr, ssim
from contrastive_prompts.core import PixelFeatures, contrastive_prompt_loss, topk_route
from tests.test_train import make_trainer

CPU_BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def test_bf16_logits_are_routed_in_float32_and_returned_in_bf16():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 5, generator=g) * 4).to(torch.bfloat16)
    routing = topk_route(logits, top_k=2)
    exact = topk_route(logits.float(), top_k=2)  # the same logits, routed in float32
    assert routing.probs.dtype == routing.weights.dtype == torch.bfloat16
    assert torch.equal(routing.indices, exact.indices)
    assert torch.equal(routing.probs, exact.probs.to(torch.bfloat16))
    assert torch.equal(routing.weights, exact.weights.to(torch.bfloat16))


def test_prompt_layer_under_autocast_routes_its_bf16_logits_in_float32():
    torch.manual_seed(0)
    layer = SparsePrompt(dim=16, prompt_dim=8, prompt_size=4, num_prompts=5, top_k=1)
    x = torch.rand(8, 16, 12, 12)
    with CPU_BF16:
        prompt, routing = layer(x, return_routing=True)
        logits = layer.router(x.mean(dim=(-2, -1)))
    assert logits.dtype == torch.bfloat16 and prompt.dtype == torch.bfloat16
    assert torch.equal(routing.probs, logits.float().softmax(dim=-1).to(torch.bfloat16))


def test_cpr_loss_under_autocast_is_float32_and_close_to_float32():
    g = torch.Generator().manual_seed(0)
    anchor, positive = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    negatives = torch.rand(2, 3, 3, 32, 32, generator=g)
    loss = ContrastivePromptLoss()
    exact = loss(anchor, positive, negatives)
    with CPU_BF16:
        mixed = loss(anchor, positive, negatives)
    assert mixed.dtype == torch.float32
    # the feature convolutions ran in bfloat16 (8 bits of mantissa): close, not equal
    assert mixed.item() == pytest.approx(exact.item(), rel=2e-2)
    assert mixed.item() != exact.item()
    # bfloat16 inputs outside autocast: worked out in float32, returned in bfloat16 -- the
    # rounding of the inputs and of the result alone, not a bfloat16 normalisation
    low_inputs = [t.bfloat16() for t in (anchor, positive, negatives)]
    low = contrastive_prompt_loss(*low_inputs, mode="infonce", features=PixelFeatures())
    worked_out = contrastive_prompt_loss(
        *[t.float() for t in low_inputs], mode="infonce", features=PixelFeatures()
    )
    assert low.dtype == torch.bfloat16
    assert low == worked_out.bfloat16()


def test_metrics_under_autocast_equal_the_float32_ones():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    with CPU_BF16:
        mixed_ssim, mixed_psnr = ssim(x, y), psnr(x, y)
    assert torch.equal(mixed_ssim, ssim(x, y)) and mixed_ssim.dtype == torch.float32
    assert torch.equal(mixed_psnr, psnr(x, y))


def test_bf16_training_follows_the_fp32_loss_curve(tmp_path):
    fp32 = make_trainer(tmp_path / "fp32", steps=3)
    fp32.fit()
    bf16 = make_trainer(tmp_path / "bf16", steps=3, precision="bf16")
    bf16.fit()
    losses = [r["loss"] for r in bf16.history]
    assert losses == pytest.approx([r["loss"] for r in fp32.history], rel=3e-2)
    assert losses != [r["loss"] for r in fp32.history]  # it did run in bfloat16
