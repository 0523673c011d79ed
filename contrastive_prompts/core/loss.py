"""Contrastive Prompt Regularization (CPR).

The output under the network's own prompt (the *anchor*) is pulled towards the clean image (the
*positive*) and pushed away from what the same network makes of the same input under mismatched
prompts (the *negatives*), in a fixed feature space. The maths lives in
[contrastive_prompt_loss][contrastive_prompts.core.contrastive_prompt_loss];
[ContrastivePromptLoss][contrastive_prompts.ContrastivePromptLoss] stores the options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    REDUCTIONS,
    InputError,
    InputTypeError,
    check_batch,
    check_bool,
    check_channels,
    check_choice,
    check_floating,
    check_positive,
    check_same_shape,
    check_shape,
    check_weights,
    reduce_batch,
)
from .features import FilterFeatures

__all__ = ["MODES", "REDUCTIONS", "ContrastivePromptLoss", "contrastive_prompt_loss"]

MODES = ("infonce", "ratio", "subtractive")


def _layer_distances(
    anchor_maps: Sequence[Tensor], target_maps: Sequence[Tensor], normalize: bool, batch: int
) -> Tensor:
    """Per-layer mean absolute distance: ``(L, B, K)`` from ``(B, ...)`` anchor maps and
    ``(B * K, ...)`` target maps laid out sample-major (``K`` targets per sample)."""
    distances = []
    for a, t in zip(anchor_maps, target_maps, strict=True):
        # normalised and compared in float32 at least: feature maps come in bfloat16 under autocast
        work = torch.promote_types(a.dtype, torch.float32)
        a, t = a.to(work), t.to(work)
        if normalize:  # L2 over channels, as the released code does
            a, t = F.normalize(a, dim=1), F.normalize(t, dim=1)
        t = t.view(batch, -1, *t.shape[1:])  # (B, K, C, h, w)
        distances.append((a.unsqueeze(1) - t).abs().flatten(2).mean(dim=-1))
    return torch.stack(distances)


def _check_features(where: str, features: object) -> None:
    if not callable(features):
        raise InputTypeError(
            f"{where}: expected features to be a module returning a list of feature maps "
            f"(FilterFeatures(), PixelFeatures(), VGG16Features(...)), got "
            f"{type(features).__name__} {features!r}"
        )


def contrastive_prompt_loss(
    anchor: Tensor,
    positive: Tensor | None,
    negatives: Tensor,
    *,
    mode: str = "subtractive",
    features: nn.Module | None = None,
    layer_weights: Sequence[float] | None = None,
    temperature: float = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    eps: float = 1e-6,
) -> Tensor:
    r"""Contrastive prompt regularisation between an output, its target and negative outputs.

    With feature maps $\phi_l$, weights $w_l$ and $d_l(u, v) = \mathrm{mean}\,|\bar\phi_l(u) -
    \bar\phi_l(v)|$ ($\bar\phi$ L2-normalised over channels when ``normalize``), for each sample:

    - ``"infonce"``: $d = \sum_l w_l d_l$ and
      $-\log \frac{e^{-d(a,y)/\tau}}{e^{-d(a,y)/\tau} + \sum_j e^{-d(a,n_j)/\tau}}$; $\ge 0$, and
      $\log(M + 1)$ when all distances are equal.
    - ``"ratio"``: $\sum_l w_l\, d_l(a, y) / (\frac1M \sum_j d_l(a, n_j) + \epsilon)$; 0 when the
      anchor equals the positive.
    - ``"subtractive"`` (the default, as in the released CPL code):
      $-\sum_j \sum_l w_l\, d_l(a, n_j)$; it takes no positive (the L1 term beside it pulls:
      ``positive`` may be ``None``, and a given one is checked for its shape, never featurised),
      and is bounded only through the normalisation ($d_l \le 2$ for unit vectors), so it takes
      a small weight. It is the form the released code trains with; the quality benchmark
      measured no other (docs: Results).

    Features of the positive (where the mode uses it) and the negatives are computed in one
    batched call.

    Args:
        anchor: the network's output under its own prompt (carries the gradient).
        positive: the clean target; ``None`` with ``"subtractive"``, which does not use it.
        negatives: the outputs under negative prompts, usually without gradient.
        mode: ``"subtractive"``, ``"infonce"`` or ``"ratio"``.
        features: feature space, a module returning a list of maps;
            [FilterFeatures][contrastive_prompts.core.FilterFeatures] by default.
        layer_weights: one weight per map, finite numbers >= 0 with a positive sum; the feature
            space's ``layer_weights`` attribute, else equal weights.
        temperature: $\tau$ of ``"infonce"``, a finite number > 0.
        normalize: L2-normalise each map over channels before the distance (a bool).
        reduction: ``"none"`` (per sample), ``"mean"`` or ``"sum"`` over the batch.
        eps: keeps the ratio finite when the negatives equal the anchor; a finite number > 0
            (0 would give NaN for an anchor equal to its positive and its negatives).

    Shape:
        - anchor, positive: ``(B, C, H, W)`` with ``B >= 1`` and any ``C >= 1`` that
          ``features`` takes;
          negatives: ``(B, M, C, H, W)`` with ``M >= 1``. PixelFeatures and FilterFeatures take
          any ``C``; [VGG16Features][contrastive_prompts.core.VGG16Features] takes RGB and repeats a
          grey ``C = 1`` to 3 channels, so a grey image scores as its grey RGB copy. With
          ``C = 1``, PixelFeatures under ``normalize`` keeps only each pixel's sign (one value
          normalised over one channel): use FilterFeatures (the default) for grey images.
        - Output: ``(B,)`` for ``reduction="none"``, else a scalar.

    Returns:
        The loss per sample, or its mean or sum over the batch.

    Raises:
        InputTypeError: ``normalize`` is not a bool, ``features`` is not callable, or
            ``layer_weights`` holds something other than numbers.
        InputError: an unknown ``mode`` or ``reduction``, ``temperature`` or ``eps`` not a
            finite number > 0, ``layer_weights`` negative, all zero or not one per map, an empty
            batch (``B = 0``), no negative (``M = 0``), no ``positive`` for ``"infonce"`` or
            ``"ratio"``, or shapes that do not match.

    Examples:
        >>> a, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> n = torch.rand(2, 4, 3, 16, 16)
        >>> contrastive_prompt_loss(a, y, n, reduction="none").shape
        torch.Size([2])
        >>> contrastive_prompt_loss(a, None, n).item() < 0  # the default pushes only
        True
    """
    weights = _checked_options(
        "contrastive_prompt_loss", mode, reduction, temperature, eps, normalize, features,
        layer_weights,
    )  # fmt: skip
    return _cpr(
        anchor, positive, negatives, mode=mode, features=features, layer_weights=weights,
        temperature=temperature, normalize=normalize, reduction=reduction, eps=eps,
    )  # fmt: skip


def _checked_options(
    where: str,
    mode: str,
    reduction: str,
    temperature: float,
    eps: float,
    normalize: bool,
    features: nn.Module | None,
    layer_weights: Sequence[float] | None,
) -> tuple[float, ...] | None:
    """Check the loss's options where they enter; the layer weights as checked numbers."""
    check_choice(where, "mode", mode, MODES)
    check_choice(where, "reduction", reduction, REDUCTIONS)
    check_positive(where, "temperature", temperature)
    check_positive(where, "eps", eps)
    check_bool(where, "normalize", normalize)
    if features is not None:
        _check_features(where, features)
    return None if layer_weights is None else check_weights(where, "layer_weights", layer_weights)


def _cpr(
    anchor: Tensor,
    positive: Tensor | None,
    negatives: Tensor,
    *,
    mode: str,
    features: nn.Module | None,
    layer_weights: Sequence[float] | None,
    temperature: float,
    normalize: bool,
    reduction: str,
    eps: float,
) -> Tensor:
    """The loss for options already checked: the inputs' checks and the maths."""
    where = "contrastive_prompt_loss"
    check_shape(where, "anchor", anchor, ("B", "C", "H", "W"))
    check_channels(where, "anchor", anchor)
    check_batch(where, "anchor", anchor)
    check_floating(where, "anchor", anchor)
    uses_positive = mode != "subtractive"
    if positive is not None:
        check_same_shape(where, "positive", positive, "anchor", anchor)
    elif uses_positive:
        raise InputError(
            f"{where}: expected positive (the clean target) for mode {mode!r}, got None; only "
            "'subtractive' works without one"
        )
    b, c, h, w = anchor.shape
    check_shape(where, "negatives", negatives, (b, "M", c, h, w))
    if negatives.shape[1] < 1:
        raise InputError(f"{where}: expected at least one negative (M >= 1), got M=0")

    features = FilterFeatures() if features is None else features  # no state: built per call
    anchor_maps = features(anchor)
    if uses_positive and positive is not None:
        targets = torch.cat([positive.unsqueeze(1), negatives], dim=1)
    else:
        targets = negatives
    target_maps = features(targets.flatten(0, 1))
    if len(anchor_maps) == 0 or len(anchor_maps) != len(target_maps):
        raise InputError(f"{where}: expected features to return a non-empty list of maps")
    if layer_weights is None:
        layer_weights = getattr(features, "layer_weights", None) or [1.0] * len(anchor_maps)
    if len(layer_weights) != len(anchor_maps):
        raise InputError(
            f"{where}: expected {len(anchor_maps)} layer_weights (one per feature map), "
            f"got {len(layer_weights)}"
        )
    distances = _layer_distances(anchor_maps, target_maps, normalize, b)  # (L, B, [1 +] M)
    weights = distances.new_tensor(layer_weights).view(-1, 1, 1)

    if mode == "infonce":
        logits = -(weights * distances).sum(dim=0) / temperature  # (B, 1 + M)
        per_sample = torch.logsumexp(logits, dim=1) - logits[:, 0]
    elif mode == "ratio":
        ratio = distances[:, :, 0] / (distances[:, :, 1:].mean(dim=2) + eps)
        per_sample = (weights.view(-1, 1) * ratio).sum(dim=0)
    else:  # subtractive: the negatives alone
        per_sample = -(weights * distances).sum(dim=(0, 2))

    # worked out in float32 at least, returned in the anchor's dtype
    return reduce_batch(per_sample, reduction).to(anchor.dtype)


class ContrastivePromptLoss(nn.Module):
    r"""Contrastive prompt regularisation (CPR): how far wrong prompts move a network's output.

    The output under the network's own prompt (the *anchor* $a$) is compared with its outputs
    for the same input under $M$ negative (mismatched) prompts, $n_1, \dots, n_M$, and, in two
    of the modes, with the clean image $y$. Distances $d_l$ are mean absolute differences of
    channel-normalised feature maps $\phi_l$ with weights $w_l$, taken per feature space
    ([FilterFeatures][contrastive_prompts.core.FilterFeatures] by default). The mode decides how
    they combine, per sample:

    - ``"subtractive"`` (default, the released CPL code):
      $\mathrm{CPR} = -\sum_{j=1}^{M} \sum_l w_l\, d_l(a, n_j)$. Only the negatives count
      (the L1 term beside it pulls $a$ towards $y$; ``positive`` may be ``None``). The value is
      $\le 0$: 0 when the wrong prompts change nothing, and more negative the further the
      outputs under wrong prompts are from the output under the own prompt, so minimising it
      makes the prompt matter. It is summed over the negatives, so it scales with $M$.
    - ``"infonce"``: the cross-entropy of picking $y$ among $y, n_1, \dots, n_M$ by the
      distance to $a$; $\ge 0$, below $\log(M + 1)$ when $a$ is closer to $y$ than to every
      negative, above it when it is farther.
    - ``"ratio"``: per map, $d_l(a, y)$ over the mean $d_l(a, n_j)$; $\ge 0$, 0 when $a = y$,
      below $\sum_l w_l$ when $a$ is closer to $y$ than to the negatives in every map.

    The formulas and the choice of default are in the docs (Concepts: Contrastive prompt
    regularisation); the maths lives in
    [contrastive_prompt_loss][contrastive_prompts.core.contrastive_prompt_loss], and this module
    stores its options and the feature space.

    Args:
        mode: ``"subtractive"`` (default), ``"infonce"`` or ``"ratio"``.
        features: feature space; [FilterFeatures][contrastive_prompts.core.FilterFeatures] by
            default.
        layer_weights: one weight per feature map, finite numbers >= 0 with a positive sum.
        temperature: temperature of ``"infonce"``, a finite number > 0.
        normalize: L2-normalise maps over channels (a bool).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        eps: keeps the ratio finite, a finite number > 0.

    Shape:
        - anchor (the output under the own prompt) and positive (the clean image):
          ``(B, C, H, W)``, any ``C >= 1`` that the feature space takes (as for
          [contrastive_prompt_loss][contrastive_prompts.core.contrastive_prompt_loss]);
          ``positive`` may be ``None`` in ``"subtractive"`` mode.
        - negatives (the outputs under ``M`` negative prompts): ``(B, M, C, H, W)``,
          ``B >= 1``, ``M >= 1``.
        - Output: a scalar, or ``(B,)`` with ``reduction="none"``.

    Raises:
        InputTypeError: at construction, ``normalize`` that is not a bool, ``features`` that is
            not callable, or ``layer_weights`` that are not numbers.
        InputError: at construction, an unknown ``mode`` or ``reduction``, or a number out of
            its range; at the call, as
            [contrastive_prompt_loss][contrastive_prompts.core.contrastive_prompt_loss] (an empty
            batch, say).

    Examples:
        >>> import math
        >>> loss = ContrastivePromptLoss()  # subtractive
        >>> g = torch.Generator().manual_seed(0)
        >>> clean = torch.rand(2, 3, 32, 32, generator=g)
        >>> output = (clean + 0.01 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)

        Outputs under wrong prompts far from the output: below zero.

        >>> far = torch.stack([1 - clean, torch.rand(2, 3, 32, 32, generator=g)], dim=1)
        >>> far.shape
        torch.Size([2, 2, 3, 32, 32])
        >>> round(loss(output, clean, far).item(), 1)
        -0.7

        Wrong prompts that change nothing: zero, the largest value.

        >>> same = torch.stack([output, output], dim=1)
        >>> loss(output, clean, same).item() == 0
        True

        InfoNCE also compares with the clean image: below $\log(M + 1)$ when the output is
        closer to it than to the negatives, above it for an output far from the clean image
        that its negatives equal.

        >>> infonce = ContrastivePromptLoss(mode="infonce")
        >>> wrong = far[:, 0]
        >>> infonce(output, clean, far).item() < math.log(3)
        True
        >>> infonce(wrong, clean, torch.stack([wrong, wrong], dim=1)).item() > math.log(3)
        True
    """

    def __init__(
        self,
        *,
        mode: str = "subtractive",
        features: nn.Module | None = None,
        layer_weights: Sequence[float] | None = None,
        temperature: float = 0.1,
        normalize: bool = True,
        reduction: str = "mean",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.layer_weights = _checked_options(
            "ContrastivePromptLoss", mode, reduction, temperature, eps, normalize, features,
            layer_weights,
        )  # fmt: skip
        self.mode, self.temperature, self.normalize = mode, temperature, normalize
        self.reduction, self.eps = reduction, eps
        self.features = features if features is not None else FilterFeatures()

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, temperature={self.temperature}, normalize={self.normalize}, "
            f"reduction={self.reduction!r}"
        )

    def forward(self, anchor: Tensor, positive: Tensor | None, negatives: Tensor) -> Tensor:
        """The loss of ``anchor`` against ``positive`` and ``negatives``, with the stored options.

        Args:
            anchor: ``(B, C, H, W)``, the output under the network's own prompt.
            positive: ``(B, C, H, W)``, the clean images; ``None`` in ``"subtractive"`` mode,
                which does not use them.
            negatives: ``(B, M, C, H, W)``, the outputs under ``M`` negative prompts.

        Returns:
            A scalar, or ``(B,)`` with ``reduction="none"``.
        """
        return _cpr(  # the options were checked at construction
            anchor,
            positive,
            negatives,
            mode=self.mode,
            features=self.features,
            layer_weights=self.layer_weights,
            temperature=self.temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            eps=self.eps,
        )
