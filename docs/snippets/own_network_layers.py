import torch
import torch.nn.functional as F
from torch import nn

from contrastive_prompts import ContrastivePromptLoss, SparsePrompt, forward_with_negatives
from contrastive_prompts.core import PromptFusion, load_balance_loss


class PromptedNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU())
        self.prompt = SparsePrompt(dim=width, prompt_dim=8, prompt_size=8)
        self.fusion = PromptFusion(dim=width, prompt_dim=8)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # an ordinary forward
        h = self.encoder(x)
        return x + self.out(self.fusion(h, self.prompt(h)))


model, cpr = PromptedNet(), ContrastivePromptLoss()
degraded, clean = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
# the output with gradient, 2 negatives per image (the encoder runs once), the routing
output, negatives, routing = forward_with_negatives(model, degraded, num_negatives=2)
loss = F.l1_loss(output, clean) + 0.01 * cpr(output, clean, negatives)
loss = loss + 0.01 * load_balance_loss(routing[0])
loss.backward()
print(negatives.shape, routing.names)
