"""Small networks that are not the reference model, written the way a user would write them.

The plain U-Net is the plug-in example's own (``examples/plug_into_your_network.py``), imported
by path: the example stays a script a user can copy, and the tests exercise the very network it
teaches with. The networks below it exist only to probe the library.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from contrastive_prompts import SparsePrompt
from contrastive_prompts.core import PromptFusion

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plug_into_your_network.py"


def _example() -> ModuleType:
    """The plug-in example, imported by path once (the sdist ships examples/ beside tests/)."""
    name = EXAMPLE.stem
    if name not in sys.modules:  # tests/test_examples.py and benchmarks load it by this name
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)  # for its dataclasses
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


class PlainUNet(_example().UNet):
    """The example's two-level U-Net, with no prompt anywhere: what add_prompts is given.

    Narrower by default (``width=8``), and its output layer keeps PyTorch's initialisation rather
    than the example's zeros: a zero output layer gives every prompt the same output, which would
    hide the effect of a prompt from the tests that measure it.
    """

    def __init__(self, width: int = 8) -> None:
        super().__init__(width)
        self.out.reset_parameters()


class PromptedUNet(nn.Module):
    """A U-Net with its own prompt layers, a module shared before and after them, and an
    in-place operation on an encoder output: the cases the negative pass must get right."""

    def __init__(self, width: int = 8, top_k: int = 1) -> None:
        super().__init__()
        self.act = nn.GELU()  # called in the encoder and in the decoder
        self.enc1 = nn.Conv2d(3, width, 3, padding=1)
        self.enc2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.prompt_mid = SparsePrompt(dim=2 * width, prompt_dim=width, prompt_size=4, top_k=top_k)
        self.fuse_mid = PromptFusion(dim=2 * width, prompt_dim=width, num_heads=2)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = nn.Conv2d(2 * width, width, 3, padding=1)
        self.prompt_dec = SparsePrompt(dim=width, prompt_dim=4, prompt_size=8, top_k=top_k)
        self.fuse_dec = PromptFusion(dim=width, prompt_dim=4, num_heads=2)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.act(self.enc1(x))
        h = self.enc2(F.avg_pool2d(skip, 2))
        h += 0.5  # in place, on a kept encoder output
        h = self.fuse_mid(h, self.prompt_mid(h))
        h = self.act(self.dec(torch.cat([self.up(h), skip], dim=1)))
        h = self.fuse_dec(h, self.prompt_dec(h))
        return x + self.out(h)


class PromptFirst(nn.Module):
    """A network whose first operation is a prompt layer: nothing to reuse."""

    def __init__(self) -> None:
        super().__init__()
        self.prompt = SparsePrompt(dim=3, prompt_dim=3, prompt_size=4)
        self.body = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(torch.cat([x, self.prompt(x)], dim=1))
