import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastive_prompts._checks import InputError
from contrastive_prompts.app import data as Dt
from contrastive_prompts.app.degradations import DegradationMix


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def levels(x: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels an 8-bit file stores."""
    return (x * 255).round() / 255


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Dt.write_image(path, image)
    return path


def corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return path


# ---------------------------------------------------------------------------------------------
# I/O


@settings(deadline=None, max_examples=8)
@given(h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 999))
def test_png_round_trip_is_exact_to_8_bits(tmp_path_factory, h, w, seed):
    x = torch.rand(3, h, w, generator=gen(seed))
    path = tmp_path_factory.mktemp("io") / "x.png"
    Dt.write_image(path, x)
    y = Dt.read_image(path)
    assert y.shape == (3, h, w) and y.dtype == torch.float32
    assert torch.allclose(y, levels(x), atol=1e-6)


def test_jpeg_grey_and_alpha(tmp_path):
    x = torch.rand(3, 32, 32, generator=gen(0)) * 0.5 + 0.25
    x = torch.nn.functional.avg_pool2d(x[None], 5, 1, 2)[0]
    Dt.write_image(tmp_path / "x.jpg", x)
    assert (Dt.read_image(tmp_path / "x.jpg") - x).abs().mean() < 0.02
    grey = torch.rand(1, 9, 7, generator=gen(1))
    Dt.write_image(tmp_path / "g.png", grey)
    g3 = Dt.read_image(tmp_path / "g.png")
    assert g3.shape == (3, 9, 7) and torch.allclose(g3, levels(grey).expand(3, -1, -1), atol=1e-6)
    # RGBA: the colour is kept as stored, alpha dropped (not composited over white)
    from kornia.io import write_image as kornia_write

    rgba = torch.randint(0, 256, (4, 6, 5), dtype=torch.uint8, generator=gen(2))
    rgba[3] = 0
    kornia_write(str(tmp_path / "a.png"), rgba)
    assert torch.allclose(Dt.read_image(tmp_path / "a.png"), rgba[:3].float() / 255)


def test_io_errors(tmp_path):
    with pytest.raises(
        InputError, match=r"write_image: expected image with 1 or 3 channels, got 2"
    ):
        Dt.write_image(tmp_path / "x.png", torch.rand(2, 4, 4))
    with pytest.raises(InputError, match=r"expected image to be a torch.Tensor, got list"):
        Dt.write_image(tmp_path / "x.png", [1, 2])
    with pytest.raises(FileNotFoundError):
        Dt.read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"bad.png"):
        Dt.read_image(corrupt(tmp_path / "bad.png"))


def test_sample_images_and_split():
    images = Dt.sample_images()
    assert list(images) == [
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "hubble_deep_field",
        "stereo_motorcycle",
    ]
    for image in images.values():
        assert image.ndim == 3 and image.shape[0] == 3 and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.05
    train, held_out = Dt.sample_split()
    assert len(train) == 4 and len(held_out) == 2
    assert not set(Dt.SAMPLE_TRAIN) & set(Dt.SAMPLE_HELD_OUT)
    assert torch.equal(held_out[0], images["chelsea"])
    with pytest.raises(InputError, match=r"expected names from .* got 'lena'"):
        Dt.sample_images(["lena"])


# ---------------------------------------------------------------------------------------------
# synthetic pairs


def test_synthetic_items_reproducible_per_seed_epoch_index():
    images = [torch.rand(3, 40, 50, generator=gen(i)) for i in range(3)]
    ds = Dt.SyntheticDataset(images, "3task", crop_size=32, seed=7, repeat=2)
    again = Dt.SyntheticDataset(images, "3task", crop_size=32, seed=7, repeat=2)
    assert len(ds) == 6
    for i in range(len(ds)):
        d, c, label = ds[i]
        d2, c2, label2 = again[i]
        assert torch.equal(d, d2) and torch.equal(c, c2) and label == label2
        assert d.shape == c.shape == (3, 32, 32) and 0 <= int(label) < len(ds.names)
        assert not torch.equal(d, c)
    first = ds[0]
    ds.set_epoch(1)
    assert not torch.equal(first[1], ds[0][1])  # a new crop / augmentation
    ds.set_epoch(0)
    assert torch.equal(first[0], ds[0][0])
    other_seed = Dt.SyntheticDataset(images, "3task", crop_size=32, seed=8)
    assert not torch.equal(first[1], other_seed[0][1])


def test_synthetic_clean_is_a_crop_of_the_source_and_augmented():
    image = torch.arange(20 * 30, dtype=torch.float32).view(1, 20, 30).expand(3, -1, -1) / 600
    plain = Dt.SyntheticDataset([image], ["noise"], crop_size=8, augment=False, seed=0)
    _, clean, _ = plain[0]
    top, left = divmod(round(clean[0, 0, 0].item() * 600), 30)
    assert torch.equal(clean, image[:, top : top + 8, left : left + 8])
    augmented = Dt.SyntheticDataset([image], ["noise"], crop_size=8, seed=0, repeat=20)
    corners = {tuple(augmented[i][1][0, 0, :2].tolist()) for i in range(20)}
    # rotations and flips change which way the ramp runs along the first row
    assert len({round(b - a, 5) for a, b in corners}) > 1


def test_synthetic_small_images_are_padded_and_labels_match_mix():
    mix = DegradationMix(
        {"a": lambda x, generator=None: x * 0, "b": lambda x, generator=None: x * 0 + 1}
    )
    ds = Dt.SyntheticDataset([torch.rand(3, 10, 12)], mix, crop_size=16, repeat=8)
    for i in range(8):
        d, c, label = ds[i]
        assert c.shape == (3, 16, 16)
        assert torch.equal(d, torch.full_like(c, float(label)))


def test_dataloader_workers_are_deterministic():
    images = [torch.rand(3, 24, 24, generator=gen(i)) for i in range(4)]
    ds = Dt.SyntheticDataset(images, "5task", crop_size=16, seed=3)

    def run(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        return [torch.cat([d.flatten(), c.flatten(), lab.float()]) for d, c, lab in loader]

    assert all(torch.equal(a, b) for a, b in zip(run(0), run(2), strict=True))


def test_synthetic_folder_skips_corrupt_file(tmp_path):
    for i in range(3):
        write(tmp_path / f"img{i}.png", torch.rand(3, 20, 20, generator=gen(i)))
    corrupt(tmp_path / "img1b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = Dt.SyntheticDataset(tmp_path, "3task", crop_size=16)
    assert len(ds) == 4
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image .*img1b.png"):
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == 4 and all(d.shape == (3, 16, 16) for d, _, _ in items)
    assert ds.num_skipped == 1 and str(tmp_path / "img1b.png") in ds.skipped


def test_synthetic_errors(tmp_path):
    with pytest.raises(InputError, match=r"expected image files .* found none"):
        Dt.SyntheticDataset(tmp_path)
    with pytest.raises(InputError, match=r"expected an existing folder or file, got .*nowhere"):
        Dt.SyntheticDataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"expected at least one image, got an empty list"):
        Dt.SyntheticDataset([])
    with pytest.raises(InputError, match=r"expected images\[0\] of shape \(C, H, W\)"):
        Dt.SyntheticDataset([torch.rand(2, 3, 8, 8)])
    with pytest.raises(InputError, match=r"expected crop_size to be an integer >= 1, got 0"):
        Dt.SyntheticDataset([torch.rand(3, 8, 8)], crop_size=0)
    corrupt(tmp_path / "only.png")
    ds = Dt.SyntheticDataset(tmp_path)
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(
            InputError, match=r"expected at least one readable image, got none of 1; unreadable: "
        ),
    ):
        ds[0]


def test_images_smaller_than_the_crop_warn_once_each(tmp_path):
    Dt.write_image(tmp_path / "small.png", torch.rand(3, 20, 48))
    Dt.write_image(tmp_path / "large.png", torch.rand(3, 64, 64))
    ds = Dt.SyntheticDataset(tmp_path, crop_size=32, repeat=3)
    with pytest.warns(UserWarning, match=r"small\.png is 20x48, smaller than crop_size 32") as seen:
        for i in range(len(ds)):
            assert ds[i][1].shape == (3, 32, 32)
    assert len([w for w in seen if "smaller than crop_size" in str(w.message)]) == 1


# ---------------------------------------------------------------------------------------------
# the table of benchmarks


def make_rain100l(root, ids=(1, 2, 3), missing=()):
    for k in ids:
        clean = torch.rand(3, 24, 20, generator=gen(k))
        write(root / "rainy" / f"rain-{k}.png", 1 - clean)
        if k not in missing:
            write(root / "gt" / f"norain-{k}.png", clean)


def test_rain100l_pairs_by_name_in_natural_order_and_reports_missing(tmp_path):
    make_rain100l(tmp_path, ids=(1, 2, 10))
    ds = Dt.read_benchmark("rain100l", tmp_path, label=3)
    assert [p[0].name for p in ds.pairs] == ["rain-1.png", "rain-2.png", "rain-10.png"]
    assert [p[1].name for p in ds.pairs] == ["norain-1.png", "norain-2.png", "norain-10.png"]
    degraded, clean, label = ds[2]
    assert int(label) == 3 and ds.names == {3: "rain"}
    assert torch.allclose(degraded, 1 - clean, atol=1e-6)

    missing = tmp_path / "missing"
    make_rain100l(missing, ids=(1, 2, 3), missing=(3,))
    write(missing / "gt" / "norain-9.png", torch.rand(3, 8, 8))
    with pytest.raises(
        InputError, match=r"2 files .* no partner: rainy/rain-3.png, gt/norain-9.png"
    ):
        Dt.read_benchmark("rain100l", missing)
    with pytest.warns(RuntimeWarning, match=r"rainy/rain-3.png"):
        lenient = Dt.read_benchmark("rain100l", missing, strict=False)
    assert len(lenient) == 2 and lenient.unmatched == ["rainy/rain-3.png", "gt/norain-9.png"]


def test_table_rows_are_named_by_their_keys_and_frozen():
    assert list(Dt.BENCHMARKS) == ["rain100l", "sots", "cbsd68", "gopro", "lol"]
    for key, bench in Dt.BENCHMARKS.items():
        assert isinstance(bench, Dt.Benchmark) and bench.name == key
        assert bench.layout and "\n" not in bench.layout
        assert bench.paired == (key != "cbsd68")
    assert Dt.BENCHMARKS["sots"].clean_dirs == ("gt", "clear")
    assert [Dt.BENCHMARKS[k].degradation for k in ("rain100l", "sots", "gopro", "lol")] == [
        "rain",
        "haze",
        "blur",
        "low_light",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Dt.BENCHMARKS["lol"].degradation = "dark"


def test_naming_rules():
    rain = Dt.BENCHMARKS["rain100l"].clean_stem
    assert rain("rain-12") == "norain-12" and rain("rain-") is None and rain("norain-1") is None
    assert Dt.BENCHMARKS["sots"].clean_stem("0001_0.8_0.2") == "0001"
    assert Dt.BENCHMARKS["sots"].clean_stem("0001") == "0001"
    assert Dt.BENCHMARKS["gopro"].clean_stem("GOPR0384_11_00-000001") == "GOPR0384_11_00-000001"


def _evaluate_choices(parser):
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    evaluate = sub.choices["evaluate"]
    return next(a for a in evaluate._actions if a.dest == "benchmark").choices


def test_the_table_drives_the_command_line_choices(monkeypatch):
    from contrastive_prompts.app.cli import build_parser

    assert list(_evaluate_choices(build_parser())) == list(Dt.BENCHMARKS)
    mine = dataclasses.replace(Dt.BENCHMARKS["gopro"], name="mine", degraded_dirs=("input",))
    monkeypatch.setitem(Dt.BENCHMARKS, "mine", mine)
    assert list(_evaluate_choices(build_parser()))[-1] == "mine"


# every paired layout: (degraded folder, clean folder, degraded stems, clean stems, pairs,
# unmatched), with a file that breaks the naming rule or lacks its partner on each side
LAYOUTS = {
    "rain100l": (
        "rainy",
        "gt",
        ["rain-1", "rain-2", "rain-3", "7"],
        ["norain-1", "norain-2", "norain-9"],
        [("rain-1", "norain-1"), ("rain-2", "norain-2")],
        ["rainy/7.png", "rainy/rain-3.png", "gt/norain-9.png"],
    ),
    "sots": (
        "hazy",
        "gt",
        ["0001_0.8_0.2", "0001_1_0.04", "0002_0.9_0.1", "0003_0.8_0.1"],
        ["0001", "0002", "0004"],
        [("0001_0.8_0.2", "0001"), ("0001_1_0.04", "0001"), ("0002_0.9_0.1", "0002")],
        ["hazy/0003_0.8_0.1.png", "gt/0004.png"],
    ),
    "gopro": ("blur", "sharp", ["a", "b"], ["a", "c"], [("a", "a")], ["blur/b.png", "sharp/c.png"]),
    "lol": ("low", "high", ["1", "2"], ["1", "3"], [("1", "1")], ["low/2.png", "high/3.png"]),
}


def make_layout(root, name, clean_dir=None):
    deg_dir, default_clean, deg, clean, pairs, unmatched = LAYOUTS[name]
    clean_dir = clean_dir or default_clean
    for stem in clean:
        write(root / clean_dir / f"{stem}.png", torch.rand(3, 8, 8, generator=gen(len(stem))))
    for stem in deg:
        write(root / deg_dir / f"{stem}.png", torch.rand(3, 8, 8))
    return pairs, [u.replace(f"{default_clean}/", f"{clean_dir}/") for u in unmatched]


@pytest.mark.parametrize(
    ("name", "clean_dir"),
    [("rain100l", None), ("sots", "gt"), ("sots", "clear"), ("gopro", None), ("lol", None)],
)
def test_read_benchmark_on_each_layout(tmp_path, name, clean_dir):
    pairs, unmatched = make_layout(tmp_path, name, clean_dir)
    with pytest.raises(InputError, match=rf"{len(unmatched)} files .* have no partner") as error:
        Dt.read_benchmark(name, tmp_path)
    assert ", ".join(unmatched) in str(error.value) and "strict=False" in str(error.value)
    assert f"read_benchmark('{name}')" in str(error.value)
    with pytest.warns(RuntimeWarning, match=unmatched[0]):
        ds = Dt.read_benchmark(name, tmp_path, label=2, strict=False)
    assert isinstance(ds, Dt.PairedDataset) and ds.unmatched == unmatched
    assert [(d.stem, c.stem) for d, c in ds.pairs] == pairs
    assert ds.names == {2: Dt.BENCHMARKS[name].degradation}
    degraded, clean, label = ds[len(ds) - 1]
    assert degraded.shape == clean.shape == (3, 8, 8) and int(label) == 2
    assert Dt.BENCHMARKS[name].match(tmp_path) == (ds.pairs, unmatched)
    with pytest.warns(RuntimeWarning, match="have no partner"):
        renamed = Dt.read_benchmark(name, tmp_path, degradation="mine", strict=False)
    assert renamed.names == {0: "mine"}


def test_read_benchmark_crops_augments_and_keeps_alignment(tmp_path):
    make_rain100l(tmp_path)
    ds = Dt.read_benchmark("rain100l", tmp_path, crop_size=8, augment=True, seed=1)
    for i in range(len(ds)):
        degraded, clean, _ = ds[i]
        assert degraded.shape == clean.shape == (3, 8, 8)
        assert torch.allclose(degraded, 1 - clean, atol=1e-6)


def test_read_benchmark_errors(tmp_path):
    expected = (
        "read_benchmark: expected name to be one of 'rain100l', 'sots', 'cbsd68', 'gopro', "
        "'lol', got 'rain100h'"
    )
    with pytest.raises(InputError) as error:
        Dt.read_benchmark("rain100h", tmp_path)
    assert str(error.value) == expected
    with pytest.raises(InputError, match=r"read_benchmark\('lol'\): expected root to be an ex"):
        Dt.read_benchmark("lol", tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"expected a folder 'rainy' in .*, found none"):
        Dt.read_benchmark("rain100l", tmp_path)
    (tmp_path / "hazy").mkdir()
    with pytest.raises(InputError, match=r"expected a folder 'gt' or 'clear' in"):
        Dt.read_benchmark("sots", tmp_path)
    (tmp_path / "gt").mkdir()
    with pytest.raises(InputError, match=r"read_benchmark\('sots'\): expected image pairs in .*"):
        Dt.read_benchmark("sots", tmp_path)
    with pytest.raises(InputError, match=r"expected crop_size=None and augment=False .* got"):
        Dt.read_benchmark("cbsd68", tmp_path, crop_size=8)
    with pytest.raises(InputError, match=r"expected a layout with a degraded folder to match"):
        Dt.BENCHMARKS["cbsd68"].match(tmp_path)


def test_a_layout_of_your_own(tmp_path):
    for k in (1, 2):
        write(tmp_path / "input" / f"rain-{k}.png", torch.rand(3, 8, 8))
        write(tmp_path / "target" / f"norain-{k}.png", torch.rand(3, 8, 8))
    mine = dataclasses.replace(
        Dt.BENCHMARKS["rain100l"], degraded_dirs=("input",), clean_dirs=("target",)
    )
    ds = Dt.read_benchmark(mine, tmp_path, label=1)
    assert len(ds) == 2 and ds.names == {1: "rain"}
    pairs, unmatched = Dt.match_pairs(tmp_path, "input", ["gt", "target"], mine.clean_stem)
    assert pairs == ds.pairs and unmatched == []
    pairs, unmatched = Dt.match_pairs(tmp_path, "input", "target")  # same stems: none
    assert pairs == [] and len(unmatched) == 4
    # no clean folder: the clean images lie in the root itself
    flat = tmp_path / "flat"
    write(flat / "a.png", torch.rand(3, 8, 8))
    write(flat / "b.png", torch.rand(3, 8, 8))
    write(flat / "noisy" / "a.png", torch.rand(3, 8, 8))
    pairs, unmatched = Dt.match_pairs(flat, "noisy", ())
    assert pairs == [(flat / "noisy" / "a.png", flat / "a.png")] and unmatched == ["b.png"]


def test_paired_corrupt_file_is_skipped_and_counted(tmp_path):
    make_rain100l(tmp_path)
    corrupt(tmp_path / "rainy" / "rain-2.png")
    ds = Dt.read_benchmark("rain100l", tmp_path)
    with pytest.warns(RuntimeWarning, match=r"rain-2.png"):
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == 3 and ds.num_skipped == 1
    assert str(tmp_path / "rainy" / "rain-2.png") in ds.skipped
    assert torch.equal(items[1][1], items[2][1])  # item 2 stood in for the unreadable one


def test_paired_size_mismatch_is_centre_cropped(tmp_path):
    write(tmp_path / "blur" / "a.png", torch.rand(3, 16, 16))
    write(tmp_path / "sharp" / "a.png", torch.rand(3, 20, 18))  # larger ground truth
    degraded, clean, _ = Dt.read_benchmark("gopro", tmp_path)[0]
    assert degraded.shape == clean.shape == (3, 16, 16)


def test_cbsd68_noise_is_fixed_per_seed(tmp_path):
    for i in range(2):
        write(tmp_path / f"{i}.png", torch.full((3, 64, 64), 0.5))
    ds = Dt.read_benchmark("cbsd68", tmp_path, sigma=25, label=1)
    assert isinstance(ds, Dt.NoisyDataset)
    noisy, clean, label = ds[0]
    assert int(label) == 1 and ds.names == {1: "noise_25"}
    assert torch.equal(noisy, Dt.read_benchmark("cbsd68", tmp_path, sigma=25)[0][0])
    assert not torch.equal(noisy, Dt.read_benchmark("cbsd68", tmp_path, sigma=25, seed=1)[0][0])
    assert not torch.equal(noisy, ds[1][0])
    assert (noisy - clean).std().item() * 255 == pytest.approx(25, rel=0.1)
    assert torch.allclose(noisy * 255, (noisy * 255).round(), atol=1e-3)  # 8-bit
    assert Dt.read_benchmark("cbsd68", tmp_path, sigma=50).names == {0: "noise_50"}
    assert Dt.read_benchmark("cbsd68", tmp_path, degradation="n").names == {0: "n"}


def test_noisy_dataset_reads_without_a_synthetic_dataset(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("NoisyDataset built a SyntheticDataset")

    monkeypatch.setattr(Dt.SyntheticDataset, "__init__", refuse)
    for i in range(2):
        write(tmp_path / f"{i}.png", torch.full((3, 8, 8), 0.5))
    corrupt(tmp_path / "1b.png")
    ds = Dt.NoisyDataset(tmp_path, 25)
    assert len(ds) == 3 and [p.name for p in ds.paths] == ["0.png", "1.png", "1b.png"]
    with pytest.warns(RuntimeWarning, match=r"NoisyDataset: skipping unreadable image .*1b.png"):
        items = [ds[i] for i in range(len(ds))]
    assert ds.num_skipped == 1 and torch.equal(items[2][1], items[0][1])
    memory = Dt.NoisyDataset([torch.full((3, 8, 8), 0.5)], 25)
    assert torch.equal(memory[0][0], ds[0][0]) and memory.paths == []
    with pytest.raises(InputError, match=r"NoisyDataset: expected an existing folder or file, got"):
        Dt.NoisyDataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"NoisyDataset: expected at least one image, got an emp"):
        Dt.NoisyDataset([])
    with pytest.raises(InputError, match=r"NoisyDataset: expected images\[0\] of shape"):
        Dt.NoisyDataset([torch.rand(2, 3, 8, 8)])
    with pytest.raises(InputError, match=r"NoisyDataset: expected seed to be an integer >= 0"):
        Dt.NoisyDataset(tmp_path, seed=-1)


def test_synthetic_cache_reads_each_file_once(tmp_path, monkeypatch):
    from contrastive_prompts.app.data import images

    write(tmp_path / "a.png", torch.rand(3, 16, 16))
    reads = []
    real = images.read_image
    monkeypatch.setattr(images, "read_image", lambda p, **kw: reads.append(p) or real(p, **kw))
    cached = Dt.SyntheticDataset(tmp_path, crop_size=8, repeat=3, cache=True)
    [cached[i] for i in range(3)]
    assert len(reads) == 1
    plain = Dt.SyntheticDataset(tmp_path, crop_size=8, repeat=3)
    [plain[i] for i in range(3)]
    assert len(reads) == 4 and plain.paths == [tmp_path / "a.png"]


def test_names_is_a_dict_everywhere(tmp_path):
    from contrastive_prompts.app.metrics import evaluate, names_of

    make_rain100l(tmp_path / "rain")
    write(tmp_path / "clean" / "0.png", torch.rand(3, 16, 16))
    mix = DegradationMix({"a": lambda x, generator=None: x, "b": lambda x, generator=None: x})
    datasets = [
        Dt.SyntheticDataset([torch.rand(3, 16, 16)], mix, crop_size=8),
        Dt.DegradedCopies([torch.rand(3, 16, 16)], mix),
        Dt.degraded_copies([torch.rand(3, 16, 16)], "3task"),
        Dt.PairedDataset([(tmp_path / "clean" / "0.png",) * 2], label=4, name="x"),
        Dt.read_benchmark("rain100l", tmp_path / "rain", label=5),
        Dt.NoisyDataset(tmp_path / "clean", 15, label=6),
        Dt.read_benchmark("cbsd68", tmp_path / "clean", label=7),
    ]
    for ds in datasets:
        assert isinstance(ds.names, dict), type(ds).__name__
        assert all(isinstance(k, int) and isinstance(v, str) for k, v in ds.names.items())
        assert names_of(ds) == ds.names
    assert datasets[0].names == datasets[1].names == {0: "a", 1: "b"}
    assert datasets[2].names == dict(
        enumerate(("noise_15", "noise_25", "noise_50", "rain", "haze"))
    )
    assert [ds.names for ds in datasets[3:]] == [
        {4: "x"},
        {5: "rain"},
        {6: "noise_15"},
        {7: "noise_25"},
    ]
    # a mix of datasets: the names of every part, by label
    mixed = torch.utils.data.ConcatDataset([datasets[0], *datasets[3:]])
    assert names_of(mixed) == {0: "a", 1: "b", 4: "x", 5: "rain", 6: "noise_15", 7: "noise_25"}
    assert evaluate(lambda x: x, datasets[1]).names == ["a", "b"]
    assert "names=('a', 'b')" in repr(datasets[0])  # the repr shows the mix's names as before


def test_bmp_files_are_read_through_pillow(tmp_path):
    """WED's photos are BMP, which kornia-rs does not decode: palette and RGB both read."""
    from PIL import Image

    pixels = torch.randint(0, 256, (6, 9, 3), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "rgb.bmp")
    Image.fromarray(pixels[..., 0].numpy()).convert("P").save(tmp_path / "palette.bmp")
    torch.testing.assert_close(
        Dt.read_image(tmp_path / "rgb.bmp"), pixels.permute(2, 0, 1).float() / 255
    )
    grey = Dt.read_image(tmp_path / "palette.bmp")
    assert grey.shape == (3, 6, 9) and torch.equal(grey[0], grey[2])
    (tmp_path / "broken.bmp").write_bytes(b"BM not an image")
    with pytest.raises(InputError, match=r"broken\.bmp': cannot read the size from its BMP header"):
        Dt.read_image(tmp_path / "broken.bmp")
    with pytest.raises(ValueError, match="cannot decode the BMP file"):
        Dt.read_image(tmp_path / "broken.bmp", max_pixels=None)  # no header check: the decoder


def test_clean_files_sharing_a_name_are_reported_not_dropped(tmp_path):
    for folder, name in (("rainy", "rain-1.png"), ("gt", "norain-1.png"), ("gt", "norain-1.jpg")):
        (tmp_path / folder).mkdir(exist_ok=True)
        Dt.write_image(tmp_path / folder / name, torch.rand(3, 8, 8))
    with pytest.raises(InputError, match=r"3 files .* have no partner") as caught:
        Dt.read_benchmark("rain100l", tmp_path)
    for name in ("rainy/rain-1.png", "gt/norain-1.png", "gt/norain-1.jpg"):
        assert name in str(caught.value)
    assert "another clean file has its name" in str(caught.value)
