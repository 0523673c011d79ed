"""Contrastive Prompt Learning for all-in-one image restoration, in PyTorch.

The two drop-in modules of CPL (arXiv:2504.09973):
[SparsePrompt][contrastive_prompts.SparsePrompt], a degradation prompt built from the top-k
experts of a learned prompt bank, and
[ContrastivePromptLoss][contrastive_prompts.ContrastivePromptLoss], which pulls the output under
the network's own prompt to the clean image and pushes it away from outputs under mismatched
prompts.

The package has three layers, each importing only from those below it:

- ``contrastive_prompts.core``: the prompt layer and its routing, the loss and its feature
  spaces, the negatives, prompt stages for an existing network, and the objective. It needs
  torch, einops and kornia, nothing else of the package.
- ``contrastive_prompts.reference``: the reference network, PromptIR with sparse prompts, with
  its padding and tiling. It knows no file format.
- ``contrastive_prompts.app``: the application: configuration, trainer, checkpoints and their
  formats, command line, data, degradations, metrics, export, compiling, plots.

This face holds what a user of the modules needs; everything else is imported from the package
or module that owns it. ``import contrastive_prompts`` loads the core; the reference model loads
when ``SparsePromptIR`` is first used.
"""

from typing import TYPE_CHECKING, Any

from ._checks import InputError, InputTypeError
from .core import (
    ContrastivePromptLoss,
    CPLObjective,
    PromptStage,
    SparsePrompt,
    add_prompts,
    forward_with_negatives,
    negative_prompts,
    record_routing,
    remove_prompts,
)

if TYPE_CHECKING:
    from .reference import SparsePromptIR

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the reference model loads on first use, so that importing a core module never brings it
    if name == "SparsePromptIR":
        from .reference import SparsePromptIR

        return SparsePromptIR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CPLObjective",
    "ContrastivePromptLoss",
    "InputError",
    "InputTypeError",
    "PromptStage",
    "SparsePrompt",
    "SparsePromptIR",
    "__version__",
    "add_prompts",
    "forward_with_negatives",
    "negative_prompts",
    "record_routing",
    "remove_prompts",
]
