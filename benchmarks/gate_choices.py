"""Which new degradations the gate of a gated growth tells apart from the 3-task mix.

A gated growth (``growth="gated"``) is only as good as its gate: an old image it sends to the new
network loses several dB, a new one it keeps with the old model gains nothing. The gate needs no
trained network, so this measures it alone, for several degradations one could add: per case and
seed, ``app.growth.fit_gate`` as a growth run fits it (the bundled scikit-image pictures but the
held-out photos, the default samples and iterations), then the held-out photos (chelsea, coffee)
whole, degraded ``--draws`` times by every degradation, and the images the gate gives their own
network.

    OMP_NUM_THREADS=1 python benchmarks/gate_choices.py \\
        --json benchmarks/results/gate_choices_cpu.json
    python benchmarks/gate_choices.py --quick   # one case, a small fit: a check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state

from contrastive_prompts.app.data import DegradedCopies, sample_split
from contrastive_prompts.app.degradations import make_mix
from contrastive_prompts.app.growth import (
    GATE_ITERATIONS,
    GATE_SAMPLES,
    fit_gate,
    gate_check,
    gate_scenes,
)
from contrastive_prompts.reference import GatedRestorer

CASES = ("low_light", "blur", "gaussian_blur", "jpeg", "snow", "low_light,blur")
"""What is added to the 3-task mix: one degradation, or two at once (two new networks)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    samples, iterations = (GATE_SAMPLES, GATE_ITERATIONS) if not args.quick else (300, 30)
    if args.quick:
        args.cases, args.seeds, args.draws = args.cases[:1], args.seeds[:1], 1
    photos, scenes = sample_split()[1], gate_scenes()
    cases = {}
    for case in args.cases:
        added = case.split(",")
        mix = make_mix("3task", add=added)
        table = [0] * (len(mix.names) - len(added)) + list(range(1, len(added) + 1))
        right = {name: [0, 0] for name in mix.names}
        seconds = []
        for seed in args.seeds:
            start = time.perf_counter()
            gate = fit_gate(mix, table, scenes, seed=seed, samples=samples, iterations=iterations)
            seconds.append(time.perf_counter() - start)
            model = GatedRestorer([nn.Identity()] * gate.classes, gate, label_networks=table)
            for draw in range(args.draws):
                copies = DegradedCopies(photos, mix, seed=seed + 1 + 100 * draw)
                for name, (good, count) in gate_check(model, copies, mix.names).items():
                    right[name][0] += good
                    right[name][1] += count
        cases[case] = {"right": right, "fit_seconds": seconds}
        wrong = {n: f"{c - g}/{c}" for n, (g, c) in right.items() if g < c}
        print(f"{case}: {'every image to its network' if not wrong else f'misrouted {wrong}'}")
    figures = {
        "config": {
            "cases": args.cases, "seeds": args.seeds, "draws": args.draws, "samples": samples,
            "iterations": iterations, "photos": [list(p.shape[-2:]) for p in photos],
            "quick": args.quick, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "library": library_state(),
        },
        "cases": cases,
    }  # fmt: skip
    print("\n| added | misrouted held-out images (of 20 each: 2 photos, 5 draws, 2 gates) |")
    print("|---|---|")
    for case, found in cases.items():
        wrong = [f"{n} {c - g}/{c}" for n, (g, c) in found["right"].items() if g < c]
        print(f"| {case.replace(',', ' + ')} | {', '.join(wrong) or 'none'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
