import torch
from torch import nn

from contrastive_prompts import CPLObjective, add_prompts


class UNet(nn.Module):  # any network: nothing in it knows about prompts
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU())
        self.decoder = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.decoder(self.encoder(x)))


model = UNet()
keys = set(model.state_dict())
example = torch.rand(1, 3, 32, 32)  # one run on it finds each stage's dim (16 here)
model = add_prompts(model, {"decoder": {"prompt_size": 8}}, example_input=example)
assert keys <= set(model.state_dict())  # every key kept: a plain checkpoint still loads
assert model.decoder[-1] is model.decoder.prompt_stage  # a Sequential runs it last

objective = CPLObjective(num_negatives=2)  # L1 + 0.01 * CPR, negatives at decoder cost
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)  # after add_prompts
degraded, clean = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
parts = objective(model, degraded, clean)
optimiser.zero_grad()
parts.loss.backward()
optimiser.step()
print(parts.stages, parts.l1.item(), parts.cpr.item())
