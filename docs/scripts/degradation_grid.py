"""Why: docs/degradations.md shows the library's degradations; this redraws them when they change.

Writes ``docs/images/degradations.png`` (every degradation) and ``degradation_<name>.png`` beside
it (one at three strengths next to the clean crop). Run from the repository root:
``python docs/scripts/degradation_grid.py``; deterministic (seed 0, scikit-image's ``chelsea``).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from PIL import Image

from contrastive_prompts.app import degradations as D
from contrastive_prompts.app.data import sample_images

PANELS = [
    ("clean", None),
    ("gaussian_noise (sigma 25)", lambda x, g: D.gaussian_noise(x, 25.0, generator=g)),
    ("haze (beta 0.12)", lambda x, g: D.haze(x, 0.12, generator=g)),
    ("rain_streaks", lambda x, g: D.rain_streaks(x, generator=g)),
    ("gaussian_blur (sigma 2)", lambda x, g: D.gaussian_blur(x, 2.0, generator=g)),
    ("motion_blur (length 15)", lambda x, g: D.motion_blur(x, 15.0, angle=30.0, generator=g)),
    ("low_light", lambda x, g: D.low_light(x, generator=g)),
    ("jpeg_compression (q 15)", lambda x, g: D.jpeg_compression(x, 15.0, generator=g)),
]

# one strip per degradation: (name, [(title, fn), ...] at three strengths)
STRIPS = [
    ("noise", [(f"sigma {s}", lambda x, g, s=s: D.gaussian_noise(x, float(s), generator=g))
               for s in (15, 25, 50)]),
    ("haze", [(f"beta {b}", lambda x, g, b=b: D.haze(x, b, generator=g))
              for b in (0.04, 0.12, 0.2)]),
    ("rain", [(f"density {d}", lambda x, g, d=d: D.rain_streaks(x, density=d, generator=g))
              for d in (0.002, 0.005, 0.01)]),
    ("blur", [("gaussian sigma 2", lambda x, g: D.gaussian_blur(x, 2.0, generator=g)),
              ("motion length 9", lambda x, g: D.motion_blur(x, 9.0, angle=30.0, generator=g)),
              ("motion length 21", lambda x, g: D.motion_blur(x, 21.0, angle=-45.0, generator=g))]),
    ("low_light", [(f"gain {k}", lambda x, g, k=k: D.low_light(x, gain=k, generator=g))
                   for k in (0.6, 0.4, 0.2)]),
    ("jpeg", [(f"quality {q}", lambda x, g, q=q: D.jpeg_compression(x, float(q), generator=g))
              for q in (50, 20, 8)]),
]  # fmt: skip


def save(fig: plt.Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    # a 256-colour palette keeps the file small (photographs compress badly as RGB PNG)
    picture = Image.open(buffer).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    picture.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def draw(x: torch.Tensor, panels: list, seed: int, out: Path, rows: int, height: float) -> None:
    fig, axes = plt.subplots(rows, 4, figsize=(8, height), dpi=100)
    for ax, (title, fn) in zip(axes.flat, panels, strict=True):
        y = x if fn is None else fn(x, torch.Generator().manual_seed(seed))
        ax.imshow(y[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/images/degradations.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=160, help="side of each panel in pixels")
    args = parser.parse_args()

    image = sample_images(["chelsea"])["chelsea"]
    # a square crop around the cat's face, downscaled to the panel size
    crop = image[:, 20:300, 80:360][None]
    x = torch.nn.functional.interpolate(crop, size=(args.size, args.size), mode="area")

    out = Path(args.out)
    draw(x, PANELS, args.seed, out, rows=2, height=4.4)
    for name, panels in STRIPS:
        draw(x, [("clean", None), *panels], args.seed, out.parent / f"degradation_{name}.png",
             rows=1, height=2.3)  # fmt: skip


if __name__ == "__main__":
    main()
