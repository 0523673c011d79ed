"""Prompting an existing network without editing its code.

[add_prompts][contrastive_prompts.add_prompts] wraps named submodules of any network in a
[PromptStage][contrastive_prompts.PromptStage]: the submodule's output goes through a
[SparsePrompt][contrastive_prompts.SparsePrompt] and a
[PromptFusion][contrastive_prompts.PromptFusion] and is added back, so the network gains prompt
layers that [CPLObjective][contrastive_prompts.CPLObjective] and the trainer use as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import InputError, InputTypeError, check_shape
from .prompt import PromptFusion, SparsePrompt

__all__ = ["PromptStage", "add_prompts"]

_PROMPT_OPTIONS = ("prompt_dim", "prompt_size", "num_prompts", "top_k", "renormalize")
_FUSION_OPTIONS = ("num_heads", "ffn_expansion_factor")


class PromptStage(nn.Module):
    """A module followed by a prompt: ``h + fusion(h, prompt(h))`` where ``h = module(...)``.

    The fusion's output projection starts at zero, so a new stage computes exactly what the
    wrapped module did: prompting a trained network does not disturb it before training starts,
    and the prompt path grows from there.

    Args:
        module: the wrapped module; called with whatever the stage is called with.
        dim: channels of the module's output.
        prompt_dim: channels of the prompt (``dim // 2`` by default, at least 1).
        prompt_size: spatial size of each expert prompt.
        num_prompts: experts in the bank.
        top_k: experts per sample (1 for CPL).
        renormalize: rescale the kept routing weights to sum to 1.
        num_heads: attention heads of the fusion block (must divide ``dim + prompt_dim``).
        ffn_expansion_factor: feed-forward width of the fusion block.
        device: where to allocate the new parameters; by default the wrapped module's device.
        dtype: dtype of the new parameters; by default the wrapped module's dtype.

    Shape:
        - module output ``h``: ``(B, dim, H, W)``; output: the same.

    Examples:
        >>> stage = PromptStage(torch.nn.Conv2d(3, 8, 3, padding=1), dim=8, prompt_size=4)
        >>> x = torch.rand(2, 3, 10, 10)
        >>> torch.equal(stage(x), stage.module(x))  # the identity until trained
        True
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        dim: int,
        prompt_dim: int | None = None,
        prompt_size: int = 16,
        num_prompts: int = 5,
        top_k: int = 1,
        renormalize: bool = False,
        num_heads: int = 1,
        ffn_expansion_factor: float = 2.66,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise InputTypeError(
                f"PromptStage: expected module to be an nn.Module, got {type(module).__name__}"
            )
        prompt_dim = max(1, dim // 2) if prompt_dim is None else prompt_dim
        width = dim + prompt_dim
        if not isinstance(num_heads, int) or num_heads < 1 or width % num_heads:
            raise InputError(
                f"PromptStage: expected num_heads to divide dim + prompt_dim = {width}, "
                f"got {num_heads}"
            )
        self.module = module
        reference = next(module.parameters(), None)  # follow the wrapped module by default
        factory: dict[str, Any] = {
            "device": device if device is not None or reference is None else reference.device,
            "dtype": dtype if dtype is not None or reference is None else reference.dtype,
        }
        self.prompt = SparsePrompt(
            dim=dim,
            prompt_dim=prompt_dim,
            prompt_size=prompt_size,
            num_prompts=num_prompts,
            top_k=top_k,
            renormalize=renormalize,
            **factory,
        )
        self.fusion = PromptFusion(
            dim=dim,
            prompt_dim=prompt_dim,
            num_heads=num_heads,
            ffn_expansion_factor=ffn_expansion_factor,
            **factory,
        )
        nn.init.zeros_(self.fusion.proj.weight)

    def extra_repr(self) -> str:
        return f"dim={self.prompt.dim}, prompt_dim={self.prompt.prompt_dim}"

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """``h + fusion(h, prompt(h))`` where ``h = module(*args, **kwargs)``.

        Args:
            *args: the wrapped module's positional arguments.
            **kwargs: the wrapped module's keyword arguments.

        Returns:
            ``(B, dim, H, W)``, the shape of the wrapped module's output.
        """
        h = self.module(*args, **kwargs)
        check_shape(
            "PromptStage", "the wrapped module's output", h, ("B", self.prompt.dim, "H", "W")
        )
        fused: Tensor = h + self.fusion(h, self.prompt(h))
        return fused


def add_prompts(model: nn.Module, stages: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Give the named submodules of ``model`` a prompt stage each, in place.

    Each named submodule is replaced by a [PromptStage][contrastive_prompts.PromptStage]
    wrapping it: its output ``h`` becomes ``h + fusion(h, prompt(h))``, with a
    [SparsePrompt][contrastive_prompts.SparsePrompt] routed on ``h``. New stages start as the
    identity, so a trained network computes what it did until training moves them. The model
    then works with everything in the library: [CPLObjective][contrastive_prompts.CPLObjective],
    [negative_prompts][contrastive_prompts.negative_prompts],
    [record_routing][contrastive_prompts.record_routing] and
    [Trainer][contrastive_prompts.train.Trainer] (``Trainer(config, model=model)``). Put the
    stages late in the network (decoder side): the negatives reuse everything computed before
    the first prompt layer. Build the optimiser after this call: it adds parameters.

    Args:
        model: any network.
        stages: ``{qualified submodule name: options}``, names as in ``model.named_modules()``
            (``"decoder.1"``). Options are [PromptStage][contrastive_prompts.PromptStage]'s:
            ``dim`` (the submodule's output channels, required), ``prompt_dim``,
            ``prompt_size``, ``num_prompts``, ``top_k``, ``renormalize``, ``num_heads``,
            ``ffn_expansion_factor``.

    Returns:
        ``model`` itself, changed in place.

    Raises:
        InputError: a name that is not a submodule (or names the model itself), a submodule
            named twice or inside another named one, missing ``dim``, or an unknown option.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.GELU(),
        ...                           torch.nn.Conv2d(16, 3, 3, padding=1))
        >>> net = add_prompts(net, {"1": {"dim": 16, "prompt_size": 8}})
        >>> type(net[1]).__name__, net(torch.rand(2, 3, 12, 12)).shape
        ('PromptStage', torch.Size([2, 3, 12, 12]))
    """
    where = "add_prompts"
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"{where}: expected model to be an nn.Module, got {type(model).__name__}"
        )
    if not isinstance(stages, Mapping) or not stages:
        raise InputError(f"{where}: expected a non-empty mapping of submodule names to options")
    known = dict(model.named_modules())
    allowed = {"dim", *_PROMPT_OPTIONS, *_FUSION_OPTIONS}
    names = list(stages)
    for name in names:
        if name not in known or name == "":
            close = [k for k in known if k and (k.startswith(name) or name.startswith(k))][:8]
            raise InputError(
                f"{where}: expected names of submodules of {type(model).__name__}, got {name!r}"
                + (f" (similar: {close})" if close else "")
            )
        nested = [other for other in names if other != name and name.startswith(other + ".")]
        if nested:
            raise InputError(f"{where}: expected separate submodules, got {name!r} inside {nested}")
        options = stages[name]
        if not isinstance(options, Mapping) or "dim" not in options:
            raise InputError(
                f"{where}: expected options with 'dim' (the output channels of {name!r}), "
                f"got {options!r}"
            )
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputError(f"{where}: expected options among {sorted(allowed)}, got {unknown}")
    built = {name: PromptStage(known[name], **dict(stages[name])) for name in names}
    for name, stage in built.items():  # the model changes only once every stage is built
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, stage)
    return model
