import subprocess
import sys

import pytest
import torch

from contrastive_prompts import InputError, InputTypeError
from contrastive_prompts.core import FilterFeatures, VGG16Features
from contrastive_prompts.core.features import _VGG16


def fake_vgg16_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the layout of torchvision's vgg16 file (features + classifier)."""
    g = torch.Generator().manual_seed(seed)
    state, index, in_ch = {}, 0, 3
    for item in _VGG16:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, in_ch, 3, 3, generator=g) * 0.1
        state[f"features.{index}.bias"] = torch.randn(item, generator=g) * 0.1
        in_ch, index = item, index + 2
    state["classifier.0.weight"] = torch.zeros(1)
    return state


def test_filter_features_shapes_and_gradients():
    maps = FilterFeatures()(torch.rand(2, 3, 17, 10))
    assert [tuple(m.shape) for m in maps] == [(2, 9, 17, 10), (2, 9, 8, 5), (2, 9, 4, 2)]
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert (
        FilterFeatures(num_scales=1)(flat)[0][:, 3:].abs().max() == 0
    )  # no gradient on a flat image


def test_filter_features_bad_weights():
    with pytest.raises(InputError, match=r"expected layer_weights of 2 non-negative numbers"):
        FilterFeatures(num_scales=2, layer_weights=(1.0,))


def test_vgg16_loads_torchvision_layout():
    state = fake_vgg16_state_dict()
    vgg = VGG16Features(state)
    maps = vgg(torch.rand(1, 3, 32, 32))
    assert [m.shape[1:] for m in maps] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert not any(p.requires_grad for p in vgg.parameters())
    torch.testing.assert_close(vgg.features[0].weight, state["features.0.weight"])
    vgg.train()
    assert not vgg.training
    # relu1_2 by hand
    x = torch.rand(1, 3, 8, 8)
    z = (x - vgg.mean) / vgg.std
    z = torch.relu(
        torch.nn.functional.conv2d(
            z, state["features.0.weight"], state["features.0.bias"], padding=1
        )
    )
    z = torch.relu(
        torch.nn.functional.conv2d(
            z, state["features.2.weight"], state["features.2.bias"], padding=1
        )
    )
    torch.testing.assert_close(vgg(x)[0], z)


def test_vgg16_takes_tensors_not_a_file(tmp_path):
    """The core reads no file: a path is refused with what to do instead."""
    for path in (tmp_path / "vgg16.pth", str(tmp_path / "vgg16.pth")):
        with pytest.raises(
            InputTypeError,
            match=r"expected torchvision VGG16 weights \(a state dict of tensors by name\), got a "
            r"path \('.*vgg16\.pth'\): read the file first, with torch\.load\(path, "
            r"weights_only=True\)",
        ):
            VGG16Features(path)
    with pytest.raises(InputTypeError, match=r"state dict of tensors by name\), got a list$"):
        VGG16Features([torch.ones(1)])


def test_vgg16_works_where_torchvision_cannot_be_imported(tmp_path):
    """A fresh interpreter, where ``import torchvision`` fails, imports the package and runs
    VGG16Features from a weights file: torchvision is needed neither at import nor at use."""
    path = tmp_path / "vgg16.pth"
    torch.save(fake_vgg16_state_dict(), path)
    code = (
        "import sys\n"
        "sys.modules['torchvision'] = None  # any import of torchvision raises ImportError\n"
        "import torch\n"
        "import contrastive_prompts\n"
        "from contrastive_prompts.core import VGG16Features\n"
        f"weights = torch.load({str(path)!r}, weights_only=True)\n"
        "maps = VGG16Features(weights)(torch.rand(1, 3, 16, 16))\n"
        "print([tuple(m.shape) for m in maps])\n"
        "print(sorted(m for m in sys.modules if m.startswith('torchvision')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shapes, loaded = done.stdout.splitlines()
    assert shapes == "[(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]"
    assert loaded == "['torchvision']"  # the blocking entry, no submodule


def test_vgg16_bad_state_and_layers():
    state = fake_vgg16_state_dict()
    state["features.2.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(
        InputError,
        match=r"features\.2\.weight: expected a tensor of \(64, 64, 3, 3\), got \(64, 64, 1, 1\)",
    ):
        VGG16Features(state)
    with pytest.raises(InputError, match=r"expected layers among relu1_1, .*got \['relu9_9'\]"):
        VGG16Features(state, layers=("relu9_9",), layer_weights=(1.0,))
