"""Forward + backward cost of the prompt layer: sparse top-1 against dense prompts.

At the three prompt stages of the paper-size model for a 128x128 crop (METHOD.md section 2),
batch 8, it times ``SparsePrompt(top_k=1)`` (CPL), ``SparsePrompt(top_k=num_prompts)`` (PromptIR's
dense generator, computed the same way) and PromptIR's own formulation, which copies the bank
for every sample. Prints ratios measured in one run; the last line is one JSON object.

    python benchmarks/prompt_layer.py [--batch 8] [--crop 128] [--device cpu]
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

from contrastive_prompts import SparsePrompt

# (name, C, D, S, downscale) of prompt3, prompt2, prompt1 in the paper-size model
STAGES = (("prompt3", 384, 320, 16, 8), ("prompt2", 192, 128, 32, 4), ("prompt1", 96, 64, 64, 2))


def promptir_forward(layer: SparsePrompt, x: torch.Tensor) -> torch.Tensor:
    """PromptIR's PromptGenBlock as released: the bank repeated for every sample."""
    weights = F.softmax(layer.router(x.mean(dim=(-2, -1))), dim=1)
    bank = layer.prompts.unsqueeze(0).repeat(x.shape[0], 1, 1, 1, 1)
    prompt = (weights[:, :, None, None, None] * bank).sum(dim=1)
    return layer.conv(F.interpolate(prompt, x.shape[-2:], mode="bilinear"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    results = {}
    print(f"device={device} batch={args.batch} crop={args.crop} threads={torch.get_num_threads()}")
    print(f"{'stage':8} {'variant':9} {'time ms':>9} {'peak MiB':>9} {'largest MiB':>12}")
    for name, dim, prompt_dim, size, down in STAGES:
        side = args.crop // down
        x = torch.rand(args.batch, dim, side, side, device=device)
        layers = {
            "sparse": SparsePrompt(dim=dim, prompt_dim=prompt_dim, prompt_size=size, top_k=1),
            "dense": SparsePrompt(dim=dim, prompt_dim=prompt_dim, prompt_size=size, top_k=5),
        }
        for layer in layers.values():
            layer.to(device)
        layers["dense"].load_state_dict(layers["sparse"].state_dict())
        sparse, dense = layers["sparse"], layers["dense"]
        calls = {
            "sparse": lambda sparse=sparse, x=x: sparse(x).sum().backward(),
            "dense": lambda dense=dense, x=x: dense(x).sum().backward(),
            "promptir": lambda dense=dense, x=x: promptir_forward(dense, x).sum().backward(),
        }
        stage = {}
        medians = interleaved_medians(calls, repeats=args.repeats, device=device)
        for variant, call in calls.items():
            seconds = medians[variant]
            memory = peak_memory(call, device=device)
            stage[variant] = {
                "ms": seconds * 1e3,
                "peak_bytes": memory["peak"],
                "largest_bytes": memory["largest"],
            }
            print(
                f"{name:8} {variant:9} {seconds * 1e3:9.2f} {memory['peak'] / 2**20:9.1f} "
                f"{memory['largest'] / 2**20:12.1f}"
            )
        bank_copy = args.batch * 5 * prompt_dim * size * size * 4
        stage["time_sparse_over_dense"] = stage["sparse"]["ms"] / stage["dense"]["ms"]
        stage["time_sparse_over_promptir"] = stage["sparse"]["ms"] / stage["promptir"]["ms"]
        stage["memory_sparse_over_dense"] = (
            stage["sparse"]["peak_bytes"] / stage["dense"]["peak_bytes"]
        )
        stage["memory_sparse_over_promptir"] = (
            stage["sparse"]["peak_bytes"] / stage["promptir"]["peak_bytes"]
        )
        stage["per_sample_bank_copy_bytes"] = bank_copy
        stage["sparse_or_dense_materialise_bank_copy"] = (
            max(stage["sparse"]["largest_bytes"], stage["dense"]["largest_bytes"]) >= bank_copy
        )
        results[name] = stage
        print(
            f"{name:8} time sparse/dense {stage['time_sparse_over_dense']:.2f}  "
            f"sparse/promptir {stage['time_sparse_over_promptir']:.2f}  "
            f"peak memory sparse/dense {stage['memory_sparse_over_dense']:.2f}  "
            f"sparse/promptir {stage['memory_sparse_over_promptir']:.2f}  "
            f"bank copy made: {stage['sparse_or_dense_materialise_bank_copy']}"
        )
    print(json.dumps({"device": str(device), "batch": args.batch, "crop": args.crop, **results}))


if __name__ == "__main__":
    main()
