"""PNG plots of a training run: loss curves, validation PSNR, expert use per degradation.

Needs matplotlib (``pip install matplotlib``, or ``pip install ".[examples]"`` in a clone of the
repository); without it the plots are skipped with a warning and training goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import make_folder

__all__ = ["plot_training"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: no plots (pip install matplotlib)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return plt


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if len(array) < window or window < 2:
        return array
    kernel = np.ones(window) / window
    head = np.array([array[: i + 1].mean() for i in range(window - 1)])
    return np.concatenate([head, np.convolve(array, kernel, mode="valid")])


def _legend(ax: Any, **options: Any) -> None:
    """A legend, where there is a labelled line (validation records may hold no score)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def plot_training(
    history: Sequence[dict[str, Any]],
    validations: Sequence[dict[str, Any]],
    label_names: Sequence[str],
    out_dir: str | Path,
) -> list[Path]:
    """Write ``loss.png``, ``validation.png`` (if validated) and ``experts.png`` to ``out_dir``.

    Args:
        history: per-step records with ``step``, ``loss``, ``l1``, ``cpr`` and
            ``expert_counts`` (per prompt layer, ``(labels, experts)`` counts) and optionally
            ``stages`` (the prompt layers' names, titling the panels).
        validations: records with ``step`` and ``psnr`` (``{name: dB}``).
        label_names: the degradation of each label.
        out_dir: the folder to write to.

    Returns:
        The paths written (none without matplotlib or without history).

    Examples:
        >>> import tempfile
        >>> history = [{"step": s, "loss": 1 / s, "l1": 0.8 / s, "cpr": 0.2 / s,
        ...             "expert_counts": [[[2, 0], [0, 2]]]} for s in (1, 2, 3)]
        >>> validations = [{"step": 3, "psnr": {"noise": 25.0, "rain": 22.0}}]
        >>> tmp = tempfile.TemporaryDirectory()
        >>> [p.name for p in plot_training(history, validations, ["noise", "rain"], tmp.name)]
        ['loss.png', 'validation.png', 'experts.png']
        >>> tmp.cleanup()
    """
    plt = _pyplot()
    if plt is None or not history:
        return []
    out_dir = Path(out_dir)
    make_folder(out_dir, "out_dir")
    written = []

    steps = [r["step"] for r in history]
    window = max(1, len(history) // 50)
    l1 = _smooth([r["l1"] for r in history], window)
    total = _smooth([r["loss"] for r in history], window)
    cpr = _smooth([r["cpr"] for r in history], window)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    # the total is L1 + lambda * CPR (+ balance): a hair from L1, so L1 is a wide pale band and the
    # total a thin line drawn over it
    axes[0].plot(steps, l1, color="tab:orange", linewidth=5, alpha=0.4, label="L1")
    gap = float(np.mean([r["loss"] - r["l1"] for r in history]))
    label = f"total, L1 + weighted terms ({gap:+.1e} from L1 on average)"
    axes[0].plot(steps, total, color="black", linewidth=1, zorder=3, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss (smoothed)")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, cpr, color="tab:green")
    axes[1].set_xlabel("step")
    # the subtractive mode (the default) is minus a distance; infonce and ratio are >= 0
    if max(r["cpr"] for r in history) <= 0:
        axes[1].axhline(0, color="grey", linewidth=0.8, linestyle=":")
        axes[1].set_title("contrastive prompt term (CPR): below 0 by design")
        axes[1].set_ylabel(
            "minus the feature distance to the\nnegatives (lower: prompts matter more)"
        )
    else:  # infonce or ratio: >= 0
        axes[1].set_title("contrastive prompt term (CPR)")
        axes[1].set_ylabel("CPR (lower: closer to the clean\nimage than to the negatives)")
    fig.tight_layout()
    written.append(out_dir / "loss.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    if validations:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        v_steps = [v["step"] for v in validations]
        for name in validations[-1]["psnr"]:
            ax.plot(v_steps, [v["psnr"].get(name, np.nan) for v in validations], "o-", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("validation PSNR per degradation (EMA weights)")
        _legend(ax, fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "validation.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    stages = [r["expert_counts"] for r in history if r.get("expert_counts")]
    names: list[str] = next((r["stages"] for r in reversed(history) if r.get("stages")), [])
    if stages:
        recent = stages[-max(1, len(stages) // 4) :]  # the last quarter of training
        totals = np.sum(np.asarray(recent, dtype=float), axis=0)  # (stages, labels, experts)
        fig, axes = plt.subplots(1, len(totals), figsize=(3.6 * len(totals), 3.2), squeeze=False)
        for i, (ax, counts) in enumerate(zip(axes[0], totals, strict=True)):
            share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_yticks(range(len(label_names)), labels=label_names, fontsize=8)
            ax.set_xticks(range(share.shape[1]))
            ax.set_xlabel("expert")
            ax.set_title(f"{names[i] if i < len(names) else f'stage {i + 1}'}: expert use")
            for (row, col), value in np.ndenumerate(share):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 else "black")  # fmt: skip
        fig.tight_layout()
        written.append(out_dir / "experts.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
