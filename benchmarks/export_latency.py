"""Latency of the exported network against eager PyTorch on the CPU, and how closely they agree.

For each network (the reference model at ``--preset``; with ``--networks example`` also the
plug-in example's U-Net, given prompt stages by ``add_prompts``; untrained, it computes the
identity, so only its times say something) it exports once, with
``export_program`` (a batch of 2 at 32 x 32) and ``export_onnx``, then at each of ``--sizes``
(none of them used at export; ``--batch`` images; for the U-Net, which takes even sides only,
rounded down to even) it times, round-robin:

- ``eager``: the model in PyTorch, eval mode, under ``torch.no_grad()``;
- ``program``: the ``torch.export`` program's module, under ``torch.no_grad()`` too;
- ``onnx``: the ONNX file in an ONNX Runtime session (CPU, ``--threads`` intra-op threads).

It prints the largest absolute difference of the program's and the ONNX output to eager's,
whether all three picked the same experts, the median times and their ratios to eager. PyTorch
and ONNX Runtime both run on ``--threads`` threads (1 by default). The last line is one JSON
object with these figures.

    python benchmarks/export_latency.py [--preset tiny] [--sizes 64x64 121x93 256x256]
        [--batch 1] [--threads 1] [--networks reference example]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import example_network, interleaved_medians

from contrastive_prompts import SparsePromptIR, record_routing
from contrastive_prompts.app.export import export_onnx, export_program
from contrastive_prompts.core import prompt_layers
from contrastive_prompts.reference import MODEL_PRESETS


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


def measure(
    model: nn.Module, sizes: list[tuple[int, int]], size_multiple: int, args: Any
) -> dict[str, Any]:
    import onnxruntime as ort

    model.eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, 32, 32, generator=generator)
    started = time.perf_counter()
    program = export_program(model, example, size_multiple=size_multiple, return_routing=True)
    export_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = export_onnx(program, Path(folder) / "model.onnx")
        onnx_export_s = time.perf_counter() - started
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runner = program.module()
    figures: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "prompt_layers": len(prompt_layers(model)),
        "export_s": export_s,
        "onnx_export_s": onnx_export_s,
        "sizes": {},
    }
    print(f"  export: program {export_s:.1f} s, ONNX {onnx_export_s:.1f} s")
    print(
        f"  {'size':>9} {'program diff':>13} {'onnx diff':>10} {'experts':>8} "
        f"{'eager ms':>9} {'program ms':>11} {'onnx ms':>8} {'program/eager':>14} "
        f"{'onnx/eager':>11}"
    )
    # a network that takes only multiples of size_multiple gets the sizes rounded down
    sizes = [(h - h % size_multiple, w - w % size_multiple) for h, w in sizes]
    for height, width in sizes:
        x = torch.rand(args.batch, 3, height, width, generator=generator)
        feed = {"input": x.numpy()}
        with torch.no_grad(), record_routing(model) as log:
            expected = model(x)
        out, routing = runner(x)
        onnx_out, *onnx_routing = session.run(None, feed)
        program_diff = (out - expected).abs().max().item()
        onnx_diff = (torch.from_numpy(onnx_out) - expected).abs().max().item()
        same_experts = all(
            torch.equal(mine, eager.indices) and torch.equal(torch.from_numpy(theirs), mine)
            for mine, theirs, eager in zip(routing.values(), onnx_routing, log, strict=True)
        )

        def under_no_grad(module: nn.Module, x: torch.Tensor = x) -> Any:
            with torch.no_grad():
                return module(x)

        calls = {
            "eager": lambda: under_no_grad(model),
            "program": lambda: under_no_grad(runner),
            "onnx": lambda feed=feed: session.run(None, feed),
        }
        medians = interleaved_medians(calls, repeats=args.repeats, warmup=args.warmup)
        row = {
            "program_max_abs_diff": program_diff,
            "onnx_max_abs_diff": onnx_diff,
            "same_experts": same_experts,
            **{f"{name}_s": seconds for name, seconds in medians.items()},
            "program_over_eager": medians["program"] / medians["eager"],
            "onnx_over_eager": medians["onnx"] / medians["eager"],
        }
        figures["sizes"][f"{height}x{width}"] = row
        print(
            f"  {height:>4}x{width:<4} {program_diff:13.2e} {onnx_diff:10.2e} "
            f"{'same' if same_experts else 'DIFFER':>8} {medians['eager'] * 1e3:9.2f} "
            f"{medians['program'] * 1e3:11.2f} {medians['onnx'] * 1e3:8.2f} "
            f"{row['program_over_eager']:14.3f} {row['onnx_over_eager']:11.3f}"
        )
    return figures


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--sizes", nargs="+", default=["64x64", "121x93", "256x256"],
                        help="HxW of the timed inputs (none is used at export)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of PyTorch and of ONNX Runtime")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["reference"],
        choices=["reference", "example"],
        help="example: build_network() of examples/plug_into_your_network.py",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [parse_size(text) for text in args.sizes]
    print(
        f"batch={args.batch} threads={args.threads} torch={torch.__version__} "
        f"onnxruntime={ort.__version__}"
    )
    results = {}
    for name in args.networks:
        print(f"{name}" + (f" ({args.preset})" if name == "reference" else ""))
        if name == "reference":
            model, size_multiple = SparsePromptIR(args.preset), 1
        else:  # a network that halves and doubles its resolution without padding
            model, size_multiple = example_network(), 2
        results[name] = measure(model, sizes, size_multiple, args)
    print("diff: largest absolute difference to eager; times are medians, ratios over eager")
    print(
        json.dumps(
            {
                "preset": args.preset,
                "batch": args.batch,
                "threads": args.threads,
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "networks": results,
            }
        )
    )


if __name__ == "__main__":
    main()
