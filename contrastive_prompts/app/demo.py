"""The demo: train a small CPL restorer on the photos that ship with scikit-image.

[run_demo][contrastive_prompts.app.demo.run_demo] trains the ``tiny`` preset with Contrastive Prompt
Learning on four bundled photos degraded on the fly by the 3-task mix (noise at sigma 15 / 25 / 50,
rain, haze), then scores it on two held-out photos and writes to ``out_dir`` a before/after grid,
the metrics table, whether the prompt matters and the experts specialise, and the training
plots. [write_report][contrastive_prompts.app.demo.write_report]
does the scoring and writing for any model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from ..reference.model import SparsePromptIR
from .data import DegradedCopies, sample_split
from .effect import PromptEffect, collapse_warning, has_negatives, measure_effect
from .files import make_folder
from .metrics import EvaluationResult, batches_of, evaluate, names_of, psnr

__all__ = ["Report", "print_effect", "run_demo", "write_report"]


class Report(NamedTuple):
    """What [write_report][contrastive_prompts.app.demo.write_report] measured.

    Attributes:
        restored: the per-degradation table of the model.
        degraded: the per-degradation table of the degraded inputs themselves.
        effect: the [PromptEffect][contrastive_prompts.app.effect.PromptEffect] (negative and
            swap costs, the experts' specialisation), ``None`` for dense prompts.
    """

    restored: EvaluationResult
    degraded: EvaluationResult
    effect: PromptEffect | None


def _grid(
    model: SparsePromptIR,
    copies: DegradedCopies,
    image_index: int,
    path: Path,
    tile: int | None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_image = len(copies.names)
    rows = [copies[image_index * per_image + k] for k in range(per_image)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.6 * len(rows)), squeeze=False)
    with torch.no_grad():
        for r, (degraded, clean, label) in enumerate(rows):
            restored = model.restore(degraded[None], tile=tile)[0]
            for c, (title, image) in enumerate(
                (("degraded", degraded), ("restored", restored), ("clean", clean))
            ):
                ax = axes[r][c]
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                text = title
                if c < 2:
                    text += f"  {psnr(image[None], clean[None]).item():.2f} dB"
                if c == 0:
                    ax.set_ylabel(copies.names[int(label)])
                ax.set_title(text, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(
    model: SparsePromptIR,
    held_out: list[Tensor],
    out_dir: str | Path,
    *,
    mix: str = "3task",
    seed: int = 1,
    tile: int | None = None,
) -> Report:
    """Score ``model`` on ``held_out`` photos under every degradation of ``mix``, write a report.

    Writes ``grid.png`` (degraded, restored, clean, PSNR per tile for the first photo),
    ``metrics.md`` and ``metrics.json`` (the model against the degraded inputs themselves) and,
    for sparse prompts, ``prompt_effect.json``: the cost of a negative and of a swapped prompt
    and whether each prompt layer's experts specialise
    ([prompt_effect][contrastive_prompts.app.effect.prompt_effect]), also a section of
    ``metrics.md``. Needs matplotlib for the grid.

    Args:
        model: the restorer; its [restore][contrastive_prompts.SparsePromptIR.restore] is scored.
        held_out: clean photos in [0, 1].
        out_dir: the folder to write to (created if missing).
        mix: the degradation mix (a preset name of
            [make_mix][contrastive_prompts.app.degradations.make_mix]).
        seed: the seed of the degradations, so every report scores the same inputs.
        tile: tile side for large photos (``None``: one pass).

    Shape:
        - held_out: $(3, H, W)$ each, sizes may differ.

    Returns:
        The [Report][contrastive_prompts.app.demo.Report]: the tables of the model and of the
        inputs, and the prompt effect.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> model = SparsePromptIR("tiny").eval()
        >>> report = write_report(model, [torch.rand(3, 16, 16)], tmp.name)
        >>> report.restored.names
        ['noise_15', 'noise_25', 'noise_50', 'rain', 'haze']
        >>> sorted(p.name for p in Path(tmp.name).iterdir())
        ['grid.png', 'metrics.json', 'metrics.md', 'prompt_effect.json']
        >>> tmp.cleanup()
    """
    out_dir = Path(out_dir)
    make_folder(out_dir, "out_dir")
    copies = DegradedCopies(held_out, mix, seed=seed)
    restored = evaluate(lambda x: model.restore(x, tile=tile), copies, pad_multiple=1)
    baseline = evaluate(lambda x: x, copies, pad_multiple=1)
    effect = None
    if has_negatives(model):
        effect = measure_effect(
            model,
            lambda: batches_of(copies),
            names=names_of(copies),
            num_negatives=1,
            generator=torch.Generator().manual_seed(seed),
            label_negatives=False,
            forward=lambda x: model.restore(x, tile=tile),
            y_channel=False,
            where="write_report",
        )
    lines = [
        "# Held-out photos: restored by the model",
        "",
        restored.to_markdown(),
        "",
        "# The degraded inputs themselves",
        "",
        baseline.to_markdown(),
        "",
    ]
    if effect is not None:
        lines += [
            "# Does the prompt matter, and do the experts specialise?",
            "",
            "PSNR under the model's own prompts, under negative prompts (experts its routers did "
            "not select) and under swapped prompts (the experts another degradation uses most).",
            "",
            effect.table(),
            "",
        ]
        (out_dir / "prompt_effect.json").write_text(json.dumps(effect.to_dict(), indent=2))
    (out_dir / "metrics.md").write_text("\n".join(lines))
    summary = {
        name: {
            "degraded_psnr": baseline.psnr[name],
            "restored_psnr": restored.psnr[name],
            "degraded_ssim": baseline.ssim[name],
            "restored_ssim": restored.ssim[name],
        }
        for name in restored.names
    }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    _grid(model, copies, 0, out_dir / "grid.png", tile)
    return Report(restored, baseline, effect)


def run_demo(
    out_dir: str | Path = "results/demo",
    *,
    steps: int | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Path]:
    """Train the ``demo`` recipe on the bundled photos and write the report to ``out_dir``.

    Args:
        out_dir: where the grid, metrics and plots go (the run itself goes in ``out_dir/run``).
        steps: training steps (the recipe's 600 by default: a few minutes on a 2-core CPU).
        overwrite: replace an earlier demo's run in ``out_dir/run`` (refused otherwise, before
            anything is written).
        **overrides: other [TrainConfig][contrastive_prompts.app.config.TrainConfig] fields.

    Returns:
        ``{what: path}`` of everything written.

    Examples:
        Training and scoring the full-size held-out photos take minutes on a CPU, so this one
        is not run as a test (``tests/test_examples.py`` runs the demo script instead):

        >>> written = run_demo("results/demo", steps=20)  # doctest: +SKIP
        >>> sorted(written)  # doctest: +SKIP
        ['checkpoint', 'expert use plot', 'grid', 'loss plot', 'metrics', 'prompt effect',
         'validation plot']
    """
    from .config import RECIPES
    from .train import Trainer

    out_dir = Path(out_dir)
    config = dataclasses.replace(RECIPES["demo"], out_dir=str(out_dir / "run"), **overrides)
    if steps is not None:
        config = dataclasses.replace(config, steps=steps, val_every=max(1, steps // 3))
    trainer = Trainer(config)
    print(
        f"training the {config.preset!r} preset with CPL for {config.steps} steps "
        f"on {len(trainer.train_data)} bundled photos (3-task degradations)"  # type: ignore[arg-type]
    )
    trainer.fit(overwrite=overwrite)
    model = cast(SparsePromptIR, trainer.ema.module).eval()  # the Trainer builds a SparsePromptIR
    report = write_report(model, sample_split()[1], out_dir, mix=config.mix)
    print()
    print(report.restored.to_markdown())
    print(
        f"\naverage PSNR on held-out photos: {report.degraded.average_psnr:.2f} dB degraded -> "
        f"{report.restored.average_psnr:.2f} dB restored"
    )
    print_effect(report.effect)
    written = {
        "grid": out_dir / "grid.png",
        "metrics": out_dir / "metrics.md",
        "prompt effect": out_dir / "prompt_effect.json",
        "loss plot": Path(config.out_dir) / "loss.png",
        "validation plot": Path(config.out_dir) / "validation.png",
        "expert use plot": Path(config.out_dir) / "experts.png",
        "checkpoint": Path(config.out_dir) / "last.pt",
    }
    print("\nwritten:")
    for what, path in written.items():
        print(f"  {what:16} {path}")
    return written


def print_effect(effect: PromptEffect | None) -> None:
    """One paragraph: the swap and negative costs, each layer's specialisation, any warning."""
    if effect is None:
        return
    layers = ", ".join(f"{layer} {found.nmi:.2f}" for layer, found in effect.specialisation.items())
    print(
        f"\nthe prompt matters: a swapped prompt (another degradation's experts) costs "
        f"{effect.average('swap_cost'):.2f} dB, a negative prompt (random other experts) "
        f"{effect.average('cost'):.2f} dB; specialisation of the experts (NMI, 1 = one "
        f"expert per degradation): {layers}"
    )
    warning = collapse_warning(effect.specialisation)
    if warning:
        print(warning)
