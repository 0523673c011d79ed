import builtins

import pytest
import torch

from contrastive_prompts import FilterFeatures, InputError, VGG16Features
from contrastive_prompts.features import _VGG16


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


def test_vgg16_loads_torchvision_layout(tmp_path):
    state = fake_vgg16_state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    vgg = VGG16Features(path)
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


def test_vgg16_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"vgg16-397923af\.pth.*torchvision itself is not needed.*FilterFeatures",
    ):
        VGG16Features(tmp_path / "absent.pth")


def test_vgg16_does_not_import_torchvision(monkeypatch):
    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("no torchvision here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    VGG16Features(fake_vgg16_state_dict(), layers=("relu1_1",), layer_weights=(1.0,))


def test_vgg16_bad_state_and_layers():
    state = fake_vgg16_state_dict()
    state["features.2.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(
        InputError, match=r"features.2.weight: expected \(64, 64, 3, 3\), got \(64, 64, 1, 1\)"
    ):
        VGG16Features(state)
    with pytest.raises(InputError, match=r"expected layers among relu1_1, .*got \['relu9_9'\]"):
        VGG16Features(state, layers=("relu9_9",), layer_weights=(1.0,))
