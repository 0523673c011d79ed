"""The CPL training objective: ``L1 + lambda * CPR`` (+ optional routing terms)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    InputError,
    InputTypeError,
    check_batch,
    check_bool,
    check_channels,
    check_int_range,
    check_positive,
    check_same_shape,
    check_shape,
)
from .loss import MODES, ContrastivePromptLoss
from .negatives import MAX_NEGATIVES, forward_with_negatives
from .prompt import (
    RoutingLog,
    prompt_layers,
    record_routing,
)
from .routing import (
    Routing,
    label_routing_loss,
    load_balance_loss,
    routing_statistics,
)

__all__ = ["ROUTING_WEIGHT", "CPLObjective", "ObjectiveOutput"]

ROUTING_WEIGHT = 0.01
"""The default weight of the label-routing term of
[CPLObjective][contrastive_prompts.CPLObjective]."""


class ObjectiveOutput(NamedTuple):
    """Everything one training step needs to log.

    Attributes:
        loss: the scalar to call ``backward()`` on.
        l1: the L1 reconstruction term.
        cpr: the contrastive prompt term (0 when its weight is 0).
        balance: the expert-balance term, averaged over prompt stages (0 when its weight is 0).
        routing: the label-routing term, averaged over prompt stages (0 when its weight is 0
            or no labels are given).
        output: ``(B, C, H, W)`` restored batch.
        expert_counts: per prompt layer in call order, ``(L, N)`` counts of expert picks per
            label (``L = 1`` without labels).
        stages: the qualified names of those prompt layers, in the same order.

    Examples:
        >>> ObjectiveOutput._fields
        ('loss', 'l1', 'cpr', 'balance', 'routing', 'output', 'expert_counts', 'stages')
    """

    loss: Tensor
    l1: Tensor
    cpr: Tensor
    balance: Tensor
    routing: Tensor
    output: Tensor
    expert_counts: tuple[Tensor, ...]
    stages: tuple[str, ...] = ()


class CPLObjective(nn.Module):
    r"""Contrastive Prompt Learning's loss for any network holding SparsePrompt layers.

    $\mathcal{L} = \mathcal{L}_1(a, y) + \lambda\,\mathrm{CPR}(a, y, n_{1..M})
    + \beta\,\mathrm{balance} + \rho\,\mathrm{routing}$, where $a$ is the model's output, $y$ the
    clean batch and $n_j$
    the outputs under negative prompts from
    [forward_with_negatives][contrastive_prompts.forward_with_negatives], which reuses whatever
    the network computes before its first prompt layer. The routing of every prompt layer is
    recorded as the network runs ([record_routing][contrastive_prompts.record_routing]), so the
    network needs no extra method and no change to its ``forward``: ``model(degraded)`` must
    return the restored batch. With ``weight=0`` any network trains with L1 alone.

    CPR's negatives are "another degradation's prompt" only if the experts specialise per
    degradation. With labels (training data knows which degradation it applied) the routing
    term ([label_routing_loss][contrastive_prompts.core.label_routing_loss], weight $\rho$)
    teaches every router to send label $\ell$ to expert $\ell \bmod N$; without it, top-1
    routing tends to collapse onto one expert per layer and a negative prompt then changes
    little. The term needs labels only in training: the router still routes from the features.
    Without labels it is 0. Images may
    have any number of channels (grey-scale denoisers take one); the loss's feature space must
    take them (see [ContrastivePromptLoss][contrastive_prompts.ContrastivePromptLoss]).

    Args:
        weight: $\lambda$; 0 trains with L1 alone (and makes no negatives).
        num_negatives: $M$.
        loss: the contrastive loss;
            [ContrastivePromptLoss][contrastive_prompts.ContrastivePromptLoss] by default.
        balance_weight: $\beta$ of [load_balance_loss][contrastive_prompts.core.load_balance_loss].
        routing_weight: $\rho$ of
            [label_routing_loss][contrastive_prompts.core.label_routing_loss] (``ROUTING_WEIGHT``,
            0.01, by default), applied when labels are given.
        num_labels: rows of the expert-use counts (defaults to the largest label + 1, a value
            read from the labels on every call: give it when the call is compiled); labels
            must then lie in ``[0, num_labels)``.
        label_negatives: give the labels, when the call has them, to the negatives too, which
            then favour experts that other degradations use (CPL itself draws them without
            labels: ``False``). Labels always feed the routing term and the expert-use counts.
        chunk_size: rows per negative pass (see
            [forward_with_negatives][contrastive_prompts.forward_with_negatives]); all at once
            by default.
        label_experts: the expert the routing term teaches each label, one integer >= 0 per
            label (``label % N`` by default). A model grown by
            [add_experts][contrastive_prompts.core.add_experts] keeps its old labels' experts
            and gives each new label a new expert; labels must then lie below its length, and
            every expert below each layer's ``N``.

    Shape:
        - ``forward(model, degraded, clean, labels=None, *, generator=None)``: ``degraded`` and
          ``clean`` $(B, C, H, W)$ with any $C \ge 1$ (3 for RGB, 1 for grey-scale), ``labels``
          $(B,)$; returns an [ObjectiveOutput][contrastive_prompts.core.ObjectiveOutput] of scalars,
          the $(B, C, H, W)$ output and $(L, N)$ expert counts per prompt stage.

    Raises:
        InputTypeError: at construction, an option of the wrong type: ``loss`` that is not a
            module (a string such as ``"l1"``: the L1 term is always there, and
            ``ContrastivePromptLoss(mode=...)`` picks the contrastive one), ``label_negatives``
            that is not a bool, ``num_labels`` that is not an integer.
        InputError: at construction, a number out of its range (``weight < 0``,
            ``balance_weight < 0``, ``routing_weight < 0``,
            ``num_negatives < 1``, ``num_labels < 1``, ``label_experts`` not a non-empty
            sequence of integers >= 0); at the call, an empty batch, labels that
            are not one integer per image (their range is checked by
            [check_labels][contrastive_prompts.CPLObjective.check_labels], where they
            enter: the call never reads a tensor's value), an expert of ``label_experts``
            that a prompt layer does not have, ``weight > 0`` and the model
            holds no SparsePrompt that leaves experts for negatives, the model's output does not
            have the shape of ``clean`` (checked before the loss sees it), or the loss's feature
            space does not take ``C`` channels (such as
            [VGG16Features][contrastive_prompts.core.VGG16Features], which takes 1 or 3).

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> objective = CPLObjective(num_negatives=2)
        >>> degraded, clean = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        >>> parts = objective(model, degraded, clean)
        >>> parts.loss.backward()
    """

    _label_experts: Tensor  # label_experts as a buffer, on the objective's device

    def __init__(
        self,
        *,
        weight: float = 0.01,
        num_negatives: int = 4,
        loss: nn.Module | None = None,
        balance_weight: float = 0.0,
        routing_weight: float = ROUTING_WEIGHT,
        num_labels: int | None = None,
        chunk_size: int | None = None,
        label_negatives: bool = True,
        label_experts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        where = "CPLObjective"
        check_positive(where, "weight", weight, allow_zero=True)
        check_positive(where, "balance_weight", balance_weight, allow_zero=True)
        check_positive(where, "routing_weight", routing_weight, allow_zero=True)
        check_int_range(where, "num_negatives", num_negatives, 1, MAX_NEGATIVES)
        if num_labels is not None:
            check_int_range(where, "num_labels", num_labels, 1)
        if chunk_size is not None:
            check_int_range(where, "chunk_size", chunk_size, 1)
        check_bool(where, "label_negatives", label_negatives)
        if loss is not None and not callable(loss):
            modes = ", ".join(map(repr, MODES))
            raise InputTypeError(
                f"{where}: expected loss to be None or a module such as "
                f"ContrastivePromptLoss(mode=m), m one of {modes} (the L1 term is always "
                f"added), got {type(loss).__name__} {loss!r}"
            )
        self.weight, self.num_negatives = weight, num_negatives
        self.balance_weight, self.num_labels = balance_weight, num_labels
        self.routing_weight = routing_weight
        self.chunk_size = chunk_size
        self.label_negatives = label_negatives
        self.loss = loss if loss is not None else ContrastivePromptLoss()
        self.label_experts: tuple[int, ...] | None = None
        if label_experts is not None:
            if isinstance(label_experts, (str, bytes)) or not isinstance(label_experts, Sequence):
                raise InputTypeError(
                    f"{where}: expected label_experts to be a sequence of integers, got "
                    f"{type(label_experts).__name__}"
                )
            if not label_experts or any(
                isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in label_experts
            ):
                raise InputError(
                    f"{where}: expected label_experts to be one integer >= 0 per label, got "
                    f"{list(label_experts)}"
                )
            self.label_experts = tuple(label_experts)
        # labels index the expert-use counts and the table: the smaller bound, and its name
        bounds = [(num_labels, "num_labels"), (len(self.label_experts or ()), "len(label_experts)")]
        self._label_limit = min(((n, what) for n, what in bounds if n), default=None)
        table = torch.tensor(self.label_experts or (), dtype=torch.long)
        self.register_buffer("_label_experts", table, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, num_negatives={self.num_negatives}, "
            f"balance_weight={self.balance_weight}, routing_weight={self.routing_weight}"
        )

    def forward(
        self,
        model: nn.Module,
        degraded: Tensor,
        clean: Tensor,
        labels: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> ObjectiveOutput:
        """Run ``model`` on ``degraded`` (and its negatives) and score the output.

        Args:
            model: the network; ``model(degraded)`` returns the restored batch.
            degraded: ``(B, C, H, W)`` inputs, any ``C >= 1``.
            clean: ``(B, C, H, W)`` targets.
            labels: ``(B,)`` degradation labels, for the routing term, the expert-use counts
                (and the negatives with ``label_negatives=True``).
            generator: draws the negative prompts; the global generator by default.

        Returns:
            The loss and its parts, the output and the expert-use counts.
        """
        check_shape("CPLObjective", "degraded", degraded, ("B", "C", "H", "W"))
        check_channels("CPLObjective", "degraded", degraded)
        check_batch("CPLObjective", "degraded", degraded)
        check_same_shape("CPLObjective", "clean", clean, "degraded", degraded)
        if labels is not None:
            check_shape("CPLObjective", "labels", labels, (degraded.shape[0],))
            if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
                raise InputError(
                    f"CPLObjective: expected labels to be an integer tensor, got {labels.dtype}"
                )
        zero = degraded.new_zeros(())
        negatives = None
        if self.weight > 0:
            output, negatives, routing = forward_with_negatives(
                model,
                degraded,
                num_negatives=self.num_negatives,
                generator=generator,
                labels=labels if self.label_negatives else None,
                chunk_size=self.chunk_size,
            )
        elif prompt_layers(model):
            with record_routing(model) as routing:
                output = model(degraded)
        else:  # L1 alone trains any network
            output, routing = model(degraded), RoutingLog()
        self._check_output(output, clean)
        cpr = zero if negatives is None else self.loss(output, clean, negatives)
        l1 = F.l1_loss(output, clean)
        balance = zero
        if self.balance_weight > 0 and routing:
            balance = torch.stack([load_balance_loss(r) for r in routing]).mean()
        guide = zero
        if self.routing_weight > 0 and labels is not None and routing:
            experts = None
            if self.label_experts is not None:
                self._check_label_experts(routing)
                experts = self._label_experts
            guide = torch.stack(
                [label_routing_loss(r, labels, experts=experts) for r in routing]
            ).mean()
        loss = l1 + self.weight * cpr + self.balance_weight * balance + self.routing_weight * guide
        counts = self._counts(routing, labels)
        return ObjectiveOutput(loss, l1, cpr, balance, guide, output, counts, tuple(routing.names))

    @staticmethod
    def _check_output(output: object, clean: Tensor) -> None:
        """The network's output against the target, before any loss compares them."""
        expected = (
            "CPLObjective: expected model(degraded) to return a tensor of the shape of clean "
            f"{tuple(clean.shape)} (the target), got"
        )
        if not isinstance(output, Tensor):
            raise InputTypeError(f"{expected} {type(output).__name__}")
        if output.shape != clean.shape:
            raise InputError(f"{expected} an output of shape {tuple(output.shape)}")

    def _check_label_experts(self, routing: RoutingLog) -> None:
        """Every expert of ``label_experts`` is one each prompt layer has (no sync)."""
        assert self.label_experts is not None
        largest = max(self.label_experts)
        for name, routed in zip(routing.names, routing, strict=True):
            if largest >= routed.probs.shape[-1]:
                raise InputError(
                    f"CPLObjective: expected label_experts below the {routed.probs.shape[-1]} "
                    f"experts of prompt layer {name!r}, got {largest}"
                )

    def check_labels(self, labels: Tensor) -> None:
        """Refuse labels that are not integers in ``[0, num_labels)`` (``>= 0`` without
        ``num_labels``; below the rows of ``label_experts`` with a table), naming the bad ones.

        ``forward`` checks the labels' shape and dtype, never their values: reading a value
        waits for the device and breaks a compiled graph. A label out of range fails there only
        where it indexes (torch's "index out of bounds" on the CPU, a device-side assert on a
        GPU). Check labels where they enter, on the CPU before they move, as the trainer does
        for each batch.

        Raises:
            InputError: labels that are not a 1-D integer tensor, or lie out of range.

        Examples:
            >>> CPLObjective(num_labels=3).check_labels(torch.tensor([0, 2]))
            >>> try:
            ...     CPLObjective(num_labels=3).check_labels(torch.tensor([0, 3]))
            ... except InputError as error:
            ...     print(error)
            CPLObjective: expected labels in [0, 2] (num_labels=3), got [3]
        """
        check_shape("CPLObjective", "labels", labels, ("B",))
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise InputError(
                f"CPLObjective: expected labels to be an integer tensor, got {labels.dtype}"
            )
        if self._label_limit is None:
            outside = labels < 0
            expected = "labels >= 0"
        else:
            limit, what = self._label_limit
            outside = (labels < 0) | (labels >= limit)
            expected = f"labels in [0, {limit - 1}] ({what}={limit})"
        if bool(outside.any()):
            bad = labels[outside].unique().tolist()
            shown = f"{bad[:8]}"[:-1] + ", ...]" if len(bad) > 8 else f"{bad}"
            raise InputError(f"CPLObjective: expected {expected}, got {shown}")

    def _counts(self, routing: Sequence[Routing], labels: Tensor | None) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return tuple(
                routing_statistics(r, labels=labels, num_labels=self.num_labels) for r in routing
            )
