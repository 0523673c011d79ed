"""The options of a training run: `TrainConfig`, its checks, and the named recipes.

A run is described by one [TrainConfig][contrastive_prompts.app.config.TrainConfig];
[RECIPES][contrastive_prompts.app.config.RECIPES] names the instances the command line offers
(``--recipe demo``, ``--recipe paper``). [RUN_FIELDS][contrastive_prompts.app.config.RUN_FIELDS]
lists the options a resumed run must keep to carry on exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import (
    InputError,
    InputTypeError,
    check_bool,
    check_choice,
    check_int_range,
    check_positive,
)
from ..core.loss import MODES
from ..core.negatives import MAX_NEGATIVES
from ..core.objective import ROUTING_WEIGHT
from ..reference.model import MODEL_PRESETS
from ..reference.padding import MAX_PAD_MULTIPLE
from .data.images import MAX_IMAGE_PIXELS
from .degradations import MIXES, make_mix

__all__ = [
    "ADDED_FIELDS",
    "GROWTHS",
    "MAX_SEED",
    "PRECISIONS",
    "RECIPES",
    "RUN_FIELDS",
    "TrainConfig",
    "resolve_device",
]

PRECISIONS = ("fp32", "bf16", "fp16")


MAX_SEED = 2**63 - 1
"""The largest seed: seeds are 64-bit, and the run derives a few more from each."""


RUN_FIELDS = (
    "preset", "top_k", "use_prompts", "data", "mix", "add_degradations", "grow_from", "growth",
    "crop",
    "batch_size", "cpr_weight", "num_negatives", "cpr_mode", "cpr_features", "temperature",
    "balance_weight", "routing_weight", "use_labels", "chunk_size", "lr", "betas",
    "weight_decay", "warmup_steps", "min_lr", "grad_clip", "ema_decay", "precision", "seed",
)  # fmt: skip
"""The options that shape the optimisation and the data stream: a resumed run must keep them to
carry on exactly. The rest (steps, logging, validation, output, workers, device) may change."""

ADDED_FIELDS: dict[str, Any] = {"add_degradations": [], "grow_from": None, "growth": "experts"}
"""Fields of [RUN_FIELDS][contrastive_prompts.app.config.RUN_FIELDS] that checkpoints of earlier
versions lack, with the value those runs trained with: resuming one compares them with it (a run
grown before ``growth`` existed grew its banks)."""

GROWTHS = ("gated", "experts")
"""How a run with ``grow_from`` teaches a model new degradations (``TrainConfig.growth``)."""


def _option(default: Any, description: str) -> Any:
    """A field of [TrainConfig][contrastive_prompts.app.config.TrainConfig] with its description:
    the command line's ``--help`` and the docs' table of fields read it from the field."""
    return field(default=default, metadata={"help": description})


@dataclass
class TrainConfig:
    """Every option of a training run; a recipe is a named instance.

    Each field carries its description (``dataclasses.fields(TrainConfig)[i].metadata["help"]``),
    which ``contrastive-prompts train --help`` prints beside the field's flag.

    Examples:
        >>> config = dataclasses.replace(RECIPES["demo"], steps=50, batch_size=2)
        >>> config.preset, config.steps
        ('tiny', 50)
        >>> TrainConfig(batch_size=0).validate()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        contrastive_prompts._checks.InputError: TrainConfig: expected batch_size to be ..., got 0
    """

    preset: str = _option(
        "tiny",
        "model size, a name in [MODEL_PRESETS][contrastive_prompts.reference.MODEL_PRESETS].",
    )
    top_k: int = _option(1, "experts per prompt (1 for CPL, 5 for PromptIR's dense prompts).")
    use_prompts: bool = _option(True, "``False`` trains the same network without prompts.")
    init_promptir: str | None = _option(
        None,
        "an official PromptIR checkpoint to start from (``base`` preset only): CPL fine-tuning, as "
        "the paper's models relate to PromptIR.",
    )
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "folders or files of clean images, degraded on the fly; empty for the photos "
            "that ship with scikit-image (training split)."
        },
    )
    val_data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "folders or files of clean held-out images, scored under every degradation of "
            "the mix; by default the held-out scikit-image photos when ``data`` is empty, and no "
            "validation otherwise."
        },
    )
    max_pixels: int | None = _option(
        MAX_IMAGE_PIXELS,
        "the most pixels (width x height) a training or validation image file may declare, checked "
        "from its header before it is decoded (8192 x 8192 by default; ``None``: no limit).",
    )
    mix: str = _option(
        "3task",
        "degradation mix, a name in [MIXES][contrastive_prompts.app.degradations.MIXES].",
    )
    add_degradations: list[str] = field(
        default_factory=list,
        metadata={
            "help": "degradations appended to the mix's tasks, names in "
            "[DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS] with their "
            'default options or composites of them joined by ``+`` (``"haze+rain"``); a new label '
            "each, after the mix's."
        },
    )
    grow_from: str | None = _option(
        None,
        "a training checkpoint of the reference model to teach the degradations it was not trained "
        "on (those of ``add_degradations`` beyond its own): each prompt layer gets one new expert "
        "per such degradation, and only those experts and their router rows train, on the "
        "checkpoint's degradations and the new ones (see "
        "[growth_plan][contrastive_prompts.app.growth.growth_plan]). ``preset``, ``top_k`` and "
        "``use_prompts`` do not apply: the model is the checkpoint's. ``growth`` says how.",
    )
    growth: str = _option(
        "gated",
        'how a run with ``grow_from`` learns the new degradations: ``"gated"`` trains a copy of '
        "the checkpoint's model, every parameter, on the new degradations alone, and fits a gate "
        "that gives each image to the copy or to the checkpoint's model, which restores the old "
        'degradations as before, bit for bit; ``"experts"`` gives every prompt layer a new expert '
        "per new degradation and trains those and their router rows alone (see "
        "[start_growth][contrastive_prompts.app.growth.start_growth]).",
    )
    crop: int = _option(64, "side of the random training crops.")
    batch_size: int = _option(4, "images per step and process.")
    workers: int = _option(0, "DataLoader worker processes.")
    cpr_weight: float = _option(0.01, "lambda of the contrastive term (0 trains with L1 alone).")
    num_negatives: int = _option(4, "negatives per image.")
    cpr_mode: str = _option("subtractive", '``"subtractive"``, ``"infonce"`` or ``"ratio"``.')
    cpr_features: str = _option(
        "filters",
        '``"filters"``, ``"pixels"`` or ``"vgg16:<weights file>"``.',
    )
    temperature: float = _option(0.1, "InfoNCE temperature.")
    balance_weight: float = _option(0.0, "weight of the expert-balance loss.")
    routing_weight: float = _option(
        ROUTING_WEIGHT,
        "weight of the label-routing term "
        "([label_routing_loss][contrastive_prompts.core.label_routing_loss]): the router learns to "
        "send each degradation to an expert of its own (0 leaves it to itself).",
    )
    use_labels: bool = _option(
        True,
        "give degradation labels to the negatives (other degradations' experts first); ``False`` "
        "draws them as CPL does, among all unselected experts.",
    )
    chunk_size: int | None = _option(
        None,
        "rows per decoder pass for the negatives. ``None`` picks what measured faster: all "
        "``batch_size * num_negatives`` rows at once on a GPU, ``batch_size`` rows (one pass per "
        "negative) on a CPU.",
    )
    steps: int = _option(1000, "optimisation steps.")
    lr: float = _option(2e-4, "peak learning rate.")
    betas: tuple[float, float] = _option((0.9, 0.999), "AdamW betas.")
    weight_decay: float = _option(0.01, "AdamW weight decay.")
    warmup_steps: int = _option(50, "linear warm-up steps before the cosine decay.")
    min_lr: float = _option(1e-6, "learning rate at the end of the cosine.")
    grad_clip: float | None = _option(
        1.0,
        "maximum gradient norm (``None`` or 0 disables clipping).",
    )
    ema_decay: float = _option(
        0.999,
        "decay of the EMA weights used for validation and saved for inference.",
    )
    precision: str = _option(
        "fp32",
        '``"fp32"``, ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU, with loss scaling). Under '
        '``"bf16"`` and ``"fp16"`` the router\'s softmax, the CPR loss\'s normalisation and '
        "distances, and the metrics run in float32.",
    )
    compile: bool = _option(
        False,
        "compile the network and the CPR loss with ``torch.compile`` (Inductor), region by region "
        "([compile_regions][contrastive_prompts.app.compiling.compile_regions]), so that the "
        "negatives path runs compiled too. Off by default: it pays on a GPU; on a CPU it was "
        "slower (see the benchmarks). Validation runs the EMA copy, uncompiled.",
    )
    seed: int = _option(0, "seeds the model, the data stream and the negatives.")
    val_every: int = _option(
        0,
        "validate every this many steps (and at the end); 0 only at the end.",
    )
    val_crop: int | None = _option(
        128,
        "centre crop of the held-out images for validation (``None``: whole images).",
    )
    val_pad_multiple: int | None = _option(
        None,
        "validation pads each image to a multiple of this and crops back, for a network that needs "
        "a size multiple and does not pad itself. ``None``: 1 for the reference model (it pads to "
        "8 itself), 16 for a network of your own.",
    )
    log_every: int = _option(10, "log and refresh the progress line every this many steps.")
    tensorboard: bool = _option(
        False,
        "also log to TensorBoard, in ``<out_dir>/tensorboard``: losses, learning rate, gradient "
        "norm, validation scores, expert use and validation images (needs the ``tensorboard`` "
        "package).",
    )
    save_every: int = _option(500, "write a checkpoint every this many steps (and at the end).")
    out_dir: str = _option("runs/cpl", "where logs, plots and checkpoints go.")
    device: str = _option(
        "auto",
        '``"auto"`` (the process\'s GPU if any, else CPU), ``"cpu"``, ``"cuda"``...',
    )

    def validate(self) -> None:
        """Check every option's type and range; raises InputError naming the first bad one.

        Numbers must be finite: an infinite or NaN learning rate or weight would only make the
        run diverge later.
        """
        where = "TrainConfig"
        check_choice(where, "preset", self.preset, tuple(MODEL_PRESETS))
        check_choice(where, "mix", self.mix, tuple(MIXES))
        check_choice(where, "cpr_mode", self.cpr_mode, MODES)
        check_choice(where, "precision", self.precision, PRECISIONS)
        check_choice(where, "growth", self.growth, GROWTHS)
        for name in ("use_prompts", "use_labels", "compile", "tensorboard"):
            check_bool(where, name, getattr(self, name))
        for name in ("data", "val_data", "add_degradations"):
            _check_texts(where, name, getattr(self, name))
        for name in ("init_promptir", "grow_from"):
            if getattr(self, name) is not None:
                _check_text(where, name, getattr(self, name), "a string or none")
        _check_text(where, "device", self.device, "a string")
        if not isinstance(self.cpr_features, str) or not (
            self.cpr_features in ("filters", "pixels") or self.cpr_features.startswith("vgg16:")
        ):
            raise InputError(
                f"{where}: expected cpr_features 'filters', 'pixels' or 'vgg16:<weights file>', "
                f"got {self.cpr_features!r}"
            )
        for name in ("crop", "batch_size", "steps", "log_every", "save_every"):
            check_int_range(where, name, getattr(self, name), 1)
        check_int_range(where, "num_negatives", self.num_negatives, 1, MAX_NEGATIVES)
        for name in ("workers", "warmup_steps", "val_every"):
            check_int_range(where, name, getattr(self, name), 0)
        check_int_range(where, "seed", self.seed, 0, MAX_SEED)
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise InputError(
                f"{where}: expected out_dir to name a folder for the run's files, got "
                f"{self.out_dir!r} (use '.' to mean the current folder)"
            )
        if self.max_pixels is not None:
            check_int_range(where, "max_pixels", self.max_pixels, 1)
        check_int_range(where, "top_k", self.top_k, 1)
        check_positive(where, "lr", self.lr)
        check_positive(where, "temperature", self.temperature)
        for name in ("cpr_weight", "balance_weight", "routing_weight", "weight_decay", "min_lr"):
            check_positive(where, name, getattr(self, name), allow_zero=True)
        check_positive(where, "ema_decay", self.ema_decay, allow_zero=True)
        if not (
            isinstance(self.betas, (tuple, list))
            and len(self.betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in self.betas)
        ):
            raise InputTypeError(f"{where}: expected betas to be 2 numbers, got {self.betas!r}")
        try:
            make_mix(self.mix, add=self.add_degradations)
        except InputError as error:
            detail = str(error).removeprefix("make_mix: ")
            raise InputError(f"{where}: add_degradations: {detail}") from error
        if self.grow_from is not None and self.init_promptir is not None:
            raise InputError(
                f"{where}: expected grow_from or init_promptir, got both: a grown model starts "
                "from its checkpoint's weights"
            )
        if self.init_promptir is not None and (self.preset != "base" or not self.use_prompts):
            raise InputError(
                f"{where}: expected preset='base' with prompts for init_promptir, "
                f"got preset={self.preset!r}, use_prompts={self.use_prompts}"
            )
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"{where}: expected ema_decay in [0, 1), got {self.ema_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"{where}: expected betas of two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.min_lr <= self.lr:
            raise InputError(f"{where}: expected min_lr in [0, lr={self.lr}], got {self.min_lr}")
        if self.grad_clip is not None:
            check_positive(where, "grad_clip", self.grad_clip, allow_zero=True)
        for name in ("val_crop", "chunk_size"):
            if getattr(self, name) is not None:
                check_int_range(where, name, getattr(self, name), 1)
        if self.val_pad_multiple is not None:
            check_int_range(where, "val_pad_multiple", self.val_pad_multiple, 1, MAX_PAD_MULTIPLE)
        if self.precision == "fp16" and self.device == "cpu":
            raise InputError(f"{where}: {FP16_ON_CPU}")

    @classmethod
    def from_dict(cls, values: object) -> TrainConfig:
        """A configuration from a mapping of field values (a JSON object), checked.

        Raises:
            InputError: ``values`` is not a mapping, names unknown fields, or holds a value of
                the wrong type or range.
        """
        if not isinstance(values, dict):
            raise InputTypeError(
                f"TrainConfig: expected a mapping of field names to values, "
                f"got {type(values).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"TrainConfig: expected fields among {sorted(known)}, got {unknown}")
        values = dict(values)
        if isinstance(values.get("betas"), list):
            values["betas"] = tuple(values["betas"])
        config = cls(**values)
        config.validate()
        return config


def _check_text(where: str, name: str, value: object, expected: str) -> None:
    if not isinstance(value, str):
        raise InputTypeError(f"{where}: expected {name} to be {expected}, got {value!r}")


def _check_texts(where: str, name: str, value: object) -> None:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise InputTypeError(f"{where}: expected {name} to be a list of strings, got {value!r}")


FP16_ON_CPU = (
    "expected precision 'fp32' or 'bf16' on a CPU, got 'fp16': float16 autocast on a CPU is "
    "many times slower than float32 (a depthwise convolution took 60 times as long), and its "
    "loss scaling is meant for GPUs"
)


RECIPES: dict[str, TrainConfig] = {
    # The demo: a few minutes on a 2-core CPU, on the photos that ship with scikit-image.
    "demo": TrainConfig(
        preset="tiny", crop=64, batch_size=4, steps=600, lr=1e-3, warmup_steps=30,
        ema_decay=0.99, num_negatives=2, val_every=200, save_every=200,
        out_dir="results/demo/run",
    ),
    # The papers' recipe: PromptIR's architecture, 128x128 crops, batch 8
    # per GPU, AdamW lr 2e-4 with betas (0.9, 0.9) as CPL's released config, EMA 0.999, warm-up
    # for 1/8 of training (PromptIR: 15 of 120 epochs), cosine decay, 4 negatives.
    "paper": TrainConfig(
        preset="base", crop=128, batch_size=8, steps=300_000, lr=2e-4, betas=(0.9, 0.9),
        warmup_steps=37_500, min_lr=1e-6, ema_decay=0.999, num_negatives=4, workers=8,
        val_every=10_000, save_every=5_000, val_crop=None, out_dir="runs/paper",
    ),
}  # fmt: skip
"""The named training runs that ``--recipe`` offers on the command line.

``"demo"`` trains the ``tiny`` preset for 600 steps on the photos that ship with scikit-image,
in a few minutes on a 2-core CPU. ``"paper"`` is the papers' recipe: the ``base`` preset,
128x128 crops, batch 8 per GPU, AdamW at 2e-4 with betas (0.9, 0.9), 300,000 steps with a
warm-up of 37,500, EMA 0.999 and 4 negatives. Flags given with ``--recipe`` override its fields.
"""


def resolve_device(where: str, name: object, local_rank: int = 0) -> torch.device:
    """The device named ``name``, checked to exist here.

    ``"auto"`` is this process's GPU if there is one (``local_rank`` picks it under torchrun),
    else the CPU; ``"cuda"`` without an index likewise takes the ``local_rank``-th GPU.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device: torch.device = torch.device(name)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"{where}: expected a device such as 'auto', 'cpu', 'cuda' or 'cuda:1', got {name!r}"
        ) from error
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{where}: expected an available device, got {name!r} (not available here: {reason})"
        ) from error
    return device
