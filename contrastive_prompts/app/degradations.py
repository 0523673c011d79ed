"""Synthetic degradations for all-in-one restoration, batched and reproducible.

Each degradation is a pure function holding the maths and a thin `torch.nn.Module` that
stores the options and calls it. Every function takes a batch ``(B, C, H, W)`` of float images in
[0, 1], draws its parameters per sample from ranges (a fixed value is the range ``(v, v)``) and
returns a batch of the same shape, device and dtype, clamped to [0, 1]. Randomness comes only from
the optional ``generator``, which must live on the input's device; the same seed gives the same
output. Every range argument always consumes its draw, so two calls that differ only in one
parameter value (for example ``beta``) share every other random draw under the same seed.

Every option has a documented range, checked before anything is allocated: a value outside it,
NaN or infinity raises [InputError][contrastive_prompts.InputError]. The lengths of blurs and
streaks, and the Gaussian stds whose kernels span 6 std + 1 pixels, are bounded by the image:
a kernel is at most ``max(H, W, 64)`` pixels long (the image's larger side, or 64 if that is more),
so a tiny image cannot be asked for a kernel of gigabytes.

[DegradationMix][contrastive_prompts.app.degradations.DegradationMix] applies one (or several) of a
list of named degradations per sample and returns the integer labels of what it applied;
[make_mix][contrastive_prompts.app.degradations.make_mix] builds the 3-task and 5-task mixes of the
papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_prompts._checks import (
    InputError,
    InputTypeError,
    check_choice,
    check_floating,
    check_int_range,
    check_positive,
    check_shape,
)

__all__ = [
    "CDD11",
    "DEGRADATIONS",
    "MIXES",
    "PHYSICAL_ORDER",
    "Composite",
    "DegradationMix",
    "GaussianBlur",
    "GaussianNoise",
    "Haze",
    "JpegCompression",
    "LowLight",
    "MotionBlur",
    "RainStreaks",
    "Snow",
    "gaussian_blur",
    "gaussian_noise",
    "haze",
    "jpeg_compression",
    "low_light",
    "make_mix",
    "motion_blur",
    "rain_streaks",
    "random_depth",
    "snow",
]

Range = float | tuple[float, float]


# ----------------------------------------------------------------------------------------------
# helpers


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


# ----------------------------------------------------------------------------------------------
# Gaussian noise


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
    (bounds,) = _ranges(where, x, sigma=sigma)
    s = _per_sample(_draw(bounds, x, generator))
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if quantize:
        clean = torch.round(x.clamp(0, 1) * 255)
        return torch.floor((clean + noise * s).clamp(0, 255)) / 255
    y = x + noise * (s / 255)
    return y.clamp(0, 1) if clip else y


class GaussianNoise(_Degradation):
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

    _function = gaussian_noise
    sigma: tuple[float, float]
    clip: bool
    quantize: bool

    def __init__(self, sigma: Range = 25.0, *, clip: bool = True, quantize: bool = False) -> None:
        super().__init__(sigma=sigma, clip=clip, quantize=quantize)


# ----------------------------------------------------------------------------------------------
# haze


def random_depth(
    x: Tensor,
    depth_range: tuple[float, float] = (1.0, 10.0),
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A smooth random depth map: a vertical gradient (far at the top) plus low-frequency noise.

    Args:
        x: images whose batch size, size, device and dtype the depth follows.
        depth_range: ``(near, far)`` the depth is scaled to, per sample, in arbitrary units:
            finite, ``0 <= near <= far``.
        generator: source of randomness, on x's device.

    Shape:
        - x: $(B, C, H, W)$.
        - output: $(B, 1, H, W)$.

    Returns:
        Depth, spanning exactly ``depth_range`` in each sample.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> random_depth(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """
    where = "random_depth"
    _check_image(where, x)
    ((near, far),) = _ranges(where, x, depth_range=depth_range)
    b, _, h, w = x.shape
    rows = torch.linspace(1, 0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    coarse = torch.rand((b, 1, 4, 4), generator=generator, device=x.device, dtype=x.dtype)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    d = 0.6 * rows + 0.4 * smooth
    lo = d.amin(dim=(-2, -1), keepdim=True)
    hi = d.amax(dim=(-2, -1), keepdim=True)
    d = (d - lo) / (hi - lo).clamp(min=torch.finfo(x.dtype).eps)
    return near + (far - near) * d


def haze(
    x: Tensor,
    beta: Range = (0.04, 0.2),
    *,
    airlight: Range = (0.8, 1.0),
    depth: Tensor | None = None,
    depth_range: tuple[float, float] = (1.0, 10.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Haze by the atmospheric scattering model, $I = J t + A (1 - t)$, $t = e^{-\beta d}$.

    The defaults follow RESIDE OTS: $A \in [0.8, 1]$ and $\beta \in [0.04, 0.2]$. ``beta = 0``
    returns the input exactly.

    Args:
        x: clean images $J$ in [0, 1].
        beta: scattering coefficient, any finite value >= 0 (large values leave only the
            airlight), a value or a range drawn per sample.
        airlight: global atmospheric light $A$ (grey) in [0, 1], a value or a range drawn per
            sample.
        depth: scene depth $d$; by default a smooth random map from
            [random_depth][contrastive_prompts.app.degradations.random_depth].
        depth_range: ``(near, far)`` of the random depth, finite, ``0 <= near <= far``
            (ignored when ``depth`` is given).
        generator: source of randomness, on x's device.

    Shape:
        - x: $(B, C, H, W)$.
        - depth: $(B, 1, H, W)$.
        - output: same as ``x``.

    Returns:
        The hazy images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> x = torch.rand(1, 3, 8, 8)
        >>> torch.equal(haze(x, 0.0), x)
        True
    """
    where = "haze"
    _check_image(where, x)
    beta_r, air_r = _ranges(where, x, beta=beta, airlight=airlight)
    b_ = _per_sample(_draw(beta_r, x, generator))
    a_ = _per_sample(_draw(air_r, x, generator))
    if depth is None:
        depth = random_depth(x, depth_range, generator=generator)
    else:
        b, _, h, w = x.shape
        check_shape(where, "depth", depth, (b, 1, h, w))
    t = torch.exp(-b_ * depth)
    # J t + A (1 - t), not A + (J - A) t, so that t == 1 gives J bit for bit
    return (x * t + a_ * (1 - t)).clamp(0, 1)


class Haze(_Degradation):
    """Module form of [haze][contrastive_prompts.app.degradations.haze].

    Args:
        beta: scattering coefficient, any finite value >= 0, a value or a range drawn per
            sample.
        airlight: global atmospheric light (grey) in [0, 1], a value or a range drawn per
            sample.
        depth_range: ``(near, far)`` of the random depth map, finite, ``0 <= near <= far``;
            ``forward(x, generator, depth)``
            may pass a depth map instead.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> Haze(beta=0.1)(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    _function = haze
    beta: tuple[float, float]
    airlight: tuple[float, float]
    depth_range: tuple[float, float]

    def __init__(
        self,
        beta: Range = (0.04, 0.2),
        *,
        airlight: Range = (0.8, 1.0),
        depth_range: tuple[float, float] = (1.0, 10.0),
    ) -> None:
        super().__init__(beta=beta, airlight=airlight, depth_range=depth_range)

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None, depth: Tensor | None = None
    ) -> Tensor:
        """Haze ``x``, drawing ``beta`` and the airlight per sample from the stored ranges.

        Args:
            x: $(B, C, H, W)$ clean images in [0, 1].
            generator: source of randomness, on x's device.
            depth: $(B, 1, H, W)$ scene depth; by default a random map in ``depth_range``.

        Returns:
            The hazy images, of the shape, device and dtype of ``x``.
        """
        return haze(x, **self._options(), depth=depth, generator=generator)


# ----------------------------------------------------------------------------------------------
# rain


def rain_streaks(
    x: Tensor,
    *,
    density: Range = (0.002, 0.006),
    length: Range = (10.0, 30.0),
    angle: Range = (-20.0, 20.0),
    width: Range = (0.3, 0.8),
    brightness: Range = (0.6, 1.0),
    alpha: Range = (0.5, 0.9),
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Add translucent rain streaks, blended in screen mode: $y = x + \alpha R (1 - x)$.

    The streak layer $R$ is made by drawing sparse random seed points (each pixel with probability
    ``density``, of random intensity up to ``brightness``), smearing them with a line (motion)
    kernel of ``length`` pixels tilted by ``angle`` degrees from the vertical through
    `kornia.filters.filter2d`, and thickening them with a Gaussian of std ``width`` pixels
    (`kornia.filters.gaussian_blur2d`). Streaks are white and the same in every channel.

    Args:
        x: clean images in [0, 1].
        density: fraction of pixels that seed a streak, in [0, 1].
        length: streak length in pixels, in [1, max(H, W, 64)]: at most the image's larger
            side, or 64 pixels if that is more (the kernel is that long).
        angle: tilt from the vertical in degrees (positive leans right at the top), in
            [-360, 360].
        width: Gaussian std of the streak profile in pixels, in [0.001, (max(H, W, 64) - 1) / 6]
            (its kernel, 6 ``width`` + 1 pixels, no longer than the longest streak).
        brightness: peak streak intensity in [0, 1].
        alpha: blending strength in [0, 1].
        generator: source of randomness, on x's device.

    Every option is a value or a ``(low, high)`` range drawn per sample.

    Shape:
        - x: $(B, C, H, W)$.
        - output: same as ``x``.

    Returns:
        The rainy images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> rain_streaks(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    where = "rain_streaks"
    _check_image(where, x)
    dens_r, len_r, ang_r = _ranges(where, x, density=density, length=length, angle=angle)
    wid_r, bright_r, alp_r = _ranges(where, x, width=width, brightness=brightness, alpha=alpha)
    dens, ln, ang, wid, bright, alp = (
        _draw(bounds, x, generator) for bounds in (dens_r, len_r, ang_r, wid_r, bright_r, alp_r)
    )

    b, _, h, w = x.shape
    u = torch.rand((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
    strength = torch.rand((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
    seeds = (u < _per_sample(dens)).to(x.dtype) * (0.5 + 0.5 * strength) * _per_sample(bright)
    kernels = _line_kernels(ln, 90.0 + ang, _odd_size(len_r[1]))
    # a normalised kernel spreads a seed over ~length pixels; scale back so a streak keeps its
    # seed's intensity
    streaks = kornia.filters.filter2d(seeds, kernels, border_type="constant") * _per_sample(ln)
    ksize = _odd_size(6 * wid_r[1] + 1)
    sig = torch.stack([wid, wid], dim=1)
    streaks = kornia.filters.gaussian_blur2d(streaks, ksize, sig, border_type="constant")
    # the blur lowers a one-pixel line's peak by the centre tap of the 1-D Gaussian; undo that so
    # ``brightness`` stays the streak's peak
    taps = torch.arange(-(ksize // 2), ksize // 2 + 1, device=x.device, dtype=x.dtype)
    peak_gain = torch.exp(-(taps**2) / (2 * wid.view(-1, 1) ** 2)).sum(dim=1)
    streaks = (streaks * _per_sample(peak_gain)).clamp(0, 1)
    return (x + _per_sample(alp) * streaks * (1 - x)).clamp(0, 1)


class RainStreaks(_Degradation):
    """Module form of [rain_streaks][contrastive_prompts.app.degradations.rain_streaks].

    Every option is a value or a ``(low, high)`` range drawn per sample.

    Args:
        density: fraction of pixels that seed a streak, in [0, 1].
        length: streak length in pixels (>= 1; at most ``max(H, W, 64)`` of the images it
            is called on, checked at the call).
        angle: tilt from the vertical in degrees (positive leans right at the top), in
            [-360, 360].
        width: Gaussian std of the streak profile in pixels (>= 0.001; at most
            ``(max(H, W, 64) - 1) / 6``, checked at the call).
        brightness: peak streak intensity in [0, 1].
        alpha: blending strength in [0, 1].

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> RainStreaks(length=20.0)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    _function = rain_streaks
    density: tuple[float, float]
    length: tuple[float, float]
    angle: tuple[float, float]
    width: tuple[float, float]
    brightness: tuple[float, float]
    alpha: tuple[float, float]

    def __init__(
        self,
        *,
        density: Range = (0.002, 0.006),
        length: Range = (10.0, 30.0),
        angle: Range = (-20.0, 20.0),
        width: Range = (0.3, 0.8),
        brightness: Range = (0.6, 1.0),
        alpha: Range = (0.5, 0.9),
    ) -> None:
        super().__init__(
            density=density,
            length=length,
            angle=angle,
            width=width,
            brightness=brightness,
            alpha=alpha,
        )


# ----------------------------------------------------------------------------------------------
# snow


def snow(
    x: Tensor,
    *,
    veil: Range = (0.05, 0.25),
    density: Range = (0.002, 0.006),
    size: Range = (0.7, 1.5),
    length: Range = (1.0, 4.0),
    angle: Range = (-30.0, 30.0),
    brightness: Range = (0.8, 1.0),
    alpha: Range = (0.7, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Falling snow: a white veil, $x' = x + v (1 - x)$, under soft flakes.

    The veil is the snow falling far away; the flakes near the camera are made as
    [rain_streaks][contrastive_prompts.app.degradations.rain_streaks] makes streaks, short
    (``length``) and round (Gaussian std ``size``), and blended over $x'$ in screen mode.

    Args:
        x: clean images in [0, 1].
        veil: strength of the white veil, in [0, 1].
        density: fraction of pixels that seed a flake, in [0, 1].
        size: Gaussian std of a flake in pixels, in [0.001, (max(H, W, 64) - 1) / 6].
        length: how far a flake is smeared by its fall, in pixels, in [1, max(H, W, 64)].
        angle: direction of the fall from the vertical in degrees, in [-360, 360].
        brightness: peak flake intensity in [0, 1].
        alpha: blending strength of the flakes in [0, 1].
        generator: source of randomness, on x's device.

    Every option is a value or a ``(low, high)`` range drawn per sample.

    Shape:
        - x: $(B, C, H, W)$.
        - output: same as ``x``.

    Returns:
        The snowy images.

    Raises:
        InputError: ``x`` is not a float ``(B, C, H, W)`` batch, or an option is outside its
            range, NaN or infinite; checked before anything is allocated.

    Examples:
        >>> snow(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    where = "snow"
    _check_image(where, x)
    veil_r, *_ = _ranges(
        where, x, veil=veil, density=density, size=size, length=length, angle=angle,
        brightness=brightness, alpha=alpha,
    )  # fmt: skip
    v = _per_sample(_draw(veil_r, x, generator))
    veiled = x + v * (1 - x)
    return rain_streaks(
        veiled, density=density, length=length, angle=angle, width=size, brightness=brightness,
        alpha=alpha, generator=generator,
    )  # fmt: skip


class Snow(_Degradation):
    """Module form of [snow][contrastive_prompts.app.degradations.snow].

    Every option is a value or a ``(low, high)`` range drawn per sample.

    Args:
        veil: strength of the white veil, in [0, 1].
        density: fraction of pixels that seed a flake, in [0, 1].
        size: Gaussian std of a flake in pixels (>= 0.001; at most ``(max(H, W, 64) - 1) / 6``,
            checked at the call).
        length: how far a flake is smeared by its fall, in pixels (>= 1; at most
            ``max(H, W, 64)``, checked at the call).
        angle: direction of the fall from the vertical in degrees, in [-360, 360].
        brightness: peak flake intensity in [0, 1].
        alpha: blending strength of the flakes in [0, 1].

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Examples:
        >>> Snow(veil=0.1)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    _function = snow
    veil: tuple[float, float]
    density: tuple[float, float]
    size: tuple[float, float]
    length: tuple[float, float]
    angle: tuple[float, float]
    brightness: tuple[float, float]
    alpha: tuple[float, float]

    def __init__(
        self,
        *,
        veil: Range = (0.05, 0.25),
        density: Range = (0.002, 0.006),
        size: Range = (0.7, 1.5),
        length: Range = (1.0, 4.0),
        angle: Range = (-30.0, 30.0),
        brightness: Range = (0.8, 1.0),
        alpha: Range = (0.7, 1.0),
    ) -> None:
        super().__init__(
            veil=veil, density=density, size=size, length=length, angle=angle,
            brightness=brightness, alpha=alpha,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# blur


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
    (bounds,) = _ranges(where, x, sigma=sigma)
    s = _draw(bounds, x, generator)
    ksize = _odd_size(6 * bounds[1] + 1)
    out = kornia.filters.gaussian_blur2d(
        x, ksize, torch.stack([s, s], dim=1), border_type="replicate"
    )
    return out.clamp(0, 1)


class GaussianBlur(_Degradation):
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

    _function = gaussian_blur
    sigma: tuple[float, float]

    def __init__(self, sigma: Range = (0.5, 3.0)) -> None:
        super().__init__(sigma=sigma)


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
    len_r, ang_r = _ranges(where, x, length=length, angle=angle)
    ln = _draw(len_r, x, generator)
    ang = _draw(ang_r, x, generator)
    kernels = _line_kernels(ln, ang, _odd_size(len_r[1]))
    return kornia.filters.filter2d(x, kernels, border_type="replicate").clamp(0, 1)


class MotionBlur(_Degradation):
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

    _function = motion_blur
    length: tuple[float, float]
    angle: tuple[float, float]

    def __init__(self, length: Range = (5.0, 21.0), *, angle: Range = (0.0, 180.0)) -> None:
        super().__init__(length=length, angle=angle)


# ----------------------------------------------------------------------------------------------
# low light


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
    ranges = _ranges(where, x, gamma=gamma, gain=gain, photons=photons, read_sigma=read_sigma)
    g, k, p, r = (_per_sample(_draw(bounds, x, generator)) for bounds in ranges)
    dark = k * x.clamp(0, 1) ** g
    shot = torch.poisson(dark * p, generator=generator) / p
    read = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * (r / 255)
    return (shot + read).clamp(0, 1)


class LowLight(_Degradation):
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

    _function = low_light
    gamma: tuple[float, float]
    gain: tuple[float, float]
    photons: tuple[float, float]
    read_sigma: tuple[float, float]

    def __init__(
        self,
        *,
        gamma: Range = (1.5, 3.0),
        gain: Range = (0.3, 0.7),
        photons: Range = (50.0, 500.0),
        read_sigma: Range = (1.0, 5.0),
    ) -> None:
        super().__init__(gamma=gamma, gain=gain, photons=photons, read_sigma=read_sigma)


# ----------------------------------------------------------------------------------------------
# JPEG


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
    (bounds,) = _ranges(where, x, quality=quality)
    q = _draw(bounds, x, generator)
    if x.shape[0] == 0:
        return x.clone()
    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    out = kornia.enhance.jpeg_codec_differentiable(rgb, q)
    if x.shape[1] == 1:
        out = out.mean(dim=1, keepdim=True)
    return out.clamp(0, 1)


class JpegCompression(_Degradation):
    """Module form of [jpeg_compression][contrastive_prompts.app.degradations.jpeg_compression].

    Args:
        quality: JPEG quality in [1, 100], a value or a range drawn per sample.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1] with $C$ = 1 or 3; output: the same.

    Examples:
        >>> JpegCompression(quality=20.0)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    _function = jpeg_compression
    quality: tuple[float, float]

    def __init__(self, quality: Range = (10.0, 50.0)) -> None:
        super().__init__(quality=quality)


# ----------------------------------------------------------------------------------------------
# composer

Degradation = Callable[..., Tensor]


class DegradationMix(nn.Module):
    """Apply one (or several) of a list of named degradations to each sample.

    Each degradation is called as ``fn(x, generator=generator)`` on the samples it was drawn for.
    The labels index `names`. Several tasks may share a degradation kind (the 3-task protocol
    has three noise levels of one kind); `kinds` names the kind of each task and
    [kind_labels][contrastive_prompts.app.degradations.DegradationMix.kind_labels] maps task labels
    to indices into `kind_names`.

    Args:
        degradations: ``{name: degradation}`` in label order, or a sequence of ``(name, fn)``.
        kinds: the degradation kind of each task (``{name: kind}`` or one kind per name);
            by default every task is its own kind.
        probs: the probability of each task (finite numbers >= 0 with a positive sum,
            normalised); uniform by default.
        max_per_sample: with 1, each sample gets exactly one degradation and the labels are
            ``(B,)`` integers. With ``k > 1`` each sample gets between 1 and ``k`` distinct
            degradations, applied in list order, and the labels are a ``(B, N)`` boolean
            multi-hot mask (``probs`` is then ignored).

    Attributes:
        names: the task names, in label order.
        kinds: the degradation kind of each task.
        kind_names: the distinct kinds, in order of first appearance.
        probs: the probability of each task, normalised to sum to 1.
        max_per_sample: the most degradations one sample gets.
        parts: the degradations each task applies: a
            [Composite][contrastive_prompts.app.degradations.Composite]'s parts, or the task's
            name alone.

    Shape:
        - x: $(B, C, H, W)$.
        - degraded: same as ``x``.
        - labels: $(B,)$ int64, or $(B, N)$ bool when ``max_per_sample > 1``.

    Examples:
        >>> mix = DegradationMix({"noise": GaussianNoise(25.0), "haze": Haze()})
        >>> y, labels = mix(torch.rand(4, 3, 16, 16), generator=torch.Generator().manual_seed(0))
        >>> y.shape, labels.shape
        (torch.Size([4, 3, 16, 16]), torch.Size([4]))
    """

    def __init__(
        self,
        degradations: Mapping[str, Degradation] | Sequence[tuple[str, Degradation]],
        *,
        kinds: Mapping[str, str] | Sequence[str] | None = None,
        probs: Sequence[float] | None = None,
        max_per_sample: int = 1,
    ) -> None:
        super().__init__()
        where = "DegradationMix"
        items = list(degradations.items() if isinstance(degradations, Mapping) else degradations)
        if not items:
            raise InputError(f"{where}: expected at least one degradation, got none")
        names = tuple(str(n) for n, _ in items)
        if len(set(names)) != len(names):
            raise InputError(f"{where}: expected distinct degradation names, got {names}")
        for name, fn in items:
            if not callable(fn):
                raise InputError(
                    f"{where}: expected degradation {name!r} to be callable, "
                    f"got {type(fn).__name__}"
                )
        self.names: tuple[str, ...] = names
        self.parts: tuple[tuple[str, ...], ...] = tuple(
            fn.parts if isinstance(fn, Composite) else (name,) for name, fn in items
        )
        self._fns = [fn for _, fn in items]
        # register modules so .to() and print() see them
        self.degradations = nn.ModuleList([fn for fn in self._fns if isinstance(fn, nn.Module)])
        if kinds is None:
            kinds_t = names
        elif isinstance(kinds, Mapping):
            missing = [n for n in names if n not in kinds]
            if missing:
                raise InputError(f"{where}: expected a kind for every name, missing {missing}")
            kinds_t = tuple(kinds[n] for n in names)
        else:
            kinds_t = tuple(kinds)
            if len(kinds_t) != len(names):
                raise InputError(
                    f"{where}: expected {len(names)} kinds (one per name), got {len(kinds_t)}"
                )
        self.kinds: tuple[str, ...] = kinds_t
        self.kind_names: tuple[str, ...] = tuple(dict.fromkeys(kinds_t))
        self._task_to_kind = [self.kind_names.index(k) for k in kinds_t]
        if probs is None:
            probs = [1.0] * len(names)
        probs = list(probs)
        if len(probs) != len(names) or any(
            not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < math.inf
            for p in probs
        ):
            raise InputError(
                f"{where}: expected probs to be {len(names)} numbers, finite and >= 0, "
                f"got {probs!r}"
            )
        if sum(probs) <= 0:
            raise InputError(f"{where}: expected probs with a positive sum, got {probs!r}")
        self.probs: tuple[float, ...] = tuple(float(p) / sum(probs) for p in probs)
        check_int_range(where, "max_per_sample", max_per_sample, 1, len(names))
        self.max_per_sample = max_per_sample

    @property
    def num_degradations(self) -> int:
        """The number of tasks, ``len(names)``."""
        return len(self.names)

    def kind_labels(self, labels: Tensor) -> Tensor:
        """Map ``(B,)`` task labels to ``(B,)`` indices into `kind_names`."""
        table = torch.tensor(self._task_to_kind, device=labels.device, dtype=torch.long)
        return table[labels.long()]

    def sample_labels(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw labels as [forward][contrastive_prompts.app.degradations.DegradationMix.forward]
        does.

        Returns:
            ``(B,)`` int64 labels, or a ``(B, N)`` bool mask when ``max_per_sample > 1``.
        """
        n = len(self.names)
        if self.max_per_sample == 1:
            p = torch.tensor(self.probs, device=device, dtype=torch.float64)
            if batch_size == 0:
                return torch.zeros(0, dtype=torch.long, device=device)
            return torch.multinomial(p, batch_size, replacement=True, generator=generator)
        count = torch.randint(
            1, self.max_per_sample + 1, (batch_size, 1), device=device, generator=generator
        )
        order = torch.rand((batch_size, n), device=device, generator=generator).argsort(dim=1)
        rank = order.argsort(dim=1)  # rank of each degradation in a random permutation
        return rank < count

    def degrade(
        self, x: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Apply the degradations that ``labels`` name (``(B,)`` ints or a ``(B, N)`` mask).

        Integer labels must lie in ``[0, N)``; any other label, or a floating or boolean
        ``(B,)`` tensor, raises [InputError][contrastive_prompts.InputError].
        """
        where = "DegradationMix"
        _check_image(where, x)
        n = len(self.names)
        if not isinstance(labels, Tensor):
            raise InputTypeError(
                f"{where}: expected labels to be a torch.Tensor, got {type(labels).__name__}"
            )
        if labels.ndim == 1:
            check_shape(where, "labels", labels, (x.shape[0],))
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise InputError(
                    f"{where}: expected labels to be an integer tensor, got {labels.dtype}"
                )
            # a value check, unlike forward checks elsewhere: labels are a few integers and
            # degrade is never compiled, so the sync it costs is negligible
            bad = labels[(labels < 0) | (labels >= n)]
            if bad.numel():
                values = ", ".join(str(v) for v in sorted(set(bad.tolist())))
                raise InputError(
                    f"{where}: expected labels to be integers in [0, {n}) (one per degradation "
                    f"of {self.names}), got {values}"
                )
            mask = F.one_hot(labels.long(), n).bool()
        else:
            check_shape(where, "labels", labels, (x.shape[0], n))
            mask = labels.bool()
        out = x.clone()
        for j, fn in enumerate(self._fns):
            idx = mask[:, j].nonzero().flatten()
            if idx.numel():
                out[idx] = fn(out[idx], generator=generator)
        return out

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw labels for the batch (as `sample_labels` does) and apply what they name.

        Args:
            x: $(B, C, H, W)$ images in [0, 1].
            generator: source of randomness for the labels and the degradations, on x's device.

        Returns:
            ``(degraded, labels)``: the batch, and $(B,)$ int64 labels indexing `names` (or a
            $(B, N)$ bool mask when ``max_per_sample > 1``).
        """
        _check_image("DegradationMix", x)
        labels = self.sample_labels(x.shape[0], device=x.device, generator=generator)
        return self.degrade(x, labels, generator=generator), labels

    def extra_repr(self) -> str:
        return f"names={self.names}, kinds={self.kinds}, max_per_sample={self.max_per_sample}"


DEGRADATIONS: dict[str, Callable[[], nn.Module]] = {
    "noise": GaussianNoise,
    "haze": Haze,
    "rain": RainStreaks,
    "snow": Snow,
    "gaussian_blur": GaussianBlur,
    "blur": MotionBlur,
    "low_light": LowLight,
    "jpeg": JpegCompression,
}
"""Every named degradation with its default options; ``"blur"`` is motion blur (GoPro-like)."""

PHYSICAL_ORDER = ("haze", "rain", "snow", "low_light", "blur", "gaussian_blur", "noise", "jpeg")
"""The order in which a [Composite][contrastive_prompts.app.degradations.Composite] applies its
parts, as light reaches the file: the atmosphere between the scene and the camera (haze), what
falls close to the camera (rain, snow), the light the whole is captured in (low light), the
camera's motion and optics (blur), its sensor (noise), the file (JPEG)."""


class Composite(nn.Module):
    """Several degradations of one image, applied in physical order.

    The parts apply in [PHYSICAL_ORDER][contrastive_prompts.app.degradations.PHYSICAL_ORDER],
    whatever order they are given in.

    The name of a composite joins its parts' names with ``+`` in the order they apply
    (``"haze+rain+low_light"``);
    [DegradationMix][contrastive_prompts.app.degradations.DegradationMix] reports its parts
    (``mix.parts``) beside the label.

    Args:
        names: two or more distinct names of
            [DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS], in any order (as a
            sequence, or one string joined by ``+``); each part has its default options.

    Attributes:
        parts: the parts' names, in the order they apply.
        name: ``"+".join(parts)``.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Raises:
        InputError: fewer than two names, a name twice, or a name that is not a degradation.

    Examples:
        >>> Composite(["low_light", "rain", "haze"]).name
        'haze+rain+low_light'
        >>> Composite("rain+haze")(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, names: str | Sequence[str]) -> None:
        super().__init__()
        where = "Composite"
        listed = names.split("+") if isinstance(names, str) else list(names)
        for name in listed:
            check_choice(where, "a part", name, PHYSICAL_ORDER)
        if len(listed) < 2 or len(set(listed)) != len(listed):
            raise InputError(f"{where}: expected two or more distinct degradations, got {listed}")
        self.parts: tuple[str, ...] = tuple(sorted(listed, key=PHYSICAL_ORDER.index))
        self.name = "+".join(self.parts)
        self.steps = nn.ModuleList([DEGRADATIONS[name]() for name in self.parts])

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Apply every part in turn, each drawing from ``generator``."""
        for step in self.steps:
            x = step(x, generator=generator)
        return x

    def extra_repr(self) -> str:
        return f"parts={self.parts}"


def _preset_3task() -> dict[str, nn.Module]:
    return {
        "noise_15": GaussianNoise(15.0, quantize=True),
        "noise_25": GaussianNoise(25.0, quantize=True),
        "noise_50": GaussianNoise(50.0, quantize=True),
        "rain": RainStreaks(),
        "haze": Haze(),
    }


def _preset_5task() -> dict[str, nn.Module]:
    return {
        "noise": GaussianNoise(25.0, quantize=True),
        "rain": RainStreaks(),
        "haze": Haze(),
        "blur": MotionBlur(),
        "low_light": LowLight(),
    }


CDD11 = (
    "low_light", "haze", "rain", "snow", "haze+low_light", "rain+low_light", "snow+low_light",
    "haze+rain", "haze+snow", "haze+rain+low_light", "haze+snow+low_light",
)  # fmt: skip
"""The eleven kinds of CDD-11 (OneRestore's composite benchmark): low light, haze, rain, snow
and seven composites of them, named by their parts in the order they apply."""


def _task(name: str) -> tuple[str, nn.Module]:
    """A task of a mix by name: a degradation, or a composite of ``+``-joined degradations."""
    if "+" in name:
        composite = Composite(name)
        return composite.name, composite
    check_choice("make_mix", "degradation name", name, DEGRADATIONS)
    return name, DEGRADATIONS[name]()


MIXES: dict[str, tuple[Callable[[], dict[str, nn.Module]], dict[str, str]]] = {
    "3task": (
        _preset_3task,
        {"noise_15": "noise", "noise_25": "noise", "noise_50": "noise"}
        | {"rain": "rain", "haze": "haze"},
    ),
    "5task": (
        _preset_5task,
        {n: n for n in ("noise", "rain", "haze", "blur", "low_light")},
    ),
    "cdd11": (lambda: dict(map(_task, CDD11)), {n: n for n in CDD11}),
}
"""The mixes of the papers: ``"3task"`` has five tasks (noise at sigma 15, 25 and 50, rain, haze)
of three kinds; ``"5task"`` has noise (sigma 25), rain, haze, motion blur and low light;
``"cdd11"`` has the eleven kinds of CDD-11, low light, haze, rain, snow and their composites."""


def make_mix(
    preset: str | Sequence[str] = "3task",
    *,
    add: Sequence[str] = (),
    probs: Sequence[float] | None = None,
    max_per_sample: int = 1,
) -> DegradationMix:
    """Build a `DegradationMix` from a preset name or a list of degradation names.

    Presets ([MIXES][contrastive_prompts.app.degradations.MIXES]):

    - ``"3task"``: tasks ``noise_15``, ``noise_25``, ``noise_50``, ``rain``, ``haze``. The three
      noise levels are three labels, as the PromptIR protocol trains them as three tasks, and one
      kind ``"noise"`` (see `DegradationMix.kinds`). Noise is quantised to 8 bits.
    - ``"5task"``: ``noise`` (sigma 25, the level the 5-task protocol tests), ``rain``, ``haze``,
      ``blur`` (motion), ``low_light``.
    - ``"cdd11"``: the eleven kinds of [CDD11][contrastive_prompts.app.degradations.CDD11]:
      ``low_light``, ``haze``, ``rain``, ``snow`` and seven
      [Composite][contrastive_prompts.app.degradations.Composite] degradations of them.

    A list picks names from [DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS] with
    their default options, or composites of them joined by ``+`` (``"haze+rain"``); ``add``
    appends such names to a preset's tasks (each its own kind).

    Args:
        preset: a preset name or a sequence of degradation names.
        add: names of [DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS] or
            composites to append, a new label each (``["low_light"]`` after ``"3task"`` is
            label 5).
        probs: task probabilities (uniform by default).
        max_per_sample: maximum number of degradations per sample (see
            [DegradationMix][contrastive_prompts.app.degradations.DegradationMix]).

    Returns:
        The mix.

    Examples:
        >>> make_mix("3task").names
        ('noise_15', 'noise_25', 'noise_50', 'rain', 'haze')
        >>> make_mix("3task").kind_names
        ('noise', 'rain', 'haze')
        >>> make_mix("3task", add=["low_light"]).names[-2:]
        ('haze', 'low_light')
    """
    where = "make_mix"
    if isinstance(add, str) or not isinstance(add, Sequence):
        raise InputTypeError(
            f"{where}: expected add to be a sequence of degradation names, got {add!r}"
        )
    added_list = [_task(n) for n in add]
    added = dict(added_list)
    if isinstance(preset, str):
        check_choice(where, "preset", preset, MIXES)
        build, kinds = MIXES[preset]
        tasks = build()
    else:
        tasks = dict(_task(n) for n in preset)
        kinds = {n: n for n in tasks}
        if len(tasks) != len(preset):
            raise InputError(f"{where}: expected distinct degradation names, got {list(preset)}")
    names = [n for n, _ in added_list]
    repeated = sorted({n for n in names if names.count(n) > 1 or n in tasks})
    if repeated:
        raise InputError(
            f"{where}: expected added degradations that the mix does not have, once each, got "
            f"{repeated} again"
        )
    return DegradationMix(
        {**tasks, **added},
        kinds={**kinds, **{n: n for n in added}},
        probs=probs,
        max_per_sample=max_per_sample,
    )
