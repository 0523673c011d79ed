"""Does the prompt matter? Own against negative prompts, per degradation, on held-out images.

[prompt_effect][contrastive_prompts.app.effect.prompt_effect] scores a prompted network three ways
on the same images: the degraded input, the output under the network's own prompts and the output
under negative prompts ([negative_prompts][contrastive_prompts.negative_prompts]: experts its
routers did not select). The gap between the last two, the cost of a negative prompt, is what
Contrastive Prompt Learning trains for: near 0 dB, the prompt does nothing the network needs.
It also reports, per prompt layer, the expert each degradation uses most and how often.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import InputError, InputTypeError, check_int_range, check_same_shape, check_shape
from ..core.prompt import (
    negative_prompts,
    record_routing,
    require_prompt_layers,
    routing_statistics,
)
from .metrics import psnr

__all__ = ["ExpertUse", "PromptEffect", "prompt_effect"]


class ExpertUse(NamedTuple):
    """The expert one degradation uses most at one prompt layer.

    Attributes:
        expert: index of the expert in the layer's bank.
        share: fraction of the degradation's routed samples that selected it, in [0, 1].

    Examples:
        >>> ExpertUse(expert=1, share=0.75).share
        0.75
    """

    expert: int
    share: float


@dataclass(frozen=True)
class PromptEffect:
    """What [prompt_effect][contrastive_prompts.app.effect.prompt_effect] measured, per degradation.

    PSNR values are per-image PSNR (dB) averaged over a degradation's images; the ``average``
    properties weigh every degradation once.

    Attributes:
        names: the degradations seen, in label order.
        count: images per degradation.
        degraded: PSNR of the degraded input.
        own: PSNR of the output under the network's own prompts.
        negative: PSNR of the output under negative prompts, averaged over ``num_negatives``
            draws per image.
        experts: per prompt layer (qualified name, in call order), per degradation, the
            [ExpertUse][contrastive_prompts.app.effect.ExpertUse] of its most used expert.
        expert_counts: per prompt layer, per degradation, how many routed samples selected each
            expert (with ``top_k`` experts per sample a row sums to ``top_k`` times the samples).
        num_negatives: negative draws per image.

    Examples:
        >>> effect = PromptEffect(("haze",), {"haze": 2}, {"haze": 15.0}, {"haze": 25.0},
        ...                       {"haze": 22.5}, {}, {}, 1)
        >>> effect.cost
        {'haze': 2.5}
    """

    names: tuple[str, ...]
    count: dict[str, int]
    degraded: dict[str, float]
    own: dict[str, float]
    negative: dict[str, float]
    experts: dict[str, dict[str, ExpertUse]]
    expert_counts: dict[str, dict[str, list[int]]] = field(repr=False)
    num_negatives: int = 1

    @property
    def cost(self) -> dict[str, float]:
        """The cost of a negative prompt per degradation: own minus negative PSNR (dB)."""
        return {n: self.own[n] - self.negative[n] for n in self.names}

    def average(self, row: str) -> float:
        """Mean over degradations of ``row``: ``"degraded"``, ``"own"``, ``"negative"`` or
        ``"cost"``."""
        if row not in ("degraded", "own", "negative", "cost"):
            raise InputError(
                "PromptEffect.average: expected row to be one of 'degraded', 'own', "
                f"'negative', 'cost', got {row!r}"
            )
        values: dict[str, float] = self.cost if row == "cost" else getattr(self, row)
        return sum(values[n] for n in self.names) / len(self.names) if self.names else math.nan

    def table(self, *, digits: int = 2) -> str:
        """Two Markdown tables: PSNR per degradation, then the most used expert per layer.

        Examples:
            >>> effect = PromptEffect(("haze",), {"haze": 2}, {"haze": 15.0}, {"haze": 25.0},
            ...                       {"haze": 22.5}, {"p": {"haze": ExpertUse(1, 1.0)}},
            ...                       {"p": {"haze": [0, 2]}}, 1)
            >>> print(effect.table())
            | degradation | images | degraded | own prompts | negative prompts | cost (dB) |
            |---|---:|---:|---:|---:|---:|
            | haze | 2 | 15.00 | 25.00 | 22.50 | 2.50 |
            | average | 2 | 15.00 | 25.00 | 22.50 | 2.50 |
            <BLANKLINE>
            | most used expert (share) | haze |
            |---|---|
            | p | 1 (100%) |
        """
        lines = [
            "| degradation | images | degraded | own prompts | negative prompts | cost (dB) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        cost = self.cost
        for n in self.names:
            values = (self.degraded[n], self.own[n], self.negative[n], cost[n])
            lines.append(f"| {n} | {self.count[n]} | " + _cells(values, digits) + " |")
        averages = [self.average(row) for row in ("degraded", "own", "negative", "cost")]
        lines.append(f"| average | {sum(self.count.values())} | {_cells(averages, digits)} |")
        if self.experts:
            lines += [
                "",
                "| most used expert (share) | " + " | ".join(self.names) + " |",
                "|---" * (len(self.names) + 1) + "|",
            ]
            for layer, uses in self.experts.items():
                cells = [
                    f"{uses[n].expert} ({uses[n].share:.0%})" if n in uses else "-"
                    for n in self.names
                ]
                lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``json.dumps``: every field, the cost, and the averages.

        Examples:
            >>> effect = PromptEffect(("haze",), {"haze": 2}, {"haze": 15.0}, {"haze": 25.0},
            ...                       {"haze": 22.5}, {}, {}, 1)
            >>> effect.to_dict()["average"]["cost"]
            2.5
        """
        return {
            "names": list(self.names),
            "count": dict(self.count),
            "degraded": dict(self.degraded),
            "own": dict(self.own),
            "negative": dict(self.negative),
            "cost": self.cost,
            "average": {row: self.average(row) for row in ("degraded", "own", "negative", "cost")},
            "experts": {
                layer: {n: use._asdict() for n, use in uses.items()}
                for layer, uses in self.experts.items()
            },
            "expert_counts": {
                layer: {n: list(row) for n, row in rows.items()}
                for layer, rows in self.expert_counts.items()
            },
            "num_negatives": self.num_negatives,
        }


def _cells(values: Iterable[float], digits: int) -> str:
    return " | ".join(f"{v:.{digits}f}" for v in values)


@contextlib.contextmanager
def _evaluation(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode, and each one's own flag back on exit, errors included."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training


class _Tally:
    """Sums per label of the three PSNRs and of the expert picks per prompt layer."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.sums: dict[str, dict[int, float]] = {"degraded": {}, "own": {}, "negative": {}}
        self.picks: dict[str, dict[int, Tensor]] = {}  # layer -> label -> (N,) counts
        self.rows: dict[str, dict[int, int]] = {}  # layer -> label -> routed samples

    def add_psnr(self, row: str, labels: list[int], values: list[float]) -> None:
        sums = self.sums[row]
        for label, value in zip(labels, values, strict=True):
            sums[label] = sums.get(label, 0.0) + value

    def add_routing(self, layer: str, indices: Tensor, num_prompts: int, labels: Tensor) -> None:
        if indices.shape[0] != labels.shape[0]:
            if labels.shape[0] != 1:
                return  # rows that are not the batch's samples (tiles of several images)
            labels = labels.expand(indices.shape[0])  # tiles of one image
        counts = routing_statistics(
            indices.cpu(), num_prompts, labels=labels, num_labels=int(labels.max()) + 1
        )
        picks, rows = self.picks.setdefault(layer, {}), self.rows.setdefault(layer, {})
        for label in labels.unique().tolist():
            picks[label] = picks.get(label, torch.zeros(num_prompts, dtype=torch.int64))
            picks[label] += counts[label]
            rows[label] = rows.get(label, 0) + int((labels == label).sum())

    def result(self, name_of: Callable[[int], str], num_negatives: int) -> PromptEffect:
        labels = sorted(self.count)
        names = tuple(name_of(label) for label in labels)
        per = {
            row: {
                name_of(k): sums[k] / (self.count[k] * (num_negatives if row == "negative" else 1))
                for k in labels
            }
            for row, sums in self.sums.items()
        }
        experts: dict[str, dict[str, ExpertUse]] = {}
        counts: dict[str, dict[str, list[int]]] = {}
        for layer, picks in self.picks.items():
            experts[layer], counts[layer] = {}, {}
            for k in sorted(picks):
                top = int(picks[k].argmax())
                share = int(picks[k][top]) / self.rows[layer][k]
                experts[layer][name_of(k)] = ExpertUse(top, share)
                counts[layer][name_of(k)] = picks[k].tolist()
        return PromptEffect(
            names=names,
            count={name_of(k): self.count[k] for k in labels},
            degraded=per["degraded"],
            own=per["own"],
            negative=per["negative"],
            experts=experts,
            expert_counts=counts,
            num_negatives=num_negatives,
        )


def measure_effect(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    *,
    names: Sequence[str] | Mapping[int, str] | None,
    num_negatives: int,
    generator: torch.Generator | None,
    label_negatives: bool,
    forward: Callable[[Tensor], Tensor] | None,
    y_channel: bool,
    where: str,
) -> PromptEffect:
    """The measurement itself, over ``(degraded, clean, labels)`` batches of one image size."""
    layers = require_prompt_layers(where, model)
    dense = [name for name, layer in layers.items() if layer.top_k >= layer.num_prompts]
    if dense:
        raise InputError(
            f"{where}: expected prompt layers with top_k < num_prompts (experts left for "
            f"negative prompts), got top_k == num_prompts in {dense}"
        )
    check_int_range(where, "num_negatives", num_negatives, 1)
    run = forward if forward is not None else model
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    tally = _Tally()

    def score(row: str, images: Tensor, clean: Tensor, labels: list[int]) -> None:
        if images.shape != clean.shape:
            raise InputError(
                f"{where}: expected the model to return images of shape {tuple(clean.shape)}, "
                f"got {tuple(images.shape)}"
            )
        dt = torch.promote_types(images.dtype, torch.float32)
        values = psnr(images.clamp(0, 1).to(dt), clean.to(dt), y_channel=y_channel)
        tally.add_psnr(row, labels, values.double().cpu().tolist())

    with _evaluation(model):
        for degraded, clean, labels in batches:
            listed = labels.tolist()
            dtype = reference.dtype if reference is not None else degraded.dtype
            degraded = degraded.to(device=device, dtype=dtype)
            clean = clean.to(device=device, dtype=dtype)
            score("degraded", degraded, clean, listed)
            with record_routing(model) as log:
                own = run(degraded)
            score("own", own, clean, listed)
            for routing, layer in zip(log, log.names, strict=True):
                tally.add_routing(layer, routing.indices, routing.probs.shape[-1], labels.cpu())
            for _ in range(num_negatives):
                negative_labels = labels.to(device) if label_negatives else None
                with negative_prompts(model, generator=generator, labels=negative_labels):
                    negative = run(degraded)
                score("negative", negative, clean, listed)
            for label in listed:
                tally.count[label] = tally.count.get(label, 0) + 1

    def name_of(label: int) -> str:
        if names is None:
            return str(label)
        if isinstance(names, Mapping):
            return str(names.get(label, label))
        return str(names[label])

    return tally.result(name_of, num_negatives)


def _images(where: str, name: str, images: Tensor | Sequence[Tensor]) -> list[Tensor] | Tensor:
    if isinstance(images, Tensor):
        check_shape(where, name, images, ("N", "C", "H", "W"))
        return images
    if not isinstance(images, Sequence) or isinstance(images, str):
        raise InputTypeError(
            f"{where}: expected {name} to be a (N, C, H, W) tensor or a sequence of (C, H, W) "
            f"tensors, got {type(images).__name__}"
        )
    for i, image in enumerate(images):
        check_shape(where, f"{name}[{i}]", image, ("C", "H", "W"))
    return list(images)


def _grouped(
    degraded: Tensor | list[Tensor], clean: Tensor | list[Tensor], labels: Tensor, size: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Batches of at most ``size`` consecutive images that share one shape."""
    if isinstance(degraded, Tensor) and isinstance(clean, Tensor):
        for start in range(0, degraded.shape[0], size):
            stop = start + size
            yield degraded[start:stop], clean[start:stop], labels[start:stop]
        return
    start = 0
    while start < len(degraded):
        stop = start + 1
        shape = degraded[start].shape
        while stop < len(degraded) and stop - start < size and degraded[stop].shape == shape:
            stop += 1
        yield (
            torch.stack(list(degraded[start:stop])),
            torch.stack(list(clean[start:stop])),
            labels[start:stop],
        )
        start = stop


def prompt_effect(
    model: nn.Module,
    degraded: Tensor | Sequence[Tensor],
    clean: Tensor | Sequence[Tensor],
    labels: Tensor | Sequence[int],
    *,
    names: Sequence[str] | None = None,
    num_negatives: int = 1,
    generator: torch.Generator | None = None,
    label_negatives: bool = False,
    batch_size: int = 16,
    forward: Callable[[Tensor], Tensor] | None = None,
    y_channel: bool = False,
) -> PromptEffect:
    """Whether the prompt matters: PSNR under own and under negative prompts, per degradation.

    On held-out images, per degradation: the PSNR of the degraded input, of the output under the
    network's own prompts and under negative prompts
    ([negative_prompts][contrastive_prompts.negative_prompts], averaged over ``num_negatives``
    draws from ``generator``), and the cost of a negative prompt, own minus negative. A cost near
    0 dB means the network restores as well with the wrong experts: its prompts do nothing it
    needs. For each prompt layer (qualified name, in the call order that
    [record_routing][contrastive_prompts.record_routing] logs), the expert each degradation
    selects most and the share of its samples that selected it
    ([routing_statistics][contrastive_prompts.core.routing_statistics]).

    Outputs are clamped to [0, 1] and scored image by image with
    [psnr][contrastive_prompts.app.metrics.psnr], as
    [evaluate][contrastive_prompts.app.metrics.evaluate] scores them. The model runs in eval mode
    under `torch.no_grad`; every submodule's training flag is restored afterwards, an exception
    included. Inputs go to the device and dtype of the model's parameters in batches of
    ``batch_size`` images.

    Args:
        model: any network holding [SparsePrompt][contrastive_prompts.SparsePrompt] layers with
            ``top_k < num_prompts`` (after [add_prompts][contrastive_prompts.add_prompts], say).
        degraded: the inputs in [0, 1]: a ``(N, C, H, W)`` tensor, or a sequence of
            ``(C, H, W)`` tensors whose sizes may differ (consecutive images of one size share a
            batch).
        clean: the targets, shaped as ``degraded``.
        labels: ``(N,)`` integer degradation labels.
        names: one name per label (labels in ``[0, len(names))``); the label numbers otherwise.
        num_negatives: negative draws per image; the negative PSNR is their mean.
        generator: draws the negative experts; a CPU generator seeded with 0 by default, so two
            calls give the same numbers.
        label_negatives: give the labels to the negatives, which then favour experts that other
            degradations of the batch selected (the negatives then depend on which images share
            a batch).
        batch_size: images per forward pass.
        forward: how to run the model, ``model(x)`` by default (``lambda x: model.restore(x,
            tile=256)`` for the reference model by tiles); it must return images shaped as
            ``x`` and run the prompt layers of ``model``.
        y_channel: score the BT.601 luma of RGB images.

    Shape:
        - degraded, clean: ``(N, C, H, W)``, or ``N`` tensors ``(C, H, W)``; labels: ``(N,)``.

    Returns:
        A [PromptEffect][contrastive_prompts.app.effect.PromptEffect]: ``str()`` of it is a Markdown
        table, ``to_dict()`` plain values for JSON.

    Raises:
        InputError: the model holds no prompt layer, or one that leaves no expert for
            negatives; shapes that differ; labels out of range, not integers or not one per
            image; a bad option.

    Examples:
        >>> from contrastive_prompts import add_prompts
        >>> net = add_prompts(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                                       torch.nn.Conv2d(8, 3, 3, padding=1)),
        ...                   {"0": {"dim": 8, "prompt_size": 4}})
        >>> clean = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> degraded = (clean + 0.1 * torch.randn(4, 3, 16, 16)).clamp(0, 1)
        >>> effect = prompt_effect(net, degraded, clean, [0, 1, 0, 1], names=["noise", "rain"])
        >>> effect.cost  # a new stage is the identity: no prompt has any effect yet
        {'noise': 0.0, 'rain': 0.0}
        >>> len(effect.experts), effect.count  # one prompt layer; images per degradation
        (1, {'noise': 2, 'rain': 2})
    """
    where = "prompt_effect"
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"{where}: expected model to be an nn.Module, got {type(model).__name__}"
        )
    check_int_range(where, "num_negatives", num_negatives, 1)
    check_int_range(where, "batch_size", batch_size, 1)
    degraded = _images(where, "degraded", degraded)
    clean = _images(where, "clean", clean)
    total = len(degraded)
    if total == 0:
        raise InputError(f"{where}: expected at least one image, got none")
    if len(clean) != total:
        raise InputError(
            f"{where}: expected {total} clean images (one per degraded), got {len(clean)}"
        )
    if isinstance(degraded, Tensor) and isinstance(clean, Tensor):
        check_same_shape(where, "clean", clean, "degraded", degraded)
    else:
        for i, (x, y) in enumerate(zip(degraded, clean, strict=True)):
            check_same_shape(where, f"clean[{i}]", y, f"degraded[{i}]", x)
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(list(labels), dtype=torch.int64)
    check_shape(where, "labels", labels, (total,))
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"{where}: expected integer labels, got {labels.dtype}")
    if names is not None:
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise InputTypeError(
                f"{where}: expected names to be a sequence of strings, got {type(names).__name__}"
            )
    labels = labels.long().cpu()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (names is not None and high >= len(names)):
        expected = "labels >= 0" if names is None else f"labels in [0, {len(names)})"
        what = f" (one per name in names: {list(names)})" if names is not None else ""
        raise InputError(f"{where}: expected {expected}{what}, got labels from {low} to {high}")
    return measure_effect(
        model,
        _grouped(degraded, clean, labels, batch_size),
        names=names,
        num_negatives=num_negatives,
        generator=generator,
        label_negatives=label_negatives,
        forward=forward,
        y_channel=y_channel,
        where=where,
    )
