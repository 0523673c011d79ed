"""The core: the drop-in modules of Contrastive Prompt Learning, for any network.

The prompt layer and its routing, the contrastive loss and its feature spaces, the negatives,
prompt stages added to an existing network, new experts for a new degradation, and the objective
that combines them; the transformer block the prompt fusion is built of. It needs torch, einops
and kornia, and nothing else of the package; it reads and writes no file (its modules take
tensors: the application reads files).
"""

from ._state import compiled_region
from .features import VGG16_WEIGHTS_URL, FilterFeatures, PixelFeatures, VGG16Features
from .growth import NewExperts, add_experts, only_new_experts
from .loss import MODES, ContrastivePromptLoss, contrastive_prompt_loss
from .negatives import ModelOutput, NegativesReuse, forward_with_negatives, negatives_reuse
from .objective import CPLObjective, ObjectiveOutput
from .prompt import (
    PromptFusion,
    RoutingLog,
    SparsePrompt,
    fixed_experts,
    fixed_routing,
    negative_prompts,
    prompt_layers,
    record_routing,
)
from .restormer import TransformerBlock
from .routing import (
    Routing,
    Specialisation,
    label_routing_loss,
    load_balance_loss,
    negative_route,
    pooled_routing,
    routing_statistics,
    specialisation,
    topk_route,
)
from .stages import STAGE_NAME, PromptStage, add_prompts, remove_prompts

__all__ = [
    "MODES",
    "STAGE_NAME",
    "VGG16_WEIGHTS_URL",
    "CPLObjective",
    "ContrastivePromptLoss",
    "FilterFeatures",
    "ModelOutput",
    "NegativesReuse",
    "NewExperts",
    "ObjectiveOutput",
    "PixelFeatures",
    "PromptFusion",
    "PromptStage",
    "Routing",
    "RoutingLog",
    "SparsePrompt",
    "Specialisation",
    "TransformerBlock",
    "VGG16Features",
    "add_experts",
    "add_prompts",
    "compiled_region",
    "contrastive_prompt_loss",
    "fixed_experts",
    "fixed_routing",
    "forward_with_negatives",
    "label_routing_loss",
    "load_balance_loss",
    "negative_prompts",
    "negative_route",
    "negatives_reuse",
    "only_new_experts",
    "pooled_routing",
    "prompt_layers",
    "record_routing",
    "remove_prompts",
    "routing_statistics",
    "specialisation",
    "topk_route",
]
