"""Cost of a CPL training step against a plain L1 step, the decoder-only floor and the naive way.

Two networks, in one run: the reference model (``SparsePromptIR`` at ``--preset``) and the
network of ``examples/plug_into_your_network.py`` (a plain U-Net given prompt stages by
``add_prompts``). Both go through the one generic path, ``forward_with_negatives(model, x)``,
which reuses whatever the network computed before its first prompt layer. For each network,
timed round-robin (median of several steps):

- ``plain``: an L1 step (forward, backward, AdamW);
- ``cpl M``: an L1 + CPR step whose M negatives go through the network as one batch of
  ``B * M`` rows, without gradient, the prompt-free start served from the positive pass;
- ``chunked M``: the same with ``chunk_size=B``, one negative pass per negative;
- ``naive M``: the same loss with a full forward pass under ``negative_prompts`` per negative,
  as the released code does;
- ``decoder``: one negative pass over ``B`` rows with the prompt-free start served, without
  gradient: the work a negative cannot avoid. For the reference model, ``decode`` alone (the
  hand-written decoder half) is timed too, as a check on that figure;
- ``executed M``: the work of ``cpl M`` written out by hand, with no hooks and nothing to
  record: a positive pass, one served negative pass over the ``B * M`` rows, the loss and the
  step. What ``cpl M`` costs above it is the generic path's own overhead.

It prints each step's time over the plain step, the floor ``(t_step + M * t_decoder) / t_step``
from the measured times (the negative pass timed alone), the executed floor, CPL's distance to
both, and the peak memory over the plain step.

With ``--compile`` and/or ``--precision fp32 bf16``, it times instead the reference model's plain
and CPL steps (M = the largest ``--negatives``) eager and compiled
([compile_regions][contrastive_prompts.app.compiling.compile_regions], Inductor) under each
precision, on the same batch, round-robin; a plain step of the whole model under one
``torch.compile`` is timed beside them, as a check on the regional compilation. ``--curve-steps N``
also trains the demo recipe N steps in fp32 and in each other precision from the same seed and
reports how far the loss curves move apart.

The last line is one JSON object with these figures (``compiled_over_eager``: the CPL step's
compiled time over its eager time, per precision).

    python benchmarks/train_step.py --preset tiny --crop 64 --batch 4 [--networks reference example]
    python benchmarks/train_step.py --preset base --crop 128 --batch 8 --negatives 4 \
        --compile --precision fp32 bf16 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import example_network, interleaved_medians, peak_memory

from contrastive_prompts import CPLObjective, SparsePromptIR, negative_prompts
from contrastive_prompts.app.compiling import compile_regions
from contrastive_prompts.app.config import PRECISIONS, RECIPES
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.core import prompt_layers
from contrastive_prompts.core.negatives import _plan, _positive, _Serving
from contrastive_prompts.reference import MODEL_PRESETS


def measure(
    model: nn.Module, degraded: torch.Tensor, clean: torch.Tensor, negatives: list[int], args: Any
) -> dict[str, Any]:
    device = degraded.device
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-6)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = degraded.shape[0]

    def step(loss: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def plain() -> None:
        step(F.l1_loss(model(degraded), clean))

    def cpl(m: int, chunk_size: int | None = None) -> Callable[[], None]:
        objective = CPLObjective(num_negatives=m, chunk_size=chunk_size)
        return lambda: step(objective(model, degraded, clean, generator=generator).loss)

    def naive(m: int) -> Callable[[], None]:
        objective = CPLObjective(num_negatives=m)

        def run() -> None:
            output = model(degraded)
            with negative_prompts(model, generator=generator):
                negatives = torch.stack([model(degraded) for _ in range(m)], dim=1)
            loss = objective.loss(output, clean, negatives)
            step(F.l1_loss(output, clean) + objective.weight * loss)

        return run

    # the prompt-free start of one positive pass, served to a negative pass over B rows
    layers = set(prompt_layers(model).values())
    with torch.no_grad():
        _, calls, _ = _positive(model, layers, degraded)
    prefix = _Serving(calls, _plan(model, layers, degraded, calls, batch))

    def decoder() -> None:
        with prefix.serving(1), negative_prompts(model, generator=generator):
            model(degraded)

    def executed_floor(m: int) -> Callable[[], None]:
        objective = CPLObjective(num_negatives=m)
        negative_rows = torch.arange(batch * m, device=device) % batch

        def run() -> None:
            output = model(degraded)
            with prefix.serving(m), negative_prompts(model, generator=generator):
                negatives = model(degraded[negative_rows])
            negatives = negatives.view(m, batch, *output.shape[1:]).transpose(0, 1)
            loss = objective.loss(output, clean, negatives)
            step(F.l1_loss(output, clean) + objective.weight * loss)

        return run

    calls: dict[str, Callable[[], None]] = {"plain": plain, "decoder": decoder}
    if isinstance(model, SparsePromptIR):
        padded = degraded  # crops are multiples of 8: no padding
        with torch.no_grad():
            features = model.encode(padded)

        def decode() -> None:
            with negative_prompts(model, generator=generator):
                model.decode(padded, features)

        calls["decode"] = decode
    for m in negatives:
        calls[f"cpl {m}"] = cpl(m)
        calls[f"chunked {m}"] = cpl(m, chunk_size=batch)
        calls[f"naive {m}"] = naive(m)
        calls[f"executed {m}"] = executed_floor(m)
    times = interleaved_medians(calls, repeats=args.repeats, device=device)
    memory = {name: peak_memory(call, device=device)["peak"] for name, call in calls.items()}

    t_step, t_dec = times["plain"], times["decoder"]
    params = sum(p.numel() for p in model.parameters())
    print(f"{type(model).__name__} ({params:,} parameters)")
    line = (
        f"plain step {t_step * 1e3:.1f} ms, negative pass with the start served "
        f"{t_dec * 1e3:.1f} ms ({t_dec / t_step:.2f} of a step)"
    )
    if "decode" in times:
        line += f"; decode() alone {times['decode'] * 1e3:.1f} ms"
    print(line)
    print(
        f"{'M':>2} {'floor':>6} {'executed':>9} {'cpl/plain':>10} {'cpl/floor':>10} "
        f"{'cpl/executed':>13} {'chunked/floor':>14} "
        f"{'naive/plain':>12} {'mem cpl':>8} {'mem chunked':>12} {'mem naive':>10}"
    )
    figures = {}
    for m in negatives:
        floor = (t_step + m * t_dec) / t_step
        row = {
            "cpl_over_plain": times[f"cpl {m}"] / t_step,
            "floor": floor,
            "cpl_over_floor": times[f"cpl {m}"] / t_step / floor,
            "executed_floor": times[f"executed {m}"] / t_step,
            "cpl_over_executed_floor": times[f"cpl {m}"] / times[f"executed {m}"],
            "chunked_over_plain": times[f"chunked {m}"] / t_step,
            "chunked_over_floor": times[f"chunked {m}"] / t_step / floor,
            "naive_over_plain": times[f"naive {m}"] / t_step,
            "memory_cpl_over_plain": memory[f"cpl {m}"] / memory["plain"],
            "memory_chunked_over_plain": memory[f"chunked {m}"] / memory["plain"],
            "memory_naive_over_plain": memory[f"naive {m}"] / memory["plain"],
        }
        figures[str(m)] = row
        print(
            f"{m:>2} {floor:6.2f} {row['executed_floor']:9.2f} {row['cpl_over_plain']:10.2f} "
            f"{row['cpl_over_floor']:10.2f} {row['cpl_over_executed_floor']:13.2f} "
            f"{row['chunked_over_floor']:14.2f} {row['naive_over_plain']:12.2f} "
            f"{row['memory_cpl_over_plain']:8.2f} {row['memory_chunked_over_plain']:12.2f} "
            f"{row['memory_naive_over_plain']:10.2f}"
        )
    result = {
        "parameters": params,
        "plain_step_s": t_step,
        "decoder_nograd_s": t_dec,
        "negatives": figures,
    }
    if "decode" in times:
        result["decode_nograd_s"] = times["decode"]
    return result


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtypes[precision])


def speed(preset: str, degraded: torch.Tensor, clean: torch.Tensor, args: Any) -> dict[str, Any]:
    """Eager against compiled, under each precision: plain and CPL steps, one round-robin."""
    device = degraded.device
    m = max(args.negatives)
    torch.manual_seed(0)
    eager = SparsePromptIR(preset).to(device)
    compiled, whole = copy.deepcopy(eager), copy.deepcopy(eager)
    objectives = {"eager": CPLObjective(num_negatives=m), "compiled": CPLObjective(num_negatives=m)}
    compile_regions(compiled)
    compile_regions(objectives["compiled"].loss)
    whole_forward = torch.compile(whole, dynamic=False)
    models = {"eager": eager, "compiled": compiled}
    optimisers = {
        name: torch.optim.AdamW(model.parameters(), lr=1e-6)
        for name, model in {**models, "whole": whole}.items()
    }
    generator = torch.Generator(device=device).manual_seed(0)

    def step(name: str, precision: str, cpl: bool) -> Callable[[], None]:
        model = whole_forward if name == "whole" else models[name]
        optimiser = optimisers[name]

        def run() -> None:
            with _autocast(device, precision):
                if cpl:
                    loss = objectives[name](model, degraded, clean, generator=generator).loss
                else:
                    loss = F.l1_loss(model(degraded), clean)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        return run

    calls = {}
    for precision in args.precision:
        for name in ("eager", "compiled"):
            calls[f"{name} {precision} plain"] = step(name, precision, cpl=False)
            calls[f"{name} {precision} cpl"] = step(name, precision, cpl=True)
        calls[f"whole {precision} plain"] = step("whole", precision, cpl=False)
    if not args.compile:
        calls = {k: v for k, v in calls.items() if k.startswith("eager")}
    times = interleaved_medians(calls, repeats=args.repeats, device=device)
    base = times[f"eager {args.precision[0]} cpl"]
    print(f"SparsePromptIR {preset}, M={m}: seconds per step, and over the eager "
          f"{args.precision[0]} CPL step")  # fmt: skip
    for name, t in times.items():
        print(f"  {name:<22} {t:8.4f} s  {t / base:6.2f}")
    result: dict[str, Any] = {"negatives": m, "seconds": times}
    if args.compile:
        result["compiled_over_eager"] = {
            p: times[f"compiled {p} cpl"] / times[f"eager {p} cpl"] for p in args.precision
        }
        result["compiled_over_eager_plain"] = {
            p: times[f"compiled {p} plain"] / times[f"eager {p} plain"] for p in args.precision
        }
        result["whole_over_eager_plain"] = {
            p: times[f"whole {p} plain"] / times[f"eager {p} plain"] for p in args.precision
        }
    result["over_eager_fp32_cpl"] = {k: t / base for k, t in times.items() if k.endswith("cpl")}
    return result


def loss_curves(args: Any) -> dict[str, Any]:
    """The demo recipe ``--curve-steps`` steps in each precision, from one seed: the loss curves."""
    curves = {}
    for precision in args.precision:
        config = dataclasses.replace(
            RECIPES["demo"], steps=args.curve_steps, precision=precision, val_every=0,
            log_every=args.curve_steps, device=args.device, out_dir=tempfile.mkdtemp(),
        )  # fmt: skip
        trainer = Trainer(config)
        curves[precision] = [r["loss"] for r in trainer.fit()]
    reference = curves[args.precision[0]]
    window = max(1, len(reference) // 10)
    result = {}
    for precision, curve in curves.items():
        gaps = [abs(a - b) / b for a, b in zip(curve, reference, strict=True)]
        result[precision] = {
            "final_mean_loss": sum(curve[-window:]) / window,
            "mean_relative_gap": sum(gaps) / len(gaps),
        }
        print(f"  {precision}: mean loss over the last {window} steps "
              f"{result[precision]['final_mean_loss']:.5f}, mean relative gap to "
              f"{args.precision[0]} {result[precision]['mean_relative_gap']:.4f}")  # fmt: skip
    return {"steps": args.curve_steps, "precisions": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--crop", type=int, default=64, help="a multiple of 8")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--negatives", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compile", action="store_true", help="time eager against compiled (Inductor)"
    )
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=None,
        help="time each precision (autocast), the first as the reference",
    )  # fmt: skip
    parser.add_argument(
        "--curve-steps", type=int, default=0,
        help="also train the demo recipe this many steps per precision",
    )  # fmt: skip
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["reference"],
        choices=["reference", "example"],
        help="example: build_network() of examples/plug_into_your_network.py",
    )
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    degraded = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
    clean = torch.rand_like(degraded)
    print(f"crop={args.crop} batch={args.batch} device={device} threads={torch.get_num_threads()}")
    if args.compile or args.precision:
        args.precision = args.precision or ["fp32"]
        figures = speed(args.preset, degraded, clean, args)
        if args.curve_steps:
            figures["loss_curves"] = loss_curves(args)
        print(json.dumps({"preset": args.preset, "crop": args.crop, "batch": args.batch,
                          "device": str(device), "threads": torch.get_num_threads(),
                          "speed": figures,
                          "compiled_over_eager": figures.get("compiled_over_eager")}))  # fmt: skip
        return
    results = {}
    for name in args.networks:
        model = SparsePromptIR(args.preset) if name == "reference" else example_network()
        results[name] = measure(model.to(device), degraded, clean, args.negatives, args)
    print(
        "times and peak memory are over each network's plain L1 step; the floor uses the "
        "measured negative pass; chunked = chunk_size=B"
    )
    print(
        json.dumps(
            {
                "preset": args.preset,
                "crop": args.crop,
                "batch": args.batch,
                "device": str(device),
                "networks": results,
            }
        )
    )


if __name__ == "__main__":
    main()
