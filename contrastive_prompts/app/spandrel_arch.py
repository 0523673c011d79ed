"""The reference model as a spandrel architecture, for chaiNNer, ComfyUI and spandrel's users.

[spandrel](https://github.com/chaiNNer-org/spandrel) loads restoration models by recognising
their state dicts: ``spandrel.ModelLoader().load_from_file(path)`` reads a file's tensors, asks
each architecture of its registry in turn whether it knows their names, and the first that does
builds the network with the sizes it reads from the tensors' shapes.
[install][contrastive_prompts.app.spandrel_arch.install] adds
[SparsePromptIRArch][contrastive_prompts.app.spandrel_arch.SparsePromptIRArch] to that registry,
ahead of spandrel's Restormer (PromptIR's names include every Restormer name). It recognises:

- this library's weights: a ``.safetensors`` file from ``contrastive-prompts export`` or the
  ``model.safetensors`` of a model folder (a training checkpoint would give spandrel its raw
  weights, not the EMA ones: export it first); spandrel reads tensors only, not the file's
  metadata, so the experts kept per image (not in any shape) are the library's default, 1 (see
  the ``top_k`` argument of [install][contrastive_prompts.app.spandrel_arch.install]);
- official PromptIR checkpoints (Lightning ``.ckpt``, keys prefixed ``net.``, or a bare state
  dict), told apart by the six unused convolutions every PromptIR model holds: run as PromptIR
  runs them, with every expert;
- CPL's released (BasicSR) checkpoints: PromptIR's names without those six convolutions, run
  with the top-1 expert as CPL's inference code does.

The descriptor's model is this library's
[SparsePromptIR][contrastive_prompts.SparsePromptIR]; it pads any size itself, so spandrel adds
no padding. Tiling is discouraged: the prompts are chosen from the whole image, and a tile may
choose other experts than the image would.

Needs ``spandrel`` (``pip install spandrel``, the ``spandrel`` extra), which brings torchvision:
install the torchvision release made for your torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from spandrel import (
        MAIN_REGISTRY,
        Architecture,
        ArchRegistry,
        ArchSupport,
        ImageModelDescriptor,
        ModelTiling,
    )
except ImportError as error:  # pragma: no cover - the message is the behaviour
    raise ModuleNotFoundError(
        "contrastive_prompts.app.spandrel_arch needs spandrel: pip install spandrel (the "
        "spandrel extra), with the torchvision release made for your torch"
    ) from error

from .._checks import check_int_range
from ..reference.model import SparsePromptIR
from .checkpoints import (
    UNUSED_PROMPTIR_KEYS,
    build_checked_model,
    convert_promptir_state_dict,
    model_config_of,
)

__all__ = ["ARCH_ID", "SparsePromptIRArch", "install"]

ARCH_ID = "SparsePromptIR"
"""The id of the architecture in spandrel's registry."""

# names every reference model holds, in this library's and in PromptIR's naming (a model of this
# library also holds a first prompt stage, fusion1, with or without prompts)
_OURS = ("patch_embed.weight", "output.weight", "reduce_chan_level3.weight")
_PROMPTIR = (
    "patch_embed.proj.weight",
    "output.weight",
    "prompt1.prompt_param",
    "prompt1.linear_layer.weight",
    "prompt3.prompt_param",
    "noise_level1.norm1.body.weight",
    "reduce_noise_level1.weight",
    "noise_level3.attn.temperature",
)


def _unprefixed(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict without Lightning's ``net.`` prefix, when every key has it."""
    if state and all(k.startswith("net.") for k in state):
        return {k[len("net.") :]: v for k, v in state.items()}
    return state


def _is_promptir(state: Mapping[str, Any]) -> bool:
    return all(key in state for key in _PROMPTIR)


def _is_ours(state: Mapping[str, Any]) -> bool:
    return all(key in state for key in _OURS) and any(k.startswith("fusion1.") for k in state)


class SparsePromptIRArch(Architecture[SparsePromptIR]):
    """spandrel's view of [SparsePromptIR][contrastive_prompts.SparsePromptIR]: which state
    dicts it is, and how to build it from one.

    Args:
        top_k: experts kept per image for this library's weights, which do not say (spandrel
            reads no metadata); PromptIR's are run with all of them, CPL's with one.
    """

    def __init__(self, top_k: int = 1) -> None:
        check_int_range("SparsePromptIRArch", "top_k", top_k, 1)
        self.top_k = top_k
        super().__init__(
            id=ARCH_ID,
            name="SparsePromptIR (CPL, PromptIR)",
            detect=lambda state: _is_ours(_unprefixed(state)) or _is_promptir(_unprefixed(state)),
        )

    def load(self, state_dict: Mapping[str, Any]) -> ImageModelDescriptor[SparsePromptIR]:
        """The model of a state dict ``detect`` recognised, with its sizes read from its shapes.

        Raises:
            CheckpointError: the tensors do not fit one reference model.
        """
        state = dict(_unprefixed(state_dict))
        if _is_promptir(state):
            promptir = any(UNUSED_PROMPTIR_KEYS.match(k) for k in state)
            state = convert_promptir_state_dict(state)
            top_k = int(state["prompt1.prompts"].shape[0]) if promptir else 1
            source = "PromptIR" if promptir else "CPL"
        else:
            top_k, source = self.top_k, "contrastive_prompts"
        config = model_config_of(state, top_k=top_k)
        model = build_checked_model(f"spandrel ({source} weights)", config, state)
        prompts = f"top-{config['top_k']}" if config["use_prompts"] else "no prompts"
        return ImageModelDescriptor(
            model,
            model.state_dict(),
            architecture=self,
            purpose="Restoration",
            tags=[f"{config['dim']}dim", prompts, source],
            supports_half=False,
            supports_bfloat16=True,
            scale=1,
            input_channels=3,
            output_channels=3,
            tiling=ModelTiling.DISCOURAGED,
        )


def install(registry: ArchRegistry | None = None, *, top_k: int = 1) -> bool:
    """Add the reference model to spandrel's registry (the main one by default), ahead of
    Restormer; nothing changes if an architecture of its id is there already.

    Call it once, before loading: ``ModelLoader().load_from_file(path)`` then recognises this
    library's weights, official PromptIR checkpoints and CPL's released ones.

    Args:
        registry: the registry to add to; spandrel's ``MAIN_REGISTRY`` by default, the one
            ``ModelLoader()`` uses.
        top_k: experts kept per image for this library's weights (their files do not say).

    Returns:
        ``True`` if it was added, ``False`` if the registry held it already.

    Examples:
        >>> from spandrel import ModelLoader  # doctest: +SKIP
        >>> install()  # doctest: +SKIP
        True
        >>> ModelLoader().load_from_file("mine.safetensors").architecture.id  # doctest: +SKIP
        'SparsePromptIR'
    """
    target = MAIN_REGISTRY if registry is None else registry
    support = ArchSupport.from_architecture(SparsePromptIRArch(top_k), before=("Restormer",))
    return bool(target.add(support, ignore_duplicates=True))
