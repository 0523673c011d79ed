"""Negatives for any network, at the cost of what follows its first prompt layer.

Whatever a network computes before its first [SparsePrompt][contrastive_prompts.SparsePrompt]
runs cannot depend on any prompt, so the negatives need not compute it again.
[forward_with_negatives][contrastive_prompts.forward_with_negatives] watches the positive pass and
keeps the outputs of the submodules that *finish* before the first prompt layer *starts*; in the
negative pass over the ``B * M`` rows it serves those outputs, row by row, instead of calling the
submodules. Nothing is asked of the network: no method to write, no change to ``forward``.

For the reference model this skips the whole encoder and latent; for a network whose first
operation is a prompt layer nothing is kept, and the negatives cost full forward passes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from ._checks import InputError, InputTypeError, check_int_range, check_shape
from .compiling import compiled_region
from .prompt import RoutingLog, _require_layers, negative_prompts, record_routing

__all__ = ["ModelOutput", "forward_with_negatives"]


class ModelOutput(NamedTuple):
    """What [forward_with_negatives][contrastive_prompts.forward_with_negatives] returns.

    Attributes:
        output: ``(B, ...)`` the network's output under its own prompts (with gradient).
        negatives: ``(B, M, ...)`` outputs with negative prompts at every prompt layer (no
            gradient).
        routing: the positive [Routing][contrastive_prompts.Routing] of each prompt layer, in
            call order, as a [RoutingLog][contrastive_prompts.RoutingLog] (``routing.names``
            says which layer made each).

    Examples:
        >>> out = ModelOutput(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 3, 8, 8), RoutingLog())
        >>> out.negatives.shape[1]  # M negatives per image
        4
    """

    output: Tensor
    negatives: Tensor
    routing: RoutingLog


class _Call:
    """One submodule call of the positive pass before the first prompt layer, in start order."""

    __slots__ = ("end", "kept", "module", "output", "versions")

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.end = -1  # index of the first call after this one's subtree
        self.kept = False  # the call finished before the first prompt layer started
        self.output: Any = None
        self.versions: list[int] = []

    def intact(self) -> bool:
        """No in-place operation has changed the kept output since the call returned."""
        leaves = [t for t in tree_flatten(self.output)[0] if isinstance(t, Tensor)]
        return [t._version for t in leaves] == self.versions


class _Prefix:
    """The prompt-free start of one positive pass, and how to serve it to the negative pass."""

    def __init__(self, model: nn.Module, layers: set[nn.Module]) -> None:
        self.model, self.layers = model, layers
        self.calls: list[_Call] = []
        # (module, its k-th call) -> (kept output, calls skipped inside it by module)
        self.served: dict[tuple[nn.Module, int], tuple[Any, Counter[nn.Module]]] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Hooks on every submodule note the calls of the positive pass."""
        calls, stack = self.calls, []
        started = False

        # once the first prompt layer starts, nothing more is kept: the hooks return at once
        def before(module: nn.Module, args: Any) -> None:
            nonlocal started
            if started or module in self.layers:
                started = True
                return
            stack.append(len(calls))
            calls.append(_Call(module))

        def after(module: nn.Module, args: Any, output: Any) -> None:
            if started:
                return
            call = calls[stack.pop()]
            call.end = len(calls)
            call.kept, call.output = True, tree_map(_detach, output)
            leaves = tree_flatten(call.output)[0]
            call.versions = [t._version for t in leaves if isinstance(t, Tensor)]

        handles = []
        for module in _watched(self.model):
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        self._plan()

    def _plan(self) -> None:
        """Serve the outermost kept calls; count, per served module, the calls nested in them.

        A kept output that an in-place operation changed afterwards is not served: that call
        runs again, and the calls inside it are considered in its place (calls are listed in
        the order they start, so the next one is its first child).
        """
        calls, index = self.calls, 0
        outermost = []
        while index < len(calls):
            call = calls[index]
            if call.kept and call.intact():
                outermost.append(index)
                index = call.end
            else:
                index += 1
        served_modules = {calls[i].module for i in outermost}
        occurrence: Counter[nn.Module] = Counter()
        for i, call in enumerate(calls):
            if call.module in served_modules:
                if i in outermost:
                    nested = Counter(
                        c.module for c in calls[i + 1 : call.end] if c.module in served_modules
                    )
                    self.served[(call.module, occurrence[call.module])] = (call.output, nested)
                occurrence[call.module] += 1

    @contextlib.contextmanager
    def serving(self, rows: Tensor, batch: int) -> Iterator[None]:
        """Served submodules return their kept outputs at ``rows`` instead of running."""
        modules = {module for module, _ in self.served}
        count: Counter[nn.Module] = Counter()

        def pick(value: Any) -> Any:
            return (
                value[rows] if isinstance(value, Tensor) and value.shape[:1] == (batch,) else value
            )

        def serve(module: nn.Module, original: Any) -> Any:
            def forward(*args: Any, **kwargs: Any) -> Any:
                k = count[module]
                count[module] += 1
                found = self.served.get((module, k))
                if found is None:
                    return original(*args, **kwargs)
                output, nested = found
                count.update(nested)
                return tree_map(pick, output)

            return forward

        own = {module: module.__dict__.get("forward") for module in modules}
        try:
            for module in modules:
                module.forward = serve(module, module.forward)
            yield
        finally:
            for module, forward in own.items():
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward


def _watched(model: nn.Module) -> list[nn.Module]:
    """The submodules whose calls hooks can see: all but the insides of compiled regions.

    A region compiled by [compile_regions][contrastive_prompts.compile_regions] is watched as one
    call (its own hooks run in eager mode); one compiled by ``module.compile()`` runs its hooks
    inside the compiled call, so neither it nor anything inside it is watched.
    """
    seen: set[nn.Module] = {model}
    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if child in seen or getattr(child, "_compiled_call_impl", None) is not None:
                continue
            seen.add(child)
            found.append(child)
            if not compiled_region(child):
                walk(child)

    walk(model)
    return found


def _detach(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def forward_with_negatives(
    model: nn.Module,
    x: Tensor,
    *,
    num_negatives: int,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
) -> ModelOutput:
    """The output with gradient and ``num_negatives`` negative outputs of any prompted network.

    ``model(x)`` runs once as usual, with gradient; its routing is recorded. Then, without
    gradient, ``model`` runs on ``B * M`` rows (negative-major: row ``r`` is sample ``r % B``)
    under [negative_prompts][contrastive_prompts.negative_prompts], so every prompt layer
    renders a negative prompt. The submodules that finished before the first prompt layer
    started in the positive pass are not called again: their outputs are served, row by row.
    The rows go through the network as one batch, or in chunks of ``chunk_size`` rows to bound
    memory (on a CPU, ``chunk_size=B``, one pass per negative, stays in cache).

    The result equals the naive way (a full forward under ``negative_prompts`` per chunk, same
    generator) when the served submodules treat rows independently and the network takes the
    same path through its submodules on every call (no data-dependent choice of submodules).
    Submodules that run after the first prompt layer run again on the negative rows, in the
    mode they are in: dropout draws new masks, batch norm in training mode updates its
    statistics.

    Args:
        model: any network holding [SparsePrompt][contrastive_prompts.SparsePrompt] layers,
            called as ``model(x)`` and returning a tensor whose first axis is the batch.
        x: the ``(B, ...)`` input batch.
        num_negatives: ``M >= 1``.
        generator: source of randomness for the negative experts.
        labels: optional ``(B,)`` degradation labels: negatives favour other degradations'
            experts.
        chunk_size: rows per negative pass; all ``B * M`` at once by default (rounded up to a
            multiple of ``B`` with ``labels``, so each chunk sees every label). The experts are
            drawn chunk by chunk, so another ``chunk_size`` draws other (equally valid) negatives.

    Returns:
        [ModelOutput][contrastive_prompts.ModelOutput]: ``output (B, ...)``, ``negatives
        (B, M, ...)`` and the positive routing of each prompt layer in call order.

    Raises:
        InputError: ``model`` holds no SparsePrompt (or only layers that keep every expert),
            ``model`` returns something other than a batch tensor, or a bad argument.

    Examples:
        >>> from contrastive_prompts import SparsePromptIR
        >>> model = SparsePromptIR("tiny")
        >>> out = forward_with_negatives(model, torch.rand(2, 3, 16, 16), num_negatives=3)
        >>> out.output.shape, out.negatives.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 3, 3, 16, 16]))
    """
    where = "forward_with_negatives"
    layers = _require_layers(where, model)
    check_int_range(where, "num_negatives", num_negatives, 1)
    if chunk_size is not None:
        check_int_range(where, "chunk_size", chunk_size, 1)
    if not isinstance(x, Tensor):
        raise InputTypeError(f"{where}: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise InputError(f"{where}: expected x to be a batch tensor (B, ...), got {x!r:.80}")
    batch = x.shape[0]
    if labels is not None:
        check_shape(where, "labels", labels, (batch,))

    prefix = _Prefix(model, set(layers.values()))
    with prefix.recording(), record_routing(model) as routing:
        output = model(x)
    expected = f"{where}: expected model(x) to return a tensor of batch {batch}, got"
    if not isinstance(output, Tensor):
        raise InputTypeError(f"{expected} {type(output).__name__}")
    if output.shape[:1] != (batch,):
        raise InputError(f"{expected} {tuple(output.shape)}")

    rows = torch.arange(batch * num_negatives, device=x.device) % batch
    size = chunk_size or max(rows.numel(), 1)
    if labels is not None and batch:  # label-aware negatives compare each row with the batch
        size = -(-size // batch) * batch
    pieces = []
    for index in rows.split(size):
        chunk_labels = None if labels is None else labels[index]
        with (
            prefix.serving(index, batch),
            negative_prompts(model, generator=generator, labels=chunk_labels),
        ):
            pieces.append(model(x[index]))
    negatives = torch.cat(pieces) if pieces else output.detach()[:0]
    negatives = negatives.view(num_negatives, batch, *output.shape[1:]).transpose(0, 1)
    return ModelOutput(output, negatives, routing)
