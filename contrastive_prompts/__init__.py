"""Contrastive Prompt Learning for all-in-one image restoration, in PyTorch.

The two drop-in modules of CPL (arXiv:2504.09973):
[SparsePrompt][contrastive_prompts.SparsePrompt], a degradation prompt built from the top-k
experts of a learned prompt bank, and
[ContrastivePromptLoss][contrastive_prompts.ContrastivePromptLoss], which pulls the output under
the network's own prompt to the clean image and pushes it away from outputs under mismatched
prompts.
"""

from . import data, degradations, metrics
from ._checks import InputError, InputTypeError
from .compiling import compile_regions
from .effect import ExpertUse, PromptEffect, prompt_effect
from .export import export_onnx, export_program
from .features import FilterFeatures, PixelFeatures, VGG16Features
from .loss import ContrastivePromptLoss, contrastive_prompt_loss
from .metrics import evaluate, psnr, ssim
from .model import MODEL_PRESETS, ModelConfig, SparsePromptIR, tiled
from .negatives import ModelOutput, NegativesReuse, forward_with_negatives, negatives_reuse
from .objective import CPLObjective, ObjectiveOutput
from .padding import pad_to_multiple
from .prompt import (
    PromptFusion,
    Routing,
    RoutingLog,
    SparsePrompt,
    load_balance_loss,
    negative_prompts,
    negative_route,
    prompt_layers,
    record_routing,
    routing_statistics,
    topk_route,
)
from .restormer import TransformerBlock
from .stages import PromptStage, add_prompts, remove_prompts

__version__ = "0.1.0"


__all__ = [
    "MODEL_PRESETS",
    "CPLObjective",
    "ContrastivePromptLoss",
    "ExpertUse",
    "FilterFeatures",
    "InputError",
    "InputTypeError",
    "ModelConfig",
    "ModelOutput",
    "NegativesReuse",
    "ObjectiveOutput",
    "PixelFeatures",
    "PromptEffect",
    "PromptFusion",
    "PromptStage",
    "Routing",
    "RoutingLog",
    "SparsePrompt",
    "SparsePromptIR",
    "TransformerBlock",
    "VGG16Features",
    "__version__",
    "add_prompts",
    "compile_regions",
    "contrastive_prompt_loss",
    "data",
    "degradations",
    "evaluate",
    "export_onnx",
    "export_program",
    "forward_with_negatives",
    "load_balance_loss",
    "metrics",
    "negative_prompts",
    "negative_route",
    "negatives_reuse",
    "pad_to_multiple",
    "prompt_effect",
    "prompt_layers",
    "psnr",
    "record_routing",
    "remove_prompts",
    "routing_statistics",
    "ssim",
    "tiled",
    "topk_route",
]
