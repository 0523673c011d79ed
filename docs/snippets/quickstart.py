import torch
from contrastive_prompts import ContrastivePromptLoss, PromptFusion, SparsePrompt

features = torch.rand(2, 96, 32, 32)                      # (B, C, H, W) decoder features
prompt_layer = SparsePrompt(dim=96, prompt_dim=64, prompt_size=32, top_k=1)
fusion = PromptFusion(dim=96, prompt_dim=64)

prompt, routing = prompt_layer(features, return_routing=True)  # (2, 64, 32, 32), top-1 routing
fused = fusion(features, prompt)                               # (2, 96, 32, 32)
negative = prompt_layer.negative(features, generator=torch.Generator().manual_seed(0))

# anchor: output under the own prompt; negatives: outputs under negative prompts (B, M, 3, H, W)
anchor, clean = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
negatives = torch.rand(2, 4, 3, 64, 64)
loss = torch.nn.functional.l1_loss(anchor, clean) + 0.01 * ContrastivePromptLoss()(anchor, clean, negatives)
print(prompt.shape, routing.indices.tolist(), fused.shape, negative.shape, float(loss) > 0)
