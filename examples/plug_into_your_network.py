"""Add CPL's modules to your own network: a small U-Net that is not PromptIR.

The network gets a ``SparsePrompt`` + ``PromptFusion`` pair at the bottleneck and at the first
decoder level. Training uses L1 plus ``ContrastivePromptLoss``, whose negatives are the same
network's outputs on the same input under negative prompts (computed without gradient, and only
from the first prompt stage on: the encoder does not depend on the prompt).

    python examples/plug_into_your_network.py [--steps 60] [--size 48]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from contrastive_prompts import (
    ContrastivePromptLoss,
    PromptFusion,
    SparsePrompt,
    routing_statistics,
)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1)
    )


class PromptedUNet(nn.Module):
    """A two-level U-Net with a prompt stage at the bottleneck and at the decoder."""

    def __init__(self, width: int = 24, num_prompts: int = 5, top_k: int = 1) -> None:
        super().__init__()
        self.enc1 = conv_block(3, width)
        self.enc2 = conv_block(width, 2 * width)
        self.prompt_mid = SparsePrompt(
            dim=2 * width, prompt_dim=width, prompt_size=8, num_prompts=num_prompts, top_k=top_k
        )
        self.fuse_mid = PromptFusion(dim=2 * width, prompt_dim=width, num_heads=2)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = conv_block(2 * width, width)
        self.prompt_dec = SparsePrompt(
            dim=width, prompt_dim=width // 2, prompt_size=16, num_prompts=num_prompts, top_k=top_k
        )
        self.fuse_dec = PromptFusion(dim=width, prompt_dim=width // 2, num_heads=2)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.enc1(x)
        return skip, self.enc2(F.avg_pool2d(skip, 2))

    def decode(self, x, skip, mid, *, negative=False, generator=None):
        def prompt(layer, features):
            if negative:
                return layer.negative(features, generator=generator), None
            return layer(features, return_routing=True)

        p, routing = prompt(self.prompt_mid, mid)
        mid = self.fuse_mid(mid, p)
        h = self.dec1(torch.cat([self.up(mid), skip], dim=1))
        p, _ = prompt(self.prompt_dec, h)
        return x + self.out(self.fuse_dec(h, p)), routing

    def forward(self, x):
        skip, mid = self.encode(x)
        return self.decode(x, skip, mid)[0]

    def forward_with_negatives(self, x, num_negatives, generator=None):
        skip, mid = self.encode(x)
        out, routing = self.decode(x, skip, mid)
        with torch.no_grad():  # negatives: decoder only, all M at once, no autograd graph
            rep = [t.repeat_interleave(num_negatives, 0) for t in (x, skip, mid)]
            neg, _ = self.decode(*rep, negative=True, generator=generator)
        return out, neg.view(x.shape[0], num_negatives, *x.shape[1:]), routing


def degrade(clean: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label 0: Gaussian noise (sigma 25/255); label 1: uniform haze (t = 0.6, A = 0.9)."""
    noise = torch.randn(clean.shape, generator=generator) * 25 / 255
    noisy = clean + noise
    hazy = clean * 0.6 + 0.9 * 0.4
    return torch.where(labels.view(-1, 1, 1, 1) == 0, noisy, hazy).clamp(0, 1)


def smooth_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random smooth colour images (upsampled low-resolution noise): needs no data files."""
    low = torch.rand(n, 3, size // 8, size // 8, generator=generator)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=2)
    parser.add_argument("--weight", type=float, default=0.01, help="lambda of the CPR term")
    args = parser.parse_args()

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = PromptedUNet()
    cpr = ContrastivePromptLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    print(f"PromptedUNet: {sum(p.numel() for p in model.parameters()):,} parameters")

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        clean = smooth_images(args.batch, args.size, generator)
        labels = torch.arange(args.batch) % 2
        degraded = degrade(clean, labels, generator)
        out, negatives, routing = model.forward_with_negatives(degraded, args.negatives, generator)
        l1 = F.l1_loss(out, clean)
        reg = cpr(out, clean, negatives)
        loss = l1 + args.weight * reg
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == 1:
            counts = routing_statistics(routing, labels=labels, num_labels=2).tolist()
            print(
                f"step {step:3d}  loss {loss.item():.4f}  l1 {l1.item():.4f}  cpr {reg.item():.4f}"
                f"  expert use noise {counts[0]} haze {counts[1]}"
            )
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")

    model.eval()
    with torch.no_grad():
        clean = smooth_images(4, args.size, torch.Generator().manual_seed(123))
        labels = torch.tensor([0, 1, 0, 1])
        degraded = degrade(clean, labels, torch.Generator().manual_seed(124))
        out, negatives, _ = model.forward_with_negatives(
            degraded, 1, torch.Generator().manual_seed(1)
        )

    def psnr(image: torch.Tensor) -> float:
        mse = F.mse_loss(image, clean, reduction="none").mean((1, 2, 3))
        return float((-10 * torch.log10(mse)).mean())

    print(
        f"held-out PSNR: degraded {psnr(degraded):.2f} dB, own prompt {psnr(out):.2f} dB, "
        f"negative prompt {psnr(negatives[:, 0]):.2f} dB"
    )


if __name__ == "__main__":
    main()
