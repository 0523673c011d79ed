import torch
from torch import nn

from contrastive_prompts import CPLObjective, SparsePrompt, add_prompts, negative_prompts
from contrastive_prompts.core import PromptFusion

torch.manual_seed(0)

# 1. The modules, on decoder features (B, C, H, W)
features = torch.rand(2, 96, 32, 32)
prompt_layer = SparsePrompt(dim=96, prompt_dim=64, prompt_size=32, top_k=1)
fusion = PromptFusion(dim=96, prompt_dim=64)
prompt, routing = prompt_layer(features, return_routing=True)  # (2, 64, 32, 32), top-1 routing
fused = fusion(features, prompt)                               # (2, 96, 32, 32)
with negative_prompts(prompt_layer, generator=torch.Generator().manual_seed(0)):
    negative = prompt_layer(features)                          # experts it did not select

# 2. Any network: a prompt stage after its submodule "2", no change to its code
net = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.GELU(),
    nn.Conv2d(32, 32, 3, padding=1), nn.GELU(),
    nn.Conv2d(32, 3, 3, padding=1),
)
net = add_prompts(net, {"2": {"dim": 32, "prompt_size": 8}})
optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)  # after add_prompts: it adds parameters
degraded, clean = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
parts = CPLObjective(num_negatives=4)(net, degraded, clean)  # L1 + 0.01 * CPR, 4 negatives each
parts.loss.backward()
optimiser.step()
print(f"prompt {tuple(prompt.shape)}, experts {routing.indices.flatten().tolist()}")
# CPR is 0 at this first step: a new prompt stage starts as the identity, so every prompt,
# own or negative, gives the same output; training makes them differ
print(f"loss {parts.loss:.4f} = L1 {parts.l1:.4f} + 0.01 * CPR {parts.cpr:.4f}")
