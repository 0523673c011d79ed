"""Why: the pictures of docs/examples.md are `make demo`'s, copied here shrunk for the site.

python examples/train_all_in_one.py && python docs/scripts/gallery.py [results/demo]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def shrink(source: Path, target: Path, width: int) -> None:
    image = Image.open(source).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KiB")


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results" / "demo"
    images = ROOT / "docs" / "images"
    shrink(results / "grid.png", images / "demo_grid.png", 640)
    for name in ("loss", "validation", "experts"):
        shrink(results / "run" / f"{name}.png", images / f"demo_{name}.png", 900)


if __name__ == "__main__":
    main()
