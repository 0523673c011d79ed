"""The data, degradation and metric cases of the second round of hostile inputs.

Image files whose header declares a huge size, empty files and files that are not images;
benchmark folders with an unreadable image, which evaluation must never score another image in
place of; degradation options that would allocate without bound; and PSNR / SSIM asked for a
``data_range`` that the images cannot reach.
"""

import io
import math
import struct
import time
import warnings
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastive_prompts._checks import InputError, InputTypeError
from contrastive_prompts.app import data as Dt
from contrastive_prompts.app import degradations as D
from contrastive_prompts.app.metrics import evaluate, psnr, ssim


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Dt.write_image(path, image)
    return path


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------
# files whose header declares a huge size: refused from the header, before any decoding


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(path, width, height):
    """A valid PNG header declaring ``width`` x ``height`` RGB pixels, and 16 bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )
    return path


def _pillow_bytes(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, fmt)
    return buffer.getvalue()


def jpeg_declaring(path, width, height):
    data = bytearray(_pillow_bytes("JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def bmp_declaring(path, width, height):
    data = bytearray(_pillow_bytes("BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    path.write_bytes(bytes(data))
    return path


def tiff_declaring(path, width, height):
    data = bytearray(_pillow_bytes("TIFF"))
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag = struct.unpack_from("<H", data, entry)[0]
        if tag in (256, 257):  # ImageWidth, ImageLength: one LONG each
            struct.pack_into("<HHII", data, entry, tag, 4, 1, width if tag == 256 else height)
    path.write_bytes(bytes(data))
    return path


def test_a_png_declaring_30000x30000_pixels_is_refused_from_its_header(tmp_path):
    """The audit's case: a small PNG whose header asks for a 10.8 GB float image."""
    path = png_declaring(tmp_path / "bomb.png", 30000, 30000)
    start = time.perf_counter()
    with pytest.raises(InputError) as error:
        Dt.read_image(path)
    assert time.perf_counter() - start < 5  # the header only: nothing is decoded or allocated
    message = one_line(error)
    for part in (str(path), "30000 x 30000", "900,000,000", "67,108,864", "max_pixels"):
        assert part in message, (part, message)
    assert Dt.MAX_IMAGE_PIXELS == 8192 * 8192


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("bomb.png", png_declaring),
        ("bomb.jpg", jpeg_declaring),
        ("bomb.bmp", bmp_declaring),
        ("bomb.tif", tiff_declaring),
    ],
)
def test_every_format_is_checked_from_its_header_and_pillow_does_not_speak_first(
    tmp_path, name, write
):
    """Pillow's own DecompressionBombError / Warning never replaces the message."""
    path = write(tmp_path / name, 20000, 20000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        with pytest.raises(InputError) as error:
            Dt.read_image(path)
    message = one_line(error)
    assert "20000 x 20000" in message and "400,000,000 in all" in message
    assert "max_pixels" in message and str(path) in message
    with pytest.raises(InputError, match=r"max_pixels=400000000"):
        Dt.read_image(path, max_pixels=400_000_000 - 1)


def test_pillow_limits_do_not_apply_with_a_budget_of_our_own(tmp_path, monkeypatch):
    """A BMP above Pillow's decompression-bomb limit, within max_pixels, is read."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow would refuse above 20 pixels
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "red.bmp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = Dt.read_image(tmp_path / "red.bmp")
        assert Dt.read_image(tmp_path / "red.bmp", max_pixels=None).shape == (3, 6, 8)
    assert image.shape == (3, 6, 8) and image[0].min() == 1 and image[1:].max() == 0


def test_max_pixels_is_a_budget_on_width_times_height(tmp_path):
    path = tmp_path / "x.png"
    Dt.write_image(path, torch.rand(3, 10, 12))
    assert Dt.read_image(path, max_pixels=120).shape == (3, 10, 12)
    assert Dt.read_image(path, max_pixels=None).shape == (3, 10, 12)
    with pytest.raises(InputError, match=r"at most 119 pixels \(max_pixels\)") as error:
        Dt.read_image(path, max_pixels=119)
    assert "12 x 10 pixels (width x height)" in one_line(error)
    with pytest.raises(InputError, match=r"read_image: expected max_pixels to be an integer >= 1"):
        Dt.read_image(path, max_pixels=0)
    with pytest.raises(InputTypeError, match=r"expected max_pixels to be an integer >= 1, got 1.5"):
        Dt.read_image(path, max_pixels=1.5)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize("options", [{}, {"max_pixels": None}], ids=["budget", "no-budget"])
def test_an_empty_file_is_named_in_one_line(tmp_path, suffix, options):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(InputError, match=r"expected an image file, got .* empty \(0 bytes\)") as e:
        Dt.read_image(path, **options)
    assert str(path) in one_line(e)


@pytest.mark.parametrize(
    "content", [b"hello, not an image\n", b"GIF89a\x01\x00\x01\x00", b"\x89PNG\r\n"]
)
def test_a_file_that_is_not_an_image_is_named_in_one_line(tmp_path, content):
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    expected = r"read_image: expected a PNG, JPEG, BMP, TIFF or WebP"
    with pytest.raises(InputError, match=expected) as e:
        Dt.read_image(path)
    assert str(path) in one_line(e)


def _png_with_a_bad_crc(path):
    data = bytearray(png_declaring(path, 8, 8).read_bytes())
    data[20] ^= 0xFF  # the IHDR no longer matches its CRC
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "write", "kind"),
    [
        ("crc.png", _png_with_a_bad_crc, "PNG"),
        ("short.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "PNG"),
        ("short.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0\x00"), "JPEG"),
        ("scan.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff\xda\x00\x02"), "JPEG"),
        ("ifd.tif", lambda p: p.write_bytes(b"II*\x00\xff\xff\x00\x00"), "TIFF"),
        ("short.bmp", lambda p: p.write_bytes(b"BM not an image"), "BMP"),
    ],
)
def test_a_broken_header_is_named_in_one_line(tmp_path, name, write, kind):
    path = tmp_path / name
    write(path)
    with pytest.raises(InputError, match=rf"cannot read the size from its {kind} header") as e:
        Dt.read_image(path)
    assert str(path) in one_line(e)


def test_every_file_reader_takes_max_pixels(tmp_path):
    """The datasets pass max_pixels to read_image; training skips such a file with a warning."""
    big = tmp_path / "big"
    write(big / "a.png", torch.rand(3, 10, 10))
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image .*a\.png.*max_pixels"):
        with pytest.raises(InputError, match=r"expected at least one readable image"):
            Dt.SyntheticDataset(big, crop_size=8, max_pixels=99)[0]
    assert Dt.SyntheticDataset(big, crop_size=8, max_pixels=100)[0][0].shape == (3, 8, 8)
    with pytest.raises(InputError, match=r"a\.png.*max_pixels"):
        Dt.NoisyDataset(big, 25, max_pixels=99, skip_unreadable=False)[0]
    pair = [(big / "a.png", big / "a.png")]
    with pytest.raises(InputError, match=r"a\.png.*max_pixels"):
        Dt.PairedDataset(pair, max_pixels=99, skip_unreadable=False)[0]
    for folder in ("low", "high"):
        write(tmp_path / "lol" / folder / "1.png", torch.rand(3, 10, 10))
    with pytest.raises(InputError, match=r"1\.png.*max_pixels"):
        evaluate(lambda x: x, Dt.read_benchmark("lol", tmp_path / "lol", max_pixels=99))
    with pytest.raises(InputError, match=r"1\.png.*max_pixels"):
        evaluate(lambda x: x, Dt.read_benchmark("cbsd68", tmp_path / "lol/high", max_pixels=99))
    assert len(evaluate(lambda x: x, Dt.read_benchmark("lol", tmp_path / "lol")).per_image) == 1
    with pytest.raises(InputError, match=r"SyntheticDataset: expected max_pixels to be an integ"):
        Dt.SyntheticDataset(big, max_pixels=0)


# ---------------------------------------------------------------------------------------------
# evaluation never scores another image in place of an unreadable one


def rain100l_with_a_corrupt_image(root):
    for k in (1, 2, 3):
        clean = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(k))
        write(root / "gt" / f"norain-{k}.png", clean)
        write(root / "rainy" / f"rain-{k}.png", 1 - clean)
    (root / "rainy" / "rain-2.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image any more")


def test_evaluate_on_a_benchmark_with_an_unreadable_image_reports_no_figure(tmp_path):
    """The audit's case: rain-2.png is unreadable; rain-3.png must not be scored twice."""
    rain100l_with_a_corrupt_image(tmp_path)
    dataset = Dt.read_benchmark("rain100l", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no skip-and-substitute warning either
        with pytest.raises(InputError) as error:
            evaluate(lambda x: x, dataset)
    message = one_line(error)
    assert str(tmp_path / "rainy" / "rain-2.png") in message
    assert "PairedDataset" in message and "skip_unreadable" in message
    assert dataset.skip_unreadable and dataset.skipped == {}  # restored, nothing substituted
    # the same through a DataLoader and inside a ConcatDataset
    loader = torch.utils.data.DataLoader(dataset, batch_size=1)
    with pytest.raises(InputError, match=r"rain-2\.png"):
        evaluate(lambda x: x, loader)
    with pytest.raises(InputError, match=r"rain-2\.png"):
        evaluate(lambda x: x, torch.utils.data.ConcatDataset([dataset]))
    assert dataset.skip_unreadable


def test_benchmark_datasets_can_be_asked_never_to_substitute(tmp_path):
    rain100l_with_a_corrupt_image(tmp_path)
    strict = Dt.read_benchmark("rain100l", tmp_path, skip_unreadable=False)
    with pytest.raises(InputTypeError, match=r"expected skip_unreadable to be a bool"):
        Dt.read_benchmark("rain100l", tmp_path, skip_unreadable="false")
    assert strict[0][0].shape == (3, 16, 16)
    with pytest.raises(InputError, match=r"PairedDataset: expected a readable image, got .*rain-2"):
        strict[1]
    clean = tmp_path / "gt"
    (clean / "norain-2.png").write_bytes(b"")
    noisy = Dt.read_benchmark("cbsd68", clean, skip_unreadable=False)
    with pytest.raises(InputError, match=r"NoisyDataset: .*norain-2\.png.*empty \(0 bytes\)"):
        noisy[1]
    # training keeps skipping, with its warning
    lenient = Dt.read_benchmark("rain100l", tmp_path, crop_size=8)
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image .*rain-2\.png"):
        assert lenient[1][0].shape == (3, 8, 8)


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
    "NoisyDataset sigma 1e4": (lambda: Dt.NoisyDataset([X8[0]], 1e4), r"sigma .*255"),
    "read_benchmark sigma 300": (
        lambda: Dt.read_benchmark("cbsd68", ".", sigma=300.0),
        r"sigma .*255",
    ),
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
    assert Dt.NoisyDataset([x[0]], 255)[0][0].shape == (3, 8, 8)
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
