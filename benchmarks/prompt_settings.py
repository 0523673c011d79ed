"""Which CPL settings make experts specialise and prompts matter, at budgets users run.

Four networks, each trained from scratch for ``--steps`` steps (1,000 by default) on
procedural images (smooth colour fields with flat rectangles, drawn from a seeded
``torch.Generator``: no files), once per setting and seed:

- three networks that know nothing about prompts, given a prompt stage on each of their two
  decoder blocks by ``add_prompts`` (5 experts, top-1), on the ``4way`` mix (noise, rain, haze,
  low light):
  ``nafnet``, a gated U-Net in NAFNet's style (LayerNorm over channels, SimpleGate, simplified
  channel attention, pixel-(un)shuffle); ``attention``, a U-Net whose bottleneck and first
  decoder block attend over tokens with ``nn.MultiheadAttention``; ``resnet_bn``, a U-Net with a
  ResNet encoder (basic blocks, batch norm) and conv-BN-ReLU decoder blocks;
- ``promptir_tiny``, the reference model's ``tiny`` preset, on the papers' ``3task`` and
  ``5task`` mixes.

Settings (``SETTINGS``): the controls ``l1`` (L1 alone, top-1 prompts) and ``dense`` (L1 alone,
PromptIR's dense prompts); ``cpl``, CPL as the paper trains it (CPR weight 0.01, negatives drawn
without labels); and candidates that add label-aware negatives and a balance term
(``balance``), or the label-routing term (``routing``, ``routing_cpr0.1``; ``routing_l1`` has
the routing term without CPR). Every CPR setting draws 2 negatives per image.

Each run is scored with ``prompt_effect`` on two streams of held-out images that training never
draws from: settings are chosen on ``selection`` and reported on ``report``. Per run: own-prompt
PSNR, the cost of a negative prompt (CPL's random other expert) and of a *swap* (the experts
another degradation uses most), and per prompt layer the specialisation of its experts
(normalised mutual information between degradation and expert, dead experts, collapse). The
targets, per setting and network: every degradation's favourite expert differs from every
other's (at two of three layers of the reference model, at the layer nearest the output
otherwise), mean NMI >= 0.5, a swap costs >= 1 dB, and own PSNR not below L1 alone's by more
than the spread of their difference over seeds. The chosen setting meets most targets on the
selection images (then: the largest swap cost).

Runs are resumable: each keeps its checkpoint under ``--work-dir`` (every ``--save-every``
steps) and carries on from it; the JSON (``--json``) is written after every scored run, and a
run already scored there is not run again. So a sweep can be stopped and carried on in a later
sitting, and split over processes by ``--networks``/``--mixes``/``--settings``, each with its own
JSON; ``--from-json A B ...`` merges them and summarises without training.

    OMP_NUM_THREADS=1 python benchmarks/prompt_settings.py --networks nafnet attention resnet_bn \\
        --json benchmarks/results/prompt_settings_networks.json
    OMP_NUM_THREADS=1 python benchmarks/prompt_settings.py --networks promptir_tiny \\
        --mixes 3task 5task --json benchmarks/results/prompt_settings_promptir.json
    python benchmarks/prompt_settings.py --from-json benchmarks/results/prompt_settings_*.json
    python benchmarks/prompt_settings.py --quick --json quick.json   # a tiny run

The last line printed is the JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_prompts import (
    ContrastivePromptLoss,
    CPLObjective,
    SparsePromptIR,
    add_prompts,
)
from contrastive_prompts.app.degradations import (
    DegradationMix,
    GaussianNoise,
    Haze,
    LowLight,
    RainStreaks,
    make_mix,
)
from contrastive_prompts.app.effect import prompt_effect
from contrastive_prompts.app.metrics import psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import example_module, library_state

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
# Images that need no files, and the reference model

MIXES: dict[str, tuple[str, ...]] = {
    "4way": ("noise", "rain", "haze", "low_light"),
    "3task": ("3task",),
    "5task": ("5task",),
}
"""``4way``: four degradations for the ``add_prompts`` networks; the others are the library's
mixes of the papers (``make_mix``), for the reference model."""


def build_mix(name: str) -> DegradationMix:
    if name == "4way":
        return DegradationMix(
            {"noise": GaussianNoise(25.0), "rain": RainStreaks(), "haze": Haze(),
             "low_light": LowLight()}
        )  # fmt: skip
    return make_mix(name)


SELECTION_SEED = 9001  # the images the settings are chosen on
REPORT_SEED = 9002  # the images the chosen setting is reported on


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Setting:
    weight: float = 0.01  # CPR's lambda
    num_negatives: int = 2
    label_negatives: bool = False
    balance_weight: float = 0.0
    routing_weight: float = 0.0
    num_prompts: int = 5
    top_k: int = 1
    cpr_mode: str = "subtractive"


SETTINGS: dict[str, Setting] = {
    # controls
    "l1": Setting(weight=0.0),
    "dense": Setting(weight=0.0, top_k=5),
    # CPL as the paper trains it (and the library's defaults before the routing term)
    "cpl": Setting(),
    # candidates: the label-routing term with CPL's CPR (label-aware negatives), or alone
    "routing": Setting(routing_weight=0.01, label_negatives=True),
    "routing_l1": Setting(weight=0.0, routing_weight=0.01),
    # the routing term with a CPR ten times the paper's: do stronger negatives make a swap cost?
    "routing_cpr0.1": Setting(weight=0.1, routing_weight=0.01, label_negatives=True),
    # the pilot's other candidates (on nafnet, seed 0, to choose the routing weight)
    "routing_infonce": Setting(
        weight=0.1, routing_weight=0.01, label_negatives=True, cpr_mode="infonce"
    ),
    "routing0.1": Setting(routing_weight=0.1, label_negatives=True),
    "routing0.1_l1": Setting(weight=0.0, routing_weight=0.1),
    "routing0.1_cpr0.1": Setting(weight=0.1, routing_weight=0.1, label_negatives=True),
    "routing0.1_cpr1": Setting(weight=1.0, routing_weight=0.1, label_negatives=True),
    "routing0.1_infonce": Setting(
        weight=0.1, routing_weight=0.1, label_negatives=True, cpr_mode="infonce"
    ),
}
CONTROLS = ("l1", "dense")
EFFECT_NEGATIVES = 2  # negative draws per held-out image


def build(network: str, setting: Setting) -> nn.Module:
    if network == "promptir_tiny":
        return SparsePromptIR("tiny", num_prompts=setting.num_prompts, top_k=setting.top_k)
    model = NETWORKS[network]()
    dims: dict[str, int] = model.decoder_dims  # type: ignore[assignment]
    stage = {"num_prompts": setting.num_prompts, "top_k": setting.top_k, "prompt_size": 8}
    return add_prompts(model, {name: {"dim": dims[name], **stage} for name in dims})


NETWORK_NAMES = [*NETWORKS, "promptir_tiny"]


# ----------------------------------------------------------------------------------------------
# One run, resumable


def run_folder(work_dir: Path, key: tuple[str, str, str, int]) -> Path:
    name, network, mix, seed = key
    return work_dir / name / network / mix / f"seed{seed}"


def train_run(
    key: tuple[str, str, str, int], folder: Path, *, steps: int, crop: int, batch: int,
    lr: float, save_every: int,
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """Train one run, carrying on from its checkpoint; returns the model and its record."""
    name, network, mix_name, seed = key
    setting = SETTINGS[name]
    torch.manual_seed(seed)
    model = build(network, setting)
    mix = build_mix(mix_name)
    objective = CPLObjective(
        weight=setting.weight,
        num_negatives=setting.num_negatives,
        label_negatives=setting.label_negatives,
        balance_weight=setting.balance_weight,
        routing_weight=setting.routing_weight,
        num_labels=mix.num_degradations,
        loss=ContrastivePromptLoss(mode=setting.cpr_mode),
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    record: dict[str, Any] = {"step": 0, "train_s": 0.0, "losses": []}
    state_path = folder / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        record = json.loads(state["record"])
    if record["step"] >= steps:
        return model, record
    model.train()
    start = time.perf_counter() - record["train_s"]
    while record["step"] < steps:
        degraded, clean, labels = make_batch(mix, batch, crop, generator)
        parts = objective(model, degraded, clean, labels, generator=generator)
        optimiser.zero_grad()
        parts.loss.backward()
        optimiser.step()
        schedule.step()
        record["step"] += 1
        if record["step"] % 50 == 0:
            record["losses"].append(parts.loss.item())
        if record["step"] % save_every == 0 or record["step"] == steps:
            record["train_s"] = time.perf_counter() - start
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / "state.pt.partial"
            torch.save(
                {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                 "schedule": schedule.state_dict(), "generator": generator.get_state(),
                 "record": json.dumps(record)},
                temporary,
            )  # fmt: skip
            temporary.replace(state_path)
            print(
                f"    {' '.join(map(str, key))}: step {record['step']}/{steps}, loss "
                f"{parts.loss.item():.4f}, {record['train_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return model, record


def trained_steps(folder: Path) -> int:
    """The steps a run's checkpoint holds (0 without one)."""
    path = folder / "state.pt"
    if not path.exists():
        return 0
    record: dict[str, Any] = json.loads(torch.load(path, weights_only=True)["record"])
    return int(record["step"])


@torch.no_grad()
def dense_psnr(model: nn.Module, degraded: Tensor, clean: Tensor, labels: Tensor,
               names: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """Own-prompt PSNR per degradation of a network whose prompts are dense (no negatives)."""
    model.eval()
    values = psnr(model(degraded).clamp(0, 1), clean)
    own = {n: float(values[labels == k].mean()) for k, n in enumerate(names) if (labels == k).any()}
    return {"names": list(own), "own": own, "average": {"own": statistics.fmean(own.values())}}


def evaluate_run(
    key: tuple[str, str, str, int], model: nn.Module, *, crop: int, held_out: int
) -> dict[str, Any]:
    """Own, negative and swap PSNR and the experts' specialisation on both held-out streams."""
    name, _, mix_name, _ = key
    mix = build_mix(mix_name)
    out: dict[str, Any] = {}
    for stream, stream_seed in STREAMS.items():
        images = torch.Generator().manual_seed(stream_seed)
        degraded, clean, labels = make_batch(mix, held_out, crop, images)
        if SETTINGS[name].top_k >= SETTINGS[name].num_prompts:
            out[stream] = dense_psnr(model, degraded, clean, labels, mix.names)
            continue
        effect = prompt_effect(
            model, degraded, clean, labels, names=list(mix.names),
            num_negatives=EFFECT_NEGATIVES, generator=torch.Generator().manual_seed(stream_seed),
            batch_size=16,
        )  # fmt: skip
        out[stream] = effect.to_dict()
    return out


STREAMS = {"selection": SELECTION_SEED, "report": REPORT_SEED}


# ----------------------------------------------------------------------------------------------
# Summary and choice


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "mean": statistics.fmean(finite) if finite else math.nan,
        "std": spread(finite),
        "per_seed": values,
    }


def targets(effect: dict[str, Any], network: str) -> dict[str, Any]:
    """The issue's targets for one run on one stream."""
    layers = effect["specialisation"]
    order = list(layers)  # call order: the last one is nearest the output
    separated = [layers[k]["separated"] for k in order]
    if network == "promptir_tiny":
        separated_ok = sum(separated) >= 2
    else:
        separated_ok = separated[-1]
    nmi = statistics.fmean(layers[k]["nmi"] for k in order)
    return {
        "separated": separated_ok,
        "nmi": nmi,
        "swap_cost": effect["average"]["swap_cost"],
        "negative_cost": effect["average"]["cost"],
        "collapsed_layers": sum(layers[k]["collapsed"] for k in order),
        "dead_experts": sum(layers[k]["dead"] for k in order),
    }


def summarise(runs: dict[str, Any], stream: str) -> dict[str, dict[str, Any]]:
    """Per setting and network/mix: own PSNR, own against L1 alone, specialisation, swap cost."""
    out: dict[str, dict[str, Any]] = {}
    for name, by_network in runs.items():
        out[name] = {}
        for network, by_mix in by_network.items():
            for mix, by_seed in by_mix.items():
                seeds = sorted(s for s in by_seed if stream in by_seed[s])
                if not seeds:
                    continue
                own = [by_seed[s][stream]["average"]["own"] for s in seeds]
                entry: dict[str, Any] = {"seeds": seeds, "own": cell(own)}
                reference = runs.get("l1", {}).get(network, {}).get(mix, {})
                paired = [s for s in seeds if stream in reference.get(s, {})]
                if paired:
                    diff = [
                        by_seed[s][stream]["average"]["own"]
                        - reference[s][stream]["average"]["own"]
                        for s in paired
                    ]
                    entry["own_vs_l1"] = cell(diff)
                if "specialisation" in by_seed[seeds[0]][stream]:
                    found = [targets(by_seed[s][stream], network) for s in seeds]
                    for k in ("nmi", "swap_cost", "negative_cost"):
                        entry[k] = cell([f[k] for f in found])
                    entry["separated"] = [f["separated"] for f in found]
                    entry["collapsed_layers"] = [f["collapsed_layers"] for f in found]
                    entry["dead_experts"] = [f["dead_experts"] for f in found]
                    keeps = "own_vs_l1" not in entry or (
                        entry["own_vs_l1"]["mean"] >= -max(entry["own_vs_l1"]["std"], 0.0)
                    )
                    met = {
                        "separated": all(entry["separated"]),
                        "nmi>=0.5": entry["nmi"]["mean"] >= 0.5,
                        "swap>=1dB": entry["swap_cost"]["mean"] >= 1.0,
                        "own_kept": keeps,
                    }
                    entry["targets"] = met
                    entry["targets_met"] = sum(met.values())
                out[name][f"{network} {mix}"] = entry
    return out


def choose(selection: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Among the non-control settings, on the cells (network, mix) that all of them ran: the
    most targets met, then the largest mean swap cost."""
    candidates = {
        name: cells
        for name, cells in selection.items()
        if name not in CONTROLS and cells and all("targets" in c for c in cells.values())
    }
    common = set.intersection(*(set(c) for c in candidates.values())) if candidates else set()
    scores = {}
    for name, cells in candidates.items():
        shared = [cells[k] for k in sorted(common)]
        if not shared:
            continue
        scores[name] = {
            "targets_met": sum(c["targets_met"] for c in shared),
            "of": 4 * len(shared),
            "mean_swap_cost": statistics.fmean(c["swap_cost"]["mean"] for c in shared),
        }
    ranked = sorted(scores, key=lambda n: (scores[n]["targets_met"], scores[n]["mean_swap_cost"]),
                    reverse=True)  # fmt: skip
    return {
        "cells": sorted(common),
        "scores": scores,
        "ranked": ranked,
        "chosen": ranked[0] if ranked else None,
    }


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| setting | network, mix | own PSNR | own - L1 | NMI | swap cost | negative cost "
        "| separated | collapsed layers | dead experts |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]

    def show(entry: dict[str, Any], key: str, sign: str = "") -> str:
        if key not in entry:
            return ""
        c = entry[key]
        return f"{c['mean']:{sign}.2f} ± {c['std']:.2f}"

    for name, cells in summary.items():
        for where, entry in cells.items():
            lines.append(
                f"| {name} | {where} | {show(entry, 'own')} | {show(entry, 'own_vs_l1', '+')} | "
                f"{show(entry, 'nmi')} | {show(entry, 'swap_cost', '+')} | "
                f"{show(entry, 'negative_cost', '+')} | "
                f"{entry.get('separated', '')} | {entry.get('collapsed_layers', '')} | "
                f"{entry.get('dead_experts', '')} |"
            )
    return "\n".join(lines)


def plan(args: argparse.Namespace) -> Iterator[tuple[str, str, str, int]]:
    for seed in args.seeds:
        for network in args.networks:
            for mix in args.mixes:
                for name in args.settings:
                    yield name, network, mix, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--held-out", type=int, default=40, help="images per stream")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORK_NAMES)
    parser.add_argument("--mixes", nargs="+", default=["4way"], choices=list(MIXES))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--work-dir", default="runs/prompt_settings",
                        help="checkpoints of the runs, to carry on from")  # fmt: skip
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--train-only", action="store_true",
                        help="train (or carry on training) the runs, score none")  # fmt: skip
    parser.add_argument("--score-only", action="store_true",
                        help="score the runs trained to --steps, train none")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (3 steps, 16x16 crops, 8 images per stream)")  # fmt: skip
    parser.add_argument("--from-json", nargs="+",
                        help="summarise the runs of these files together; no training")  # fmt: skip
    parser.add_argument("--json", help="write the figures here, after every run")
    args = parser.parse_args()
    if args.from_json:
        figures: dict[str, Any] = {"config": {}, "runs": {}}
        for path in args.from_json:
            found = json.loads(Path(path).read_text())
            figures["config"][path] = found["config"]
            merge(figures["runs"], found["runs"])
        finish(figures, args.json)
        return
    if args.quick:
        args.steps, args.crop, args.batch, args.held_out, args.save_every = 3, 16, 4, 8, 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work_dir = Path(args.work_dir)
    config = {
        "steps": args.steps, "seeds": args.seeds, "crop": args.crop, "batch": args.batch,
        "lr": args.lr, "held_out": args.held_out, "networks": args.networks,
        "mixes": {m: list(build_mix(m).names) for m in args.mixes}, "streams": STREAMS,
        "effect_negatives": EFFECT_NEGATIVES,
        "settings": {n: dataclasses.asdict(SETTINGS[n]) for n in args.settings},
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "library": library_state(),
    }  # fmt: skip
    figures = {"config": config, "runs": {}}
    if args.json and Path(args.json).exists():  # runs scored in an earlier sitting
        figures["runs"] = json.loads(Path(args.json).read_text()).get("runs", {})
    todo = list(plan(args))
    start = time.perf_counter()
    for index, key in enumerate(todo, start=1):
        name, network, mix, seed = key
        done = figures["runs"].get(name, {}).get(network, {}).get(mix, {}).get(str(seed))
        if done is not None and done.get("steps") == args.steps:
            print(f"[{index}/{len(todo)}] {' '.join(map(str, key))}: scored", file=sys.stderr)
            continue
        folder = run_folder(work_dir, key)
        if args.score_only and trained_steps(folder) < args.steps:
            print(f"[{index}/{len(todo)}] {' '.join(map(str, key))}: not trained", file=sys.stderr)
            continue
        model, record = train_run(
            key, folder, steps=args.steps, crop=args.crop, batch=args.batch, lr=args.lr,
            save_every=args.save_every,
        )  # fmt: skip
        if args.train_only:
            continue
        result = {"steps": record["step"], "train_s": record["train_s"], "losses": record["losses"]}
        result.update(evaluate_run(key, model, crop=args.crop, held_out=args.held_out))
        runs = figures["runs"].setdefault(name, {}).setdefault(network, {})
        runs.setdefault(mix, {})[str(seed)] = result
        if args.json:  # the runs so far, so that a stopped sweep loses nothing scored
            Path(args.json).write_text(json.dumps({**figures, "partial": True}))
        selection = result["selection"]["average"]
        extra = (
            f", swap cost {selection['swap_cost']:+.2f} dB, negative cost "
            f"{selection['cost']:+.2f} dB"
            if "swap_cost" in selection
            else ""
        )
        print(
            f"[{index}/{len(todo)}] {' '.join(map(str, key))}: own {selection['own']:.2f} dB"
            f"{extra}, {record['train_s']:.0f} s (elapsed {time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    if not args.train_only:
        finish(figures, args.json)


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def finish(figures: dict[str, Any], path: str | None) -> None:
    """Summarise the runs, choose, print the tables and the JSON (also written to ``path``)."""
    figures.pop("partial", None)
    for stream in STREAMS:
        figures[stream] = summarise(figures["runs"], stream)
    choice = choose(figures["selection"])
    figures["choice"] = choice
    for stream in STREAMS:
        print(f"\n### {stream} images (mean ± spread over seeds)\n")
        print(table(figures[stream]))
    print("\n### chosen on the selection images\n")
    for name, found in choice["scores"].items():
        print(f"- {name}: {found['targets_met']} of {found['of']} targets, mean swap cost "
              f"{found['mean_swap_cost']:+.2f} dB")  # fmt: skip
    print(f"- chosen: {choice['chosen']}")
    if choice["chosen"]:
        report = figures["report"][choice["chosen"]]
        met = sum(c.get("targets_met", 0) for c in report.values())
        print(f"- on the report images: {met} of {4 * len(report)} targets")
    text = json.dumps(figures)
    if path:
        Path(path).write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
