"""Time the library's PSNR + SSIM against scikit-image's, and the degradation mixes' throughput.

Both metric implementations score the same ``--num-images`` random image pairs of
``--size`` x ``--size`` (RGB, float32) in one run; the figure is the median of ``--repeats`` runs.
The library scores the stack in batches of ``--batch-size``, timed on one thread (scikit-image
runs on one) and on torch's default thread count; scikit-image loops over the images.
The composer's throughput is measured on 128x128 crops with the 3-task and 5-task mixes. The last
line printed is one JSON object with every figure.

Usage: ``python benchmarks/metrics.py [--num-images 50] [--size 512]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from contrastive_prompts.app.degradations import MIXES, make_mix
from contrastive_prompts.app.metrics import psnr, ssim


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mix-batch", type=int, default=32)
    parser.add_argument("--mix-crop", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(args.seed)
    n, s = args.num_images, args.size
    clean = torch.rand(n, 3, s, s, generator=g)
    restored = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    clean_np = clean.permute(0, 2, 3, 1).numpy()
    restored_np = restored.permute(0, 2, 3, 1).numpy()

    def ours() -> tuple[np.ndarray, np.ndarray]:
        p, q = [], []
        for i in range(0, n, args.batch_size):
            x, y = restored[i : i + args.batch_size], clean[i : i + args.batch_size]
            p.append(psnr(x, y))
            q.append(ssim(x, y))
        return torch.cat(p).numpy(), torch.cat(q).numpy()

    def skimage() -> tuple[np.ndarray, np.ndarray]:
        pairs = list(zip(restored_np, clean_np, strict=True))
        p = [peak_signal_noise_ratio(b, a, data_range=1) for a, b in pairs]
        q = [structural_similarity(a, b, data_range=1, channel_axis=2) for a, b in pairs]
        return np.array(p), np.array(q)

    p_ours, q_ours = ours()
    p_sk, q_sk = skimage()
    default_threads = torch.get_num_threads()
    t_sk = median_seconds(skimage, args.repeats)
    # skimage runs on one thread: compare like with like, then with torch's own thread count
    torch.set_num_threads(1)
    t_ours = median_seconds(ours, args.repeats)
    torch.set_num_threads(default_threads)
    t_ours_mt = median_seconds(ours, args.repeats)
    print(f"PSNR+SSIM on {n} images {s}x{s} RGB (median of {args.repeats}):")
    print(f"  skimage.metrics                         {t_sk:8.3f} s")
    print(f"  contrastive_prompts.app.metrics, 1 thread   {t_ours:8.3f} s")
    print(f"  contrastive_prompts.app.metrics, {default_threads} threads  {t_ours_mt:8.3f} s")
    print(f"  speed-up (skimage / ours, 1 thread)     {t_sk / t_ours:8.2f}x")
    print(
        f"  max |diff| PSNR {np.abs(p_ours - p_sk).max():.2e} dB, "
        f"SSIM {np.abs(q_ours - q_sk).max():.2e} (skimage works in float32 here)"
    )

    figures: dict[str, object] = {
        "num_images": n,
        "size": s,
        "metrics_ours_s": round(t_ours, 4),
        "metrics_skimage_s": round(t_sk, 4),
        "metrics_speedup": round(t_sk / t_ours, 3),
        "metrics_ours_default_threads_s": round(t_ours_mt, 4),
        "metrics_speedup_default_threads": round(t_sk / t_ours_mt, 3),
        "max_abs_diff_psnr_db": float(np.abs(p_ours - p_sk).max()),
        "max_abs_diff_ssim": float(np.abs(q_ours - q_sk).max()),
    }

    crops = torch.rand(args.mix_batch, 3, args.mix_crop, args.mix_crop, generator=g)
    for preset in MIXES:
        mix = make_mix(preset)
        gen = torch.Generator().manual_seed(args.seed)
        mix(crops, generator=gen)  # warm-up
        for threads in (1, default_threads):
            torch.set_num_threads(threads)
            t = median_seconds(lambda mix=mix, gen=gen: mix(crops, generator=gen), args.repeats)
            rate = args.mix_batch / t
            print(
                f"DegradationMix {preset!r}, {threads} thread(s): {rate:8.1f} images/s "
                f"({args.mix_crop}px crops)"
            )
            figures[f"mix_{preset}_images_per_s_{threads}_threads"] = round(rate, 1)
        torch.set_num_threads(default_threads)

    figures["threads"] = default_threads
    figures["torch"] = torch.__version__
    figures["machine"] = platform.machine()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
