"""Clean images degraded in code: on the fly for training, once with a fixed seed for testing.

[SyntheticDataset][contrastive_prompts.app.data.SyntheticDataset] draws a new crop, augmentation and
degradation for every item of every epoch;
[DegradedCopies][contrastive_prompts.app.data.DegradedCopies] puts every image under every
degradation of a mix once; [NoisyDataset][contrastive_prompts.app.data.NoisyDataset] adds Gaussian
noise at one level with a fixed seed (CBSD68-style testing).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastive_prompts._checks import InputError, check_int_range
from contrastive_prompts.app.degradations import DegradationMix, gaussian_noise, make_mix
from contrastive_prompts.app.degradations._ranges import check_noise_sigma

from ._common import (
    _SkippingReader,
    center_crop_to,
    check_flag,
    derived_seed,
    flip_rotate,
    item_generator,
    random_crop,
)
from .images import MAX_IMAGE_PIXELS, ImageSource, ImageStore, to_chw

__all__ = ["DegradedCopies", "NoisyDataset", "SyntheticDataset", "degraded_copies"]


class SyntheticDataset(_SkippingReader, Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Clean images degraded on the fly: random crops, flips, 90-degree rotations, a degradation.

    Item ``i`` of epoch ``e`` is drawn from a generator seeded by ``(seed, e, i)``, so it is the
    same in every run and DataLoader worker. Images come from folders (read on each access, or
    once with ``cache=True``) or from memory.

    Args:
        images: a folder, a list of folders or image files, or a list of in-memory images
            (``(C, H, W)`` tensors or ``(H, W, C)`` / ``(H, W)`` arrays; uint8 is scaled by 1/255).
        degradation: a [DegradationMix][contrastive_prompts.app.degradations.DegradationMix] or a
            preset name / list of names for
            [make_mix][contrastive_prompts.app.degradations.make_mix].
        crop_size: side of the square random crop (smaller images are padded by reflection);
            ``None`` keeps whole images.
        augment: random horizontal flips and 90-degree rotations.
        seed: base seed.
        repeat: the dataset length is ``repeat`` times the number of images.
        cache: keep decoded images in memory.
        max_pixels: the most pixels a file may declare, checked from its header before it is
            decoded (see [read_image][contrastive_prompts.app.data.read_image]); ``None``: no limit.
            A file above it is unreadable.
        skip_unreadable: on an unreadable file, warn, record it in ``skipped`` and serve the
            next readable item in its place (so an epoch never stops half way); ``False``
            raises an [InputError][contrastive_prompts.InputError] naming the file instead.

    Attributes:
        names: ``{label: name}``, the mix's task names by label.
        paths: the image files (empty for in-memory images).
        skipped: ``{path: error}`` of unreadable files met so far.
        skip_unreadable: as the argument.

    Raises:
        InputError: no image, a missing path, a folder without images, a bad in-memory image,
            a ``crop_size`` over twice every image's longest side (from the files' headers),
            or a bad ``crop_size``, ``repeat``, ``seed``, ``max_pixels`` or ``skip_unreadable``.

    Shape:
        - degraded, clean: $(3, S, S)$ with $S$ = ``crop_size``.
        - label: a scalar int64 tensor.

    Examples:
        >>> ds = SyntheticDataset([torch.rand(3, 40, 40)], "3task", crop_size=32, seed=0)
        >>> degraded, clean, label = ds[0]
        >>> degraded.shape, ds.names[int(label)] in ds.names.values()
        (torch.Size([3, 32, 32]), True)
        >>> ds.names
        {0: 'noise_15', 1: 'noise_25', 2: 'noise_50', 3: 'rain', 4: 'haze'}
    """

    def __init__(
        self,
        images: ImageSource,
        degradation: DegradationMix | str | Sequence[str] = "3task",
        *,
        crop_size: int | None = 128,
        augment: bool = True,
        seed: int = 0,
        repeat: int = 1,
        cache: bool = False,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        skip_unreadable: bool = True,
    ) -> None:
        where = "SyntheticDataset"
        if crop_size is not None:
            check_int_range(where, "crop_size", crop_size, 1)
        check_int_range(where, "repeat", repeat, 1)
        check_int_range(where, "seed", seed, 0)
        check_flag(where, "skip_unreadable", skip_unreadable)
        self.mix = degradation if isinstance(degradation, DegradationMix) else make_mix(degradation)
        self.names: dict[int, str] = dict(enumerate(self.mix.names))
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.repeat = repeat
        self.cache = cache
        self.epoch = 0
        self.skipped = {}
        self.skip_unreadable = skip_unreadable
        self._small: set[int] = set()
        self._source = ImageStore(where, images, cache=cache, max_pixels=max_pixels)
        largest = self._source.largest_side() if crop_size is not None else None
        if crop_size is not None and largest is not None and crop_size > 2 * largest:
            raise InputError(
                f"{where}: expected crop_size at most twice the longest side of the images "
                f"(2 x {largest}), got {crop_size}: its crops would be mostly padding"
            )

    @property
    def paths(self) -> list[Path]:
        """The image files, in reading order (empty for in-memory images)."""
        return self._source.paths

    @property
    def num_images(self) -> int:
        """How many distinct images there are (the length without ``repeat``)."""
        return len(self._source)

    def __len__(self) -> int:
        return self.num_images * self.repeat

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream: item ``i`` of epoch ``e`` is seeded by ``(seed, e, i)``."""
        check_int_range("SyntheticDataset.set_epoch", "epoch", epoch, 0)
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"SyntheticDataset: index {index} out of range [0, {len(self)})")
        gen = item_generator(self.seed, self.epoch, index)
        clean = self._read_item(index % self.num_images, self._source.load, self.num_images)
        if self.crop_size is not None:
            self._warn_if_small(index % self.num_images, clean)
            (clean,) = random_crop([clean], self.crop_size, gen)
        if self.augment:
            (clean,) = flip_rotate([clean], gen)
        degraded, labels = self.mix(clean[None], generator=gen)
        return degraded[0], clean, labels[0]

    def _warn_if_small(self, j: int, image: Tensor) -> None:
        """Warn once per image that is smaller than the crop (its crops are mostly padding)."""
        h, w = image.shape[-2:]
        size = self.crop_size
        if size is None or (h >= size and w >= size) or j in self._small:
            return
        self._small.add(j)
        warnings.warn(
            f"SyntheticDataset: {self._source.describe(j)} is {h}x{w}, smaller than crop_size "
            f"{size}: its crops are padded by reflection; pick a smaller crop",
            UserWarning,
            stacklevel=3,
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(num_images={self.num_images}, names={self.mix.names}, "
            f"crop_size={self.crop_size}, augment={self.augment}, seed={self.seed})"
        )


class DegradedCopies(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Every image under every degradation of a mix, degraded once with a fixed seed.

    The held-out set of the demo and the trainer's default validation: image ``i`` under task
    ``l`` is degraded by a generator seeded by ``(seed, i, l)``, so every run scores the same
    inputs.

    Args:
        images: ``(C, H, W)`` tensors in [0, 1].
        mix: the degradations (a
            [DegradationMix][contrastive_prompts.app.degradations.DegradationMix] or a preset name).
        crop: centre crop side (``None`` keeps whole images).
        seed: the degradation seed.

    Attributes:
        names: ``{label: name}``, the mix's task names by label.

    Shape:
        - items: ``(degraded, clean, label)`` with $(C, H, W)$ images (cropped to ``crop``) and
          a scalar int64 label.

    Examples:
        >>> copies = DegradedCopies([torch.rand(3, 20, 20)], "3task", crop=16)
        >>> degraded, clean, label = copies[4]
        >>> len(copies), label.item(), copies.names[4]
        (5, 4, 'haze')
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        mix: DegradationMix | str = "3task",
        *,
        crop: int | None = None,
        seed: int = 0,
    ) -> None:
        mix = mix if isinstance(mix, DegradationMix) else make_mix(mix)
        self.names: dict[int, str] = dict(enumerate(mix.names))
        self.items: list[tuple[Tensor, Tensor, Tensor]] = []
        for i, image in enumerate(images):
            clean = to_chw("DegradedCopies", i, image)
            if crop is not None:
                h, w = clean.shape[-2:]
                clean = center_crop_to(clean, min(crop, h), min(crop, w))
            for label in range(len(mix.names)):
                gen = torch.Generator().manual_seed(
                    derived_seed((seed * 1_000_003 + i) * 1_009 + label)
                )
                degraded = mix.degrade(clean[None], torch.tensor([label]), generator=gen)[0]
                self.items.append((degraded, clean, torch.tensor(label)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.items[index]


def degraded_copies(
    images: Sequence[Tensor],
    mix: DegradationMix | str = "3task",
    *,
    crop: int | None = None,
    seed: int = 0,
) -> DegradedCopies:
    """`DegradedCopies` of ``images``: each under every degradation of ``mix``.

    Args:
        images: ``(C, H, W)`` tensors in [0, 1].
        mix: the degradations (a
            [DegradationMix][contrastive_prompts.app.degradations.DegradationMix] or a preset name).
        crop: centre crop side (``None`` keeps whole images).
        seed: the degradation seed.

    Shape:
        - images: $(C, H, W)$ each; items: ``(degraded, clean, label)`` with $(C, H, W)$ images
          (cropped to ``crop``) and a scalar label.

    Returns:
        The [DegradedCopies][contrastive_prompts.app.data.DegradedCopies]: image ``i`` under task
        ``l`` is item ``i * len(names) + l``.

    Examples:
        >>> copies = degraded_copies([torch.rand(3, 16, 16), torch.rand(3, 16, 16)], "3task")
        >>> len(copies), copies.names
        (10, {0: 'noise_15', 1: 'noise_25', 2: 'noise_50', 3: 'rain', 4: 'haze'})
    """
    return DegradedCopies(images, mix, crop=crop, seed=seed)


class NoisyDataset(_SkippingReader, Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Clean images with Gaussian noise at a fixed sigma and a fixed seed (CBSD68-style testing).

    Image ``i`` gets the noise of a generator seeded by ``(seed, i)``, so every run, machine and
    worker scores the same noisy inputs. As in the PromptIR protocol the noise is added to the
    8-bit image, clipped and truncated to 8 bits (``quantize=True``).

    Args:
        images: a folder, a list of folders / files, or in-memory images (as for
            [SyntheticDataset][contrastive_prompts.app.data.SyntheticDataset]).
        sigma: noise std on the 0-255 scale, in [0, 255].
        label: the label of every item.
        name: the name the label stands for; ``"noise_<sigma>"`` by default.
        seed: the noise seed.
        quantize: 8-bit quantisation of the noisy image.
        max_pixels: the most pixels a file may declare (see
            [read_image][contrastive_prompts.app.data.read_image]); ``None``: no limit.
        skip_unreadable: serve the next readable image, with a warning, in place of an
            unreadable file (``False``: raise naming it).
            [evaluate][contrastive_prompts.app.metrics.evaluate] always raises.

    Attributes:
        names: ``{label: name}``.
        paths: the image files (empty for in-memory images).
        skipped: ``{path: error}`` of unreadable files met so far.
        skip_unreadable: as the argument.

    Raises:
        InputError: no image, a missing path, a folder without images, a bad in-memory image,
            or a bad ``sigma``, ``label``, ``seed``, ``max_pixels`` or ``skip_unreadable``.

    Shape:
        - items: ``(noisy, clean, label)`` with $(3, H, W)$ images and a scalar int64 label.

    Examples:
        >>> ds = NoisyDataset([torch.full((3, 8, 8), 0.5)], sigma=25)
        >>> noisy, clean, label = ds[0]
        >>> again, _, _ = NoisyDataset([clean], sigma=25)[0]
        >>> torch.equal(noisy, again), ds.names
        (True, {0: 'noise_25'})
    """

    def __init__(
        self,
        images: ImageSource,
        sigma: float = 25.0,
        *,
        label: int = 0,
        name: str | None = None,
        seed: int = 0,
        quantize: bool = True,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        skip_unreadable: bool = True,
    ) -> None:
        where = "NoisyDataset"
        check_int_range(where, "label", label, 0)
        check_int_range(where, "seed", seed, 0)
        check_noise_sigma(where, sigma)
        check_flag(where, "skip_unreadable", skip_unreadable)
        self.sigma = float(sigma)
        self.label = label
        self.name = name if name is not None else f"noise_{sigma:g}"
        self.names = {label: self.name}
        self.seed = seed
        self.quantize = quantize
        self.skipped = {}
        self.skip_unreadable = skip_unreadable
        self._source = ImageStore(where, images, max_pixels=max_pixels)

    @property
    def paths(self) -> list[Path]:
        """The image files, in reading order (empty for in-memory images)."""
        return self._source.paths

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"NoisyDataset: index {index} out of range [0, {len(self)})")
        clean = self._read_item(index, self._source.load, len(self))
        gen = item_generator(self.seed, 0, index)
        noisy = gaussian_noise(clean[None], self.sigma, quantize=self.quantize, generator=gen)[0]
        return noisy, clean, torch.tensor(self.label)

    def __repr__(self) -> str:
        return f"NoisyDataset(name={self.name!r}, label={self.label}, images={len(self)})"
