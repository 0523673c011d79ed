"""Synthetic degradations for all-in-one restoration, batched and reproducible.

Each degradation is a pure function holding the maths and a thin `torch.nn.Module` that
stores the options and calls it. Every function takes a batch ``(B, C, H, W)`` of float images in
[0, 1], draws its parameters per sample from ranges (a fixed value is the range ``(v, v)``) and
returns a batch of the same shape, device and dtype, clamped to [0, 1]. Randomness comes only from
the optional ``generator``, which must live on the input's device; the same seed gives the same
output. Every range argument always consumes its draw, so two calls that differ only in one
parameter value (for example ``beta``) share every other random draw under the same seed.

Every option has a documented range, checked before anything is allocated: a value outside it,
NaN or infinity raises [InputError][contrastive_prompts.InputError]. The lengths of blurs and
streaks, and the Gaussian stds whose kernels span 6 std + 1 pixels, are bounded by the image:
a kernel is at most ``max(H, W, 64)`` pixels long (the image's larger side, or 64 if that is more),
so a tiny image cannot be asked for a kernel of gigabytes.

[DegradationMix][contrastive_prompts.app.degradations.DegradationMix] applies one (or several) of a
list of named degradations per sample and returns the integer labels of what it applied;
[make_mix][contrastive_prompts.app.degradations.make_mix] builds the 3-task and 5-task mixes of the
papers.
"""

from __future__ import annotations

from .blur import GaussianBlur, MotionBlur, gaussian_blur, motion_blur
from .camera import JpegCompression, LowLight, jpeg_compression, low_light
from .mixes import CDD11, DEGRADATIONS, MIXES, PHYSICAL_ORDER, Composite, DegradationMix, make_mix
from .noise import GaussianNoise, gaussian_noise
from .weather import Haze, RainStreaks, Snow, haze, rain_streaks, random_depth, snow

__all__ = [
    "CDD11",
    "DEGRADATIONS",
    "MIXES",
    "PHYSICAL_ORDER",
    "Composite",
    "DegradationMix",
    "GaussianBlur",
    "GaussianNoise",
    "Haze",
    "JpegCompression",
    "LowLight",
    "MotionBlur",
    "RainStreaks",
    "Snow",
    "gaussian_blur",
    "gaussian_noise",
    "haze",
    "jpeg_compression",
    "low_light",
    "make_mix",
    "motion_blur",
    "rain_streaks",
    "random_depth",
    "snow",
]
