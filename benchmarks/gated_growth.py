"""Add a degradation with ``growth="gated"``: the old degradations bit for bit, the new one learnt.

A measurement of the library's gated growth (``TrainConfig(grow_from=..., growth="gated")``, the
default of ``contrastive-prompts train --grow-from``), per seed, from ``add_degradation.py``'s base
run (the same ``--work-dir``; trained here if missing):

- the run trains a **copy** of the base model, every parameter, on the new degradation alone,
  ``--grow-steps`` with the ``demo`` recipe;
- its **gate** (``app.growth.fit_gate``: a small perceptron over tile statistics, fitted on the
  bundled scikit-image pictures but the held-out photos) sends each image to the copy or to the
  untouched base model.

On the held-out photos (chelsea, coffee) whole, each degraded once by every degradation (as
``add_degradation.py`` scores them): PSNR of the base model, of the gated model the run's
checkpoint loads as, of its networks chosen by label (a perfect gate) and of the copy alone (what
an image the gate misroutes gets); and the gate's choices over ``--draws`` draws of the
degradations.

    OMP_NUM_THREADS=1 python benchmarks/gated_growth.py --seeds 0 &
    OMP_NUM_THREADS=1 python benchmarks/gated_growth.py --seeds 1 &
    wait; python benchmarks/gated_growth.py --seeds 0 1 \\
        --json benchmarks/results/gated_growth_cpu.json   # reads the runs' cached figures
    python benchmarks/gated_growth.py --quick   # 3 steps, small photos: a check that it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state, train_or_resume
from add_degradation import add_options, base_config, figures_per_seed

from contrastive_prompts.app.checkpoints import load_checkpoint_model
from contrastive_prompts.app.data import DegradedCopies
from contrastive_prompts.app.degradations import make_mix
from contrastive_prompts.app.growth import GATE_ITERATIONS, GATE_SAMPLES, GATE_SCENES
from contrastive_prompts.app.metrics import psnr
from contrastive_prompts.reference import GATE_HIDDEN, GATE_TILE, GatedRestorer

RUNS = ("base", "gated", "perfect_gate", "new_network")


def run_seed(seed: int, args: argparse.Namespace, photos: list[Tensor]) -> dict[str, Any]:
    """The base run, the gated run grown from it, and the scores on the held-out photos."""
    folder, recipe, base_cfg = base_config(seed, args)
    base, _ = train_or_resume(base_cfg)
    gated_cfg = dataclasses.replace(
        recipe, steps=args.grow_steps, out_dir=str(folder / "gated"), growth="gated",
        grow_from=str(folder / "base" / "last.pt"), add_degradations=[args.new],
        warmup_steps=min(30, args.grow_steps // 10),
    )  # fmt: skip
    _, facts = train_or_resume(gated_cfg)
    model = load_checkpoint_model(folder / "gated" / "last.pt")
    assert isinstance(model, GatedRestorer)
    mix = make_mix("3task", add=[args.new])
    names = list(mix.names)
    scores: dict[str, dict[str, list[float]]] = {run: {n: [] for n in names} for run in RUNS}
    votes: dict[str, list[bool]] = {n: [] for n in names}
    with torch.no_grad():
        for draw in range(args.draws):
            copies = DegradedCopies(photos, mix, seed=seed + 1 + 100 * draw)
            for index in range(len(copies)):
                degraded, clean, label = copies[index]
                name, x, clean = names[int(label)], degraded[None], clean[None]
                own = model.label_networks[int(label)]
                votes[name].append(int(model.route(x)[0]) == own)
                if draw:  # the first draw is the one add_degradation.py scores
                    continue
                outputs = {
                    "base": base(x),
                    "gated": model(x),
                    "perfect_gate": model.networks[own](x),
                    "new_network": model.networks[-1](x),  # what a misrouted image gets
                }
                for run, out in outputs.items():
                    scores[run][name].append(psnr(out.clamp(0, 1), clean).item())
                print(f"seed {seed}: {index + 1}/{len(copies)} {name}", file=sys.stderr)
    return {
        "seed": seed,
        "names": names,
        "new": args.new,
        "psnr": {run: {n: statistics.fmean(v) for n, v in s.items()} for run, s in scores.items()},
        "gate_right": {n: [sum(v), len(v)] for n, v in votes.items()},
        "gated": facts,
        "parameters": sum(p.numel() for p in base.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--draws", type=int, default=5, help="draws of the photos' degradations")
    args = parser.parse_args()
    if args.quick:
        args.draws = 1
    seeds, photos = figures_per_seed(args, run_seed, "gated_growth_figures.json")
    names = seeds[0]["names"]
    table = {}
    for name in names:
        row = {run: statistics.fmean(s["psnr"][run][name] for s in seeds) for run in RUNS}
        table[name] = row | {
            "gated_minus_base_per_seed": [
                s["psnr"]["gated"][name] - s["psnr"]["base"][name] for s in seeds
            ],
            "gate_right": [sum(s["gate_right"][name][k] for s in seeds) for k in (0, 1)],
        }
    figures = {
        "config": {
            "new": args.new, "seeds": args.seeds, "base_steps": args.base_steps,
            "grow_steps": args.grow_steps, "draws": args.draws, "gate_scenes": GATE_SCENES,
            "gate_samples": GATE_SAMPLES, "gate_iterations": GATE_ITERATIONS,
            "gate_tile": GATE_TILE, "gate_hidden": GATE_HIDDEN, "mix": "3task",
            "recipe": "demo", "quick": args.quick,
            "photos": [list(p.shape[-2:]) for p in photos], "threads": torch.get_num_threads(),
            "torch": torch.__version__, "library": library_state(),
        },
        "per_degradation": table,
        "gated": seeds[0]["gated"],
        "parameters": seeds[0]["parameters"],
        "per_seed": seeds,
    }  # fmt: skip
    print(
        "| degradation | base | gated | gated - base (per seed) | perfect gate | new network "
        "alone | gate right |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, row in table.items():
        drift = ", ".join(f"{d:+.3f}" for d in row["gated_minus_base_per_seed"])
        right, of = row["gate_right"]
        print(
            f"| {name} | {row['base']:.2f} | {row['gated']:.2f} | {drift} | "
            f"{row['perfect_gate']:.2f} | {row['new_network']:.2f} | {right}/{of} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
