"""Does the prompt matter, and do the experts specialise? Measured on held-out images.

[prompt_effect][contrastive_prompts.app.effect.prompt_effect] scores a prompted network four ways
on the same images: the degraded input, the output under the network's own prompts, under
negative prompts ([negative_prompts][contrastive_prompts.negative_prompts]: experts its routers
did not select, drawn at random as CPL draws them) and under *swapped* prompts (the experts that
another degradation uses most, [fixed_experts][contrastive_prompts.core.fixed_experts]). The gap
between own and swapped, the swap cost, is what the paper means by a mismatched prompt: near
0 dB, the prompt does nothing the network needs, or every degradation uses the same experts.
Per prompt layer it reports the expert each degradation uses most and how often, and whether
the experts specialise ([specialisation][contrastive_prompts.core.specialisation]: normalised
mutual information between degradation and expert, dead experts, collapse);
[collapse_warning][contrastive_prompts.app.effect.collapse_warning] says in plain words when
they do not.

Read the negative cost beside the swap cost: an expert that no image selects gets no gradient
under top-1 routing and keeps its random start, so a negative prompt drawn from it can cost dB
because it is noise, not because it is another degradation's prompt.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import (
    InputError,
    InputTypeError,
    check_bool,
    check_int_range,
    check_same_shape,
    check_shape,
)
from ..core.prompt import (
    fixed_experts,
    negative_prompts,
    prompt_layers,
    record_routing,
    require_prompt_layers,
)
from ..core.routing import (
    Specialisation,
    routing_statistics,
    specialisation,
)
from .metrics import psnr

__all__ = ["ExpertUse", "PromptEffect", "collapse_warning", "has_negatives", "prompt_effect"]

ROWS = ("degraded", "own", "negative", "swap", "cost", "swap_cost")
"""The rows [PromptEffect.average][contrastive_prompts.app.effect.PromptEffect.average] takes."""


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
        swap: PSNR of the output under swapped prompts: at every prompt layer, the expert that
            another degradation uses most (the mean over the other degradations); NaN with a
            single degradation.
        specialisation: per prompt layer, the
            [Specialisation][contrastive_prompts.core.Specialisation] of its experts over the
            degradations seen.

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
    swap: dict[str, float] = field(default_factory=dict)
    specialisation: dict[str, Specialisation] = field(default_factory=dict)

    @property
    def cost(self) -> dict[str, float]:
        """The cost of a negative prompt per degradation: own minus negative PSNR (dB)."""
        return {n: self.own[n] - self.negative[n] for n in self.names}

    @property
    def swap_cost(self) -> dict[str, float]:
        """The cost of a swapped prompt per degradation: own minus swap PSNR (dB)."""
        return {n: self.own[n] - self.swap.get(n, math.nan) for n in self.names}

    def average(self, row: str) -> float:
        """Mean over degradations of ``row``, one of ``ROWS``: ``"degraded"``, ``"own"``,
        ``"negative"``, ``"swap"``, ``"cost"`` or ``"swap_cost"``."""
        if row not in ROWS:
            raise InputError(
                f"PromptEffect.average: expected row to be one of {', '.join(map(repr, ROWS))}, "
                f"got {row!r}"
            )
        values: dict[str, float] = getattr(self, row)
        found = [values.get(n, math.nan) for n in self.names]
        return sum(found) / len(found) if found else math.nan

    def table(self, *, digits: int = 2) -> str:
        """Markdown tables: PSNR per degradation (dB) under the own, negative and swapped prompts
        and the costs, the most used expert per layer, and whether each layer's experts
        specialise; then the collapse warning, if any.

        Examples:
            >>> effect = PromptEffect(("haze", "rain"), {"haze": 2, "rain": 2},
            ...     {"haze": 15.0, "rain": 20.0}, {"haze": 25.0, "rain": 30.0},
            ...     {"haze": 22.5, "rain": 29.0}, {"p": {"haze": ExpertUse(1, 1.0),
            ...     "rain": ExpertUse(0, 1.0)}}, {"p": {"haze": [0, 2], "rain": [2, 0]}}, 1,
            ...     swap={"haze": 20.0, "rain": 27.0},
            ...     specialisation={"p": specialisation(torch.tensor([[0, 2], [2, 0]]))})
            >>> print(effect.table())
            | degradation | images | degraded | own | negative | swap | negative cost | swap cost |
            |---|---:|---:|---:|---:|---:|---:|---:|
            | haze | 2 | 15.00 | 25.00 | 22.50 | 20.00 | 2.50 | 5.00 |
            | rain | 2 | 20.00 | 30.00 | 29.00 | 27.00 | 1.00 | 3.00 |
            | average | 4 | 17.50 | 27.50 | 25.75 | 23.50 | 1.75 | 4.00 |
            <BLANKLINE>
            | most used expert (share) | haze | rain |
            |---|---|---|
            | p | 1 (100%) | 0 (100%) |
            <BLANKLINE>
            | prompt layer | specialisation (NMI) | dead experts | collapsed | separated |
            |---|---:|---:|---|---|
            | p | 1.00 | 0 | no | yes |
        """
        lines = [
            "| degradation | images | degraded | own | negative | swap "
            "| negative cost | swap cost |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        cost, swap_cost = self.cost, self.swap_cost
        for n in self.names:
            values = (
                self.degraded[n], self.own[n], self.negative[n], self.swap.get(n, math.nan),
                cost[n], swap_cost[n],
            )  # fmt: skip
            lines.append(f"| {_cell(n)} | {self.count[n]} | " + _cells(values, digits) + " |")
        averages = [self.average(row) for row in ROWS]
        lines.append(f"| average | {sum(self.count.values())} | {_cells(averages, digits)} |")
        if self.experts:
            lines += [
                "",
                "| most used expert (share) | " + " | ".join(map(_cell, self.names)) + " |",
                "|---" * (len(self.names) + 1) + "|",
            ]
            for layer, uses in self.experts.items():
                cells = [
                    f"{uses[n].expert} ({uses[n].share:.0%})" if n in uses else "-"
                    for n in self.names
                ]
                lines.append(f"| {_cell(layer)} | " + " | ".join(cells) + " |")
        if self.specialisation:
            lines += [
                "",
                "| prompt layer | specialisation (NMI) | dead experts | collapsed | separated |",
                "|---|---:|---:|---|---|",
            ]
            for layer, found in self.specialisation.items():
                yes = {True: "yes", False: "no"}
                lines.append(
                    f"| {_cell(layer)} | {found.nmi:.{digits}f} | {found.dead} | "
                    f"{yes[found.collapsed]} "
                    f"| {yes[found.separated]} |"
                )
        warning = collapse_warning(self.specialisation)
        if warning:
            lines += ["", warning]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``json.dumps``: every field, the costs, and the averages.

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
            "swap": dict(self.swap),
            "cost": self.cost,
            "swap_cost": self.swap_cost,
            "average": {row: self.average(row) for row in ROWS},
            "experts": {
                layer: {n: use._asdict() for n, use in uses.items()}
                for layer, uses in self.experts.items()
            },
            "expert_counts": {
                layer: {n: list(row) for n, row in rows.items()}
                for layer, rows in self.expert_counts.items()
            },
            "specialisation": {
                layer: found._asdict() for layer, found in self.specialisation.items()
            },
            "num_negatives": self.num_negatives,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PromptEffect:
        """The effect [to_dict][contrastive_prompts.app.effect.PromptEffect.to_dict] wrote (its
        costs and averages are computed again, not read).

        Raises:
            InputError: a field is missing or of another kind.

        Examples:
            >>> effect = PromptEffect(("haze",), {"haze": 2}, {"haze": 15.0}, {"haze": 25.0},
            ...                       {"haze": 22.5}, {}, {}, 1)
            >>> PromptEffect.from_dict(effect.to_dict()) == effect
            True
        """
        try:
            return cls(
                names=tuple(str(n) for n in values["names"]),
                count={str(n): int(v) for n, v in values["count"].items()},
                degraded={str(n): float(v) for n, v in values["degraded"].items()},
                own={str(n): float(v) for n, v in values["own"].items()},
                negative={str(n): float(v) for n, v in values["negative"].items()},
                experts={
                    str(layer): {
                        str(n): ExpertUse(int(use["expert"]), float(use["share"]))
                        for n, use in uses.items()
                    }
                    for layer, uses in values["experts"].items()
                },
                expert_counts={
                    str(layer): {str(n): [int(c) for c in row] for n, row in rows.items()}
                    for layer, rows in values["expert_counts"].items()
                },
                num_negatives=int(values["num_negatives"]),
                swap={str(n): float(v) for n, v in values["swap"].items()},
                specialisation={
                    str(layer): Specialisation(
                        nmi=float(found["nmi"]),
                        dead=int(found["dead"]),
                        collapsed=bool(found["collapsed"]),
                        separated=bool(found["separated"]),
                        experts=tuple(int(e) for e in found["experts"]),
                    )
                    for layer, found in values["specialisation"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                f"PromptEffect.from_dict: expected what PromptEffect.to_dict writes, got a "
                f"mapping that fails on {error!r}"
            ) from error


def has_negatives(model: nn.Module) -> bool:
    """Whether ``model`` holds prompt layers and each leaves experts for negative prompts
    (``top_k < num_prompts``): what [prompt_effect][contrastive_prompts.app.effect.prompt_effect]
    needs. PromptIR's dense prompts do not.

    Examples:
        >>> from contrastive_prompts import SparsePromptIR
        >>> has_negatives(SparsePromptIR("tiny")), has_negatives(SparsePromptIR("tiny", top_k=5))
        (True, False)
    """
    layers = prompt_layers(model).values()
    return bool(layers) and all(layer.top_k < layer.num_prompts for layer in layers)


def collapse_warning(layers: Mapping[str, Specialisation]) -> str | None:
    """A plain-words warning when a prompt layer's experts do not specialise, else ``None``.

    A layer is named when it collapsed (one expert took 90 % of the picks or more) or its
    degradations share their favourite expert; the warning says what that does to CPL.

    Args:
        layers: per prompt layer, its [Specialisation][contrastive_prompts.core.Specialisation]
            (from [PromptEffect][contrastive_prompts.app.effect.PromptEffect] or
            [specialisation][contrastive_prompts.core.specialisation]).

    Examples:
        >>> text = collapse_warning({"p": specialisation(torch.tensor([[9, 0], [8, 1]]))})
        >>> text.split(". ")[0].removeprefix("Warning: the experts do not specialise at ")
        'p (collapsed: one expert takes nearly every image)'
        >>> collapse_warning({"p": specialisation(torch.tensor([[9, 0], [0, 9]]))}) is None
        True
    """
    named = []
    for layer, found in layers.items():
        if found.collapsed:
            named.append(f"{layer} (collapsed: one expert takes nearly every image)")
        elif not found.separated:
            named.append(f"{layer} (degradations share their most used expert)")
    if not named:
        return None
    return (
        f"Warning: the experts do not specialise at {', '.join(named)}. A negative or swapped "
        "prompt there is hardly another degradation's prompt, so CPR has little to push "
        "against; train with degradation labels and the routing term (routing_weight), and "
        "check the swap cost."
    )


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: its pipes escaped, its line breaks spaces."""
    return " ".join(str(text).split()).replace("|", "\\|")


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
    """Sums per label of the PSNRs and of the expert picks per prompt layer."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.sums: dict[str, dict[int, float]] = {
            "degraded": {}, "own": {}, "negative": {}, "swap": {}
        }  # fmt: skip
        self.swaps: dict[int, int] = {}  # label -> swapped outputs scored
        self.picks: dict[str, dict[int, Tensor]] = {}  # layer -> label -> (N,) counts
        self.rows: dict[str, dict[int, int]] = {}  # layer -> label -> routed samples

    def add_psnr(self, row: str, labels: list[int], values: list[float]) -> None:
        sums = self.sums[row]
        for label, value in zip(labels, values, strict=True):
            sums[label] = sums.get(label, 0.0) + value
            if row == "swap":
                self.swaps[label] = self.swaps.get(label, 0) + 1

    def favourites(self) -> dict[int, dict[str, int]]:
        """Per label, the expert it picks most at each prompt layer."""
        found: dict[int, dict[str, int]] = {}
        for layer, picks in self.picks.items():
            for label, counts in picks.items():
                found.setdefault(label, {})[layer] = int(counts.argmax())
        return found

    def add_routing(self, layer: str, indices: Tensor, num_prompts: int, labels: Tensor) -> None:
        if indices.shape[0] != labels.shape[0]:
            if labels.shape[0] != 1:
                return  # rows that are not the batch's samples (tiles of several images)
            labels = labels.expand(indices.shape[0])  # tiles of one image
        # one row per label present, so memory follows the batch, not the largest label
        present, rank = labels.unique(return_inverse=True)
        counts = routing_statistics(
            indices.cpu(), num_prompts, labels=rank, num_labels=present.numel()
        )
        picks, rows = self.picks.setdefault(layer, {}), self.rows.setdefault(layer, {})
        for row, label in enumerate(present.tolist()):
            picks[label] = picks.get(label, torch.zeros(num_prompts, dtype=torch.int64))
            picks[label] += counts[row]
            rows[label] = rows.get(label, 0) + int((rank == row).sum())

    def result(self, name_of: Callable[[int], str], num_negatives: int) -> PromptEffect:
        labels = sorted(self.count)
        names = tuple(name_of(label) for label in labels)
        per = {
            row: {
                name_of(k): sums[k] / (self.count[k] * (num_negatives if row == "negative" else 1))
                for k in labels
            }
            for row, sums in self.sums.items()
            if row != "swap"
        }
        swap = {
            name_of(k): self.sums["swap"][k] / self.swaps[k] if self.swaps.get(k) else math.nan
            for k in labels
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
            swap=swap,
            specialisation={
                layer: specialisation(torch.stack([picks[k] for k in sorted(picks)]))
                for layer, picks in self.picks.items()
            },
        )


def measure_effect(
    model: nn.Module,
    batches: Callable[[], Iterable[tuple[Tensor, Tensor, Tensor]]],
    *,
    names: Sequence[str] | Mapping[int, str] | None,
    num_negatives: int,
    generator: torch.Generator | None,
    label_negatives: bool,
    forward: Callable[[Tensor], Tensor] | None,
    y_channel: bool,
    where: str,
) -> PromptEffect:
    """The measurement itself, over ``(degraded, clean, labels)`` batches of one image size.

    ``batches()`` gives the batches; it is called twice, as the swapped prompts need every
    degradation's favourite experts, known only after a first pass over all images.
    """
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

    def placed(degraded: Tensor, clean: Tensor) -> tuple[Tensor, Tensor]:
        dtype = reference.dtype if reference is not None else degraded.dtype
        return degraded.to(device=device, dtype=dtype), clean.to(device=device, dtype=dtype)

    with _evaluation(model):
        for degraded, clean, labels in batches():
            listed = labels.tolist()
            degraded, clean = placed(degraded, clean)
            score("degraded", degraded, clean, listed)
            with record_routing(model) as log:
                own = run(degraded)
            if not log:
                raise InputError(
                    f"{where}: expected forward to run the prompt layers of the model, got one "
                    "that ran none of them (no prompt can change its output)"
                )
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
        favourites = tally.favourites()
        if len(favourites) > 1:  # each image under every other degradation's experts
            for degraded, clean, labels in batches():
                listed = labels.tolist()
                degraded, clean = placed(degraded, clean)
                for other, experts in favourites.items():
                    keep = [i for i, label in enumerate(listed) if label != other]
                    if not keep:
                        continue
                    with fixed_experts(model, experts):
                        swapped = run(degraded)
                    rows = torch.tensor(keep, device=swapped.device)
                    score(
                        "swap",
                        swapped.index_select(0, rows),
                        clean.index_select(0, rows),
                        [listed[i] for i in keep],
                    )

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
        _check_range(where, name, images)
        return images
    if not isinstance(images, Sequence) or isinstance(images, str):
        raise InputTypeError(
            f"{where}: expected {name} to be a (N, C, H, W) tensor or a sequence of (C, H, W) "
            f"tensors, got {type(images).__name__}"
        )
    for i, image in enumerate(images):
        check_shape(where, f"{name}[{i}]", image, ("C", "H", "W"))
        _check_range(where, f"{name}[{i}]", image)
    return list(images)


def _check_range(where: str, name: str, images: Tensor) -> None:
    """Float images on the [0, 1] scale: noise may take them a little outside, 0-255 not."""
    if not images.is_floating_point():
        raise InputError(
            f"{where}: expected {name} as floating-point images in [0, 1], got {images.dtype} "
            "(for 8-bit images: images.float() / 255)"
        )
    if images.numel():
        low, high = float(images.min()), float(images.max())
        if not (-1.0 <= low and high <= 2.0):  # also false for NaN
            raise InputError(
                f"{where}: expected {name} in [0, 1] (noise may take a little outside), got "
                f"values from {low:g} to {high:g}"
                + (" (0-255 images? divide by 255)" if high > 2 else "")
            )


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
            negatives, or ``forward`` runs none of them; shapes that differ; images that are
            not floating point or far outside [0, 1] (below -1 or above 2: 0-255 images);
            labels out of range, not integers or not one per image; names repeated; a bad
            option (a flag that is not a bool).

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
    check_bool(where, "label_negatives", label_negatives)
    check_bool(where, "y_channel", y_channel)
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(list(labels))  # its own dtype: 1.7 is no label, nor True
    check_shape(where, "labels", labels, (total,))
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"{where}: expected integer labels, got {labels.dtype}")
    if names is not None:
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise InputTypeError(
                f"{where}: expected names to be a sequence of strings, got {type(names).__name__}"
            )
        repeated = sorted({str(n) for n in names if list(names).count(n) > 1})
        if repeated:
            raise InputError(
                f"{where}: expected one name per degradation, each once, got {repeated} more "
                f"than once in names={list(names)}"
            )
    labels = labels.long().cpu()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (names is not None and high >= len(names)):
        expected = "labels >= 0" if names is None else f"labels in [0, {len(names)})"
        what = f" (one per name in names: {list(names)})" if names is not None else ""
        raise InputError(f"{where}: expected {expected}{what}, got labels from {low} to {high}")
    return measure_effect(
        model,
        lambda: _grouped(degraded, clean, labels, batch_size),
        names=names,
        num_negatives=num_negatives,
        generator=generator,
        label_negatives=label_negatives,
        forward=forward,
        y_channel=y_channel,
        where=where,
    )
