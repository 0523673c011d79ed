"""The atmosphere and what falls before the camera: haze (with a random depth map), rain, snow."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_prompts._checks import check_shape

from ._ranges import (
    Range,
    _check_image,
    _draw,
    _line_kernels,
    _odd_size,
    _per_sample,
    angle_range,
    check_range,
    length_range,
    std_range,
    unit_range,
)

__all__ = ["Haze", "RainStreaks", "Snow", "haze", "rain_streaks", "random_depth", "snow"]


def _depth_range(where: str, depth_range: object) -> tuple[float, float]:
    return check_range(where, "depth_range", depth_range, low=0.0)


def _streak_ranges(
    where: str,
    x: Tensor | None,
    *,
    density: object,
    length: object,
    angle: object,
    width: object,
    brightness: object,
    alpha: object,
    width_name: str = "width",
) -> tuple[tuple[float, float], ...]:
    """The checked ranges of streaks (or flakes, whose ``width`` is their ``size``), in order."""
    return (
        unit_range(where, "density", density),
        length_range(where, "length", length, x),
        angle_range(where, "angle", angle),
        std_range(where, width_name, width, x),
        unit_range(where, "brightness", brightness),
        unit_range(where, "alpha", alpha),
    )


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
    near, far = _depth_range(where, depth_range)
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
    beta_r = check_range(where, "beta", beta, low=0.0)
    air_r = unit_range(where, "airlight", airlight)
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


class Haze(nn.Module):
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

    def __init__(
        self,
        beta: Range = (0.04, 0.2),
        *,
        airlight: Range = (0.8, 1.0),
        depth_range: tuple[float, float] = (1.0, 10.0),
    ) -> None:
        super().__init__()
        where = type(self).__name__
        self.beta = check_range(where, "beta", beta, low=0.0)
        self.airlight = unit_range(where, "airlight", airlight)
        self.depth_range = _depth_range(where, depth_range)

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
        return haze(
            x, self.beta, airlight=self.airlight, depth=depth, depth_range=self.depth_range,
            generator=generator,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"beta={self.beta}, airlight={self.airlight}, depth_range={self.depth_range}"


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
    ranges = _streak_ranges(
        where, x, density=density, length=length, angle=angle, width=width,
        brightness=brightness, alpha=alpha,
    )  # fmt: skip
    len_r, wid_r = ranges[1], ranges[3]
    dens, ln, ang, wid, bright, alp = (_draw(bounds, x, generator) for bounds in ranges)

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


class RainStreaks(nn.Module):
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
        super().__init__()
        ranges = _streak_ranges(
            type(self).__name__, None, density=density, length=length, angle=angle,
            width=width, brightness=brightness, alpha=alpha,
        )  # fmt: skip
        self.density, self.length, self.angle, self.width, self.brightness, self.alpha = ranges

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Add streaks to ``x``, drawing every option per sample from the stored ranges."""
        return rain_streaks(
            x, density=self.density, length=self.length, angle=self.angle, width=self.width,
            brightness=self.brightness, alpha=self.alpha, generator=generator,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"density={self.density}, length={self.length}, angle={self.angle}, "
            f"width={self.width}, brightness={self.brightness}, alpha={self.alpha}"
        )


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
    veil_r = unit_range(where, "veil", veil)
    _streak_ranges(
        where, x, density=density, length=length, angle=angle, width=size,
        brightness=brightness, alpha=alpha, width_name="size",
    )  # fmt: skip
    v = _per_sample(_draw(veil_r, x, generator))
    veiled = x + v * (1 - x)
    return rain_streaks(
        veiled, density=density, length=length, angle=angle, width=size, brightness=brightness,
        alpha=alpha, generator=generator,
    )  # fmt: skip


class Snow(nn.Module):
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
        super().__init__()
        where = type(self).__name__
        self.veil = unit_range(where, "veil", veil)
        ranges = _streak_ranges(
            where, None, density=density, length=length, angle=angle, width=size,
            brightness=brightness, alpha=alpha, width_name="size",
        )  # fmt: skip
        self.density, self.length, self.angle, self.size, self.brightness, self.alpha = ranges

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Let snow fall on ``x``, drawing every option per sample from the stored ranges."""
        return snow(
            x, veil=self.veil, density=self.density, size=self.size, length=self.length,
            angle=self.angle, brightness=self.brightness, alpha=self.alpha, generator=generator,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"veil={self.veil}, density={self.density}, size={self.size}, "
            f"length={self.length}, angle={self.angle}, brightness={self.brightness}, "
            f"alpha={self.alpha}"
        )
