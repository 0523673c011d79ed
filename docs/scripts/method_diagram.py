"""Draw the picture of the method: the reference network and the path of the negatives.

``docs/images/method.svg`` shows ``SparsePromptIR`` (the encoder levels and the latent, the
decoder levels with its three prompt stages, each a ``SparsePrompt`` expert bank and a
``PromptFusion``) and how a CPL step gets its negatives: the encoder and the latent run once, the
decoder runs from the first prompt stage on once more for each of the M negatives, without
gradient, under negative prompts, and the CPR loss pulls the output to the clean image and pushes
it away from the negatives.

Run from the repository root: ``python docs/scripts/method_diagram.py``. The file is the same on
every run with the same matplotlib (fixed SVG hash salt, no date in the metadata, text kept as
text), so ``tests/test_method_diagram.py`` can compare it with the committed one.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

OUT = Path("docs/images/method.svg")

# colours
INK = "#263238"
ENCODER = "#e3f2fd"
ENCODER_EDGE = "#1565c0"
DECODER = "#fff3e0"
DECODER_EDGE = "#e65100"
LEVEL = "#ffffff"
PROMPT = "#ede7f6"
PROMPT_EDGE = "#5e35b1"
OWN = "#1e88e5"  # the expert the router keeps (the sample's own prompt)
NEGATIVE = "#d81b60"  # an expert it did not keep (a negative prompt)
PULL = "#2e7d32"

# rows (centre heights) shared by the encoder and the decoder columns
ROW_TOP, ROW_1, ROW_P1, ROW_2, ROW_P2, ROW_3, ROW_LATENT = 73.0, 63.0, 52.0, 41.0, 30.0, 19.0, 8.0
ENC_X, ENC_W = 13.0, 22.0  # encoder column
DEC_X, DEC_W = 55.0, 34.0  # decoder column
LEVEL_H, STAGE_H = 5.5, 8.0


def box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str = "",
    *,
    face: str = LEVEL,
    edge: str = INK,
    size: float = 7.5,
    weight: str = "normal",
    linestyle: str = "-",
    zorder: float = 2,
) -> None:
    """A rounded box with ``(x, y)`` its lower left corner and centred text."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.8",
            facecolor=face,
            edgecolor=edge,
            linewidth=0.9,
            linestyle=linestyle,
            zorder=zorder,
        )
    )
    if text:
        ax.text(
            x + w / 2,
            y + h / 2,
            text,
            ha="center",
            va="center",
            fontsize=size,
            color=INK,
            weight=weight,
            zorder=zorder + 0.5,
        )


def arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    color: str = INK,
    dashed: bool = False,
    both: bool = False,
    width: float = 1.0,
    rad: float = 0.0,
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="<|-|>" if both else "-|>",
            mutation_scale=8,
            color=color,
            linewidth=width,
            linestyle=(0, (4, 2)) if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=0,
            shrinkB=0,
            zorder=3,
        )
    )


def route(
    ax: Axes, points: Sequence[tuple[float, float]], *, color: str, dashed: bool = False
) -> None:
    """A path of straight segments through ``points``, with an arrowhead at the end."""
    xs, ys = zip(*points[:-1], strict=True)
    ax.plot(
        xs,
        ys,
        color=color,
        linewidth=1.0,
        linestyle=(0, (4, 2)) if dashed else "-",
        solid_capstyle="butt",
        zorder=3,
    )
    arrow(ax, points[-2], points[-1], color=color, dashed=dashed)


def label(ax: Axes, x: float, y: float, text: str, **kwargs: object) -> None:
    options: dict[str, object] = {"fontsize": 6.5, "color": INK, "ha": "left", "va": "center"}
    options.update(kwargs)
    ax.text(x, y, text, zorder=4, **options)  # type: ignore[arg-type]


def experts(ax: Axes, x: float, y: float, own: int, negative: int, n: int = 5) -> None:
    """A bank of ``n`` experts as squares: the kept one filled, one negative pick outlined."""
    side, gap = 1.3, 0.45
    for i in range(n):
        face = OWN if i == own else "#ffffff"
        edge = NEGATIVE if i == negative else INK
        ax.add_patch(
            Rectangle(
                (x + i * (side + gap), y),
                side,
                side,
                facecolor=face,
                edgecolor=edge,
                linewidth=1.3 if i == negative else 0.6,
                zorder=3,
            )
        )


def prompt_stage(ax: Axes, y: float, number: int, channels: str, own: int, negative: int) -> None:
    """Prompt stage ``number`` (prompt{number} + fusion{number}) centred at height ``y``."""
    bottom = y - STAGE_H / 2
    box(ax, DEC_X, bottom, DEC_W, STAGE_H, face=PROMPT, edge=PROMPT_EDGE)
    label(
        ax,
        DEC_X + 0.8,
        bottom + STAGE_H - 1.0,
        f"prompt stage {number}  ({channels})",
        fontsize=6.3,
        color=PROMPT_EDGE,
        va="center",
    )
    inner_h = STAGE_H - 2.6
    half = (DEC_W - 2.4) / 2
    left = DEC_X + 0.8
    box(ax, left, bottom + 0.6, half, inner_h, edge=PROMPT_EDGE, size=6.5)
    label(
        ax,
        left + half / 2,
        bottom + 0.6 + inner_h - 1.5,
        f"SparsePrompt prompt{number}",
        ha="center",
        fontsize=6.2,
    )
    experts(ax, left + half / 2 - 4.2, bottom + 1.3, own, negative)
    right = left + half + 0.8
    box(
        ax,
        right,
        bottom + 0.6,
        half,
        inner_h,
        f"PromptFusion\nfusion{number}",
        edge=PROMPT_EDGE,
        size=6.5,
    )
    arrow(
        ax,
        (left + half, bottom + 0.6 + inner_h / 2),
        (right, bottom + 0.6 + inner_h / 2),
        color=PROMPT_EDGE,
    )


def draw(ax: Axes) -> None:
    # the two halves of the network, shaded
    ax.add_patch(
        Rectangle(
            (ENC_X - 3, 2.5),
            ENC_W + 6,
            75.5,
            facecolor=ENCODER,
            edgecolor=ENCODER_EDGE,
            linewidth=0.8,
            linestyle=(0, (3, 2)),
            zorder=0,
        )
    )
    label(
        ax,
        ENC_X - 2.2,
        80.0,
        "encode: run once per input\n(no prompt here)",
        fontsize=7,
        color=ENCODER_EDGE,
        weight="bold",
        va="center",
    )
    ax.add_patch(
        Rectangle(
            (DEC_X - 3, 2.5),
            DEC_W + 6,
            75.5,
            facecolor=DECODER,
            edgecolor=DECODER_EDGE,
            linewidth=0.8,
            linestyle=(0, (3, 2)),
            zorder=0,
        )
    )
    label(
        ax,
        DEC_X - 2.2,
        80.0,
        "decode from the first prompt stage on: once with gradient (anchor),\n"
        "then for the M negatives without gradient, on B·M rows at once",
        fontsize=7,
        color=DECODER_EDGE,
        weight="bold",
        va="center",
    )

    # input
    box(ax, 0.5, ROW_TOP - LEVEL_H / 2, 9.0, LEVEL_H, "degraded\ninput x", size=7)
    arrow(ax, (9.5, ROW_TOP), (ENC_X, ROW_TOP))

    # encoder column, top to bottom
    enc = [
        (ROW_TOP, "patch embed  3x3 conv"),
        (ROW_1, "encoder level 1  ·  C"),
        (ROW_2, "encoder level 2  ·  2C"),
        (ROW_3, "encoder level 3  ·  4C"),
        (ROW_LATENT, "latent  ·  8C"),
    ]
    for y, text in enc:
        box(
            ax,
            ENC_X,
            y - LEVEL_H / 2,
            ENC_W,
            LEVEL_H,
            text,
            edge=ENCODER_EDGE,
            weight="bold" if "latent" in text else "normal",
        )
    centre = ENC_X + ENC_W / 2
    for (upper, _), (lower, _) in itertools.pairwise(enc):
        arrow(ax, (centre, upper - LEVEL_H / 2), (centre, lower + LEVEL_H / 2))
    for upper, lower in ((ROW_1, ROW_2), (ROW_2, ROW_3), (ROW_3, ROW_LATENT)):
        label(ax, centre + 0.8, (upper + lower) / 2, "downsample 1/2")

    # decoder column, bottom to top: stage 3, level 3, stage 2, level 2, stage 1, level 1, out
    prompt_stage(ax, ROW_LATENT, 3, "latent, 8C → 4C", own=1, negative=3)
    prompt_stage(ax, ROW_P2, 2, "4C → 4C", own=4, negative=0)
    prompt_stage(ax, ROW_P1, 1, "2C → 2C", own=2, negative=1)
    dec = [
        (ROW_3, "decoder level 3  ·  4C"),
        (ROW_2, "decoder level 2  ·  2C"),
        (ROW_1, "decoder level 1  ·  2C"),
    ]
    for y, text in dec:
        box(ax, DEC_X, y - LEVEL_H / 2, DEC_W, LEVEL_H, text, edge=DECODER_EDGE)
    box(
        ax,
        DEC_X,
        ROW_TOP - LEVEL_H / 2,
        DEC_W,
        LEVEL_H,
        "refinement → 3x3 conv, + x",
        edge=DECODER_EDGE,
    )
    middle = DEC_X + DEC_W / 2
    chain = [
        (ROW_LATENT + STAGE_H / 2, ROW_3 - LEVEL_H / 2, True),
        (ROW_3 + LEVEL_H / 2, ROW_P2 - STAGE_H / 2, False),
        (ROW_P2 + STAGE_H / 2, ROW_2 - LEVEL_H / 2, True),
        (ROW_2 + LEVEL_H / 2, ROW_P1 - STAGE_H / 2, False),
        (ROW_P1 + STAGE_H / 2, ROW_1 - LEVEL_H / 2, True),
        (ROW_1 + LEVEL_H / 2, ROW_TOP - LEVEL_H / 2, False),
    ]
    for low, high, up in chain:
        arrow(ax, (middle, low), (middle, high))
        if up:
            label(ax, middle + 0.8, (low + high) / 2, "upsample 2x, concat skip")

    # the encoder's features: into the first prompt stage and along the skips
    arrow(ax, (ENC_X + ENC_W, ROW_LATENT), (DEC_X, ROW_LATENT))
    for y, level in ((ROW_3, 3), (ROW_2, 2), (ROW_1, 1)):
        arrow(ax, (ENC_X + ENC_W, y), (DEC_X, y), color=ENCODER_EDGE)
        label(ax, ENC_X + ENC_W + 1.0, y + 1.2, f"skip enc{level}", color=ENCODER_EDGE)
    label(ax, ENC_X + ENC_W + 1.0, ROW_LATENT + 1.2, "latent")
    label(
        ax,
        ENC_X + ENC_W + 3.6,
        ROW_LATENT - 3.4,
        "kept: serve all\nM negatives",
        fontsize=6.3,
        color=ENCODER_EDGE,
        style="italic",
    )

    # outputs and the loss
    out_x, out_w = 98.0, 28.0
    anchor_y, neg_y, clean_y = 57.0, 36.0, ROW_TOP
    box(ax, out_x, clean_y - LEVEL_H / 2, out_w, LEVEL_H, "clean image y", size=7, edge=PULL)
    box(
        ax,
        out_x,
        anchor_y - LEVEL_H / 2,
        out_w,
        LEVEL_H,
        "output a (anchor)\nown prompts, with gradient",
        size=6.8,
        edge=OWN,
    )
    right = DEC_X + DEC_W
    route(
        ax,
        [(right, ROW_TOP + 1.2), (95.5, ROW_TOP + 1.2), (95.5, anchor_y), (out_x, anchor_y)],
        color=OWN,
    )
    for k in (2, 1, 0):
        box(
            ax,
            out_x + 0.8 * k,
            neg_y - LEVEL_H / 2 - 0.8 * k,
            out_w - 1.6,
            LEVEL_H,
            edge=NEGATIVE,
            zorder=2 + (2 - k) * 0.1,
        )
    label(
        ax,
        out_x + out_w / 2 - 0.8,
        neg_y,
        "negatives $n_1 \\dots n_M$\nnegative prompts, no gradient",
        ha="center",
        fontsize=6.8,
    )
    route(
        ax,
        [(right, ROW_TOP - 1.2), (93.0, ROW_TOP - 1.2), (93.0, neg_y), (out_x, neg_y)],
        color=NEGATIVE,
        dashed=True,
    )
    label(ax, 93.6, 46.5, "M times", color=NEGATIVE, fontsize=6.5, weight="bold")
    # pull to the clean image, push from the negatives
    arrow(
        ax,
        (out_x + 6.0, anchor_y + LEVEL_H / 2),
        (out_x + 6.0, clean_y - LEVEL_H / 2),
        color=PULL,
        width=1.4,
    )
    label(ax, out_x + 7.0, (anchor_y + clean_y) / 2, "pull", color=PULL, fontsize=7, weight="bold")
    arrow(
        ax,
        (out_x + 6.0, anchor_y - LEVEL_H / 2),
        (out_x + 6.0, neg_y + LEVEL_H / 2),
        color=NEGATIVE,
        width=1.4,
        both=True,
    )
    label(
        ax,
        out_x + 7.0,
        (anchor_y + neg_y) / 2,
        "push apart",
        color=NEGATIVE,
        fontsize=7,
        weight="bold",
    )
    box(ax, out_x, 10.0, out_w, 13.0, face="#fafafa", edge=INK)
    label(ax, out_x + out_w / 2, 20.0, "CPL loss", ha="center", fontsize=7, weight="bold")
    label(
        ax,
        out_x + out_w / 2,
        14.8,
        "$L_1(a, y) + \\lambda\\,\\mathrm{CPR}(a, y, n_1 \\dots n_M)$\n"
        "CPR: a near y, far from every $n_j$\n(distances in a feature space)",
        ha="center",
        fontsize=6.3,
        linespacing=1.5,
    )

    # legend
    experts(ax, out_x, 4.6, own=0, negative=-1, n=1)
    label(ax, out_x + 2.2, 5.25, "expert the router keeps (own prompt)", fontsize=6.2)
    experts(ax, out_x, 1.6, own=-1, negative=0, n=1)
    label(ax, out_x + 2.2, 2.25, "unkept expert drawn for a negative", fontsize=6.2)


def render(out: Path) -> Path:
    """Draw the picture into ``out`` (``.svg`` or ``.png``) and return the path."""
    with matplotlib.rc_context(
        {
            "svg.hashsalt": "contrastive_prompts-method",
            "svg.fonttype": "path",
            "font.family": "DejaVu Sans",
            "path.simplify": False,
        }
    ):
        fig = plt.figure(figsize=(9.6, 6.45))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(0, 128)
        ax.set_ylim(0, 86)
        ax.axis("off")
        draw(ax)
        out.parent.mkdir(parents=True, exist_ok=True)
        metadata: dict[str, str | None] = (
            {"Date": None} if out.suffix == ".svg" else {"Software": None}
        )
        fig.savefig(out, metadata=metadata)
        plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="an .svg or .png file")
    args = parser.parse_args(argv)
    print(f"wrote {render(args.out)}")


if __name__ == "__main__":
    main()
