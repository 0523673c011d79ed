"""The data, degradation and metric cases of the second round of hostile inputs.

Image files whose header declares a huge size, empty files and files that are not images;
benchmark folders with an unreadable image, which evaluation must never score another image in
place of; degradation options that would allocate without bound; and PSNR / SSIM asked for a
``data_range`` that the images cannot reach.
"""

import math
import time
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastive_prompts import data as Dt
from contrastive_prompts import degradations as D
from contrastive_prompts._checks import InputError
from contrastive_prompts.metrics import psnr, ssim


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Dt.write_image(path, image)
    return path


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------
# degradation options: a range each, checked before anything is allocated

X8 = torch.rand(1, 3, 8, 8)

OUT_OF_RANGE = {
    "motion_blur length 1e4 on 8x8": (lambda: D.motion_blur(X8, 1e4), r"expected length .* <= 64"),
    "MotionBlur length (5, 1e4)": (lambda: D.MotionBlur((5.0, 1e4))(X8), r"length .* <= 64"),
    "motion_blur angle 1e6": (lambda: D.motion_blur(X8, 5.0, angle=1e6), r"angle .* <= 360"),
    "rain length 1e4": (lambda: D.rain_streaks(X8, length=1e4), r"expected length .* <= 64"),
    "rain width 1e3": (lambda: D.rain_streaks(X8, width=1e3), r"expected width .* <= 10.5"),
    "rain angle -1e3": (lambda: D.rain_streaks(X8, angle=-1e3), r"angle .* >= -360"),
    "gaussian_blur sigma 1e4": (lambda: D.gaussian_blur(X8, 1e4), r"sigma .* <= 10.5"),
    "GaussianBlur sigma 11": (lambda: D.GaussianBlur(11.0)(X8), r"sigma .* <= 10.5"),
    "gaussian_noise sigma 1e4": (lambda: D.gaussian_noise(X8, 1e4), r"sigma .* <= 255"),
    "GaussianNoise sigma 256": (lambda: D.GaussianNoise((0.0, 256.0)), r"sigma .* <= 255"),
    "low_light gamma 100": (lambda: D.low_light(X8, gamma=100.0), r"gamma .* <= 10"),
    "low_light photons 1e20": (lambda: D.low_light(X8, photons=1e20), r"photons .* <= 1000000.0"),
    "low_light read_sigma 1e4": (lambda: D.low_light(X8, read_sigma=1e4), r"read_sigma .* <= 255"),
    "LowLight photons 1e30": (lambda: D.LowLight(photons=1e30), r"photons"),
    "mix probs nan": (
        lambda: D.DegradationMix({"a": D.Haze(), "b": D.Haze()}, probs=[1.0, math.nan]),
        r"probs to be 2 numbers, finite and >= 0",
    ),
    "mix probs inf": (
        lambda: D.DegradationMix({"a": D.Haze(), "b": D.Haze()}, probs=[1.0, math.inf]),
        r"probs to be 2 numbers, finite and >= 0",
    ),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_out_of_range_degradation_options_are_refused_quickly(case):
    call, pattern = OUT_OF_RANGE[case]
    start = time.perf_counter()
    with pytest.raises(InputError, match=pattern) as error:
        call()
    assert time.perf_counter() - start < 5, case  # refused before any allocation
    one_line(error)


def test_the_bounds_themselves_are_allowed():
    x = torch.rand(2, 3, 8, 8)
    assert D.motion_blur(x, 64.0).shape == x.shape  # lengths up to 64 on any image
    assert D.MotionBlur((5.0, 64.0), angle=(-360.0, 360.0))(x).shape == x.shape
    wide = torch.rand(1, 3, 20, 100)
    assert D.motion_blur(wide, 100.0).shape == wide.shape  # up to the image's larger side
    with pytest.raises(InputError, match=r"<= 100 \(.*20x100"):
        D.motion_blur(wide, 100.5)
    assert D.rain_streaks(x, length=64.0, width=10.5, angle=360.0).shape == x.shape
    assert D.gaussian_blur(x, 10.5).shape == x.shape
    assert D.gaussian_blur(wide, 99 / 6).shape == wide.shape
    assert D.gaussian_noise(x, 255.0, generator=torch.Generator().manual_seed(0)).shape == x.shape
    y = D.low_light(x, gamma=10.0, gain=0.0, photons=(1e-3, 1e6), read_sigma=255.0)
    assert torch.isfinite(y).all() and y.shape == x.shape
    assert D.haze(x, 1e6).shape == x.shape  # beta is harmless at any finite value


@settings(deadline=None, max_examples=15)
@given(h=st.integers(1, 80), w=st.integers(1, 80), length=st.floats(1.0, 120.0), blur=st.booleans())
def test_the_longest_blur_is_the_larger_of_64_and_the_image_side(h, w, length, blur):
    x = torch.rand(1, 1, h, w)
    reach = max(h, w, 64)
    call = (
        (lambda: D.motion_blur(x, length)) if blur else (lambda: D.rain_streaks(x, length=length))
    )
    if length <= reach:
        assert call().shape == x.shape
    else:
        with pytest.raises(InputError, match=rf"<= {reach} \("):
            call()


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM with a data_range the images cannot reach


@pytest.mark.parametrize("metric", [psnr, ssim], ids=["psnr", "ssim"])
def test_a_data_range_the_images_cannot_reach_warns_once(metric):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        metric(x, y, data_range=255)
    assert [w.category for w in seen] == [UserWarning], [str(w.message) for w in seen]
    message = str(seen[0].message)
    assert "\n" not in message and f"{metric.__name__}: " in message
    assert "data_range=255" in message and "[0, 1]" in message
    assert seen[0].filename == __file__  # it points at the caller
    quiet = [
        (x * 100, y * 100, 255),  # dark 0-255 images: legitimate
        (x * 2 - 1, y * 2 - 1, 2),  # images in [-1, 1]
        (x * 0.01, y * 0.01, 1),  # dark [0, 1] images at the default range
        (x, y, 1),
        (x[:0], y[:0], 255),  # no image
    ]
    for a, b, data_range in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            metric(a, b, data_range=data_range)
