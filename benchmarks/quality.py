"""Restoration quality of the same small network without prompts, with dense prompts, and with CPL.

One seed, one budget and one data stream (the photos that ship with scikit-image, degraded on the
fly by the 3-task or 5-task mix) for every variant:

- ``none``: the network without prompts (L1);
- ``dense``: PromptIR's dense prompts, ``top_k = num_prompts`` (L1);
- ``sparse``: sparse top-1 prompts without CPR (L1), to separate the two parts of CPL;
- ``cpl``: sparse top-1 prompts with contrastive prompt regularisation (L1 + lambda * CPR), once
  per ``--cpl`` spec, so the same run compares CPR settings.

Each is scored (EMA weights) on the held-out photos under every degradation; the table gives
PSNR / SSIM per degradation and their average. The last line printed is one JSON object.

    python benchmarks/quality.py --preset tiny --steps 600            # minutes on a CPU
    python benchmarks/quality.py --preset small --steps 4000 --crop 128 --batch 16 --device cuda
    python benchmarks/quality.py --cpl infonce/filters/0.1 ratio/filters/0.1 subtractive/pixels/1e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from contrastive_prompts.config import TrainConfig
from contrastive_prompts.data import DegradedCopies, sample_split
from contrastive_prompts.degradations import MIXES
from contrastive_prompts.metrics import evaluate
from contrastive_prompts.train import Trainer


def parse_cpl(spec: str) -> dict[str, object]:
    """``mode/features/weight[/negatives[/temperature]]`` -> TrainConfig fields."""
    parts = spec.split("/")
    if not 3 <= len(parts) <= 5:
        raise SystemExit(
            f"--cpl expects mode/features/weight[/negatives[/temperature]], got {spec}"
        )
    fields: dict[str, object] = {"cpr_mode": parts[0], "cpr_features": parts[1],
                                 "cpr_weight": float(parts[2])}  # fmt: skip
    if len(parts) > 3:
        fields["num_negatives"] = int(parts[3])
    if len(parts) > 4:
        fields["temperature"] = float(parts[4])
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--mix", default="3task", choices=sorted(MIXES))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--eval-crop", type=int, default=None, help="centre crop of the held-out photos"
    )
    parser.add_argument("--variants", nargs="+", default=["none", "dense", "cpl"],
                        choices=("none", "dense", "sparse", "cpl"))  # fmt: skip
    parser.add_argument("--cpl", nargs="+", default=[None],
                        help="CPR settings mode/features/weight[/negatives[/temperature]], "
                             "or 'default' for the library's defaults")  # fmt: skip
    parser.add_argument("--out", default="results/quality")
    parser.add_argument("--json", help="rewrite this JSON file after every variant")
    args = parser.parse_args()

    base = TrainConfig(
        preset=args.preset, mix=args.mix, steps=args.steps, crop=args.crop,
        batch_size=args.batch, lr=args.lr, warmup_steps=max(1, args.steps // 20),
        ema_decay=args.ema_decay, seed=args.seed, device=args.device, precision=args.precision,
        val_every=0, save_every=args.steps, log_every=max(1, args.steps // 10),
    )  # fmt: skip
    runs: list[tuple[str, TrainConfig]] = []
    if "none" in args.variants:
        runs.append(("none", dataclasses.replace(base, use_prompts=False, cpr_weight=0.0)))
    if "dense" in args.variants:
        runs.append(("dense", dataclasses.replace(base, top_k=5, cpr_weight=0.0)))
    if "sparse" in args.variants:
        runs.append(("sparse", dataclasses.replace(base, cpr_weight=0.0)))
    if "cpl" in args.variants:
        for spec in args.cpl:
            default = spec in (None, "default")
            fields = {} if default else parse_cpl(spec)
            name = "cpl" if default else f"cpl {spec}"
            runs.append((name, dataclasses.replace(base, **fields)))

    held_out = DegradedCopies(sample_split()[1], args.mix, crop=args.eval_crop, seed=1)
    rows = {}
    device_name = None
    for name, config in runs:
        config = dataclasses.replace(
            config, out_dir=f"{args.out}/{name.replace(' ', '_').replace('/', '-')}"
        )
        trainer = Trainer(config, val_data=held_out)
        device_name = (
            torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu"
        )
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
        result = evaluate(trainer.ema.module, held_out)
        rows[name] = {
            "psnr": result.psnr, "ssim": result.ssim, "average_psnr": result.average_psnr,
            "average_ssim": result.average_ssim, "train_seconds": seconds,
        }  # fmt: skip
        print(f"{name}: average {result.average_psnr:.2f} dB / {result.average_ssim:.4f} "
              f"after {seconds:.0f} s", flush=True)  # fmt: skip
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "device": device_name, "variants": rows}, f)

    names = list(held_out.names.values())
    header = "| variant | " + " | ".join(names) + " | average |"
    print(f"\npreset={args.preset} mix={args.mix} steps={args.steps} crop={args.crop} "
          f"batch={args.batch} seed={args.seed} device={device_name}")  # fmt: skip
    print(header)
    print("|---" * (len(names) + 2) + "|")
    for name, row in rows.items():
        cells = [f"{row['psnr'][n]:.2f} / {row['ssim'][n]:.3f}" for n in names]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {row['average_psnr']:.2f} / {row['average_ssim']:.3f} |")  # fmt: skip
    print(json.dumps({"preset": args.preset, "mix": args.mix, "steps": args.steps,
                      "crop": args.crop, "batch": args.batch, "seed": args.seed,
                      "device": device_name, "variants": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
