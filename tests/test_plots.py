"""The training plots: what the loss figure shows, and no legend without a labelled line."""

from __future__ import annotations

import warnings

import pytest

from contrastive_prompts.app.plots import plot_training

plt = pytest.importorskip("matplotlib.pyplot")

LABELS = ["noise", "rain"]


def history(cpr: float, steps: int = 20) -> list[dict]:
    """Records as the trainer logs them: the total a hair from L1 (lambda = 0.01)."""
    return [
        {
            "step": s,
            "l1": 0.1 / s,
            "cpr": cpr,
            "loss": 0.1 / s + 0.01 * cpr,
            "expert_counts": [[[2, 0], [0, 2]]],
        }
        for s in range(1, steps + 1)
    ]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures plot_training draws, kept open instead of closed."""
    kept: list = []
    close = plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for figure in kept:
        close(figure)


def test_the_total_loss_is_drawn_over_l1(tmp_path, figures):
    plot_training(history(-0.03), [], LABELS, tmp_path)
    loss_axes = figures[0].axes[0]
    lines = {line.get_label().split(",")[0]: line for line in loss_axes.get_lines()}
    l1, total = lines["L1"], lines["total"]
    # a thin line on top of a wide band: both visible although they differ by 3e-4
    assert total.get_zorder() > l1.get_zorder()
    assert l1.get_linewidth() >= 3 * total.get_linewidth()
    assert "-3.0e-04 from L1" in total.get_label()


def test_the_cpr_panel_says_why_it_is_negative(tmp_path, figures):
    plot_training(history(-0.03), [], LABELS, tmp_path)
    cpr_axes = figures[0].axes[1]
    assert "below 0" in cpr_axes.get_title()
    assert "minus the feature distance" in cpr_axes.get_ylabel()


def test_a_non_negative_cpr_is_not_called_negative(tmp_path, figures):
    plot_training(history(1.2), [], LABELS, tmp_path)  # infonce or ratio
    cpr_axes = figures[0].axes[1]
    assert "below 0" not in cpr_axes.get_title()
    assert "minus" not in cpr_axes.get_ylabel()


@pytest.mark.parametrize("validations", [[], [{"step": 20, "psnr": {}}]])
def test_no_legend_without_labelled_lines(tmp_path, validations):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "No artists with labels found"
        written = plot_training(history(-0.03), validations, LABELS, tmp_path)
    names = [path.name for path in written]
    assert names[0] == "loss.png" and names[-1] == "experts.png"
    assert ("validation.png" in names) == bool(validations)
