"""What would meet the add-a-degradation bar: a gated copy of the prompt stages (a measurement).

The bank growth of ``add_degradation.py`` keeps the old degradations but learns nothing new on the
reference model: a frozen network ignores a new expert's prompt, and a router row that lets the
new expert matter sends old images to it. This measures the other design, not in the library:

- the **new expert network** is a copy of the base model whose prompt stages alone (prompt banks,
  routers, prompt convolutions, fusion blocks: about half the parameters) are trained, on the new
  degradation only, ``--grow-steps`` with the ``demo`` recipe;
- a **gate** sends an image to it or to the untouched base model: a logistic regression over
  image statistics (per channel: mean, standard deviation, mean horizontal difference) of
  64-pixel tiles, trained on tiles of every bundled scikit-image picture but the held-out photos
  (grey ones as grey RGB), degraded by the 3-task mix and the new degradation; an image goes to
  the new expert when most of its tiles vote for it.

Old images the gate leaves with the base model are restored by the base model itself, bit for
bit. Per seed, on the held-out photos (chelsea, coffee) whole, each degraded once by every
degradation (as ``add_degradation.py`` scores them): PSNR of the base model, of the gated pair,
of the pair with a perfect gate (by label) and of the new expert network alone (what an image the
gate misroutes gets); and the gate's votes over ``--draws`` draws of the degradations. The base
runs are ``add_degradation.py``'s (the same ``--work-dir``; trained here if missing).

    OMP_NUM_THREADS=1 python benchmarks/gated_growth.py --seeds 0 &
    OMP_NUM_THREADS=1 python benchmarks/gated_growth.py --seeds 1 &
    wait; python benchmarks/gated_growth.py --seeds 0 1 \\
        --json benchmarks/results/gated_growth_cpu.json   # reads the runs' cached figures
    python benchmarks/gated_growth.py --quick   # 3 steps, small photos: a check that it runs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state, train_or_resume
from add_degradation import add_options, base_config, figures_per_seed

from contrastive_prompts.app.building import build_data
from contrastive_prompts.app.data import DegradedCopies
from contrastive_prompts.app.degradations import DegradationMix, make_mix
from contrastive_prompts.app.metrics import psnr

# every bundled scikit-image picture of at least 128 pixels a side but the held-out photos (and
# "cat", which is chelsea)
GATE_SCENES = (
    "astronaut", "brick", "camera", "cell", "clock", "coins", "colorwheel", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip
TILE = 64
STAGES = ("prompt", "fusion")  # the parameter names of the prompt stages
RUNS = ("base", "gated", "perfect_gate", "new_expert")


def tile_statistics(images: Tensor) -> Tensor:
    """``(B, 9)``: per channel, the mean, the standard deviation and the mean horizontal
    difference of each ``(B, 3, H, W)`` tile."""
    difference = (images[..., 1:] - images[..., :-1]).abs().mean((2, 3))
    return torch.cat([images.mean((2, 3)), images.std((2, 3)), difference], 1)


def tiles_of(image: Tensor) -> Tensor:
    """The non-overlapping ``TILE``-pixel tiles of a ``(3, H, W)`` image (at least one)."""
    h, w = image.shape[-2:]
    side = min(TILE, h, w)
    return torch.stack(
        [
            image[:, y : y + side, x : x + side]
            for y in range(0, h - side + 1, side)
            for x in range(0, w - side + 1, side)
        ]
    )


class TileGate(nn.Module):
    """New or old degradation, by a majority of an image's tiles."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(mean.numel(), 1)

    def logits(self, features: Tensor) -> Tensor:
        """One logit per tile from its ``tile_statistics``: above 0 votes new."""
        return self.linear((features - self.mean) / self.std)[:, 0]

    @torch.no_grad()
    def is_new(self, image: Tensor) -> bool:
        return bool((self.logits(tile_statistics(tiles_of(image))) > 0).float().mean() > 0.5)


def train_gate(mix: DegradationMix, new: int, seed: int, samples: int, iterations: int) -> TileGate:
    """The gate, fitted on degraded tiles of ``GATE_SCENES`` (class-balanced logistic loss)."""
    import skimage.data

    scenes = []
    for name in GATE_SCENES:
        picture = getattr(skimage.data, name)()
        if picture.ndim == 2:
            picture = np.stack([picture] * 3, -1)
        scenes.append(torch.from_numpy(picture[..., :3].copy()).permute(2, 0, 1).float() / 255)
    g = torch.Generator().manual_seed(seed)
    tiles, labels = [], []
    for _ in range(samples):
        scene = scenes[int(torch.randint(len(scenes), (1,), generator=g))]
        h, w = scene.shape[-2:]
        y = int(torch.randint(h - TILE + 1, (1,), generator=g))
        x = int(torch.randint(w - TILE + 1, (1,), generator=g))
        tiles.append(scene[:, y : y + TILE, x : x + TILE])
        labels.append(int(torch.randint(len(mix.names), (1,), generator=g)))
    clean, label = torch.stack(tiles), torch.tensor(labels)
    degraded = torch.cat([
        mix.degrade(clean[i : i + 500], label[i : i + 500], generator=g)
        for i in range(0, samples, 500)
    ])  # fmt: skip
    features, target = tile_statistics(degraded), (label == new).float()
    gate = TileGate(features.mean(0), features.std(0) + 1e-6)
    weight = torch.where(target > 0, (1 - target).sum() / target.sum(), torch.ones_like(target))
    optimiser = torch.optim.AdamW(gate.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(iterations):
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(
            gate.logits(features), target, weight=weight
        )
        loss.backward()
        optimiser.step()
    return gate.eval()


def run_seed(seed: int, args: argparse.Namespace, photos: list[Tensor]) -> dict[str, Any]:
    """The base run, the new expert network, the gate, and the scores on the held-out photos."""
    folder, recipe, base_cfg = base_config(seed, args)
    base, _ = train_or_resume(base_cfg)
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    expert_net = copy.deepcopy(base).train()
    for name, parameter in expert_net.named_parameters():
        parameter.requires_grad_(name.startswith(STAGES))
    expert_cfg = dataclasses.replace(
        recipe, steps=args.grow_steps, out_dir=str(folder / "gated_expert"),
        warmup_steps=min(30, args.grow_steps // 10),
    )  # fmt: skip
    torch.manual_seed(seed)
    train_data, _ = build_data(expert_cfg, make_mix([args.new]))
    expert, facts = train_or_resume(expert_cfg, model=expert_net, train_data=train_data)
    facts["trained_parameters"] = sum(
        p.numel() for n, p in expert.named_parameters() if n.startswith(STAGES)
    )
    mix = make_mix("3task", add=[args.new])
    new = len(mix.names) - 1
    gate = train_gate(mix, new, seed, args.gate_samples, args.gate_iterations)
    names = list(mix.names)
    scores: dict[str, dict[str, list[float]]] = {run: {n: [] for n in names} for run in RUNS}
    votes: dict[str, list[bool]] = {n: [] for n in names}
    with torch.no_grad():
        for draw in range(args.draws):
            copies = DegradedCopies(photos, mix, seed=seed + 1 + 100 * draw)
            for index in range(len(copies)):
                degraded, clean, label = copies[index]
                name, x, clean = names[int(label)], degraded[None], clean[None]
                to_new = gate.is_new(degraded)
                votes[name].append(to_new)
                if draw:  # the first draw is the one add_degradation.py scores
                    continue
                by_base = psnr(base(x).clamp(0, 1), clean).item()
                by_expert = psnr(expert(x).clamp(0, 1), clean).item()
                scores["base"][name].append(by_base)
                scores["gated"][name].append(by_expert if to_new else by_base)
                scores["perfect_gate"][name].append(by_expert if int(label) == new else by_base)
                scores["new_expert"][name].append(by_expert)  # what a misrouted image gets
                print(f"seed {seed}: {index + 1}/{len(copies)} {name}", file=sys.stderr)
    return {
        "seed": seed,
        "names": names,
        "new": args.new,
        "psnr": {run: {n: statistics.fmean(v) for n, v in s.items()} for run, s in scores.items()},
        "voted_new": {n: [sum(v), len(v)] for n, v in votes.items()},
        "expert": facts,
        "parameters": sum(p.numel() for p in base.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--draws", type=int, default=5, help="draws of the photos' degradations")
    parser.add_argument("--gate-samples", type=int, default=6000)
    parser.add_argument("--gate-iterations", type=int, default=1500)
    args = parser.parse_args()
    if args.quick:
        args.draws, args.gate_samples, args.gate_iterations = 1, 200, 50
    seeds, photos = figures_per_seed(args, run_seed, "gated_figures.json")
    names = seeds[0]["names"]
    table = {}
    for name in names:
        row = {run: statistics.fmean(s["psnr"][run][name] for s in seeds) for run in RUNS}
        table[name] = row | {
            "gated_minus_base_per_seed": [
                s["psnr"]["gated"][name] - s["psnr"]["base"][name] for s in seeds
            ],
            "voted_new": [sum(s["voted_new"][name][k] for s in seeds) for k in (0, 1)],
        }
    figures = {
        "config": {
            "new": args.new, "seeds": args.seeds, "base_steps": args.base_steps,
            "grow_steps": args.grow_steps, "draws": args.draws, "gate_scenes": GATE_SCENES,
            "gate_samples": args.gate_samples, "gate_iterations": args.gate_iterations,
            "tile": TILE, "mix": "3task", "recipe": "demo", "quick": args.quick,
            "photos": [list(p.shape[-2:]) for p in photos], "threads": torch.get_num_threads(),
            "torch": torch.__version__, "library": library_state(),
        },
        "per_degradation": table,
        "expert": seeds[0]["expert"],
        "parameters": seeds[0]["parameters"],
        "per_seed": seeds,
    }  # fmt: skip
    print(
        "| degradation | base | gated | gated - base (per seed) | perfect gate | new expert "
        "alone | voted new |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, row in table.items():
        drift = ", ".join(f"{d:+.3f}" for d in row["gated_minus_base_per_seed"])
        voted, of = row["voted_new"]
        print(
            f"| {name} | {row['base']:.2f} | {row['gated']:.2f} | {drift} | "
            f"{row['perfect_gate']:.2f} | {row['new_expert']:.2f} | {voted}/{of} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
