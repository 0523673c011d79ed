"""The reference network: PromptIR with sparse prompts, its padding and its tiling; and a gated
set of networks, one per group of degradations, for a model taught new ones by a copy of itself.

It builds on the core (the prompt layers, the fusion blocks) and knows no file format: the
application's ``checkpoints`` module reads and writes its weights.
"""

from .gated import GATE_HIDDEN, GATE_TILE, GatedRestorer, ImageGate, tile_statistics
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
    "GATE_HIDDEN",
    "GATE_TILE",
    "MODEL_PRESETS",
    "ROUTINGS",
    "GatedRestorer",
    "ImageGate",
    "ModelConfig",
    "SparsePromptIR",
    "crop_to_multiple",
    "image_routing",
    "pad_to_multiple",
    "restore_tile",
    "tile_statistics",
    "tiled",
]
