"""Adding a degradation to a network whose prompts steer it: the NAFNet-style U-Net.

The reference ``tiny`` model of ``add_degradation.py`` learns no new degradation through its
prompts, which barely steer it. Here the network is ``prompt_settings.py``'s gated U-Net in
NAFNet's style, given a prompt stage on each decoder block by ``add_prompts``, whose prompts cost
several dB when swapped. Per seed, on procedural images (``prompt_settings.py``'s streams and
recipe: 32-pixel crops, batch 8, AdamW at 2e-3 with a cosine decay, the library's objective):

- ``base``: noise, rain and haze, ``--base-steps``;
- ``grown``: ``base`` with one new expert per layer for low light, only the new experts and their
  router rows trained (``add_experts``, ``only_new_experts``), ``--grow-steps``, low light in
  half the samples; ``grown_fast`` the same at ten times the learning rate (2e-2);
- ``tuned``: the same start, data and steps, every parameter trained;
- ``joint``: the four degradations from the start, ``--base-steps``.

Scored on ``prompt_settings.py``'s ``report`` stream (``--held-out`` images per degradation,
never drawn in training): PSNR per degradation, the share of images routed to a new expert
(per layer), and the base model's swap cost on its three degradations.

    OMP_NUM_THREADS=1 python benchmarks/add_degradation_network.py --seeds 0 1 \\
        --json benchmarks/results/add_degradation_nafnet.json
    python benchmarks/add_degradation_network.py --quick   # a few steps: a check that it runs
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state
from prompt_settings import REPORT_SEED, SETTINGS, build, make_batch

from contrastive_prompts import CPLObjective
from contrastive_prompts.app.degradations import (
    DegradationMix,
    GaussianNoise,
    Haze,
    LowLight,
    RainStreaks,
)
from contrastive_prompts.app.effect import prompt_effect
from contrastive_prompts.app.metrics import psnr
from contrastive_prompts.core import add_experts, only_new_experts, prompt_layers, record_routing

OLD = ("noise", "rain", "haze")
NEW = "low_light"


def mix(names: tuple[str, ...], probs: list[float] | None = None) -> DegradationMix:
    made = {"noise": GaussianNoise(25.0), "rain": RainStreaks(), "haze": Haze(),
            "low_light": LowLight()}  # fmt: skip
    return DegradationMix({n: made[n] for n in names}, probs=probs)


def train(
    model: nn.Module, data: DegradationMix, steps: int, seed: int, args: argparse.Namespace,
    *, groups: list[dict[str, Any]] | None = None, label_experts: list[int] | None = None,
    lr: float = 2e-3,
) -> nn.Module:  # fmt: skip
    """``steps`` of the library's objective (CPR 0.01, 2 negatives, the routing term)."""
    objective = CPLObjective(num_negatives=2, label_experts=label_experts)
    optimiser = torch.optim.AdamW(groups if groups is not None else model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        degraded, clean, labels = make_batch(data, 8, 32, generator)
        parts = objective(model, degraded, clean, labels, generator=generator)
        optimiser.zero_grad()
        parts.loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


def cached(folder: Path, name: str, model: nn.Module, make: Any) -> nn.Module:
    """The run's weights from ``folder/name.pt``, or trained by ``make()`` and saved there."""
    path = folder / f"{name}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    trained = make()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(trained.state_dict(), path)
    return trained


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.work_dir, f"seed{seed}")
    setting = SETTINGS["routing"]
    torch.manual_seed(seed)
    base = cached(
        folder, "base", build("nafnet", setting),
        lambda: train(build("nafnet", setting), mix(OLD), args.base_steps, seed, args),
    )  # fmt: skip

    def grown_start() -> nn.Module:
        model = copy.deepcopy(base)
        add_experts(model, 1)
        return model

    half = [0.5 / len(OLD)] * len(OLD) + [0.5]
    four = (*OLD, NEW)
    label_experts = [0, 1, 2, 5]  # the old labels keep their experts, low light gets the new one

    def grow(lr: float) -> nn.Module:
        model = grown_start()
        new = {name: range(5, 6) for name in dict(model.named_modules()) if name.endswith("prompt")}
        with only_new_experts(model, new) as frozen:
            return train(
                model, mix(four, half), args.grow_steps, seed, args,
                groups=frozen.param_groups, label_experts=label_experts, lr=lr,
            )  # fmt: skip

    models = {"base": base}
    models["grown"] = cached(folder, "grown", grown_start(), lambda: grow(2e-3))
    models["grown_fast"] = cached(folder, "grown_fast", grown_start(), lambda: grow(2e-2))
    models["tuned"] = cached(
        folder, "tuned", grown_start(),
        lambda: train(grown_start(), mix(four, half), args.grow_steps, seed, args,
                      label_experts=label_experts),
    )  # fmt: skip
    torch.manual_seed(seed)
    models["joint"] = cached(folder, "joint", build("nafnet", setting),
                             lambda: train(build("nafnet", setting), mix(four), args.base_steps,
                                           seed, args))  # fmt: skip

    images = torch.Generator().manual_seed(REPORT_SEED)
    degraded, clean, labels = make_batch(mix(four), args.held_out * 4, 32, images)
    scores: dict[str, dict[str, float]] = {}
    routed: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for run, model in models.items():
            with record_routing(model) as log:
                values = psnr(model(degraded).clamp(0, 1), clean)
            scores[run] = {n: float(values[labels == k].mean()) for k, n in enumerate(four)}
            if run.startswith("grown"):
                to_new = torch.stack([(r.indices[:, 0] >= 5).float() for r in log]).mean(0)
                routed[run] = {n: float(to_new[labels == k].mean()) for k, n in enumerate(four)}
        old = labels < len(OLD)
        effect = prompt_effect(
            base, degraded[old], clean[old], labels[old], names=list(OLD), num_negatives=2,
            generator=torch.Generator().manual_seed(REPORT_SEED),
        )  # fmt: skip
    trained = {
        "grown": sum(p[0].numel() for p in new_rows(models["grown"])),
        "tuned": sum(p.numel() for p in models["tuned"].parameters()),
        "joint": sum(p.numel() for p in models["joint"].parameters()),
    }
    return {"seed": seed, "psnr": scores, "routed_to_new": routed,
            "base_swap_cost": effect.to_dict()["average"]["swap_cost"],
            "trained_parameters": trained}  # fmt: skip


def new_rows(model: nn.Module) -> list[torch.Tensor]:
    """The new rows of every prompt layer (experts 5 on): what the grown run trained."""
    rows = []
    for layer in prompt_layers(model).values():
        rows += [layer.prompts[5:], layer.router.weight[5:], layer.router.bias[5:]]
    return [r.reshape(1, -1) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--base-steps", type=int, default=1000)
    parser.add_argument("--grow-steps", type=int, default=400)
    parser.add_argument("--held-out", type=int, default=40, help="images per degradation")
    parser.add_argument("--work-dir", help="default: runs/add_degradation_network(_quick)")
    parser.add_argument("--quick", action="store_true", help="3 steps, 4 images each")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.quick:
        args.base_steps, args.grow_steps, args.held_out = 3, 3, 4
    suffix = "_quick" if args.quick else ""
    args.work_dir = args.work_dir or f"runs/add_degradation_network{suffix}"
    seeds = [run_seed(seed, args) for seed in args.seeds]
    runs = ("base", "grown", "grown_fast", "tuned", "joint")
    names = (*OLD, NEW)
    table = {
        n: {run: statistics.fmean(s["psnr"][run][n] for s in seeds) for run in runs}
        | {f"{g}_minus_base_per_seed": [s["psnr"][g][n] - s["psnr"]["base"][n] for s in seeds]
           for g in ("grown", "grown_fast")}
        | {f"{g}_routed_to_new": statistics.fmean(s["routed_to_new"][g][n] for s in seeds)
           for g in ("grown", "grown_fast")}
        for n in names
    }  # fmt: skip
    figures = {
        "config": {
            "network": "nafnet", "seeds": args.seeds, "base_steps": args.base_steps,
            "grow_steps": args.grow_steps, "held_out": args.held_out, "quick": args.quick,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "library": library_state(),
        },
        "per_degradation": table,
        "base_swap_cost": [s["base_swap_cost"] for s in seeds],
        "trained_parameters": seeds[0]["trained_parameters"],
        "per_seed": seeds,
    }  # fmt: skip
    print("| degradation | base | grown (to new) | grown, lr 2e-2 (to new) | tuned | joint |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, row in table.items():
        print(
            f"| {n} | {row['base']:.2f} | {row['grown']:.2f} ({row['grown_routed_to_new']:.2f}) | "
            f"{row['grown_fast']:.2f} ({row['grown_fast_routed_to_new']:.2f}) | "
            f"{row['tuned']:.2f} | {row['joint']:.2f} |"
        )
    print(f"base swap cost {figures['base_swap_cost']}, trained {figures['trained_parameters']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
