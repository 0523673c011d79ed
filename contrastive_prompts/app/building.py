"""The parts a training run is built of, each callable alone (as BasicSR splits its set-up).

[setup_distributed][contrastive_prompts.app.building.setup_distributed] (rank, processes, device),
[build_model][contrastive_prompts.app.building.build_model],
[build_objective][contrastive_prompts.app.building.build_objective],
[build_step_module][contrastive_prompts.app.building.build_step_module],
[build_optimizer][contrastive_prompts.app.building.build_optimizer] (with
[warmup_cosine][contrastive_prompts.app.building.warmup_cosine]) and
[build_data][contrastive_prompts.app.building.build_data] (with
[StepBatchSampler][contrastive_prompts.app.building.StepBatchSampler]).
[Trainer][contrastive_prompts.app.train.Trainer] calls them in that order.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from .._checks import InputError, InputTypeError
from ..core.features import VGG16_WEIGHTS_URL, FilterFeatures, PixelFeatures, VGG16Features
from ..core.loss import ContrastivePromptLoss
from ..core.objective import CPLObjective, ObjectiveOutput
from ..core.prompt import prompt_layers
from ..reference.model import SparsePromptIR
from .checkpoints import (
    load_promptir,
)
from .config import FP16_ON_CPU, TrainConfig, resolve_device
from .data import (
    SyntheticDataset,
    degraded_copies,
    image_paths,
    read_image,
    sample_split,
)
from .data._common import derived_seed
from .degradations import DegradationMix
from .files import read_weights
from .growth import Growth, build_mix, growth_plan, start_growth

__all__ = [
    "StepBatchSampler",
    "build_data",
    "build_model",
    "build_objective",
    "build_optimizer",
    "build_step_module",
    "setup_distributed",
    "warmup_cosine",
]


def _world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (1 process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's share of the global batch of every step, from ``start_step`` on.

    The data stream is a sequence of epochs, each a permutation of the dataset seeded by
    ``(seed, epoch)``. Step ``s`` takes the global positions ``[s * G, (s + 1) * G)`` of that
    stream (``G = batch_size * world_size``), and rank ``r`` the ``r``-th slice of them: a
    distributed sampler whose position is a function of the step alone, so a resumed run reads
    exactly what an uninterrupted one would. Items are ``(epoch, index)``.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if length < 1:
            raise InputError("StepBatchSampler: expected a non-empty dataset, got length 0")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derived_seed(self.seed * 1_000_003 + epoch))
            self._perms = {epoch: torch.randperm(self.length, generator=g).tolist()}
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(first, first + self.batch_size):
            epoch, i = divmod(position, self.length)
            out.append((epoch, self._perm(epoch)[i]))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class _EpochIndexed(Dataset[Any]):
    """Reads ``(epoch, index)`` items from a dataset, setting its epoch when it has one."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        _set_epoch(self.dataset, epoch)
        return self.dataset[index]


def _set_epoch(dataset: Any, epoch: int) -> None:
    """``set_epoch`` on a dataset and on every dataset it wraps (concatenations, subsets)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    for inner in getattr(dataset, "datasets", ()):
        _set_epoch(inner, epoch)
    if isinstance(getattr(dataset, "dataset", None), Dataset):
        _set_epoch(dataset.dataset, epoch)


class _TrainStep(nn.Module):
    """Model + objective as one module, so that DistributedDataParallel sees the whole step."""

    def __init__(self, model: nn.Module, objective: CPLObjective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(
        self,
        degraded: Tensor,
        clean: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ObjectiveOutput:
        parts: ObjectiveOutput = self.objective(
            self.model, degraded, clean, labels, generator=generator
        )
        return parts


def _read_validation_image(where: str, path: Path, max_pixels: int | None) -> Tensor:
    try:
        return read_image(path, max_pixels=max_pixels)
    except (OSError, ValueError) as error:
        raise InputError(f"{where}: cannot read validation image {str(path)!r}: {error}") from error


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, floor: float) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to ``floor``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    # the first step after warm-up is one step into the decay; the last step (total - 1) is at floor
    progress = min(1.0, (step - warmup_steps + 1) / max(1, total_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _features(spec: str) -> nn.Module:
    if spec == "filters":
        return FilterFeatures()
    if spec == "pixels":
        return PixelFeatures()
    missing = (
        f"Download torchvision's VGG16 weights from {VGG16_WEIGHTS_URL} on a machine with "
        "internet access and name the file's path (torchvision itself is not needed), or use "
        "'filters', which needs no weights"
    )
    weights = read_weights(spec.split(":", 1)[1], what="VGG16 weights file", missing=missing)
    return VGG16Features(weights)


def _check_config(where: str, config: object) -> None:
    """Refuse what is not a valid [TrainConfig][contrastive_prompts.app.config.TrainConfig]."""
    if not isinstance(config, TrainConfig):
        raise InputTypeError(
            f"{where}: expected config to be a TrainConfig, got {type(config).__name__}"
        )
    config.validate()


def setup_distributed(
    config: TrainConfig, *, where: str = "setup_distributed"
) -> tuple[int, int, torch.device]:
    """This process's place in the run: its rank, the number of processes and its device.

    Reads torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (one process, rank 0, without
    them) and resolves ``config.device`` for this process (``"auto"`` and ``"cuda"`` take the
    ``LOCAL_RANK``-th GPU). With several processes and no process group yet, it joins one: NCCL on
    GPUs (after selecting this process's GPU), gloo on CPUs, with a two-hour timeout, as rank 0
    validates alone while the others wait in the next step's all-reduce.

    Args:
        config: the run's options; ``device`` and ``precision`` are read.
        where: the name error messages begin with
            ([Trainer][contrastive_prompts.app.train.Trainer] passes ``"Trainer"``).

    Returns:
        ``(rank, world_size, device)``.

    Raises:
        InputTypeError: ``config`` is not a ``TrainConfig``.
        InputError: an option of ``config`` is out of range (as ``TrainConfig.validate`` says),
            the device is unknown or not available here, or ``precision`` is ``"fp16"`` on a
            CPU. Nothing was initialised.

    Examples:
        >>> setup_distributed(TrainConfig(device="cpu"))
        (0, 1, device(type='cpu'))
        >>> setup_distributed(TrainConfig(device="gpu9"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        contrastive_prompts._checks.InputError: setup_distributed: expected a device such as ...
    """
    _check_config(where, config)
    rank, world_size, local_rank = _world()
    device = resolve_device(where, config.device, local_rank)
    if device.type == "meta":  # it would build the model and fail at the first batch
        raise InputError(
            f"{where}: expected a device that holds data to train on ('cpu', 'cuda', ...), got "
            f"{config.device!r}, which holds shapes only"
        )
    if config.precision == "fp16" and device.type == "cpu":
        raise InputError(f"{where}: {FP16_ON_CPU}")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # rank 0 validates alone while the others wait in the next step's all-reduce
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return rank, world_size, device


def build_model(
    config: TrainConfig,
    model: nn.Module | None = None,
    *,
    device: str | torch.device | None = None,
    where: str = "build_model",
    growth: Growth | None = None,
) -> nn.Module:
    """The network to train: your own, checked, or the reference model the config describes.

    Without ``model``, a [SparsePromptIR][contrastive_prompts.SparsePromptIR] of ``config.preset``,
    ``top_k`` and ``use_prompts``, its weights drawn from torch's global random state (the trainer
    seeds it with ``torch.manual_seed(config.seed)`` just before); with ``config.init_promptir``,
    the official PromptIR checkpoint read into the ``base`` model instead; with
    ``config.grow_from``, the network such a run trains
    ([start_growth][contrastive_prompts.app.growth.start_growth]: with ``growth="experts"`` that
    checkpoint's model with a new expert per new degradation in each prompt layer, whose new experts
    alone the trainer trains; with ``growth="gated"`` a copy of it, trained whole, the trainer
    keeping the checkpoint's model and a gate beside it). With ``model``, your network, which must
    have float32 parameters (the trainer keeps float32 weights and feeds float32 images; lower
    precision is ``config.precision``) and comes with ``config.init_promptir=None`` and
    ``config.grow_from=None`` (load its weights before).

    The model is then moved to ``device`` (in place, as ``nn.Module.to`` moves), and checked to
    have negatives when ``config.cpr_weight > 0``: a prompt layer with ``top_k < num_prompts``.

    Args:
        config: the run's options.
        model: your own network (``None``: the reference model).
        device: where to put the model (``None``: where it is).
        where: the name error messages begin with
            ([Trainer][contrastive_prompts.app.train.Trainer] passes ``"Trainer"``).
        growth: with ``config.grow_from``, the start
            [start_growth][contrastive_prompts.app.growth.start_growth] already made of it (the
            trainer passes it, so that the checkpoint is read once); made here when ``None``.

    Returns:
        The model on ``device``: ``model`` itself when given.

    Raises:
        InputTypeError: ``config`` is not a ``TrainConfig``, or ``model`` is not an ``nn.Module``.
        InputError: an option of ``config`` is out of range; ``model`` has parameters of
            another dtype than float32; ``config.init_promptir`` or ``config.grow_from`` is
            set with ``model``; ``config.grow_from``'s degradations do not extend the run's; or
            ``config.cpr_weight > 0`` for a model without negatives (no ``SparsePrompt`` layer,
            or ``top_k == num_prompts`` in all).
        CheckpointError: ``config.init_promptir`` cannot be read (see
            [load_promptir][contrastive_prompts.app.checkpoints.load_promptir]).

    Examples:
        >>> type(build_model(TrainConfig(preset="tiny"))).__name__
        'SparsePromptIR'
        >>> build_model(TrainConfig(), nn.Conv2d(3, 3, 3).double())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        contrastive_prompts._checks.InputError: build_model: expected a model with float32 ...
    """
    _check_config(where, config)
    if model is not None:
        if not isinstance(model, nn.Module):
            raise InputTypeError(
                f"{where}: expected model to be an nn.Module, got {type(model).__name__}"
            )
        dtypes = sorted({str(t.dtype) for t in model.parameters() if t.is_floating_point()})
        if dtypes and dtypes != ["torch.float32"]:
            raise InputError(
                f"{where}: expected a model with float32 parameters (the trainer keeps float32 "
                "weights and feeds float32 images; lower precision is config.precision), "
                f"got {', '.join(dtypes)}; call model.float() first"
            )
        for name in ("init_promptir", "grow_from"):
            if getattr(config, name) is not None:
                raise InputError(
                    f"{where}: expected {name}=None with your own model (load its weights "
                    f"before passing it), got {getattr(config, name)!r}"
                )
    elif config.grow_from is not None:
        model = (growth or cast(Growth, start_growth(config, where=where))).model
    elif config.init_promptir:
        model = load_promptir(config.init_promptir, top_k=config.top_k)
    else:
        model = SparsePromptIR(config.preset, top_k=config.top_k, use_prompts=config.use_prompts)
    if device is not None:
        model = model.to(device)
    layers = prompt_layers(model).values()
    if config.cpr_weight > 0 and not any(p.top_k < p.num_prompts for p in layers):
        raise InputError(
            f"{where}: expected cpr_weight=0 for a model without negatives (no SparsePrompt "
            f"layer, or top_k == num_prompts in all), got cpr_weight={config.cpr_weight}"
        )
    return model


def build_objective(
    config: TrainConfig,
    num_labels: int,
    device: str | torch.device,
    *,
    where: str = "build_objective",
    label_experts: Sequence[int] | None = None,
) -> CPLObjective:
    """The training objective, ``L1 + cpr_weight * CPR + balance_weight * balance
    + routing_weight * routing``.

    The CPR term is a [ContrastivePromptLoss][contrastive_prompts.ContrastivePromptLoss] of
    ``config.cpr_mode`` and ``temperature`` on the features ``config.cpr_features`` names:
    ``"filters"`` ([FilterFeatures][contrastive_prompts.core.features.FilterFeatures]), ``"pixels"``
    ([PixelFeatures][contrastive_prompts.core.features.PixelFeatures]) or ``"vgg16:<weights file>"``
    ([VGG16Features][contrastive_prompts.core.features.VGG16Features] with that file). It draws
    ``config.num_negatives`` negatives per image, from other degradations' experts first when
    ``config.use_labels``. The negatives go through the decoder in chunks of
    ``config.chunk_size`` rows; when that is ``None``, in chunks of ``config.batch_size`` rows
    (one pass per negative) on a CPU, where it measured faster, and all at once elsewhere.

    Args:
        config: the run's options.
        num_labels: how many degradation labels the data has (the expert-use statistics count
            per label).
        device: where the objective's modules (the feature network) go; its type picks the
            chunk size.
        where: the name error messages begin with
            ([Trainer][contrastive_prompts.app.train.Trainer] passes ``"Trainer"``).
        label_experts: the expert the routing term teaches each label (``label % N`` by
            default; a run that grows a model passes its
            [GrowthPlan][contrastive_prompts.app.growth.GrowthPlan]'s).

    Returns:
        The [CPLObjective][contrastive_prompts.CPLObjective] on ``device``.

    Raises:
        InputTypeError: ``config`` is not a ``TrainConfig``.
        InputError: an option of ``config`` is out of range, ``num_labels`` is not an integer
            >= 1, ``device`` is unknown, or the VGG16 weights file cannot be read.

    Examples:
        >>> objective = build_objective(TrainConfig(batch_size=3), num_labels=5, device="cpu")
        >>> objective.chunk_size, objective.num_negatives, objective.loss.mode
        (3, 4, 'subtractive')
    """
    _check_config(where, config)
    device = resolve_device(where, device)
    return CPLObjective(
        weight=config.cpr_weight,
        num_negatives=config.num_negatives,
        loss=ContrastivePromptLoss(
            mode=config.cpr_mode,
            features=_features(config.cpr_features),
            temperature=config.temperature,
        ),
        balance_weight=config.balance_weight,
        routing_weight=config.routing_weight,
        num_labels=num_labels,
        chunk_size=config.chunk_size or (config.batch_size if device.type == "cpu" else None),
        label_negatives=config.use_labels,
        label_experts=label_experts,
    ).to(device)


def build_step_module(
    model: nn.Module,
    objective: CPLObjective,
    device: str | torch.device,
    world_size: int = 1,
) -> nn.Module:
    """Model and objective as one module, for DistributedDataParallel to see the whole step.

    Calling it as ``step(degraded, clean, labels, generator=generator)`` returns
    ``objective(model, degraded, clean, labels, generator=generator)``, an
    [ObjectiveOutput][contrastive_prompts.core.objective.ObjectiveOutput]. With ``world_size > 1``
    it is wrapped in ``DistributedDataParallel`` (on ``device``'s GPU when it is one), so the
    gradients of the whole step, negatives and CPR included, are averaged over the processes;
    the process group must exist (see
    [setup_distributed][contrastive_prompts.app.building.setup_distributed]).

    Args:
        model: the network (see [build_model][contrastive_prompts.app.building.build_model]).
        objective: the objective (see
            [build_objective][contrastive_prompts.app.building.build_objective]).
        device: the device of this process.
        world_size: the number of processes.

    Returns:
        The step module. Its parameters are the model's and the objective's.

    Examples:
        >>> model, objective = nn.Conv2d(3, 3, 3, padding=1), CPLObjective(weight=0.0)
        >>> step = build_step_module(model, objective, "cpu")
        >>> step(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)).loss.backward()
        >>> model.weight.grad is not None
        True
    """
    step_module = _TrainStep(model, objective)
    if world_size <= 1:
        return step_module
    device = torch.device(device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(step_module, device_ids=ids)


def build_optimizer(
    config: TrainConfig,
    model: nn.Module,
    *,
    where: str = "build_optimizer",
    parameters: list[dict[str, Any]] | None = None,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on the model's parameters (or the groups given) and its warm-up then cosine schedule.

    AdamW with ``config.lr``, ``betas`` and ``weight_decay``; the schedule multiplies the rate
    by [warmup_cosine][contrastive_prompts.app.building.warmup_cosine] of the step, over
    ``config.warmup_steps`` and ``config.steps``, down to ``config.min_lr``. Call
    ``scheduler.step()`` after each ``optimizer.step()``.

    Args:
        config: the run's options.
        model: the network whose parameters are optimised.
        where: the name error messages begin with
            ([Trainer][contrastive_prompts.app.train.Trainer] passes ``"Trainer"``).
        parameters: parameter groups to optimise instead of all of ``model``'s, as
            [only_new_experts][contrastive_prompts.core.only_new_experts] gives them (a group's
            own ``weight_decay`` wins over the config's).

    Returns:
        ``(optimizer, scheduler)``; the optimiser's rate is already that of step 0.

    Raises:
        InputTypeError: ``config`` is not a ``TrainConfig``.
        InputError: an option of ``config`` is out of range.

    Examples:
        >>> config = TrainConfig(lr=1e-3, warmup_steps=4, steps=10)
        >>> optimizer, scheduler = build_optimizer(config, nn.Linear(2, 2))
        >>> optimizer.param_groups[0]["lr"]  # step 0 of 4 warm-up steps: lr / 4
        0.00025
    """
    _check_config(where, config)
    optimizer = torch.optim.AdamW(
        parameters if parameters is not None else model.parameters(),
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
    )
    floor = config.min_lr / config.lr
    # a lambda, not a partial: LambdaLR's state dict (so the checkpoint) leaves lambdas out
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(
            s, warmup_steps=config.warmup_steps, total_steps=config.steps, floor=floor
        ),
    )
    return optimizer, scheduler


def build_data(
    config: TrainConfig,
    mix: DegradationMix | None = None,
    *,
    train_data: Dataset[Any] | None = None,
    val_data: Dataset[Any] | None = None,
    where: str = "build_data",
) -> tuple[Dataset[Any], Dataset[Any] | None]:
    """The training and validation data: the datasets given, else the config's defaults.

    Training, by default: the clean images of ``config.data`` (or, when it is empty, the
    training split of the photos that ship with scikit-image), decoded once and cached, in
    random crops of ``config.crop`` degraded on the fly by ``mix``, drawn from ``config.seed``
    (a [SyntheticDataset][contrastive_prompts.app.data.SyntheticDataset]). Validation, by default:
    the clean images of ``config.val_data`` (or, when ``config.data`` is empty, the held-out
    scikit-image photos), each under every degradation of ``mix``, centre-cropped to
    ``config.val_crop``, drawn from ``config.seed + 1``; with ``config.data`` and no
    ``config.val_data``, no validation (``None``). No image file may declare more than
    ``config.max_pixels`` pixels: a training file above it is skipped with a warning, a
    validation file refused.

    Args:
        config: the run's options.
        mix: the degradations (``None``: ``config.mix`` and ``config.add_degradations``, as
            [build_mix][contrastive_prompts.app.growth.build_mix] makes them).
        train_data: a dataset of ``(degraded, clean, label)`` items to use instead of the
            default.
        val_data: likewise for validation.
        where: the name error messages begin with
            ([Trainer][contrastive_prompts.app.train.Trainer] passes ``"Trainer"``).

    Returns:
        ``(train_data, val_data)``; ``val_data`` is ``None`` when there is no validation.

    Raises:
        InputTypeError: ``config`` is not a ``TrainConfig``.
        InputError: an option of ``config`` is out of range, a path names no image, or a
            validation image cannot be read.

    Examples:
        >>> train, val = build_data(TrainConfig(crop=32, val_crop=32))
        >>> train[0][0].shape, len(val)  # two held-out photos under five degradations
        (torch.Size([3, 32, 32]), 10)
    """
    _check_config(where, config)
    if mix is None:
        mix = build_mix(config, growth_plan(config, where=where))
    if train_data is None:
        images: Any = config.data or sample_split()[0]
        train_data = SyntheticDataset(
            images,
            mix,
            crop_size=config.crop,
            seed=config.seed,
            cache=True,
            max_pixels=config.max_pixels,
        )
    if val_data is None and (config.val_data or not config.data):
        held_out = (
            [
                _read_validation_image(where, p, config.max_pixels)
                for p in image_paths(config.val_data)
            ]
            if config.val_data
            else sample_split()[1]
        )
        val_data = degraded_copies(held_out, mix, crop=config.val_crop, seed=config.seed + 1)
    return train_data, val_data
