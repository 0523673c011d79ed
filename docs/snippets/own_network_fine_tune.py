import copy

import torch
from torch import nn

from contrastive_prompts import CPLObjective, add_prompts, remove_prompts
from contrastive_prompts.app.effect import prompt_effect


def plain_network() -> nn.Module:  # your network, as it was trained: no prompts in it
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.GELU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.GELU(),
        nn.Conv2d(16, 3, 3, padding=1),
    )  # fmt: skip


weights = plain_network().state_dict()  # say, torch.load("plain.pt", weights_only=True)
degraded, clean = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
labels = torch.tensor([0, 1] * 4)  # the degradation of each image

model = plain_network()
model.load_state_dict(weights)  # strict, before or after add_prompts: the keys stay
with torch.no_grad():
    before = model(degraded)
model = add_prompts(model, {"2": {"prompt_size": 8}}, example_input=degraded[:1])
with torch.no_grad():
    assert torch.equal(model(degraded), before)  # the new stage starts as the identity

objective = CPLObjective(weight=0.1, num_negatives=1, num_labels=2)
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)  # after add_prompts
for _ in range(2):  # your fine-tuning loop
    parts = objective(model, degraded, clean, labels)
    optimiser.zero_grad()
    parts.loss.backward()
    optimiser.step()

effect = prompt_effect(model, degraded, clean, labels, names=["haze", "low light"])
print(effect)  # own against negative prompts per degradation: does the prompt matter?

plain = remove_prompts(copy.deepcopy(model)).state_dict()  # the weights, without the stages
plain_network().load_state_dict(plain)  # strict: loads where the plain network is used
