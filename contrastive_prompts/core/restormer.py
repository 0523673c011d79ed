"""Restormer building blocks (Zamir et al., CVPR 2022) as PromptIR uses them.

Channel LayerNorm, multi-Dconv head transposed attention (MDTA), the gated-Dconv feed-forward
network (GDFN), the transformer block that chains them, and the down/up-sampling steps of the
U-Net. Convolutions carry no bias, as in PromptIR.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._checks import InputError, check_int_range
from ._state import reset_submodules

__all__ = ["Attention", "FeedForward", "LayerNorm2d", "TransformerBlock", "downsample", "upsample"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map, with weight and bias.

    Args:
        dim: number of channels ``C``.
        eps: added to the variance.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, C, H, W)``; output: the same.

    Examples:
        >>> LayerNorm2d(4)(torch.rand(2, 4, 3, 3)).mean(dim=1).abs().max() < 1e-5
        tensor(True)
    """

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int_range("LayerNorm2d", "dim", dim, 1)
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """Weight 1, bias 0: the identity after normalising."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``(B, C, H, W)`` over ``C`` at each pixel, then scale and shift."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """MDTA: self-attention across channels, so its cost is linear in the number of pixels.

    Queries and keys are L2-normalised over pixels; each head has a learned temperature.

    Args:
        dim: channels; must be divisible by ``num_heads``.
        num_heads: attention heads.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)``; output: the same.

    Examples:
        >>> Attention(dim=8, num_heads=2)(torch.rand(1, 8, 4, 4)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int_range("Attention", "dim", dim, 1)
        check_int_range("Attention", "num_heads", num_heads, 1)
        if dim % num_heads:
            raise InputError(
                f"Attention: expected dim divisible by num_heads={num_heads}, got dim={dim}"
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype, "bias": False}
        self.dim, self.num_heads = dim, num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1, device=device, dtype=dtype))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, **factory)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, **factory)
        self.project_out = nn.Conv2d(dim, dim, 1, **factory)

    def reset_parameters(self) -> None:
        """Temperature 1, the convolutions at PyTorch's defaults."""
        nn.init.ones_(self.temperature)
        reset_submodules(self)

    def extra_repr(self) -> str:
        return f"{self.dim}, num_heads={self.num_heads}"

    def forward(self, x: Tensor) -> Tensor:
        """Channel self-attention of ``(B, dim, H, W)`` features; the output has their shape."""
        h, w = x.shape[-2:]
        q, k, v = rearrange(
            self.qkv_dwconv(self.qkv(x)),
            "b (qkv head c) h w -> qkv b head c (h w)",
            qkv=3,
            head=self.num_heads,
        )
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        out = rearrange(attn @ v, "b head c (h w) -> b (head c) h w", h=h, w=w)
        y: Tensor = self.project_out(out)
        return y


class FeedForward(nn.Module):
    """GDFN: 1x1 to ``2 * hidden``, 3x3 depthwise, GELU gate, 1x1 back.

    Args:
        dim: channels.
        ffn_expansion_factor: hidden width over ``dim``,
            ``hidden = int(dim * ffn_expansion_factor)``.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)``; output: the same.

    Examples:
        >>> FeedForward(dim=8, ffn_expansion_factor=2.0)(torch.rand(1, 8, 4, 4)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(
        self,
        dim: int,
        *,
        ffn_expansion_factor: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int_range("FeedForward", "dim", dim, 1)
        hidden = int(dim * ffn_expansion_factor)
        if hidden < 1:
            raise InputError(
                f"FeedForward: expected int(dim * ffn_expansion_factor) >= 1, got dim={dim}, "
                f"ffn_expansion_factor={ffn_expansion_factor}"
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype, "bias": False}
        self.dim, self.hidden, self.ffn_expansion_factor = dim, hidden, ffn_expansion_factor
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, **factory)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, **factory)
        self.project_out = nn.Conv2d(hidden, dim, 1, **factory)

    def reset_parameters(self) -> None:
        """The convolutions at PyTorch's defaults."""
        reset_submodules(self)

    def extra_repr(self) -> str:
        return f"{self.dim}, ffn_expansion_factor={self.ffn_expansion_factor}, hidden={self.hidden}"

    def forward(self, x: Tensor) -> Tensor:
        """Gated feed-forward of ``(B, dim, H, W)`` features; the output has their shape."""
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        y: Tensor = self.project_out(F.gelu(x1) * x2)
        return y


class TransformerBlock(nn.Module):
    """Restormer block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``.

    Args:
        dim: channels.
        num_heads: attention heads (must divide ``dim``).
        ffn_expansion_factor: hidden width of the feed-forward network over ``dim``.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)``; output: the same.

    Examples:
        >>> block = TransformerBlock(dim=16, num_heads=2)
        >>> block(torch.rand(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 1,
        ffn_expansion_factor: float = 2.66,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.ffn_expansion_factor = dim, num_heads, ffn_expansion_factor
        self.norm1 = LayerNorm2d(dim, **factory)
        self.attn = Attention(dim, num_heads=num_heads, **factory)
        self.norm2 = LayerNorm2d(dim, **factory)
        self.ffn = FeedForward(dim, ffn_expansion_factor=ffn_expansion_factor, **factory)

    def reset_parameters(self) -> None:
        """Each part's start: norms at the identity, the rest at PyTorch's defaults."""
        reset_submodules(self)

    def extra_repr(self) -> str:
        return (
            f"{self.dim}, num_heads={self.num_heads}, "
            f"ffn_expansion_factor={self.ffn_expansion_factor}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))`` on ``(B, dim, H, W)`` features."""
        x = x + self.attn(self.norm1(x))
        y: Tensor = x + self.ffn(self.norm2(x))
        return y


class PixelUnshuffle(nn.PixelUnshuffle):
    """`torch.nn.PixelUnshuffle` that also reshapes an empty batch.

    torch returns a ``(0, C, H, W)`` input unchanged instead of ``(0, C r^2, H / r, W / r)``,
    which breaks the channel count of the next layer.
    """

    def forward(self, input: Tensor) -> Tensor:
        if input.shape[0] == 0:
            r = self.downscale_factor
            c, h, w = input.shape[-3:]
            return input.new_empty(0, c * r * r, h // r, w // r)
        return super().forward(input)


def downsample(
    dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> nn.Sequential:
    """Halve the resolution, double the channels: 3x3 conv to ``dim // 2``, PixelUnshuffle(2).

    Args:
        dim: input channels (even).
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)`` with even ``H``, ``W``; output: ``(B, 2 * dim, H / 2, W / 2)``.

    Returns:
        The down-sampling module.

    Examples:
        >>> downsample(8)(torch.rand(1, 8, 4, 4)).shape
        torch.Size([1, 16, 2, 2])
    """
    conv = nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False, device=device, dtype=dtype)
    return nn.Sequential(conv, PixelUnshuffle(2))


def upsample(
    dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> nn.Sequential:
    """Double the resolution, halve the channels: 3x3 conv to ``2 * dim``, PixelShuffle(2).

    Args:
        dim: input channels (even).
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)``; output: ``(B, dim / 2, 2 H, 2 W)``.

    Returns:
        The up-sampling module.

    Examples:
        >>> upsample(8)(torch.rand(1, 8, 2, 2)).shape
        torch.Size([1, 4, 4, 4])
    """
    conv = nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False, device=device, dtype=dtype)
    return nn.Sequential(conv, nn.PixelShuffle(2))
