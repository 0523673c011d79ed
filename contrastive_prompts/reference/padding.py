"""Sizes a network needs: pad images up to a multiple of a size, or crop them down to one.

The reference model pads its input itself (to a multiple of 8) and crops its output back;
[crop_to_multiple][contrastive_prompts.reference.padding.crop_to_multiple] is the crop some
benchmark protocols apply to the images they score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import InputError, check_choice, check_int_range, check_shape

__all__ = ["MAX_PAD_MULTIPLE", "crop_to_multiple", "pad_to_multiple"]

MAX_PAD_MULTIPLE = 256
"""The largest multiple to pad to: restoration networks need 8 to 64 (a larger one pads a
small image to many times its pixels)."""


def pad_to_multiple(x: Tensor, multiple: int = 16, *, mode: str = "reflect") -> Tensor:
    """Pad the bottom and right so that height and width are multiples of ``multiple``.

    Crop back with ``out[..., :h, :w]``. ``"reflect"`` falls back to ``"replicate"`` along an axis
    too short to reflect (a pad of at least its size).

    Args:
        x: images.
        multiple: the size multiple, at most ``MAX_PAD_MULTIPLE`` (256); 1 leaves the images
            as they are.
        mode: ``"reflect"``, ``"replicate"`` or ``"constant"`` (zeros).

    Shape:
        - x: $(B, C, H, W)$.
        - output: $(B, C, \\lceil H/m \\rceil m, \\lceil W/m \\rceil m)$.

    Returns:
        The padded images.

    Examples:
        >>> pad_to_multiple(torch.rand(1, 3, 17, 30), 16).shape
        torch.Size([1, 3, 32, 32])
    """
    where = "pad_to_multiple"
    check_shape(where, "x", x, ("B", "C", "H", "W"))
    check_int_range(where, "multiple", multiple, 1, MAX_PAD_MULTIPLE)
    check_choice(where, "mode", mode, ("reflect", "replicate", "constant"))
    h, w = x.shape[-2:]
    # ceil(h / m) * m - h rather than (-h) % m: a traced size (torch.export, ONNX) is then seen
    # to pad to a multiple of m, and the graph pads by a symbolic amount, possibly 0, instead of
    # holding only for the sizes that needed no padding
    ph = (h + multiple - 1) // multiple * multiple - h
    pw = (w + multiple - 1) // multiple * multiple - w
    traced = isinstance(h, torch.SymInt) or isinstance(w, torch.SymInt)
    # one axis at a time, so that only an axis too short to reflect falls back to replicate
    # (a pad of at least its size; only an axis shorter than m can need one)
    if traced or pw:
        short = mode == "reflect" and w < multiple and pw >= w
        x = F.pad(x, (0, pw, 0, 0), mode="replicate" if short else mode)
    if traced or ph:
        short = mode == "reflect" and h < multiple and ph >= h
        x = F.pad(x, (0, 0, 0, ph), mode="replicate" if short else mode)
    return x


def crop_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Crop the bottom and right so that height and width are multiples of ``multiple``.

    Args:
        x: images at least ``multiple`` pixels on each side.
        multiple: the size multiple.

    Shape:
        - x: $(B, C, H, W)$.
        - output: $(B, C, \\lfloor H/m \\rfloor m, \\lfloor W/m \\rfloor m)$.

    Returns:
        A view of the cropped images.

    Examples:
        >>> crop_to_multiple(torch.rand(1, 3, 17, 30), 8).shape
        torch.Size([1, 3, 16, 24])
    """
    where = "crop_to_multiple"
    check_shape(where, "x", x, ("B", "C", "H", "W"))
    check_int_range(where, "multiple", multiple, 1)
    h, w = x.shape[-2:]
    if h < multiple or w < multiple:
        raise InputError(f"{where}: expected images of at least {multiple}x{multiple}, got {h}x{w}")
    return x[..., : h - h % multiple, : w - w % multiple]
