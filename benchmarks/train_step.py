"""Cost of a CPL training step against a plain L1 step and against the naive way.

For one preset and crop size, in one run (round-robin, median of several steps):

- ``plain``: an L1 step (forward, backward, AdamW);
- ``cpl M``: an L1 + CPR step whose M negatives re-run only the decoder, as one batch of
  ``B * M`` rows, without gradient (``SparsePromptIR.forward_with_negatives``);
- ``chunked M``: the same with ``chunk_size=B``, one decoder pass per negative;
- ``naive M``: the same loss with a full forward pass per negative, as the released code does;
- ``decoder``: the decoder alone without gradient, with negative prompts, on the same batch.

It prints each step's time over the plain step, the floor ``(t_step + M * t_decoder) / t_step``
from the measured times, CPL's distance to that floor, and the peak memory over the plain step.
The last line is one JSON object with these figures.

    python benchmarks/train_step.py --preset tiny --crop 64 --batch 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import interleaved_medians, peak_memory

from contrastive_prompts import PRESETS, CPLObjective, SparsePromptIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--negatives", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = SparsePromptIR(args.preset).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-6)
    degraded = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
    clean = torch.rand_like(degraded)
    generator = torch.Generator(device=device).manual_seed(0)

    def step(loss: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def plain() -> None:
        step(F.l1_loss(model(degraded), clean))

    def cpl(m: int, chunk_size: int | None = None):
        objective = CPLObjective(num_negatives=m, chunk_size=chunk_size)
        return lambda: step(objective(model, degraded, clean, generator=generator).loss)

    def naive(m: int):
        objective = CPLObjective(num_negatives=m)

        def run() -> None:
            output = model(degraded)
            negatives = torch.stack(
                [model.forward_negative(degraded, generator=generator) for _ in range(m)], dim=1
            )
            step(
                F.l1_loss(output, clean)
                + objective.weight * objective.loss(output, clean, negatives)
            )

        return run

    with torch.no_grad():
        features = model.encode(degraded)

    def decoder() -> None:
        with torch.no_grad():
            model.decode(degraded, features, negative=True, generator=generator)

    calls = {"plain": plain, "decoder": decoder}
    for m in args.negatives:
        calls[f"cpl {m}"] = cpl(m)
        calls[f"chunked {m}"] = cpl(m, chunk_size=args.batch)
        calls[f"naive {m}"] = naive(m)
    times = interleaved_medians(calls, repeats=args.repeats, device=device)
    memory = {name: peak_memory(call, device=device)["peak"] for name, call in calls.items()}

    t_step, t_dec = times["plain"], times["decoder"]
    params = sum(p.numel() for p in model.parameters())
    print(
        f"preset={args.preset} ({params:,} parameters) crop={args.crop} batch={args.batch} "
        f"device={device} threads={torch.get_num_threads()}"
    )
    print(
        f"plain step {t_step * 1e3:.1f} ms, decoder without gradient {t_dec * 1e3:.1f} ms "
        f"({t_dec / t_step:.2f} of a step)"
    )
    print(
        f"{'M':>2} {'floor':>6} {'cpl/plain':>10} {'cpl/floor':>10} {'chunked/floor':>14} "
        f"{'naive/plain':>12} {'mem cpl':>8} {'mem chunked':>12} {'mem naive':>10}"
    )
    figures = {}
    for m in args.negatives:
        floor = (t_step + m * t_dec) / t_step
        row = {
            "cpl_over_plain": times[f"cpl {m}"] / t_step,
            "floor": floor,
            "cpl_over_floor": times[f"cpl {m}"] / t_step / floor,
            "chunked_over_plain": times[f"chunked {m}"] / t_step,
            "chunked_over_floor": times[f"chunked {m}"] / t_step / floor,
            "naive_over_plain": times[f"naive {m}"] / t_step,
            "memory_cpl_over_plain": memory[f"cpl {m}"] / memory["plain"],
            "memory_chunked_over_plain": memory[f"chunked {m}"] / memory["plain"],
            "memory_naive_over_plain": memory[f"naive {m}"] / memory["plain"],
        }
        figures[str(m)] = row
        print(
            f"{m:>2} {floor:6.2f} {row['cpl_over_plain']:10.2f} {row['cpl_over_floor']:10.2f} "
            f"{row['chunked_over_floor']:14.2f} {row['naive_over_plain']:12.2f} "
            f"{row['memory_cpl_over_plain']:8.2f} {row['memory_chunked_over_plain']:12.2f} "
            f"{row['memory_naive_over_plain']:10.2f}"
        )
    print(
        "times and peak memory are over the plain L1 step; the floor uses the measured decoder "
        "time; chunked = chunk_size=B"
    )
    print(
        json.dumps(
            {
                "preset": args.preset,
                "crop": args.crop,
                "batch": args.batch,
                "device": str(device),
                "parameters": params,
                "plain_step_s": t_step,
                "decoder_nograd_s": t_dec,
                "negatives": figures,
            }
        )
    )


if __name__ == "__main__":
    main()
