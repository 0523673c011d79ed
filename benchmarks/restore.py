"""Restoring large images: time per megapixel and peak memory, one pass against tiles.

For each size (``--megapixels``, 4:3 images) and each way (``none``: one pass; ``T``: tiles of
``T x T`` with ``--overlap``, ``--tile-batch`` tiles per forward pass; ``cl``: the same in
``channels_last`` memory format), it times ``model.restore`` (median of ``--repeats`` calls,
round-robin) and measures its peak memory in a separate call: ``torch.cuda.max_memory_allocated``
on a GPU, on a CPU the same quantity counted op by op (live tensors created by the call). Ways
whose memory would pass ``--memory-limit`` GiB by a first estimate are skipped and said so.

Tiled ways run with each of ``--routing`` (``image``: one routing per image from a first pass
over the tiles, the default of ``restore``; ``tile``: each tile routes itself); the untrained
model's routing does not matter for the time, the first pass does.

``--memory-only`` skips the timing (for the large preset on a CPU: its peak memory per tile is
the figure that says which tile fits a GPU).

The last line is one JSON object with every figure.

    python benchmarks/restore.py --preset tiny --megapixels 1 4 12 --tiles none 256 512 1024 \
        --routing image tile --json benchmarks/results/restore_cpu.json
    python benchmarks/restore.py --preset base --device cuda --megapixels 1 4 12
    python benchmarks/restore.py --preset base --memory-only --megapixels 1 --tiles 256 512 1024
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import interleaved_medians, library_state, peak_memory

from contrastive_prompts import SparsePromptIR
from contrastive_prompts.reference import MODEL_PRESETS


def image_of(megapixels: float, device: torch.device) -> torch.Tensor:
    """A ``(1, 3, H, W)`` 4:3 image of about ``megapixels``, smooth with fine noise."""
    width = int(round(math.sqrt(megapixels * 1e6 * 4 / 3) / 8) * 8)
    height = int(round(width * 3 / 4 / 8) * 8)
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, height // 16, width // 16, generator=g)
    image = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")
    image = (image + 0.05 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    return image.to(device)


def parse_way(text: str) -> tuple[int | None, bool]:
    """``none``, ``T`` or ``T:cl`` -> (tile, channels_last)."""
    tile, _, layout = text.partition(":")
    if layout not in ("", "cl"):
        raise SystemExit(f"restore: expected a way 'none', 'T' or 'T:cl', got {text!r}")
    return (None if tile == "none" else int(tile)), layout == "cl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 4, 12])
    parser.add_argument(
        "--tiles", nargs="+", default=["none", "256", "512", "1024"],
        help="ways to restore: none (one pass), a tile side T, or T:cl (channels_last)",
    )  # fmt: skip
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--tile-batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-limit", type=float, default=16.0, help="GiB")
    parser.add_argument("--routing", nargs="+", default=["image"], choices=["image", "tile"])
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SparsePromptIR(args.preset).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"SparsePromptIR {args.preset} ({params:,} parameters), device={device}, "
          f"threads={torch.get_num_threads()}, overlap={args.overlap}")  # fmt: skip

    results: dict[str, Any] = {}
    for megapixels in args.megapixels:
        image = image_of(megapixels, device)
        height, width = image.shape[-2:]
        actual = height * width / 1e6
        calls: dict[str, Callable[[], object]] = {}
        for text in args.tiles:
            tile, channels_last = parse_way(text)
            for tile_batch in args.tile_batch if tile is not None else [1]:
                if tile is not None and min(tile, height) * min(tile, width) * tile_batch > (
                    height * width
                ):
                    continue  # more pixels per pass than the image: the same as fewer tiles
                for routing in args.routing if tile is not None else ["image"]:
                    name = text if tile is None else f"{text} x{tile_batch} {routing}"
                    source = (
                        image.contiguous(memory_format=torch.channels_last)
                        if channels_last
                        else image
                    )

                    def call(
                        t=tile, b=tile_batch, x=source, cl=channels_last, r=routing
                    ) -> torch.Tensor:
                        if cl:
                            model.to(memory_format=torch.channels_last)
                        try:
                            return model.restore(
                                x, tile=t, overlap=args.overlap, tile_batch=b, routing=r
                            )
                        finally:
                            if cl:
                                model.to(memory_format=torch.contiguous_format)

                    calls[name] = call
        memory = {}
        for name, call in calls.items():
            memory[name] = peak_memory(call, device=device)["peak"] / 2**30
        print(f"{height}x{width} ({actual:.2f} MP): peak memory (GiB) "
              + ", ".join(f"{k} {v:.2f}" for k, v in memory.items()))  # fmt: skip
        entry: dict[str, Any] = {"height": height, "width": width, "memory_gib": memory}
        if not args.memory_only:
            timed = {k: v for k, v in calls.items() if memory[k] <= args.memory_limit}
            skipped = sorted(set(calls) - set(timed))
            if skipped:
                print(f"  not timed (over {args.memory_limit} GiB): {', '.join(skipped)}")
            times = interleaved_medians(timed, repeats=args.repeats, warmup=0, device=device)
            per_mp = {k: t / actual for k, t in times.items()}
            fastest = min(per_mp.values())
            for name, t in per_mp.items():
                print(f"  {name:<14} {t:8.3f} s/MP  {t / fastest:5.2f} of the fastest  "
                      f"{memory[name]:6.2f} GiB")  # fmt: skip
            entry["seconds_per_megapixel"] = per_mp
        results[f"{megapixels:g}"] = entry
    figures = {
        "preset": args.preset, "device": str(device), "overlap": args.overlap,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "library": library_state(), "sizes": results,
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    with torch.no_grad():
        main()
