"""One routing per image against one per tile: do the tiles of a photo keep its experts?

A ``tiny`` model is trained with the ``demo`` recipe (the bundled training photos, the 3-task
mix; ``--steps``, resumable from ``--work-dir``), then each held-out photo (chelsea, 300 x 451;
coffee, 400 x 600: several times the tile) is degraded by every degradation of the mix and
restored three ways: in one pass, and tiled (``--tile``, ``--overlap``) with
``routing="tile"`` (each tile routes itself) and ``routing="image"`` (one routing per image,
gathered over a first pass of tiles). Per degradation:

- ``tiles_off``: of the tiles of every photo and every prompt layer, the share whose expert is
  not the one the single pass chose; for ``image`` the share of (photo, layer) pairs whose
  pooled routing's expert is not the single pass's (every tile then uses it);
- PSNR against the clean photo of each way, and of each tiled way against the single pass;
- seconds per restore of each way (median of ``--repeats``, one thread unless told otherwise).

The last line printed is the JSON object (``--json`` writes it too).

    OMP_NUM_THREADS=1 python benchmarks/tiled_routing.py \\
        --json benchmarks/results/tiled_routing_cpu.json
    python benchmarks/tiled_routing.py --quick   # 3 steps, small photos: a check that it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import library_state

from contrastive_prompts import SparsePromptIR
from contrastive_prompts.app.config import RECIPES
from contrastive_prompts.app.data import DegradedCopies, sample_split
from contrastive_prompts.app.metrics import psnr
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.core import record_routing
from contrastive_prompts.reference import image_routing, tiled


def trained_model(steps: int, work_dir: Path) -> SparsePromptIR:
    """The demo recipe trained to ``steps`` in ``work_dir``, carried on from its checkpoint."""
    config = dataclasses.replace(
        RECIPES["demo"], steps=steps, out_dir=str(work_dir), val_every=steps,
        save_every=max(1, min(200, steps)),
    )  # fmt: skip
    trainer = Trainer(config)
    if (work_dir / "last.pt").exists():
        trainer.load(work_dir / "last.pt")
    if trainer.step < steps:
        trainer.fit()
    return cast(SparsePromptIR, trainer.ema.module).eval()


def experts(log: Any, per_pass: int) -> dict[str, list[int]]:
    """``{layer: [expert of each image of each pass]}`` from a routing log."""
    found: dict[str, list[int]] = {}
    for name, routed in zip(log.names, log, strict=True):
        found.setdefault(name, []).extend(routed.indices[:, 0].tolist())
    assert all(len(v) % per_pass == 0 for v in found.values())
    return found


def timed(call: Any, repeats: int) -> tuple[Tensor, float]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    return cast(Tensor, out), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default="runs/tiled_routing")
    parser.add_argument("--quick", action="store_true", help="3 steps, photos cut to 96 x 128")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.quick:
        args.steps, args.tile, args.overlap, args.repeats = 3, 48, 16, 1
    model = trained_model(args.steps, Path(args.work_dir))
    photos = sample_split()[1]
    if args.quick:
        photos = [p[:, :96, :128] for p in photos]
    copies = DegradedCopies(photos, "3task", seed=1)
    names = list(copies.names.values())
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in names}

    def add(name: str, key: str, value: float) -> None:
        rows[name].setdefault(key, []).append(value)

    with torch.no_grad():
        for index in range(len(copies)):
            degraded, clean, label = copies[index]
            name, x, clean = names[int(label)], degraded[None], clean[None]
            with record_routing(model) as log:
                single, t_single = timed(lambda x=x: model(x).clamp(0, 1), args.repeats)
            chosen = {k: v[0] for k, v in experts(log, 1).items()}
            ways: dict[str, tuple[Tensor, float]] = {}
            for way in ("tile", "image"):
                ways[way] = timed(
                    lambda x=x, way=way: tiled(
                        model, x, tile=args.tile, overlap=args.overlap, routing=way
                    ).clamp(0, 1),
                    args.repeats,
                )
            with record_routing(model) as log:
                tiled(model, x, tile=args.tile, overlap=args.overlap, routing="tile")
            own = experts(log, 1)
            off = [e != chosen[layer] for layer, found in own.items() for e in found]
            add(name, "tiles_off_tile", sum(off) / len(off))
            pooled = image_routing(model, x, tile=args.tile)
            off = [int(r.indices[0, 0]) != chosen[layer] for layer, r in pooled.items()]
            add(name, "tiles_off_image", sum(off) / len(off))
            add(name, "tiles", len(own[next(iter(own))]))
            add(name, "psnr_single", psnr(single, clean).item())
            add(name, "seconds_single", t_single)
            for way, (out, seconds) in ways.items():
                add(name, f"psnr_{way}", psnr(out, clean).item())
                add(name, f"psnr_{way}_vs_single", psnr(out, single).item())
                add(name, f"seconds_{way}", seconds)
            print(f"{index + 1}/{len(copies)} {name}", file=sys.stderr)

    table = {n: {k: statistics.fmean(v) for k, v in row.items()} for n, row in rows.items()}
    overall = {k: statistics.fmean(table[n][k] for n in names) for k in table[names[0]]}
    figures = {
        "config": {
            "steps": args.steps, "tile": args.tile, "overlap": args.overlap,
            "repeats": args.repeats, "mix": "3task", "recipe": "demo", "quick": args.quick,
            "photos": [list(p.shape[-2:]) for p in photos],
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "library": library_state(),
        },
        "per_degradation": table,
        "average": overall,
    }  # fmt: skip
    print(
        "| degradation | tiles off (tile) | tiles off (image) | PSNR single | PSNR tile | "
        "PSNR image | tile vs single | image vs single | s single | s tile | s image |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in [*table.items(), ("average", overall)]:
        print(
            f"| {name} | {row['tiles_off_tile']:.2f} | {row['tiles_off_image']:.2f} | "
            f"{row['psnr_single']:.2f} | {row['psnr_tile']:.2f} | {row['psnr_image']:.2f} | "
            f"{row['psnr_tile_vs_single']:.2f} | {row['psnr_image_vs_single']:.2f} | "
            f"{row['seconds_single']:.2f} | {row['seconds_tile']:.2f} | "
            f"{row['seconds_image']:.2f} |"
        )
    text = json.dumps(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
