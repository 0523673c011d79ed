"""A trained model learns a degradation it never saw, and keeps the ones it knew.

Per seed, four ``tiny`` models, each trained with the ``demo`` recipe (resumable in
``--work-dir``):

- ``base``: the 3-task mix, ``--base-steps``;
- ``grown``: ``base`` given one new expert per prompt layer for ``--new``, and only those experts
  and their router rows trained (``grow_from``, ``growth="experts"``), ``--grow-steps``, on the
  3-task mix with the new degradation in half the samples;
- ``tuned``: the same start and data, every parameter trained (the plain fine-tune), as a control;
- ``joint``: the 3-task mix and the new degradation from the start, ``--base-steps``.

Each held-out photo (chelsea, coffee; never trained on) is degraded once by every degradation,
and each model's EMA weights restore it in one pass. Printed and written: PSNR per degradation
and model; for ``grown``, the largest share of the router's softmax its new experts take on an
image of an old degradation (the only way its old outputs can move) and the share of images
routed to a new expert; the parameters each run trains; the training step rate.

    OMP_NUM_THREADS=1 python benchmarks/add_degradation.py --seeds 0 &
    OMP_NUM_THREADS=1 python benchmarks/add_degradation.py --seeds 1 &
    wait; python benchmarks/add_degradation.py --seeds 0 1 \\
        --json benchmarks/results/add_degradation_cpu.json   # reads the runs' cached figures
    python benchmarks/add_degradation.py --quick   # 3 steps, small photos: a check that it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state, train_or_resume

from contrastive_prompts.app.building import build_data
from contrastive_prompts.app.config import RECIPES, TrainConfig
from contrastive_prompts.app.data import DegradedCopies, sample_split
from contrastive_prompts.app.growth import build_mix, start_growth
from contrastive_prompts.app.metrics import psnr
from contrastive_prompts.core import prompt_layers, record_routing

RUNS = ("base", "grown", "tuned", "joint")


def base_config(seed: int, args: argparse.Namespace) -> tuple[Path, TrainConfig, TrainConfig]:
    """The seed's folder, its recipe, and the base run's configuration (3-task mix)."""
    folder = Path(args.work_dir, f"{args.new}_seed{seed}")
    recipe = dataclasses.replace(
        RECIPES["demo"], seed=seed, val_every=0, save_every=max(1, min(200, args.base_steps)),
        log_every=10,
    )  # fmt: skip
    return (
        folder,
        recipe,
        dataclasses.replace(recipe, steps=args.base_steps, out_dir=str(folder / "base")),
    )


def run_seed(seed: int, args: argparse.Namespace, photos: list[torch.Tensor]) -> dict[str, Any]:
    """Train the four models of one seed and score them on the held-out photos."""
    folder, recipe, base_cfg = base_config(seed, args)
    models, facts = {}, {}
    models["base"], facts["base"] = train_or_resume(base_cfg)
    grow_cfg = dataclasses.replace(
        recipe, steps=args.grow_steps, out_dir=str(folder / "grown"), add_degradations=[args.new],
        grow_from=str(folder / "base" / "last.pt"), warmup_steps=min(30, args.grow_steps // 10),
        growth="experts",
    )  # fmt: skip
    models["grown"], facts["grown"] = train_or_resume(grow_cfg)
    growth = start_growth(grow_cfg)
    assert growth is not None
    plan = growth.plan
    facts["grown"]["trained_parameters"] = sum(  # the new rows, not the tensors they are in
        (layer.prompts[0].numel() + layer.router.weight[0].numel() + 1) * len(rows)
        for layer, rows in (
            (layer, range(plan.base_experts, layer.num_prompts))
            for layer in prompt_layers(models["grown"]).values()
        )
    )
    # the plain fine-tune: the same start and data, every parameter trained
    tune_cfg = dataclasses.replace(grow_cfg, grow_from=None, out_dir=str(folder / "tuned"))
    torch.manual_seed(seed)
    start = growth.model
    train_data, _ = build_data(tune_cfg, build_mix(tune_cfg, plan))
    models["tuned"], facts["tuned"] = train_or_resume(tune_cfg, model=start, train_data=train_data)
    joint_cfg = dataclasses.replace(
        base_cfg, add_degradations=[args.new], out_dir=str(folder / "joint")
    )
    models["joint"], facts["joint"] = train_or_resume(joint_cfg)

    copies = DegradedCopies(photos, build_mix(joint_cfg), seed=seed + 1)
    names = list(copies.names.values())
    old = len(plan.base_labels)
    scores: dict[str, dict[str, list[float]]] = {run: {n: [] for n in names} for run in RUNS}
    share_new: dict[str, list[float]] = {n: [] for n in names}
    to_new: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for index in range(len(copies)):
            degraded, clean, label = copies[index]
            name, x, clean = names[int(label)], degraded[None], clean[None]
            for run, model in models.items():
                if run == "grown":
                    with record_routing(model) as log:
                        out = model(x)
                    share_new[name].append(max(float(r.probs[0, old:].sum()) for r in log))
                    to_new[name].append(
                        sum(int(r.indices[0, 0]) >= plan.base_experts for r in log) / len(log)
                    )
                else:
                    out = model(x)
                scores[run][name].append(psnr(out.clamp(0, 1), clean).item())
            print(f"seed {seed}: {index + 1}/{len(copies)} {name}", file=sys.stderr)
    grown = cast(nn.Module, models["grown"])
    return {
        "seed": seed,
        "names": names,
        "old": names[:old],
        "new": names[old:],
        "psnr": {run: {n: statistics.fmean(v) for n, v in s.items()} for run, s in scores.items()},
        "new_expert_share_max": {n: max(v) for n, v in share_new.items()},
        "routed_to_new": {n: statistics.fmean(v) for n, v in to_new.items()},
        "runs": facts,
        "experts_per_layer": {k: v.num_prompts for k, v in prompt_layers(grown).items()},
    }


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of the runs this script and ``gated_growth.py`` share."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--new", default="low_light", help="the degradation to add")
    parser.add_argument("--base-steps", type=int, default=1000)
    parser.add_argument("--grow-steps", type=int, default=400)
    parser.add_argument("--work-dir", help="default: runs/add_degradation(_quick)")
    parser.add_argument("--quick", action="store_true", help="3 steps, photos cut to 64 x 64")
    parser.add_argument("--json", help="write the figures here too")


def figures_per_seed(
    args: argparse.Namespace,
    run: Callable[[int, argparse.Namespace, list[torch.Tensor]], dict[str, Any]],
    cache_name: str,
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """``run(seed, args, photos)`` for each seed, on the held-out photos, its figures cached in
    the seed's folder (read back instead of run again, but with ``--quick``); and the photos."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.quick:
        args.base_steps, args.grow_steps = 3, 3
    args.work_dir = args.work_dir or "runs/add_degradation" + ("_quick" if args.quick else "")
    photos = sample_split()[1]
    if args.quick:
        photos = [p[:, :64, :64] for p in photos]
    seeds = []
    for seed in args.seeds:
        cache = Path(args.work_dir, f"{args.new}_seed{seed}", cache_name)
        if cache.exists() and not args.quick:
            seeds.append(json.loads(cache.read_text()))
            continue
        figures = run(seed, args, photos)
        cache.write_text(json.dumps(figures, indent=1) + "\n")
        seeds.append(figures)
    return seeds, photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args()
    seeds, photos = figures_per_seed(args, run_seed, "figures.json")
    names, old = seeds[0]["names"], seeds[0]["old"]

    def mean(run: str, name: str) -> float:
        return statistics.fmean(s["psnr"][run][name] for s in seeds)

    def spread(values: list[float]) -> float:
        return max(values) - min(values) if len(values) > 1 else 0.0

    table = {}
    for name in names:
        row = {run: mean(run, name) for run in RUNS}
        drift = [s["psnr"]["grown"][name] - s["psnr"]["base"][name] for s in seeds]
        row |= {
            "grown_minus_base": statistics.fmean(drift),
            "grown_minus_base_per_seed": drift,
            "new_expert_share_max": max(s["new_expert_share_max"][name] for s in seeds),
            "routed_to_new": statistics.fmean(s["routed_to_new"][name] for s in seeds),
        }
        table[name] = row
    figures = {
        "config": {
            "new": args.new, "seeds": args.seeds, "base_steps": args.base_steps,
            "grow_steps": args.grow_steps, "mix": "3task", "recipe": "demo",
            "quick": args.quick, "photos": [list(p.shape[-2:]) for p in photos],
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "library": library_state(),
        },
        "per_degradation": table,
        "old_average": {run: statistics.fmean(table[n][run] for n in old) for run in RUNS},
        "runs": {run: seeds[0]["runs"][run] for run in RUNS},
        "spread_over_seeds": {
            run: {n: spread([s["psnr"][run][n] for s in seeds]) for n in names} for run in RUNS
        },
        "per_seed": seeds,
    }  # fmt: skip
    print("| degradation | base | grown | grown - base | tuned | joint | new share max | to new |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in table.items():
        print(
            f"| {name} | {row['base']:.2f} | {row['grown']:.2f} | "
            f"{row['grown_minus_base']:+.3f} | {row['tuned']:.2f} | {row['joint']:.2f} | "
            f"{row['new_expert_share_max']:.4f} | {row['routed_to_new']:.2f} |"
        )
    for run, facts in figures["runs"].items():
        print(f"{run}: {facts}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
