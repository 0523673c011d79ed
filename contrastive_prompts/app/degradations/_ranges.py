"""What every degradation shares: its options' checks, per-sample draws and line kernels.

An option is a value or a ``(low, high)`` range drawn per sample; each check below turns it into a
``(lo, hi)`` pair of floats, or raises [InputError][contrastive_prompts.InputError] naming the
function, the option, its bounds and what came. A function checks its options at its call, a
Module at its construction (a bound set by the image, at its call).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastive_prompts._checks import (
    InputError,
    check_floating,
    check_positive,
    check_shape,
)

Range = float | tuple[float, float]


def _check_image(where: str, x: object) -> None:
    check_shape(where, "x", x, ("B", "C", "H", "W"))
    check_floating(where, "x", x)  # type: ignore[arg-type]


def check_range(
    where: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    note: str = "",
) -> tuple[float, float]:
    """Turn a number or a ``(low, high)`` pair into a checked ``(lo, hi)`` tuple of floats.

    Both values must be finite and within ``[low, high]``; ``note`` (why the bound, in a few
    words) follows the bounds in the message.
    """
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair
    )
    if ok:
        lo, hi = float(pair[0]), float(pair[1])
        ok = lo <= hi and (low is None or lo >= low) and (high is None or hi <= high)
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f">= {low}")
        if high is not None:
            bounds.append(f"<= {high:.6g} ({note})" if note else f"<= {high}")
        within = f" with values {' and '.join(bounds)}" if bounds else ""
        raise InputError(
            f"{where}: expected {name} to be a number or a (low, high) pair with low <= high"
            f"{within}, got {value!r}"
        )
    return lo, hi


def unit_range(where: str, name: str, value: object) -> tuple[float, float]:
    """A share, strength or intensity: in [0, 1]."""
    return check_range(where, name, value, low=0.0, high=1.0)


def angle_range(where: str, name: str, value: object) -> tuple[float, float]:
    """An angle in degrees, in [-360, 360]."""
    return check_range(where, name, value, low=-360.0, high=360.0)


MAX_SIGMA_255 = 255.0
"""The largest noise std on the 0-255 scale: beyond it, the image is noise alone."""


def noise_std_range(where: str, name: str, value: object) -> tuple[float, float]:
    """A noise std on the 0-255 scale, in [0, 255]."""
    return check_range(where, name, value, low=0.0, high=MAX_SIGMA_255)


REACH_FLOOR = 64
"""The longest blur or streak any image may have, in pixels."""


def _reach(x: Tensor | None) -> tuple[float | None, str]:
    """The longest kernel on images ``x`` (``None`` without them), and why, for the message."""
    if x is None:
        return None, ""
    h, w = x.shape[-2:]
    why = f"the longest kernel on {h}x{w} images: their larger side, or 64 if more"
    return float(max(h, w, REACH_FLOOR)), why


def length_range(
    where: str, name: str, value: object, x: Tensor | None = None
) -> tuple[float, float]:
    """A kernel's length in pixels: >= 1, and with images ``x`` at most ``max(H, W, 64)``."""
    reach, why = _reach(x)
    return check_range(where, name, value, low=1.0, high=reach, note=why)


def std_range(where: str, name: str, value: object, x: Tensor | None = None) -> tuple[float, float]:
    """A Gaussian std in pixels: >= 0.001, and with images ``x`` its kernel (6 std + 1 pixels) at
    most ``max(H, W, 64)`` long."""
    reach, why = _reach(x)
    if reach is None:
        return check_range(where, name, value, low=1e-3)
    note = f"a kernel of 6 {name} + 1 pixels, at most {reach:.0f}, {why}"
    return check_range(where, name, value, low=1e-3, high=(reach - 1) / 6, note=note)


def check_noise_sigma(where: str, sigma: object) -> None:
    """Check one noise std on the 0-255 scale: a finite number in [0, 255]."""
    check_positive(where, "sigma", sigma, allow_zero=True)
    if isinstance(sigma, (int, float)) and sigma > MAX_SIGMA_255:
        raise InputError(
            f"{where}: expected sigma to be a number in [0, 255] (a noise std on the 0-255 "
            f"scale), got {sigma!r}"
        )


def _draw(bounds: tuple[float, float], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One uniform draw per sample in ``bounds``, shape ``(B,)``, on x's device and dtype."""
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _per_sample(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _line_kernels(length: Tensor, angle: Tensor, size: int) -> Tensor:
    """Anti-aliased line kernels, one per sample, summing to 1.

    Args:
        length: line lengths in pixels, ``(B,)``.
        angle: angles in degrees, counter-clockwise from the horizontal as displayed, ``(B,)``.
        size: odd kernel side.

    Returns:
        ``(B, size, size)`` kernels.
    """
    r = size // 2
    coords = torch.arange(-r, r + 1, device=length.device, dtype=length.dtype)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    theta = torch.deg2rad(angle).view(-1, 1, 1)
    # image rows grow downwards, so "up" is -row
    along = cols * torch.cos(theta) - rows * torch.sin(theta)
    across = cols * torch.sin(theta) + rows * torch.cos(theta)
    half = length.view(-1, 1, 1) / 2
    w_across = (1 - across.abs()).clamp(min=0)
    w_along = (half + 0.5 - along.abs()).clamp(0, 1)
    kernel = w_across * w_along
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(kernel.dtype).tiny)


def _odd_size(length: float) -> int:
    size = max(3, math.ceil(length))
    return size if size % 2 else size + 1
