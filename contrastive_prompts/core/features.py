"""Feature spaces in which the contrastive prompt loss compares images.

A feature space is any module that maps ``(B, C, H, W)`` images to a list of feature maps; its
optional attribute ``layer_weights`` gives one weight per map. Three are provided:

- [PixelFeatures][contrastive_prompts.core.PixelFeatures]: the images themselves (any ``C``).
- [FilterFeatures][contrastive_prompts.core.FilterFeatures] (the default): fixed multi-scale
  intensity and Sobel-gradient maps built with kornia (any ``C``); needs no weights, so it works
  offline.
- [VGG16Features][contrastive_prompts.core.VGG16Features]: ImageNet VGG16 activations, from the
  tensors of torchvision's weights file (torchvision itself is not needed). It takes RGB
  (``C = 3``) and grey-scale images (``C = 1``, repeated to three channels), nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import kornia
import torch
from torch import Tensor, nn

from .._checks import InputError, InputTypeError, check_int_range, check_shape_any

__all__ = ["VGG16_WEIGHTS_URL", "FilterFeatures", "PixelFeatures", "VGG16Features"]

VGG16_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
"""Where torchvision publishes the ImageNet VGG16 weights that
[VGG16Features][contrastive_prompts.core.VGG16Features] reads (download it yourself: nothing here
goes online)."""


def _normalised_weights(where: str, weights: Sequence[float], count: int) -> tuple[float, ...]:
    weights = tuple(float(w) for w in weights)
    if len(weights) != count or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError(
            f"{where}: expected layer_weights of {count} non-negative numbers with a positive sum, "
            f"got {weights}"
        )
    return weights


class PixelFeatures(nn.Module):
    """The identity feature space: one map, the image itself.

    Shape:
        - Input: ``(B, C, H, W)``. Output: one map, the input.

    Examples:
        >>> [f.shape for f in PixelFeatures()(torch.rand(2, 3, 8, 8))]
        [torch.Size([2, 3, 8, 8])]
    """

    layer_weights = (1.0,)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[x]``: one feature map, the images themselves."""
        return [x]


class FilterFeatures(nn.Module):
    """Fixed multi-scale features: intensities and Sobel gradients on a Gaussian pyramid.

    Level ``l`` is the image blurred and halved ``l`` times (``kornia.geometry.pyrdown``) with its
    horizontal and vertical Sobel gradients stacked on the channels, so each map has ``3 * C``
    channels. No learned weights: it runs anywhere, offline, and is cheap.

    Args:
        num_scales: pyramid levels, 1 or more.
        layer_weights: one weight per level; equal by default.

    Shape:
        - Input: ``(B, C, H, W)``. Output: ``num_scales`` maps ``(B, 3C, H / 2^l, W / 2^l)``.

    Examples:
        >>> [tuple(f.shape) for f in FilterFeatures(num_scales=2)(torch.rand(1, 3, 16, 16))]
        [(1, 9, 16, 16), (1, 9, 8, 8)]
    """

    def __init__(self, *, num_scales: int = 3, layer_weights: Sequence[float] | None = None):
        super().__init__()
        check_int_range("FilterFeatures", "num_scales", num_scales, 1)
        self.num_scales = num_scales
        self.layer_weights = _normalised_weights(
            "FilterFeatures", layer_weights or [1.0] * num_scales, num_scales
        )

    def extra_repr(self) -> str:
        return f"num_scales={self.num_scales}, layer_weights={self.layer_weights}"

    def forward(self, x: Tensor) -> list[Tensor]:
        """The feature maps of ``(B, C, H, W)`` images, one per pyramid level, finest first.

        Level ``l`` has ``3 * C`` channels (the intensities and their two Sobel gradients) at
        the size of the image halved ``l`` times.
        """
        maps = []
        for level in range(self.num_scales):
            if level:
                x = kornia.geometry.transform.pyrdown(x) if min(x.shape[-2:]) > 1 else x
            gradients = kornia.filters.spatial_gradient(x, mode="sobel").flatten(1, 2)
            maps.append(torch.cat([x, gradients], dim=1))
        return maps


# torchvision's VGG16 ``features``: conv widths, "M" for max-pooling. Activation names follow the
# usual relu<block>_<conv> convention.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg16_layer_index() -> dict[str, int]:
    names, block, conv, index = {}, 1, 0, 0
    for item in _VGG16:
        if item == "M":
            block, conv, index = block + 1, 0, index + 1
        else:
            conv += 1
            names[f"relu{block}_{conv}"] = index + 1  # conv at index, ReLU right after
            index += 2
    return names


class VGG16Features(nn.Module):
    """Activations of ImageNet VGG16, from the tensors of torchvision's weights.

    The defaults follow MCLIR (the CPL authors' earlier work): ``relu1_2``, ``relu2_2``,
    ``relu3_3`` with weights 0.2 / 0.3 / 0.5. The network is rebuilt here, so torchvision is not
    required; only the tensors of its weights file (``vgg16-397923af.pth``, see
    [VGG16_WEIGHTS_URL][contrastive_prompts.core.features.VGG16_WEIGHTS_URL]) or any state dict
    with the same ``features.*`` tensors. Parameters are frozen. The module reads no file: read
    the weights first, with ``torch.load(path, weights_only=True)`` or, for a ``.safetensors``
    copy, ``safetensors.torch.load_file(path)``.

    Args:
        weights: the state dict of the weights file.
        layers: activation names, e.g. ``("relu1_2", "relu2_2", "relu3_3")``.
        layer_weights: one weight per layer.
        device: where to put the parameters.
        dtype: dtype of the parameters (the file is read in its own dtype, then converted).

    Shape:
        - Input: ``(B, 3, H, W)`` RGB in [0, 1] (ImageNet normalisation is applied inside), or
          ``(B, 1, H, W)`` grey-scale, repeated to three equal channels first: a grey image has
          the features of its grey RGB copy.
        - Output: one map per layer, ``(B, C_l, H / 2^p, W / 2^p)`` after ``p`` poolings
          (64, 128 and 256 channels at full, half and quarter size for the defaults).

    Raises:
        InputTypeError: ``weights`` is not a state dict (a path, say).
        InputError: unknown layer names, or a state dict that does not fit VGG16 (missing
            keys, other shapes, tensors that are not floating point or hold NaN); when called,
            images with other than 1 or 3 channels.

    Examples:
        Usually ``VGG16Features(torch.load("vgg16-397923af.pth", weights_only=True))``; here
        random tensors stand in for the file's first two convolutions:

        >>> shapes = {"0.weight": (64, 3, 3, 3), "0.bias": (64,),
        ...           "2.weight": (64, 64, 3, 3), "2.bias": (64,)}
        >>> state = {f"features.{k}": torch.randn(s) for k, s in shapes.items()}
        >>> vgg = VGG16Features(state, layers=("relu1_2",), layer_weights=(1.0,))
        >>> [f.shape for f in vgg(torch.rand(1, 3, 8, 8))]
        [torch.Size([1, 64, 8, 8])]
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        weights: Mapping[str, Tensor],
        *,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        layer_weights: Sequence[float] = (0.2, 0.3, 0.5),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        index = _vgg16_layer_index()
        unknown = [name for name in layers if name not in index]
        if unknown or not layers:
            raise InputError(
                f"VGG16Features: expected layers among {', '.join(index)}, got {list(layers)}"
            )
        self.layers = tuple(layers)
        self.layer_weights = _normalised_weights("VGG16Features", layer_weights, len(layers))
        self._taps = [index[name] for name in self.layers]
        modules: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.ReLU()]
                in_channels = int(item)
        self.features = nn.Sequential(*modules[: max(self._taps) + 1])
        self._load(weights)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), False)
        self.to(device=device, dtype=dtype)  # the file's tensors are read on the CPU, then moved

    def extra_repr(self) -> str:
        return f"layers={self.layers}, layer_weights={self.layer_weights}"

    def _load(self, weights: Mapping[str, Tensor]) -> None:
        if not isinstance(weights, Mapping):
            read = (
                f"a path ({str(weights)!r}): read the file first, with torch.load(path, "
                "weights_only=True) or safetensors.torch.load_file(path)"
                if isinstance(weights, (str, os.PathLike))
                else f"a {type(weights).__name__}"
            )
            raise InputTypeError(
                "VGG16Features: expected torchvision VGG16 weights (a state dict of tensors by "
                f"name), got {read}"
            )
        wanted = self.features.state_dict()
        state = {}
        for key in wanted:
            for candidate in (f"features.{key}", key):
                if candidate in weights:
                    state[key] = weights[candidate]
                    break
        missing = [f"features.{k}" for k in wanted if k not in state]
        wrong = [
            f"features.{k}: expected a tensor of {tuple(wanted[k].shape)}, got "
            + (f"{tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__)
            for k, v in state.items()
            if not isinstance(v, Tensor) or v.shape != wanted[k].shape
        ]
        if missing or wrong:
            raise InputError(
                "VGG16Features: expected torchvision VGG16 weights; "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, wrong {wrong[:5]}"
            )
        not_float = [f"features.{k}" for k, v in state.items() if not v.is_floating_point()]
        not_finite = [f"features.{k}" for k, v in state.items() if not bool(v.isfinite().all())]
        if not_float or not_finite:
            raise InputError(
                "VGG16Features: expected finite floating-point VGG16 weights, got "
                + "; ".join(
                    f"{what} {keys[:5]}"
                    for what, keys in (
                        ("not floating point:", not_float),
                        ("NaN or infinite:", not_finite),
                    )
                    if keys
                )
            )
        self.features.load_state_dict(state)

    def train(self, mode: bool = True) -> VGG16Features:
        # A fixed feature space stays in eval mode whatever the enclosing model does.
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The activations of ``layers`` for ``(B, 3, H, W)`` RGB images in [0, 1], in order.

        ``(B, 1, H, W)`` grey-scale images are repeated to three channels first.
        """
        check_shape_any(
            "VGG16Features",
            "x",
            x,
            ("B", 3, "H", "W"),
            ("B", 1, "H", "W"),
            hint=(
                "VGG16 takes RGB images, or grey-scale ones repeated to RGB; for other channel "
                "counts use PixelFeatures or FilterFeatures, which take any"
            ),
        )
        x = x.expand(-1, 3, -1, -1)  # grey to RGB; a view, and no change to RGB
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        maps = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self._taps:
                maps.append(x)
        return maps
