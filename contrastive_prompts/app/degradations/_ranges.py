"""What every degradation shares: its options as checked ``(low, high)`` ranges, per-sample
draws, line kernels, and the Module half of each function + Module pair."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

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


def _as_range(
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


# the bounds of the options whose values have a natural domain
_MAX_SIGMA_255 = 255.0  # a noise std on the 0-255 scale: beyond, the image is noise alone


_MAX_ANGLE = 360.0  # degrees, either way


_MAX_GAMMA = 10.0  # x ** 10 already takes 0.5 to 0.001


_MAX_PHOTONS = 1e6  # shot noise of 0.1 % at full scale, under one 8-bit level; torch.poisson


# overflows past about 9e18
_REACH_FLOOR = 64  # the longest blur or streak any image may have, in pixels


@dataclass(frozen=True)
class _Bounds:
    """The bounds of a ranged option: ``[low, high]``, or with ``kernel`` a high bound that the
    image sets at the call: ``"length"``, a kernel of at most ``max(H, W, 64)`` pixels;
    ``"sigma"``, a Gaussian std whose kernel (6 std + 1 pixels) is no longer. A Module checks
    ``low`` at construction and leaves the image's bound to the call."""

    low: float | None = None
    high: float | None = None
    kernel: Literal["length", "sigma"] | None = None

    def check(
        self, where: str, name: str, value: object, x: Tensor | None = None
    ) -> tuple[float, float]:
        """``value`` as a checked ``(lo, hi)`` range; the image's bound only when ``x`` is given."""
        if self.kernel is None or x is None:
            return _as_range(where, name, value, low=self.low, high=self.high)
        h, w = x.shape[-2:]
        reach = max(h, w, _REACH_FLOOR)
        why = f"the longest kernel on {h}x{w} images: their larger side, or 64 if more"
        if self.kernel == "length":
            return _as_range(where, name, value, low=self.low, high=float(reach), note=why)
        note = f"a kernel of 6 {name} + 1 pixels, at most {reach}, {why}"
        return _as_range(where, name, value, low=self.low, high=(reach - 1) / 6, note=note)


_UNIT = _Bounds(0.0, 1.0)


_AT_LEAST_0 = _Bounds(0.0)


_NOISE_STD = _Bounds(0.0, _MAX_SIGMA_255)


_ANGLE = _Bounds(-_MAX_ANGLE, _MAX_ANGLE)


_LENGTH = _Bounds(1.0, kernel="length")  # pixels


_STD = _Bounds(1e-3, kernel="sigma")  # pixels


# the ranged options of each function, in the order they are checked (and drawn); its Module
# checks the same (and stores the other options as given)
_OPTIONS: dict[str, dict[str, _Bounds]] = {
    "gaussian_noise": {"sigma": _NOISE_STD},
    "random_depth": {"depth_range": _AT_LEAST_0},
    "haze": {"beta": _AT_LEAST_0, "airlight": _UNIT, "depth_range": _AT_LEAST_0},
    "rain_streaks": {
        "density": _UNIT,
        "length": _LENGTH,
        "angle": _ANGLE,
        "width": _STD,
        "brightness": _UNIT,
        "alpha": _UNIT,
    },
    "snow": {
        "veil": _UNIT,
        "density": _UNIT,
        "size": _STD,
        "length": _LENGTH,
        "angle": _ANGLE,
        "brightness": _UNIT,
        "alpha": _UNIT,
    },
    "gaussian_blur": {"sigma": _STD},
    "motion_blur": {"length": _LENGTH, "angle": _ANGLE},
    "low_light": {
        "gamma": _Bounds(0.0, _MAX_GAMMA),
        "gain": _UNIT,
        "photons": _Bounds(1e-3, _MAX_PHOTONS),
        "read_sigma": _NOISE_STD,
    },
    "jpeg_compression": {"quality": _Bounds(1.0, 100.0)},
}


def _ranges(where: str, x: Tensor, **values: object) -> list[tuple[float, float]]:
    """Check the options of function ``where`` on images ``x``, in order, as ``(lo, hi)`` ranges."""
    table = _OPTIONS[where]
    return [table[name].check(where, name, value, x) for name, value in values.items()]


def check_noise_sigma(where: str, sigma: object) -> None:
    """Check one noise std on the 0-255 scale: a finite number in [0, 255]."""
    check_positive(where, "sigma", sigma, allow_zero=True)
    if isinstance(sigma, (int, float)) and sigma > _MAX_SIGMA_255:
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


class _Degradation(nn.Module):
    """The Module of a function + Module pair: it checks its function's ranged options (the
    bounds that need the image wait for the call), stores every option as an attribute, passes
    them to the function and shows them in its repr. A subclass names its ``_function``,
    annotates its options' attributes (for their types) and passes the options by name, in its
    signature's order, to ``__init__``."""

    _function: ClassVar[Callable[..., Tensor]]

    def __init__(self, **options: object) -> None:
        super().__init__()
        where = type(self).__name__
        table = _OPTIONS[type(self)._function.__name__]
        for name, value in options.items():
            setattr(self, name, table[name].check(where, name, value) if name in table else value)
        self._option_names = tuple(options)

    def _options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._option_names}

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Degrade ``x``, drawing the options per sample from the stored ranges.

        Args:
            x: $(B, C, H, W)$ images in [0, 1].
            generator: source of randomness, on x's device.

        Returns:
            The degraded images, of the shape, device and dtype of ``x``.
        """
        return type(self)._function(x, **self._options(), generator=generator)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self._options().items())
