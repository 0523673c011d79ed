"""Images of any channel count: grey-scale denoisers train with CPL as RGB networks do.

Pixel-space feature spaces take any count; VGG16 takes RGB and repeats a grey image to it, and
refuses other counts by name when first called.
"""

import functools
import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import (
    ContrastivePromptLoss,
    CPLObjective,
    InputError,
    SparsePrompt,
)
from contrastive_prompts.core import (
    FilterFeatures,
    PixelFeatures,
    PromptFusion,
    VGG16Features,
    contrastive_prompt_loss,
)
from contrastive_prompts.core.loss import MODES

from .test_features import fake_vgg16_state_dict

VGG_REFUSES = (
    "VGG16Features: expected x of shape (B, 3, H, W) or (B, 1, H, W), got {shape}; VGG16 takes "
    "RGB images, or grey-scale ones repeated to RGB; for other channel counts use PixelFeatures "
    "or FilterFeatures, which take any"
)


class ChannelNet(nn.Module):
    """A small restorer of ``channels``-channel images with one prompt stage."""

    def __init__(self, channels: int, width: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.prompt = SparsePrompt(dim=width, prompt_dim=4, prompt_size=4, top_k=1)
        self.fuse = PromptFusion(dim=width, prompt_dim=4, num_heads=2)
        self.tail = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.head(x))
        return x + self.tail(self.fuse(h, self.prompt(h)))


@functools.cache
def vgg(layers=("relu1_2",)) -> VGG16Features:
    """VGG16's first block with random weights (frozen: one instance serves every test)."""
    return VGG16Features(fake_vgg16_state_dict(), layers=layers, layer_weights=(1.0,) * len(layers))


def images(seed: int, channels: int, batch: int = 2, m: int = 2, size: int = 12):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, channels, size, size, generator=g)
    y = torch.rand(batch, channels, size, size, generator=g)
    n = torch.rand(batch, m, channels, size, size, generator=g)
    return a, y, n


@pytest.mark.parametrize(
    ("channels", "features"),
    [(1, None), (2, None), (4, None), (1, "vgg")],
    ids=["grey", "2-channel", "4-channel", "grey-vgg"],
)
def test_a_network_of_any_channel_count_trains_a_step(channels, features):
    torch.manual_seed(0)
    model = ChannelNet(channels)
    loss = ContrastivePromptLoss(features=vgg() if features == "vgg" else None)
    objective = CPLObjective(weight=1.0, num_negatives=2, loss=loss)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    degraded = torch.rand(2, channels, 16, 16, generator=g)
    clean = torch.rand(2, channels, 16, 16, generator=g)
    before = [p.detach().clone() for p in model.parameters()]

    parts = objective(model, degraded, clean, generator=g)
    parts.loss.backward()
    optimiser.step()

    assert parts.output.shape == (2, channels, 16, 16)
    assert torch.isfinite(parts.loss) and parts.cpr != 0  # the contrastive term took part
    assert all(p.grad is not None for p in model.parameters())
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    m=st.integers(1, 3),
    size=st.integers(4, 12),
)
def test_vgg_scores_a_grey_image_as_its_rgb_copy(seed, batch, m, size):
    features = vgg(("relu1_1", "relu1_2"))
    a, y, n = images(seed, 1, batch, m, size)
    for mode in MODES:
        grey = contrastive_prompt_loss(a, y, n, mode=mode, features=features, reduction="none")
        rgb = contrastive_prompt_loss(
            a.repeat(1, 3, 1, 1),
            y.repeat(1, 3, 1, 1),
            n.repeat(1, 1, 3, 1, 1),
            mode=mode,
            features=features,
            reduction="none",
        )
        torch.testing.assert_close(grey, rgb, rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 2**16), m=st.integers(1, 3), temperature=st.floats(0.05, 2.0))
def test_filter_features_on_an_rgb_copy_scale_distances_by_one_over_root_three(
    seed, m, temperature
):
    # Every FilterFeatures map of the copy holds each grey value three times: L2-normalised over
    # its 9 channels, each is the grey map's normalised value over sqrt(3), and the mean absolute
    # distance is 1 / sqrt(3) times the grey one. Hence closed forms per mode.
    a, y, n = (t.double() for t in images(seed, 1, m=m))
    copy = a.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1), n.repeat(1, 1, 3, 1, 1)

    def loss(images, mode, temperature=0.1, eps=1e-6):
        return contrastive_prompt_loss(
            *images, mode=mode, temperature=temperature, eps=eps, reduction="none"
        )

    root3 = math.sqrt(3.0)
    torch.testing.assert_close(loss(copy, "subtractive"), loss((a, y, n), "subtractive") / root3)
    torch.testing.assert_close(loss(copy, "ratio", eps=1e-6 / root3), loss((a, y, n), "ratio"))
    torch.testing.assert_close(
        loss(copy, "infonce", temperature), loss((a, y, n), "infonce", temperature * root3)
    )


def test_pixel_features_of_a_grey_image_keep_only_signs_when_normalised():
    # The documented reason to use FilterFeatures, not PixelFeatures, for grey images.
    a, y, n = images(0, 1)
    pixels = PixelFeatures()
    assert contrastive_prompt_loss(a, y, n, features=pixels) == 0
    assert contrastive_prompt_loss(a, y, n, features=pixels, normalize=False) < 0
    assert contrastive_prompt_loss(a, y, n, features=FilterFeatures()) < 0


@pytest.mark.parametrize("channels", [2, 4])
def test_vgg_refuses_other_channel_counts_by_name(channels):
    a, y, n = images(0, channels)
    shape = f"(2, {channels}, 12, 12)"
    with pytest.raises(InputError, match=re.escape(VGG_REFUSES.format(shape=shape))):
        contrastive_prompt_loss(a, y, n, features=vgg())
    # at the objective's first call
    objective = CPLObjective(num_negatives=2, loss=ContrastivePromptLoss(features=vgg()))
    with pytest.raises(InputError, match=re.escape(VGG_REFUSES.format(shape=shape))):
        objective(ChannelNet(channels), a, y)


def test_images_without_channels_are_refused():
    empty = torch.rand(2, 0, 8, 8)
    with pytest.raises(
        InputError,
        match=re.escape(
            "CPLObjective: expected degraded with at least one channel (C >= 1), got (2, 0, 8, 8)"
        ),
    ):
        CPLObjective()(ChannelNet(1), empty, empty)
    with pytest.raises(
        InputError,
        match=re.escape(
            "contrastive_prompt_loss: expected anchor with at least one channel (C >= 1), "
            "got (2, 0, 8, 8)"
        ),
    ):
        contrastive_prompt_loss(empty, empty, empty[:, None])
