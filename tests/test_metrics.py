import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from skimage.color import rgb2gray, rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from contrastive_prompts._checks import InputError
from contrastive_prompts.app.data import sample_images
from contrastive_prompts.app.metrics import (
    EvaluationResult,
    crop_border,
    crop_to_multiple,
    evaluate,
    pad_to_multiple,
    psnr,
    rgb_to_y,
    ssim,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sk_psnr(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    return [
        peak_signal_noise_ratio(b.double().numpy(), a.double().numpy(), data_range=1)
        for a, b in zip(x, y, strict=True)
    ]


def sk_ssim(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    out = []
    for a, b in zip(x, y, strict=True):
        a, b = a.double().numpy(), b.double().numpy()
        if a.shape[0] == 1:
            out.append(structural_similarity(a[0], b[0], data_range=1))
        else:
            out.append(structural_similarity(a, b, data_range=1, channel_axis=0))
    return out


@settings(deadline=None, max_examples=15)
@given(
    b=st.integers(1, 3),
    c=st.sampled_from([1, 3]),
    h=st.integers(7, 41),
    w=st.integers(7, 41),
    noise=st.floats(0.001, 0.5),
    seed=st.integers(0, 2**16),
)
def test_match_skimage_on_random_images(b, c, h, w, noise, seed):
    g = gen(seed)
    y = torch.rand(b, c, h, w, generator=g)
    x = (y + noise * torch.randn(b, c, h, w, generator=g)).clamp(0, 1)
    assume(bool(((x - y).abs().amax(dim=(1, 2, 3)) > 0).all()))
    assert np.allclose(psnr(x, y).numpy(), sk_psnr(x, y), atol=1e-4, rtol=0)
    assert np.allclose(ssim(x, y).numpy(), sk_ssim(x, y), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
@pytest.mark.parametrize("grey", [False, True])
def test_match_skimage_on_real_photos(name, grey):
    image = sample_images([name])[name]
    image = image[:, :201, :157]  # odd sizes
    if grey:
        image = torch.from_numpy(rgb2gray(image.permute(1, 2, 0).numpy())).float()[None]
    clean = image[None]
    restored = (clean + 0.03 * torch.randn(clean.shape, generator=gen(0))).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1)
    x = torch.cat([restored, blurred])
    y = torch.cat([clean, clean])
    assert np.allclose(psnr(x, y).numpy(), sk_psnr(x, y), atol=1e-4, rtol=0)
    assert np.allclose(ssim(x, y).numpy(), sk_ssim(x, y), atol=1e-5, rtol=0)


def test_y_channel_matches_skimage_rgb2ycbcr():
    image = sample_images(["coffee"])["coffee"][:, :99, :121]
    x = image[None]
    y = (x + 0.05 * torch.randn(x.shape, generator=gen(0))).clamp(0, 1)
    y_ref_x = rgb2ycbcr(x[0].permute(1, 2, 0).double().numpy())[..., 0] / 255
    y_ref_y = rgb2ycbcr(y[0].permute(1, 2, 0).double().numpy())[..., 0] / 255
    assert np.allclose(rgb_to_y(x.double())[0, 0].numpy(), y_ref_x, atol=1e-12)
    expected_psnr = peak_signal_noise_ratio(y_ref_x, y_ref_y, data_range=1)
    expected_ssim = structural_similarity(y_ref_x, y_ref_y, data_range=1)
    assert psnr(y, x, y_channel=True).item() == pytest.approx(expected_psnr, abs=1e-4)
    assert ssim(y, x, y_channel=True).item() == pytest.approx(expected_ssim, abs=1e-5)
    assert rgb_to_y(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16 / 255)


def test_border_crop_equals_cropping_first():
    x, y = torch.rand(2, 2, 3, 30, 30, generator=gen(0))
    assert torch.allclose(psnr(x, y, border=4), psnr(x[..., 4:-4, 4:-4], y[..., 4:-4, 4:-4]))
    assert torch.allclose(ssim(x, y, border=4), ssim(x[..., 4:-4, 4:-4], y[..., 4:-4, 4:-4]))


def test_closed_forms_and_per_image_values():
    y = torch.full((2, 3, 16, 16), 0.5)
    x = y.clone()
    x[0] += 0.1
    x[1] += 0.01
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 40.0]), atol=1e-4)
    # per image, not pooled: the batch mean is the mean of per-image PSNRs
    assert psnr(x, y, reduction="mean").item() == pytest.approx(30.0, abs=1e-4)
    assert psnr(x, y, reduction="sum").item() == pytest.approx(60.0, abs=1e-4)
    assert psnr(y, y).isinf().all()
    z = torch.rand(2, 3, 16, 16, generator=gen(0))
    assert torch.allclose(ssim(z, z), torch.ones(2))
    assert ssim(z, 1 - z).max() < 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_input(dtype):
    x, y = torch.rand(2, 1, 3, 9, 9, generator=gen(0), dtype=dtype)
    assert psnr(x, y).dtype == dtype and ssim(x, y).dtype == dtype
    assert psnr(x, y).shape == (1,) and ssim(x, y, reduction="mean").shape == ()


def test_bad_input_messages():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(
        InputError, match=r"psnr: expected x of shape \(B, C, H, W\), got \(3, 8, 8\)"
    ):
        psnr(x[0], x[0])
    with pytest.raises(
        InputError,
        match=r"ssim: expected y of the same shape as x \(1, 3, 8, 8\), got \(1, 3, 8, 9\)",
    ):
        ssim(x, torch.rand(1, 3, 8, 9))
    with pytest.raises(InputError, match=r"ssim: expected images of at least 7x7 pixels, got 6x8"):
        ssim(x[..., :6, :], x[..., :6, :])
    with pytest.raises(InputError, match=r"after the border crop, got 4x4"):
        ssim(x, x, border=2)
    with pytest.raises(InputError, match=r"expected reduction to be one of 'none', 'mean', 'sum'"):
        psnr(x, x, reduction="avg")
    with pytest.raises(
        InputError, match=r"expected x to be a floating-point tensor, got torch.uint8"
    ):
        psnr(x.to(torch.uint8), x.to(torch.uint8))
    with pytest.raises(InputError, match=r"expected data_range to be a number > 0, got 0"):
        psnr(x, x, data_range=0)
    with pytest.raises(InputError, match=r"rgb_to_y: expected x of shape \(B, 3, H, W\)"):
        psnr(x[:, :1], x[:, :1], y_channel=True)
    with pytest.raises(InputError, match=r"crop_border: expected border < half"):
        crop_border(x, 4)
    with pytest.raises(
        InputError, match=r"expected multiple to be an integer in \[1, 256\], got 0"
    ):
        pad_to_multiple(x, 0)


@settings(deadline=None, max_examples=15)
@given(h=st.integers(1, 40), w=st.integers(1, 40), m=st.integers(1, 17), seed=st.integers(0, 99))
def test_pad_and_crop_to_multiple(h, w, m, seed):
    x = torch.rand(1, 2, h, w, generator=gen(seed))
    padded = pad_to_multiple(x, m)
    assert padded.shape[-2] % m == 0 and padded.shape[-1] % m == 0
    assert padded.shape[-2] - h < m and padded.shape[-1] - w < m
    assert torch.equal(padded[..., :h, :w], x)
    assume(h >= m and w >= m)
    cropped = crop_to_multiple(x, m)
    assert cropped.shape[-2] % m == 0 and h - cropped.shape[-2] < m
    assert torch.equal(cropped, x[..., : cropped.shape[-2], : cropped.shape[-1]])


# ---------------------------------------------------------------------------------------------
# evaluate


class _Pairs(torch.utils.data.Dataset):
    """Clean images and degraded = clean + offset[label], of odd sizes."""

    names = ("light", "heavy")

    def __init__(self):
        g = gen(0)
        self.items = []
        for i in range(5):
            clean = torch.rand(3, 19 + i, 23, generator=g) * 0.5 + 0.2
            label = i % 2
            self.items.append((clean + (0.01 if label == 0 else 0.1), clean, torch.tensor(label)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Identity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        assert not self.training
        return x * self.scale


def test_evaluate_per_degradation_table():
    data = _Pairs()
    model = _Identity()
    model.train()
    result = evaluate(model, data, pad_multiple=16)
    assert model.training  # mode restored
    assert all(s[-2] % 16 == 0 and s[-1] % 16 == 0 for s in model.shapes)
    assert result.names == ["light", "heavy"]
    assert result.count == {"light": 3, "heavy": 2}
    assert result.psnr["light"] == pytest.approx(40.0, abs=1e-3)
    assert result.psnr["heavy"] == pytest.approx(20.0, abs=1e-3)
    assert result.average_psnr == pytest.approx(30.0, abs=1e-3)
    expected_ssim = [ssim(d[None], c[None]).item() for d, c, lab in data.items if int(lab) == 1]
    assert result.ssim["heavy"] == pytest.approx(np.mean(expected_ssim), abs=1e-6)
    table = result.to_markdown()
    assert "| heavy | 2 | 20.00 |" in table and "| average | 5 | 30.00 |" in table


def test_evaluate_loader_and_clamp():
    clean = torch.full((4, 3, 12, 12), 0.9)
    labels = torch.tensor([0, 0, 1, 1])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(clean, clean, labels), batch_size=2
    )
    # the model overshoots to 1.3; the evaluator clamps to 1, so PSNR is 20 dB
    result = evaluate(lambda x: x + 0.4, loader, names=["a", "b"], pad_multiple=8)
    assert result.count == {"a": 2, "b": 2}
    assert result.psnr["a"] == pytest.approx(20.0, abs=1e-3)
    assert isinstance(result, EvaluationResult) and not math.isnan(result.average_ssim)


def test_evaluate_bad_input():
    with pytest.raises(InputError, match=r"evaluate: expected model to be callable, got int"):
        evaluate(3, [])
    with pytest.raises(
        InputError, match=r"expected pad_multiple to be an integer in \[1, 256\], got 0"
    ):
        evaluate(lambda x: x, [], pad_multiple=0)


@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize("data_range", [float("inf"), float("nan")])
def test_data_range_must_be_finite(metric, data_range):
    x = torch.rand(1, 3, 8, 8, generator=gen(0))
    with pytest.raises(
        InputError,
        match=rf"{metric.__name__}: expected data_range to be a finite number > 0, "
        rf"got {data_range}",
    ):
        metric(x, x, data_range=data_range)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_empty_batch(metric):
    x = torch.rand(0, 3, 8, 8)
    assert metric(x, x).shape == (0,)
    assert metric(x, x, reduction="sum").item() == 0
    with pytest.raises(
        InputError,
        match=rf"{metric.__name__}: expected at least one image for reduction='mean', got an "
        r"empty batch \(0, 3, 8, 8\)",
    ):
        metric(x, x, reduction="mean")
