"""Gaussian noise."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._ranges import Range, _check_image, _draw, _per_sample, noise_std_range

__all__ = ["GaussianNoise", "gaussian_noise"]


def gaussian_noise(
    x: Tensor,
    sigma: Range = 25.0,
    *,
    clip: bool = True,
    quantize: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Add white Gaussian noise, $y = x + n$, $n \sim \mathcal{N}(0, (\sigma/255)^2)$ per pixel.

    Args:
        x: clean images in [0, 1].
        sigma: noise standard deviation on the 0-255 scale, in [0, 255], a value or a
            ``(low, high)`` range drawn per sample.
        clip: clamp the result to [0, 1]. Without it (and without ``quantize``) the noise is exact.
        quantize: follow the PromptIR protocol: round ``x`` to 8 bits, add the noise on the 0-255
            scale, clip to [0, 255] and truncate to an integer as numpy's ``astype(uint8)`` does.
        generator: source of randomness, on x's device.

    Shape:
        - x: $(B, C, H, W)$.
        - output: same as ``x``.

    Returns:
        The noisy images, in x's dtype.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> x = torch.full((1, 3, 8, 8), 0.5)
        >>> y = gaussian_noise(x, 25.0, generator=torch.Generator().manual_seed(0))
        >>> y.shape
        torch.Size([1, 3, 8, 8])
    """
    where = "gaussian_noise"
    _check_image(where, x)
    bounds = noise_std_range(where, "sigma", sigma)
    s = _per_sample(_draw(bounds, x, generator))
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if quantize:
        clean = torch.round(x.clamp(0, 1) * 255)
        return torch.floor((clean + noise * s).clamp(0, 255)) / 255
    y = x + noise * (s / 255)
    return y.clamp(0, 1) if clip else y


class GaussianNoise(nn.Module):
    """Module form of [gaussian_noise][contrastive_prompts.app.degradations.gaussian_noise].

    Args:
        sigma: noise standard deviation on the 0-255 scale, in [0, 255], a value or a range.
        clip: clamp the result to [0, 1].
        quantize: 8-bit quantisation as the PromptIR protocol does.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> GaussianNoise(sigma=(15.0, 50.0))(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, sigma: Range = 25.0, *, clip: bool = True, quantize: bool = False) -> None:
        super().__init__()
        self.sigma = noise_std_range(type(self).__name__, "sigma", sigma)
        self.clip = clip
        self.quantize = quantize

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Add noise to ``x``, drawing ``sigma`` per sample from the stored range."""
        return gaussian_noise(
            x, self.sigma, clip=self.clip, quantize=self.quantize, generator=generator
        )

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, clip={self.clip}, quantize={self.quantize}"
