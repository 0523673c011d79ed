"""Seconds a training step takes per preset, as ``contrastive-prompts train`` runs it.

For each preset, a [Trainer][contrastive_prompts.app.train.Trainer] is built with the command
line's defaults (``TrainConfig(preset=...)``: batch 4 of 64x64 crops, four negatives, CPR
weight 0.01; ``--batch`` and ``--crop`` change the first two) on the scikit-image photos
degraded by the default mix, and trained for ``--warmup + --steps`` steps with a log record each
step (``log.jsonl``). The figure is the median of the last ``--steps`` step times (the first
steps, which allocate and warm caches, are left out); the time ``--steps-for`` steps would take
at that pace is printed beside it.

    python benchmarks/preset_steps.py --presets tiny small base --steps 8 [--device cuda]

The last line is one JSON object with these figures and the device they came from
(``benchmarks/results/preset_steps_cpu.json`` is the table of the training guide).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.reference import MODEL_PRESETS


def step_seconds(
    preset: str, *, warmup: int, steps: int, device: str, batch: int, crop: int
) -> tuple[list[float], int]:
    """Seconds of each step after the warm-up, read from the trainer's log records, and the
    trained network's parameter count."""
    with tempfile.TemporaryDirectory() as out_dir:
        config = TrainConfig(
            preset=preset,
            steps=warmup + steps,
            batch_size=batch,
            crop=crop,
            log_every=1,
            val_every=0,
            save_every=10**9,
            device=device,
            out_dir=out_dir,
        )
        trainer = Trainer(config, val_data=[])
        trainer.fit()
        log = Path(out_dir, "log.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in log if '"steps_per_s"' in line]
    parameters = sum(p.numel() for p in trainer.model.parameters())
    return [1 / r["steps_per_s"] for r in records[warmup:]], parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(MODEL_PRESETS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--crop", type=int, default=TrainConfig.crop)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps-for", type=int, default=20_000)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"device: {device.type} ({name}); torch {torch.__version__}")
    print(f"| preset | parameters | s / step | {args.steps_for} steps |")
    print("|---|---:|---:|---:|")
    figures = {}
    for preset in args.presets:
        times, parameters = step_seconds(
            preset,
            warmup=args.warmup,
            steps=args.steps,
            device=args.device,
            batch=args.batch,
            crop=args.crop,
        )
        seconds = statistics.median(times)
        hours = seconds * args.steps_for / 3600
        print(f"| {preset} | {parameters / 1e6:.1f} M | {seconds:.2f} | {hours:.1f} h |")
        figures[preset] = {"seconds_per_step": seconds, "times": times, "parameters": parameters}
    print(json.dumps({"device": name, "batch": args.batch, "crop": args.crop,
                      "figures": figures}))  # fmt: skip


if __name__ == "__main__":
    main()
