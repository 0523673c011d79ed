import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastive_prompts._checks import InputError
from contrastive_prompts.app import degradations as D

FUNCTIONS = {
    "gaussian_noise": lambda x, g: D.gaussian_noise(x, (5.0, 50.0), generator=g),
    "gaussian_noise_quantized": lambda x, g: D.gaussian_noise(x, 25.0, quantize=True, generator=g),
    "haze": lambda x, g: D.haze(x, generator=g),
    "rain_streaks": lambda x, g: D.rain_streaks(x, density=(0.02, 0.05), generator=g),
    "snow": lambda x, g: D.snow(x, density=(0.02, 0.05), generator=g),
    "gaussian_blur": lambda x, g: D.gaussian_blur(x, generator=g),
    "motion_blur": lambda x, g: D.motion_blur(x, generator=g),
    "low_light": lambda x, g: D.low_light(x, generator=g),
    "jpeg_compression": lambda x, g: D.jpeg_compression(x, generator=g),
}

MODULES = {
    "gaussian_noise": (D.GaussianNoise((5.0, 50.0)), FUNCTIONS["gaussian_noise"]),
    "haze": (D.Haze(), FUNCTIONS["haze"]),
    "rain_streaks": (D.RainStreaks(density=(0.02, 0.05)), FUNCTIONS["rain_streaks"]),
    "snow": (D.Snow(density=(0.02, 0.05)), FUNCTIONS["snow"]),
    "gaussian_blur": (D.GaussianBlur(), FUNCTIONS["gaussian_blur"]),
    "motion_blur": (D.MotionBlur(), FUNCTIONS["motion_blur"]),
    "low_light": (D.LowLight(), FUNCTIONS["low_light"]),
    "jpeg_compression": (D.JpegCompression(), FUNCTIONS["jpeg_compression"]),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@settings(deadline=None, max_examples=6)
@given(
    b=st.integers(1, 3),
    c=st.sampled_from([1, 3]),
    h=st.integers(8, 24),
    w=st.integers(8, 24),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_keeps_shape_range_device_dtype(name, b, c, h, w, dtype, seed):
    x = torch.rand(b, c, h, w, generator=gen(seed), dtype=dtype)
    y = FUNCTIONS[name](x, gen(seed + 1))
    assert y.shape == x.shape
    assert y.dtype == dtype
    assert y.device == x.device
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_reproducible_and_seed_dependent(name):
    x = torch.rand(2, 3, 32, 32, generator=gen(0))
    fn = FUNCTIONS[name]
    assert torch.equal(fn(x, gen(1)), fn(x, gen(1)))
    assert not torch.equal(fn(x, gen(1)), fn(x, gen(2)))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_equals_function(name):
    module, fn = MODULES[name]
    x = torch.rand(2, 3, 24, 24, generator=gen(0))
    assert torch.equal(module(x, gen(5)), fn(x, gen(5)))


# every pair with every option away from its default: (function, Module, options)
PAIRS = {
    "gaussian_noise": (
        D.gaussian_noise,
        D.GaussianNoise,
        {"sigma": (5.0, 50.0), "clip": False, "quantize": True},
    ),
    "haze": (
        D.haze,
        D.Haze,
        {"beta": (0.5, 1.0), "airlight": (0.6, 0.7), "depth_range": (0.5, 2.0)},
    ),
    "rain_streaks": (
        D.rain_streaks,
        D.RainStreaks,
        {
            "density": (0.02, 0.05),
            "length": (4.0, 12.0),
            "angle": (10.0, 40.0),
            "width": (0.5, 1.0),
            "brightness": 0.8,
            "alpha": (0.3, 0.6),
        },
    ),
    "snow": (
        D.snow,
        D.Snow,
        {
            "veil": (0.1, 0.2),
            "density": (0.02, 0.05),
            "size": (0.8, 1.2),
            "length": (1.0, 3.0),
            "angle": (-10.0, 10.0),
            "brightness": 0.9,
            "alpha": (0.5, 0.8),
        },
    ),
    "gaussian_blur": (D.gaussian_blur, D.GaussianBlur, {"sigma": (1.0, 2.0)}),
    "motion_blur": (D.motion_blur, D.MotionBlur, {"length": (3.0, 9.0), "angle": (-50.0, 10.0)}),
    "low_light": (
        D.low_light,
        D.LowLight,
        {"gamma": (1.2, 2.0), "gain": 0.5, "photons": (20.0, 80.0), "read_sigma": (2.0, 8.0)},
    ),
    "jpeg_compression": (D.jpeg_compression, D.JpegCompression, {"quality": (20.0, 70.0)}),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_module_equals_its_function_with_every_option(name, dtype):
    fn, module_class, options = PAIRS[name]
    x = torch.rand(3, 3, 20, 28, generator=gen(0), dtype=dtype)
    module = module_class(**options)
    assert torch.equal(module(x, gen(7)), fn(x, **options, generator=gen(7)))
    if name == "haze":
        depth = D.random_depth(x, (1.0, 4.0), generator=gen(8))
        assert torch.equal(
            module(x, gen(7), depth), fn(x, **options, depth=depth, generator=gen(7))
        )


@pytest.mark.parametrize(
    ("name", "option"),
    [
        (n, o)
        for n, (_, _, opts) in sorted(PAIRS.items())
        for o in opts
        if o not in ("clip", "quantize")
    ],
)
def test_every_module_checks_every_range_at_construction(name, option):
    _, module_class, _ = PAIRS[name]
    with pytest.raises(InputError, match=rf"^{module_class.__name__}: expected {option} to be "):
        module_class(**{option: -1e9})


NON_DEFAULT = [  # modules built with non-default values
    D.GaussianNoise(7, clip=False, quantize=True),
    D.Haze((0.1, 0.3), airlight=0.7, depth_range=(2.0, 5.0)),
    D.RainStreaks(
        density=0.01,
        length=(12.0, 14.0),
        angle=5.0,
        width=0.4,
        brightness=0.9,
        alpha=(0.2, 0.3),
    ),
    D.GaussianBlur(1.5),
    D.MotionBlur(9.0, angle=(10.0, 20.0)),
    D.LowLight(gamma=2.0, gain=(0.4, 0.5), photons=100.0, read_sigma=(2.0, 3.0)),
    D.JpegCompression(quality=(20, 30)),
]


@pytest.mark.parametrize("module", NON_DEFAULT, ids=[type(m).__name__ for m in NON_DEFAULT])
def test_repr_is_the_call_that_builds_the_same_degradation(module):
    # non-default values, ranges as the (low, high) floats the module stores and draws from:
    # the repr, evaluated, builds a module that draws exactly what this one draws
    rebuilt = eval(repr(module), vars(D))
    assert type(rebuilt) is type(module) and repr(rebuilt) == repr(module)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    first = module(x, generator=torch.Generator().manual_seed(2))
    again = rebuilt(x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_per_sample_parameters_differ():
    x = torch.full((4, 3, 64, 64), 0.5)
    y = D.gaussian_noise(x, (5.0, 50.0), clip=False, generator=gen(0))
    stds = (y - x).std(dim=(1, 2, 3)) * 255
    assert stds.max() - stds.min() > 3  # each sample drew its own sigma
    assert (stds > 4.5).all() and (stds < 52).all()


# ---------------------------------------------------------------------------------------------
# noise


@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_noise_sigma_matches(sigma):
    x = torch.full((1, 3, 256, 256), 0.5, dtype=torch.float64)
    y = D.gaussian_noise(x, sigma, clip=False, generator=gen(0))
    measured = (y - x).std().item() * 255
    assert measured == pytest.approx(sigma, rel=0.02)
    assert (y - x).mean().abs().item() * 255 < 0.2


def test_noise_quantized_is_8bit_and_truncated():
    x = torch.rand(1, 3, 32, 32, generator=gen(0))
    y = D.gaussian_noise(x, 25.0, quantize=True, generator=gen(1))
    levels = y * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    # truncation (numpy astype(uint8)) lowers the mean by about half a level
    z = D.gaussian_noise(torch.full((1, 3, 128, 128), 0.5), 5.0, quantize=True, generator=gen(1))
    assert (z.mean() * 255 - 128).item() == pytest.approx(-0.5, abs=0.15)


def test_noise_zero_sigma_is_identity():
    x = torch.rand(1, 3, 16, 16, generator=gen(0))
    assert torch.equal(D.gaussian_noise(x, 0.0, generator=gen(1)), x)


# ---------------------------------------------------------------------------------------------
# haze


def test_haze_beta_zero_is_exact_identity():
    x = torch.rand(2, 3, 20, 30, generator=gen(0), dtype=torch.float64)
    assert torch.equal(D.haze(x, 0.0, generator=gen(1)), x)


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**16), h=st.integers(8, 32), w=st.integers(8, 32))
def test_haze_monotone_in_beta(seed, h, w):
    x = torch.rand(2, 3, h, w, generator=gen(seed), dtype=torch.float64)
    airlight = D.haze(torch.zeros_like(x), 1e6, generator=gen(seed + 1))  # t = 0 gives A
    previous = torch.zeros_like(x)
    for beta in (0.02, 0.05, 0.1, 0.2, 0.5):
        y = D.haze(x, beta, generator=gen(seed + 1))  # same depth and A for every beta
        dist = (y - x).abs()
        assert (dist >= previous - 1e-12).all()
        # every pixel moves towards the airlight
        assert ((y - airlight).abs() <= (x - airlight).abs() + 1e-12).all()
        previous = dist
    assert previous.mean() > 0


def test_haze_closed_form_with_given_depth():
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    depth = torch.full((1, 1, 8, 8), 5.0, dtype=torch.float64)
    y = D.haze(x, 0.1, airlight=0.9, depth=depth)
    expected = 0.9 * (1 - torch.exp(torch.tensor(-0.5, dtype=torch.float64)))
    assert torch.allclose(y, expected.expand_as(y))


def test_random_depth_range_and_far_at_top():
    x = torch.rand(3, 3, 40, 30, generator=gen(0))
    d = D.random_depth(x, (2.0, 8.0), generator=gen(1))
    assert d.shape == (3, 1, 40, 30)
    assert torch.allclose(d.amin(dim=(1, 2, 3)), torch.full((3,), 2.0))
    assert torch.allclose(d.amax(dim=(1, 2, 3)), torch.full((3,), 8.0))
    assert (d[:, :, :5].mean(dim=(1, 2, 3)) > d[:, :, -5:].mean(dim=(1, 2, 3))).all()


# ---------------------------------------------------------------------------------------------
# rain, blur, low light, JPEG


def _lag3_correlations(v):
    down = (v[3:] * v[:-3]).sum()  # with the pixel 3 rows below
    right = (v[:, 3:] * v[:, :-3]).sum()  # with the pixel 3 columns to the right
    return down, right


def test_rain_only_brightens_and_streaks_follow_angle():
    x = torch.zeros(1, 1, 96, 96, dtype=torch.float64)
    opts = {"length": 25.0, "density": 0.002, "width": 0.5}
    vertical = D.rain_streaks(x, angle=0.0, generator=gen(0), **opts)
    assert (vertical >= x).all() and vertical.max() > 0.3
    assert vertical.mean() < 0.2  # translucent sparse streaks, not an opaque layer
    down, right = _lag3_correlations(vertical[0, 0])
    assert down > 3 * right
    horizontal = D.rain_streaks(x, angle=90.0, generator=gen(0), **opts)
    down, right = _lag3_correlations(horizontal[0, 0])
    assert right > 3 * down
    img = torch.rand(1, 3, 48, 48, generator=gen(1))
    assert (D.rain_streaks(img, generator=gen(2)) >= img - 1e-7).all()


def test_motion_blur_follows_angle():
    # horizontal stripes: constant along rows, so a horizontal blur leaves them unchanged
    stripes = (torch.arange(32) % 4 < 2).double().view(1, 1, 32, 1).expand(1, 3, 32, 32)
    horizontal = D.motion_blur(stripes, 9.0, angle=0.0)
    vertical = D.motion_blur(stripes, 9.0, angle=90.0)
    assert torch.allclose(horizontal, stripes)
    assert (vertical - stripes).abs().mean() > 0.2


def test_blurs_keep_constants_and_smooth():
    c = torch.full((2, 3, 20, 20), 0.3, dtype=torch.float64)
    x = torch.rand(2, 3, 40, 40, generator=gen(0), dtype=torch.float64)
    for fn in (D.gaussian_blur, D.motion_blur):
        assert torch.allclose(fn(c, generator=gen(1)), c)
        assert fn(x, generator=gen(1)).var() < 0.5 * x.var()


def test_gaussian_blur_stronger_with_sigma():
    x = torch.rand(1, 3, 40, 40, generator=gen(0))
    assert D.gaussian_blur(x, 3.0).var() < D.gaussian_blur(x, 1.0).var()


def test_low_light_darkens():
    x = torch.full((2, 3, 64, 64), 0.6)
    y = D.low_light(x, generator=gen(0))
    assert (y.mean(dim=(1, 2, 3)) < 0.45).all()
    assert y.std() > 0  # the sensor noise is there


def test_jpeg_error_grows_as_quality_drops():
    x = torch.rand(1, 3, 32, 32, generator=gen(0)).mul(0.5).add(0.25)
    x = D.gaussian_blur(x, 1.0)
    err = [(D.jpeg_compression(x, q) - x).abs().mean().item() for q in (95.0, 50.0, 10.0)]
    assert err[0] < err[1] < err[2]
    assert err[0] < 0.02


# ---------------------------------------------------------------------------------------------
# composer


def _constant(value):
    def fn(x, generator=None):
        return torch.full_like(x, value)

    return fn


def _add(value):
    def fn(x, generator=None):
        return x + value

    return fn


@settings(deadline=None, max_examples=10)
@given(b=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_mix_labels_match_what_was_applied(b, seed):
    values = [0.1, 0.4, 0.7, 0.9]
    mix = D.DegradationMix({f"c{i}": _constant(v) for i, v in enumerate(values)})
    y, labels = mix(torch.rand(b, 3, 8, 8, generator=gen(seed)), generator=gen(seed))
    assert labels.shape == (b,) and labels.dtype == torch.long
    expected = torch.tensor(values)[labels]
    assert torch.allclose(y[:, 0, 0, 0], expected)


@settings(deadline=None, max_examples=10)
@given(b=st.integers(1, 12), k=st.integers(2, 3), seed=st.integers(0, 2**16))
def test_mix_several_per_sample_labels_are_multi_hot(b, k, seed):
    mix = D.DegradationMix(
        [("a", _add(1 / 8)), ("b", _add(2 / 8)), ("c", _add(4 / 8))], max_per_sample=k
    )
    y, mask = mix(torch.zeros(b, 1, 4, 4), generator=gen(seed))
    assert mask.shape == (b, 3) and mask.dtype == torch.bool
    counts = mask.sum(dim=1)
    assert (counts >= 1).all() and (counts <= k).all()
    code = (y[:, 0, 0, 0] * 8).round().long()
    assert torch.equal(code, (mask.long() * torch.tensor([1, 2, 4])).sum(dim=1))


def test_mix_probs_and_reproducibility():
    mix = D.DegradationMix({"a": _constant(0.1), "b": _constant(0.2)}, probs=[0.0, 1.0])
    _, labels = mix(torch.rand(16, 3, 8, 8), generator=gen(0))
    assert (labels == 1).all()
    mix3 = D.make_mix("3task")
    x = torch.rand(6, 3, 24, 24, generator=gen(0))
    a, la = mix3(x, generator=gen(3))
    b, lb = mix3(x, generator=gen(3))
    assert torch.equal(a, b) and torch.equal(la, lb)
    c, _ = mix3(x, generator=gen(4))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("preset", ["3task", "5task", "cdd11"])
def test_presets_degrade_every_sample(preset):
    mix = D.make_mix(preset)
    x = torch.rand(10, 3, 32, 32, generator=gen(0), dtype=torch.float64)
    y, labels = mix(x, generator=gen(1))
    assert y.dtype == torch.float64
    assert ((y - x).abs().mean(dim=(1, 2, 3)) > 1e-3).all()
    assert labels.min() >= 0 and labels.max() < mix.num_degradations


def test_3task_names_and_kinds():
    mix = D.make_mix("3task")
    assert mix.names == ("noise_15", "noise_25", "noise_50", "rain", "haze")
    assert mix.kind_names == ("noise", "rain", "haze")
    kinds = mix.kind_labels(torch.arange(5))
    assert kinds.tolist() == [0, 0, 0, 1, 2]
    assert D.make_mix("5task").names == ("noise", "rain", "haze", "blur", "low_light")
    assert D.make_mix(["noise", "jpeg"]).names == ("noise", "jpeg")


def test_mix_apply_with_given_labels():
    mix = D.DegradationMix({"a": _constant(0.1), "b": _constant(0.2)})
    y = mix.degrade(torch.rand(3, 3, 8, 8), torch.tensor([1, 0, 1]))
    assert torch.allclose(y[:, 0, 0, 0], torch.tensor([0.2, 0.1, 0.2]))


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_messages():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(InputError, match=r"gaussian_noise: expected x of shape \(B, C, H, W\)"):
        D.gaussian_noise(torch.rand(3, 8, 8))
    with pytest.raises(InputError, match=r"haze: expected x to be a floating-point tensor"):
        D.haze(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"expected sigma to be a number or a \(low, high\) pair"):
        D.gaussian_noise(x, (30.0, 10.0))
    with pytest.raises(InputError, match=r"expected airlight .* <= 1.0, got 1.5"):
        D.haze(x, airlight=1.5)
    with pytest.raises(InputError, match=r"haze: expected depth of shape \(1, 1, 8, 8\)"):
        D.haze(x, depth=torch.ones(1, 1, 4, 4))
    with pytest.raises(InputError, match=r"expected x with 1 or 3 channels, got 2"):
        D.jpeg_compression(torch.rand(1, 2, 8, 8))
    with pytest.raises(InputError, match=r"expected quality .* got 0"):
        D.JpegCompression(quality=0)
    with pytest.raises(
        InputError, match=r"make_mix: expected preset to be one of '3task', '5task'"
    ):
        D.make_mix("7task")
    with pytest.raises(InputError, match=r"expected degradation name to be one of .* got 'fog'"):
        D.make_mix(["noise", "fog"])
    with pytest.raises(InputError, match=r"expected max_per_sample to be an integer in"):
        D.make_mix("3task", max_per_sample=9)
    with pytest.raises(InputError, match=r"expected probs to be 2 numbers"):
        D.DegradationMix({"a": _constant(0.1), "b": _constant(0.2)}, probs=[1.0])
    with pytest.raises(InputError, match=r"expected degradation 'a' to be callable"):
        D.DegradationMix({"a": 3})
    with pytest.raises(InputError, match=r"expected labels of shape \(1\), got \(2\)"):
        D.make_mix("3task").degrade(x, torch.tensor([0, 1]))


def test_mix_does_not_shadow_module_apply():
    """``nn.Module.apply(fn)`` reaches a mix inside a model (it used to be shadowed)."""
    model = torch.nn.Sequential(D.make_mix("3task"), torch.nn.Conv2d(3, 3, 1))
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert "DegradationMix" in seen and "Conv2d" in seen


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([9, 0, 1]), r"got 9$"),
        (torch.tensor([-1, 0, 1]), r"got -1$"),
        (torch.tensor([5, -1, 9]), r"got -1, 5, 9$"),
    ],
)
def test_mix_labels_out_of_range(labels, message):
    mix = D.make_mix("5task")
    with pytest.raises(
        InputError,
        match=r"DegradationMix: expected labels to be integers in \[0, 5\) \(one per degradation "
        r"of \('noise', 'rain', 'haze', 'blur', 'low_light'\)\), " + message,
    ):
        mix.degrade(torch.rand(3, 3, 8, 8), labels)


@pytest.mark.parametrize(
    "labels", [torch.tensor([0.5, 0.0, 1.0]), torch.tensor([1.0, 0.0, 2.0]), torch.ones(3).bool()]
)
def test_mix_labels_must_be_integers(labels):
    mix = D.make_mix("5task")
    with pytest.raises(
        InputError,
        match=rf"DegradationMix: expected labels to be an integer tensor, got {labels.dtype}",
    ):
        mix.degrade(torch.rand(3, 3, 8, 8), labels)


def test_mix_accepts_any_integer_label_dtype_and_only_tensors():
    mix = D.DegradationMix({"a": _constant(0.1), "b": _constant(0.2)})
    with pytest.raises(InputError, match=r"expected labels to be a torch.Tensor, got list"):
        mix.degrade(torch.rand(2, 3, 8, 8), [1, 0])
    for dtype in (torch.int32, torch.uint8, torch.int64):
        y = mix.degrade(torch.rand(2, 3, 8, 8), torch.tensor([1, 0], dtype=dtype))
        assert torch.allclose(y[:, 0, 0, 0], torch.tensor([0.2, 0.1]))


# -- snow and composites -----------------------------------------------------------------------


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**16), veil=st.floats(0.0, 1.0))
def test_snow_only_brightens_and_its_veil_lifts_the_darkest_pixel(seed, veil):
    x = torch.rand(2, 3, 24, 24, generator=gen(seed), dtype=torch.float64)
    y = D.snow(x, veil=veil, generator=gen(seed + 1))
    assert bool((y >= x - 1e-12).all())  # a veil and a screen blend never darken
    # the veil alone: x + v (1 - x); flakes only add to it
    assert bool((y >= x + veil * (1 - x) - 1e-9).all())


def test_snow_checks_its_options_under_its_own_name():
    with pytest.raises(InputError, match=r"^snow: expected veil to be "):
        D.snow(torch.rand(1, 3, 8, 8), veil=2.0)
    with pytest.raises(InputError, match=r"^snow: expected size to be "):
        D.snow(torch.rand(1, 3, 8, 8), size=100.0)


@pytest.mark.parametrize(
    "parts", [["haze", "rain"], ["low_light", "snow", "haze"], ["noise", "blur", "jpeg"]]
)
def test_composite_is_its_parts_in_physical_order_whatever_order_given(parts):
    x = torch.rand(2, 3, 32, 32, generator=gen(0), dtype=torch.float64)
    ordered = sorted(parts, key=D.PHYSICAL_ORDER.index)
    composite = D.Composite(list(reversed(parts)))
    assert composite.parts == tuple(ordered) and composite.name == "+".join(ordered)
    expected, g = x, gen(3)
    for name in ordered:  # the parts with their default options, drawing from one generator
        expected = D.DEGRADATIONS[name]()(expected, generator=g)
    assert torch.equal(composite(x, generator=gen(3)), expected)
    assert torch.equal(D.Composite("+".join(parts))(x, generator=gen(3)), expected)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["haze"], r"two or more distinct degradations, got \['haze'\]"),
        ("rain+rain", r"two or more distinct degradations, got \['rain', 'rain'\]"),
        (["haze", "fog"], r"expected a part to be one of 'haze', .*got 'fog'"),
    ],
)
def test_composite_refuses_what_is_not_a_composite(names, match):
    with pytest.raises(InputError, match=match):
        D.Composite(names)


def test_cdd11_labels_name_each_kind_and_its_parts():
    mix = D.make_mix("cdd11")
    assert mix.names == D.CDD11 and len(mix.names) == 11
    assert mix.parts[:4] == (("low_light",), ("haze",), ("rain",), ("snow",))
    assert mix.parts[-1] == ("haze", "snow", "low_light")
    assert all("+".join(parts) == name for name, parts in zip(mix.names, mix.parts, strict=True))
    x = torch.rand(11, 3, 64, 64, generator=gen(0))  # large enough for rain to fall on each
    labels = torch.arange(11)
    y = mix.degrade(x, labels, generator=gen(1))
    assert all(not torch.equal(y[i], x[i]) for i in range(11))
    # a composite label applies exactly its composite
    composite = D.Composite(mix.parts[7])
    alone = mix.degrade(x[7:8], labels[7:8], generator=gen(1))
    assert torch.equal(alone, composite(x[7:8], generator=gen(1)))


def test_make_mix_takes_composites_by_name():
    mix = D.make_mix(["rain", "rain+haze"], add=["snow+low_light"])
    assert mix.names == ("rain", "haze+rain", "snow+low_light")
    assert mix.parts == (("rain",), ("haze", "rain"), ("snow", "low_light"))
    assert mix.kinds == mix.names
    with pytest.raises(InputError, match="distinct degradation names"):
        D.make_mix(["haze+rain", "rain+haze"])
    with pytest.raises(InputError, match=r"got \['haze\+rain'\] again"):
        D.make_mix("cdd11", add=["rain+haze"])
