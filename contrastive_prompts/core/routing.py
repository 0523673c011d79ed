"""Routing: which experts of a prompt bank each image uses, and the measures of that choice.

Pure functions on router logits and probabilities, shared by every prompt layer:
[topk_route][contrastive_prompts.core.topk_route] (the top-k experts of each sample),
[negative_route][contrastive_prompts.core.negative_route] (experts a sample did not select, for
CPL's negatives), [pooled_routing][contrastive_prompts.core.pooled_routing] (one routing from
several views of an image); the training terms on a routing
([load_balance_loss][contrastive_prompts.core.load_balance_loss],
[label_routing_loss][contrastive_prompts.core.label_routing_loss]); and the counts that say whether
experts specialise ([routing_statistics][contrastive_prompts.core.routing_statistics],
[specialisation][contrastive_prompts.core.specialisation]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    InputError,
    InputTypeError,
    check_bool,
    check_int_range,
    check_shape,
)

__all__ = [
    "COLLAPSE_SHARE",
    "Routing",
    "Specialisation",
    "label_routing_loss",
    "load_balance_loss",
    "negative_route",
    "pooled_routing",
    "routing_statistics",
    "specialisation",
    "topk_route",
]


class Routing(NamedTuple):
    """How a batch was routed to the experts of a prompt bank.

    Attributes:
        probs: ``(B, N)`` softmax of the router's logits.
        weights: ``(B, N)`` mixing weights actually used: ``probs`` at the chosen experts, 0
            elsewhere (renormalised to sum to 1 if the layer renormalises).
        indices: ``(B, k)`` chosen experts, by decreasing weight for top-k routing.

    Examples:
        >>> probs, weights, indices = topk_route(torch.tensor([[2.0, 0.0]]), top_k=1)
        >>> indices, weights[0, 1].item()
        (tensor([[0]]), 0.0)
    """

    probs: Tensor
    weights: Tensor
    indices: Tensor


def topk_route(logits: Tensor, top_k: int, *, renormalize: bool = False) -> Routing:
    r"""Softmax routing that keeps the ``top_k`` largest weights.

    $w = \mathrm{softmax}(\ell)$; the ``top_k`` largest entries are kept and the others set to 0,
    without renormalisation unless ``renormalize=True`` (CPL does not renormalise, so the router
    keeps learning through the kept weight's magnitude). Half-precision logits (bfloat16 under
    autocast, say) are routed in float32, and the routing is returned in their dtype.

    Args:
        logits: router logits.
        top_k: experts to keep, in ``[1, N]``.
        renormalize: rescale the kept weights to sum to 1 (a bool).

    Shape:
        - logits: ``(B, N)``. Returns a [Routing][contrastive_prompts.core.Routing] with ``(B, N)``
          probs and weights and ``(B, top_k)`` indices.

    Returns:
        The [Routing][contrastive_prompts.core.Routing]: softmax probabilities, the kept weights and
        the chosen experts.

    Examples:
        >>> r = topk_route(torch.tensor([[0.0, 1.0, 2.0]]), top_k=1)
        >>> r.indices
        tensor([[2]])
        >>> (r.weights > 0).sum().item()
        1
    """
    check_shape("topk_route", "logits", logits, ("B", "N"))
    check_int_range("topk_route", "top_k", top_k, 1, logits.shape[-1])
    check_bool("topk_route", "renormalize", renormalize)
    # the softmax and the choice in float32 at least (bfloat16 logits under autocast included),
    # the result in the logits' dtype
    probs = logits.softmax(dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    values, indices = probs.topk(top_k, dim=-1)
    if renormalize:
        values = values / values.sum(dim=-1, keepdim=True)
    weights = torch.zeros_like(probs).scatter(-1, indices, values)
    return Routing(probs.to(logits.dtype), weights.to(logits.dtype), indices)


def pooled_routing(
    routings: Sequence[Routing], *, top_k: int, renormalize: bool = False
) -> Routing:
    r"""The routing of the mean of the pooled features that made ``routings``.

    A [SparsePrompt][contrastive_prompts.SparsePrompt] routes the spatial mean $e$ of its input
    through an affine router, $\ell = W e + b$. For inputs of equal size (the tiles of an image)
    the mean of their $e_t$ is the $e$ of all of them side by side, so its logits are the mean of
    the $\ell_t$, and $\log \mathrm{softmax}(\ell_t)$ differs from $\ell_t$ by a constant per
    row: routing the mean log-probability is routing the whole. This is how
    ``tiled(routing="image")`` gives every tile of an image the routing of the image.

    Args:
        routings: one or more routings of the same ``(B, N)`` shape (a tile each).
        top_k: experts to keep, in ``[1, N]`` (the layer's ``top_k``).
        renormalize: as the layer's ``renormalize``.

    Returns:
        The ``(B, N)`` [Routing][contrastive_prompts.core.Routing] of their mean.

    Examples:
        >>> left, right = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])
        >>> routed = [topk_route(left, 1), topk_route(right, 1)]
        >>> pooled_routing(routed, top_k=1).indices
        tensor([[1]])
    """
    where = "pooled_routing"
    if isinstance(routings, Routing) or not isinstance(routings, Sequence) or not routings:
        raise InputTypeError(
            f"{where}: expected a non-empty sequence of Routing, got {type(routings).__name__}"
            + (" (one Routing: wrap it in a list)" if isinstance(routings, Routing) else "")
        )
    shape = routings[0].probs.shape
    for routing in routings:
        if not isinstance(routing, Routing):
            raise InputTypeError(f"{where}: expected Routing items, got {type(routing).__name__}")
        if routing.probs.shape != shape:
            raise InputError(
                f"{where}: expected routings of one shape, got {tuple(shape)} and "
                f"{tuple(routing.probs.shape)}"
            )
    dtype = routings[0].probs.dtype
    wide = torch.promote_types(dtype, torch.float32)
    tiny = torch.finfo(wide).tiny
    logits = torch.stack([r.probs.to(wide).clamp_min(tiny).log() for r in routings]).mean(0)
    pooled = topk_route(logits, top_k, renormalize=renormalize)
    return Routing(*(t.to(dtype) if t.is_floating_point() else t for t in pooled))


def negative_route(
    routing: Routing,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Routing:
    r"""Routing of a negative prompt: random experts outside the selected ones.

    For each sample, ``min(k, N - k)`` experts are drawn uniformly at random among the ``N - k``
    that ``routing`` did not select, and weighted by their own softmax weights (CPL's negative
    prompt). With ``labels``, experts that other samples of the batch with a *different* label
    selected are drawn first, so negatives come from other degradations' experts; the remaining
    places are filled uniformly as before. The draw uses only ``generator``'s random stream.

    Args:
        routing: the positive routing (from [topk_route][contrastive_prompts.core.topk_route]).
        generator: source of randomness, for reproducible negatives.
        labels: optional ``(B,)`` integer degradation labels.

    Shape:
        - routing: ``(B, N)`` probs and weights, ``(B, k)`` indices with ``k < N``.
        - output: ``(B, N)`` probs and weights, ``(B, min(k, N - k))`` indices.

    Returns:
        A [Routing][contrastive_prompts.core.Routing] whose ``indices`` never meet
        ``routing.indices``.

    Examples:
        >>> pos = topk_route(torch.randn(4, 5), top_k=1)
        >>> neg = negative_route(pos, generator=torch.Generator().manual_seed(0))
        >>> bool((neg.indices != pos.indices).all())
        True
    """
    probs, _, selected = routing
    batch, num_prompts = probs.shape
    top_k = selected.shape[-1]
    if top_k >= num_prompts:
        raise InputError(
            f"negative_route: expected top_k < num_prompts to leave experts for negatives, "
            f"got top_k={top_k} with num_prompts={num_prompts}"
        )
    device = generator.device if generator is not None else probs.device
    scores = torch.rand(batch, num_prompts, generator=generator, device=device).to(probs.device)
    chosen = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, selected, True)
    if labels is not None:
        check_shape("negative_route", "labels", labels, (batch,))
        other_label = (labels[:, None] != labels[None, :]).to(probs.dtype)  # (B, B)
        used_by_others = (other_label @ chosen.to(probs.dtype)) > 0  # (B, N)
        scores = scores + used_by_others.to(scores.dtype)  # uniform in [1, 2) beats [0, 1)
    scores = scores.masked_fill(chosen, -1.0)
    indices = scores.topk(min(top_k, num_prompts - top_k), dim=-1).indices
    return _route_to(probs, indices)


def _rows(fixed: Tensor, batch: int, where: str, *, copies: bool = False) -> Tensor:
    """``fixed``, set for 1 or ``batch`` samples, as ``batch`` rows; with ``copies``, also set
    for one copy of a batch of several copies of it (the rows of a negative pass)."""
    count = fixed.shape[0]
    if copies and count > 1 and batch % count == 0:
        return fixed.repeat(batch // count, *(1,) * (fixed.ndim - 1))
    if count not in (1, batch):
        what = "experts" if where == "fixed_experts" else "a routing"
        raise InputError(
            f"{where}: expected {what} for 1 or {batch} samples (the batch this layer routes), "
            f"got {fixed.shape[0]}"
        )
    return fixed.expand(batch, -1)


def _route_to(probs: Tensor, indices: Tensor) -> Routing:
    """The routing that uses the experts ``indices``, each at its own softmax weight."""
    weights = torch.zeros_like(probs).scatter(-1, indices, probs.gather(-1, indices))
    return Routing(probs, weights, indices)


def routing_statistics(
    routing: Routing | Tensor,
    num_prompts: int | None = None,
    *,
    labels: Tensor | None = None,
    num_labels: int | None = None,
) -> Tensor:
    """Count how often each expert was chosen, per label when labels are given.

    A row concentrated on one expert for every label means the router has collapsed.

    Args:
        routing: a [Routing][contrastive_prompts.core.Routing] or its ``(B, k)`` ``indices``.
        num_prompts: ``N``; taken from ``routing.probs`` when a Routing is given.
        labels: optional ``(B,)`` integer labels.
        num_labels: rows of the result; defaults to ``labels.max() + 1``.

    Shape:
        - routing: ``(B, k)`` indices (or a Routing holding them); labels: ``(B,)``.
        - output: ``(L, N)``.

    Returns:
        ``(L, N)`` int64 counts, ``L = num_labels`` (1 without labels).

    Examples:
        >>> routing_statistics(torch.tensor([[0], [2], [2]]), 3)
        tensor([[1, 0, 2]])
    """
    if isinstance(routing, Routing):
        indices, num_prompts = routing.indices, routing.probs.shape[-1]
    else:
        indices = routing
    check_shape("routing_statistics", "indices", indices, ("B", "k"))
    if num_prompts is None:
        raise InputError("routing_statistics: expected num_prompts with bare indices, got None")
    picks = F.one_hot(indices, num_prompts).sum(dim=1)  # (B, N)
    if labels is None:
        return picks.sum(dim=0, keepdim=True)
    check_shape("routing_statistics", "labels", labels, (indices.shape[0],))
    rows = num_labels if num_labels is not None else int(labels.max()) + 1 if labels.numel() else 1
    return picks.new_zeros(rows, num_prompts).index_add_(0, labels.long(), picks)


def load_balance_loss(routing: Routing) -> Tensor:
    r"""Switch-style balance loss $N \sum_i f_i \bar p_i$ over the batch.

    $f_i$ is the fraction of picks that went to expert $i$ and $\bar p_i$ its mean softmax weight;
    the loss is 1 for perfectly balanced routing and up to $N$ when everything goes to one expert.
    MoCE-IR, a sparse peer, adds it with weight 0.01.

    Args:
        routing: the routing of a batch (from [topk_route][contrastive_prompts.core.topk_route]).

    Shape:
        - routing: ``(B, N)`` probs, ``(B, k)`` indices; output: a scalar.

    Returns:
        The scalar loss, differentiable through ``routing.probs``.

    Examples:
        >>> r = topk_route(torch.zeros(4, 5), top_k=5)
        >>> round(load_balance_loss(r).item(), 6)
        1.0
    """
    probs, _, indices = routing
    num_prompts = probs.shape[-1]
    fraction = F.one_hot(indices, num_prompts).sum(dim=1).to(probs.dtype).mean(0) / indices.shape[1]
    return num_prompts * (fraction * probs.mean(dim=0)).sum()


def label_routing_loss(
    routing: Routing, labels: Tensor, *, experts: Tensor | None = None
) -> Tensor:
    r"""Cross-entropy of the router against the expert each label is given: ``label % N``.

    $-\frac1B \sum_b \log p_b(\ell_b \bmod N)$ for routing probabilities $p$ and integer
    degradation labels $\ell$ (or $-\frac1B \sum_b \log p_b(E_{\ell_b})$ for a table
    ``experts`` $E$ of one expert per label). Training data knows which degradation it applied;
    this term teaches the router to tell them apart, so each degradation trains an expert of its
    own instead of every sample landing on whichever expert won first (top-1 routing collapses that
    way: an expert no sample selects gets no gradient). With more labels than experts, labels
    ``l`` and ``l + N`` share an expert. The router still routes from the features alone: labels
    are needed only while training.

    Args:
        routing: the routing of a batch (from [topk_route][contrastive_prompts.core.topk_route]).
        labels: ``(B,)`` integer labels, ``>= 0`` (below ``L`` with ``experts``).
        experts: ``(L,)`` integer table, the expert of each label, in ``[0, N)``; ``label % N``
            by default. A model grown by [add_experts][contrastive_prompts.core.add_experts]
            keeps its old labels' experts and gives the new labels the new experts.

    Shape:
        - routing: ``(B, N)`` probs; labels: ``(B,)``; experts: ``(L,)``; output: a scalar.

    Returns:
        The scalar loss in float32 at least, differentiable through ``routing.probs``; 0 when
        every sample puts all its weight on its label's expert, ``log N`` for a uniform router.

    Raises:
        InputError: labels that are not one integer per sample, or negative; ``experts`` that
            is not a ``(L,)`` integer tensor.

    Examples:
        >>> r = topk_route(torch.zeros(2, 4), top_k=1)
        >>> round(label_routing_loss(r, torch.tensor([0, 5])).item(), 4)  # log 4
        1.3863
    """
    where = "label_routing_loss"
    probs = routing.probs
    check_shape(where, "labels", labels, (probs.shape[0],))
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise InputError(f"{where}: expected integer labels, got {labels.dtype}")
    if experts is None:
        chosen_experts = labels.long() % probs.shape[-1]
    else:
        check_shape(where, "experts", experts, ("L",))
        if experts.dtype == torch.bool or experts.is_floating_point() or experts.is_complex():
            raise InputError(f"{where}: expected an integer table of experts, got {experts.dtype}")
        chosen_experts = experts.to(labels.device).long()[labels.long()]
    chosen = probs.to(torch.promote_types(probs.dtype, torch.float32)).gather(
        -1, chosen_experts[:, None]
    )
    return -chosen.clamp_min(torch.finfo(chosen.dtype).tiny).log().mean()


class Specialisation(NamedTuple):
    """Whether the experts of one prompt layer specialise per degradation.

    Computed by [specialisation][contrastive_prompts.core.specialisation] from a table of expert
    picks per label.

    Attributes:
        nmi: normalised mutual information between a pick's label and its expert,
            $2 I(L; E) / (H(L) + H(E))$, in ``[0, 1]``: 1 when the expert tells the label and
            the label the expert, 0 when the expert says nothing of the label (one expert for
            all, or every label spread alike); NaN with fewer than two labels.
        dead: experts that no sample picked; they get no gradient under top-1 routing.
        collapsed: one expert took at least 90 % of the picks of two or more labels.
        separated: each label's most used expert differs from every other label's.
        experts: each label's most used expert (-1 for a label without picks).

    Examples:
        >>> specialisation(torch.tensor([[4, 0, 0], [0, 4, 0]]))
        Specialisation(nmi=1.0, dead=1, collapsed=False, separated=True, experts=(0, 1))
    """

    nmi: float
    dead: int
    collapsed: bool
    separated: bool
    experts: tuple[int, ...]


COLLAPSE_SHARE = 0.9
"""The share of all picks one expert must take for
[specialisation][contrastive_prompts.core.specialisation] to call a layer collapsed."""


def specialisation(counts: Tensor) -> Specialisation:
    r"""How far a layer's experts specialise per label, from its ``(L, N)`` pick counts.

    ``counts[l, e]`` is how often samples of label ``l`` picked expert ``e``, as
    [routing_statistics][contrastive_prompts.core.routing_statistics] gives it. Labels without
    picks are left out. See [Specialisation][contrastive_prompts.core.Specialisation] for the
    figures: the normalised mutual information (1 for a one-to-one match of labels and
    experts, 0 for collapse), the experts never picked, whether one expert took
    nearly everything (``COLLAPSE_SHARE``, 90 %) and whether every label's favourite expert is
    its own.

    Args:
        counts: ``(L, N)`` non-negative integer (or float) counts.

    Returns:
        The [Specialisation][contrastive_prompts.core.Specialisation].

    Raises:
        InputError: ``counts`` not two-dimensional, or holding a negative or non-finite entry.

    Examples:
        >>> specialisation(torch.tensor([[5, 0], [5, 0]])).collapsed
        True
    """
    check_shape("specialisation", "counts", counts, ("L", "N"))
    table = counts.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(table).all()) or bool((table < 0).any()):
        raise InputError(
            "specialisation: expected finite non-negative counts, got "
            f"{counts.tolist() if counts.numel() <= 64 else 'a table with such entries'}"
        )
    used = table.sum(dim=1) > 0
    experts = tuple(int(row.argmax()) if u else -1 for row, u in zip(table, used, strict=True))
    dead = int((table.sum(dim=0) == 0).sum())
    table = table[used]
    total = float(table.sum())
    if table.shape[0] < 2:
        return Specialisation(math.nan, dead, False, True, experts)
    joint = table / total
    p_label, p_expert = joint.sum(dim=1), joint.sum(dim=0)

    def entropy(p: Tensor) -> float:
        p = p[p > 0]
        return float(-(p * p.log()).sum())

    outer = p_label[:, None] * p_expert[None, :]
    nonzero = joint > 0
    mutual = float((joint[nonzero] * (joint[nonzero] / outer[nonzero]).log()).sum())
    spread = entropy(p_label) + entropy(p_expert)
    nmi = min(max(2 * mutual / spread, 0.0), 1.0) if spread > 0 else 0.0
    collapsed = float(p_expert.max()) >= COLLAPSE_SHARE
    favourites = [e for e in experts if e >= 0]
    separated = len(set(favourites)) == len(favourites)
    return Specialisation(nmi, dead, collapsed, separated, experts)
