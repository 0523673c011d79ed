"""Module state the core relies on: running a network without leaving a trace (buffers, random
state and modes as they were), and whether a module runs compiled code that hooks cannot see."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def reset_submodules(module: nn.Module) -> None:
    """Call ``reset_parameters()`` of each submodule of ``module`` that has one, in the order
    they were registered; a submodule without one (a ``Sequential``) is looked into. Each
    module's own ``reset_parameters`` resets what it holds, its submodules included, so
    nothing is reset twice, and the random draws come in the order construction made them."""
    for child in module.children():
        reset = getattr(child, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            reset_submodules(child)


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Buffers that the block changes (batch-norm running statistics) get their values back on
    exit, an exception included.

    Values are compared, not version counters: batch norm updates its statistics inside its
    kernel without counting a version. The values are written back through ``.data``, without
    a version count either: the positive pass may have saved those buffers for its backward
    (``native_batch_norm`` does), and a counted write would fail that backward.
    """
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        for buffer, value in saved:
            if not torch.equal(buffer, value):
                buffer.data.copy_(value)


def quiet_run(model: nn.Module, run: Callable[[], T]) -> T:
    """``run()`` without gradient, leaving the model's buffers and the random state as they were.

    For runs that only look at a network (shapes, which submodules run): they must not move the
    batch-norm statistics or the random stream that training draws from.
    """
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), buffers_kept(model), torch.no_grad():
        return run()


def compiled_region(module: nn.Module) -> bool:
    """Whether ``module`` runs compiled code that Python hooks cannot see into.

    True when its ``forward`` was replaced by a compiled one bound to it (a compiled function,
    or a ``functools.partial`` of one, as region-by-region compiling binds it), and after
    ``module.compile()``. Hooks registered on the submodules of such a module do not run (or
    would make it recompile), so tools that watch submodule calls treat it as one opaque call.
    """
    forward = module.__dict__.get("forward")
    own = getattr(forward, "func", forward)  # a functools.partial binding the module
    return (
        getattr(module, "_compiled_call_impl", None) is not None
        or getattr(own, "_torchdynamo_orig_callable", None) is not None
    )
