"""Blur: Gaussian (the optics) and motion (the camera moving)."""

from __future__ import annotations

import kornia
import torch
from torch import Tensor, nn

from ._ranges import (
    Range,
    _check_image,
    _draw,
    _line_kernels,
    _odd_size,
    angle_range,
    length_range,
    std_range,
)

__all__ = ["GaussianBlur", "MotionBlur", "gaussian_blur", "motion_blur"]


def gaussian_blur(
    x: Tensor, sigma: Range = (0.5, 3.0), *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Isotropic Gaussian blur, $y = k_\sigma * x$, through `kornia.filters.gaussian_blur2d`.

    The kernel spans $\pm 3\sigma$ of the largest ``sigma``; borders replicate the edge pixels.

    Args:
        x: clean images in [0, 1].
        sigma: blur std in pixels, in [0.001, (max(H, W, 64) - 1) / 6]: its kernel,
            6 ``sigma`` + 1 pixels, at most the image's larger side or 64 pixels if that is
            more; a value or a range drawn per sample.
        generator: source of randomness, on x's device.

    Shape:
        - x: $(B, C, H, W)$.
        - output: same as ``x``.

    Returns:
        The blurred images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> gaussian_blur(torch.rand(2, 3, 16, 16), 1.5).shape
        torch.Size([2, 3, 16, 16])
    """
    where = "gaussian_blur"
    _check_image(where, x)
    bounds = std_range(where, "sigma", sigma, x)
    s = _draw(bounds, x, generator)
    ksize = _odd_size(6 * bounds[1] + 1)
    out = kornia.filters.gaussian_blur2d(
        x, ksize, torch.stack([s, s], dim=1), border_type="replicate"
    )
    return out.clamp(0, 1)


class GaussianBlur(nn.Module):
    """Module form of [gaussian_blur][contrastive_prompts.app.degradations.gaussian_blur].

    Args:
        sigma: blur std in pixels (>= 0.001; at most ``(max(H, W, 64) - 1) / 6`` of the
            images it is called on, checked at the call), a value or a range drawn per sample.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> GaussianBlur(sigma=2.0)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, sigma: Range = (0.5, 3.0)) -> None:
        super().__init__()
        self.sigma = std_range(type(self).__name__, "sigma", sigma)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Blur ``x``, drawing ``sigma`` per sample from the stored range."""
        return gaussian_blur(x, self.sigma, generator=generator)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def motion_blur(
    x: Tensor,
    length: Range = (5.0, 21.0),
    *,
    angle: Range = (0.0, 180.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Linear motion blur, $y = k_{L,\theta} * x$, with a per-sample line kernel.

    Each sample gets its own anti-aliased line kernel of ``length`` pixels at ``angle`` degrees
    (counter-clockwise from the horizontal), the per-sample equivalent of
    `kornia.filters.motion_blur`, applied with `kornia.filters.filter2d`; borders
    replicate the edge pixels.

    Args:
        x: clean images in [0, 1].
        length: blur length in pixels, in [1, max(H, W, 64)]: at most the image's larger side,
            or 64 pixels if that is more (the kernel is that long); a value or a range drawn
            per sample.
        angle: motion direction in degrees, in [-360, 360], a value or a range drawn per
            sample.
        generator: source of randomness, on x's device.

    Shape:
        - x: $(B, C, H, W)$.
        - output: same as ``x``.

    Returns:
        The blurred images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> motion_blur(torch.rand(2, 3, 16, 16), 9.0, angle=45.0).shape
        torch.Size([2, 3, 16, 16])
    """
    where = "motion_blur"
    _check_image(where, x)
    len_r = length_range(where, "length", length, x)
    ang_r = angle_range(where, "angle", angle)
    ln = _draw(len_r, x, generator)
    ang = _draw(ang_r, x, generator)
    kernels = _line_kernels(ln, ang, _odd_size(len_r[1]))
    return kornia.filters.filter2d(x, kernels, border_type="replicate").clamp(0, 1)


class MotionBlur(nn.Module):
    """Module form of [motion_blur][contrastive_prompts.app.degradations.motion_blur].

    Args:
        length: blur length in pixels (>= 1; at most ``max(H, W, 64)`` of the images it is
            called on, checked at the call), a value or a range drawn per sample.
        angle: motion direction in degrees, in [-360, 360], a value or a range drawn per
            sample.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> MotionBlur(length=11.0)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, length: Range = (5.0, 21.0), *, angle: Range = (0.0, 180.0)) -> None:
        super().__init__()
        self.length = length_range(type(self).__name__, "length", length)
        self.angle = angle_range(type(self).__name__, "angle", angle)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Blur ``x``, drawing the length and angle per sample from the stored ranges."""
        return motion_blur(x, self.length, angle=self.angle, generator=generator)

    def extra_repr(self) -> str:
        return f"length={self.length}, angle={self.angle}"
