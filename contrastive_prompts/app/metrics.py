"""Per-image PSNR and SSIM as restoration papers report them, and an evaluator.

[psnr][contrastive_prompts.app.metrics.psnr] and [ssim][contrastive_prompts.app.metrics.ssim]
reproduce ``skimage.metrics.peak_signal_noise_ratio`` and
``skimage.metrics.structural_similarity`` (7x7 uniform window, sample covariance, ``K1 = 0.01``,
``K2 = 0.03``, mean over channels) image by image, batched in torch on any device. PSNR
accumulates its mean squared error in float64 (float32 on devices without it, such as MPS);
SSIM works in float64 for float64 inputs and in float32 otherwise, within 1e-6 of the float64
value. Both return the input's dtype. Unlike `kornia.metrics.psnr` (MSE
pooled over the whole batch) and `kornia.metrics.ssim` (Gaussian window), the values match the
published tables, which average per-image scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import (
    REDUCTIONS,
    InputError,
    InputTypeError,
    check_choice,
    check_floating,
    check_int_range,
    check_positive,
    check_same_shape,
    check_shape,
    reduce_batch,
)
from ..reference.padding import MAX_PAD_MULTIPLE, crop_to_multiple, pad_to_multiple

__all__ = [
    "EvaluationResult",
    "crop_border",
    "crop_to_multiple",
    "evaluate",
    "pad_to_multiple",
    "psnr",
    "rgb_to_y",
    "ssim",
]

_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_pair(where: str, x: Tensor, y: Tensor) -> None:
    check_shape(where, "x", x, ("B", "C", "H", "W"))
    check_shape(where, "y", y, ("B", "C", "H", "W"))
    check_floating(where, "x", x)
    check_floating(where, "y", y)
    check_same_shape(where, "y", y, "x", x)
    if x.device != y.device:
        raise InputError(
            f"{where}: expected y on the same device as x ({x.device}), got {y.device}"
        )


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def _check_options(where: str, x: Tensor, data_range: float, reduction: str) -> None:
    check_positive(where, "data_range", data_range)
    check_choice(where, "reduction", reduction, REDUCTIONS)
    if reduction == "mean" and x.shape[0] == 0:  # the mean of no image is undefined, not NaN
        raise InputError(
            f"{where}: expected at least one image for reduction='mean', got an empty batch "
            f"{tuple(x.shape)}"
        )


def _warn_if_out_of_reach(where: str, x: Tensor, y: Tensor, data_range: float) -> None:
    """Warn, once, when ``data_range`` > 1 and every value of ``x`` and ``y`` lies in [0, 1].

    Images in [0, 1] (the library's convention) scored with the range of 8- or 16-bit values
    gain 20 log10(R) dB of PSNR (48 dB for 255) and an SSIM near 1, silently. The rule
    stays quiet on 0-255 images however dark (only a pair whose every value is 0 or 1 looks like
    [0, 1] data), on images in [-1, 1] (negative values) and at the default ``data_range=1``,
    where it costs nothing: only a ``data_range`` above 1 reads the values, one sync.
    """
    if data_range <= 1 or x.numel() == 0 or torch.compiler.is_compiling():
        return
    lo_x, lo_y, hi_x, hi_y = torch.stack([x.amin(), y.amin(), x.amax(), y.amax()]).tolist()
    if min(lo_x, lo_y) >= 0 and max(hi_x, hi_y) <= 1:
        effect = (
            f"adds {20 * math.log10(data_range):.1f} dB to the PSNR"
            if where == "psnr"
            else "lifts the SSIM towards 1"
        )
        warnings.warn(
            f"{where}: data_range={data_range:g} but every value of x and y lies in [0, 1]: for "
            f"[0, 1] images pass data_range=1 (this range {effect}); ignore this for "
            f"{data_range:g}-range images this dark",
            UserWarning,
            stacklevel=3,
        )


def _prepare(
    where: str, x: Tensor, y: Tensor, y_channel: bool, border: int
) -> tuple[Tensor, Tensor]:
    if y_channel:
        x, y = rgb_to_y(x), rgb_to_y(y)
    if border:
        x, y = crop_border(x, border), crop_border(y, border)
    return x, y


def rgb_to_y(x: Tensor) -> Tensor:
    r"""Luma of RGB images as Matlab's ``rgb2ycbcr`` computes it (ITU-R BT.601, studio swing).

    $Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255$ for $R, G, B \in [0, 1]$, so
    $Y \in [16/255, 235/255]$. Restoration papers report "PSNR on Y" with this definition.

    Args:
        x: RGB images in [0, 1].

    Shape:
        - x: $(B, 3, H, W)$.
        - output: $(B, 1, H, W)$.

    Returns:
        The Y channel, in x's dtype.

    Examples:
        >>> round(rgb_to_y(torch.ones(1, 3, 2, 2))[0, 0, 0, 0].item() * 255, 3)
        235.0
    """
    check_shape("rgb_to_y", "x", x, ("B", 3, "H", "W"))
    check_floating("rgb_to_y", "x", x)
    w = torch.tensor([65.481, 128.553, 24.966], device=x.device, dtype=x.dtype)
    return (16.0 + torch.einsum("bchw,c->bhw", x, w).unsqueeze(1)) / 255.0


def crop_border(x: Tensor, border: int) -> Tensor:
    """Remove ``border`` pixels from each side, as super-resolution and denoising protocols do.

    Args:
        x: images.
        border: pixels to remove on each side (0 keeps the images).

    Shape:
        - x: $(B, C, H, W)$.
        - output: $(B, C, H - 2 b, W - 2 b)$.

    Returns:
        A view of the cropped images.

    Examples:
        >>> crop_border(torch.rand(1, 3, 10, 12), 2).shape
        torch.Size([1, 3, 6, 8])
    """
    check_shape("crop_border", "x", x, ("B", "C", "H", "W"))
    check_int_range("crop_border", "border", border, 0)
    h, w = x.shape[-2:]
    if 2 * border >= min(h, w):
        raise InputError(
            f"crop_border: expected border < half the image size {(h, w)}, got {border}"
        )
    return x[..., border : h - border, border : w - border] if border else x


def psnr(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 1.0,
    reduction: str = "none",
    y_channel: bool = False,
    border: int = 0,
) -> Tensor:
    r"""Peak signal-to-noise ratio per image, $10 \log_{10}(R^2 / \mathrm{MSE})$, in dB.

    The MSE is taken over each image's channels and pixels (never pooled across the batch), as
    ``skimage.metrics.peak_signal_noise_ratio(y, x, data_range=R)`` does. Identical images give
    ``inf``.

    Args:
        x: restored images.
        y: reference images.
        data_range: $R$, the value range of the images (1 for [0, 1]); finite and > 0. Above
            1, a `UserWarning` (one per call) says so when every value of ``x`` and ``y`` lies in
            [0, 1]: [0, 1] images scored with ``data_range=255`` would gain 48 dB silently.
            Dark 0-255 images do not warn (unless every value is 0 or 1), nor do images in
            [-1, 1]; the check reads the values only when ``data_range`` > 1.
        reduction: ``"none"`` (per image), ``"mean"`` or ``"sum"`` over the batch. An empty
            batch gives an empty result for ``"none"``, 0 for ``"sum"`` and an
            [InputError][contrastive_prompts.InputError] for ``"mean"``.
        y_channel: compare the BT.601 luma ([rgb_to_y][contrastive_prompts.app.metrics.rgb_to_y]) of
            RGB images.
        border: pixels to crop from each side first
            ([crop_border][contrastive_prompts.app.metrics.crop_border]).

    Shape:
        - x: $(B, C, H, W)$.
        - y: same as ``x``.
        - output: $(B,)$ with ``reduction="none"``, else a scalar.

    Returns:
        PSNR in dB in x's dtype; the mean squared error is accumulated in float64.

    Raises:
        InputError: images of other shapes, dtypes or devices, or a bad ``data_range``,
            ``reduction`` or ``border``.

    Warns:
        UserWarning: ``data_range`` > 1 while every value of ``x`` and ``y`` lies in [0, 1].

    Examples:
        >>> x = torch.full((2, 3, 8, 8), 0.5)
        >>> psnr(x + 0.1, x)
        tensor([20.0000, 20.0000])
    """
    where = "psnr"
    _check_pair(where, x, y)
    _check_options(where, x, data_range, reduction)
    _warn_if_out_of_reach(where, x, y, data_range)
    xd, yd = _prepare(where, x, y, y_channel, border)
    # the squared error of float32 images in float32, accumulated in float64: within 1e-6 dB
    # of a full float64 computation at a third of the cost
    dt = torch.float64 if xd.dtype == torch.float64 else torch.float32
    sq = (xd.to(dt) - yd.to(dt)).square()
    mse = sq.mean(dim=(1, 2, 3), dtype=_work_dtype(xd))
    values = 10 * torch.log10(data_range**2 / mse)
    return reduce_batch(values, reduction).to(x.dtype)


def _box_mean(t: Tensor) -> Tensor:
    # 7x7 mean over the valid region: the same numbers as scipy's uniform_filter after skimage
    # crops its 3-pixel border. Sums over unfolded views beat avg_pool2d and conv2d on the CPU.
    n = _SSIM_WIN
    return t.unfold(2, n, 1).sum(-1).unfold(3, n, 1).sum(-1) / (n * n)


def _ssim_map_mean(xd: Tensor, yd: Tensor, data_range: float) -> Tensor:
    c = xd.shape[1]
    # the five local statistics in one pass
    stats = _box_mean(torch.cat([xd, yd, xd * xd, yd * yd, xd * yd], dim=1))
    mx, my, mxx, myy, mxy = stats.split(c, dim=1)
    n = _SSIM_WIN * _SSIM_WIN
    cov_norm = n / (n - 1)  # sample covariance, as skimage's default
    vx = cov_norm * (mxx - mx * mx)
    vy = cov_norm * (myy - my * my)
    vxy = cov_norm * (mxy - mx * my)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s: Tensor = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 1.0,
    reduction: str = "none",
    y_channel: bool = False,
    border: int = 0,
) -> Tensor:
    r"""Structural similarity per image, exactly as ``skimage.metrics.structural_similarity``.

    With 7x7 uniform-window means $\mu$, sample (co)variances $\sigma$ (normalised by $N - 1$,
    $N = 49$), $C_1 = (0.01 R)^2$ and $C_2 = (0.03 R)^2$,

    $\mathrm{SSIM} = \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}
    {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}$

    is averaged over the windows that fit inside the image (skimage's 3-pixel border crop) and
    over channels, image by image.

    Args:
        x: restored images, at least 7x7 (after ``y_channel`` and ``border``).
        y: reference images.
        data_range: $R$, the value range of the images (1 for [0, 1]); finite and > 0. Above
            1, a `UserWarning` (one per call) says so when every value of ``x`` and ``y`` lies in
            [0, 1]: [0, 1] images scored with ``data_range=255`` would score near 1 silently.
            Dark 0-255 images do not warn (unless every value is 0 or 1), nor do images in
            [-1, 1]; the check reads the values only when ``data_range`` > 1.
        reduction: ``"none"`` (per image), ``"mean"`` or ``"sum"`` over the batch. An empty
            batch gives an empty result for ``"none"``, 0 for ``"sum"`` and an
            [InputError][contrastive_prompts.InputError] for ``"mean"``.
        y_channel: compare the BT.601 luma ([rgb_to_y][contrastive_prompts.app.metrics.rgb_to_y]) of
            RGB images.
        border: pixels to crop from each side first
            ([crop_border][contrastive_prompts.app.metrics.crop_border]).

    Shape:
        - x: $(B, C, H, W)$.
        - y: same as ``x``.
        - output: $(B,)$ with ``reduction="none"``, else a scalar.

    Returns:
        SSIM in [-1, 1] in x's dtype, computed in float64 for float64 inputs and in float32
        otherwise (within 1e-6 of the float64 value; scikit-image also works in float32 on
        float32 arrays).

    Raises:
        InputError: images of other shapes, dtypes or devices, smaller than 7x7, or a bad
            ``data_range``, ``reduction`` or ``border``.

    Warns:
        UserWarning: ``data_range`` > 1 while every value of ``x`` and ``y`` lies in [0, 1].

    Examples:
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(x, x)
        tensor([1., 1.])
    """
    where = "ssim"
    _check_pair(where, x, y)
    _check_options(where, x, data_range, reduction)
    _warn_if_out_of_reach(where, x, y, data_range)
    xd, yd = _prepare(where, x, y, y_channel, border)
    h, w = xd.shape[-2:]
    if h < _SSIM_WIN or w < _SSIM_WIN:
        raise InputError(
            f"{where}: expected images of at least {_SSIM_WIN}x{_SSIM_WIN} pixels"
            f"{' after the border crop' if border else ''}, got {h}x{w}"
        )
    b, c = xd.shape[:2]
    if b == 0:
        return reduce_batch(x.new_zeros(0), reduction)
    # chunks of about 2**20 pixels keep the intermediates in cache: several times faster than
    # one pass over a large batch, and a bounded memory
    # float32 keeps the error below 1e-6 (measured against float64 on real photos and on flat,
    # bright, low-contrast images) at twice the speed; float64 inputs stay in float64
    dt = torch.float64 if xd.dtype == torch.float64 else torch.float32
    chunk = max(1, 2**20 // (c * h * w))
    values = torch.cat(
        [
            _ssim_map_mean(xd[i : i + chunk].to(dt), yd[i : i + chunk].to(dt), data_range)
            for i in range(0, b, chunk)
        ]
    )
    return reduce_batch(values, reduction).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# evaluation


@dataclass
class EvaluationResult:
    """Per-degradation mean PSNR / SSIM from [evaluate][contrastive_prompts.app.metrics.evaluate].

    Attributes:
        names: the name of each label, in label order (labels never seen are left out).
        psnr: mean PSNR per name (dB).
        ssim: mean SSIM per name.
        count: number of images per name.
        per_image: ``(label, psnr, ssim)`` for every image, in order.

    Examples:
        >>> r = EvaluationResult(["noise", "rain"], psnr={"noise": 30.0, "rain": 26.0},
        ...                      ssim={"noise": 0.9, "rain": 0.8}, count={"noise": 2, "rain": 2})
        >>> r.average_psnr
        28.0
        >>> print(r.to_markdown().splitlines()[-1])
        | average | 4 | 28.00 | 0.8500 |
    """

    names: list[str]
    psnr: dict[str, float]
    ssim: dict[str, float]
    count: dict[str, int]
    per_image: list[tuple[int, float, float]] = field(default_factory=list, repr=False)

    @property
    def average_psnr(self) -> float:
        """Mean over degradations of the per-degradation mean PSNR (each degradation weighs 1)."""
        vals = [self.psnr[n] for n in self.names]
        return sum(vals) / len(vals) if vals else math.nan

    @property
    def average_ssim(self) -> float:
        """Mean over degradations of the per-degradation mean SSIM."""
        vals = [self.ssim[n] for n in self.names]
        return sum(vals) / len(vals) if vals else math.nan

    def to_markdown(self, *, digits: int = 2, ssim_digits: int = 4) -> str:
        """A Markdown table: one row per degradation and an ``average`` row.

        Examples:
            >>> r = EvaluationResult(["noise"], {"noise": 30.0}, {"noise": 0.9}, {"noise": 2})
            >>> print(r.to_markdown())
            | degradation | images | PSNR (dB) | SSIM |
            |---|---:|---:|---:|
            | noise | 2 | 30.00 | 0.9000 |
            | average | 2 | 30.00 | 0.9000 |
        """
        lines = ["| degradation | images | PSNR (dB) | SSIM |", "|---|---:|---:|---:|"]
        for n in self.names:
            lines.append(
                f"| {n} | {self.count[n]} | {self.psnr[n]:.{digits}f} | "
                f"{self.ssim[n]:.{ssim_digits}f} |"
            )
        total = sum(self.count.values())
        lines.append(
            f"| average | {total} | {self.average_psnr:.{digits}f} | "
            f"{self.average_ssim:.{ssim_digits}f} |"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def batches_of(data: object) -> Iterable[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(degraded, clean, labels)`` batches from a map-style dataset or an iterable."""
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        for i in range(len(data)):
            degraded, clean, label = data[i]
            yield degraded.unsqueeze(0), clean.unsqueeze(0), torch.as_tensor(label).view(1)
        return
    for item in data:  # type: ignore[attr-defined]
        degraded, clean, label = item
        if degraded.ndim == 3:
            degraded, clean = degraded.unsqueeze(0), clean.unsqueeze(0)
        yield degraded, clean, torch.as_tensor(label).reshape(-1)


def names_of(data: object) -> dict[int, str] | None:
    """``{label: name}`` from ``data.names``, a loader's dataset or the parts of a ConcatDataset.

    The datasets of [contrastive_prompts.app.data][contrastive_prompts.app.data] all hold a
    ``{label: name}`` dict; a sequence indexed by label (a dataset of your own) is read as one.
    """
    names = getattr(data, "names", None)
    if names is not None:
        return dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    if isinstance(data, torch.utils.data.ConcatDataset):
        merged: dict[int, str] = {}
        for part in data.datasets:
            merged.update(names_of(part) or {})
        return merged or None
    inner = getattr(data, "dataset", None)
    return names_of(inner) if inner is not None else None


def _skipping_readers(data: object) -> list[object]:
    """The datasets in ``data`` (itself, a loader's or a Subset's dataset, the parts of a
    ConcatDataset) that can skip an unreadable file: those with a ``skip_unreadable`` flag."""
    found: list[object] = []
    if isinstance(getattr(data, "skip_unreadable", None), bool):
        found.append(data)
    if isinstance(data, torch.utils.data.ConcatDataset):
        for part in data.datasets:
            found += _skipping_readers(part)
    inner = getattr(data, "dataset", None)
    if inner is not None and inner is not data:
        found += _skipping_readers(inner)
    return found


def evaluate(
    model: Callable[[Tensor], Tensor],
    data: object,
    *,
    names: Sequence[str] | Mapping[int, str] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    pad_multiple: int = 1,
    y_channel: bool = False,
    border: int = 0,
) -> EvaluationResult:
    """Run ``model`` over ``(degraded, clean, label)`` items and tabulate PSNR / SSIM per label.

    Each input is restored under `torch.no_grad` and clamped to [0, 1]; PSNR and SSIM
    are computed per image ([psnr][contrastive_prompts.app.metrics.psnr],
    [ssim][contrastive_prompts.app.metrics.ssim]) and averaged per label. A `torch.nn.Module` is put
    in eval mode for the run and restored afterwards.

    Every image is scored or none: a dataset that skips unreadable files while training (the
    ``skip_unreadable`` of the datasets of
    [contrastive_prompts.app.data][contrastive_prompts.app.data]) raises instead for the run, naming
    the file, and is restored afterwards; another image is never scored in its place. This holds for
    the dataset itself, a DataLoader's or a Subset's, and the parts of a ConcatDataset; a
    DataLoader's ``persistent_workers`` started before the call keep the setting they started with.

    Args:
        model: any callable ``model(x) -> y`` on ``(B, C, H, W)`` batches.
        data: a map-style dataset yielding ``(degraded, clean, label)`` with ``(C, H, W)`` images
            (evaluated one image at a time, so sizes may differ), or a loader / iterable of
            batches ``(B, C, H, W)``, ``(B, C, H, W)``, ``(B,)``.
        names: label names (a sequence indexed by label or a mapping); by default
            ``data.names`` when the dataset has it, else the label numbers.
        device: where to run; by default the device of the model's first parameter, else CPU.
        dtype: the dtype of the inputs; by default the model's parameter dtype, else the data's.
        pad_multiple: pad each input (reflect) to a multiple of this and crop the output back,
            for a network that needs a size multiple and does not pad itself. The default 1
            leaves inputs as they are: ``SparsePromptIR`` pads to 8 itself.
        y_channel: score the BT.601 luma of RGB images.
        border: pixels to crop from each side before scoring.

    Shape:
        - model: ``(B, C, H, W)`` in, ``(B, C, H, W)`` out (cropped back if padded).
        - data items: ``(C, H, W)``, ``(C, H, W)``, a scalar label; or batches of those.

    Returns:
        The per-degradation table.

    Raises:
        InputError: an unreadable image file in ``data`` (named), or a bad argument.

    Examples:
        >>> data = [(torch.full((1, 3, 8, 8), 0.5), torch.full((1, 3, 8, 8), 0.6), 0)]
        >>> r = evaluate(lambda x: x, data, names=["noise"])
        >>> round(r.psnr["noise"], 2)
        20.0
    """
    where = "evaluate"
    if not callable(model):
        raise InputTypeError(f"{where}: expected model to be callable, got {type(model).__name__}")
    check_int_range(where, "pad_multiple", pad_multiple, 1, MAX_PAD_MULTIPLE)
    if names is None:
        names = names_of(data)
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    if dtype is None and params:
        dtype = params[0].dtype
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    # a benchmark figure scores every image once: an unreadable file raises, never substituted
    readers = {id(r): r for r in _skipping_readers(data)}.values()
    skipping = [(r, r.skip_unreadable) for r in readers]  # type: ignore[attr-defined]
    for reader, _ in skipping:
        reader.skip_unreadable = False  # type: ignore[attr-defined]

    sums: dict[int, list[float]] = {}
    per_image: list[tuple[int, float, float]] = []
    try:
        with torch.no_grad():
            for degraded, clean, labels in batches_of(data):
                degraded = degraded.to(device=device, dtype=dtype or degraded.dtype)
                clean = clean.to(device=device, dtype=degraded.dtype)
                h, w = degraded.shape[-2:]
                out = model(pad_to_multiple(degraded, pad_multiple))
                out = out[..., :h, :w].clamp(0, 1)
                p = psnr(out, clean, y_channel=y_channel, border=border).double().cpu()
                s = ssim(out, clean, y_channel=y_channel, border=border).double().cpu()
                for lab, pv, sv in zip(labels.tolist(), p.tolist(), s.tolist(), strict=True):
                    lab = int(lab)
                    acc = sums.setdefault(lab, [0.0, 0.0, 0])
                    acc[0] += pv
                    acc[1] += sv
                    acc[2] += 1
                    per_image.append((lab, pv, sv))
    finally:
        if was_training and isinstance(model, torch.nn.Module):
            model.train()
        for reader, skip in skipping:
            reader.skip_unreadable = skip  # type: ignore[attr-defined]

    def name_of(label: int) -> str:
        if names is None:
            return str(label)
        if isinstance(names, Mapping):
            return str(names.get(label, label))
        return str(names[label]) if 0 <= label < len(names) else str(label)

    order = sorted(sums)
    table_names = [name_of(k) for k in order]
    return EvaluationResult(
        names=table_names,
        psnr={name_of(k): sums[k][0] / sums[k][2] for k in order},
        ssim={name_of(k): sums[k][1] / sums[k][2] for k in order},
        count={name_of(k): int(sums[k][2]) for k in order},
        per_image=per_image,
    )
