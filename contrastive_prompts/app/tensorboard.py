"""Training runs in TensorBoard: what the trainer logs when ``TrainConfig.tensorboard`` is on.

[TensorBoardLog][contrastive_prompts.app.tensorboard.TensorBoardLog] writes, under
``<out_dir>/tensorboard``: every step's losses (``train/loss``, ``train/l1``, ``train/cpr``,
``train/balance``, ``train/routing``), learning rate and gradient norm; at each validation, PSNR
and SSIM per degradation and on average, the cost of a negative and of a swapped prompt
(``val/negative_cost``, ``val/swap_cost``) and each prompt layer's specialisation
(``specialisation/<layer>``, the normalised mutual information of degradation and expert), the
expert use per degradation since the last validation (one image
per prompt layer: a row per degradation, a column per expert, brighter for more use) and a grid
of validation images (degraded, restored, clean). A resumed run writes into the same directory
and tells TensorBoard to drop what a crashed run had logged after its checkpoint, so no step is
shown twice.

It needs the ``tensorboard`` package (``pip install ".[tensorboard]"``); the JSON-lines log and
the PNG plots need nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._checks import InputError
from .effect import PromptEffect

__all__ = ["TensorBoardLog", "expert_use_image", "image_grid"]


def expert_use_image(counts: Sequence[Sequence[float]], *, cell: int = 24) -> Tensor:
    """A ``(labels * cell, experts * cell)`` grey image of expert use, each row scaled to sum 1.

    Args:
        counts: ``(labels, experts)`` selection counts.
        cell: pixels per entry.

    Examples:
        >>> expert_use_image([[3, 1], [0, 0]], cell=1)
        tensor([[0.7500, 0.2500],
                [0.0000, 0.0000]])
    """
    table = torch.as_tensor(counts, dtype=torch.float32)
    shares = table / table.sum(dim=1, keepdim=True).clamp_min(1)
    return shares.repeat_interleave(cell, dim=0).repeat_interleave(cell, dim=1)


def image_grid(rows: Sequence[Sequence[Tensor]], *, gap: int = 2) -> Tensor:
    """Images ``(3, h, w)`` laid out in rows on a white background: one ``(3, H, W)`` image.

    Every row holds the same number of images; images of one row may differ in size.

    Examples:
        >>> image_grid([[torch.zeros(3, 4, 4), torch.ones(3, 4, 6)]], gap=1).shape
        torch.Size([3, 6, 13])
    """
    columns = {len(row) for row in rows}
    if len(columns) != 1:
        raise InputError(f"image_grid: expected rows of one length, got lengths {sorted(columns)}")
    heights = [max(image.shape[-2] for image in row) for row in rows]
    widths = [max(row[j].shape[-1] for row in rows) for j in range(columns.pop())]
    grid = torch.ones(
        3, sum(heights) + gap * (len(heights) + 1), sum(widths) + gap * (len(widths) + 1)
    )
    top = gap
    for row, height in zip(rows, heights, strict=True):
        left = gap
        for image, width in zip(row, widths, strict=True):
            h, w = image.shape[-2:]
            grid[:, top : top + h, left : left + w] = image.detach().float().cpu().clamp(0, 1)
            left += width + gap
        top += height + gap
    return grid


class TensorBoardLog:
    """The trainer's TensorBoard writer (rank 0 only).

    Args:
        log_dir: where the event files go.
        label_names: the degradations, in label order: the rows of the expert-use images.
        start_step: the step the run starts from; above 0 (a resumed run), events a crashed run
            logged after it are dropped by TensorBoard.

    Raises:
        InputError: the ``tensorboard`` package is not installed.
    """

    def __init__(
        self, log_dir: str | Path, *, label_names: Sequence[str], start_step: int = 0
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch raises ImportError when tensorboard is missing
            raise InputError(
                "TrainConfig: expected the tensorboard package for tensorboard=True, got none "
                f"installed ({error}); pip install tensorboard, or the package's tensorboard extra"
            ) from error
        self.writer = SummaryWriter(
            str(log_dir), purge_step=start_step + 1 if start_step > 0 else None
        )
        self._counts: list[Any] = []
        rows = ", ".join(f"{i}: {name}" for i, name in enumerate(label_names))
        self.writer.add_text("experts/rows", f"rows of the expert-use images: {rows}", start_step)

    def step(self, record: dict[str, Any]) -> None:
        """One optimisation step's record from the trainer."""
        step = record["step"]
        for key in ("loss", "l1", "cpr", "balance", "routing", "lr", "grad_norm"):
            if key in record:
                self.writer.add_scalar(f"train/{key}", record[key], step)
        self._counts.append((record["stages"], record["expert_counts"]))

    def validation(
        self,
        step: int,
        psnr: dict[str, float],
        ssim: dict[str, float],
        examples: Sequence[tuple[Tensor, Tensor, Tensor]],
        *,
        effect: PromptEffect | None = None,
    ) -> None:
        """Scores per degradation, expert use since the last validation, and an image grid;
        with ``effect``, the negative and swap costs and each layer's specialisation."""
        for name, value in psnr.items():
            self.writer.add_scalar(f"val_psnr/{name}", value, step)
        for name, value in ssim.items():
            self.writer.add_scalar(f"val_ssim/{name}", value, step)
        if psnr:
            self.writer.add_scalar("val/average_psnr", sum(psnr.values()) / len(psnr), step)
            self.writer.add_scalar("val/average_ssim", sum(ssim.values()) / len(ssim), step)
        if effect is not None:
            self.writer.add_scalar("val/negative_cost", effect.average("cost"), step)
            self.writer.add_scalar("val/swap_cost", effect.average("swap_cost"), step)
            for layer, found in effect.specialisation.items():
                self.writer.add_scalar(f"specialisation/{layer}", found.nmi, step)
        if self._counts:
            stages = self._counts[-1][0]
            for i, stage in enumerate(stages):
                total = torch.stack(
                    [torch.as_tensor(counts[i], dtype=torch.float32) for _, counts in self._counts]
                ).sum(dim=0)
                image = expert_use_image(total.tolist())
                self.writer.add_image(f"experts/{stage}", image, step, dataformats="HW")
            self._counts = []
        if examples:
            grid = image_grid([list(example) for example in examples])
            self.writer.add_image("val/degraded_restored_clean", grid, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
