"""Loading official PromptIR checkpoints into :class:`~contrastive_prompts.SparsePromptIR`.

The Restormer parts keep PromptIR's names; the prompt parts are renamed (PromptIR's
``prompt3.prompt_param`` is our ``prompt3.prompts`` without the leading singleton axis, its
``noise_level3`` block is our ``fusion3.block``, and so on). PromptIR defines six 1x1 convolutions
that its forward pass never uses; they are dropped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._checks import InputError

__all__ = ["UNUSED_PROMPTIR_KEYS", "convert_promptir_state_dict", "load_promptir_state_dict"]

# PromptIR tensors that exist in its state dict but take no part in its forward pass.
UNUSED_PROMPTIR_KEYS = re.compile(r"^(chnl_reduce\d|reduce_noise_channel_\d)\.")

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


def _read(
    checkpoint: str | os.PathLike[str] | Mapping[str, Tensor], map_location: str | torch.device
) -> dict[str, Tensor]:
    if isinstance(checkpoint, Mapping):
        state = dict(checkpoint)
    else:
        path = os.fspath(checkpoint)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"from_promptir: checkpoint file {path!r} not found")
        state = torch.load(path, map_location=map_location, weights_only=False)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):  # Lightning
        state = dict(state["state_dict"])
    if state and all(k.startswith("net.") for k in state):
        state = {k[len("net.") :]: v for k, v in state.items()}
    return state


def convert_promptir_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official PromptIR state dict (keys without ``net.``) to this library's names.

    The unused convolutions are dropped and prompt banks lose their leading singleton axis.

    Args:
        state: PromptIR's tensors by PromptIR's names.

    Shape:
        - ``promptI.prompt_param`` ``(1, N, D, S, S)`` becomes ``promptI.prompts``
          ``(N, D, S, S)``; every other tensor keeps its shape.

    Returns:
        The same tensors (not copied) by this library's names.

    Example:
        >>> state = {"prompt1.prompt_param": torch.zeros(1, 5, 8, 4, 4),
        ...          "noise_level1.norm1.body.weight": torch.ones(3),
        ...          "chnl_reduce1.weight": torch.ones(1)}
        >>> {k: tuple(v.shape) for k, v in convert_promptir_state_dict(state).items()}
        {'prompt1.prompts': (5, 8, 4, 4), 'fusion1.block.norm1.weight': (3,)}
    """
    converted = {}
    for key, value in state.items():
        if UNUSED_PROMPTIR_KEYS.match(key):
            continue
        new_key = _rename(key)
        if new_key.endswith(".prompts") and value.ndim == 5 and value.shape[0] == 1:
            value = value[0]
        converted[new_key] = value
    return converted


def load_promptir_state_dict(
    model: nn.Module,
    checkpoint: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    map_location: str | torch.device = "cpu",
) -> None:
    """Load a PromptIR checkpoint (Lightning ``.ckpt``, or a bare state dict) into ``model``.

    :meth:`~contrastive_prompts.SparsePromptIR.from_promptir` builds the model and calls this.

    Args:
        model: the module to fill; every one of its tensors must come from the checkpoint.
        checkpoint: a path to a ``.ckpt`` / ``.pth`` file, or a state dict (with or without
            Lightning's ``state_dict`` wrapper and ``net.`` prefix).
        map_location: where :func:`torch.load` puts the tensors.

    Shape:
        - Every tensor must have the shape of the model's tensor it fills (after the prompt
          banks' leading singleton axis is dropped).

    Returns:
        Nothing; ``model`` is filled in place.

    Raises:
        FileNotFoundError: the file does not exist.
        InputError: missing or unexpected keys, or shapes that differ, all listed by their
            PromptIR names where they have one.

    Example:
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
    original = _read(checkpoint, map_location)
    origin = {_rename(k): k for k in original}
    state = convert_promptir_state_dict(original)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(origin.get(k, k) for k in state if k not in expected)
    mismatched = sorted(
        f"{origin.get(k, k)}: expected {tuple(expected[k].shape)}, got {tuple(v.shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches {mismatched}")
        raise InputError(
            "from_promptir: expected an official PromptIR (decoder=True) checkpoint; got "
            + "; ".join(problems)
        )
    model.load_state_dict(state)
