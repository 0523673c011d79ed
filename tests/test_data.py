import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastive_prompts import data as Dt
from contrastive_prompts._checks import InputError
from contrastive_prompts.degradations import DegradationMix


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
# benchmarks


def make_rain100l(root, ids=(1, 2, 3), missing=()):
    for k in ids:
        clean = torch.rand(3, 24, 20, generator=gen(k))
        write(root / "rainy" / f"rain-{k}.png", 1 - clean)
        if k not in missing:
            write(root / "gt" / f"norain-{k}.png", clean)


def test_rain100l_pairs_by_name_and_reports_missing(tmp_path):
    make_rain100l(tmp_path, ids=(1, 2, 10))
    ds = Dt.rain100l(tmp_path, label=3)
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
        Dt.rain100l(missing)
    with pytest.warns(RuntimeWarning, match=r"rainy/rain-3.png"):
        lenient = Dt.rain100l(missing, strict=False)
    assert len(lenient) == 2 and lenient.unmatched == ["rainy/rain-3.png", "gt/norain-9.png"]


def test_paired_crop_and_augment_keep_alignment(tmp_path):
    make_rain100l(tmp_path)
    ds = Dt.rain100l(tmp_path, crop_size=8, augment=True, seed=1)
    for i in range(len(ds)):
        degraded, clean, _ = ds[i]
        assert degraded.shape == clean.shape == (3, 8, 8)
        assert torch.allclose(degraded, 1 - clean, atol=1e-6)


def test_paired_corrupt_file_is_skipped_and_counted(tmp_path):
    make_rain100l(tmp_path)
    corrupt(tmp_path / "rainy" / "rain-2.png")
    ds = Dt.rain100l(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"rain-2.png"):
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == 3 and ds.num_skipped == 1
    assert torch.equal(items[1][1], items[2][1])  # item 2 stood in for the unreadable one


def test_reside_maps_hazy_names_to_clear_ids(tmp_path):
    for image_id in ("0001", "0002"):
        write(tmp_path / "clear" / f"{image_id}.png", torch.rand(3, 16, 16))
    for name in ("0001_0.8_0.2", "0001_1_0.04", "0002_0.9_0.1"):
        write(tmp_path / "hazy" / f"{name}.jpg", torch.rand(3, 16, 16))
    ds = Dt.reside(tmp_path, label=4)
    assert sorted((a.name, b.name) for a, b in ds.pairs) == [
        ("0001_0.8_0.2.jpg", "0001.png"),
        ("0001_1_0.04.jpg", "0001.png"),
        ("0002_0.9_0.1.jpg", "0002.png"),
    ]
    write(tmp_path / "hazy" / "0003_0.8_0.1.jpg", torch.rand(3, 16, 16))
    with pytest.raises(InputError, match=r"hazy/0003_0.8_0.1.jpg"):
        Dt.reside(tmp_path)


def test_same_name_benchmarks_and_size_mismatch(tmp_path):
    for split, (deg, cl) in {"gopro": ("blur", "sharp"), "lol": ("low", "high")}.items():
        root = tmp_path / split
        write(root / deg / "a.png", torch.rand(3, 16, 16))
        write(root / cl / "a.png", torch.rand(3, 20, 18))  # larger ground truth is centre-cropped
        write(root / deg / "b.png", torch.rand(3, 16, 16))
        reader = getattr(Dt, split)
        with pytest.raises(InputError, match=rf"{deg}/b.png"):
            reader(root)
        with pytest.warns(RuntimeWarning, match=rf"{deg}/b.png"):
            ds = reader(root, strict=False)
        assert ds.unmatched == [f"{deg}/b.png"]
        degraded, clean, _ = ds[0]
        assert degraded.shape == clean.shape == (3, 16, 16)


def test_missing_folders_and_empty_pairs(tmp_path):
    with pytest.raises(InputError, match=r"expected a folder 'rainy' in"):
        Dt.rain100l(tmp_path)
    (tmp_path / "hazy").mkdir()
    (tmp_path / "gt").mkdir()
    with pytest.raises(InputError, match=r"reside: expected image pairs in .* found none"):
        Dt.reside(tmp_path)
    (tmp_path / "only_hazy" / "hazy").mkdir(parents=True)
    with pytest.raises(InputError, match=r"expected a folder 'gt' or 'clear'"):
        Dt.match_reside(tmp_path / "only_hazy")


def test_cbsd68_noise_is_fixed_per_seed(tmp_path):
    for i in range(2):
        write(tmp_path / f"{i}.png", torch.full((3, 64, 64), 0.5))
    ds = Dt.cbsd68(tmp_path, sigma=25, label=1)
    noisy, clean, label = ds[0]
    assert int(label) == 1 and ds.names == {1: "noise_25"}
    assert torch.equal(noisy, Dt.cbsd68(tmp_path, sigma=25)[0][0])
    assert not torch.equal(noisy, Dt.cbsd68(tmp_path, sigma=25, seed=1)[0][0])
    assert not torch.equal(noisy, ds[1][0])
    assert (noisy - clean).std().item() * 255 == pytest.approx(25, rel=0.1)
    assert torch.allclose(noisy * 255, (noisy * 255).round(), atol=1e-3)  # 8-bit
