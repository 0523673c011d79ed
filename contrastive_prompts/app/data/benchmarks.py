"""The test and training benchmarks: one table of layouts, one matcher, one reader.

Each row of [BENCHMARKS][contrastive_prompts.app.data.BENCHMARKS] is a
[Benchmark][contrastive_prompts.app.data.Benchmark]: the folder of the degraded images, the folder
of the clean ones and the naming rule that finds a degraded file's clean partner.
[read_benchmark][contrastive_prompts.app.data.read_benchmark] reads any of them into a
[PairedDataset][contrastive_prompts.app.data.PairedDataset] (or, for ``cbsd68``, clean images with
noise added, a [NoisyDataset][contrastive_prompts.app.data.NoisyDataset]);
[match_pairs][contrastive_prompts.app.data.match_pairs] is the matcher alone, for a layout of your
own.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastive_prompts._checks import InputError, check_choice, check_int_range
from contrastive_prompts.app.degradations._ranges import check_noise_sigma

from ._common import (
    _SkippingReader,
    center_crop_to,
    check_flag,
    flip_rotate,
    item_generator,
    random_crop,
    tagged,
)
from .images import MAX_IMAGE_PIXELS, PathLike, list_images, read_image
from .synthetic import NoisyDataset

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "PairedDataset",
    "match_pairs",
    "read_benchmark",
]

Pairs = list[tuple[Path, Path]]


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
        max_pixels: the most pixels a file may declare, checked from its header before it is
            decoded (see [read_image][contrastive_prompts.app.data.read_image]); ``None``: no limit.
        skip_unreadable: serve the next readable pair, with a warning, in place of a pair with
            an unreadable file (training); ``False`` raises an
            [InputError][contrastive_prompts.InputError] naming the file.
            [evaluate][contrastive_prompts.app.metrics.evaluate] always raises: a benchmark figure
            never counts one image twice.

    Attributes:
        names: ``{label: name}``.
        unmatched: names of files that had no partner (only with ``strict=False``).
        skipped: ``{path: error}`` of unreadable files met so far.
        skip_unreadable: as the argument.

    Raises:
        InputError: no pair, or a bad ``label``, ``crop_size``, ``max_pixels`` or
            ``skip_unreadable``.

    Shape:
        - degraded, clean: $(3, H, W)$.
        - label: a scalar int64 tensor.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from contrastive_prompts.app.data import write_image
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
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        skip_unreadable: bool = True,
    ) -> None:
        where = "PairedDataset"
        if not pairs:
            raise InputError(f"{where}: expected at least one image pair, got none")
        check_int_range(where, "label", label, 0)
        if crop_size is not None:
            check_int_range(where, "crop_size", crop_size, 1)
        if max_pixels is not None:
            check_int_range(where, "max_pixels", max_pixels, 1)
        check_flag(where, "skip_unreadable", skip_unreadable)
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.label = label
        self.name = name
        self.names = {label: name}
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.unmatched = list(unmatched)
        self.max_pixels = max_pixels
        self.skipped = {}
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream of crops and augmentations."""
        check_int_range("PairedDataset.set_epoch", "epoch", epoch, 0)
        self.epoch = epoch

    def _load_pair(self, j: int) -> tuple[Tensor, Tensor]:
        images: list[Tensor] = []
        for path in self.pairs[j]:
            with tagged(path):
                images.append(read_image(path, max_pixels=self.max_pixels))
        degraded, clean = images
        if degraded.shape != clean.shape:
            h = min(degraded.shape[-2], clean.shape[-2])
            w = min(degraded.shape[-1], clean.shape[-1])
            degraded, clean = center_crop_to(degraded, h, w), center_crop_to(clean, h, w)
        return degraded, clean

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"PairedDataset: index {index} out of range [0, {len(self)})")
        degraded, clean = self._read_item(index, self._load_pair, len(self))
        if self.crop_size is not None or self.augment:
            gen = item_generator(self.seed, self.epoch, index)
            if self.crop_size is not None:
                degraded, clean = random_crop([degraded, clean], self.crop_size, gen)
            if self.augment:
                degraded, clean = flip_rotate([degraded, clean], gen)
        return degraded, clean, torch.tensor(self.label)

    def __repr__(self) -> str:
        return f"PairedDataset(name={self.name!r}, label={self.label}, pairs={len(self)})"


# ----------------------------------------------------------------------------------------------
# the table


def _same_stem(stem: str) -> str:
    """GoPro, LOL: a degraded file's partner has the same stem."""
    return stem


def _rain100l_stem(stem: str) -> str | None:
    """Rain100L: ``rain-<k>`` pairs with ``norain-<k>``; other names have no partner."""
    match = re.fullmatch(r"rain-(.+)", stem)
    return f"norain-{match.group(1)}" if match else None


def _reside_stem(stem: str) -> str:
    """RESIDE (OTS, SOTS): ``<id>_<A>_<beta>`` pairs with ``<id>`` (the stem before any ``_``)."""
    return stem.split("_")[0]


@dataclass(frozen=True)
class Benchmark:
    """The layout of a benchmark on disk: its folders and how its files pair up.

    Make a variant with `dataclasses.replace`, for example other folder names, and hand it
    to [read_benchmark][contrastive_prompts.app.data.read_benchmark] or
    [match_pairs][contrastive_prompts.app.data.match_pairs].

    Attributes:
        name: the name in [BENCHMARKS][contrastive_prompts.app.data.BENCHMARKS] (and on the command
            line).
        degradation: the degradation's name, the default name of the label; ``cbsd68`` appends
            the noise level (``noise_25``).
        degraded_dirs: candidate names of the degraded folder under the root, the first that
            exists is read; empty when the degraded images are made from the clean ones
            (``cbsd68``).
        clean_dirs: candidate names of the clean folder, the first that exists is read; empty
            when the clean images lie in the root itself.
        clean_stem: the naming rule: a degraded file's stem to its clean partner's stem, or
            ``None`` for a file that does not follow it.
        layout: the layout in one line, for people.

    Examples:
        >>> import dataclasses
        >>> mine = dataclasses.replace(BENCHMARKS["gopro"], degraded_dirs=("input",))
        >>> mine.degraded_dirs, mine.clean_dirs, mine.clean_stem("0001")
        (('input',), ('sharp',), '0001')
    """

    name: str
    degradation: str
    degraded_dirs: tuple[str, ...]
    clean_dirs: tuple[str, ...]
    clean_stem: Callable[[str], str | None]
    layout: str

    @property
    def paired(self) -> bool:
        """Whether the degraded images are files (else they are made from the clean ones)."""
        return bool(self.degraded_dirs)

    def match(self, root: PathLike) -> tuple[Pairs, list[str]]:
        """Pair the files under ``root`` by this layout (`match_pairs`).

        Args:
            root: the benchmark's folder.

        Returns:
            ``(pairs, unmatched)`` as [match_pairs][contrastive_prompts.app.data.match_pairs]
            returns them.

        Raises:
            InputError: a folder is missing, or the layout has no degraded files to pair.

        Examples:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from contrastive_prompts.app.data import write_image
            >>> tmp = tempfile.TemporaryDirectory()
            >>> for path in ("rainy/rain-1.png", "gt/norain-1.png", "rainy/rain-2.png"):
            ...     (Path(tmp.name) / path).parent.mkdir(exist_ok=True)
            ...     write_image(Path(tmp.name) / path, torch.rand(3, 8, 8))
            >>> pairs, unmatched = BENCHMARKS["rain100l"].match(tmp.name)
            >>> len(pairs), unmatched
            (1, ['rainy/rain-2.png'])
            >>> tmp.cleanup()
        """
        return _match(f"BENCHMARKS[{self.name!r}].match", root, self)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "rain100l",
            "rain",
            ("rainy",),
            ("gt",),
            _rain100l_stem,
            "Rain100L (200 training / 100 test pairs): rainy/rain-<k>.<ext> with "
            "gt/norain-<k>.<ext>",
        ),
        Benchmark(
            "sots",
            "haze",
            ("hazy",),
            ("gt", "clear"),
            _reside_stem,
            "RESIDE SOTS-outdoor (500 test pairs; OTS for training has the same layout): "
            "hazy/<id>_<A>_<beta>.<ext> with gt/<id>.<ext> or clear/<id>.<ext>",
        ),
        Benchmark(
            "cbsd68",
            "noise",
            (),
            (),
            _same_stem,
            "CBSD68 (68 images): a folder of clean images, Gaussian noise added at sigma with "
            "a fixed seed",
        ),
        Benchmark(
            "gopro",
            "blur",
            ("blur",),
            ("sharp",),
            _same_stem,
            "GoPro deblurring: blur/<name>.<ext> with sharp/<name>.<ext>",
        ),
        Benchmark(
            "lol",
            "low_light",
            ("low",),
            ("high",),
            _same_stem,
            "LOL low-light: low/<name>.<ext> with high/<name>.<ext>",
        ),
    )
}
"""The benchmarks by name: the names of the command line's ``evaluate --benchmark``."""


# ----------------------------------------------------------------------------------------------
# one matcher, one reader


def _find_dir(where: str, root: Path, names: Sequence[str]) -> tuple[Path, str]:
    """The first folder of ``names`` under ``root`` and its name (no names: ``root`` itself)."""
    if not names:
        return root, ""
    for name in names:
        if (root / name).is_dir():
            return root / name, name
    raise InputError(
        f"{where}: expected a folder {' or '.join(repr(n) for n in names)} in {str(root)!r}, "
        "found none"
    )


def _match(where: str, root: PathLike, benchmark: Benchmark) -> tuple[Pairs, list[str]]:
    if not benchmark.paired:
        raise InputError(
            f"{where}: expected a layout with a degraded folder to match, got {benchmark.name!r} "
            "(its degraded images are made from the clean ones)"
        )
    root = Path(root)
    degraded_dir, degraded_name = _find_dir(where, root, benchmark.degraded_dirs)
    clean_dir, clean_name = _find_dir(where, root, benchmark.clean_dirs)
    by_stem: dict[str, list[Path]] = {}
    for path in list_images(clean_dir):
        by_stem.setdefault(path.stem, []).append(path)
    # two clean files of one stem (norain-1.png and norain-1.jpg): neither can be told the partner
    clean = {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}
    ambiguous = [path for paths in by_stem.values() if len(paths) > 1 for path in paths]
    pairs: Pairs = []
    unmatched: list[str] = []
    used: set[str] = set()
    for path in list_images(degraded_dir):
        stem = benchmark.clean_stem(path.stem)
        partner = clean.get(stem) if stem is not None else None
        if partner is None:
            unmatched.append(f"{degraded_name}/{path.name}")
        else:
            pairs.append((path, partner))
            used.add(partner.stem)
    unmatched += [f"{clean_name}/{p.name}".lstrip("/") for s, p in clean.items() if s not in used]
    unmatched += [
        f"{clean_name}/{p.name} (another clean file has its name)".lstrip("/") for p in ambiguous
    ]
    return pairs, unmatched


def match_pairs(
    root: PathLike,
    degraded_dir: str | Sequence[str],
    clean_dir: str | Sequence[str],
    clean_stem: Callable[[str], str | None] = _same_stem,
) -> tuple[Pairs, list[str]]:
    """Pair the images of two folders under ``root`` by a naming rule.

    Each degraded image pairs with the clean image whose stem is ``clean_stem`` of its own;
    several degraded images may share one clean image (RESIDE's hazy versions of one scene).
    Any image extension matches any other.

    Args:
        root: the folder holding both folders.
        degraded_dir: the degraded folder's name, or candidate names (the first that exists).
        clean_dir: the clean folder's name, or candidate names (the first that exists); no
            names: the clean images lie in ``root`` itself.
        clean_stem: the naming rule, a degraded stem to its clean stem (``None``: no partner);
            the same stem by default.

    Returns:
        ``(pairs, unmatched)``: ``(degraded, clean)`` paths in the natural order of the degraded
        files, and the names (relative to ``root``) of the files without a partner or not
        following the rule: degraded files first, then clean files no degraded file chose.

    Raises:
        InputError: a folder is missing.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from contrastive_prompts.app.data import write_image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for path in ("hazy/0001_0.8_0.2.jpg", "hazy/0001_1_0.04.jpg", "clear/0001.png"):
        ...     (Path(tmp.name) / path).parent.mkdir(exist_ok=True)
        ...     write_image(Path(tmp.name) / path, torch.rand(3, 8, 8))
        >>> rule = BENCHMARKS["sots"].clean_stem  # "<id>_<A>_<beta>" -> "<id>"
        >>> pairs, unmatched = match_pairs(tmp.name, "hazy", ("gt", "clear"), rule)
        >>> for degraded, clean in pairs:
        ...     print(degraded.name, clean.name)
        0001_0.8_0.2.jpg 0001.png
        0001_1_0.04.jpg 0001.png
        >>> tmp.cleanup()
    """
    layout = Benchmark(
        "match_pairs", "degraded", _names(degraded_dir), _names(clean_dir), clean_stem, ""
    )
    return _match("match_pairs", root, layout)


def _names(folders: str | Sequence[str]) -> tuple[str, ...]:
    return (folders,) if isinstance(folders, str) else tuple(folders)


def _report(where: str, root: PathLike, pairs: Pairs, unmatched: list[str], strict: bool) -> None:
    if unmatched:
        shown = ", ".join(unmatched[:50]) + (" ..." if len(unmatched) > 50 else "")
        msg = f"{where}: {len(unmatched)} files in {str(root)!r} have no partner: {shown}"
        if strict:
            raise InputError(msg + " (pass strict=False to skip them)")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    if not pairs:
        raise InputError(f"{where}: expected image pairs in {str(root)!r}, found none")


def read_benchmark(
    name: str | Benchmark,
    root: PathLike,
    *,
    label: int = 0,
    degradation: str | None = None,
    strict: bool = True,
    sigma: float = 25.0,
    seed: int = 0,
    crop_size: int | None = None,
    augment: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    skip_unreadable: bool = True,
) -> PairedDataset | NoisyDataset:
    """Read a benchmark of `BENCHMARKS` (or a `Benchmark` of your own) from ``root``.

    Every file must find its partner: one that does not is an error naming it, or with
    ``strict=False`` a warning, and its name is kept in the dataset's ``unmatched``.

    Args:
        name: ``rain100l``, ``sots``, ``cbsd68``, ``gopro``, ``lol`` (the keys of
            [BENCHMARKS][contrastive_prompts.app.data.BENCHMARKS]), or a
            [Benchmark][contrastive_prompts.app.data.Benchmark].
        root: the benchmark's folder, holding the folders its layout names.
        label: the label of every item.
        degradation: the name the label stands for; the benchmark's degradation by default
            (``cbsd68``: ``noise_<sigma>``).
        strict: raise on a file without a partner (else warn and list it in ``unmatched``).
        sigma: ``cbsd68`` only: the noise std on the 0-255 scale, in [0, 255] (the protocols
            test 15, 25, 50).
        seed: the noise seed (``cbsd68``), else the seed of the crops and augmentations.
        crop_size: side of a random square crop (training); ``None`` keeps whole images.
        augment: random flips and 90-degree rotations (training).
        max_pixels: the most pixels a file may declare, checked from its header before it is
            decoded (see [read_image][contrastive_prompts.app.data.read_image]); ``None``: no limit.
            A file above it is unreadable.
        skip_unreadable: serve the next readable item, with a warning, in place of one whose
            file is unreadable (training); ``False`` raises naming the file. Either way
            [evaluate][contrastive_prompts.app.metrics.evaluate] raises: a benchmark figure never
            scores one image in another's place.

    Shape:
        - items: ``(degraded, clean, label)`` with $(3, H, W)$ images and a scalar int64 label.

    Returns:
        A [PairedDataset][contrastive_prompts.app.data.PairedDataset], or for ``cbsd68`` a
        [NoisyDataset][contrastive_prompts.app.data.NoisyDataset].

    Raises:
        InputError: an unknown name, a missing folder, a file without a partner (with
            ``strict``), no pair at all, ``crop_size`` / ``augment`` with ``cbsd68``, or a bad
            ``sigma``, ``max_pixels`` or ``skip_unreadable``.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from contrastive_prompts.app.data import write_image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for path in ("rainy/rain-1.png", "gt/norain-1.png"):
        ...     (Path(tmp.name) / path).parent.mkdir(exist_ok=True)
        ...     write_image(Path(tmp.name) / path, torch.rand(3, 12, 12))
        >>> ds = read_benchmark("rain100l", tmp.name, label=3, crop_size=8)
        >>> degraded, clean, label = ds[0]
        >>> degraded.shape, clean.shape, ds.names
        (torch.Size([3, 8, 8]), torch.Size([3, 8, 8]), {3: 'rain'})
        >>> tmp.cleanup()
    """
    if isinstance(name, Benchmark):
        benchmark = name
    else:
        check_choice("read_benchmark", "name", name, BENCHMARKS)
        benchmark = BENCHMARKS[name]
    where = f"read_benchmark({benchmark.name!r})"
    check_noise_sigma(where, sigma)
    if max_pixels is not None:
        check_int_range(where, "max_pixels", max_pixels, 1)
    check_flag(where, "skip_unreadable", skip_unreadable)
    if not Path(root).is_dir():
        raise InputError(f"{where}: expected root to be an existing folder, got {str(root)!r}")
    if not benchmark.paired:
        if crop_size is not None or augment:
            raise InputError(
                f"{where}: expected crop_size=None and augment=False (a fixed test set), got "
                f"crop_size={crop_size!r}, augment={augment!r}"
            )
        folder = _find_dir(where, Path(root), benchmark.clean_dirs)[0]
        if degradation is None:
            degradation = f"{benchmark.degradation}_{sigma:g}"
        return NoisyDataset(
            folder,
            sigma,
            label=label,
            name=degradation,
            seed=seed,
            max_pixels=max_pixels,
            skip_unreadable=skip_unreadable,
        )
    pairs, unmatched = _match(where, root, benchmark)
    _report(where, root, pairs, unmatched, strict)
    return PairedDataset(
        pairs,
        label=label,
        name=benchmark.degradation if degradation is None else degradation,
        crop_size=crop_size,
        augment=augment,
        seed=seed,
        unmatched=unmatched,
        max_pixels=max_pixels,
        skip_unreadable=skip_unreadable,
    )
