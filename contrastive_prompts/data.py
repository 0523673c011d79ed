"""Image I/O, bundled sample photos, synthetic training pairs and the paired benchmarks.

Every dataset yields ``(degraded, clean, label)``: two ``(3, H, W)`` float32 images in [0, 1] and
an integer label. Labels index the dataset's ``names``. Randomness (crops, flips, rotations,
degradations) comes from a generator seeded by ``(seed, epoch, index)``, so an item is the same
whichever DataLoader worker loads it; call ``set_epoch`` at the start of each epoch.

File problems are reported, never silently dropped: a benchmark file without its pair raises an
:class:`~contrastive_prompts._checks.InputError` naming it (or, with ``strict=False``, warns and
lists it in ``unmatched``), and an unreadable image is skipped with a warning, recorded in
``skipped`` and replaced by the next readable item, so an epoch never stops half way.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastive_prompts._checks import InputError, check_int_range, check_shape
from contrastive_prompts.degradations import DegradationMix, gaussian_noise, make_mix

__all__ = [
    "IMAGE_EXTENSIONS",
    "SAMPLE_HELD_OUT",
    "SAMPLE_TRAIN",
    "DegradedCopies",
    "NoisyDataset",
    "PairedDataset",
    "SyntheticDataset",
    "cbsd68",
    "degraded_copies",
    "gopro",
    "image_paths",
    "list_images",
    "lol",
    "match_rain100l",
    "match_reside",
    "match_same_names",
    "rain100l",
    "read_image",
    "reside",
    "sample_images",
    "sample_split",
    "write_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions (any letter case) that the folder readers pick up."""

PathLike = str | Path
_T = TypeVar("_T")
ImageSource = PathLike | Sequence[PathLike] | Sequence[Tensor] | Sequence[np.ndarray]


# ----------------------------------------------------------------------------------------------
# image I/O


def read_image(path: PathLike) -> Tensor:
    """Read a PNG, JPEG, BMP or TIFF file as a ``(3, H, W)`` float32 tensor in [0, 1].

    Decoding goes through :func:`kornia.io.load_image` (the Rust ``kornia_rs`` decoders). Grey
    images are repeated to three channels; an alpha channel is dropped (not composited); 16-bit
    files are scaled by 1/65535. kornia-rs cannot decode grey+alpha PNGs; those raise like any
    other undecodable file.

    Args:
        path: the image file.

    Shape:
        - output: $(3, H, W)$.

    Returns:
        The image.

    Raises:
        OSError: the file cannot be opened (``FileNotFoundError`` when it does not exist).
        ValueError: the file cannot be decoded.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> write_image(path, torch.full((3, 4, 5), 0.5))
        >>> read_image(path).shape
        torch.Size([3, 4, 5])
    """
    from kornia.io import ImageLoadType, load_image

    try:
        # RGBA8 expands grey and palette files and adds an opaque alpha to RGB ones
        img = load_image(path, ImageLoadType.RGBA8, device="cpu")[:3]
        return img.float() / 255.0
    except NotImplementedError:
        # wider than 8 bits: only UNCHANGED loads it
        img = load_image(path, ImageLoadType.UNCHANGED, device="cpu")
    scale = 65535.0 if img.dtype == torch.uint16 else 1.0
    img = img.float() / scale
    if img.shape[0] in (2, 4):  # drop alpha
        img = img[:-1]
    return img.expand(3, -1, -1).contiguous() if img.shape[0] == 1 else img


def write_image(path: PathLike, image: Tensor, *, quality: int = 95) -> None:
    """Write a float image in [0, 1] as an 8-bit PNG or JPEG (by extension) with kornia.io.

    Values are clamped to [0, 1] and rounded to the nearest of 256 levels.

    Args:
        path: a ``.png``, ``.jpg``, ``.jpeg``, ``.tif`` or ``.tiff`` file; its folder must exist.
        image: the image, on any device.
        quality: JPEG quality in [0, 100] (ignored by other formats).

    Shape:
        - image: $(C, H, W)$ with $C \\in \\{1, 3\\}$, or $(H, W)$.

    Returns:
        None; the file is written.

    Example:
        >>> import tempfile, os
        >>> write_image(os.path.join(tempfile.mkdtemp(), "x.jpg"), torch.rand(3, 8, 8))
    """
    from kornia.io import write_image as _write

    where = "write_image"
    if not isinstance(image, Tensor):
        raise InputError(
            f"{where}: expected image to be a torch.Tensor, got {type(image).__name__}"
        )
    if image.ndim == 2:
        image = image.unsqueeze(0)
    check_shape(where, "image", image, ("C", "H", "W"))
    if image.shape[0] not in (1, 3):
        raise InputError(f"{where}: expected image with 1 or 3 channels, got {image.shape[0]}")
    check_int_range(where, "quality", quality, 0, 100)
    pixels = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    _write(path, pixels.contiguous(), quality=quality)


def image_paths(inputs: Sequence[PathLike]) -> list[Path]:
    """The image files named by ``inputs``: files as they are, folders by their images.

    Args:
        inputs: image files and folders.

    Returns:
        The paths, folders expanded in natural order.

    Raises:
        InputError: an input does not exist, or a folder holds no image.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> (Path(tmp.name) / "a.png").touch()
        >>> [p.name for p in image_paths([tmp.name])]
        ['a.png']
        >>> tmp.cleanup()
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise InputError(f"expected image files in folder {str(item)!r}, found none")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise InputError(f"expected an image file or a folder, got {str(item)!r} (not found)")
    return paths


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: PathLike) -> list[Path]:
    """The image files directly inside ``folder`` in natural order (``rain-2`` before ``rain-10``).

    Args:
        folder: a directory.

    Returns:
        The paths whose extension is in :data:`IMAGE_EXTENSIONS`.

    Raises:
        InputError: the folder does not exist or is not a directory.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for name in ("rain-10.png", "rain-2.png", "notes.txt"):
        ...     (Path(tmp.name) / name).touch()
        >>> [p.name for p in list_images(tmp.name)]
        ['rain-2.png', 'rain-10.png']
        >>> tmp.cleanup()
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"list_images: expected an existing folder, got {str(folder)!r}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=_natural_key)


def _to_chw(where: str, i: int, image: object) -> Tensor:
    """Turn one in-memory image into a ``(3, H, W)`` float32 tensor in [0, 1]."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
            arr = np.moveaxis(arr, -1, 0)  # HWC -> CHW
        scale = 255.0 if arr.dtype == np.uint8 else 65535.0 if arr.dtype == np.uint16 else 1.0
        image = torch.from_numpy(np.ascontiguousarray(arr)).float() / scale
    if not isinstance(image, Tensor):
        raise InputError(
            f"{where}: expected images[{i}] to be a tensor, an array or a path, "
            f"got {type(image).__name__}"
        )
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise InputError(
            f"{where}: expected images[{i}] of shape (C, H, W) with C in (1, 3, 4), "
            f"got {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise InputError(f"{where}: expected images[{i}] float or uint8, got {image.dtype}")
    image = image[:3] if image.shape[0] == 4 else image
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


# ----------------------------------------------------------------------------------------------
# bundled sample photos

_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "stereo_motorcycle")
SAMPLE_TRAIN = ("astronaut", "rocket", "hubble_deep_field", "stereo_motorcycle")
"""The sample photos of the fixed training split."""
SAMPLE_HELD_OUT = ("chelsea", "coffee")
"""The sample photos of the fixed held-out split."""


def sample_images(names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Photos bundled with scikit-image, as ``(3, H, W)`` float32 tensors in [0, 1].

    The default data for demos and tests, needing no download: ``astronaut`` (512x512),
    ``chelsea`` (300x451), ``coffee`` (400x600), ``rocket`` (427x640), ``hubble_deep_field``
    (872x1000) and the left view of ``stereo_motorcycle`` (500x741).

    Args:
        names: which photos, all by default.

    Shape:
        - each image: $(3, H, W)$.

    Returns:
        ``{name: image}`` in the order asked.

    Raises:
        ImportError: scikit-image is not installed.

    Example:
        >>> sample_images(["chelsea"])["chelsea"].shape
        torch.Size([3, 300, 451])
    """
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("sample_images needs scikit-image: pip install scikit-image") from e
    names = list(_SAMPLES if names is None else names)
    for name in names:
        if name not in _SAMPLES:
            raise InputError(
                f"sample_images: expected names from {', '.join(_SAMPLES)}, got {name!r}"
            )
    out = {}
    for name in names:
        arr = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            arr = arr[0]  # (left, right, disparity)
        out[name] = _to_chw("sample_images", 0, arr)
    return out


def sample_split() -> tuple[list[Tensor], list[Tensor]]:
    """The fixed train / held-out split of :func:`sample_images`.

    Shape:
        - each image: $(3, H, W)$.

    Returns:
        ``(train, held_out)``: the images of :data:`SAMPLE_TRAIN` and :data:`SAMPLE_HELD_OUT`.

    Example:
        >>> train, held_out = sample_split()
        >>> len(train), len(held_out)
        (4, 2)
    """
    images = sample_images()
    return [images[n] for n in SAMPLE_TRAIN], [images[n] for n in SAMPLE_HELD_OUT]


class DegradedCopies(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Every image under every degradation of a mix, degraded once with a fixed seed.

    The held-out set of the demo and the trainer's default validation: image ``i`` under task
    ``l`` is degraded by a generator seeded by ``(seed, i, l)``, so every run scores the same
    inputs.

    Args:
        images: ``(C, H, W)`` tensors in [0, 1].
        mix: the degradations (a :class:`~contrastive_prompts.degradations.DegradationMix` or a
            preset name).
        crop: centre crop side (``None`` keeps whole images).
        seed: the degradation seed.

    Attributes:
        names: the mix's task names; labels index them.

    Shape:
        - items: ``(degraded, clean, label)`` with $(C, H, W)$ images (cropped to ``crop``) and
          a scalar int64 label.

    Example:
        >>> copies = DegradedCopies([torch.rand(3, 20, 20)], "3task", crop=16)
        >>> len(copies), copies[4][2].item(), copies.names[4]
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
        self.names = mix.names
        self.items: list[tuple[Tensor, Tensor, Tensor]] = []
        for i, image in enumerate(images):
            clean = _to_chw("DegradedCopies", i, image)
            if crop is not None:
                h, w = clean.shape[-2:]
                clean = _center_crop_to(clean, min(crop, h), min(crop, w))
            for label in range(len(mix.names)):
                gen = torch.Generator().manual_seed((seed * 1_000_003 + i) * 1_009 + label)
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
    """:class:`DegradedCopies` of ``images``: each under every degradation of ``mix``.

    Args:
        images: ``(C, H, W)`` tensors in [0, 1].
        mix: the degradations (a :class:`~contrastive_prompts.degradations.DegradationMix` or a
            preset name).
        crop: centre crop side (``None`` keeps whole images).
        seed: the degradation seed.

    Shape:
        - images: $(C, H, W)$ each; items: ``(degraded, clean, label)`` with $(C, H, W)$ images
          (cropped to ``crop``) and a scalar label.

    Returns:
        The dataset: image ``i`` under task ``l`` is item ``i * len(names) + l``.

    Example:
        >>> copies = degraded_copies([torch.rand(3, 16, 16), torch.rand(3, 16, 16)], "3task")
        >>> len(copies), copies.names
        (10, ('noise_15', 'noise_25', 'noise_50', 'rain', 'haze'))
    """
    return DegradedCopies(images, mix, crop=crop, seed=seed)


# ----------------------------------------------------------------------------------------------
# shared machinery


def _item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # SeedSequence mixes the three numbers well, so neighbouring items get unrelated streams
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _random_crop(images: Sequence[Tensor], size: int, generator: torch.Generator) -> list[Tensor]:
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


def _flip_rotate(images: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """The same random horizontal flip and 90-degree rotation of every image."""
    flip = bool(torch.rand((), generator=generator) < 0.5)
    k = int(torch.randint(0, 4, (1,), generator=generator))
    out = []
    for im in images:
        im = im.flip(-1) if flip else im
        out.append(torch.rot90(im, k, dims=(-2, -1)).contiguous())
    return out


def _center_crop_to(image: Tensor, h: int, w: int) -> Tensor:
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    return image[..., top : top + h, left : left + w]


class _SkippingReader:
    """Reads an item, and on an unreadable file warns, records it and moves to the next item."""

    skipped: dict[str, str]

    def _read_item(self, index: int, read: Callable[[int], _T], size: int) -> _T:
        for step in range(size):
            j = (index + step) % size
            try:
                return read(j)
            except (OSError, ValueError) as e:
                path = getattr(e, "_image_path", None) or f"item {j}"
                if path not in self.skipped:
                    self.skipped[path] = str(e)
                    warnings.warn(
                        f"{type(self).__name__}: skipping unreadable image {path}: {e}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        raise InputError(
            f"{type(self).__name__}: expected at least one readable image, got none of {size}; "
            f"unreadable: {', '.join(self.skipped)}"
        )

    @property
    def num_skipped(self) -> int:
        """How many unreadable files this copy of the dataset has met (per DataLoader worker)."""
        return len(self.skipped)


def _read_tagged(path: Path) -> Tensor:
    try:
        return read_image(path)
    except (OSError, ValueError) as e:
        e._image_path = str(path)  # type: ignore[union-attr]
        raise


# ----------------------------------------------------------------------------------------------
# synthetic pairs


class SyntheticDataset(_SkippingReader, Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Clean images degraded on the fly: random crops, flips, 90-degree rotations, a degradation.

    Item ``i`` of epoch ``e`` is drawn from a generator seeded by ``(seed, e, i)``, so it is the
    same in every run and DataLoader worker. Images come from folders (read on each access, or
    once with ``cache=True``) or from memory.

    Args:
        images: a folder, a list of folders or image files, or a list of in-memory images
            (``(C, H, W)`` tensors or ``(H, W, C)`` / ``(H, W)`` arrays; uint8 is scaled by 1/255).
        degradation: a :class:`~contrastive_prompts.degradations.DegradationMix` or a preset name
            / list of names for :func:`~contrastive_prompts.degradations.make_mix`.
        crop_size: side of the square random crop (smaller images are padded by reflection);
            ``None`` keeps whole images.
        augment: random horizontal flips and 90-degree rotations.
        seed: base seed.
        repeat: the dataset length is ``repeat`` times the number of images.
        cache: keep decoded images in memory.

    Attributes:
        names: the label names (the mix's ``names``).
        skipped: ``{path: error}`` of unreadable files met so far.

    Shape:
        - degraded, clean: $(3, S, S)$ with $S$ = ``crop_size``.
        - label: a scalar int64 tensor.

    Example:
        >>> ds = SyntheticDataset([torch.rand(3, 40, 40)], "3task", crop_size=32, seed=0)
        >>> degraded, clean, label = ds[0]
        >>> degraded.shape, ds.names[int(label)] in ds.names
        (torch.Size([3, 32, 32]), True)
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
    ) -> None:
        where = "SyntheticDataset"
        if crop_size is not None:
            check_int_range(where, "crop_size", crop_size, 1)
        check_int_range(where, "repeat", repeat, 1)
        check_int_range(where, "seed", seed, 0)
        self.mix = degradation if isinstance(degradation, DegradationMix) else make_mix(degradation)
        self.names = self.mix.names
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.repeat = repeat
        self.cache = cache
        self.epoch = 0
        self.skipped = {}
        self._cached: dict[int, Tensor] = {}
        self._small: set[int] = set()
        self.paths: list[Path] = []
        self._images: list[Tensor] = []
        if isinstance(images, (str, Path)):
            images = [images]
        items = list(images)
        if not items:
            raise InputError(f"{where}: expected at least one image, got an empty list")
        paths = [p for p in items if isinstance(p, (str, Path))]
        if len(paths) == len(items):
            for p in paths:
                p = Path(p)
                if p.is_dir():
                    found = list_images(p)
                    if not found:
                        raise InputError(
                            f"{where}: expected image files ({', '.join(IMAGE_EXTENSIONS)}) "
                            f"in {str(p)!r}, found none"
                        )
                    self.paths.extend(found)
                elif p.is_file():
                    self.paths.append(p)
                else:
                    raise InputError(
                        f"{where}: expected an existing folder or file, got {str(p)!r}"
                    )
        else:
            self._images = [_to_chw(where, i, im) for i, im in enumerate(items)]

    @property
    def num_images(self) -> int:
        return len(self.paths) or len(self._images)

    def __len__(self) -> int:
        return self.num_images * self.repeat

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream: item ``i`` of epoch ``e`` is seeded by ``(seed, e, i)``."""
        check_int_range("SyntheticDataset.set_epoch", "epoch", epoch, 0)
        self.epoch = epoch

    def _load(self, j: int) -> Tensor:
        if self._images:
            return self._images[j]
        if j in self._cached:
            return self._cached[j]
        image = _read_tagged(self.paths[j])
        if self.cache:
            self._cached[j] = image
        return image

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"SyntheticDataset: index {index} out of range [0, {len(self)})")
        gen = _item_generator(self.seed, self.epoch, index)
        clean = self._read_item(index % self.num_images, self._load, self.num_images)
        if self.crop_size is not None:
            self._warn_if_small(index % self.num_images, clean)
            (clean,) = _random_crop([clean], self.crop_size, gen)
        if self.augment:
            (clean,) = _flip_rotate([clean], gen)
        degraded, labels = self.mix(clean[None], generator=gen)
        return degraded[0], clean, labels[0]

    def _warn_if_small(self, j: int, image: Tensor) -> None:
        """Warn once per image that is smaller than the crop (its crops are mostly padding)."""
        h, w = image.shape[-2:]
        size = self.crop_size
        if size is None or (h >= size and w >= size) or j in self._small:
            return
        self._small.add(j)
        name = str(self.paths[j]) if self.paths else f"image {j}"
        warnings.warn(
            f"SyntheticDataset: {name} is {h}x{w}, smaller than crop_size {size}: its crops "
            "are padded by reflection; pick a smaller crop",
            UserWarning,
            stacklevel=3,
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(num_images={self.num_images}, names={self.names}, "
            f"crop_size={self.crop_size}, augment={self.augment}, seed={self.seed})"
        )


# ----------------------------------------------------------------------------------------------
# paired benchmarks: matching rules, one small function each


def _need_dir(where: str, root: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise InputError(
        f"{where}: expected a folder {' or '.join(repr(n) for n in names)} in {str(root)!r}, "
        "found none"
    )


def _by_stem(files: Sequence[Path]) -> dict[str, Path]:
    return {p.stem: p for p in files}


def match_rain100l(
    root: PathLike, *, degraded_dir: str = "rainy", clean_dir: str = "gt"
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair Rain100L files: ``rainy/rain-<k>.<ext>`` with ``gt/norain-<k>.<ext>``.

    Args:
        root: the folder holding ``rainy/`` and ``gt/`` (PromptIR's ``data/Train/Derain``).
        degraded_dir: the rainy folder's name.
        clean_dir: the clean folder's name.

    Returns:
        ``(pairs, unmatched)``: ``(rainy, clean)`` paths, and the names (relative to ``root``)
        of the files without a partner or not following the naming rule.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = Path(tmp.name)
        >>> for folder, name in [("rainy", "rain-1.png"), ("gt", "norain-1.png"),
        ...                      ("rainy", "rain-2.png")]:
        ...     (root / folder).mkdir(exist_ok=True)
        ...     write_image(root / folder / name, torch.rand(3, 8, 8))
        >>> pairs, unmatched = match_rain100l(root)
        >>> [(d.name, c.name) for d, c in pairs], unmatched
        ([('rain-1.png', 'norain-1.png')], ['rainy/rain-2.png'])
        >>> tmp.cleanup()
    """
    root = Path(root)
    rainy_dir = _need_dir("match_rain100l", root, [degraded_dir])
    gt_dir = _need_dir("match_rain100l", root, [clean_dir])
    clean = _by_stem(list_images(gt_dir))
    pairs, unmatched, used = [], [], set()
    for p in list_images(rainy_dir):
        m = re.fullmatch(r"rain-(.+)", p.stem)
        partner = clean.get(f"norain-{m.group(1)}") if m else None
        if partner is None:
            unmatched.append(f"{degraded_dir}/{p.name}")
        else:
            pairs.append((p, partner))
            used.add(partner.stem)
    unmatched += [f"{clean_dir}/{p.name}" for s, p in clean.items() if s not in used]
    return pairs, unmatched


def match_reside(
    root: PathLike, *, degraded_dir: str = "hazy", clean_dir: Sequence[str] = ("gt", "clear")
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair RESIDE (OTS, SOTS-outdoor) files: ``hazy/<id>_<A>_<beta>.<ext>`` with ``gt/<id>.<ext>``.

    Several hazy versions (different $A$ and $\\beta$) share one clean image, e.g.
    ``hazy/0001_0.8_0.2.jpg`` and ``hazy/0001_1_0.04.jpg`` both pair with ``gt/0001.png``. The
    clean folder is ``gt/`` or ``clear/``; any image extension matches.

    Args:
        root: the folder holding ``hazy/`` and ``gt/`` (or ``clear/``).
        degraded_dir: the hazy folder's name.
        clean_dir: candidate names of the clean folder, the first that exists is used.

    Returns:
        ``(pairs, unmatched)`` as :func:`match_rain100l`.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = Path(tmp.name)
        >>> for folder, name in [("hazy", "0001_0.8_0.2.jpg"), ("hazy", "0001_1_0.04.jpg"),
        ...                      ("gt", "0001.png")]:
        ...     (root / folder).mkdir(exist_ok=True)
        ...     write_image(root / folder / name, torch.rand(3, 8, 8))
        >>> pairs, unmatched = match_reside(root)
        >>> [(d.name, c.name) for d, c in pairs]
        [('0001_0.8_0.2.jpg', '0001.png'), ('0001_1_0.04.jpg', '0001.png')]
        >>> tmp.cleanup()
    """
    root = Path(root)
    hazy_dir = _need_dir("match_reside", root, [degraded_dir])
    gt_dir = _need_dir("match_reside", root, list(clean_dir))
    clean = _by_stem(list_images(gt_dir))
    pairs, unmatched, used = [], [], set()
    for p in list_images(hazy_dir):
        image_id = p.stem.split("_")[0]
        partner = clean.get(image_id)
        if partner is None:
            unmatched.append(f"{degraded_dir}/{p.name}")
        else:
            pairs.append((p, partner))
            used.add(image_id)
    unmatched += [f"{gt_dir.name}/{p.name}" for s, p in clean.items() if s not in used]
    return pairs, unmatched


def match_same_names(
    root: PathLike, degraded_dir: str, clean_dir: str
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair files of the same stem in two folders (GoPro blur/sharp, LOL low/high).

    Args:
        root: the folder holding both folders.
        degraded_dir: the degraded folder's name.
        clean_dir: the clean folder's name.

    Returns:
        ``(pairs, unmatched)`` as :func:`match_rain100l`.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for folder in ("blur", "sharp"):
        ...     (Path(tmp.name) / folder).mkdir()
        ...     write_image(Path(tmp.name) / folder / "0001.png", torch.rand(3, 8, 8))
        >>> pairs, unmatched = match_same_names(tmp.name, "blur", "sharp")
        >>> [(d.parent.name, c.parent.name) for d, c in pairs], unmatched
        ([('blur', 'sharp')], [])
        >>> tmp.cleanup()
    """
    root = Path(root)
    deg = _by_stem(list_images(_need_dir("match_same_names", root, [degraded_dir])))
    clean = _by_stem(list_images(_need_dir("match_same_names", root, [clean_dir])))
    pairs = [(p, clean[s]) for s, p in deg.items() if s in clean]
    unmatched = [f"{degraded_dir}/{p.name}" for s, p in deg.items() if s not in clean]
    unmatched += [f"{clean_dir}/{p.name}" for s, p in clean.items() if s not in deg]
    return pairs, unmatched


# ----------------------------------------------------------------------------------------------
# paired datasets


class PairedDataset(_SkippingReader, Dataset[tuple[Tensor, Tensor, Tensor]]):
    """``(degraded, clean)`` image file pairs with one label, optionally cropped and augmented.

    A pair whose two images differ in size is centre-cropped to their common size (some releases
    of SOTS have ground truths a few pixels larger than the hazy images).

    Args:
        pairs: ``(degraded_path, clean_path)`` pairs.
        label: the label of every item.
        name: the degradation's name (``names`` maps ``label`` to it).
        crop_size: side of a random square crop; ``None`` (testing) keeps whole images.
        augment: random flips and 90-degree rotations (training).
        seed: base seed of the crops and augmentations.
        unmatched: files left without a pair (kept as an attribute for inspection).

    Attributes:
        names: ``{label: name}``.
        unmatched: names of files that had no partner (only with ``strict=False``).
        skipped: ``{path: error}`` of unreadable files met so far.

    Shape:
        - degraded, clean: $(3, H, W)$.
        - label: a scalar int64 tensor.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> degraded, clean = Path(tmp.name) / "rain.png", Path(tmp.name) / "clean.png"
        >>> write_image(degraded, torch.rand(3, 10, 10))
        >>> write_image(clean, torch.rand(3, 12, 12))  # centre-cropped to 10x10
        >>> ds = PairedDataset([(degraded, clean)], label=1, name="rain")
        >>> x, y, label = ds[0]
        >>> x.shape, y.shape, label.item(), ds.names
        (torch.Size([3, 10, 10]), torch.Size([3, 10, 10]), 1, {1: 'rain'})
        >>> tmp.cleanup()
    """

    def __init__(
        self,
        pairs: Sequence[tuple[PathLike, PathLike]],
        *,
        label: int = 0,
        name: str = "degraded",
        crop_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        unmatched: Sequence[str] = (),
    ) -> None:
        where = "PairedDataset"
        if not pairs:
            raise InputError(f"{where}: expected at least one image pair, got none")
        check_int_range(where, "label", label, 0)
        if crop_size is not None:
            check_int_range(where, "crop_size", crop_size, 1)
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.label = label
        self.name = name
        self.names = {label: name}
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.unmatched = list(unmatched)
        self.skipped = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream of crops and augmentations."""
        check_int_range("PairedDataset.set_epoch", "epoch", epoch, 0)
        self.epoch = epoch

    def _load_pair(self, j: int) -> tuple[Tensor, Tensor]:
        degraded = _read_tagged(self.pairs[j][0])
        clean = _read_tagged(self.pairs[j][1])
        if degraded.shape != clean.shape:
            h = min(degraded.shape[-2], clean.shape[-2])
            w = min(degraded.shape[-1], clean.shape[-1])
            degraded, clean = _center_crop_to(degraded, h, w), _center_crop_to(clean, h, w)
        return degraded, clean

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"PairedDataset: index {index} out of range [0, {len(self)})")
        degraded, clean = self._read_item(index, self._load_pair, len(self))
        if self.crop_size is not None or self.augment:
            gen = _item_generator(self.seed, self.epoch, index)
            if self.crop_size is not None:
                degraded, clean = _random_crop([degraded, clean], self.crop_size, gen)
            if self.augment:
                degraded, clean = _flip_rotate([degraded, clean], gen)
        return degraded, clean, torch.tensor(self.label)

    def __repr__(self) -> str:
        return f"PairedDataset(name={self.name!r}, label={self.label}, pairs={len(self)})"


def _report(
    where: str, root: PathLike, pairs: list[Any], unmatched: list[str], strict: bool
) -> None:
    if unmatched:
        shown = ", ".join(unmatched[:50]) + (" ..." if len(unmatched) > 50 else "")
        msg = f"{where}: {len(unmatched)} files in {str(root)!r} have no partner: {shown}"
        if strict:
            raise InputError(msg + " (pass strict=False to skip them)")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    if not pairs:
        raise InputError(f"{where}: expected image pairs in {str(root)!r}, found none")


def rain100l(
    root: PathLike,
    *,
    label: int = 0,
    name: str = "rain",
    strict: bool = True,
    degraded_dir: str = "rainy",
    clean_dir: str = "gt",
    **kwargs: Any,
) -> PairedDataset:
    """Rain100L (200 training / 100 test pairs) laid out as ``root/rainy`` and ``root/gt``.

    Naming rule: ``rainy/rain-<k>.png`` pairs with ``gt/norain-<k>.png`` (:func:`match_rain100l`).

    Args:
        root: the folder holding ``rainy/`` and ``gt/``.
        label: the label of every item.
        name: the name the label stands for.
        strict: raise on files without a partner (else warn and list them in ``unmatched``).
        degraded_dir: the rainy folder's name.
        clean_dir: the clean folder's name.
        **kwargs: ``crop_size``, ``augment``, ``seed`` of :class:`PairedDataset`.

    Returns:
        The dataset.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = Path(tmp.name)
        >>> for folder, name in [("rainy", "rain-1.png"), ("gt", "norain-1.png")]:
        ...     (root / folder).mkdir()
        ...     write_image(root / folder / name, torch.rand(3, 12, 12))
        >>> ds = rain100l(root, crop_size=8)
        >>> degraded, clean, label = ds[0]
        >>> degraded.shape, clean.shape, ds.names
        (torch.Size([3, 8, 8]), torch.Size([3, 8, 8]), {0: 'rain'})
        >>> tmp.cleanup()
    """
    pairs, unmatched = match_rain100l(root, degraded_dir=degraded_dir, clean_dir=clean_dir)
    _report("rain100l", root, pairs, unmatched, strict)
    return PairedDataset(pairs, label=label, name=name, unmatched=unmatched, **kwargs)


def reside(
    root: PathLike,
    *,
    label: int = 0,
    name: str = "haze",
    strict: bool = True,
    **kwargs: Any,
) -> PairedDataset:
    """RESIDE OTS (training) or SOTS-outdoor (500 test pairs): ``root/hazy`` and ``root/gt``.

    Naming rule: ``hazy/<id>_<A>_<beta>.<ext>`` pairs with ``gt/<id>.<ext>`` (or ``clear/``), see
    :func:`match_reside`.

    Args:
        root: the folder holding ``hazy/`` and ``gt/`` or ``clear/``.
        label: the label of every item.
        name: the name the label stands for.
        strict: raise on files without a partner (else warn and list them in ``unmatched``).
        **kwargs: ``crop_size``, ``augment``, ``seed`` of :class:`PairedDataset`.

    Returns:
        The dataset.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = Path(tmp.name)
        >>> for folder, name in [("hazy", "0001_0.8_0.2.png"), ("gt", "0001.png")]:
        ...     (root / folder).mkdir()
        ...     write_image(root / folder / name, torch.rand(3, 8, 8))
        >>> ds = reside(root, label=2)
        >>> len(ds), ds.names
        (1, {2: 'haze'})
        >>> tmp.cleanup()
    """
    pairs, unmatched = match_reside(root)
    _report("reside", root, pairs, unmatched, strict)
    return PairedDataset(pairs, label=label, name=name, unmatched=unmatched, **kwargs)


def gopro(
    root: PathLike, *, label: int = 0, name: str = "blur", strict: bool = True, **kwargs: Any
) -> PairedDataset:
    """GoPro deblurring pairs: ``root/blur/<name>`` with ``root/sharp/<name>`` (same file stem).

    Args:
        root: the folder holding ``blur/`` and ``sharp/``.
        label: the label of every item.
        name: the name the label stands for.
        strict: raise on files without a partner (else warn and list them in ``unmatched``).
        **kwargs: ``crop_size``, ``augment``, ``seed`` of :class:`PairedDataset`.

    Returns:
        The dataset.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for folder in ("blur", "sharp"):
        ...     (Path(tmp.name) / folder).mkdir()
        ...     write_image(Path(tmp.name) / folder / "0001.png", torch.rand(3, 8, 8))
        >>> ds = gopro(tmp.name)
        >>> degraded, clean, label = ds[0]
        >>> degraded.shape, ds.names[int(label)]
        (torch.Size([3, 8, 8]), 'blur')
        >>> tmp.cleanup()
    """
    pairs, unmatched = match_same_names(root, "blur", "sharp")
    _report("gopro", root, pairs, unmatched, strict)
    return PairedDataset(pairs, label=label, name=name, unmatched=unmatched, **kwargs)


def lol(
    root: PathLike, *, label: int = 0, name: str = "low_light", strict: bool = True, **kwargs: Any
) -> PairedDataset:
    """LOL low-light pairs: ``root/low/<name>`` with ``root/high/<name>`` (same file stem).

    Args:
        root: the folder holding ``low/`` and ``high/``.
        label: the label of every item.
        name: the name the label stands for.
        strict: raise on files without a partner (else warn and list them in ``unmatched``).
        **kwargs: ``crop_size``, ``augment``, ``seed`` of :class:`PairedDataset`.

    Returns:
        The dataset.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for folder in ("low", "high"):
        ...     (Path(tmp.name) / folder).mkdir()
        ...     write_image(Path(tmp.name) / folder / "1.png", torch.rand(3, 8, 8))
        >>> ds = lol(tmp.name, label=4)
        >>> len(ds), ds.names
        (1, {4: 'low_light'})
        >>> tmp.cleanup()
    """
    pairs, unmatched = match_same_names(root, "low", "high")
    _report("lol", root, pairs, unmatched, strict)
    return PairedDataset(pairs, label=label, name=name, unmatched=unmatched, **kwargs)


class NoisyDataset(_SkippingReader, Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Clean images with Gaussian noise at a fixed sigma and a fixed seed (CBSD68-style testing).

    Image ``i`` gets the noise of a generator seeded by ``(seed, i)``, so every run, machine and
    worker scores the same noisy inputs. As in the PromptIR protocol the noise is added to the
    8-bit image, clipped and truncated to 8 bits (``quantize=True``).

    Args:
        images: a folder, a list of folders / files, or in-memory images (see
            :class:`SyntheticDataset`).
        sigma: noise std on the 0-255 scale.
        label: the label of every item.
        name: the name the label stands for; ``"noise_<sigma>"`` by default.
        seed: the noise seed.
        quantize: 8-bit quantisation of the noisy image.

    Attributes:
        names: ``{label: name}``.
        skipped: ``{path: error}`` of unreadable files met so far.

    Example:
        >>> ds = NoisyDataset([torch.full((3, 8, 8), 0.5)], sigma=25)
        >>> noisy, clean, label = ds[0]
        >>> torch.equal(noisy, NoisyDataset([clean], sigma=25)[0][0])
        True
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
    ) -> None:
        # reuse the source handling of SyntheticDataset (folders, files or memory)
        self._source = SyntheticDataset(
            images, ["noise"], crop_size=None, augment=False, seed=seed, cache=False
        )
        self.sigma = float(sigma)
        self.label = label
        self.name = name if name is not None else f"noise_{sigma:g}"
        self.names = {label: self.name}
        self.seed = seed
        self.quantize = quantize
        self.skipped = self._source.skipped

    def __len__(self) -> int:
        return self._source.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"NoisyDataset: index {index} out of range [0, {len(self)})")
        clean = self._read_item(index, self._source._load, len(self))
        gen = _item_generator(self.seed, 0, index)
        noisy = gaussian_noise(clean[None], self.sigma, quantize=self.quantize, generator=gen)[0]
        return noisy, clean, torch.tensor(self.label)


def cbsd68(
    root: PathLike, sigma: float = 25.0, *, label: int = 0, seed: int = 0, **kwargs: Any
) -> NoisyDataset:
    """CBSD68 (68 clean colour images in ``root``) with noise at ``sigma``, seeded by ``seed``.

    Args:
        root: the folder of clean images.
        sigma: noise std on the 0-255 scale (the protocols test 15, 25 and 50).
        label: the label of every item.
        seed: the noise seed.
        **kwargs: ``name`` and ``quantize`` of :class:`NoisyDataset`.

    Shape:
        - items: ``(noisy, clean, label)`` with $(3, H, W)$ images and a scalar label.

    Returns:
        The dataset.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> write_image(Path(tmp.name) / "0.png", torch.full((3, 8, 8), 0.5))
        >>> noisy, clean, label = cbsd68(tmp.name, sigma=50)[0]
        >>> noisy.shape, bool((noisy - clean).abs().mean() > 0.05)
        (torch.Size([3, 8, 8]), True)
        >>> tmp.cleanup()
    """
    return NoisyDataset(root, sigma, label=label, seed=seed, **kwargs)
