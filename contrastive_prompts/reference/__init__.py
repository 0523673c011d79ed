"""The reference network: PromptIR with sparse prompts, its padding and its tiling.

It builds on the core (the prompt layers, the fusion blocks) and knows no file format: the
application's ``checkpoints`` module reads and writes its weights.
"""

from .model import (
    MODEL_PRESETS,
    ROUTINGS,
    ModelConfig,
    SparsePromptIR,
    image_routing,
    restore_tile,
    tiled,
)
from .padding import crop_to_multiple, pad_to_multiple

__all__ = [
    "MODEL_PRESETS",
    "ROUTINGS",
    "ModelConfig",
    "SparsePromptIR",
    "crop_to_multiple",
    "image_routing",
    "pad_to_multiple",
    "restore_tile",
    "tiled",
]
