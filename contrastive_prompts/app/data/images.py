"""Image files and in-memory images: reading, writing, listing, and the bundled sample photos.

Files are decoded by `kornia.io.load_image` into ``(3, H, W)`` float32 tensors in [0, 1];
in-memory images (tensors or arrays, uint8 or float) are brought to the same form. Every file
reader checks the size a file's header declares against a pixel budget (``MAX_IMAGE_PIXELS`` by
default) before decoding it. The sample photos come with scikit-image, so demos and tests need no
download.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from contrastive_prompts._checks import (
    InputError,
    InputTypeError,
    check_int_range,
    check_shape,
    memory_of,
)

from ..files import file_problem
from ._common import tagged

if TYPE_CHECKING:
    from PIL.ImageFile import ImageFile

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "SAMPLE_HELD_OUT",
    "SAMPLE_TRAIN",
    "check_image_file",
    "image_paths",
    "list_images",
    "read_image",
    "sample_images",
    "sample_split",
    "write_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File extensions (any letter case) that the folder readers pick up."""

PathLike = str | Path
ImageSource = PathLike | Sequence[PathLike] | Sequence[Tensor] | Sequence[np.ndarray]
"""What a dataset reads its images from: a folder, folders and files, or in-memory images."""


# ----------------------------------------------------------------------------------------------
# image I/O


MAX_IMAGE_PIXELS = 8192 * 8192
"""The default pixel budget of the readers: 67,108,864 pixels (8192 x 8192, 64 Mpx).

A file whose header declares more pixels (width times height) is refused before it is decoded:
a few kilobytes of PNG can declare 30000 x 30000 pixels, 10.8 GB once decoded as the float32
RGB the library works in. 64 Mpx lets every camera photo up to 8K x 8K through, and such an
image takes 0.8 GB as float32 RGB. Pass ``max_pixels`` to a reader to change it, ``None`` for no
limit.
"""

# the formats whose header read_image checks, by their first bytes (WebP: see _format_of)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)

# the names the decoder expects for each format: it picks its decoder by the name
_SUFFIXES = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "WebP": (".webp",),
}


class _Header(NamedTuple):
    """What read_image takes from a file's header before decoding it."""

    width: int
    height: int
    orientation: int = 1  # EXIF orientation, 1: the pixels are shown as stored
    cmyk: bool = False


# EXIF orientation 2-8: the change that shows the stored pixels upright, on (C, H, W)
_UPRIGHT: dict[int, Callable[[Tensor], Tensor]] = {
    2: lambda x: x.flip(-1),
    3: lambda x: x.flip(-2, -1),
    4: lambda x: x.flip(-2),
    5: lambda x: x.transpose(-2, -1),
    6: lambda x: torch.rot90(x, -1, (-2, -1)),
    7: lambda x: x.transpose(-2, -1).flip(-2, -1),
    8: lambda x: torch.rot90(x, 1, (-2, -1)),
}


def read_image(path: PathLike, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Tensor:
    """Read a PNG, JPEG, BMP, TIFF or WebP file as a ``(3, H, W)`` float32 tensor in [0, 1].

    PNG, JPEG, TIFF and WebP go through `kornia.io.load_image` (the Rust ``kornia_rs`` decoders);
    BMP, which kornia-rs does not decode (the WED photos of the denoising training set are
    BMP), through Pillow. Grey images are repeated to three channels; an alpha channel is
    dropped (not composited); 16-bit files are scaled by 1/65535. kornia-rs cannot decode
    grey+alpha PNGs; those raise like any other undecodable file.

    Before anything is decoded, the size the file's header declares (PNG's IHDR chunk, JPEG's
    frame header, TIFF's first directory, BMP's header, WebP's first chunk; nothing else is
    read) is checked against ``max_pixels``, so a small file that declares a huge image is
    refused instead of allocated. Pillow's own decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) plays no part: ``max_pixels`` is the only budget, and its
    message the one a user sees. The header also gives the EXIF orientation of a JPEG or TIFF
    photo, applied after decoding so the image is upright as a viewer shows it, and refuses
    a CMYK JPEG or TIFF, whose colours need a colour profile to become RGB.

    Args:
        path: the image file. Its format is read from its first bytes: a file whose name says
            another format (a JPEG named ``.png``) is refused with both named, since the
            decoder goes by the name.
        max_pixels: the most pixels (width times height) the file may declare;
            ``MAX_IMAGE_PIXELS`` (64 Mpx) by default. ``None`` lifts the budget but not the
            machine's: a known format that declares more than the memory of this machine
            holds as float32 RGB is still refused, and a format the check does not read goes
            to its decoder as it is.

    Shape:
        - output: $(3, H, W)$.

    Returns:
        The image.

    Raises:
        OSError: the file cannot be opened (``FileNotFoundError`` when it does not exist).
        InputError: the file is empty, named as another format, CMYK, or declares more
            pixels than this machine's memory holds; or, with ``max_pixels``, it is not a PNG,
            JPEG, BMP, TIFF or WebP file, its header cannot be read, or it declares more than
            ``max_pixels`` pixels; or ``max_pixels`` is not an integer >= 1 or ``None``. The
            message names the file.
        ValueError: the file cannot be decoded.

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> write_image(path, torch.full((3, 4, 5), 0.5))
        >>> read_image(path).shape
        torch.Size([3, 4, 5])
        >>> try:
        ...     read_image(path, max_pixels=16)
        ... except InputError as error:
        ...     print(str(error).split(", got")[0])
        read_image: expected an image of at most 16 pixels (max_pixels)
    """
    from kornia.io import ImageLoadType, load_image

    kind, header = _checked("read_image", path, max_pixels)
    if kind == "BMP":
        img = _read_bmp(path)
    else:
        try:
            # RGBA8 expands grey and palette files and adds an opaque alpha to RGB ones
            img = load_image(path, ImageLoadType.RGBA8, device="cpu")[:3].float() / 255.0
        except NotImplementedError:
            # wider than 8 bits: only UNCHANGED loads it
            img = load_image(path, ImageLoadType.UNCHANGED, device="cpu")
            scale = 65535.0 if img.dtype == torch.uint16 else 1.0
            img = img.float() / scale
            if img.shape[0] in (2, 4):  # drop alpha
                img = img[:-1]
            img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
    if header is not None and header.orientation in _UPRIGHT:
        img = _UPRIGHT[header.orientation](img)
    return img.contiguous()


def check_image_file(path: PathLike, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> None:
    """Check ``path`` from its first bytes and header alone, as ``read_image`` does first.

    What [read_image][contrastive_prompts.app.data.read_image] checks before it decodes, on its
    own: a command checks every input this way before it does any work, so a bad file among
    many stops it before the first output rather than halfway.

    Args:
        path: the image file.
        max_pixels: as for ``read_image``; ``None`` checks only that the file is not empty.

    Returns:
        None.

    Raises:
        OSError: the file cannot be opened.
        InputError: as ``read_image`` before decoding: an empty file, an unknown format, a
            name of another format, an unreadable header, a CMYK file, more than
            ``max_pixels`` pixels, or more than this machine's memory holds.

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> write_image(path, torch.zeros(3, 4, 5))
        >>> check_image_file(path, max_pixels=20)
    """
    _checked("check_image_file", path, max_pixels)


def _checked(
    where: str, path: PathLike, max_pixels: int | None
) -> tuple[str | None, _Header | None]:
    """The file's format and header, once it passed the checks of ``check_image_file``."""
    if max_pixels is not None:
        check_int_range(where, "max_pixels", max_pixels, 1)
    name = os.fspath(path)
    kind = _format_of(where, path)
    if kind is None:
        if max_pixels is None:
            return None, None  # a format the check does not read: the decoder's to judge
        with open(path, "rb") as f:
            head = f.read(8)
        raise InputError(
            f"{where}: expected a PNG, JPEG, BMP, TIFF or WebP file, got {name!r}, which starts "
            f"with {head!r}; pass max_pixels=None to hand another format to the decoder unchecked"
        )
    suffix = Path(name).suffix.lower()
    named = next((k for k, suffixes in _SUFFIXES.items() if suffix in suffixes), None)
    if named is not None and named != kind:
        raise InputError(
            f"{where}: expected a file whose name says its format, got {name!r}, a {kind} file "
            f"(its first bytes say so) named as {named}; the decoder goes by the name: rename it "
            f"to {_SUFFIXES[kind][0]}"
        )
    try:
        header = _read_header(name, kind)
    except (ValueError, SyntaxError, OSError, EOFError, struct.error) as error:
        if max_pixels is None:
            return kind, None  # unchecked, as asked: the decoder's to judge
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InputError(
            f"{where}: expected an image file with a readable header, got {name!r}: cannot read "
            f"the size from its {kind} header ({reason})"
        ) from error
    if header.cmyk:
        raise InputError(
            f"{where}: expected an RGB or grey image, got {name!r}, a CMYK {kind} file: CMYK "
            "is not supported (its colours need the file's colour profile); convert it to RGB "
            "first"
        )
    width, height = header.width, header.height
    pixels = width * height
    gigabytes = pixels * 3 * 4 / 1e9
    if max_pixels is not None and pixels > max_pixels:
        raise InputError(
            f"{where}: expected an image of at most {max_pixels:,} pixels (max_pixels), got "
            f"{name!r}, whose header declares {width} x {height} pixels (width x height), "
            f"{pixels:,} in all ({gigabytes:.1f} GB as float32 RGB); to read it, pass "
            f"max_pixels={pixels} or more, or max_pixels=None for no limit"
        )
    memory = memory_of(torch.device("cpu"))
    if memory is not None and pixels * 3 * 4 > memory:
        raise InputError(
            f"{where}: expected an image that fits in this machine's memory "
            f"({memory / 1e9:.1f} GB), got {name!r}, whose header declares {width} x {height} "
            f"pixels: {gigabytes:.1f} GB as float32 RGB"
        )
    return kind, header


def _format_of(where: str, path: PathLike) -> str | None:
    """The format the first bytes of ``path`` announce (``None``: none read_image knows).

    Raises:
        OSError: the file cannot be opened.
        InputError: the file is empty.
    """
    with open(path, "rb") as f:  # FileNotFoundError for a missing file, as kornia raises
        head = f.read(16)
    if not head:
        raise InputError(
            f"{where}: expected an image file, got {os.fspath(path)!r}, which is empty (0 bytes)"
        )
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _read_header(path: str, kind: str) -> _Header:
    """Size, EXIF orientation and CMYK flag as the header of ``path`` declares them.

    Pillow reads the headers, each format by its own reader class, never through
    ``PIL.Image.open``: Pillow's decompression-bomb warning and error never fire, and
    ``max_pixels`` is the one budget. Opening such a reader reads the header alone (PNG's
    chunks up to the image data, JPEG's segments up to the scan, with its EXIF block; BMP's
    header). TIFF's first directory is read by Pillow's directory reader, as Pillow's
    ``TiffImageFile`` refuses pixel types kornia-rs decodes (float32 RGB, say). WebP's first
    chunk is read here: Pillow's WebP reader allocates the whole canvas the header declares
    when it opens the file, before any budget could refuse it.

    Raises:
        ValueError: the header is cut short or malformed (or SyntaxError, struct.error,
            EOFError or OSError from Pillow).
    """
    if kind == "WebP":
        return _webp_header(path)
    if kind == "TIFF":
        from PIL.TiffImagePlugin import ImageFileDirectory_v2

        with open(path, "rb") as f:
            header = f.read(8)
            if header[2:3] == b"+":  # BigTIFF: a 16-byte header
                header += f.read(8)
            directory = ImageFileDirectory_v2(header)
            f.seek(directory.next)
            with warnings.catch_warnings():
                # Pillow warns of tags it cannot read; only these few matter here
                warnings.simplefilter("ignore")
                directory.load(f)
        width, height = directory.get(256), directory.get(257)  # ImageWidth, ImageLength
        if not isinstance(width, int) or not isinstance(height, int):
            raise ValueError("no ImageWidth and ImageLength in its first directory")
        orientation = directory.get(274, 1)  # Orientation
        cmyk = directory.get(262) == 5  # PhotometricInterpretation: separated (CMYK)
        return _Header(width, height, orientation if isinstance(orientation, int) else 1, cmyk)
    with _pillow_file(path, kind) as image:
        width, height = image.size
        orientation = _exif_orientation(image) if kind == "JPEG" else 1
        return _Header(width, height, orientation, cmyk=image.mode == "CMYK")


def _pillow_file(path: str, kind: str) -> ImageFile:
    """Pillow's reader of ``kind`` on ``path``: opening reads the header only.

    The format's own reader, not ``PIL.Image.open``: ``max_pixels``, checked before decoding,
    is the limit, not Pillow's decompression-bomb check.
    """
    if kind == "PNG":
        from PIL.PngImagePlugin import PngImageFile

        return PngImageFile(path)
    if kind == "JPEG":
        from PIL.JpegImagePlugin import JpegImageFile

        return JpegImageFile(path)
    from PIL.BmpImagePlugin import BmpImageFile

    return BmpImageFile(path)


def _exif_orientation(image: ImageFile) -> int:
    """The EXIF orientation of an opened JPEG, 1 (as stored) when absent or unreadable."""
    try:
        value = image.getexif().get(0x0112, 1)  # Orientation
    except (ValueError, SyntaxError, OSError, struct.error, EOFError, KeyError, IndexError):
        return 1  # a broken EXIF block does not make the image unreadable
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _webp_header(path: str) -> _Header:
    """The canvas size in WebP's first chunk (VP8X, VP8 or VP8L)."""
    with open(path, "rb") as f:
        head = f.read(30)
    if len(head) < 30:
        raise ValueError("a header cut short")
    chunk = head[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    elif chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            raise ValueError("no VP8 start code")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", head[26:30]))
    elif chunk == b"VP8L":
        if head[20] != 0x2F:
            raise ValueError("no VP8L signature")
        bits = int.from_bytes(head[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    else:
        raise ValueError(f"an unknown first chunk {chunk!r}")
    return _Header(width, height)


def _read_bmp(path: PathLike) -> Tensor:
    try:
        with _pillow_file(os.fspath(path), "BMP") as image:
            rgb = np.asarray(image.convert("RGB"))  # palette and grey expanded, alpha dropped
    except (SyntaxError, OSError, ValueError) as error:
        raise ValueError(f"cannot decode the BMP file {os.fspath(path)!r}: {error}") from error
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


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

    Examples:
        >>> import tempfile, os
        >>> write_image(os.path.join(tempfile.mkdtemp(), "x.jpg"), torch.rand(3, 8, 8))
    """
    from kornia.io import write_image as _write

    where = "write_image"
    if not isinstance(image, Tensor):
        raise InputTypeError(
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

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> (Path(tmp.name) / "a.png").touch()
        >>> print(*(p.name for p in image_paths([tmp.name])))
        a.png
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
            problem = file_problem(path) or "not a file"
            raise InputError(f"expected an image file or a folder, got {str(item)!r}: {problem}")
    return paths


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: PathLike) -> list[Path]:
    """The image files directly inside ``folder`` in natural order (``rain-2`` before ``rain-10``).

    Args:
        folder: a directory.

    Returns:
        The paths whose extension is in
        [IMAGE_EXTENSIONS][contrastive_prompts.app.data.IMAGE_EXTENSIONS].

    Raises:
        InputError: the folder does not exist or is not a directory.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for name in ("rain-10.png", "rain-2.png", "notes.txt"):
        ...     (Path(tmp.name) / name).touch()
        >>> print(*(p.name for p in list_images(tmp.name)))
        rain-2.png rain-10.png
        >>> tmp.cleanup()
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"list_images: expected an existing folder, got {str(folder)!r}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=_natural_key)


def to_chw(where: str, i: int, image: object) -> Tensor:
    """Turn one in-memory image into a ``(3, H, W)`` float32 tensor in [0, 1]."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
            arr = np.moveaxis(arr, -1, 0)  # HWC -> CHW
        scale = 255.0 if arr.dtype == np.uint8 else 65535.0 if arr.dtype == np.uint16 else 1.0
        image = torch.from_numpy(np.ascontiguousarray(arr)).float() / scale
    if not isinstance(image, Tensor):
        raise InputTypeError(
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
# one image source for the datasets


class ImageStore:
    """The images a dataset reads: files (read on access, or once with ``cache``) or memory.

    Args:
        where: the dataset's name, for messages.
        images: a folder, a list of folders or image files, or a list of in-memory images
            (``(C, H, W)`` tensors or ``(H, W, C)`` / ``(H, W)`` arrays; uint8 is scaled by 1/255).
        cache: keep decoded files in memory.
        max_pixels: the pixel budget of each file (see `read_image`); ``None``: no limit.

    Raises:
        InputError: no image, a path that does not exist, a folder without images, an
            in-memory image of the wrong type or shape, or a bad ``max_pixels``.
    """

    def __init__(
        self,
        where: str,
        images: ImageSource,
        *,
        cache: bool = False,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> None:
        if max_pixels is not None:
            check_int_range(where, "max_pixels", max_pixels, 1)
        self.cache = cache
        self.max_pixels = max_pixels
        self.paths: list[Path] = []
        self._images: list[Tensor] = []
        self._cached: dict[int, Tensor] = {}
        if isinstance(images, (str, Path)):
            images = [images]
        items = list(images)
        if not items:
            raise InputError(f"{where}: expected at least one image, got an empty list")
        paths = [p for p in items if isinstance(p, (str, Path))]
        if len(paths) < len(items):
            self._images = [to_chw(where, i, im) for i, im in enumerate(items)]
            return
        for p in map(Path, paths):
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
                problem = file_problem(p) or "not a file"
                raise InputError(
                    f"{where}: expected an existing folder or file, got {str(p)!r}: {problem}"
                )

    def __len__(self) -> int:
        return len(self.paths) or len(self._images)

    def load(self, j: int) -> Tensor:
        """Image ``j``; a read error carries the file's path for the skipping reader."""
        if self._images:
            return self._images[j]
        if j in self._cached:
            return self._cached[j]
        with tagged(self.paths[j]):
            image = read_image(self.paths[j], max_pixels=self.max_pixels)
        if self.cache:
            self._cached[j] = image
        return image

    def largest_side(self) -> int | None:
        """The longest side of any image, from the files' headers (``None``: none readable)."""
        if self._images:
            return max(max(image.shape[-2:]) for image in self._images)
        sides = []
        for path in self.paths:
            try:
                _, header = _checked("largest_side", path, None)
            except (InputError, OSError):
                continue  # the reader skips or names it when it comes
            if header is not None:
                sides.append(max(header.width, header.height))
        return max(sides, default=None)

    def describe(self, j: int) -> str:
        """How messages name image ``j``: its path, or ``image j`` for an in-memory one."""
        return str(self.paths[j]) if self.paths else f"image {j}"


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

    Examples:
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
        out[name] = to_chw("sample_images", 0, arr)
    return out


def sample_split() -> tuple[list[Tensor], list[Tensor]]:
    """The train / held-out split of [sample_images][contrastive_prompts.app.data.sample_images].

    Shape:
        - each image: $(3, H, W)$.

    Returns:
        ``(train, held_out)``: the images of
        [SAMPLE_TRAIN][contrastive_prompts.app.data.SAMPLE_TRAIN] and
        [SAMPLE_HELD_OUT][contrastive_prompts.app.data.SAMPLE_HELD_OUT].

    Examples:
        >>> train, held_out = sample_split()
        >>> len(train), len(held_out)
        (4, 2)
    """
    images = sample_images()
    return [images[n] for n in SAMPLE_TRAIN], [images[n] for n in SAMPLE_HELD_OUT]
