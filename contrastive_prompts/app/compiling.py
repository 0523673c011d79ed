"""Compiling a prompted network region by region, so that the negatives path stays compiled.

CPL's negatives watch the positive pass (which submodules finished before the first prompt layer
started) and serve what they kept to the negative pass; every prompt layer switches to negative
prompts for it. Those are Python-level mode switches around the network's submodules, and a
``torch.compile`` of the whole network would see them change every step.
[compile_regions][contrastive_prompts.app.compiling.compile_regions] compiles the network's heavy
parts instead: every largest submodule that holds no
[SparsePrompt][contrastive_prompts.SparsePrompt] (for the reference model: the encoder levels, the
latent, the fusion blocks, the decoder levels, the resampling steps and the refinement). The
positive pass, the negative passes and the backward pass run those compiled; the routing, the top-k,
the negative draw and the served encoder outputs sit between them, in eager mode, where the mode
switches live.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from .._checks import InputTypeError
from ..core import compiled_region
from ..core.prompt import SparsePrompt

__all__ = ["compile_regions", "compiled_region"]


def _regions(model: nn.Module) -> dict[str, nn.Module]:
    """The largest submodules holding no SparsePrompt, by qualified name (built-in leaves aside)."""
    holds: dict[nn.Module, bool] = {}

    def holds_prompt(module: nn.Module) -> bool:
        if module not in holds:
            holds[module] = isinstance(module, SparsePrompt) or any(
                holds_prompt(child) for child in module.children()
            )
        return holds[module]

    found: dict[str, nn.Module] = {}

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            qualified = f"{prefix}{name}"
            if isinstance(child, SparsePrompt):
                continue  # the routing and the negative draw stay eager
            if holds_prompt(child):
                walk(child, f"{qualified}.")
            elif compiled_region(child):
                continue  # compiled already
            elif next(child.children(), None) is None and type(child).__module__.startswith(
                "torch.nn."
            ):
                continue  # one built-in layer (a convolution, a shuffle) is one kernel already
            else:
                found[qualified] = child

    if not holds_prompt(model):
        return {"": model}
    walk(model, "")
    return found


def _entry(forward: Any, name: str) -> Any:
    """A function calling ``forward``, with a code object of its own.

    torch.compile keeps its graphs per code object, eight at most by default. Compiling each
    region's own ``forward`` would share that cache between the regions of one class (and, for
    torch's own modules such as ``nn.Sequential``, between all of them): a network with more
    regions than that would silently run the rest uncompiled. Each region's entry point is a
    frame of its own instead, which Dynamo compiles, inlining ``forward``.
    """

    def entry(*args: Any, **kwargs: Any) -> Any:
        return forward(*args, **kwargs)

    entry.__code__ = entry.__code__.replace(co_name=f"forward[{name}]")
    entry.__qualname__ = f"compiled forward of {name}"
    return entry


def compile_regions(model: nn.Module, **options: Any) -> list[str]:
    """Compile, in place, every largest submodule of ``model`` that holds no SparsePrompt.

    Each region's ``forward`` becomes a ``torch.compile`` of it (Inductor by default; ``options``
    go to ``torch.compile``), with a cache of graphs of its own. The prompt layers, and the glue
    code of the modules that hold them, stay in eager mode: so
    [forward_with_negatives][contrastive_prompts.forward_with_negatives] still serves the
    encoder's outputs to the negative pass, and
    [negative_prompts][contrastive_prompts.negative_prompts] and
    [record_routing][contrastive_prompts.record_routing] work as before, while the heavy work of
    the positive pass, of every negative pass and of the backward pass runs compiled. A network
    without prompt layers is compiled whole.

    Each region compiles once per input shape and gradient mode: for a training run with a
    fixed crop and batch, a handful of graphs in the first steps and none after. Shapes are
    static by default (``dynamic=False``): evaluate at other sizes with an uncompiled copy (the
    trainer validates its EMA copy, which is not compiled). The state dict and the module tree
    are unchanged; ``copy.deepcopy`` of the model gives a copy whose regions run its own weights.

    Args:
        model: any network, with or without [SparsePrompt][contrastive_prompts.SparsePrompt]
            layers.
        **options: keyword arguments of ``torch.compile`` (``backend``, ``mode``, ``dynamic``...).

    Returns:
        The qualified names of the compiled regions (``[""]`` when the whole model was).

    Raises:
        InputTypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> from contrastive_prompts import SparsePromptIR
        >>> model = SparsePromptIR("tiny")
        >>> names = compile_regions(model, backend="eager")
        >>> names[:3], "prompt1" in names
        (['encoder_level1', 'down1_2', 'encoder_level2'], False)
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"compile_regions: expected an nn.Module, got {type(model).__name__}")
    options = {"dynamic": False, **options}
    regions = _regions(model)
    for name, region in regions.items():
        # the class's forward, bound at call time to what the partial holds: copy.deepcopy of the
        # model copies the module inside the partial, so a copy runs its own weights
        compiled = torch.compile(_entry(type(region).forward, name or "model"), **options)
        region.forward = functools.partial(compiled, region)
    return list(regions)
