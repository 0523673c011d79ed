"""The Sparse Prompt Module and the prompt interaction block.

``SparsePrompt`` turns a feature map into a degradation prompt made from the ``top_k`` experts of a
learned prompt bank (CPL's Sparse Prompt Module); with ``top_k == num_prompts`` it is PromptIR's
dense prompt generator. ``PromptFusion`` merges a prompt into the features (PromptIR's interaction
block). The routing maths lives in the pure functions
[topk_route][contrastive_prompts.core.topk_route] and
[negative_route][contrastive_prompts.core.negative_route].

Two modes reach every ``SparsePrompt`` inside a model, at any depth, without a change to the
model's code: [negative_prompts][contrastive_prompts.negative_prompts] (each layer renders a
negative prompt) and [record_routing][contrastive_prompts.record_routing] (each layer logs its
routing). Like ``Module.train()``, each is a flag per layer instance, set for one model by a context
manager that restores it on exit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    InputError,
    InputTypeError,
    check_bool,
    check_dtype_like,
    check_int_range,
    check_parameters_fit,
    check_positive,
    check_shape,
    check_spatial,
)
from ._state import reset_submodules
from .restormer import TransformerBlock

__all__ = [
    "PromptFusion",
    "Routing",
    "RoutingLog",
    "SparsePrompt",
    "Specialisation",
    "fixed_experts",
    "fixed_routing",
    "label_routing_loss",
    "load_balance_loss",
    "negative_prompts",
    "negative_route",
    "pooled_routing",
    "prompt_layers",
    "record_routing",
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


class SparsePrompt(nn.Module):
    r"""Sparse Prompt Module: a prompt from the ``top_k`` experts of a learned prompt bank.

    $e = \mathrm{mean}_{H,W}(x)$, $w = \mathrm{TopK}(\mathrm{softmax}(W e + b))$,
    $p = \mathrm{conv}_{3\times3}(\mathrm{resize}(\sum_i w_i P_i, H, W))$. With
    ``top_k == num_prompts`` this is PromptIR's dense prompt generator. The bank is mixed by one
    matrix product with the (sparse) weights, so no per-sample copy of the bank is made.

    Args:
        dim: channels ``C`` of the input features.
        prompt_dim: channels ``D`` of each prompt.
        num_prompts: experts ``N`` in the bank (5 in PromptIR and CPL).
        prompt_size: spatial size ``S`` of each prompt.
        top_k: experts kept per sample (1 for CPL, ``num_prompts`` for PromptIR).
        renormalize: rescale the kept weights to sum to 1 (off in CPL); a bool.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)`` with any ``H, W >= 1``; ``B = 0`` gives an empty output.
        - Output: ``(B, prompt_dim, H, W)``.

    The input must have the parameters' dtype (convert the layer with ``.to(dtype)`` for another
    one) or, under `torch.autocast`, the autocast dtype; any other dtype, an integer one
    included, raises [InputError][contrastive_prompts.InputError], as does ``H = 0`` or ``W = 0``.

    Raises:
        InputTypeError: a size that is not an integer, or ``renormalize`` that is not a bool
            (a string such as ``"no"`` would otherwise read as true).
        InputError: a size below 1, or ``top_k`` outside ``[1, num_prompts]``.

    Examples:
        >>> layer = SparsePrompt(dim=16, prompt_dim=8, prompt_size=4)
        >>> prompt, routing = layer(torch.rand(2, 16, 10, 12), return_routing=True)
        >>> prompt.shape, routing.indices.shape
        (torch.Size([2, 8, 10, 12]), torch.Size([2, 1]))
    """

    def __init__(
        self,
        *,
        dim: int,
        prompt_dim: int,
        num_prompts: int = 5,
        prompt_size: int,
        top_k: int = 1,
        renormalize: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("prompt_dim", prompt_dim), ("prompt_size", prompt_size)):
            check_int_range("SparsePrompt", name, value, 1)
        check_int_range("SparsePrompt", "num_prompts", num_prompts, 1)
        check_int_range("SparsePrompt", "top_k", top_k, 1, num_prompts)
        check_bool("SparsePrompt", "renormalize", renormalize)
        check_parameters_fit(
            "SparsePrompt",
            lambda: SparsePrompt(
                dim=dim,
                prompt_dim=prompt_dim,
                prompt_size=prompt_size,
                num_prompts=num_prompts,
                top_k=top_k,
                device="meta",
            ),
            device,
            dtype,
            f"dim={dim}, prompt_dim={prompt_dim}, prompt_size={prompt_size}, "
            f"num_prompts={num_prompts}",
        )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.prompt_dim, self.prompt_size = dim, prompt_dim, prompt_size
        self.num_prompts, self.top_k, self.renormalize = num_prompts, top_k, renormalize
        self.prompts = nn.Parameter(
            torch.empty(num_prompts, prompt_dim, prompt_size, prompt_size, **factory)
        )
        self.router = nn.Linear(dim, num_prompts, **factory)
        self.conv = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False, **factory)
        # modes, set by negative_prompts() and record_routing(), never by hand
        self._negative_mode: _NegativeMode | None = None
        self._fixed: Tensor | Routing | None = None  # fixed_experts' experts or fixed_routing's
        self._routing_logs: tuple[tuple[RoutingLog, str], ...] = ()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PromptIR's initialisation: bank uniform in [0, 1), PyTorch defaults elsewhere."""
        nn.init.uniform_(self.prompts)
        self.router.reset_parameters()
        self.conv.reset_parameters()

    @torch.no_grad()
    def add_experts(self, count: int = 1) -> range:
        """Grow the bank by ``count`` experts, keeping every weight and key the layer has.

        The bank and the router gain ``count`` rows at the end; the existing rows keep their
        values, and the parameters their names (``prompts``, ``router.weight``,
        ``router.bias``), so the layer is what a layer built with ``num_prompts + count``
        experts holding these values would be. Each new expert starts as the mean of the bank,
        and its router row as the mean of the rows, so its logit is the mean of the other
        experts' logits, never above their largest: until trained it wins no input whose
        experts score apart. It takes from each input's own expert the share of the softmax
        its logit gets (the routing weight is a softmax over every expert): an old output
        moves by that share, small for a confident router. The parameters are new tensors:
        build the optimiser after growing.
        [add_experts][contrastive_prompts.core.add_experts] grows every layer of a model, and
        [only_new_experts][contrastive_prompts.core.only_new_experts] trains the new rows
        alone.

        Args:
            count: experts to add, an integer >= 1.

        Returns:
            The indices of the new experts, ``range(N, N + count)``.

        Raises:
            InputTypeError: ``count`` is not an integer.
            InputError: ``count < 1``.

        Examples:
            >>> layer = SparsePrompt(dim=8, prompt_dim=4, prompt_size=2)
            >>> layer.add_experts(2), layer.num_prompts, tuple(layer.router.weight.shape)
            (range(5, 7), 7, (7, 8))
        """
        check_int_range("SparsePrompt.add_experts", "count", count, 1)

        def grown(rows: Tensor) -> nn.Parameter:
            start = rows.mean(dim=0, keepdim=True).expand(count, *rows.shape[1:])
            return nn.Parameter(torch.cat([rows, start]), requires_grad=rows.requires_grad)

        before = self.num_prompts
        self.prompts = grown(self.prompts)
        self.router.weight = grown(self.router.weight)
        if self.router.bias is not None:
            self.router.bias = grown(self.router.bias)
        self.router.out_features = self.num_prompts = before + count
        return range(before, before + count)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, prompt_dim={self.prompt_dim}, num_prompts={self.num_prompts}, "
            f"prompt_size={self.prompt_size}, top_k={self.top_k}, renormalize={self.renormalize}"
        )

    def route(self, x: Tensor) -> Routing:
        """Route ``x`` of shape ``(B, dim, H, W)`` to its ``top_k`` experts."""
        check_shape("SparsePrompt", "x", x, ("B", self.dim, "H", "W"))
        check_spatial("SparsePrompt", "x", x)
        check_dtype_like("SparsePrompt", "x", x, self.router.weight)
        logits = self.router(x.mean(dim=(-2, -1)))
        return topk_route(logits, self.top_k, renormalize=self.renormalize)

    def render(self, weights: Tensor, size: Sequence[int]) -> Tensor:
        """Mix the bank with ``(B, N)`` weights and render the prompt at ``size = (H, W)``."""
        where = "SparsePrompt.render"
        check_shape(where, "weights", weights, ("B", self.num_prompts))
        check_dtype_like(where, "weights", weights, self.prompts)
        size = tuple(size)
        if len(size) != 2 or size[0] < 1 or size[1] < 1:
            raise InputError(f"{where}: expected size (H, W) with H, W >= 1, got {size}")
        bank = self.prompts.flatten(1)  # (N, D*S*S)
        # under autocast the weights may be in the autocast dtype; the product casts them
        mixed = (weights @ bank).view(weights.shape[0], *self.prompts.shape[1:])
        mixed = F.interpolate(mixed, size=size, mode="bilinear", align_corners=False)
        prompt: Tensor = self.conv(mixed)
        return prompt

    def forward(
        self, x: Tensor, *, return_routing: bool = False
    ) -> Tensor | tuple[Tensor, Routing]:
        """The prompt for ``x`` (and its routing with ``return_routing=True``).

        Inside [negative_prompts][contrastive_prompts.negative_prompts] this is
        the negative prompt; inside
        [record_routing][contrastive_prompts.record_routing] the routing is also logged.

        Args:
            x: ``(B, dim, H, W)`` features, ``H, W >= 1``.
            return_routing: also return the [Routing][contrastive_prompts.core.Routing] that made
                the prompt.

        Returns:
            The ``(B, prompt_dim, H, W)`` prompt, or ``(prompt, routing)``.
        """
        mode = self._negative_mode
        if mode is not None:
            return self._negative(
                x, generator=mode.generator, labels=mode.labels, return_routing=return_routing
            )
        routing = self._positive(x)
        for log, name in self._routing_logs:
            log.append(routing)
            log.names.append(name)
        prompt = self.render(routing.weights, x.shape[-2:])
        return (prompt, routing) if return_routing else prompt

    def _positive(self, x: Tensor, *, copies: bool = False) -> Routing:
        """The routing of ``x``'s own prompt: the router's, or what a fixing block set (for
        every copy of the batch in ``x``, with ``copies``: the rows of a negative pass)."""
        routing = self.route(x)
        fixed, batch = self._fixed, x.shape[0]
        if isinstance(fixed, Routing):
            return Routing(*(_rows(t, batch, "fixed_routing", copies=copies) for t in fixed))
        if fixed is not None:
            return _route_to(routing.probs, _rows(fixed, batch, "fixed_experts", copies=copies))
        return routing

    @torch.no_grad()
    def _negative(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        return_routing: bool = False,
    ) -> Tensor | tuple[Tensor, Routing]:
        """A negative prompt for ``x``, built without gradient.

        The experts are drawn by [negative_route][contrastive_prompts.core.negative_route],
        outside the positive's: the router's choice, or the experts a
        [fixed_experts][contrastive_prompts.core.fixed_experts] or
        [fixed_routing][contrastive_prompts.core.fixed_routing] block gives.

        Args:
            x: ``(B, dim, H, W)`` features.
            generator: source of randomness, for reproducible negatives.
            labels: optional ``(B,)`` degradation labels: draw other degradations' experts first.
            return_routing: also return the negative [Routing][contrastive_prompts.core.Routing].

        Returns:
            ``(B, prompt_dim, H, W)`` prompt (and its routing).
        """
        positive = self._positive(x, copies=True)
        routing = negative_route(positive, generator=generator, labels=labels)
        prompt = self.render(routing.weights, x.shape[-2:])
        return (prompt, routing) if return_routing else prompt


class _NegativeMode(NamedTuple):
    generator: torch.Generator | None
    labels: Tensor | None


class RoutingLog(list[Routing]):
    """The routings that [record_routing][contrastive_prompts.record_routing] collected.

    A list of [Routing][contrastive_prompts.core.Routing] in the order the layers ran; ``names[i]``
    is the qualified name (as in ``model.named_modules()``) of the layer that made ``self[i]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []


def prompt_layers(model: nn.Module) -> dict[str, SparsePrompt]:
    """Every [SparsePrompt][contrastive_prompts.SparsePrompt] inside ``model``, by qualified name.

    ``model`` may be a layer itself (its name is then ``""``), any network holding layers at any
    depth, or such a network wrapped in ``DistributedDataParallel`` or ``AveragedModel``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), SparsePrompt(dim=8, prompt_dim=4,
        ...                                                                  prompt_size=2))
        >>> list(prompt_layers(net))
        ['1']
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"prompt_layers: expected an nn.Module, got {type(model).__name__}")
    return {name: m for name, m in model.named_modules() if isinstance(m, SparsePrompt)}


def require_prompt_layers(where: str, model: nn.Module) -> dict[str, SparsePrompt]:
    """The [prompt_layers][contrastive_prompts.core.prompt_layers] of ``model``; none is an error.

    Args:
        where: the caller's name, for the message.
        model: the network.

    Returns:
        The layers by qualified name, at least one.

    Raises:
        InputError: ``model`` holds no SparsePrompt; the message names ``where``.
    """
    layers = prompt_layers(model)
    if not layers:
        raise InputError(
            f"{where}: expected a model containing SparsePrompt layers, got "
            f"{type(model).__name__} with none (add_prompts adds them to an existing network)"
        )
    return layers


@contextlib.contextmanager
def negative_prompts(
    model: nn.Module,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Iterator[None]:
    """Run ``model`` with negative prompts: every SparsePrompt inside renders CPL's negative.

    Inside the block each [SparsePrompt][contrastive_prompts.SparsePrompt] of ``model``, at any
    depth, returns a negative prompt instead of its own
    prompt: experts it did not select, drawn from ``generator`` (see
    [negative_route][contrastive_prompts.core.negative_route]). The block runs under
    ``torch.no_grad()``: negatives are targets to push away from, not paths for the gradient.
    The mode is a flag per layer instance, set on entry and restored on exit, an exception
    included; blocks nest (the innermost one's generator and labels apply). A model wrapped in
    ``DistributedDataParallel`` works as it is. Under ``torch.compile`` the flag is guarded
    state: the first call in each mode compiles, later calls reuse the graphs (the draw from
    ``generator`` is a graph break).

    Args:
        model: a network holding SparsePrompt layers.
        generator: source of randomness for the negative experts, drawn by each layer in call
            order.
        labels: optional ``(B,)`` degradation labels of the batch the block will run: negatives
            favour experts that other degradations selected.

    Raises:
        InputError: ``model`` holds no SparsePrompt, or one whose ``top_k`` leaves no expert for
            negatives (``top_k == num_prompts``).

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> x = torch.rand(2, 3, 16, 16)
        >>> with negative_prompts(model, generator=torch.Generator().manual_seed(0)):
        ...     negative = model(x)
        >>> negative.shape, negative.requires_grad
        (torch.Size([2, 3, 16, 16]), False)
    """
    layers = require_prompt_layers("negative_prompts", model)
    dense = [name for name, layer in layers.items() if layer.top_k >= layer.num_prompts]
    if dense:
        raise InputError(
            "negative_prompts: expected layers with top_k < num_prompts (experts left for "
            f"negatives), got top_k == num_prompts in {dense}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(
            "negative_prompts: expected generator to be a torch.Generator or None, got "
            f"{type(generator).__name__}"
        )
    mode = _NegativeMode(generator, labels)
    previous = {name: layer._negative_mode for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer._negative_mode = mode
        with torch.no_grad():
            yield
    finally:
        for name, layer in layers.items():
            layer._negative_mode = previous[name]


@contextlib.contextmanager
def fixed_experts(model: nn.Module, experts: Mapping[str, Tensor | int]) -> Iterator[None]:
    """Run ``model`` with chosen experts: each named SparsePrompt uses the experts given.

    Inside the block the layer named ``name`` (as in
    [prompt_layers][contrastive_prompts.core.prompt_layers]) renders its prompt from
    ``experts[name]`` instead of its own top-k choice, each expert at the weight its router
    gives it, as a negative prompt is weighted: what the paper's negatives mean when experts
    specialise, "another degradation's prompt". Layers not named route as usual. Giving each
    image the experts another degradation uses measures the *swap* cost. Negative prompts drawn
    inside the block ([negative_prompts][contrastive_prompts.negative_prompts],
    [forward_with_negatives][contrastive_prompts.forward_with_negatives]) come from outside the
    experts given. The flag is restored on exit, an exception included. Gradients flow as
    usual.

    Args:
        model: a network holding SparsePrompt layers.
        experts: ``{layer name: experts}``; experts are an int (one expert for every sample),
            a ``(B,)`` integer tensor (one per sample) or ``(B, k)`` (``k`` per sample); a
            first dimension of 1 serves every sample.

    Raises:
        InputError: a name that is not a prompt layer of ``model``, or experts that are not
            integers in ``[0, num_prompts)``.

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> with fixed_experts(model, {"1.prompt": 3}), record_routing(model) as log:
        ...     out = model(torch.rand(2, 3, 16, 16))
        >>> log[-1].indices.tolist()
        [[3], [3]]
    """
    layers = _named_layers("fixed_experts", model, experts, "experts")
    chosen: dict[str, Tensor] = {}
    for name, value in experts.items():
        layer = layers[name]
        if isinstance(value, bool) or not isinstance(value, (int, Tensor)):
            raise InputTypeError(
                f"fixed_experts: expected an int or an integer tensor for {name!r}, got "
                f"{type(value).__name__}"
            )
        tensor = torch.as_tensor(value, device=layer.prompts.device)
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise InputError(
                f"fixed_experts: expected integer experts for {name!r}, got {tensor.dtype}"
            )
        tensor = tensor.long().reshape(-1, 1) if tensor.ndim < 2 else tensor.long()
        if tensor.ndim != 2 or tensor.numel() == 0:
            raise InputError(
                f"fixed_experts: expected an int, (B,) or (B, k) experts for {name!r}, got "
                f"shape {tuple(torch.as_tensor(value).shape)}"
            )
        if bool(((tensor < 0) | (tensor >= layer.num_prompts)).any()):
            raise InputError(
                f"fixed_experts: expected experts in [0, {layer.num_prompts - 1}] for {name!r}, "
                f"got {sorted(set(tensor.flatten().tolist()))}"
            )
        chosen[name] = tensor
    with _fixing(layers, chosen):
        yield


@contextlib.contextmanager
def fixed_routing(model: nn.Module, routings: Mapping[str, Routing]) -> Iterator[None]:
    """Run ``model`` with given routings: each named SparsePrompt renders its prompt from one.

    Inside the block the layer named ``name`` (as in
    [prompt_layers][contrastive_prompts.core.prompt_layers]) ignores its router's choice and
    renders from ``routings[name].weights``, experts and weights both; it reports that routing
    (to ``return_routing`` and [record_routing][contrastive_prompts.record_routing]). With the
    routing of a whole image (from [pooled_routing][contrastive_prompts.core.pooled_routing] of
    its tiles) every tile is restored under the same prompts; ``tiled(routing="image")`` does
    so. Layers not named route as usual; the flags are restored on exit, an exception included.

    Args:
        model: a network holding SparsePrompt layers.
        routings: ``{layer name: Routing}`` with ``(1, N)`` rows (one for every sample) or one
            row per sample of the batch the layer will route, on the layer's device.

    Raises:
        InputError: a name that is not a prompt layer of ``model``, a routing whose rows do not
            hold that layer's ``N`` experts, or (when the layer runs) rows that are neither 1 nor
            the batch.

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> x = torch.rand(1, 3, 16, 16)
        >>> with record_routing(model) as log:
        ...     first = model(x)
        >>> with fixed_routing(model, dict(zip(log.names, log))):
        ...     torch.equal(model(x), first)
        True
    """
    layers = _named_layers("fixed_routing", model, routings, "Routing")
    chosen: dict[str, Routing] = {}
    for name, routing in routings.items():
        if not isinstance(routing, Routing):
            raise InputTypeError(
                f"fixed_routing: expected a Routing for {name!r}, got {type(routing).__name__}"
            )
        experts = layers[name].num_prompts
        if routing.weights.ndim != 2 or routing.weights.shape[-1] != experts:
            raise InputError(
                f"fixed_routing: expected weights of shape (B, {experts}) for {name!r}, got "
                f"{tuple(routing.weights.shape)}"
            )
        chosen[name] = routing
    with _fixing(layers, chosen):
        yield


def _named_layers(
    where: str, model: nn.Module, chosen: object, what: str
) -> dict[str, SparsePrompt]:
    """The prompt layers of ``model``, once ``chosen`` is a mapping of some of their names."""
    layers = require_prompt_layers(where, model)
    if not isinstance(chosen, Mapping):
        raise InputTypeError(
            f"{where}: expected a mapping of prompt layer names to {what}, got "
            f"{type(chosen).__name__}"
        )
    for name in chosen:
        if name not in layers:
            raise InputError(
                f"{where}: expected names of prompt layers of {type(model).__name__}, "
                f"among {sorted(layers)}, got {name!r}"
            )
    return layers


@contextlib.contextmanager
def _fixing(
    layers: Mapping[str, SparsePrompt], fixed: Mapping[str, Tensor | Routing | None]
) -> Iterator[None]:
    previous = {name: layers[name]._fixed for name in fixed}
    try:
        for name, value in fixed.items():
            layers[name]._fixed = value
        yield
    finally:
        for name, before in previous.items():
            layers[name]._fixed = before


def _unfixed(layers: Iterable[nn.Module]) -> contextlib.AbstractContextManager[None]:
    """The prompt layers among ``layers`` route by their routers in the block, whatever a
    fixing block set (for a look-only pass on another batch size)."""
    prompts = {str(i): m for i, m in enumerate(layers) if isinstance(m, SparsePrompt)}
    return _fixing(prompts, dict.fromkeys(prompts))


@contextlib.contextmanager
def record_routing(model: nn.Module) -> Iterator[RoutingLog]:
    """Collect the routing of every SparsePrompt inside ``model`` as it runs, in call order.

    No ``return_routing`` needs threading through the network's code: each
    [SparsePrompt][contrastive_prompts.SparsePrompt] of ``model`` appends its positive
    [Routing][contrastive_prompts.core.Routing] (with gradient, for a balance loss) to the yielded
    [RoutingLog][contrastive_prompts.core.RoutingLog], whose ``names`` say which layer made each
    one. Negative prompts are not logged. Blocks nest: every open block collects.

    Raises:
        InputError: ``model`` holds no SparsePrompt (the log would stay empty).

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             PromptStage(dim=8, prompt_size=4))
        >>> with record_routing(model) as log:
        ...     out = model(torch.rand(2, 3, 16, 16))
        >>> log.names, log[0].indices.shape  # in call order
        (['1.prompt', '2.prompt'], torch.Size([2, 1]))
    """
    layers = require_prompt_layers("record_routing", model)
    log = RoutingLog()
    previous = {name: layer._routing_logs for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer._routing_logs = (*layer._routing_logs, (log, name))
        yield log
    finally:
        for name, layer in layers.items():
            layer._routing_logs = previous[name]


class PromptFusion(nn.Module):
    """PromptIR's prompt interaction block: ``proj(block(concat(x, prompt)))``.

    Args:
        dim: channels of the features ``x``.
        prompt_dim: channels of the prompt.
        out_dim: channels of the output; ``dim`` by default.
        num_heads: attention heads of the default block (must divide ``dim + prompt_dim``).
        ffn_expansion_factor: feed-forward width of the default block.
        block: any module mapping ``(B, dim + prompt_dim, H, W)`` to the same shape; one
            Restormer [TransformerBlock][contrastive_prompts.core.TransformerBlock] by default.
        device: where to allocate the parameters (of the default block too).
        dtype: dtype of the parameters (of the default block too).

    Shape:
        - x: ``(B, dim, H, W)`` with ``H, W >= 1``; prompt: ``(B, prompt_dim, H, W)``.
        - Output: ``(B, out_dim, H, W)``; ``B = 0`` gives an empty output.

    ``x`` and ``prompt`` follow the dtype rule of
    [SparsePrompt][contrastive_prompts.SparsePrompt]: the parameters' dtype, or the autocast
    dtype under `torch.autocast`.

    Raises:
        InputTypeError: a width that is not an integer, or (for the default block)
            ``ffn_expansion_factor`` that is not a number.
        InputError: a width below 1, or (for the default block) ``ffn_expansion_factor``
            that is not a finite number > 0.

    Examples:
        >>> fusion = PromptFusion(dim=16, prompt_dim=8, num_heads=2)
        >>> fusion(torch.rand(2, 16, 6, 6), torch.rand(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self,
        *,
        dim: int,
        prompt_dim: int,
        out_dim: int | None = None,
        num_heads: int = 1,
        ffn_expansion_factor: float = 2.66,
        block: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int_range("PromptFusion", "dim", dim, 1)
        check_int_range("PromptFusion", "prompt_dim", prompt_dim, 1)
        if out_dim is not None:
            check_int_range("PromptFusion", "out_dim", out_dim, 1)
        width = dim + prompt_dim
        if block is None:
            check_positive("PromptFusion", "ffn_expansion_factor", ffn_expansion_factor)
            check_parameters_fit(
                "PromptFusion",
                lambda: TransformerBlock(
                    width,
                    num_heads=num_heads,
                    ffn_expansion_factor=ffn_expansion_factor,
                    device="meta",
                ),
                device,
                dtype,
                f"dim={dim}, prompt_dim={prompt_dim}, ffn_expansion_factor={ffn_expansion_factor}",
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.prompt_dim = dim, prompt_dim
        self.out_dim = dim if out_dim is None else out_dim
        self.block = (
            block
            if block is not None
            else TransformerBlock(
                width, num_heads=num_heads, ffn_expansion_factor=ffn_expansion_factor, **factory
            )
        )
        self.proj = nn.Conv2d(width, self.out_dim, 1, bias=False, **factory)

    def reset_parameters(self) -> None:
        """The block's start (each part's, for a block of your own) and the projection at
        PyTorch's default."""
        reset_submodules(self)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, prompt_dim={self.prompt_dim}, out_dim={self.out_dim}"

    def forward(self, x: Tensor, prompt: Tensor) -> Tensor:
        """Fuse the prompt into the features: ``proj(block(concat(x, prompt)))``.

        Args:
            x: ``(B, dim, H, W)`` features.
            prompt: ``(B, prompt_dim, H, W)``, e.g. the output of a
                [SparsePrompt][contrastive_prompts.SparsePrompt] at the size of ``x``.

        Returns:
            ``(B, out_dim, H, W)``.
        """
        check_shape("PromptFusion", "x", x, ("B", self.dim, "H", "W"))
        check_spatial("PromptFusion", "x", x)
        b, _, h, w = x.shape
        check_shape("PromptFusion", "prompt", prompt, (b, self.prompt_dim, h, w))
        check_dtype_like("PromptFusion", "x", x, self.proj.weight)
        check_dtype_like("PromptFusion", "prompt", prompt, self.proj.weight)
        fused: Tensor = self.proj(self.block(torch.cat([x, prompt], dim=1)))
        return fused
