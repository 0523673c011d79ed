"""Where the work of a forward pass is: the prompt-free encoder and latent against the decoder.

Counts the floating-point operations of one forward pass of the reference model with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and attention, a
multiply-add counted as 2; elementwise operations are not counted), then of its two halves
alone: ``encode`` (the encoder and the latent, which no prompt reaches, so the negatives reuse
them) and ``decode`` (everything from the first prompt stage on, which every negative runs
again). Also the count of each of the model's top-level modules. The model is built on the meta
device: the count depends on shapes only, so nothing is allocated and the paper-size model
counts in seconds. The last line is one JSON object.

    python benchmarks/flops.py --preset base --size 128 [--batch 1] [--device meta]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from contrastive_prompts import SparsePromptIR
from contrastive_prompts.reference import MODEL_PRESETS, pad_to_multiple


def count(fn: Callable[..., object], *args: object) -> tuple[int, dict[str, int]]:
    """Total FLOPs of ``fn(*args)`` and the FLOPs of each module it called, by qualified name."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--size", type=int, default=128, help="side of the square input")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="meta", help="meta counts without allocating")
    args = parser.parse_args()

    model = SparsePromptIR(args.preset, device=args.device).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    padded = pad_to_multiple(x, 8)  # what forward hands to encode and decode
    forward, per_module = count(model, x)
    encode, _ = count(model.encode, padded)
    features = model.encode(padded)
    decode, _ = count(model.decode, padded, features)

    root = type(model).__name__
    modules = {
        name.removeprefix(f"{root}."): flops
        for name, flops in per_module.items()
        if name.startswith(f"{root}.") and name.count(".") == 1
    }
    print(f"{args.preset}, {args.size}x{args.size}, batch {args.batch}: one forward pass")
    print(f"{'part':34} {'GFLOP':>9} {'share':>7}")
    rows = (
        ("whole forward pass", forward),
        ("encoder + latent (encode)", encode),
        ("first prompt stage on (decode)", decode),
    )
    for label, flops in rows:
        print(f"{label:34} {flops / 1e9:9.2f} {flops / forward:7.1%}")
    print("\nper module, in call order:")
    for name, flops in modules.items():
        print(f"  {name:32} {flops / 1e9:9.3f} {flops / forward:7.1%}")
    print(
        json.dumps(
            {
                "preset": args.preset,
                "size": args.size,
                "batch": args.batch,
                "forward_flops": forward,
                "encode_flops": encode,
                "decode_flops": decode,
                "encode_share": encode / forward,
                "decode_share": decode / forward,
                "modules": modules,
            }
        )
    )


if __name__ == "__main__":
    main()
