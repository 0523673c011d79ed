import tempfile

import torch
from torch import nn

from contrastive_prompts import add_prompts
from contrastive_prompts.app.data import SyntheticDataset
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.train import Trainer

model = add_prompts(
    nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.GELU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.GELU(),
        nn.Conv2d(16, 3, 3, padding=1),
    ),
    {"3": {"dim": 16, "prompt_size": 8}},
)  # fmt: skip
photos = [torch.rand(3, 48, 48) for _ in range(4)]  # your clean images, or folders of them
config = TrainConfig(steps=4, batch_size=2, crop=32, out_dir=tempfile.mkdtemp())
trainer = Trainer(config, model=model, train_data=SyntheticDataset(photos, crop_size=32))
history = trainer.fit()  # EMA, schedule, clipping, checkpoints, exact resume, plots
print(len(history), sorted(p.name for p in trainer.out_dir.iterdir()))
