"""Image I/O, bundled sample photos, synthetic training pairs and the paired benchmarks.

Every dataset yields ``(degraded, clean, label)``: two ``(3, H, W)`` float32 images in [0, 1] and
an integer label, and has ``names``, a ``{label: name}`` dict. Randomness (crops, flips,
rotations, degradations) comes from a generator seeded by ``(seed, epoch, index)``, so an item is
the same whichever DataLoader worker loads it; call ``set_epoch`` at the start of each epoch.

File problems are reported, never silently dropped: a benchmark file without its pair raises an
[InputError][contrastive_prompts.InputError] naming it (or, with ``strict=False``, warns and
lists it in ``unmatched``). While training, an unreadable image is skipped with a warning,
recorded in ``skipped`` and replaced by the next readable item, so an epoch never stops half way;
with ``skip_unreadable=False``, and always under
[evaluate][contrastive_prompts.app.metrics.evaluate], it is an error naming the file, so a benchmark
figure never scores one image in another's place. A file whose header declares more pixels than the
readers' ``max_pixels`` (``MAX_IMAGE_PIXELS``, 64 Mpx, by default) is unreadable, refused before it
is decoded.

The modules: `contrastive_prompts.app.data.images` (reading, writing and listing images, the
sample photos), `contrastive_prompts.app.data.synthetic` (clean images degraded in code) and
`contrastive_prompts.app.data.benchmarks` (the table of benchmark layouts and their reader);
every public name is importable from ``contrastive_prompts.app.data`` itself.
"""

from .benchmarks import (
    BENCHMARKS,
    Benchmark,
    PairedDataset,
    match_pairs,
    read_benchmark,
)
from .images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    SAMPLE_HELD_OUT,
    SAMPLE_TRAIN,
    check_image_file,
    image_paths,
    list_images,
    read_image,
    sample_images,
    sample_split,
    write_image,
)
from .images import ImageSource as ImageSource  # the readers' argument types, as before
from .images import PathLike as PathLike
from .synthetic import DegradedCopies, NoisyDataset, SyntheticDataset, degraded_copies

__all__ = [
    "BENCHMARKS",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "SAMPLE_HELD_OUT",
    "SAMPLE_TRAIN",
    "Benchmark",
    "DegradedCopies",
    "NoisyDataset",
    "PairedDataset",
    "SyntheticDataset",
    "check_image_file",
    "degraded_copies",
    "image_paths",
    "list_images",
    "match_pairs",
    "read_benchmark",
    "read_image",
    "sample_images",
    "sample_split",
    "write_image",
]
