"""What the sensor and the file do: low light (with its shot and read noise), JPEG compression."""

from __future__ import annotations

import kornia
import torch
from torch import Tensor, nn

from contrastive_prompts._checks import (
    InputError,
)

from ._ranges import (
    Range,
    _check_image,
    _draw,
    _per_sample,
    check_range,
    noise_std_range,
    unit_range,
)

__all__ = ["JpegCompression", "LowLight", "jpeg_compression", "low_light"]

_MAX_GAMMA = 10.0  # x ** 10 already takes 0.5 to 0.001
_MAX_PHOTONS = 1e6  # shot noise of 0.1 % at full scale, under one 8-bit level; torch.poisson
# overflows past about 9e18


def _low_light_ranges(
    where: str, gamma: object, gain: object, photons: object, read_sigma: object
) -> tuple[tuple[float, float], ...]:
    return (
        check_range(where, "gamma", gamma, low=0.0, high=_MAX_GAMMA),
        unit_range(where, "gain", gain),
        check_range(where, "photons", photons, low=1e-3, high=_MAX_PHOTONS),
        noise_std_range(where, "read_sigma", read_sigma),
    )


def _quality_range(where: str, quality: object) -> tuple[float, float]:
    return check_range(where, "quality", quality, low=1.0, high=100.0)


def low_light(
    x: Tensor,
    *,
    gamma: Range = (1.5, 3.0),
    gain: Range = (0.3, 0.7),
    photons: Range = (50.0, 500.0),
    read_sigma: Range = (1.0, 5.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Under-exposure with Poisson-Gaussian sensor noise.

    $y = \mathrm{Poisson}(p\, g\, x^{\gamma}) / p + n$, $n \sim \mathcal{N}(0, (\sigma_r/255)^2)$:
    a gamma curve and a gain darken the image, $p$ photons per unit intensity set the shot noise
    and $\sigma_r$ (0-255 scale) the read noise.

    Args:
        x: clean images in [0, 1].
        gamma: exponent in [0, 10] ($\geq 1$ darkens).
        gain: exposure gain in [0, 1].
        photons: photons per unit intensity, in [0.001, 1e6]; fewer photons mean more shot
            noise (at 1e6 it is under one 8-bit level).
        read_sigma: read-noise std on the 0-255 scale, in [0, 255].
        generator: source of randomness, on x's device.

    Every option is a value or a ``(low, high)`` range drawn per sample.

    Shape:
        - x: $(B, C, H, W)$.
        - output: same as ``x``.

    Returns:
        The dark, noisy images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> low_light(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """
    where = "low_light"
    _check_image(where, x)
    ranges = _low_light_ranges(where, gamma, gain, photons, read_sigma)
    g, k, p, r = (_per_sample(_draw(bounds, x, generator)) for bounds in ranges)
    dark = k * x.clamp(0, 1) ** g
    shot = torch.poisson(dark * p, generator=generator) / p
    read = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * (r / 255)
    return (shot + read).clamp(0, 1)


class LowLight(nn.Module):
    r"""Module form of [low_light][contrastive_prompts.app.degradations.low_light].

    Every option is a value or a ``(low, high)`` range drawn per sample.

    Args:
        gamma: exponent in [0, 10] ($\geq 1$ darkens).
        gain: exposure gain in [0, 1].
        photons: photons per unit intensity, in [0.001, 1e6]; fewer photons mean more shot
            noise (at 1e6 it is under one 8-bit level).
        read_sigma: read-noise std on the 0-255 scale, in [0, 255].

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> LowLight(gamma=2.0)(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(
        self,
        *,
        gamma: Range = (1.5, 3.0),
        gain: Range = (0.3, 0.7),
        photons: Range = (50.0, 500.0),
        read_sigma: Range = (1.0, 5.0),
    ) -> None:
        super().__init__()
        ranges = _low_light_ranges(type(self).__name__, gamma, gain, photons, read_sigma)
        self.gamma, self.gain, self.photons, self.read_sigma = ranges

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Darken ``x``, drawing every option per sample from the stored ranges."""
        return low_light(
            x, gamma=self.gamma, gain=self.gain, photons=self.photons,
            read_sigma=self.read_sigma, generator=generator,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, gain={self.gain}, photons={self.photons}, "
            f"read_sigma={self.read_sigma}"
        )


def jpeg_compression(
    x: Tensor, quality: Range = (10.0, 50.0), *, generator: torch.Generator | None = None
) -> Tensor:
    r"""JPEG compression artefacts through `kornia.enhance.jpeg_codec_differentiable`.

    The codec quantises the 8x8 DCT of the YCbCr image (4:2:0 chroma) with the standard tables
    scaled by ``quality``; it is differentiable. Grey images go through the codec as three equal
    channels and come back as their mean.

    Args:
        x: clean images in [0, 1], 1 or 3 channels.
        quality: JPEG quality in [1, 100], a value or a range drawn per sample.
        generator: source of randomness, on x's device.

    Shape:
        - x: $(B, C, H, W)$ with $C \in \{1, 3\}$.
        - output: same as ``x``.

    Returns:
        The decoded images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> jpeg_compression(torch.rand(2, 3, 16, 16), 30.0).shape
        torch.Size([2, 3, 16, 16])
    """
    where = "jpeg_compression"
    _check_image(where, x)
    if x.shape[1] not in (1, 3):
        raise InputError(f"{where}: expected x with 1 or 3 channels, got {x.shape[1]}")
    bounds = _quality_range(where, quality)
    q = _draw(bounds, x, generator)
    if x.shape[0] == 0:
        return x.clone()
    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    out = kornia.enhance.jpeg_codec_differentiable(rgb, q)
    if x.shape[1] == 1:
        out = out.mean(dim=1, keepdim=True)
    return out.clamp(0, 1)


class JpegCompression(nn.Module):
    """Module form of [jpeg_compression][contrastive_prompts.app.degradations.jpeg_compression].

    Args:
        quality: JPEG quality in [1, 100], a value or a range drawn per sample.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1] with $C$ = 1 or 3; output: the same.

    Examples:
        >>> JpegCompression(quality=20.0)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, quality: Range = (10.0, 50.0)) -> None:
        super().__init__()
        self.quality = _quality_range(type(self).__name__, quality)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Compress ``x``, drawing the quality per sample from the stored range."""
        return jpeg_compression(x, self.quality, generator=generator)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"
