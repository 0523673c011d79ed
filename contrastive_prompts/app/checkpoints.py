"""Everything that reads or writes weights, and reads nothing that can run code.

Three kinds of file:

- **training checkpoints** (``last.pt``), written by
  [Trainer][contrastive_prompts.app.train.Trainer]: weights, EMA weights, optimiser, schedule and
  random states, for an exact resume;
- **shared weights** (``.safetensors``), written by
  [export_weights][contrastive_prompts.app.checkpoints.export_weights] (``contrastive-prompts
  export``): the EMA weights with the model configuration in the file's metadata, read back by
  [load_checkpoint_model][contrastive_prompts.app.checkpoints.load_checkpoint_model];
- **official PromptIR checkpoints** (Lightning ``.ckpt``, bare state dicts, BasicSR's
  ``params_ema`` / ``params``), read by
  [load_promptir_state_dict][contrastive_prompts.app.checkpoints.load_promptir_state_dict].

PyTorch files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings, bytes,
containers (lists, tuples, dicts, sets) and numpy arrays, never an arbitrary Python object, so a
malicious file cannot run code when it is loaded. A file that needs more is refused with the
names of the types it asked for; there is no switch that reads it anyway.

The Restormer parts of a PromptIR checkpoint keep PromptIR's names; the prompt parts are renamed
(PromptIR's ``prompt3.prompt_param`` is our ``prompt3.prompts`` without the leading singleton axis,
its ``noise_level3`` block is our ``fusion3.block``, and so on). PromptIR defines six 1x1
convolutions that its forward pass never uses; they are dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._checks import InputError, InputTypeError
from .files import (
    CheckpointError,
    file_problem,
    is_safetensors,
    make_folder,
    read_weights,
    remove_stale,
    safe_load,
    unreadable,
    writing,
)

if TYPE_CHECKING:
    from ..reference.gated import GatedRestorer
    from ..reference.model import SparsePromptIR

    Restorer = SparsePromptIR | GatedRestorer

__all__ = [
    "CHECKPOINT_FORMAT",
    "UNUSED_CPL_KEYS",
    "UNUSED_PROMPTIR_KEYS",
    "WEIGHTS_FORMAT",
    "CheckpointError",
    "checkpoint_model",
    "convert_promptir_state_dict",
    "export_weights",
    "load_checkpoint_model",
    "load_promptir",
    "load_promptir_state_dict",
    "model_config_of",
    "read_checkpoint",
    "safe_load",
]

CHECKPOINT_FORMAT = "contrastive_prompts.checkpoint/1"
WEIGHTS_FORMAT = "contrastive_prompts.weights/1"

PathLike = str | os.PathLike[str]


class _ForeignFormat(CheckpointError):
    """A readable file that this library did not write (it may be an official PromptIR one)."""


# -- state dicts ------------------------------------------------------------------------------


def state_problems(
    expected: Mapping[str, Tensor], given: Mapping[str, Tensor], origin: Mapping[str, str]
) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches of ``given`` against ``expected``.

    ``origin`` maps a key to the name to print for it (the file's own name, before renaming).
    """
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(origin.get(k, k) for k in given if k not in expected)
    mismatched = sorted(
        f"{origin.get(k, k)}: expected {tuple(expected[k].shape)}, got {tuple(v.shape)}"
        for k, v in given.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    )
    not_tensors = sorted(
        f"{origin.get(k, k)}: {type(v).__name__}"
        for k, v in given.items()
        if not isinstance(v, Tensor)
    )
    fitting = {
        k: v for k, v in given.items() if k in expected and isinstance(v, Tensor) and not v.is_meta
    }
    kinds = sorted(
        f"{origin.get(k, k)}: expected {_kind(expected[k])}, got {v.dtype}"
        for k, v in fitting.items()
        if _kind(v) != _kind(expected[k])
    )
    not_finite = sorted(
        origin.get(k, k)
        for k, v in fitting.items()
        if (v.is_floating_point() or v.is_complex()) and not bool(v.isfinite().all())
    )
    problems = []
    for name, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
        ("values that are not tensors", not_tensors),
        ("tensors of another kind (a cast would change their values)", kinds),
        ("tensors with NaN or infinite values", not_finite),
    ):
        if items:
            more = f" and {len(items) - 10} more" if len(items) > 10 else ""
            problems.append(f"{name} {items[:10]}{more}")
    return problems


def _kind(tensor: Tensor) -> str:
    """What a tensor may be cast from without changing its meaning."""
    if tensor.dtype == torch.bool:
        return "a boolean tensor"
    if tensor.is_complex():
        return "a complex tensor"
    return "a floating-point tensor" if tensor.is_floating_point() else "an integer tensor"


def as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def build_checked_model(where: str, model_config: Any, weights: Any) -> SparsePromptIR:
    """A `SparsePromptIR` of ``model_config`` holding ``weights``, or a CheckpointError."""
    from ..reference.model import SparsePromptIR

    if model_config is None:
        raise CheckpointError(
            f"{where}: it holds the weights of a network of your own (no model_config): build "
            "that network and load them with model.load_state_dict(read_checkpoint(path)['ema'])"
        )
    if not isinstance(model_config, Mapping):
        raise CheckpointError(
            f"{where}: expected a model_config mapping, got {type(model_config).__name__}"
        )
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{where}: expected weights by name, got {type(weights).__name__}")
    options = {str(k): as_tuple(v) for k, v in model_config.items()}
    # Bounds before allocation. Building costs memory and time in the number of blocks, and
    # every block holds tensors, so a config asking for more blocks than the file holds
    # tensors cannot fit; then the model is built on the meta device (no memory for any
    # tensor, whatever the sizes) and compared with the weights, and built for real only if
    # they fit.
    counts = [
        *_as_ints(options.get("num_blocks", ())),
        *_as_ints(options.get("num_refinement_blocks", 0)),
    ]
    if sum(counts) > len(weights):
        raise CheckpointError(
            f"{where}: its model_config asks for {sum(counts)} transformer blocks (num_blocks "
            f"{options.get('num_blocks')!r}, num_refinement_blocks "
            f"{options.get('num_refinement_blocks')!r}), more than its {len(weights)} tensors "
            "can hold"
        )
    try:
        shape = SparsePromptIR("base", device="meta", **options)
    except (InputError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{where}: its model_config is not a valid model ({error})"
        ) from error
    problems = state_problems(shape.state_dict(), weights, {})
    if problems:
        raise CheckpointError(
            f"{where}: its weights do not fit its model_config: " + "; ".join(problems)
        )
    model = SparsePromptIR("base", **options)
    model.load_state_dict(weights)
    return model


GATED_KEYS = ("classes", "tile", "hidden", "label_networks")
"""What a gated model's layout holds, in a checkpoint's ``gated`` entry (which also holds the
networks before the trained one and the gate) and, as JSON, in a file's ``gated`` metadata."""


def gated_layout(model: GatedRestorer) -> dict[str, Any]:
    """The layout of a gated model: its gate's classes and tile and its ``label_networks``."""
    gate = model.gate
    labels = list(model.label_networks)
    return {
        "classes": gate.classes,
        "tile": gate.tile,
        "hidden": gate.hidden,
        "label_networks": labels,
    }


def build_gated_model(
    where: str,
    model_config: Any,
    layout: Any,
    networks: Sequence[Any],
    gate: Any,
) -> GatedRestorer:
    """A [GatedRestorer][contrastive_prompts.reference.GatedRestorer] of reference networks, each of
    ``model_config``, holding the weights ``networks`` and the gate's ``gate``, or a
    CheckpointError. Every size is checked before anything is built."""
    from ..reference.gated import GatedRestorer, ImageGate

    if not isinstance(layout, Mapping) or any(k not in layout for k in GATED_KEYS):
        raise CheckpointError(
            f"{where}: expected a gated layout holding {', '.join(GATED_KEYS)}, got {layout!r}"
        )
    classes, tile, hidden, labels = (layout[k] for k in GATED_KEYS)
    if not isinstance(networks, Sequence) or classes != len(networks):
        count = len(networks) if isinstance(networks, Sequence) else type(networks).__name__
        raise CheckpointError(
            f"{where}: expected a gate of one class per network, got {classes!r} classes and "
            f"{count} networks"
        )
    if not isinstance(gate, Mapping):
        raise CheckpointError(f"{where}: expected the gate's weights by name, got {gate!r}")
    try:
        with torch.device("meta"):  # shapes only: no memory, whatever the sizes
            shape = ImageGate(classes, tile=tile, hidden=hidden)
    except (InputError, InputTypeError) as error:
        raise CheckpointError(f"{where}: its gate is not valid ({error})") from error
    problems = state_problems(shape.state_dict(), gate, {})
    if problems:
        raise CheckpointError(f"{where}: its gate's weights do not fit: " + "; ".join(problems))
    built_gate = ImageGate(classes, tile=tile, hidden=hidden)
    built_gate.load_state_dict(gate)
    built = [
        build_checked_model(f"{where}, network {i}", model_config, weights)
        for i, weights in enumerate(networks)
    ]
    try:
        return GatedRestorer(built, built_gate, label_networks=labels)
    except (InputError, InputTypeError) as error:
        raise CheckpointError(f"{where}: its gated layout is not valid ({error})") from error


def build_exported_model(
    where: str, model_config: Any, weights: Mapping[str, Tensor], layout: Any = None
) -> Restorer:
    """The model of an exported file's tensors: a reference model, or with a gated ``layout``
    the gated model whose tensors are named ``networks.<i>.`` and ``gate.``."""
    if layout is None:
        return build_checked_model(where, model_config, weights)
    classes = layout.get("classes") if isinstance(layout, Mapping) else None
    if not isinstance(classes, int) or not 2 <= classes <= len(weights):
        raise CheckpointError(
            f"{where}: expected a gated layout of 2 to {len(weights)} classes, got {layout!r}"
        )
    networks: list[dict[str, Tensor]] = [{} for _ in range(classes)]
    gate: dict[str, Tensor] = {}
    strays = []
    for key, value in weights.items():
        head, _, rest = key.partition(".")
        if head == "gate":
            gate[rest] = value
            continue
        index, _, name = rest.partition(".")
        if head == "networks" and index.isdigit() and int(index) < classes:
            networks[int(index)][name] = value
        else:
            strays.append(key)
    if strays:
        raise CheckpointError(
            f"{where}: expected tensors named networks.<0..{classes - 1}>. or gate., got "
            f"{sorted(strays)[:10]}"
        )
    return build_gated_model(where, model_config, layout, networks, gate)


def reference_config(model: Restorer) -> Any:
    """The ``ModelConfig`` of a reference model, or of every network of a gated one."""
    from ..reference.gated import GatedRestorer

    first = model.networks[0] if isinstance(model, GatedRestorer) else model
    return first.config


def _as_ints(value: Any) -> list[int]:
    """The integers in ``value`` (one, or a sequence); anything else is left to the model."""
    items = value if isinstance(value, list | tuple) else [value]
    return [v for v in items if isinstance(v, int) and not isinstance(v, bool) and v > 0]


def _sequence_length(state: Mapping[str, Tensor], prefix: str) -> int:
    """How many numbered children ``prefix.0``, ``prefix.1``... the state dict holds."""
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _ffn_expansion_factor(state: Mapping[str, Tensor]) -> float:
    """The shortest decimal ``f`` with ``int(dim * f) == hidden`` for every feed-forward block."""
    pairs = {
        (int(w.shape[1]), int(w.shape[0]) // 2)
        for k, w in state.items()
        if k.endswith(".ffn.project_in.weight") and w.ndim == 4
    }
    if not pairs:
        raise CheckpointError("expected feed-forward blocks (…ffn.project_in.weight), got none")

    def fits(f: float) -> bool:
        return all(int(dim * f) == hidden for dim, hidden in pairs)

    low = max(hidden / dim for dim, hidden in pairs)
    for digits in range(0, 9):
        for f in (round(low, digits), round(low, digits) + 10.0**-digits):
            if fits(f):
                return round(f, digits)
    raise CheckpointError(
        "expected feed-forward widths of one expansion factor, got (width, hidden) pairs "
        f"{sorted(pairs)[:6]} that no factor gives"
    )


def model_config_of(state: Mapping[str, Tensor], *, top_k: int = 1) -> dict[str, Any]:
    """The [ModelConfig][contrastive_prompts.reference.ModelConfig] fields of a reference model's
    state dict (this library's names), read from its tensors' shapes.

    Every size is in the shapes but one: how many experts a prompt layer keeps per image is a
    choice made when it runs, given as ``top_k``. The heads of a level without blocks, and the
    prompt sizes of a model without prompts, take no part in it and are left at their defaults.

    Args:
        state: tensors by this library's names (PromptIR's converted by
            [convert_promptir_state_dict][contrastive_prompts.app.checkpoints.convert_promptir_state_dict]).
        top_k: experts kept per image (at most the bank's size).

    Raises:
        CheckpointError: the state dict lacks what every reference model holds, or its
            feed-forward widths fit no expansion factor.

    Examples:
        >>> from contrastive_prompts import SparsePromptIR
        >>> shapes = SparsePromptIR("small", device="meta").state_dict()
        >>> model_config_of(shapes)["num_blocks"], model_config_of(shapes)["ffn_expansion_factor"]
        ((2, 2, 2, 2), 2.66)
    """
    from ..reference.model import ModelConfig

    for key in ("patch_embed.weight", "output.weight"):
        if key not in state:
            raise CheckpointError(f"expected a reference model's {key!r}, got no such tensor")
    levels = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    refinement = _sequence_length(state, "refinement")
    num_blocks = tuple(_sequence_length(state, level) for level in levels)

    def heads(level: str, fallback: str | None = None) -> int:
        for name in (level, fallback):
            key = f"{name}.0.attn.temperature"
            if name is not None and key in state:
                return int(state[key].shape[0])
        return 1

    config: dict[str, Any] = {
        "dim": int(state["patch_embed.weight"].shape[0]),
        "num_blocks": num_blocks,
        "num_refinement_blocks": refinement,
        "heads": (heads(levels[0], "refinement"), *(heads(level) for level in levels[1:])),
        "ffn_expansion_factor": _ffn_expansion_factor(state),
        "use_prompts": "prompt1.prompts" in state,
        "num_prompts": ModelConfig().num_prompts,  # without prompts: in no shape
    }
    if config["use_prompts"]:
        banks = [state[f"prompt{i}.prompts"].shape for i in (1, 2, 3)]
        config["prompt_dims"] = tuple(int(b[1]) for b in banks)
        config["prompt_sizes"] = tuple(int(b[2]) for b in banks)
        config["num_prompts"] = int(banks[0][0])
        config["prompt_heads"] = int(state["fusion1.block.attn.temperature"].shape[0])
    else:
        config["prompt_heads"] = int(state["fusion1.0.attn.temperature"].shape[0])
    config["top_k"] = min(top_k, config["num_prompts"])
    return config


# -- training checkpoints ---------------------------------------------------------------------

# What Trainer.state_dict writes; a checkpoint lacking any of it is damaged or foreign.
_CHECKPOINT_KEYS = (
    "config", "model_config", "label_names", "model", "ema", "ema_n_averaged", "optimizer",
    "scheduler", "scaler", "step", "history", "validations", "rng",
)  # fmt: skip


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read a training checkpoint, as [Trainer][contrastive_prompts.app.train.Trainer] wrote it.

    Args:
        path: the checkpoint (``last.pt`` in a run's ``out_dir``).

    Returns:
        The checkpoint's dictionary: configuration, weights, EMA weights, optimiser, schedule,
        step, logs and random states.

    Raises:
        CheckpointError: the file is missing, unreadable, refused as unsafe, not a training
            checkpoint, or lacks some of what a training checkpoint holds.

    Examples:
        >>> read_checkpoint("no-such-run/last.pt")
        Traceback (most recent call last):
            ...
        contrastive_prompts.app.files.CheckpointError: checkpoint 'no-such-run/last.pt' not found
    """
    name = os.fspath(path)
    if os.path.isfile(name) and is_safetensors(name):
        raise CheckpointError(
            f"checkpoint {name!r} holds shared weights (safetensors), not a training run: "
            "load it with load_checkpoint_model; a run resumes from its last.pt"
        )
    state = safe_load(name)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise _ForeignFormat(
            f"checkpoint {name!r} is not a contrastive_prompts training checkpoint "
            f"(expected format {CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {name!r} lacks {', '.join(missing)}: it is damaged or was not written by "
            "the Trainer"
        )
    return state


def checkpoint_model(
    state: Mapping[str, Any], *, ema: bool = True, where: str = "checkpoint"
) -> Restorer:
    """The reference model a training checkpoint already read holds (its EMA weights by
    default; the raw weights with ``ema=False``), on the CPU, in train mode; for a run with
    ``growth="gated"``, the [GatedRestorer][contrastive_prompts.reference.GatedRestorer] of the
    networks it kept and the one it trained.

    Args:
        state: what [read_checkpoint][contrastive_prompts.app.checkpoints.read_checkpoint]
            returned.
        ema: load the EMA weights (``False``: the raw weights).
        where: how error messages name the checkpoint.

    Raises:
        CheckpointError: it holds a network of your own, or its weights do not fit its
            configuration.
    """
    weights = state["ema" if ema else "model"]
    gated = state.get("gated")
    if gated is None:
        return build_checked_model(where, state["model_config"], weights)
    if not isinstance(gated, Mapping) or not isinstance(gated.get("networks"), list):
        raise CheckpointError(f"{where}: expected a gated entry holding networks, got {gated!r}")
    # a pickle may hold one state dict under many names: each network must hold tensors of its
    # own, so that what is built stays within what the file holds
    tensors = [
        t
        for weights in gated["networks"]
        if isinstance(weights, Mapping)
        for t in weights.values()
        if isinstance(t, Tensor) and t.numel()
    ]
    storages = {t.untyped_storage().data_ptr() for t in tensors}
    if len(storages) < len(tensors):
        raise CheckpointError(
            f"{where}: expected networks that hold tensors of their own, got "
            f"{len(gated['networks'])} networks whose {len(tensors)} tensors share "
            f"{len(storages)} storages"
        )
    model = build_gated_model(
        where,
        state["model_config"],
        gated,
        [*gated["networks"], weights],
        gated.get("gate"),
    )
    return model.train()


def load_checkpoint_model(
    path: PathLike,
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
    promptir_top_k: int = 5,
) -> Restorer:
    """The model stored in a training checkpoint, a safetensors export, a model folder or a
    PromptIR checkpoint: a [SparsePromptIR][contrastive_prompts.SparsePromptIR], or the
    [GatedRestorer][contrastive_prompts.reference.GatedRestorer] of a run that grew a model with
    ``growth="gated"``.

    A folder holding a ``config.json`` is read as a model folder, as
    [from_pretrained][contrastive_prompts.app.pretrained.from_pretrained] reads it. A file's
    format is read from its first bytes, whatever its name:

    - a training checkpoint gives its EMA weights by default (what validation scored), the raw
      weights with ``ema=False``;
    - a ``.safetensors`` file from
      [export_weights][contrastive_prompts.app.checkpoints.export_weights] gives the weights it
      holds, built with the model configuration stored in its metadata;
    - any other file is read as an official PromptIR checkpoint (Lightning ``.ckpt``, BasicSR,
      bare state dict or ``.safetensors``), as
      [load_promptir][contrastive_prompts.app.checkpoints.load_promptir] reads it,
      with ``promptir_top_k`` experts per prompt.

    The model is in eval mode. Nothing in any of these files can run code.
    [load_checkpoint_model][contrastive_prompts.app.checkpoints.load_checkpoint_model] is the
    same function.

    Args:
        path: a checkpoint written by [Trainer][contrastive_prompts.app.train.Trainer], weights
            written by [export_weights][contrastive_prompts.app.checkpoints.export_weights], a
            model folder or an official PromptIR checkpoint.
        ema: from a training checkpoint, load the EMA weights (``False``: the raw weights).
        device: where to put the model.
        promptir_top_k: experts per prompt for a PromptIR checkpoint: 5 computes what PromptIR
            computes, 1 reads CPL weights saved in PromptIR's format.

    Returns:
        The [SparsePromptIR][contrastive_prompts.SparsePromptIR] of the file's configuration.

    Raises:
        CheckpointError: the file is missing, unreadable, refused as unsafe, of another format,
            or its weights do not fit its configuration.

    Examples:
        >>> model = load_checkpoint_model("runs/cpl/last.pt")  # doctest: +SKIP
        >>> model.restore(torch.rand(1, 3, 64, 64)).shape  # doctest: +SKIP
        torch.Size([1, 3, 64, 64])

        A missing file raises
        [CheckpointError][contrastive_prompts.app.checkpoints.CheckpointError]:

        >>> load_checkpoint_model("no-such-run/last.pt")
        Traceback (most recent call last):
            ...
        contrastive_prompts.app.files.CheckpointError: checkpoint 'no-such-run/last.pt' not found
    """
    from .pretrained import from_pretrained, is_model_folder

    name = os.fspath(path)
    if is_model_folder(name):
        return from_pretrained(name, device=device)
    problem = file_problem(name)
    if problem:
        raise CheckpointError(f"checkpoint {name!r} {problem}")
    try:
        if is_safetensors(name):
            model_config, weights, layout = read_exported_weights(name)
            model = build_exported_model(f"weights {name!r}", model_config, weights, layout)
        else:
            model = checkpoint_model(read_checkpoint(name), ema=ema, where=f"checkpoint {name!r}")
    except _ForeignFormat as foreign:
        model = _promptir_model(name, promptir_top_k, foreign)
    return model.to(device).eval()


def _promptir_model(path: str, top_k: int, foreign: _ForeignFormat) -> SparsePromptIR:
    """The file as an official PromptIR checkpoint, or an error saying it is neither."""

    try:
        return load_promptir(path, top_k=top_k)
    except (CheckpointError, InputError) as error:
        raise CheckpointError(
            f"{foreign}; read as an official PromptIR checkpoint instead, it fails too: {error}"
        ) from error


# -- shared weights (safetensors) -------------------------------------------------------------


def read_exported_weights(path: str) -> tuple[dict[str, Any], dict[str, Tensor], Any]:
    """The model configuration, the tensors and the gated layout (``None`` for a reference model)
    of a safetensors export."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(unreadable("weights", path, error)) from error
    if metadata.get("format") != WEIGHTS_FORMAT or "model_config" not in metadata:
        raise _ForeignFormat(
            f"weights {path!r} are not a contrastive_prompts export (expected metadata format "
            f"{WEIGHTS_FORMAT!r} with the model_config); a bare state dict loads with "
            "model.load_state_dict(safetensors.torch.load_file(path))"
        )

    def read_json(key: str, what: str) -> Any:
        try:
            return json.loads(metadata[key])
        except (json.JSONDecodeError, RecursionError) as error:
            detail = "nested too deeply" if isinstance(error, RecursionError) else error
            raise CheckpointError(f"weights {path!r}: its {what} is not JSON ({detail})") from error

    layout = read_json("gated", "gated layout") if "gated" in metadata else None
    return read_json("model_config", "model_config"), weights, layout


def export_weights(
    checkpoint: PathLike, target: PathLike, *, ema: bool = True, overwrite: bool = False
) -> Path:
    """Write a training checkpoint's weights as a ``.safetensors`` file to share.

    The file holds the EMA weights (``ema=False``: the raw ones) and, in its metadata, the model
    configuration, the label names and the step, so
    [load_checkpoint_model][contrastive_prompts.app.checkpoints.load_checkpoint_model] rebuilds
    the model from it alone. safetensors files hold tensors and strings only: loading one can never
    run code. The file is written under a temporary name and renamed, so a failed export leaves
    nothing half-written.

    Args:
        checkpoint: a training checkpoint (``last.pt``).
        target: the ``.safetensors`` file to write.
        ema: export the EMA weights (what validation scored).
        overwrite: replace ``target`` if it exists (never the checkpoint itself).

    Returns:
        ``target`` as a path.

    Raises:
        CheckpointError: the checkpoint cannot be read or does not fit its configuration.
        InputError: ``target`` is not a ``.safetensors`` name, is the checkpoint, or exists
            without ``overwrite``.

    Examples:
        >>> export_weights("runs/cpl/last.pt", "model.safetensors")  # doctest: +SKIP
        PosixPath('model.safetensors')
    """
    source, target = Path(checkpoint), Path(target)
    if target.suffix != ".safetensors":
        raise InputError(f"export: expected a target ending in .safetensors, got {str(target)!r}")
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise InputError(
            f"export: expected a target other than the checkpoint, got {str(target)!r}"
        )
    if target.exists() and not overwrite:
        raise InputError(
            f"export: {str(target)!r} exists; pass overwrite=True (--overwrite) to replace it"
        )
    state = read_checkpoint(source)
    weights_key = "ema" if ema else "model"
    model = checkpoint_model(state, ema=ema, where=f"checkpoint {str(source)!r}")
    make_folder(target.parent, "the folder of the weights")
    remove_stale(target.parent)
    write_weights(
        model, target, label_names=state["label_names"], step=state["step"], weights=weights_key
    )
    return target


def write_weights(
    model: Restorer,
    target: Path,
    *,
    label_names: Sequence[str],
    step: int | None,
    weights: str | None = None,
) -> None:
    """Write ``model``'s tensors (on the CPU) and its configuration as a safetensors file that
    [load_checkpoint_model][contrastive_prompts.app.checkpoints.load_checkpoint_model] reads
    alone; under a temporary name, then renamed."""
    from safetensors.torch import save_file

    from ..reference.gated import GatedRestorer

    metadata = {
        "format": WEIGHTS_FORMAT,
        "model_config": json.dumps(asdict(reference_config(model))),
        "label_names": json.dumps(list(label_names)),
        "step": "" if step is None else str(int(step)),
    }
    if weights is not None:
        metadata["weights"] = weights
    if isinstance(model, GatedRestorer):
        metadata["gated"] = json.dumps(gated_layout(model))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with writing(target) as temporary:
        save_file(tensors, temporary, metadata=metadata)


# -- official PromptIR checkpoints ------------------------------------------------------------

# PromptIR tensors that exist in its state dict but take no part in its forward pass.
UNUSED_PROMPTIR_KEYS = re.compile(r"^(chnl_reduce\d|reduce_noise_channel_\d)\.")
# The uncertainty head CPL's released training code may add (``use_uncertainty``): it predicts a
# variance beside the output and takes no part in the restored image.
UNUSED_CPL_KEYS = re.compile(r"^var_conv\.")

# (PromptIR name pattern, our name) in the order they are tried; the first match wins.
_RENAMES = (
    (re.compile(r"^prompt(\d)\.prompt_param$"), r"prompt\1.prompts"),
    (re.compile(r"^prompt(\d)\.linear_layer\."), r"prompt\1.router."),
    (re.compile(r"^prompt(\d)\.conv3x3\."), r"prompt\1.conv."),
    (re.compile(r"^noise_level(\d)\."), r"fusion\1.block."),
    (re.compile(r"^reduce_noise_level(\d)\."), r"fusion\1.proj."),
    (re.compile(r"^patch_embed\.proj\."), "patch_embed."),
    (re.compile(r"^((?:down|up)\d_\d)\.body\."), r"\1."),
)
_NORM = re.compile(r"\.norm(\d)\.body\.")


def _rename(key: str) -> str:
    for pattern, replacement in _RENAMES:
        key, count = pattern.subn(replacement, key)
        if count:
            break
    return _NORM.sub(r".norm\1.", key)


def _read_promptir(
    checkpoint: PathLike | Mapping[str, Tensor], map_location: str | torch.device
) -> dict[str, Any]:
    """The state dict inside a PromptIR checkpoint, unwrapped from its training framework."""
    where = "from_promptir"
    if isinstance(checkpoint, Mapping):
        state: Any = dict(checkpoint)
    elif isinstance(checkpoint, (str, os.PathLike)):
        state = read_weights(checkpoint, what="PromptIR checkpoint")
    else:
        raise InputTypeError(
            f"{where}: expected checkpoint to be a path or a state dict, got "
            f"{type(checkpoint).__name__}"
        )
    # Lightning keeps the weights under state_dict, BasicSR under params_ema / params
    for wrapper in ("state_dict", "params_ema", "params"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = dict(state[wrapper])
            break
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(
            f"{where}: expected a PromptIR state dict (tensors by name, possibly under "
            f"'state_dict', 'params_ema' or 'params'), got {type(state).__name__}"
        )
    for prefix in ("net.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return {k: v.to(map_location) if isinstance(v, Tensor) else v for k, v in dict(state).items()}


def convert_promptir_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official PromptIR state dict (keys without ``net.``) to this library's names.

    The unused convolutions are dropped, and so is the uncertainty head of CPL's released
    training code (``var_conv``, not part of the restored image); prompt banks lose their
    leading singleton axis.

    Args:
        state: PromptIR's tensors by PromptIR's names.

    Shape:
        - ``promptI.prompt_param`` ``(1, N, D, S, S)`` becomes ``promptI.prompts``
          ``(N, D, S, S)``; every other tensor keeps its shape.

    Returns:
        The same tensors (not copied) by this library's names.

    Examples:
        >>> state = {"prompt1.prompt_param": torch.zeros(1, 5, 8, 4, 4),
        ...          "noise_level1.norm1.body.weight": torch.ones(3),
        ...          "chnl_reduce1.weight": torch.ones(1)}
        >>> {k: tuple(v.shape) for k, v in convert_promptir_state_dict(state).items()}
        {'prompt1.prompts': (5, 8, 4, 4), 'fusion1.block.norm1.weight': (3,)}
    """
    converted = {}
    for key, value in state.items():
        if UNUSED_PROMPTIR_KEYS.match(key) or UNUSED_CPL_KEYS.match(key):
            continue
        new_key = _rename(key)
        if (
            new_key.endswith(".prompts")
            and isinstance(value, Tensor)
            and value.ndim == 5
            and value.shape[0] == 1
        ):
            value = value[0]
        converted[new_key] = value
    return converted


def load_promptir(
    checkpoint: PathLike | Mapping[str, Tensor],
    *,
    top_k: int,
    map_location: str | torch.device = "cpu",
) -> SparsePromptIR:
    """Load an official PromptIR checkpoint into the ``base`` preset.

    Accepts PromptIR's Lightning ``.ckpt``, a BasicSR file (``params_ema``, else ``params``,
    as CPL's released code saves), a bare state dict or a ``.safetensors`` file. With
    ``top_k=5`` the model computes exactly what PromptIR computes; with ``top_k=1`` it is the
    starting point of CPL fine-tuning. The six 1x1 convolutions that PromptIR defines but
    never uses are ignored, and so is the uncertainty head CPL's released training code may
    save beside the network (``var_conv``). The file is read with ``weights_only=True``: it
    cannot run code, and a file that would is refused, naming what it asks for.

    Args:
        checkpoint: a path or a state dict.
        top_k: experts per prompt, required: 5 computes what PromptIR computes, 1 is where
            CPL fine-tuning starts (or reads CPL weights saved in PromptIR's format).
        map_location: where the tensors go.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file cannot be read, is refused as unsafe, or holds no state
            dict.
        InputError: missing or unexpected keys, or shape mismatches, all listed.
    """
    from ..reference.model import SparsePromptIR

    state = _read_promptir(checkpoint, map_location)  # read and checked before building
    model = SparsePromptIR("base", top_k=top_k)
    load_promptir_state_dict(model, state, map_location=map_location)
    return model


def load_promptir_state_dict(
    model: nn.Module,
    checkpoint: PathLike | Mapping[str, Tensor],
    *,
    map_location: str | torch.device = "cpu",
) -> None:
    """Load a PromptIR checkpoint into ``model``.

    [load_promptir][contrastive_prompts.app.checkpoints.load_promptir] builds the
    model and calls this. Accepted: a Lightning ``.ckpt`` (PromptIR's own), a BasicSR file
    (``params_ema``, else ``params``: how CPL's released code saves), a bare state dict, a
    ``.safetensors`` file, with or without a ``net.`` or ``module.`` prefix.

    Args:
        model: the module to fill; every one of its tensors must come from the checkpoint.
        checkpoint: a path, or a state dict.
        map_location: where the tensors go.

    Shape:
        - Every tensor must have the shape of the model's tensor it fills (after the prompt
          banks' leading singleton axis is dropped).

    Returns:
        Nothing; ``model`` is filled in place.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file cannot be read, is refused as unsafe, or holds no state dict.
        InputError: missing or unexpected keys, or shapes that differ, all listed by their
            PromptIR names where they have one.

    Examples:
        >>> from contrastive_prompts import SparsePrompt
        >>> layer = SparsePrompt(dim=4, prompt_dim=2, prompt_size=2)
        >>> model = torch.nn.ModuleDict({"prompt1": layer})
        >>> state = {"prompt1.prompt_param": torch.rand(1, 5, 2, 2, 2),
        ...          "prompt1.linear_layer.weight": torch.rand(5, 4),
        ...          "prompt1.linear_layer.bias": torch.rand(5),
        ...          "prompt1.conv3x3.weight": torch.rand(2, 2, 3, 3)}
        >>> load_promptir_state_dict(model, state)
        >>> torch.equal(model["prompt1"].prompts, state["prompt1.prompt_param"][0])
        True
    """
    original = _read_promptir(checkpoint, map_location)
    origin = {_rename(k): k for k in original}
    state = convert_promptir_state_dict(original)
    problems = state_problems(model.state_dict(), state, origin)
    if problems:
        raise InputError(
            "from_promptir: expected an official PromptIR (decoder=True) checkpoint; got "
            + "; ".join(problems)
        )
    model.load_state_dict(state)
