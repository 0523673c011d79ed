"""Networks with sparse prompts for deployment: a ``torch.export`` program and an ONNX file.

[export_program][contrastive_prompts.app.export.export_program] traces a network into a
`torch.export.ExportedProgram` whose batch, height and width stay dynamic: the top-k routing,
the prompt resized to the features' size and the reference model's padding to a multiple of 8
(and its crop back) are all in the graph. [export_onnx][contrastive_prompts.app.export.export_onnx]
writes the same graph as an ONNX file, to run in ONNX Runtime or any other ONNX runtime.

Only inference exports: the graph is the network in eval mode under its own prompts. The negative
prompts (a random draw from a generator), the CPR loss and training stay in PyTorch. ONNX needs
``onnx`` and ``onnxscript`` (``pip install onnx onnxscript onnxruntime``, or ``pip install
".[export]"`` in a clone of the repository).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram
from torch.utils import _pytree as pytree

from .._checks import InputError, InputTypeError, check_int_range, check_shape
from ..core.prompt import prompt_layers, record_routing, require_prompt_layers
from ..reference.gated import GatedRestorer
from ..reference.model import SparsePromptIR
from .files import make_folder, remove_stale, writing

__all__ = ["SPARSE_PROMPT_IR_MIN_SIZE", "export_onnx", "export_program"]

SPARSE_PROMPT_IR_MIN_SIZE = 9
"""The smallest height and width an exported [SparsePromptIR][contrastive_prompts.SparsePromptIR]
serves: its latent, an eighth of the input padded to a multiple of 8, must be at least 2 pixels
on each side for the graph to hold for every size (a side of 1 would be fixed into it)."""

_EXAMPLE_SIZE = 32  # the default example for SparsePromptIR: (2, 3, 32, 32)


class _WithRouting(nn.Module):
    """``model`` that also returns the experts each of its prompt layers chose."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with record_routing(self.model) as log:
            out = self.model(x)
        routing: dict[str, Tensor] = {}
        for name, layer_routing in zip(log.names, log, strict=True):
            key, calls = name, 1
            while key in routing:  # a layer run twice: prompt1, prompt1#2
                calls += 1
                key = f"{name}#{calls}"
            routing[key] = layer_routing.indices
        return out, routing


@contextlib.contextmanager
def _general_sizes() -> Iterator[None]:
    """Trace sizes for what holds in general, not for the example's special case.

    By default the tracer keeps every size relation the example happens to satisfy: a network
    that pads itself to a multiple of 8, traced at a multiple of 8, pads by 0, and the crop back
    is then asserted to be a no-op, so the program refuses every size that needed padding (and
    the other way round). Size-oblivious tracing (torch.export's option for this, in
    ``torch.fx.experimental._config``) keeps the general case instead, and still asserts at run
    time what it assumed; older torch without the option traces as before.
    """
    from torch.fx.experimental import _config as fx_config

    if not hasattr(fx_config, "backed_size_oblivious"):
        yield
        return
    previous = fx_config.backed_size_oblivious
    fx_config.backed_size_oblivious = True
    try:
        yield
    finally:
        fx_config.backed_size_oblivious = previous


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block; every submodule's own mode restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _example(where: str, model: nn.Module, example: Tensor | None) -> Tensor:
    if example is not None:
        check_shape(where, "example", example, ("B", "C", "H", "W"))
        return example
    if not isinstance(model, SparsePromptIR):
        raise InputError(
            f"{where}: expected an example input of shape (B, C, H, W) for a network other than "
            f"SparsePromptIR, got None"
        )
    weight = model.patch_embed.weight
    generator = torch.Generator().manual_seed(0)
    size = (2, 3, _EXAMPLE_SIZE, _EXAMPLE_SIZE)
    return torch.rand(size, generator=generator).to(weight.device, weight.dtype)


def _dynamic_shapes(
    where: str, model: nn.Module, example: Tensor, min_size: int | None, size_multiple: int
) -> tuple[dict[int, object]]:
    """Dynamic batch, height and width for ``example``, checked to lie in their ranges."""
    check_int_range(where, "size_multiple", size_multiple, 1)
    reference = isinstance(model, SparsePromptIR)
    if min_size is None:
        min_size = SPARSE_PROMPT_IR_MIN_SIZE if reference else 2 * size_multiple
    check_int_range(where, "min_size", min_size, 2)
    if reference and min_size < SPARSE_PROMPT_IR_MIN_SIZE:
        raise InputError(
            f"{where}: expected min_size >= {SPARSE_PROMPT_IR_MIN_SIZE} for SparsePromptIR (its "
            f"latent, an eighth of the padded input, must stay at least 2 pixels), got {min_size}"
        )
    batch, _, height, width = example.shape
    if batch < 2:
        raise InputError(
            f"{where}: expected an example batch of at least 2 (a batch of 1 would be fixed "
            f"into the graph), got {batch}"
        )
    for name, side in (("height", height), ("width", width)):
        if side < min_size or side % size_multiple:
            multiple = f" and a multiple of {size_multiple}" if size_multiple > 1 else ""
            raise InputError(
                f"{where}: expected an example {name} of at least {min_size}{multiple}, got {side}"
            )
    blocks = -(-min_size // size_multiple)  # size_multiple * blocks: the smallest side allowed

    def side_dim(name: str) -> object:
        if size_multiple == 1:
            return Dim(name, min=min_size)
        return size_multiple * Dim(f"{name}_blocks", min=blocks)

    return ({0: Dim("batch", min=1), 2: side_dim("height"), 3: side_dim("width")},)


def export_program(
    model: nn.Module,
    example: Tensor | None = None,
    *,
    dynamic: bool = True,
    min_size: int | None = None,
    size_multiple: int = 1,
    return_routing: bool = False,
) -> ExportedProgram:
    """Trace a network into a `torch.export.ExportedProgram` for any batch, height and width.

    The network is traced in eval mode (each submodule's mode is restored afterwards) under its
    own prompts: every [SparsePrompt][contrastive_prompts.SparsePrompt]'s top-k routing and the
    resize of its prompt to the features' size are in the graph, and so is
    [SparsePromptIR][contrastive_prompts.SparsePromptIR]'s padding to a multiple of 8 and its
    crop back. Sizes are traced for the general case, not for the example's: a network that
    pads itself to a multiple of 8 and crops back serves sizes that need padding even when
    traced at one that needs none (and the other way round), as eager PyTorch does. Size
    conditions the tracer cannot prove for every size become assertions checked when the
    program runs: an input outside what the graph serves raises, it never computes something
    else.

    Args:
        model: [SparsePromptIR][contrastive_prompts.SparsePromptIR] or any network mapping
            ``(B, C, H, W)`` images to a tensor, such as one given prompt stages by
            [add_prompts][contrastive_prompts.add_prompts].
        example: an input to trace with; by default, for SparsePromptIR only, a ``(2, 3, 32, 32)``
            batch of the parameters' dtype and device. With ``dynamic``, a batch of at least 2
            and sides of at least ``min_size``, multiples of ``size_multiple``.
        dynamic: keep batch, height and width dynamic; ``False`` fixes the example's shape.
        min_size: the smallest height and width the program serves:
            [SPARSE_PROMPT_IR_MIN_SIZE][contrastive_prompts.app.export.SPARSE_PROMPT_IR_MIN_SIZE]
            (9) for SparsePromptIR, ``2 * size_multiple`` for any other network.
        size_multiple: heights and widths the network accepts are multiples of this (2 for a
            network that halves and doubles its resolution without padding); 1 for any size.
        return_routing: the program also returns the experts each prompt layer chose, as
            ``(output, {layer name: (B, top_k) int64 indices})`` with the names of
            [record_routing][contrastive_prompts.record_routing].

    Returns:
        The program; ``program.module()(x)`` runs it, `torch.export.save` writes it.

    Raises:
        InputError: ``model`` is not a module, is a
            [GatedRestorer][contrastive_prompts.reference.GatedRestorer], is inside
            [negative_prompts][contrastive_prompts.negative_prompts], or holds no SparsePrompt
            with ``return_routing``; ``example`` is missing (a network other than
            SparsePromptIR) or of another shape; ``min_size`` or ``size_multiple`` out of range.

    Examples:
        A prompt layer alone, traced at 16 x 16 and run at another batch and size:

        >>> from contrastive_prompts import SparsePrompt
        >>> layer = SparsePrompt(dim=8, prompt_dim=4, prompt_size=4)
        >>> program = export_program(layer, torch.rand(2, 8, 16, 16))
        >>> program.module()(torch.rand(3, 8, 21, 13)).shape
        torch.Size([3, 4, 21, 13])

        The reference model builds its own example (tracing the ``tiny`` preset takes about
        half a minute on a CPU):

        >>> from contrastive_prompts import SparsePromptIR
        >>> program = export_program(SparsePromptIR("tiny"))  # doctest: +SKIP
        >>> program.module()(torch.rand(1, 3, 57, 33)).shape  # doctest: +SKIP
        torch.Size([1, 3, 57, 33])
    """
    where = "export_program"
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"{where}: expected an nn.Module, got {type(model).__name__}")
    if isinstance(model, GatedRestorer):
        raise InputError(
            f"{where}: expected a network of one pass, got a GatedRestorer, whose gate chooses a "
            "network per image (a choice a traced graph cannot hold); export each of "
            "model.networks and choose with model.gate (its tile statistics) before running them"
        )
    negative = [
        name for name, layer in prompt_layers(model).items() if layer._negative_mode is not None
    ]
    if negative:
        raise InputError(
            f"{where}: expected a model outside negative_prompts() (negative prompts draw at "
            f"random and do not export), got layers in negative mode: {negative}"
        )
    if return_routing:
        require_prompt_layers(where, model)
    example = _example(where, model, example)
    shapes = _dynamic_shapes(where, model, example, min_size, size_multiple) if dynamic else None
    traced = _WithRouting(model) if return_routing else model
    with _eval_mode(model), _general_sizes():
        return torch.export.export(
            traced,
            (example,),
            dynamic_shapes=shapes,
            # what the tracer cannot prove for every size is asserted when the program runs
            prefer_deferred_runtime_asserts_over_guards=True,
        )


def _output_names(program: ExportedProgram) -> list[str]:
    """``output``, then ``routing.<layer name>`` for the routing of ``return_routing``."""
    spec = program.call_spec.out_spec
    if spec is None:
        return ["output"]
    structure = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    if isinstance(structure, int):
        return ["output"]
    if (
        isinstance(structure, tuple)
        and len(structure) == 2
        and isinstance(structure[0], int)
        and isinstance(structure[1], dict)
    ):
        return ["output", *(f"routing.{name}" for name in structure[1])]
    return [f"output{i}" for i in range(spec.num_leaves)]


def export_onnx(
    model: nn.Module | ExportedProgram,
    path: str | os.PathLike[str],
    example: Tensor | None = None,
    *,
    min_size: int | None = None,
    size_multiple: int = 1,
    return_routing: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a network as an ONNX file with dynamic batch, height and width.

    The graph is [export_program][contrastive_prompts.app.export.export_program]'s, converted by
    PyTorch's ONNX exporter: top-k routing, the prompt resize and SparsePromptIR's padding to a
    multiple of 8 are ONNX operators. Its input is named ``input``, of shape ``(B, C, H, W)``
    with dynamic ``B``, ``H`` and ``W``; its output ``output``, then with ``return_routing``
    one ``routing.<layer name>`` output of ``(B, top_k)`` int64 experts per prompt layer. The
    weights are inside the file (ONNX limits a file to 2 GB). It is written under a temporary
    name and renamed, so a failed export leaves nothing half-written.

    Args:
        model: a network, as for ``export_program``, or a program it returned.
        path: the ``.onnx`` file to write.
        example: as for ``export_program``; not with a program.
        min_size: as for ``export_program``; not with a program.
        size_multiple: as for ``export_program``; not with a program.
        return_routing: as for ``export_program``; not with a program.
        overwrite: replace ``path`` if it exists.

    Returns:
        ``path`` as a `pathlib.Path`.

    Raises:
        InputError: ``path`` does not end in ``.onnx`` or exists without ``overwrite``; export
            options given with a program; anything ``export_program`` refuses.
        ModuleNotFoundError: ``onnx`` or ``onnxscript`` is not installed.

    Examples:
        >>> from contrastive_prompts import SparsePromptIR
        >>> export_onnx(SparsePromptIR("tiny"), "model.onnx")  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    where = "export_onnx"
    target = Path(path)
    if target.suffix != ".onnx":
        raise InputError(f"{where}: expected a path ending in .onnx, got {str(target)!r}")
    if target.exists() and not overwrite:
        raise InputError(
            f"{where}: {str(target)!r} exists; pass overwrite=True (--overwrite) to replace it"
        )
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"{where}: ONNX export needs {' and '.join(missing)}: "
            "pip install onnx onnxscript onnxruntime (in a clone of the repository: "
            "pip install '.[export]')"
        )
    if isinstance(model, ExportedProgram):
        given = {
            "example": example is not None,
            "min_size": min_size is not None,
            "size_multiple": size_multiple != 1,
            "return_routing": return_routing,
        }
        if any(given.values()):
            options = ", ".join(name for name, value in given.items() if value)
            raise InputError(
                f"{where}: expected no export options with an ExportedProgram (it is already "
                f"traced), got {options}"
            )
        program = model
    else:
        program = export_program(
            model,
            example,
            min_size=min_size,
            size_multiple=size_multiple,
            return_routing=return_routing,
        )
    onnx_program = torch.onnx.export(
        program,
        (),
        dynamo=True,
        input_names=["input"],
        output_names=_output_names(program),
        verbose=False,
    )
    if onnx_program is None:  # only the legacy exporter returns nothing
        raise RuntimeError(f"{where}: the ONNX exporter returned no program")
    make_folder(target.parent, "the folder of the export")
    remove_stale(target.parent)
    with writing(target) as temporary:
        onnx_program.save(temporary, external_data=False)
    return target
