"""A training run that teaches a trained reference model new degradations.

``TrainConfig(grow_from=<checkpoint>, add_degradations=[...])`` starts from the EMA weights of a
training checkpoint and teaches it the degradations it was not trained on, in one of two ways
(``growth``):

- ``"gated"`` (the default): a copy of the checkpoint's model trains, every parameter, on the new
  degradations only, and an [ImageGate][contrastive_prompts.reference.ImageGate] fitted
  ([fit_gate][contrastive_prompts.app.growth.fit_gate]) to give each image to the copy or to the
  checkpoint's model. The run's model is a
  [GatedRestorer][contrastive_prompts.reference.GatedRestorer]: an image the gate leaves with the
  checkpoint's model is restored exactly as before.
- ``"experts"``: each prompt layer gets one new expert per new degradation
  ([SparsePromptIR.add_experts][contrastive_prompts.SparsePromptIR.add_experts]), and those
  experts and their router rows alone train
  ([only_new_experts][contrastive_prompts.core.only_new_experts]) on the checkpoint's
  degradations and the new ones, the new ones in half the samples: the old degradations are
  there so that the router learns not to send them to the new experts. The routing term teaches
  each old label the expert it was taught before and each new label its new expert.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .._checks import InputError, check_int_range
from ..reference.gated import GATE_TILE, GatedRestorer, ImageGate, tile_statistics
from ..reference.model import SparsePromptIR
from .checkpoints import checkpoint_model, read_checkpoint
from .config import TrainConfig
from .data import SyntheticDataset
from .data.images import to_chw
from .degradations import DegradationMix, make_mix

__all__ = [
    "GATE_ITERATIONS",
    "GATE_SAMPLES",
    "GATE_SCENES",
    "Growth",
    "GrowthPlan",
    "build_mix",
    "fit_gate",
    "gate_check",
    "gate_scenes",
    "gate_warning",
    "growth_plan",
    "start_growth",
]


@dataclass(frozen=True)
class GrowthPlan:
    """What a run that grows a trained model adds to it.

    Attributes:
        base_labels: the degradations the checkpoint was trained on, in label order.
        base_experts: experts per prompt layer in the checkpoint.
        new_labels: the degradations the run adds, each with a new expert per layer.

    Examples:
        >>> plan = GrowthPlan(("noise", "rain"), 5, ("haze",))
        >>> plan.label_experts
        (0, 1, 5)
    """

    base_labels: tuple[str, ...]
    base_experts: int
    new_labels: tuple[str, ...]

    @property
    def label_experts(self) -> tuple[int, ...]:
        """The expert the routing term teaches each label: an old label the one it was taught
        (``label % base_experts``), the ``j``-th new label the ``j``-th new expert."""
        old = tuple(label % self.base_experts for label in range(len(self.base_labels)))
        return old + tuple(range(self.base_experts, self.base_experts + len(self.new_labels)))


def growth_plan(config: TrainConfig, *, where: str = "growth_plan") -> GrowthPlan | None:
    """The plan of a run with ``config.grow_from``, read from its checkpoint; ``None`` without.

    Raises:
        CheckpointError: the checkpoint cannot be read as a training checkpoint.
        InputError: it holds a network of the user's own (not the reference model), or the
            run's degradations do not begin with the checkpoint's and add at least one.
    """
    if config.grow_from is None:
        return None
    return _plan(config, read_checkpoint(config.grow_from), where)


def _plan(config: TrainConfig, state: dict[str, Any], where: str) -> GrowthPlan:
    """The plan of ``config``'s run from its ``grow_from`` checkpoint, already read."""
    if state["model_config"] is None:
        raise InputError(
            f"{where}: expected grow_from to be a checkpoint of the reference model, got "
            f"{config.grow_from!r}, a network of your own (grow it with add_experts and train it "
            "with only_new_experts in Python)"
        )
    base = tuple(state["label_names"])
    names = make_mix(config.mix, add=config.add_degradations).names
    if names[: len(base)] != base or len(names) == len(base):
        raise InputError(
            f"{where}: expected the run's degradations (mix {config.mix!r}, then "
            f"add_degradations) to begin with the {len(base)} the checkpoint was trained on, "
            f"{list(base)}, and add at least one, got {list(names)}"
        )
    return GrowthPlan(base, int(state["model_config"]["num_prompts"]), names[len(base) :])


def build_mix(config: TrainConfig, plan: GrowthPlan | None = None) -> DegradationMix:
    """The run's degradations: ``config.mix`` and then ``config.add_degradations``.

    Every task is equally likely, except in a run that grows a model (``plan``): with
    ``growth="experts"`` the new degradations carry half the samples and the checkpoint's the
    other half; with ``growth="gated"`` the new ones carry every sample (the checkpoint's keep
    their labels, for validation and the gate, with probability 0).

    Examples:
        >>> build_mix(TrainConfig(mix="5task", add_degradations=["jpeg"])).names[-2:]
        ('low_light', 'jpeg')
    """
    probs = None
    if plan is not None:
        old, new = len(plan.base_labels), len(plan.new_labels)
        share = 0.0 if config.growth == "gated" else 0.5
        probs = [share / old] * old + [(1 - share) / new] * new
    return make_mix(config.mix, add=config.add_degradations, probs=probs)


@dataclass(frozen=True)
class Growth:
    """The start of a run that grows a model: its plan and the network it trains.

    Attributes:
        plan: what the run adds.
        model: the network the run trains, in train mode, on the CPU. With ``growth="experts"``,
            the checkpoint's EMA weights with one new expert per new degradation in every prompt
            layer; with ``growth="gated"``, a copy of the checkpoint's model (its first network,
            for a gated checkpoint), to be trained whole.
        fixed: with ``growth="gated"``, the networks the run keeps as they are, in eval mode:
            the checkpoint's model, or a gated checkpoint's networks; empty otherwise.
        label_networks: with ``growth="gated"``, the network of each label of the run: the
            checkpoint's labels keep theirs, the new ones get ``len(fixed)``, the trained copy.
    """

    plan: GrowthPlan
    model: SparsePromptIR
    fixed: tuple[nn.Module, ...] = ()
    label_networks: tuple[int, ...] = ()

    def restorer(self, trained: nn.Module, gate: ImageGate) -> GatedRestorer:
        """The gated model of a ``growth="gated"`` run: ``fixed``, then ``trained`` (the run's
        network or its EMA), chosen between by ``gate``."""
        return GatedRestorer([*self.fixed, trained], gate, label_networks=self.label_networks)


def start_growth(config: TrainConfig, *, where: str = "start_growth") -> Growth | None:
    """The plan and the grown model of a run with ``config.grow_from``, from one reading of
    its checkpoint; ``None`` without.

    Raises:
        CheckpointError: the checkpoint cannot be read as a training checkpoint.
        InputError: as [growth_plan][contrastive_prompts.app.growth.growth_plan].
    """
    if config.grow_from is None:
        return None
    state = read_checkpoint(config.grow_from)
    plan = _plan(config, state, where)
    model = checkpoint_model(state, where=f"checkpoint {config.grow_from!r}")
    if config.growth == "experts":
        if isinstance(model, GatedRestorer):
            raise InputError(
                f"{where}: expected growth='gated' to grow {config.grow_from!r}, a gated model "
                "(its networks are kept as they are), got growth='experts'"
            )
        model.add_experts(len(plan.new_labels))
        return Growth(plan, model.train())
    if isinstance(model, GatedRestorer):
        fixed, label_networks = tuple(model.networks), model.label_networks
    else:
        fixed, label_networks = (model,), (0,) * len(plan.base_labels)
    first = fixed[0]
    if not isinstance(first, SparsePromptIR):  # every stored network is one
        raise InputError(f"{where}: expected a reference model, got {type(first).__name__}")
    trained = copy.deepcopy(first).train()
    for parameter in trained.parameters():
        parameter.requires_grad_(True)
    new = (len(fixed),) * len(plan.new_labels)
    return Growth(plan, trained, tuple(n.eval() for n in fixed), (*label_networks, *new))


# -- the gate of a gated run ---------------------------------------------------------------------

GATE_SCENES = (
    "astronaut", "brick", "camera", "cell", "clock", "coins", "colorwheel", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip
"""The pictures bundled with scikit-image that a gate is fitted on when the run has no
``data``: every one at least 128 pixels a side but the held-out photos (``chelsea``, also
bundled as ``cat``, and ``coffee``), grey ones as grey RGB. The variety of scenes is what keeps
the gate right on photos it never saw: fitted on the four training photos alone, gates sent
some held-out images of old degradations to the new network."""

GATE_SAMPLES = 6000
"""Degraded tiles a gate is fitted on."""

GATE_ITERATIONS = 3000
"""Full-batch AdamW steps of a gate's fit."""


def gate_scenes() -> list[Tensor]:
    """The [GATE_SCENES][contrastive_prompts.app.growth.GATE_SCENES] as ``(3, H, W)`` float32
    images in [0, 1].

    Raises:
        ImportError: scikit-image is not installed.
    """
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("gate_scenes needs scikit-image: pip install scikit-image") from error
    return [to_chw("gate_scenes", i, getattr(skimage.data, n)()) for i, n in enumerate(GATE_SCENES)]


def fit_gate(
    mix: DegradationMix,
    label_networks: Sequence[int],
    images: Any,
    *,
    seed: int = 0,
    samples: int = GATE_SAMPLES,
    iterations: int = GATE_ITERATIONS,
    tile: int = GATE_TILE,
) -> ImageGate:
    """An [ImageGate][contrastive_prompts.reference.ImageGate] fitted to send each degradation of
    ``mix`` to its network.

    ``samples`` random ``tile``-pixel crops of ``images``, each degraded by a degradation of
    ``mix`` drawn uniformly (whatever the mix's probabilities), are the training set; the target
    of a tile is ``label_networks[label]``. The gate's perceptron is fitted to them by
    cross-entropy on the standardised tile statistics, full-batch AdamW (rate 0.01, weight
    decay 0.01, ``iterations`` steps), each class weighted by the inverse of its share, so a
    network of one degradation among many is not outvoted by the rest. Deterministic for a given
    ``seed``; the caller's random state is left as it was.

    Args:
        mix: the degradations, old and new.
        label_networks: the network of each of ``mix``'s labels; every network from 0 to its
            largest must have a label.
        images: clean images of many scenes (what
            [SyntheticDataset][contrastive_prompts.app.data.SyntheticDataset] reads: folders,
            files or tensors), at least ``tile`` pixels a side.
        seed: draws the crops, the labels and the degradations.
        samples: tiles to fit on, an integer >= 2.
        iterations: optimisation steps, an integer >= 1.
        tile: the tile side the gate reads, an integer >= 1.

    Returns:
        The gate, in eval mode.

    Raises:
        InputError: ``mix`` is not a DegradationMix of one degradation an image;
            ``label_networks`` does not give each label of ``mix`` a network, or leaves a network
            without a label; an option out of range.
    """
    where = "fit_gate"
    if not isinstance(mix, DegradationMix) or mix.max_per_sample != 1:
        found = (
            f"a mix of up to {mix.max_per_sample} degradations an image"
            if isinstance(mix, DegradationMix)
            else type(mix).__name__
        )
        raise InputError(
            f"{where}: expected a DegradationMix of one degradation an image, got {found}"
        )
    check_int_range(where, "samples", samples, 2)
    check_int_range(where, "iterations", iterations, 1)
    table = list(label_networks)
    classes = max(table, default=-1) + 1
    if len(table) != len(mix.names) or sorted(set(table)) != list(range(max(classes, 2))):
        raise InputError(
            f"{where}: expected a network in 0, 1, ... for each of the {len(mix.names)} labels "
            f"{list(mix.names)}, every network from 0 with a label and at least two, got "
            f"{table}"
        )
    tiles = SyntheticDataset(images, mix.with_probs(), crop_size=tile, seed=seed, cache=True)
    batches = []
    for k in range(samples):  # epoch after epoch of the images, each a new draw
        tiles.set_epoch(k // len(tiles))
        batches.append(tiles[k % len(tiles)])
    features = tile_statistics(torch.stack([degraded for degraded, _, _ in batches]), tile)[:, 0]
    target = torch.tensor([table[int(label)] for _, _, label in batches])
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)  # the hidden layer's start
        gate = ImageGate(classes, tile=tile)
    gate.mean.copy_(features.mean(0))
    gate.std.copy_(features.std(0) + 1e-6)
    counts = torch.bincount(target, minlength=classes).float()
    weight = counts.max() / counts.clamp(min=1)
    optimiser = torch.optim.AdamW(gate.parameters(), lr=1e-2, weight_decay=0.01)
    with torch.enable_grad():
        for _ in range(iterations):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(gate.tile_logits(features), target, weight=weight)
            loss.backward()
            optimiser.step()
    return gate.eval()


def gate_check(
    model: GatedRestorer, data: Dataset[Any], names: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """How many images of each degradation of ``data`` the gate gives the network of their
    label: ``{name: (right, count)}``, one image at a time.

    Args:
        model: a gated model with ``label_networks``.
        data: a dataset of ``(degraded, clean, label)`` items (a run's validation data).
        names: the name of each label.
    """
    found: dict[str, tuple[int, int]] = {}
    for index in range(len(data)):  # type: ignore[arg-type]  # torch's Dataset is not Sized
        degraded, _, label = data[index]
        route = int(model.route(degraded[None].to(model.gate.mean.device))[0])
        right, count = found.get(names[int(label)], (0, 0))
        found[names[int(label)]] = (right + (route == model.label_networks[int(label)]), count + 1)
    return found


def gate_warning(check: dict[str, tuple[int, int]]) -> str | None:
    """A line naming the degradations whose images the gate sent to another network, or ``None``.

    Examples:
        >>> gate_warning({"rain": (4, 4), "low_light": (3, 4)})
        'the gate sent 1 of 4 low_light images to another network than their own'
    """
    wrong = [f"{count - right} of {count} {name}" for name, (right, count) in check.items()
             if right < count]  # fmt: skip
    if not wrong:
        return None
    return f"the gate sent {', '.join(wrong)} images to another network than their own"
