"""The reference restoration network: PromptIR with sparse prompts.

A Restormer U-Net (Zamir et al., 2022) whose decoder holds three prompt stages (PromptIR,
Potlapalli et al., 2023), each a [SparsePrompt][contrastive_prompts.SparsePrompt] followed by a
[PromptFusion][contrastive_prompts.core.PromptFusion]. Every prompt stage sits in the decoder, so
the encoder and the latent do not depend on the prompt: for the negatives,
[forward_with_negatives][contrastive_prompts.forward_with_negatives] computes them once and
re-runs only the decoder, as it does for any network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    InputError,
    check_bool,
    check_dtype_like,
    check_int_range,
    check_parameters_fit,
    check_positive,
    check_shape,
    check_shape_any,
    check_spatial,
)
from ..core._state import reset_submodules
from ..core.growth import add_experts
from ..core.prompt import (
    PromptFusion,
    SparsePrompt,
    fixed_routing,
    prompt_layers,
    record_routing,
    require_prompt_layers,
)
from ..core.restormer import TransformerBlock, downsample, upsample
from ..core.routing import (
    Routing,
    pooled_routing,
)
from .padding import pad_to_multiple

__all__ = ["MODEL_PRESETS", "ModelConfig", "SparsePromptIR"]


@dataclass(frozen=True)
class ModelConfig:
    """Every size of [SparsePromptIR][contrastive_prompts.SparsePromptIR].

    A preset is a named instance, in [MODEL_PRESETS][contrastive_prompts.reference.MODEL_PRESETS].

    Attributes:
        dim: channels of the first level (48 in PromptIR); level ``l`` has ``dim * 2**l``.
        num_blocks: transformer blocks in encoder levels 1-3 and the latent (also used, mirrored,
            by the decoder levels 3-1).
        num_refinement_blocks: blocks after decoder level 1.
        heads: attention heads per level.
        ffn_expansion_factor: feed-forward width over the channels.
        prompt_dims: prompt channels ``D`` of prompt1, prompt2, prompt3 (decoder levels 2, 3 and
            the latent).
        prompt_sizes: prompt spatial sizes ``S`` of prompt1, prompt2, prompt3.
        prompt_heads: attention heads of the fusion blocks.
        num_prompts: experts per prompt bank.
        top_k: experts kept per sample (1 for CPL, ``num_prompts`` reproduces PromptIR).
        use_prompts: ``False`` removes the prompts, keeping each stage's transformer block and
            1x1 convolution: the same network without prompting, as a baseline.

    Examples:
        >>> from dataclasses import replace
        >>> dense = replace(MODEL_PRESETS["tiny"], top_k=5)  # PromptIR's dense prompts
        >>> SparsePromptIR("tiny", top_k=5).config == dense
        True
    """

    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    prompt_dims: tuple[int, int, int] = (64, 128, 320)
    prompt_sizes: tuple[int, int, int] = (64, 32, 16)
    prompt_heads: int = 4
    num_prompts: int = 5
    top_k: int = 1
    use_prompts: bool = True


MAX_BLOCKS = 64
"""The most transformer blocks of one level: the papers' largest models use 8."""

MODEL_PRESETS: dict[str, ModelConfig] = {
    # The paper's size (PromptIR's architecture).
    "base": ModelConfig(),
    # Small enough to train on a CPU with 64x64 crops.
    "small": ModelConfig(
        dim=24,
        num_blocks=(2, 2, 2, 2),
        num_refinement_blocks=2,
        prompt_dims=(24, 48, 96),
        prompt_sizes=(32, 16, 8),
    ),
    "tiny": ModelConfig(
        dim=16,
        num_blocks=(1, 2, 2, 2),
        num_refinement_blocks=1,
        prompt_dims=(16, 32, 80),
        prompt_sizes=(32, 16, 8),
    ),
}
"""The sizes of [SparsePromptIR][contrastive_prompts.SparsePromptIR] by name.

``"base"`` is the paper's size (PromptIR's architecture, 35,376,967 parameters); ``"small"``
trains on a CPU with 64x64 crops; ``"tiny"`` is the demo's. ``SparsePromptIR(preset)`` and
``TrainConfig.preset`` take these names.
"""


_REMOVED_METHODS = {
    "from_pretrained": (
        "the reference model knows no file format: call "
        "contrastive_prompts.app.pretrained.from_pretrained(folder or Hub id) for a model "
        "folder, contrastive_prompts.app.checkpoints.load_checkpoint_model(path) for a file"
    ),
    "from_promptir": (
        "the reference model knows no file format: call "
        "contrastive_prompts.app.checkpoints.load_promptir(checkpoint, top_k=...) (the same "
        "options)"
    ),
    "forward_with_negatives": (
        "call contrastive_prompts.forward_with_negatives(model, x, num_negatives=M) instead "
        "(the same generator, labels and chunk_size options; CPLObjective calls it for you)"
    ),
    "forward_negative": (
        "run the model under contrastive_prompts.negative_prompts instead: "
        "with negative_prompts(model, generator=g): out = model(x)"
    ),
}
"""SparsePromptIR's methods removed in the generic negatives' release, with what replaces each."""


def _level(dim: int, blocks: int, heads: int, ffn: float, **factory: Any) -> nn.Sequential:
    return nn.Sequential(
        *(
            TransformerBlock(dim, num_heads=heads, ffn_expansion_factor=ffn, **factory)
            for _ in range(blocks)
        )
    )


class SparsePromptIR(nn.Module):
    r"""PromptIR with sparse prompts: the reference all-in-one restoration network.

    A 4-level Restormer U-Net; the latent and the outputs of decoder levels 3 and 2 each get a
    prompt ([SparsePrompt][contrastive_prompts.SparsePrompt], routed to ``top_k`` experts) merged
    by a [PromptFusion][contrastive_prompts.core.PromptFusion]; the output is
    ``conv3x3(features) + input``. Inputs of any size are reflect-padded to a multiple of 8 and
    cropped back.

    Args:
        preset: ``"base"`` (the paper's size, 35,376,967 parameters), ``"small"`` or ``"tiny"``.
        device: where to allocate the parameters; ``"meta"`` builds the network without
            allocating it (to count parameters, or to load weights into with
            ``load_state_dict(..., assign=True)``).
        dtype: dtype of the parameters.
        **overrides: any [ModelConfig][contrastive_prompts.reference.ModelConfig] field, e.g.
            ``top_k=5`` for PromptIR's dense prompts.

    Shape:
        - Input: ``(B, 3, H, W)`` images in [0, 1], any ``H, W >= 1``; ``B = 0`` gives an empty
          output.
        - Output: ``(B, 3, H, W)``.

    Both entry points (``forward`` and [restore][contrastive_prompts.SparsePromptIR.restore]) take
    images of the parameters' dtype (``model.to(torch.float64)`` for float64 images) or, under
    `torch.autocast`, of the autocast dtype. Any other dtype, 8-bit images included, raises
    [InputError][contrastive_prompts.InputError], as does ``H = 0`` or ``W = 0``.

    The methods ``forward_with_negatives`` and ``forward_negative`` are gone: reading them
    raises an ``AttributeError`` that names what replaces them
    ([forward_with_negatives][contrastive_prompts.forward_with_negatives],
    [negative_prompts][contrastive_prompts.negative_prompts]).

    Raises:
        InputTypeError: a configuration field of the wrong type (``use_prompts="false"``,
            which would otherwise read as true, or a size given as a string).
        InputError: an unknown preset or override, or a configuration field out of its range.

    Examples:
        >>> model = SparsePromptIR("tiny")
        >>> model(torch.rand(1, 3, 21, 30)).shape
        torch.Size([1, 3, 21, 30])
    """

    def __init__(
        self,
        preset: str = "base",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if preset not in MODEL_PRESETS:
            raise InputError(
                "SparsePromptIR: expected preset to be one of "
                f"{', '.join(map(repr, MODEL_PRESETS))}, got {preset!r}"
            )
        fields = set(ModelConfig.__dataclass_fields__)
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise InputError(
                f"SparsePromptIR: expected overrides among {', '.join(sorted(fields))}, "
                f"got {unknown}"
            )
        config = ModelConfig(**{**asdict(MODEL_PRESETS[preset]), **overrides})
        self._validate(config)
        if overrides:  # a preset's own sizes are known (35.4 M parameters at most)
            check_parameters_fit(
                "SparsePromptIR",
                lambda: SparsePromptIR(preset, device="meta", **overrides),
                device,
                dtype,
                ", ".join(f"{k}={v!r}" for k, v in overrides.items()),
            )
        self.config = config
        c, nb, h, f = config.dim, config.num_blocks, config.heads, config.ffn_expansion_factor
        factory: dict[str, Any] = {"device": device, "dtype": dtype}

        self.patch_embed = nn.Conv2d(3, c, 3, padding=1, bias=False, **factory)
        self.encoder_level1 = _level(c, nb[0], h[0], f, **factory)
        self.down1_2 = downsample(c, **factory)
        self.encoder_level2 = _level(c * 2, nb[1], h[1], f, **factory)
        self.down2_3 = downsample(c * 2, **factory)
        self.encoder_level3 = _level(c * 4, nb[2], h[2], f, **factory)
        self.down3_4 = downsample(c * 4, **factory)
        self.latent = _level(c * 8, nb[3], h[3], f, **factory)

        # prompt stages: (input channels, prompt) at the latent, decoder level 3, decoder level 2
        dims, sizes = config.prompt_dims, config.prompt_sizes
        stage_dims = (c * 2, c * 4, c * 8)  # prompt1, prompt2, prompt3
        out_dims = (c * 2, c * 4, c * 4)
        for i in range(3):
            if not config.use_prompts:
                self.add_module(
                    f"fusion{i + 1}",
                    nn.Sequential(
                        TransformerBlock(
                            stage_dims[i],
                            num_heads=config.prompt_heads,
                            ffn_expansion_factor=f,
                            **factory,
                        ),
                        nn.Conv2d(stage_dims[i], out_dims[i], 1, bias=False, **factory),
                    ),
                )
                continue
            self.add_module(
                f"prompt{i + 1}",
                SparsePrompt(
                    dim=stage_dims[i],
                    prompt_dim=dims[i],
                    num_prompts=config.num_prompts,
                    prompt_size=sizes[i],
                    top_k=config.top_k,
                    **factory,
                ),
            )
            self.add_module(
                f"fusion{i + 1}",
                PromptFusion(
                    dim=stage_dims[i],
                    prompt_dim=dims[i],
                    out_dim=out_dims[i],
                    num_heads=config.prompt_heads,
                    ffn_expansion_factor=f,
                    **factory,
                ),
            )

        self.up4_3 = upsample(c * 4, **factory)
        self.reduce_chan_level3 = nn.Conv2d(c * 6, c * 4, 1, bias=False, **factory)
        self.decoder_level3 = _level(c * 4, nb[2], h[2], f, **factory)
        self.up3_2 = upsample(c * 4, **factory)
        self.reduce_chan_level2 = nn.Conv2d(c * 4, c * 2, 1, bias=False, **factory)
        self.decoder_level2 = _level(c * 2, nb[1], h[1], f, **factory)
        self.up2_1 = upsample(c * 2, **factory)
        self.decoder_level1 = _level(c * 2, nb[0], h[0], f, **factory)
        self.refinement = _level(c * 2, config.num_refinement_blocks, h[0], f, **factory)
        self.output = nn.Conv2d(c * 2, 3, 3, padding=1, bias=False, **factory)

    @staticmethod
    def _validate(config: ModelConfig) -> None:
        where = "SparsePromptIR"
        check_int_range(where, "dim", config.dim, 1)
        # (field, entries, smallest value): an encoder level may have no block, not no head
        for name, count, low, high in (
            ("num_blocks", 4, 0, MAX_BLOCKS),
            ("heads", 4, 1, None),
            ("prompt_dims", 3, 1, None),
            ("prompt_sizes", 3, 1, None),
        ):
            value = getattr(config, name)
            if not isinstance(value, (tuple, list)) or len(value) != count:
                raise InputError(f"{where}: expected {name} of {count} integers, got {value!r}")
            for i, entry in enumerate(value):
                check_int_range(where, f"{name}[{i}]", entry, low, high)
        check_int_range(where, "num_refinement_blocks", config.num_refinement_blocks, 0, MAX_BLOCKS)
        check_positive(where, "ffn_expansion_factor", config.ffn_expansion_factor)
        check_int_range(where, "prompt_heads", config.prompt_heads, 1)
        check_int_range(where, "num_prompts", config.num_prompts, 1)
        check_int_range(where, "top_k", config.top_k, 1, config.num_prompts)
        check_bool(where, "use_prompts", config.use_prompts)
        widths = (config.dim * 2, config.dim * 4, config.dim * 8)
        for width, prompt_dim in zip(widths, config.prompt_dims, strict=True):
            width += prompt_dim if config.use_prompts else 0
            if width % config.prompt_heads:
                raise InputError(
                    f"{where}: expected prompt_heads={config.prompt_heads} to divide every "
                    f"fusion width (channels + prompt_dims), got {width}"
                )

    def reset_parameters(self) -> None:
        """Every part's start, as construction gives it (a model built on the meta device and
        materialised with ``to_empty`` gets its start from this)."""
        reset_submodules(self)

    def add_experts(self, count: int = 1) -> dict[str, range]:
        """Give each prompt bank ``count`` new experts, keeping every weight and key.

        [add_experts][contrastive_prompts.core.add_experts] for the reference model: it also
        sets ``config.num_prompts``, so the model's checkpoints record the grown size and load
        into ``SparsePromptIR(preset, num_prompts=...)``. Build the optimiser after growing.

        Args:
            count: experts to add to every prompt layer, an integer >= 1.

        Returns:
            ``{layer name: indices of its new experts}``, for
            [only_new_experts][contrastive_prompts.core.only_new_experts].

        Raises:
            InputError: a model without prompts (``use_prompts=False``), or ``count < 1``.

        Examples:
            >>> model = SparsePromptIR("tiny")
            >>> model.add_experts(1)["prompt1"], model.config.num_prompts
            (range(5, 6), 6)
        """
        if not self.config.use_prompts:
            raise InputError(
                "SparsePromptIR.add_experts: expected a model with prompts, got one built with "
                "use_prompts=False"
            )
        grown = add_experts(self, count)
        self.config = replace(self.config, num_prompts=self.config.num_prompts + count)
        return grown

    @property
    def prompt_stages(self) -> tuple[tuple[SparsePrompt | None, nn.Module], ...]:
        """``(prompt, fusion)`` pairs in decoder order: prompt3, prompt2, prompt1.

        ``prompt`` is ``None`` when the model has no prompts.
        """
        return tuple(
            (getattr(self, f"prompt{i}", None), getattr(self, f"fusion{i}")) for i in (3, 2, 1)
        )

    # -- the two halves ---------------------------------------------------------------------

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encoder and latent of a padded ``(B, 3, H, W)`` batch: ``(enc1, enc2, enc3, latent)``.

        Nothing here depends on the prompt.
        """
        enc1 = self.encoder_level1(self.patch_embed(x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        return enc1, enc2, enc3, self.latent(self.down3_4(enc3))

    def decode(self, x: Tensor, features: Sequence[Tensor]) -> Tensor:
        """Decoder from the features of [encode][contrastive_prompts.SparsePromptIR.encode].

        ``x`` is the padded input (the residual). The prompt stages run in the order prompt3,
        prompt2, prompt1; [record_routing][contrastive_prompts.record_routing] collects their
        routing.
        """
        enc1, enc2, enc3, h = features
        stages = self.prompt_stages
        skips_and_ups = (
            (self.up4_3, enc3, self.reduce_chan_level3, self.decoder_level3),
            (self.up3_2, enc2, self.reduce_chan_level2, self.decoder_level2),
            (self.up2_1, enc1, None, self.decoder_level1),
        )
        for (prompt, fusion), (up, skip, reduce, level) in zip(stages, skips_and_ups, strict=True):
            if prompt is None:
                h = fusion(h)
            else:
                h = fusion(h, prompt(h))
            h = torch.cat([up(h), skip], dim=1)
            h = level(reduce(h) if reduce is not None else h)
        out: Tensor = self.output(self.refinement(h)) + x
        return out

    # -- public entry points ----------------------------------------------------------------

    def _pad(self, x: Tensor, where: str) -> tuple[Tensor, int, int]:
        check_shape(where, "x", x, ("B", 3, "H", "W"))
        check_spatial(where, "x", x)
        check_dtype_like(where, "x", x, self.patch_embed.weight)
        h, w = x.shape[-2:]
        return pad_to_multiple(x, 8), h, w

    def forward(self, x: Tensor) -> Tensor:
        """Restore a batch in one pass.

        The experts each prompt stage chose are collected by
        [record_routing][contrastive_prompts.record_routing], as for any network.

        Args:
            x: ``(B, 3, H, W)`` images in [0, 1], any ``H, W >= 1``, of the parameters' dtype
                (or the autocast dtype under `torch.autocast`).

        Returns:
            The ``(B, 3, H, W)`` restored batch.
        """
        padded, h, w = self._pad(x, "SparsePromptIR")
        out = self.decode(padded, self.encode(padded))
        # crop back by a negative pad rather than a slice: the slice's strides depend on whether
        # H, W needed padding, which a traced graph (torch.export, ONNX) would fix for all sizes
        out = F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]))
        return out

    @torch.no_grad()
    def restore(
        self,
        image: Tensor,
        *,
        tile: int | str | None = "auto",
        overlap: int = 32,
        tile_batch: int = 1,
        routing: str = "image",
    ) -> Tensor:
        """Restore images of any size, tile by tile when ``tile`` is given.

        Tiles of ``tile x tile`` pixels overlap by ``overlap`` pixels and are blended with weights
        that fall linearly towards the tile borders, so no seam shows; memory is bounded by the
        tile size, not the image size. The prompts are routed once per image (``routing="image"``,
        see [tiled][contrastive_prompts.reference.tiled]), so every tile uses the experts of the
        whole image; the channel attention still sees one tile at a time, so the result differs
        slightly from a single pass; prefer large tiles.

        Args:
            image: ``(B, 3, H, W)`` or ``(3, H, W)`` in [0, 1], ``H, W >= 1``, of the
                parameters' dtype (or the autocast dtype under `torch.autocast`).
            tile: tile side (a multiple of 8 is best), ``None`` for one pass, or ``"auto"``:
                [restore_tile][contrastive_prompts.reference.model.restore_tile] of the image's
                device (256 on a CPU, 512 on a GPU). An image no larger than the tile is one pass.
            overlap: overlap between neighbouring tiles, ``0 <= overlap < tile``.
            tile_batch: tiles per forward pass (see [tiled][contrastive_prompts.reference.tiled]).
            routing: ``"image"`` (one routing per image) or ``"tile"`` (each tile routes itself).

        Returns:
            Restored images of the input's shape, clamped to [0, 1]; empty for ``B = 0``.
        """
        where = "SparsePromptIR.restore"
        check_shape_any(where, "image", image, (3, "H", "W"), ("B", 3, "H", "W"))
        check_spatial(where, "image", image)
        check_dtype_like(where, "image", image, self.patch_embed.weight)
        single = image.ndim == 3
        batch = image.unsqueeze(0) if single else image
        if tile == "auto":
            tile = restore_tile(image.device)
        elif isinstance(tile, str):
            raise InputError(
                f"{where}: expected tile to be an integer, None or 'auto', got {tile!r}"
            )
        out: Tensor
        if tile is None or (tile >= image.shape[-2] and tile >= image.shape[-1]):
            out = self(batch)
        else:
            out = tiled(
                self, batch, tile=tile, overlap=overlap, tile_batch=tile_batch, routing=routing
            )
        out = out.clamp(0, 1)
        return out[0] if single else out

    def extra_repr(self) -> str:
        return f"config={self.config}"

    def __getattr__(self, name: str) -> Tensor | nn.Module:
        # nn.Module's lookup first (submodules and parameters, on every forward); only a miss
        # on a removed method says what replaces it
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in _REMOVED_METHODS:
                raise
        raise AttributeError(f"SparsePromptIR.{name} was removed: {_REMOVED_METHODS[name]}")


RESTORE_TILES = {"cpu": 256}
"""Tile sides ``restore(tile="auto")`` uses per device type; 512 for any other device.

Measured with ``benchmarks/restore.py`` (docs: Benchmarks, large images): on a CPU, 256-pixel
tiles restored a megapixel 1.5 to 2.5 times as fast as one pass and 1.8 to 2.6 times as fast as
512-pixel tiles (a tile's working set stays in cache); with 512-pixel tiles the ``base`` preset's
activations peak near 1.5 GiB whatever the image's size, so a 12-megapixel photo fits 8 GB of GPU
memory."""


def restore_tile(device: torch.device | str) -> int:
    """The tile side ``restore(tile="auto")`` uses on ``device``: 256 on a CPU, 512 elsewhere.

    Examples:
        >>> restore_tile("cpu")
        256
    """
    return RESTORE_TILES.get(torch.device(device).type, 512)


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, like: Tensor) -> Tensor:
    """Blending weights along one axis of a tile.

    Over an overlap of ``v`` pixels the weight is 0 on the outer ``v / 4`` (where the tile lacks
    context), rises linearly over the middle ``v / 2`` and is 1 beyond; the neighbour's mirror
    image covers the same pixels, so the weights never all vanish.
    """
    weight = torch.ones(length, dtype=like.dtype, device=like.device)
    if overlap > 0:
        steps = torch.arange(overlap, dtype=like.dtype, device=like.device) + 0.5
        ramp = ((steps - overlap / 4) / (overlap / 2)).clamp(0, 1)
        if not at_start:
            weight[:overlap] = ramp
        if not at_end:
            weight[-overlap:] = torch.minimum(weight[-overlap:], ramp.flip(0))
    return weight


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _tile_groups(
    image: Tensor, tile: int, stride: int, tile_batch: int
) -> Iterator[tuple[list[tuple[int, int]], Tensor]]:
    """``(corners, tiles)`` of ``tile_batch`` tiles at a time, the tiles one batch, tile-major.

    Every tile has the same size, ``min(tile, H) x min(tile, W)``: the last row and column of
    tiles end at the image's edge.
    """
    height, width = image.shape[-2:]
    th, tw = min(tile, height), min(tile, width)
    corners = [(y, x) for y in _starts(height, tile, stride) for x in _starts(width, tile, stride)]
    for first in range(0, len(corners), tile_batch):
        group = corners[first : first + tile_batch]
        yield group, torch.cat([image[..., y : y + th, x : x + tw] for y, x in group])


ROUTINGS = ("image", "tile")
"""How [tiled][contrastive_prompts.reference.tiled] routes the prompt layers of a model."""


def tiled(
    model: nn.Module,
    image: Tensor,
    *,
    tile: int,
    overlap: int = 32,
    tile_batch: int = 1,
    routing: str = "image",
) -> Tensor:
    """Apply ``model`` to overlapping tiles of ``image`` and blend them.

    Every tile has the same size (the last row and column of tiles end at the image's edge), so
    ``tile_batch`` of them go through ``model`` as one batch of ``B * tile_batch`` images. For a
    model that treats the images of a batch independently the result does not depend on
    ``tile_batch``; memory grows with it.

    A model holding [SparsePrompt][contrastive_prompts.SparsePrompt] layers (any prompted
    network, not only the reference model) routes each image once with ``routing="image"``: a
    first pass over a grid of tiles that do not overlap records every layer's routing per tile,
    [pooled_routing][contrastive_prompts.core.pooled_routing] makes the image's routing of them
    (the routing of the mean of the tiles' pooled features), and every tile is then restored under
    it with [fixed_routing][contrastive_prompts.core.fixed_routing]. So a tile of sky and a tile
    of foliage of one photo get the same experts at the same weights, as in a single pass. The
    first pass costs about one more pass over the image, less the overlaps and the blending;
    ``routing="tile"`` skips it and lets each tile route itself. A layer that runs more than once
    per forward gets one routing from all its calls.

    Args:
        model: any module mapping ``(B, C, h, w)`` to ``(B, C', h, w)``.
        image: ``(B, C, H, W)`` with ``H, W >= 1``.
        tile: tile side.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
        tile_batch: tiles per call of ``model``.
        routing: ``"image"`` (one routing per image, for all its tiles) or ``"tile"`` (each
            tile routes itself); the same for a model without prompt layers.

    Shape:
        - image: ``(B, C, H, W)``; output: ``(B, C', H, W)``. ``B = 0`` gives an empty output
          if ``model`` maps an empty batch to one.

    Returns:
        ``(B, C', H, W)``; memory beyond the input and output is ``tile_batch`` tiles' worth. For
        a model whose receptive field reaches at most ``overlap / 4`` pixels, this equals
        ``model(image)``.

    Examples:
        >>> conv, image = torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 20, 20)
        >>> torch.allclose(tiled(conv, image, tile=8, overlap=4), conv(image), atol=1e-6)
        True
    """
    check_shape("tiled", "image", image, ("B", "C", "H", "W"))
    check_spatial("tiled", "image", image)
    check_int_range("tiled", "tile", tile, 1)
    check_int_range("tiled", "overlap", overlap, 0, tile - 1)
    check_int_range("tiled", "tile_batch", tile_batch, 1)
    if routing not in ROUTINGS:
        raise InputError(f"tiled: expected routing to be one of {ROUTINGS}, got {routing!r}")
    batch, _, height, width = image.shape
    th, tw = min(tile, height), min(tile, width)
    # the image's routing, once for a full group of tiles (tile-major rows); a shorter last group
    # takes its first rows
    shared: dict[str, Routing] = {}
    if routing == "image" and (height > tile or width > tile) and prompt_layers(model):
        found = image_routing(model, image, tile=tile, tile_batch=tile_batch)
        shared = {n: Routing(*(t.repeat(tile_batch, 1) for t in r)) for n, r in found.items()}
    out: Tensor | None = None
    total = image.new_zeros(1, 1, height, width)
    for group, pieces in _tile_groups(image, tile, tile - overlap, tile_batch):
        rows = slice(0, len(group) * batch)
        fixing = {n: Routing(*(t[rows] for t in r)) for n, r in shared.items()}
        with fixed_routing(model, fixing) if shared else contextlib.nullcontext():
            restored = model(pieces)
        if out is None:
            out = image.new_zeros(batch, restored.shape[1], height, width)
        for i, (top, left) in enumerate(group):
            wy = _ramp(th, min(overlap, th), top == 0, top + th >= height, image)
            wx = _ramp(tw, min(overlap, tw), left == 0, left + tw >= width, image)
            weight = wy[:, None] * wx[None, :]
            piece = restored[i * batch : (i + 1) * batch]
            out[..., top : top + th, left : left + tw] += piece * weight
            total[..., top : top + th, left : left + tw] += weight
    return cast(Tensor, out) / total


@torch.no_grad()
def image_routing(
    model: nn.Module, image: Tensor, *, tile: int, tile_batch: int = 1
) -> dict[str, Routing]:
    """The routing of each prompt layer of ``model`` for whole images, gathered over tiles.

    ``model`` runs on a grid of ``tile x tile`` tiles that do not overlap (the last row and
    column end at the image's edge), ``tile_batch`` at a time, recording every
    [SparsePrompt][contrastive_prompts.SparsePrompt]'s routing; each layer's routings of the tiles
    of an image are pooled by [pooled_routing][contrastive_prompts.core.pooled_routing]. For an
    image no larger than a tile this is the routing of one pass.

    Args:
        model: a network holding SparsePrompt layers.
        image: ``(B, C, H, W)`` with ``H, W >= 1``.
        tile: tile side.
        tile_batch: tiles per call of ``model``.

    Returns:
        ``{layer name: Routing}``, ``(B, N)`` rows, one per image, for
        [fixed_routing][contrastive_prompts.core.fixed_routing].

    Raises:
        InputError: ``model`` holds no SparsePrompt, or the arguments are out of range.
    """
    check_shape("image_routing", "image", image, ("B", "C", "H", "W"))
    check_spatial("image_routing", "image", image)
    check_int_range("image_routing", "tile", tile, 1)
    check_int_range("image_routing", "tile_batch", tile_batch, 1)
    layers = require_prompt_layers("image_routing", model)
    batch = image.shape[0]
    found: dict[str, list[Routing]] = {}
    for group, pieces in _tile_groups(image, tile, tile, tile_batch):
        with record_routing(model) as log:
            model(pieces)
        for name, routed in zip(log.names, log, strict=True):
            for i in range(len(group)):
                rows = slice(i * batch, (i + 1) * batch)
                found.setdefault(name, []).append(Routing(*(t[rows] for t in routed)))
    return {
        name: pooled_routing(routed, top_k=layers[name].top_k, renormalize=layers[name].renormalize)
        for name, routed in found.items()
    }


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
