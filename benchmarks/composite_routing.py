"""Composite degradations: which experts does a haze+rain image use, and does top-2 help?

Three ``tiny`` models, each trained with the ``demo`` recipe for ``--steps`` (resumable in
``--work-dir``):

- ``parts_top1``: on the four parts of CDD-11 alone (low light, haze, rain, snow), top-1
  routing: each part is taught an expert of its own, and no composite is ever seen;
- ``parts_top2``: the same with top-2 routing (a composite may take two parts' experts);
- ``cdd11_top1``: on all eleven kinds of CDD-11 with eleven experts, so that each composite is
  taught an expert of its own: what training on the composites themselves gives.

The held-out photos (chelsea, coffee; never trained on), cut into ``--crop`` squares, are degraded
once by every CDD-11 kind. Printed and written: PSNR per kind and model; for every composite
image and prompt layer of the two parts models, where its experts come from: the expert the
parts' own images use most at that layer (``part:<name>``), or neither (``other``); for top-2,
the share of (image, layer) pairs whose two experts are both parts' experts.

    OMP_NUM_THREADS=1 python benchmarks/composite_routing.py --runs parts_top1 cdd11_top1 &
    OMP_NUM_THREADS=1 python benchmarks/composite_routing.py --runs parts_top2 &
    wait; python benchmarks/composite_routing.py \\
        --json benchmarks/results/composite_routing_cpu.json   # every run, trained by now
    python benchmarks/composite_routing.py --quick   # 3 steps, two crops: a check that it runs
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state, train_or_resume

from contrastive_prompts import SparsePromptIR
from contrastive_prompts.app.building import build_data
from contrastive_prompts.app.config import RECIPES
from contrastive_prompts.app.data import DegradedCopies, sample_split
from contrastive_prompts.app.degradations import CDD11, make_mix
from contrastive_prompts.app.metrics import psnr
from contrastive_prompts.core import record_routing

PARTS = ("low_light", "haze", "rain", "snow")
RUNS = ("parts_top1", "parts_top2", "cdd11_top1")


def train(run: str, args: argparse.Namespace) -> nn.Module:
    """The run's EMA model, trained to ``--steps`` (or carried on to it)."""
    top_k = 2 if run == "parts_top2" else 1
    config = dataclasses.replace(
        RECIPES["demo"], steps=args.steps, top_k=top_k, val_every=0, log_every=10,
        save_every=max(1, min(200, args.steps)), out_dir=str(Path(args.work_dir, run)),
        mix="cdd11",
    )  # fmt: skip
    if run == "cdd11_top1":  # each of the eleven kinds is taught an expert of its own
        torch.manual_seed(config.seed)
        model = SparsePromptIR(config.preset, num_prompts=len(CDD11))
        return train_or_resume(config, model=model)[0]
    mix = make_mix(list(PARTS))
    train_data, val_data = build_data(config, mix)
    model, _ = train_or_resume(
        config, train_data=train_data, val_data=val_data, label_names=list(PARTS)
    )
    return model


def crops(side: int) -> list[Tensor]:
    """The held-out photos cut into ``side`` squares."""
    out = []
    for photo in sample_split()[1]:
        h, w = photo.shape[-2:]
        out += [
            photo[:, i : i + side, j : j + side]
            for i in range(0, h - side + 1, side)
            for j in range(0, w - side + 1, side)
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--work-dir", help="default: runs/composite_routing(_quick)")
    parser.add_argument("--quick", action="store_true", help="3 steps, two 96-pixel crops")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.quick:
        args.steps, args.crop = 3, 96
    args.work_dir = args.work_dir or "runs/composite_routing" + ("_quick" if args.quick else "")
    models = {run: train(run, args) for run in args.runs}

    images = crops(args.crop)[: 2 if args.quick else None]
    mix = make_mix("cdd11")
    copies = DegradedCopies(images, mix, seed=1)
    scores: dict[str, dict[str, list[float]]] = {
        run: collections.defaultdict(list) for run in models
    }
    experts: dict[str, dict[str, dict[str, list[tuple[int, ...]]]]] = {
        run: collections.defaultdict(lambda: collections.defaultdict(list)) for run in models
    }
    with torch.no_grad():
        for index in range(len(copies)):
            degraded, clean, label = copies[index]
            kind = mix.names[int(label)]
            for run, model in models.items():
                with record_routing(model) as log:
                    out = model(degraded[None])
                scores[run][kind].append(psnr(out.clamp(0, 1), clean[None]).item())
                for layer, routed in zip(log.names, log, strict=True):
                    experts[run][kind][layer].append(tuple(routed.indices[0].tolist()))

    def favourite(run: str, part: str, layer: str) -> int:
        """The expert a part's own images use most at ``layer`` (the first of top-k)."""
        picks = [e[0] for e in experts[run][part][layer]]
        return collections.Counter(picks).most_common(1)[0][0]

    psnr_table = {run: {k: statistics.fmean(v) for k, v in s.items()} for run, s in scores.items()}
    origin: dict[str, dict[str, dict[str, float]]] = {}
    both_parts: dict[str, dict[str, float]] = {}
    for run in models:
        if not run.startswith("parts"):
            continue
        origin[run] = {}
        if run.endswith("top2"):
            both_parts[run] = {}
        for kind, parts in zip(mix.names, mix.parts, strict=True):
            if len(parts) < 2:
                continue
            counts: collections.Counter[str] = collections.Counter()
            pairs, total = 0, 0
            for layer, picks in experts[run][kind].items():
                owners = {favourite(run, part, layer): part for part in reversed(parts)}
                for chosen in picks:
                    counts[f"part:{owners[chosen[0]]}" if chosen[0] in owners else "other"] += 1
                    pairs += int(len(chosen) > 1 and all(e in owners for e in chosen))
                    total += 1
            origin[run][kind] = {k: v / total for k, v in sorted(counts.items())}
            if run.endswith("top2"):
                both_parts[run][kind] = pairs / total
    singles = [k for k, p in zip(mix.names, mix.parts, strict=True) if len(p) == 1]
    composites = [k for k in mix.names if k not in singles]
    averages = {
        run: {
            "singles": statistics.fmean(psnr_table[run][k] for k in singles),
            "composites": statistics.fmean(psnr_table[run][k] for k in composites),
        }
        for run in models
    }
    figures = {
        "config": {
            "steps": args.steps, "crop": args.crop, "images": len(images), "recipe": "demo",
            "quick": args.quick, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "library": library_state(),
        },
        "psnr": psnr_table,
        "average": averages,
        "expert_origin": origin,
        "top2_both_from_parts": both_parts,
    }  # fmt: skip
    runs = list(models)
    print("| kind | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for kind in mix.names:
        print(f"| {kind} | " + " | ".join(f"{psnr_table[r][kind]:.2f}" for r in runs) + " |")
    for run, table in origin.items():
        for kind, shares in table.items():
            both = both_parts.get(run, {}).get(kind)
            extra = f", both from parts {both:.2f}" if both is not None else ""
            print(f"{run} {kind}: {shares}{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
