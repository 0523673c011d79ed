"""Several restoration networks and a gate that gives each image to one of them.

A model taught a new degradation by a copy of itself (the application's growth runs, ``growth
="gated"``) is a [GatedRestorer][contrastive_prompts.reference.GatedRestorer]: the untouched model
first, then a network per group of degradations added later, and an
[ImageGate][contrastive_prompts.reference.ImageGate] that sends each image to one of them. An image
the gate leaves with the first network is restored by that network itself, bit for bit.

The gate reads simple statistics of an image's tiles (per channel: the level, the contrast, the
extremes and how much neighbouring pixels differ), scores every tile with a small perceptron and
lets the tiles vote: a whole-image decision that costs a few reductions, whatever the networks. It
knows nothing of files or training: the application fits it (``app.growth.fit_gate``) and stores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import InputError, InputTypeError, check_int_range, check_shape, check_spatial

__all__ = ["GATE_HIDDEN", "GATE_TILE", "GatedRestorer", "ImageGate", "tile_statistics"]

GATE_TILE = 64
"""The side of the tiles an [ImageGate][contrastive_prompts.reference.ImageGate] reads, by
default."""

GATE_HIDDEN = 32
"""Hidden units of an [ImageGate][contrastive_prompts.reference.ImageGate]'s perceptron, by
default."""

STATISTICS = 21
"""Numbers per tile: seven per channel (see
[tile_statistics][contrastive_prompts.reference.tile_statistics])."""

_FLOOR = 1e-3  # added to a mean difference before its logarithm


def tile_statistics(images: Tensor, tile: int = GATE_TILE) -> Tensor:
    """The statistics of the non-overlapping tiles of each image, in float32.

    Tiles are ``tile`` pixels a side (``min(tile, H, W)`` for a smaller image), from the top
    left corner; a remainder narrower than a tile at the right or bottom is not read. Seven
    numbers per channel, in this order, each for the three channels: the mean, the standard
    deviation (unbiased), the minimum, the maximum, and the logarithm of ``0.001`` plus the mean
    absolute difference between pixels one apart horizontally, one apart vertically and four
    apart horizontally. A spread or a difference that the tile is too small to hold counts as 0.
    The logarithms make ratios of differences linear: blur lowers the one-pixel differences more
    than the four-pixel ones, haze lowers both alike and raises the minimum.

    Args:
        images: ``(B, 3, H, W)`` images, ``H, W >= 1``.
        tile: the tile side, an integer >= 1.

    Returns:
        ``(B, T, 21)``: ``T`` tiles an image, in row order.

    Examples:
        >>> tile_statistics(torch.full((2, 3, 128, 96), 0.5)).shape  # 2 x 1 tiles of 64
        torch.Size([2, 2, 21])
        >>> tile_statistics(torch.full((1, 3, 8, 8), 0.5))[0, 0, :3].tolist()
        [0.5, 0.5, 0.5]
    """
    check_shape("tile_statistics", "images", images, ("B", 3, "H", "W"))
    check_spatial("tile_statistics", "images", images)
    check_int_range("tile_statistics", "tile", tile, 1)
    side = min(tile, *images.shape[-2:])
    # (B, 3, rows, columns, side, side) -> (B, T, 3, side, side)
    tiles = images.float().unfold(2, side, side).unfold(3, side, side)
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).flatten(1, 2)
    pixels = tiles.flatten(-2)
    zero = torch.zeros_like(pixels[..., 0])
    spread = pixels.std(-1) if pixels.shape[-1] > 1 and pixels.numel() else zero

    def difference(steps: Tensor) -> Tensor:
        mean = steps.abs().flatten(-2).mean(-1) if steps.numel() else zero
        return (mean + _FLOOR).log()

    return torch.cat(
        [
            pixels.mean(-1),
            spread,
            pixels.amin(-1),
            pixels.amax(-1),
            difference(tiles[..., 1:] - tiles[..., :-1]),
            difference(tiles[..., 1:, :] - tiles[..., :-1, :]),
            difference(tiles[..., 4:] - tiles[..., :-4]),
        ],
        -1,
    )


class ImageGate(nn.Module):
    """Which of ``classes`` networks restores each image: a vote of its tiles.

    Each tile's [tile_statistics][contrastive_prompts.reference.tile_statistics] are
    standardised by the buffers ``mean`` and ``std`` (the statistics of the tiles it was fitted
    on) and scored by a perceptron of one hidden layer (``hidden`` ReLU units); the tile votes
    for its highest score, and the image goes to the class with the most votes, the lowest class
    on a tie (class 0, the untouched network, when it is one of them). A new gate votes 0
    everywhere: its output layer starts at zero.

    Args:
        classes: how many networks it chooses between, an integer >= 2.
        tile: the tile side, an integer >= 1.
        hidden: units of the hidden layer, an integer >= 1.

    Examples:
        >>> gate = ImageGate(2)
        >>> gate(torch.rand(3, 3, 64, 64)).tolist()
        [0, 0, 0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, classes: int, *, tile: int = GATE_TILE, hidden: int = GATE_HIDDEN) -> None:
        super().__init__()
        for name, value, low in (("classes", classes, 2), ("tile", tile, 1), ("hidden", hidden, 1)):
            check_int_range("ImageGate", name, value, low)
        self.classes, self.tile, self.hidden = classes, tile, hidden
        self.register_buffer("mean", torch.zeros(STATISTICS))
        self.register_buffer("std", torch.ones(STATISTICS))
        output = nn.Linear(hidden, classes)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        self.score = nn.Sequential(nn.Linear(STATISTICS, hidden), nn.ReLU(), output)

    def tile_logits(self, statistics: Tensor) -> Tensor:
        """``(..., classes)`` scores of tiles from their ``(..., 21)`` statistics."""
        scores: Tensor = self.score((statistics - self.mean) / self.std)
        return scores

    def votes(self, images: Tensor) -> Tensor:
        """``(B, classes)``: how many tiles of each image vote for each class."""
        choice = self.tile_logits(tile_statistics(images, self.tile)).argmax(-1)
        return nn.functional.one_hot(choice, self.classes).sum(1)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``(B,)`` int64: the class each ``(B, 3, H, W)`` image goes to."""
        # argmax returns the first of equal maxima: a tie goes to the lowest class
        return self.votes(images).argmax(-1)

    def extra_repr(self) -> str:
        return f"classes={self.classes}, tile={self.tile}, hidden={self.hidden}"


class GatedRestorer(nn.Module):
    """Restore each image with the network its gate chooses.

    ``networks[0]`` is the model that was there first; ``networks[k]`` the one trained for a
    later group of degradations. Every network is called on the images the gate gives it, as
    one batch, and only on those: an image the gate gives ``networks[0]`` gets exactly the output
    ``networks[0]`` alone gives it (for networks that treat the images of a batch apart, as
    restoration networks in eval mode do).

    Args:
        networks: two or more restoration networks, each called as ``network(x)`` on
            ``(B, 3, H, W)`` images.
        gate: an [ImageGate][contrastive_prompts.reference.ImageGate] with one class per network.
        label_networks: for each degradation label the networks were trained on, the network
            that restores it (stored with the model; the gate is checked against it).

    Examples:
        >>> nets = [nn.Identity(), nn.Conv2d(3, 3, 1)]
        >>> model = GatedRestorer(nets, ImageGate(2), label_networks=[0, 0, 1])
        >>> x = torch.rand(2, 3, 16, 16)
        >>> torch.equal(model(x), x)  # a new gate gives every image to networks[0]
        True
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        gate: ImageGate,
        *,
        label_networks: Sequence[int] = (),
    ) -> None:
        super().__init__()
        where = "GatedRestorer"
        if isinstance(networks, nn.Module) or not isinstance(networks, Sequence):
            raise InputTypeError(
                f"{where}: expected networks to be a sequence of nn.Modules, got "
                f"{type(networks).__name__}"
            )
        strays = [type(n).__name__ for n in networks if not isinstance(n, nn.Module)]
        if strays:
            raise InputTypeError(f"{where}: expected nn.Modules as networks, got {strays}")
        if not isinstance(gate, ImageGate):
            raise InputTypeError(f"{where}: expected an ImageGate, got {type(gate).__name__}")
        if len(networks) != gate.classes:
            raise InputError(
                f"{where}: expected a gate with one class per network ({len(networks)}), got a "
                f"gate of {gate.classes} classes"
            )
        labels = list(label_networks)
        if any(
            isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(networks)
            for k in labels
        ):
            raise InputError(
                f"{where}: expected label_networks of integers in [0, {len(networks) - 1}], got "
                f"{labels}"
            )
        self.networks = nn.ModuleList(networks)
        self.gate = gate
        self.label_networks: tuple[int, ...] = tuple(labels)

    def route(self, x: Tensor) -> Tensor:
        """``(B,)``: the network each image goes to (see
        [ImageGate][contrastive_prompts.reference.ImageGate])."""
        check_shape("GatedRestorer", "x", x, ("B", 3, "H", "W"))
        check_spatial("GatedRestorer", "x", x)
        choice: Tensor = self.gate(x)
        return choice

    def _each(self, x: Tensor, run: Any) -> Tensor:
        """``run(network, images)`` for each network on the images the gate gives it."""
        choice = self.route(x)
        if choice.numel() == 0:  # an empty batch: the first network says what shape it has
            empty: Tensor = run(self.networks[0], x)
            return empty
        pieces: list[tuple[Tensor, Tensor]] = []
        for k in choice.unique().tolist():
            rows = (choice == k).nonzero()[:, 0]
            pieces.append((rows, run(self.networks[k], x[rows])))
        if len(pieces) == 1:  # one network: its output itself, whatever its shape
            return pieces[0][1]
        first = pieces[0][1]
        out = first.new_empty((x.shape[0], *first.shape[1:]))
        for rows, piece in pieces:
            out[rows] = piece
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Restore a ``(B, 3, H, W)`` batch, each image by the network the gate chooses."""
        return self._each(x, lambda network, images: network(images))

    @torch.no_grad()
    def restore(self, image: Tensor, **options: Any) -> Tensor:
        """Restore images of any size: the gate reads each whole image, then the network it
        chooses restores it with its own ``restore(image, **options)`` (tiling, for the
        reference model) or, for a network without one, in one pass, clamped to [0, 1].

        Args:
            image: ``(B, 3, H, W)`` or ``(3, H, W)`` images in [0, 1].
            **options: passed to each network's ``restore``.

        Returns:
            Restored images of the input's shape.
        """
        single = image.ndim == 3
        batch = image.unsqueeze(0) if single else image

        def run(network: nn.Module, images: Tensor) -> Tensor:
            restore = getattr(network, "restore", None)
            if callable(restore):
                restored: Tensor = restore(images, **options)
                return restored
            out: Tensor = network(images)
            return out.clamp(0, 1)

        out = self._each(batch, run)
        return out[0] if single else out

    def extra_repr(self) -> str:
        return f"label_networks={list(self.label_networks)}"
