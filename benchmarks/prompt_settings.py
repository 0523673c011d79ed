"""Which CPL settings make the prompt matter in networks that ``add_prompts`` prompts.

Three small restoration networks of different styles, none of them ours, each given prompt
stages on its decoder blocks by ``add_prompts``:

- ``nafnet``: a gated U-Net in NAFNet's style: LayerNorm over channels, SimpleGate, simplified
  channel attention, pixel-unshuffle down- and pixel-shuffle up-sampling;
- ``attention``: a U-Net whose bottleneck and first decoder block attend over tokens with
  ``nn.MultiheadAttention`` (pre-norm transformer blocks);
- ``resnet_bn``: a U-Net with a ResNet encoder (basic blocks, batch norm, strided convs) and
  conv-BN-ReLU decoder blocks.

Each trains from scratch on procedural images (smooth colour fields with flat rectangles, drawn
from a seeded ``torch.Generator``: no files) under one of two degradation pairs, haze + low
light and noise + rain, for every seed of ``--seeds``, once per setting. Settings vary one factor
at a time from ``base``: the library's defaults (CPR weight 0.01, negatives drawn without
labels, no balance term, 5 experts per stage with top-1 routing, a stage on every decoder
block) except one negative per image instead of 4, which makes a step a third cheaper; the
library's 4 is the variant ``negatives=4``. The factors: the CPR weight (0 is L1 alone), the
number of negatives, label-aware negatives, the balance weight, the experts per stage, where
the stages go (last decoder block only) and, on ``resnet_bn`` only, whether the negatives
update batch norm's running statistics. ``weight=1`` and ``top_k=2`` run only when named in
``--settings``.

Batch norm and the negatives. The library leaves the running statistics as the positive pass
left them (the negative rows do not move them). The other behaviour, ``bn_negatives=update``,
is emulated: after each step, one more pass without gradient, in train mode, over the step's
``B * M`` negative rows (the degraded batch repeated ``M`` times) under ``negative_prompts``,
in which the batch norms that run before the first prompt layer have momentum 0 (the library
serves their outputs to the negatives rather than running them) and the others update their
statistics from the negative rows. Whatever the installed library does, each batch norm that
runs in train mode without gradient outside that extra pass has momentum 0, so ``keep`` means
keep under any version; the JSON records what the library did on its own
(``library_keeps_bn_statistics``).

Every run is scored with ``prompt_effect`` (own prompts against one negative prompt per image)
on two streams of held-out images, drawn from random streams that training never draws from:
the settings are chosen on ``selection`` and reported on ``report``. Per setting, network and
pair: the mean and the spread (sample standard deviation) over seeds of the own-prompt PSNR and
of the cost of a negative prompt (own minus negative PSNR), and the paired difference of the
own-prompt PSNR against CPR weight 0 (same network, pair and seed). A cell passes when the cost
exceeds its spread (and ``--min-cost``, 0 dB by default) and the own-prompt PSNR is not below
weight 0's by more than the spread of that difference. For each factor, a level replaces
``base`` only when it passes in more cells on the selection stream (among such levels, the
larger mean cost wins); ``best_setting`` applies the same rule to all settings.
``--from-json`` summarises the runs of an earlier result again (another ``--min-cost``, say)
without training. Read a cost beside weight 0's: with top-1 routing an expert that no image
selects gets no gradient and keeps its random initial prompt, so a negative prompt can cost
several dB under L1 alone.

``benchmarks/results/prompt_settings.json`` is the run below: 100 runs of 80 steps (batch 8,
32x32 crops) took 48 minutes on one core of a 2-core CPU shared with other work: 12-35 s of
training per run (28-56 s with 4 negatives) once the other work eased, up to 80 s before.

    python benchmarks/prompt_settings.py --steps 80 --seeds 0 1 \\
        --json benchmarks/results/prompt_settings.json
    python benchmarks/prompt_settings.py --from-json benchmarks/results/prompt_settings.json \\
        --min-cost 0.1

``benchmarks/results/prompt_settings_200_steps.json`` follows up on haze + low light with 200
steps, for the CPR weight and the number of negatives (24 runs, 21 minutes):

    python benchmarks/prompt_settings.py --steps 200 --pairs haze+low_light \\
        --settings base weight=0.1 negatives=4 \\
        --json benchmarks/results/prompt_settings_200_steps.json
    python benchmarks/prompt_settings.py --quick --json quick.json   # a tiny run

The last line printed is the JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_prompts import CPLObjective, SparsePrompt, add_prompts, negative_prompts
from contrastive_prompts.app.degradations import (
    DegradationMix,
    GaussianNoise,
    Haze,
    LowLight,
    RainStreaks,
)
from contrastive_prompts.app.effect import prompt_effect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import example_module

# the plug-in example's convolution block and batches of procedural images, not copies
conv_block = example_module().conv_block
make_batch = example_module().make_batch

# ----------------------------------------------------------------------------------------------
# Three networks that know nothing about prompts


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel, as NAFNet normalises."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Norm, 1x1 expand, depthwise 3x3, SimpleGate, channel attention, 1x1; then a gated FFN."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
        self.expand = nn.Conv2d(c, 2 * c, 1)
        self.depthwise = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.gate = SimpleGate()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.project = nn.Conv2d(c, c, 1)
        self.ffn = nn.Sequential(nn.Conv2d(c, 2 * c, 1), SimpleGate(), nn.Conv2d(c, c, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.gate(self.depthwise(self.expand(self.norm1(x))))
        h = self.project(h * self.attention(h))
        x = x + self.beta * h
        return x + self.gamma * self.ffn(self.norm2(x))


class NAFUNet(nn.Module):
    """Three levels (``width``, 2x, 4x), NAF blocks, pixel-(un)shuffle, additive skips."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        c = width
        self.intro = nn.Conv2d(3, c, 3, padding=1)
        self.encoders = nn.ModuleList([NAFBlock(c), NAFBlock(2 * c)])
        self.downs = nn.ModuleList(
            [
                nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * c, 2 * c, 1)),
                nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(8 * c, 4 * c, 1)),
            ]
        )
        self.middle = nn.Sequential(NAFBlock(4 * c), NAFBlock(4 * c))
        self.ups = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(4 * c, 8 * c, 1), nn.PixelShuffle(2)),
                nn.Sequential(nn.Conv2d(2 * c, 4 * c, 1), nn.PixelShuffle(2)),
            ]
        )
        self.decoders = nn.ModuleList([NAFBlock(2 * c), NAFBlock(c)])
        self.ending = nn.Conv2d(c, 3, 3, padding=1)
        self.decoder_dims = {"decoders.0": 2 * c, "decoders.1": c}

    def forward(self, x: Tensor) -> Tensor:
        h = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            h = decoder(up(h) + skip)
        return x + self.ending(h)


class TokenBlock(nn.Module):
    """Pre-norm transformer block over the pixels of a feature map, as tokens."""

    def __init__(self, c: int, heads: int = 2) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attention = nn.MultiheadAttention(c, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        q = self.norm1(tokens)
        tokens = tokens + self.attention(q, q, q, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class AttentionUNet(nn.Module):
    """Conv encoder; attention over tokens in the bottleneck and the first decoder block."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        c = width
        self.stem = conv_block(3, c)
        self.down1 = nn.Conv2d(c, 2 * c, 2, stride=2)
        self.enc2 = conv_block(2 * c, 2 * c)
        self.down2 = nn.Conv2d(2 * c, 4 * c, 2, stride=2)
        self.bottleneck = nn.Sequential(TokenBlock(4 * c, 4), TokenBlock(4 * c, 4))
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.decoder = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(4 * c, 2 * c, 1), TokenBlock(2 * c, 2)),
                conv_block(2 * c, c),
            ]
        )
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.head = nn.Conv2d(c, 3, 3, padding=1)
        self.decoder_dims = {"decoder.0": 2 * c, "decoder.1": c}

    def forward(self, x: Tensor) -> Tensor:
        s1 = self.stem(x)
        s2 = self.enc2(self.down1(s1))
        h = self.bottleneck(self.down2(s2))
        h = self.decoder[0](torch.cat([self.up2(h), s2], dim=1))
        h = self.decoder[1](torch.cat([self.up1(h), s1], dim=1))
        return x + self.head(h)


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class ResNetUNet(nn.Module):
    """A ResNet encoder (basic blocks with batch norm) and a conv-BN-ReLU decoder."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        c = width
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.layer1 = BasicBlock(c, c)
        self.layer2 = BasicBlock(c, 2 * c, stride=2)
        self.layer3 = BasicBlock(2 * c, 4 * c, stride=2)
        self.decoder = nn.ModuleList([conv_bn_relu(6 * c, 2 * c), conv_bn_relu(3 * c, c)])
        self.head = nn.Conv2d(c, 3, 3, padding=1)
        self.decoder_dims = {"decoder.0": 2 * c, "decoder.1": c}

    def forward(self, x: Tensor) -> Tensor:
        s1 = self.layer1(self.stem(x))
        s2 = self.layer2(s1)
        h = self.layer3(s2)
        up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = self.decoder[0](torch.cat([up, s2], dim=1))
        up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = self.decoder[1](torch.cat([up, s1], dim=1))
        return x + self.head(h)


NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "nafnet": NAFUNet,
    "attention": AttentionUNet,
    "resnet_bn": ResNetUNet,
}

# ----------------------------------------------------------------------------------------------
# Images that need no files

DEGRADATIONS: dict[str, Callable[[], nn.Module]] = {
    "haze": Haze,
    "low_light": LowLight,
    "noise": lambda: GaussianNoise(25.0),
    "rain": RainStreaks,
}
PAIRS: dict[str, tuple[str, str]] = {
    "haze+low_light": ("haze", "low_light"),
    "noise+rain": ("noise", "rain"),
}
SELECTION_SEED = 9001  # the images the settings are chosen on
REPORT_SEED = 9002  # the images the chosen settings are reported on


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Setting:
    weight: float = 0.01
    num_negatives: int = 4
    label_negatives: bool = False
    balance_weight: float = 0.0
    num_prompts: int = 5
    top_k: int = 1
    stages: str = "all"  # "all" decoder blocks or the "last" one
    bn_negatives: str = "keep"  # "keep" the running statistics, or "update" them (emulated)


LIBRARY = Setting()  # the library's defaults
BASE = dataclasses.replace(LIBRARY, num_negatives=1)  # one negative: a step costs 2/3 as much
# name -> (factor, changes from BASE); each factor's levels include "base"
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("", {}),
    "weight=0": ("weight", {"weight": 0.0}),
    "weight=0.1": ("weight", {"weight": 0.1}),
    "weight=1": ("weight", {"weight": 1.0}),
    "negatives=4": ("num_negatives", {"num_negatives": 4}),
    "label_negatives": ("label_negatives", {"label_negatives": True}),
    "balance=0.05": ("balance_weight", {"balance_weight": 0.05}),
    "experts=2": ("num_prompts", {"num_prompts": 2}),
    "top_k=2": ("top_k", {"top_k": 2}),
    "stages=last": ("stages", {"stages": "last"}),
    "bn_negatives=update": ("bn_negatives", {"bn_negatives": "update"}),
}
BN_ONLY = {"bn_negatives=update"}  # settings that only mean something with batch norm
# what a plain run sweeps: the others (a CPR weight of 1, top-2 routing) only when asked
DEFAULT_SETTINGS = [name for name in VARIANTS if name not in ("weight=1", "top_k=2")]
EFFECT_NEGATIVES = 2  # negative draws per held-out image


def build(network: str, setting: Setting) -> nn.Module:
    model = NETWORKS[network]()
    dims: dict[str, int] = model.decoder_dims  # type: ignore[assignment]
    names = list(dims) if setting.stages == "all" else list(dims)[-1:]
    stage = {"num_prompts": setting.num_prompts, "top_k": setting.top_k, "prompt_size": 8}
    return add_prompts(model, {name: {"dim": dims[name], **stage} for name in names})


class BatchNormNegatives:
    """Decides what the batch norms of a model do in passes without gradient in train mode.

    Outside ``update_pass()``: momentum 0 (negative rows leave the running statistics alone,
    whatever the library does). Inside it: momentum 0 until the first prompt layer starts (the
    library serves those outputs to the negatives instead of running them), the usual momentum
    after it.
    """

    def __init__(self, model: nn.Module) -> None:
        self.updating = False
        self.prompt_started = False
        self.saved: dict[nn.Module, float | None] = {}
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(self.before)
                module.register_forward_hook(self.after)
            if isinstance(module, SparsePrompt):
                module.register_forward_pre_hook(self.started)

    def started(self, module: nn.Module, args: Any) -> None:
        self.prompt_started = True

    def before(self, module: nn.Module, args: Any) -> None:
        if module.training and not torch.is_grad_enabled():
            if not (self.updating and self.prompt_started):
                self.saved[module] = module.momentum
                module.momentum = 0.0

    def after(self, module: nn.Module, args: Any, output: Any) -> None:
        if module in self.saved:
            module.momentum = self.saved.pop(module)

    def update_pass(self, model: nn.Module, degraded: Tensor, m: int, **negative: Any) -> None:
        """The emulated update: one pass over the ``B * M`` negative rows, in train mode."""
        self.updating, self.prompt_started = True, False
        try:
            with negative_prompts(model, **negative):
                model(degraded.repeat(m, 1, 1, 1))
        finally:
            self.updating = False


def library_keeps_bn_statistics() -> bool:
    """Whether the installed library's negatives leave batch norm's statistics alone."""
    torch.manual_seed(0)
    model = build("resnet_bn", BASE)
    with torch.no_grad():  # move the prompt stages off the identity, so negatives differ
        for p in model.parameters():
            if p.ndim > 1 and not p.abs().sum():
                p.normal_(0, 0.1)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    reference = build("resnet_bn", BASE)
    reference.load_state_dict(model.state_dict())
    CPLObjective(num_negatives=2)(model, x, x, generator=torch.Generator().manual_seed(0))
    reference(x)  # the positive pass alone
    return all(
        torch.allclose(a, b) for a, b in zip(model.buffers(), reference.buffers(), strict=True)
    )


# ----------------------------------------------------------------------------------------------
# One run


def run_one(
    network: str,
    pair: str,
    setting: Setting,
    seed: int,
    *,
    steps: int,
    crop: int,
    batch: int,
    lr: float,
    held_out: int,
    streams: dict[str, int],
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build(network, setting)
    bn = BatchNormNegatives(model)
    mix = DegradationMix({name: DEGRADATIONS[name]() for name in PAIRS[pair]})
    objective = CPLObjective(
        weight=setting.weight,
        num_negatives=setting.num_negatives,
        label_negatives=setting.label_negatives,
        balance_weight=setting.balance_weight,
        num_labels=mix.num_degradations,
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        degraded, clean, labels = make_batch(mix, batch, crop, generator)
        parts = objective(model, degraded, clean, labels, generator=generator)
        optimiser.zero_grad()
        parts.loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(parts.loss.item())
        if setting.bn_negatives == "update" and setting.weight > 0:
            labels_m = labels.repeat(setting.num_negatives) if setting.label_negatives else None
            bn.update_pass(
                model, degraded, setting.num_negatives, generator=generator, labels=labels_m
            )
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"train_s": seconds, "last_loss": losses[-1] if losses else None}
    result["finite"] = all(math.isfinite(v) for v in losses)
    for stream, stream_seed in streams.items():
        images = torch.Generator().manual_seed(stream_seed)
        degraded, clean, labels = make_batch(mix, held_out, crop, images)
        effect = prompt_effect(
            model,
            degraded,
            clean,
            labels,
            names=list(PAIRS[pair]),
            num_negatives=EFFECT_NEGATIVES,
            generator=torch.Generator().manual_seed(stream_seed),
            batch_size=held_out,
        )
        result[stream] = effect.to_dict()
    return result


# ----------------------------------------------------------------------------------------------
# Summary and choice


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": spread(values), "per_seed": values}


def summarise(
    runs: dict[str, Any], stream: str, seeds: list[str], min_cost: float = 0.0
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per setting, network and pair: own PSNR, cost, own against weight 0, pass marks.

    The cost counts when its mean exceeds its spread over seeds and ``min_cost`` (dB).
    """
    reference = runs["weight=0"]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_network in runs.items():
        out[name] = {}
        for network, by_pair in by_network.items():
            for pair, by_seed in by_pair.items():
                own = [by_seed[s][stream]["average"]["own"] for s in seeds]
                cost = [by_seed[s][stream]["average"]["cost"] for s in seeds]
                base_own = [reference[network][pair][s][stream]["average"]["own"] for s in seeds]
                diff = [a - b for a, b in zip(own, base_own, strict=True)]
                entry = {"own": cell(own), "cost": cell(cost), "own_vs_weight0": cell(diff)}
                floor = max(entry["cost"]["std"], min_cost)
                entry["cost_beyond_spread"] = entry["cost"]["mean"] > floor
                loss = entry["own_vs_weight0"]["mean"] < -entry["own_vs_weight0"]["std"]
                entry["keeps_own"] = not loss
                entry["passes"] = entry["cost_beyond_spread"] and entry["keeps_own"]
                out[name][f"{network} {pair}"] = entry
    return out


def score(summary: dict[str, dict[str, Any]]) -> tuple[int, float]:
    """(cells passing, mean cost over cells): larger is better."""
    cells = list(summary.values())
    return sum(c["passes"] for c in cells), statistics.fmean(c["cost"]["mean"] for c in cells)


def pick(scores: dict[str, tuple[int, float]]) -> str:
    """The level with the most passing cells; ``base`` unless another has more; then the cost."""
    most = max(passing for passing, _ in scores.values())
    if "base" in scores and scores["base"][0] == most:
        return "base"
    return max((k for k, v in scores.items() if v[0] == most), key=lambda k: scores[k][1])


def choose(selection: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per factor, the level that scores best on the selection stream; and the best setting."""
    factors: dict[str, list[str]] = {}
    for name, (factor, _) in VARIANTS.items():
        if name in selection and factor:
            factors.setdefault(factor, ["base"] if "base" in selection else []).append(name)

    def cells(name: str, only_bn: bool) -> dict[str, Any]:
        found = selection[name]
        return {k: v for k, v in found.items() if k.startswith("resnet_bn")} if only_bn else found

    per_factor = {}
    for factor, levels in factors.items():
        only_bn = any(level in BN_ONLY for level in levels)
        scores = {level: score(cells(level, only_bn)) for level in levels}
        per_factor[factor] = {
            "chosen": pick(scores),
            "scores": {k: {"passing": v[0], "mean_cost": v[1]} for k, v in scores.items()},
        }
    general = [name for name in selection if name not in BN_ONLY]
    scores = {name: score(selection[name]) for name in general}
    ranked = sorted(general, key=lambda name: scores[name], reverse=True)
    return {"per_factor": per_factor, "ranked": ranked, "best_setting": pick(scores)}


def table(summary: dict[str, dict[str, dict[str, Any]]], key: str, title: str) -> str:
    columns = sorted({c for cells in summary.values() for c in cells})
    lines = [f"| {title} | " + " | ".join(columns) + " | passing |"]
    lines.append("|---" + "|---:" * (len(columns) + 1) + "|")
    for name, cells in summary.items():
        values = []
        for column in columns:
            c = cells.get(column)
            if c is None:
                values.append("")
                continue
            mark = "" if c["passes"] else " ✗" if key == "cost" else ""
            values.append(f"{c[key]['mean']:+.2f} ± {c[key]['std']:.2f}{mark}")
        passing = sum(c["passes"] for c in cells.values())
        lines.append(f"| {name} | " + " | ".join(values) + f" | {passing}/{len(cells)} |")
    return "\n".join(lines)


def library_state() -> dict[str, Any]:
    """The library's commit, and whether its files differed from it when the sweep ran."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "contrastive_prompts"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.split("\n")  # fmt: skip
        return {"commit": commit, "uncommitted": sorted(line[3:] for line in changed if line)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted": None}


def plan(args: argparse.Namespace) -> Iterator[tuple[str, str, str, int]]:
    for name in args.settings:
        for network in args.networks:
            if name in BN_ONLY and network != "resnet_bn":
                continue
            for pair in args.pairs:
                for seed in args.seeds:
                    yield name, network, pair, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--held-out", type=int, default=32, help="images per stream")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (2 steps, 16x16 crops, 4 images per stream)")  # fmt: skip
    parser.add_argument("--min-cost", type=float, default=0.0,
                        help="a cost must also exceed this many dB to count")  # fmt: skip
    parser.add_argument("--from-json", help="summarise the runs of this file again; no training")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    if args.from_json:
        figures = json.loads(Path(args.from_json).read_text())
        figures.pop("partial", None)
        figures["config"]["min_cost"] = args.min_cost
        finish(figures, args.json)
        return
    if args.quick:
        args.steps, args.crop, args.batch, args.held_out = 2, 16, 4, 4
    if "weight=0" not in args.settings:  # the reference of every own-PSNR comparison
        args.settings = ["weight=0", *args.settings]
    torch.set_num_threads(1)

    settings = {name: dataclasses.replace(BASE, **VARIANTS[name][1]) for name in args.settings}
    streams = {"selection": SELECTION_SEED, "report": REPORT_SEED}
    figures: dict[str, Any] = {
        "config": {
            "steps": args.steps, "seeds": args.seeds, "crop": args.crop, "batch": args.batch,
            "lr": args.lr, "held_out": args.held_out, "networks": args.networks,
            "pairs": {p: list(PAIRS[p]) for p in args.pairs}, "streams": streams,
            "effect_negatives": EFFECT_NEGATIVES,
            "base": dataclasses.asdict(BASE), "library_defaults": dataclasses.asdict(LIBRARY),
            "settings": {n: dataclasses.asdict(s) for n, s in settings.items()},
            "parameters": {
                n: sum(p.numel() for p in build(n, BASE).parameters()) for n in args.networks
            },
            "plain_parameters": {
                n: sum(p.numel() for p in NETWORKS[n]().parameters()) for n in args.networks
            },
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "library": library_state(),
            "library_keeps_bn_statistics": library_keeps_bn_statistics(),
            "min_cost": args.min_cost,
        },
        "runs": {},
    }  # fmt: skip
    todo = list(plan(args))
    start = time.perf_counter()
    for index, (name, network, pair, seed) in enumerate(todo, start=1):
        result = run_one(
            network, pair, settings[name], seed, steps=args.steps, crop=args.crop,
            batch=args.batch, lr=args.lr, held_out=args.held_out, streams=streams,
        )  # fmt: skip
        runs = figures["runs"].setdefault(name, {}).setdefault(network, {})
        runs.setdefault(pair, {})[str(seed)] = result
        if args.json:  # the runs so far, in case the sweep is stopped
            Path(args.json).write_text(json.dumps({**figures, "partial": True}))
        print(
            f"[{index}/{len(todo)}] {name:20s} {network:10s} {pair:15s} seed {seed}: "
            f"own {result['selection']['average']['own']:.2f} dB, cost "
            f"{result['selection']['average']['cost']:+.2f} dB, {result['train_s']:.1f} s "
            f"(elapsed {time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    figures["seconds"] = time.perf_counter() - start
    finish(figures, args.json)


def finish(figures: dict[str, Any], path: str | None) -> None:
    """Summarise the runs, choose, print the tables and the JSON (also written to ``path``)."""
    seeds, min_cost = [str(s) for s in figures["config"]["seeds"]], figures["config"]["min_cost"]
    streams = figures["config"]["streams"]
    for stream in streams:
        figures[stream] = summarise(figures["runs"], stream, seeds, min_cost)
    choice = choose(figures["selection"])
    choice["report"] = {
        name: {"passing": score(figures["report"][name])[0],
               "mean_cost": score(figures["report"][name])[1]}
        for name in figures["report"]
    }  # fmt: skip
    figures["choice"] = choice

    for stream in streams:
        print(f"\n### {stream} images: cost of a negative prompt (dB), mean ± spread over seeds\n")
        print(table(figures[stream], "cost", "setting"))
        print(f"\n### {stream} images: own-prompt PSNR minus weight 0 (dB, paired by seed)\n")
        print(table(figures[stream], "own_vs_weight0", "setting"))
    print("\n### chosen on the selection images\n")
    for factor, found in choice["per_factor"].items():
        print(f"- {factor}: {found['chosen']}")
    print(f"- best single setting: {choice['best_setting']}")
    count = sum(
        len(by_seed) for n in figures["runs"].values() for p in n.values() for by_seed in p.values()
    )
    print(f"\n{count} runs in {figures['seconds']:.0f} s\n")
    text = json.dumps(figures)
    if path:
        Path(path).write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
