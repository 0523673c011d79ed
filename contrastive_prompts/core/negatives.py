"""Negatives for any network, at the cost of what follows its first prompt layer.

Whatever a network computes before its first [SparsePrompt][contrastive_prompts.SparsePrompt]
runs cannot depend on any prompt, so the negatives need not compute it again.
[forward_with_negatives][contrastive_prompts.forward_with_negatives] watches the positive pass and
keeps the outputs of the submodules that *finish* before the first prompt layer *starts*; in the
negative pass over the ``B * M`` rows it serves those outputs instead of calling the submodules.
Nothing is asked of the network: no method to write, no change to ``forward``.

The contract: the negatives equal the full computation (a forward under
[negative_prompts][contrastive_prompts.negative_prompts] per chunk of rows, same generator) to
float tolerance. What the reuse relies on is checked, not assumed:

- the first prompt layer is seen starting however it is called (``layer(h)``,
  ``layer.forward(h)``, from a method, inside a module compiled with ``module.compile()``):
  the routing it logs marks the start, not only a hook on it;
- an output that an in-place operation changed after its module returned is not served;
- the batch axis of every kept output is measured, not guessed: once per network structure, a
  look-only pass on ``B + 1`` rows shows which axis grows with the batch (sequence-first
  attention tensors included); an output whose batch axis cannot be told is not served;
- served calls bypass the module's hooks, so a hook runs once per real computation;
- a network whose submodule calls change with the batch size gets full passes, with one warning
  that names the cause.

For the reference model this skips the whole encoder and latent; for a network whose first
operation is a prompt layer nothing is kept, and the negatives cost full forward passes.
[negatives_reuse][contrastive_prompts.core.negatives_reuse] lists what is served and what runs
again.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._checks import InputError, InputTypeError, check_int_range, check_shape
from ._state import buffers_kept, compiled_region, quiet_run
from .prompt import RoutingLog, _unfixed, negative_prompts, record_routing, require_prompt_layers

__all__ = [
    "MAX_NEGATIVES",
    "ModelOutput",
    "NegativesReuse",
    "forward_with_negatives",
    "negatives_reuse",
]

MAX_NEGATIVES = 64
"""The most negative prompts per image: each costs a pass of the network after its first
prompt layer (the papers draw 4)."""


class ModelOutput(NamedTuple):
    """What [forward_with_negatives][contrastive_prompts.forward_with_negatives] returns.

    Attributes:
        output: ``(B, ...)`` the network's output under its own prompts (with gradient).
        negatives: ``(B, M, ...)`` outputs with negative prompts at every prompt layer (no
            gradient).
        routing: the positive [Routing][contrastive_prompts.core.Routing] of each prompt layer, in
            call order, as a [RoutingLog][contrastive_prompts.core.RoutingLog] (``routing.names``
            says which layer made each).

    Examples:
        >>> out = ModelOutput(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 3, 8, 8), RoutingLog())
        >>> out.negatives.shape[1]  # M negatives per image
        4
    """

    output: Tensor
    negatives: Tensor
    routing: RoutingLog


class NegativesReuse(NamedTuple):
    """What the negative pass of a network serves and what it runs again.

    Attributes:
        served: qualified names of the submodules whose positive outputs the negative pass
            reuses (their insides are not called again either), in call order.
        rerun: qualified names of the other submodules called before the first prompt layer
            started, which the negative pass calls again, with the reason for each.
        full_passes: why nothing is served at all, or ``None``.

    Examples:
        >>> NegativesReuse._fields
        ('served', 'rerun', 'full_passes')
    """

    served: tuple[str, ...]
    rerun: tuple[tuple[str, str], ...]
    full_passes: str | None


class _Call:
    """One submodule call of a pass before the first prompt layer, in start order."""

    __slots__ = ("end", "kept", "leaves", "module", "spec", "versions")

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.end = -1  # index of the first call after this one's subtree
        self.kept = False  # the call finished before the first prompt layer started
        self.leaves: list[Any] = []
        self.spec: Any = None
        self.versions: list[int] = []

    def intact(self) -> bool:
        """No in-place operation has changed the kept output since the call returned."""
        return [t._version for t in self.leaves if isinstance(t, Tensor)] == self.versions

    def key(self) -> tuple[Any, ...]:
        """What must match between two passes for their calls to correspond."""
        return (id(self.module), self.end, self.kept, self.spec)


def _record(model: nn.Module, layers: set[nn.Module], log: RoutingLog) -> tuple[list[_Call], Any]:
    """Hooks that note the calls of one pass of ``model`` until its first prompt layer starts.

    The start is the first call of a prompt layer (or of a module inside one) that a hook sees,
    or the first routing in ``log`` (a layer called through ``layer.forward`` or from compiled
    code logs its routing but passes no hook), whichever comes first.
    """
    calls: list[_Call] = []
    stack: list[int] = []
    started = False
    inside = {module for layer in layers for module in layer.modules()}  # run only in a layer

    def before(module: nn.Module, args: Any) -> None:
        nonlocal started
        started = started or module in inside or len(log) > 0
        if not started:
            stack.append(len(calls))
            calls.append(_Call(module))

    def after(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal started
        started = started or len(log) > 0
        if started:
            return
        call = calls[stack.pop()]
        call.end = len(calls)
        leaves, call.spec = tree_flatten(output)
        call.kept = True
        call.leaves = [t.detach() if isinstance(t, Tensor) else t for t in leaves]
        call.versions = [t._version for t in call.leaves if isinstance(t, Tensor)]

    handles = []
    for module in _watched(model):
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    return calls, handles


def _watched(model: nn.Module) -> list[nn.Module]:
    """The submodules whose calls hooks can see: all but the insides of compiled regions.

    A region whose ``forward`` was replaced by a compiled one is watched as one call (its own
    hooks run in eager mode); one compiled by ``module.compile()`` runs its hooks inside the
    compiled call, so neither it nor anything inside it is watched.
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


def _batch_axes(small: _Call, large: _Call, batch: int) -> list[int | None] | str:
    """The batch axis of each leaf of one call's output, from passes on ``batch`` and
    ``batch + 1`` rows: the one axis that grew by one row (``None`` for a leaf that did not
    change: it holds no batch), or why it cannot be told."""
    axes: list[int | None] = []
    for a, b in zip(small.leaves, large.leaves, strict=True):
        if not isinstance(a, Tensor):
            if isinstance(b, Tensor) or a != b:
                return "returns a value that changes with the batch"
            axes.append(None)
            continue
        if not isinstance(b, Tensor) or a.ndim != b.ndim:
            return "returns tensors whose dimensions change with the batch"
        grown = [i for i, (m, n) in enumerate(zip(a.shape, b.shape, strict=True)) if m != n]
        if not grown:
            axes.append(None)
        elif len(grown) == 1 and (a.shape[grown[0]], b.shape[grown[0]]) == (batch, batch + 1):
            axes.append(grown[0])
        else:
            return f"has no single batch axis (shape {tuple(a.shape)} at batch {batch})"
    return axes


class _Plan(NamedTuple):
    """Per positive call: the batch axis of each output leaf, or why it cannot be served."""

    axes: list[list[int | None] | str]
    full_passes: str | None


# the batch axes found for a network, by the structure of its calls: one look-only pass per
# network and structure, not per step. Kept on the network itself, in its instance dictionary
# (no parameter, buffer, submodule or key: state_dict and the module tree are as they were), so
# it lives and goes with the network and nothing is kept at module level.
_PLAN_ATTRIBUTE = "_contrastive_prompts_negatives_plan"


class _Remembered(NamedTuple):
    """A network's plan and the structure of calls it was measured on.

    A copy or a pickle of the network holds none: the structure names the original's
    submodules, so a copy measures its own on its first call.
    """

    signature: tuple[Any, ...]
    plan: _Plan

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        return type(None), ()


def _signature(calls: list[_Call]) -> tuple[Any, ...]:
    return tuple(
        (c.key(), tuple((t.ndim, t.dtype) if isinstance(t, Tensor) else t for t in c.leaves))
        for c in calls
    )


def _measure(
    model: nn.Module, layers: set[nn.Module], x: Tensor, calls: list[_Call], batch: int
) -> _Plan:
    """Run ``model`` on ``batch + 1`` rows, looking only, and find each kept output's batch axis."""
    rows = torch.arange(batch + 1, device=x.device) % batch
    with _unfixed(layers), record_routing(model) as log:  # experts fixed for B rows fit no other
        probe, handles = _record(model, layers, log)
        try:
            quiet_run(model, lambda: model(x[rows]))
        except Exception as error:  # the network refuses another batch size: no reuse
            return _Plan([], f"it failed on {batch + 1} rows ({type(error).__name__}: {error})")
        finally:
            for handle in handles:
                handle.remove()
    if [c.key() for c in calls] != [c.key() for c in probe]:
        return _Plan([], "its submodule calls before the first prompt layer change with the batch")
    axes = [_batch_axes(a, b, batch) if a.kept else "" for a, b in zip(calls, probe, strict=True)]
    return _Plan(axes, None)


def _plan(
    model: nn.Module, layers: set[nn.Module], x: Tensor, calls: list[_Call], batch: int
) -> _Plan:
    """The batch axes of this structure of calls: measured once, then remembered."""
    signature = _signature(calls)
    known = model.__dict__.get(_PLAN_ATTRIBUTE)
    if isinstance(known, _Remembered) and known.signature == signature:
        return known.plan
    plan = _measure(model, layers, x, calls, batch)
    model.__dict__[_PLAN_ATTRIBUTE] = _Remembered(signature, plan)
    if plan.full_passes is not None:
        warnings.warn(
            f"forward_with_negatives: {type(model).__name__} gets full negative passes, since "
            f"{plan.full_passes}; the negatives are right, only slower",
            RuntimeWarning,
            stacklevel=4,  # the caller of forward_with_negatives
        )
    return plan


class _Serving:
    """The kept outputs of one positive pass, served to the negative passes."""

    def __init__(self, calls: list[_Call], plan: _Plan | None) -> None:
        """``plan`` is needed for chunks holding more than one copy of the batch."""
        self.calls, self.plan = calls, plan
        self.why: dict[int, str] = {}
        outermost: list[int] = []
        index = 0
        while index < len(calls):
            why = self._unservable(index)
            if why is None:
                outermost.append(index)
                index = calls[index].end
            else:
                self.why[index] = why
                index += 1
        self.outermost = outermost
        first = set(outermost)
        served_modules = {calls[i].module for i in outermost}
        occurrence: Counter[nn.Module] = Counter()
        # (module, its k-th call) -> (index of the kept call, calls skipped inside it by module)
        self.served: dict[tuple[nn.Module, int], tuple[int, Counter[nn.Module]]] = {}
        for i, call in enumerate(calls):
            if call.module in served_modules:
                if i in first:
                    nested = Counter(
                        c.module for c in calls[i + 1 : call.end] if c.module in served_modules
                    )
                    self.served[(call.module, occurrence[call.module])] = (i, nested)
                occurrence[call.module] += 1

    def _unservable(self, index: int) -> str | None:
        call = self.calls[index]
        if not call.kept:
            return "it holds the first prompt layer"
        if not call.intact():
            return "an in-place operation changed its output after it returned"
        if self.plan is not None:
            if self.plan.full_passes is not None:
                return self.plan.full_passes
            axes = self.plan.axes[index]
            if isinstance(axes, str):
                return f"its output {axes}"
        return None

    def output(self, index: int, copies: int) -> Any:
        """Call ``index``'s kept output for ``copies`` copies of the batch."""
        call = self.calls[index]
        leaves = call.leaves
        if copies > 1:  # planned: forward_with_negatives serves such chunks only with axes
            axes = cast(_Plan, self.plan).axes[index]
            leaves = [
                leaf if axis is None else torch.cat([leaf] * copies, dim=axis)
                for leaf, axis in zip(leaves, cast(list[int | None], axes), strict=True)
            ]
        return tree_unflatten(leaves, call.spec)

    @contextlib.contextmanager
    def serving(self, copies: int) -> Iterator[None]:
        """Served submodules return their kept outputs, without running or calling hooks.

        The module's ``_compiled_call_impl`` (what ``Module.__call__`` runs instead of hooks and
        ``forward`` when it is set, as ``module.compile()`` sets it) serves the call; a call
        that is not served runs ``_call_impl``, hooks and ``forward`` as usual.
        """
        modules = {module for module, _ in self.served}
        count: Counter[nn.Module] = Counter()

        def serve(module: nn.Module) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                k = count[module]
                count[module] += 1
                found = self.served.get((module, k))
                if found is None:
                    return module._call_impl(*args, **kwargs)
                index, nested = found
                count.update(nested)
                return self.output(index, copies)

            return call

        # torch's private slot, because no public mechanism skips a call: a forward pre-hook
        # can change the input and a forward hook the output, but both let forward (and the
        # other hooks) run; this slot is what Module.__call__ runs instead of them
        try:
            for module in modules:
                module.__dict__["_compiled_call_impl"] = serve(module)
            yield
        finally:
            for module in modules:
                module.__dict__.pop("_compiled_call_impl", None)


def _serving(
    model: nn.Module, layers: set[nn.Module], x: Tensor, calls: list[_Call], size: int
) -> _Serving:
    """What the negative passes over chunks of ``size`` rows serve; batch axes only when a chunk
    holds more than one copy of the batch."""
    batch = x.shape[0]
    plan = _plan(model, layers, x, calls, batch) if batch and size > batch and calls else None
    return _Serving(calls, plan)


def _positive(
    model: nn.Module, layers: set[nn.Module], x: Tensor
) -> tuple[Any, list[_Call], RoutingLog]:
    with record_routing(model) as routing:
        calls, handles = _record(model, layers, routing)
        try:
            output = model(x)
        finally:
            for handle in handles:
                handle.remove()
    return output, calls, routing


def _names(model: nn.Module, modules: set[nn.Module]) -> list[str]:
    return [name for name, module in model.named_modules() if module in modules]


def _chunk_rows(batch: int, num_negatives: int, chunk_size: int | None) -> int:
    """Rows per negative pass: whole copies of the batch, so each chunk sees every sample."""
    total = batch * num_negatives
    size = chunk_size or max(total, 1)
    return -(-size // batch) * batch if batch else size


def _check_arguments(
    where: str, model: nn.Module, x: Any, num_negatives: int, chunk_size: int | None
) -> set[nn.Module]:
    layers = require_prompt_layers(where, model)
    check_int_range(where, "num_negatives", num_negatives, 1, MAX_NEGATIVES)
    if chunk_size is not None:
        check_int_range(where, "chunk_size", chunk_size, 1)
    if not isinstance(x, Tensor):
        raise InputTypeError(f"{where}: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise InputError(f"{where}: expected x to be a batch tensor (B, ...), got {x!r:.80}")
    return set(layers.values())


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
    started in the positive pass are not called again: their outputs are served, and their
    hooks do not run a second time. The rows go through the network as one batch, or in chunks
    of about ``chunk_size`` rows to bound memory (on a CPU, ``chunk_size=B``, one pass per
    negative, stays in cache).

    The result equals the full computation (a forward under ``negative_prompts`` per chunk,
    same generator) to float tolerance, for any network that takes the same path through its
    submodules on every call; what the reuse relies on is checked as it runs (see
    [negatives_reuse][contrastive_prompts.core.negatives_reuse] for what is served). The served
    submodules see each chunk as whole copies of the batch, so batch statistics (batch norm in
    training mode) are those of the positive pass. The negative passes leave the model's
    buffers as they were: batch norm's running statistics follow the positive pass only.
    Submodules that run after the first prompt layer run again on the negative rows in the
    mode they are in (dropout draws new masks).

    Args:
        model: any network holding [SparsePrompt][contrastive_prompts.SparsePrompt] layers,
            called as ``model(x)`` and returning a tensor whose first axis is the batch.
        x: the ``(B, ...)`` input batch.
        num_negatives: ``M >= 1``.
        generator: source of randomness for the negative experts.
        labels: optional ``(B,)`` degradation labels: negatives favour other degradations'
            experts.
        chunk_size: rows per negative pass, rounded up to a multiple of ``B`` (each chunk holds
            whole copies of the batch); all ``B * M`` at once by default. The experts are drawn
            chunk by chunk, so another ``chunk_size`` draws other (equally valid) negatives.

    Returns:
        [ModelOutput][contrastive_prompts.core.ModelOutput]: ``output (B, ...)``, ``negatives
        (B, M, ...)`` and the positive routing of each prompt layer in call order.

    Raises:
        InputError: ``model`` holds no SparsePrompt (or only layers that keep every expert),
            none of them ran in ``model(x)``, ``model`` returns something other than a batch
            tensor, or a bad argument.

    Warns:
        RuntimeWarning: once per network structure, when nothing can be served (the network's
            calls change with the batch size, or it fails on another one): the negatives then
            cost full passes, and are still right.

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> out = forward_with_negatives(model, torch.rand(2, 3, 16, 16), num_negatives=3)
        >>> out.output.shape, out.negatives.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 3, 3, 16, 16]))
    """
    where = "forward_with_negatives"
    layers = _check_arguments(where, model, x, num_negatives, chunk_size)
    batch = x.shape[0]
    if labels is not None:
        check_shape(where, "labels", labels, (batch,))

    output, calls, routing = _positive(model, layers, x)
    expected = f"{where}: expected model(x) to return a tensor of batch {batch}, got"
    if not isinstance(output, Tensor):
        raise InputTypeError(f"{expected} {type(output).__name__}")
    if output.shape[:1] != (batch,):
        raise InputError(f"{expected} {tuple(output.shape)}")
    if not routing:
        raise InputError(
            f"{where}: expected model(x) to call its prompt layers (as layer(h) or "
            f"layer.forward(h)), got a pass in which none of {sorted(_names(model, layers))} ran"
        )

    size = _chunk_rows(batch, num_negatives, chunk_size)
    prefix = _serving(model, layers, x, calls, size)
    rows = torch.arange(batch * num_negatives, device=x.device) % max(batch, 1)
    pieces = []
    with buffers_kept(model):
        for index in rows.split(size):
            chunk_labels = None if labels is None else labels[index]
            with (
                prefix.serving(index.numel() // max(batch, 1)),
                negative_prompts(model, generator=generator, labels=chunk_labels),
            ):
                pieces.append(model(x[index]))
    negatives = torch.cat(pieces) if pieces else output.detach()[:0]
    negatives = negatives.view(num_negatives, batch, *output.shape[1:]).transpose(0, 1)
    return ModelOutput(output, negatives, routing)


def negatives_reuse(
    model: nn.Module, x: Tensor, *, num_negatives: int = 4, chunk_size: int | None = None
) -> NegativesReuse:
    """Which submodules the negative pass of ``model`` serves, and which it runs again.

    Runs ``model(x)`` once, looking only (no gradient, buffers and random state left as they
    were), and plans the negative pass of
    [forward_with_negatives][contrastive_prompts.forward_with_negatives] as it would for the same
    arguments. A forward hook counting an encoder's calls sees one call per training step when
    the encoder is served: served calls do not run hooks.

    Args:
        model: a network holding SparsePrompt layers.
        x: a ``(B, ...)`` input batch.
        num_negatives: ``M``, as given to ``forward_with_negatives``.
        chunk_size: as given to ``forward_with_negatives``.

    Returns:
        [NegativesReuse][contrastive_prompts.core.NegativesReuse]: the served submodules, those run
        again with the reason, and why nothing is served, if so.

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> reuse = negatives_reuse(model, torch.rand(2, 3, 16, 16))
        >>> reuse.served, reuse.full_passes  # the first convolution runs once
        (('0',), None)
    """
    where = "negatives_reuse"
    layers = _check_arguments(where, model, x, num_negatives, chunk_size)
    batch = x.shape[0]
    _, calls, _ = quiet_run(model, lambda: _positive(model, layers, x))
    size = _chunk_rows(batch, num_negatives, chunk_size)
    prefix = _serving(model, layers, x, calls, size)
    names: dict[nn.Module, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(module, name)
    served = tuple(names[calls[i].module] for i in prefix.outermost)
    rerun = tuple((names[calls[i].module], why) for i, why in prefix.why.items())
    full = prefix.plan.full_passes if prefix.plan is not None else None
    return NegativesReuse(served, rerun, full)
