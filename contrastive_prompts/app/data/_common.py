"""The machinery the datasets share: per-item generators, crops and flips, skipping bad files.

Private: the public names live in [contrastive_prompts.app.data][contrastive_prompts.app.data].
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from contrastive_prompts._checks import InputError, InputTypeError

_T = TypeVar("_T")

# the attribute by which a read error carries the file it came from (see tagged, _SkippingReader)
PATH_TAG = "_image_path"


def derived_seed(value: int) -> int:
    """A seed computed from a run's seed, wrapped to the 64 bits a generator takes.

    A seed near the largest allowed, times the small factors a run mixes in, would overflow
    ``torch.Generator.manual_seed``; a value below ``2**64`` is kept as it is.
    """
    return value % 2**64


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # SeedSequence mixes the three numbers well, so neighbouring items get unrelated streams
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def random_crop(images: Sequence[Tensor], size: int, generator: torch.Generator) -> list[Tensor]:
    """The same random ``size`` x ``size`` crop of every image (padded by reflection if small)."""
    h, w = images[0].shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        mode = "reflect" if ph < h and pw < w else "replicate"
        images = [torch.nn.functional.pad(im[None], (0, pw, 0, ph), mode=mode)[0] for im in images]
        h, w = images[0].shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return [im[..., top : top + size, left : left + size] for im in images]


def flip_rotate(images: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """The same random horizontal flip and 90-degree rotation of every image."""
    flip = bool(torch.rand((), generator=generator) < 0.5)
    k = int(torch.randint(0, 4, (1,), generator=generator))
    out = []
    for im in images:
        im = im.flip(-1) if flip else im
        out.append(torch.rot90(im, k, dims=(-2, -1)).contiguous())
    return out


def center_crop_to(image: Tensor, h: int, w: int) -> Tensor:
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    return image[..., top : top + h, left : left + w]


@contextmanager
def tagged(path: Path) -> Iterator[None]:
    """Tag a read error raised inside with ``path``, so that `_SkippingReader` names it."""
    try:
        yield
    except (OSError, ValueError) as e:
        setattr(e, PATH_TAG, str(path))
        raise


def check_flag(where: str, name: str, value: object) -> None:
    """Check that ``value`` is a real ``bool``: a string such as ``"false"`` would read as true."""
    if not isinstance(value, bool):
        raise InputTypeError(
            f"{where}: expected {name} to be a bool (True or False), got {value!r}"
        )


class _SkippingReader:
    """Reads an item; on an unreadable file either raises, or warns, records it and moves on.

    With ``skip_unreadable`` (training) an unreadable file is skipped with a warning, recorded in
    ``skipped`` and replaced by the next readable item, so an epoch never stops half way.
    Without it (evaluation: [evaluate][contrastive_prompts.app.metrics.evaluate] switches it off
    for its run) the file is an error naming it, and no other image is scored in its place.
    """

    skipped: dict[str, str]
    skip_unreadable: bool = True

    def _read_item(self, index: int, read: Callable[[int], _T], size: int) -> _T:
        if not self.skip_unreadable:
            try:
                return read(index)
            except (OSError, ValueError) as e:
                path = getattr(e, PATH_TAG, None) or f"item {index}"
                reason = " ".join(str(e).split()) or type(e).__name__
                raise InputError(
                    f"{type(self).__name__}: expected a readable image, got {path}, which "
                    f"cannot be read: {reason}; no other image takes its place "
                    "(skip_unreadable=False, as evaluate sets it for its run)"
                ) from e
        for step in range(size):
            j = (index + step) % size
            try:
                return read(j)
            except (OSError, ValueError) as e:
                path = getattr(e, PATH_TAG, None) or f"item {j}"
                if path not in self.skipped:
                    self.skipped[path] = str(e)
                    warnings.warn(
                        f"{type(self).__name__}: skipping unreadable image {path}: {e}; the "
                        "next readable item takes its place (skip_unreadable=False raises "
                        "instead)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        reason = next(iter(self.skipped.values()), "")
        raise InputError(
            f"{type(self).__name__}: expected at least one readable image, got none of {size}; "
            f"unreadable: {', '.join(self.skipped)}; the first because {' '.join(reason.split())}"
        )

    @property
    def num_skipped(self) -> int:
        """How many unreadable files this copy of the dataset has met (per DataLoader worker)."""
        return len(self.skipped)
