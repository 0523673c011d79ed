"""The Sparse Prompt Module and the prompt interaction block.

``SparsePrompt`` turns a feature map into a degradation prompt made from the ``top_k`` experts of a
learned prompt bank (CPL's Sparse Prompt Module); with ``top_k == num_prompts`` it is PromptIR's
dense prompt generator. ``PromptFusion`` merges a prompt into the features (PromptIR's interaction
block). The routing maths lives in ``core.routing``, in pure functions such as
[topk_route][contrastive_prompts.core.topk_route] and
[negative_route][contrastive_prompts.core.negative_route].

Two modes reach every ``SparsePrompt`` inside a model, at any depth, without a change to the
model's code: [negative_prompts][contrastive_prompts.negative_prompts] (each layer renders a
negative prompt) and [record_routing][contrastive_prompts.record_routing] (each layer logs its
routing). Like ``Module.train()``, each is a flag per layer instance, set for one model by a context
manager that restores it on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    InputError,
    InputTypeError,
    check_bool,
    check_dtype_like,
    check_int_range,
    check_parameters_fit,
    check_positive,
    check_shape,
    check_spatial,
)
from ._state import reset_submodules
from .restormer import TransformerBlock
from .routing import (
    Routing,
    _route_to,
    _rows,
    negative_route,
    topk_route,
)

__all__ = [
    "PromptFusion",
    "RoutingLog",
    "SparsePrompt",
    "fixed_experts",
    "fixed_routing",
    "negative_prompts",
    "prompt_layers",
    "record_routing",
]


class SparsePrompt(nn.Module):
    r"""Sparse Prompt Module: a prompt from the ``top_k`` experts of a learned prompt bank.

    $e = \mathrm{mean}_{H,W}(x)$, $w = \mathrm{TopK}(\mathrm{softmax}(W e + b))$,
    $p = \mathrm{conv}_{3\times3}(\mathrm{resize}(\sum_i w_i P_i, H, W))$. With
    ``top_k == num_prompts`` this is PromptIR's dense prompt generator. The bank is mixed by one
    matrix product with the (sparse) weights, so no per-sample copy of the bank is made.

    Args:
        dim: channels ``C`` of the input features.
        prompt_dim: channels ``D`` of each prompt.
        num_prompts: experts ``N`` in the bank (5 in PromptIR and CPL).
        prompt_size: spatial size ``S`` of each prompt.
        top_k: experts kept per sample (1 for CPL, ``num_prompts`` for PromptIR).
        renormalize: rescale the kept weights to sum to 1 (off in CPL); a bool.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(B, dim, H, W)`` with any ``H, W >= 1``; ``B = 0`` gives an empty output.
        - Output: ``(B, prompt_dim, H, W)``.

    The input must have the parameters' dtype (convert the layer with ``.to(dtype)`` for another
    one) or, under `torch.autocast`, the autocast dtype; any other dtype, an integer one
    included, raises [InputError][contrastive_prompts.InputError], as does ``H = 0`` or ``W = 0``.

    Raises:
        InputTypeError: a size that is not an integer, or ``renormalize`` that is not a bool
            (a string such as ``"no"`` would otherwise read as true).
        InputError: a size below 1, or ``top_k`` outside ``[1, num_prompts]``.

    Examples:
        >>> layer = SparsePrompt(dim=16, prompt_dim=8, prompt_size=4)
        >>> prompt, routing = layer(torch.rand(2, 16, 10, 12), return_routing=True)
        >>> prompt.shape, routing.indices.shape
        (torch.Size([2, 8, 10, 12]), torch.Size([2, 1]))
    """

    def __init__(
        self,
        *,
        dim: int,
        prompt_dim: int,
        num_prompts: int = 5,
        prompt_size: int,
        top_k: int = 1,
        renormalize: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("prompt_dim", prompt_dim), ("prompt_size", prompt_size)):
            check_int_range("SparsePrompt", name, value, 1)
        check_int_range("SparsePrompt", "num_prompts", num_prompts, 1)
        check_int_range("SparsePrompt", "top_k", top_k, 1, num_prompts)
        check_bool("SparsePrompt", "renormalize", renormalize)
        check_parameters_fit(
            "SparsePrompt",
            lambda: SparsePrompt(
                dim=dim,
                prompt_dim=prompt_dim,
                prompt_size=prompt_size,
                num_prompts=num_prompts,
                top_k=top_k,
                device="meta",
            ),
            device,
            dtype,
            f"dim={dim}, prompt_dim={prompt_dim}, prompt_size={prompt_size}, "
            f"num_prompts={num_prompts}",
        )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.prompt_dim, self.prompt_size = dim, prompt_dim, prompt_size
        self.num_prompts, self.top_k, self.renormalize = num_prompts, top_k, renormalize
        self.prompts = nn.Parameter(
            torch.empty(num_prompts, prompt_dim, prompt_size, prompt_size, **factory)
        )
        self.router = nn.Linear(dim, num_prompts, **factory)
        self.conv = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False, **factory)
        # modes, set by negative_prompts() and record_routing(), never by hand
        self._negative_mode: _NegativeMode | None = None
        self._fixed: Tensor | Routing | None = None  # fixed_experts' experts or fixed_routing's
        self._routing_logs: tuple[tuple[RoutingLog, str], ...] = ()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PromptIR's initialisation: bank uniform in [0, 1), PyTorch defaults elsewhere."""
        nn.init.uniform_(self.prompts)
        self.router.reset_parameters()
        self.conv.reset_parameters()

    @torch.no_grad()
    def add_experts(self, count: int = 1) -> range:
        """Grow the bank by ``count`` experts, keeping every weight and key the layer has.

        The bank and the router gain ``count`` rows at the end; the existing rows keep their
        values, and the parameters their names (``prompts``, ``router.weight``,
        ``router.bias``), so the layer is what a layer built with ``num_prompts + count``
        experts holding these values would be. Each new expert starts as the mean of the bank,
        and its router row as the mean of the rows, so its logit is the mean of the other
        experts' logits, never above their largest: until trained it wins no input whose
        experts score apart. It takes from each input's own expert the share of the softmax
        its logit gets (the routing weight is a softmax over every expert): an old output
        moves by that share, small for a confident router. The parameters are new tensors:
        build the optimiser after growing.
        [add_experts][contrastive_prompts.core.add_experts] grows every layer of a model, and
        [only_new_experts][contrastive_prompts.core.only_new_experts] trains the new rows
        alone.

        Args:
            count: experts to add, an integer >= 1.

        Returns:
            The indices of the new experts, ``range(N, N + count)``.

        Raises:
            InputTypeError: ``count`` is not an integer.
            InputError: ``count < 1``.

        Examples:
            >>> layer = SparsePrompt(dim=8, prompt_dim=4, prompt_size=2)
            >>> layer.add_experts(2), layer.num_prompts, tuple(layer.router.weight.shape)
            (range(5, 7), 7, (7, 8))
        """
        check_int_range("SparsePrompt.add_experts", "count", count, 1)

        def grown(rows: Tensor) -> nn.Parameter:
            start = rows.mean(dim=0, keepdim=True).expand(count, *rows.shape[1:])
            return nn.Parameter(torch.cat([rows, start]), requires_grad=rows.requires_grad)

        before = self.num_prompts
        self.prompts = grown(self.prompts)
        self.router.weight = grown(self.router.weight)
        if self.router.bias is not None:
            self.router.bias = grown(self.router.bias)
        self.router.out_features = self.num_prompts = before + count
        return range(before, before + count)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, prompt_dim={self.prompt_dim}, num_prompts={self.num_prompts}, "
            f"prompt_size={self.prompt_size}, top_k={self.top_k}, renormalize={self.renormalize}"
        )

    def route(self, x: Tensor) -> Routing:
        """Route ``x`` of shape ``(B, dim, H, W)`` to its ``top_k`` experts."""
        check_shape("SparsePrompt", "x", x, ("B", self.dim, "H", "W"))
        check_spatial("SparsePrompt", "x", x)
        check_dtype_like("SparsePrompt", "x", x, self.router.weight)
        logits = self.router(x.mean(dim=(-2, -1)))
        return topk_route(logits, self.top_k, renormalize=self.renormalize)

    def render(self, weights: Tensor, size: Sequence[int]) -> Tensor:
        """Mix the bank with ``(B, N)`` weights and render the prompt at ``size = (H, W)``."""
        where = "SparsePrompt.render"
        check_shape(where, "weights", weights, ("B", self.num_prompts))
        check_dtype_like(where, "weights", weights, self.prompts)
        size = tuple(size)
        if len(size) != 2 or size[0] < 1 or size[1] < 1:
            raise InputError(f"{where}: expected size (H, W) with H, W >= 1, got {size}")
        bank = self.prompts.flatten(1)  # (N, D*S*S)
        # under autocast the weights may be in the autocast dtype; the product casts them
        mixed = (weights @ bank).view(weights.shape[0], *self.prompts.shape[1:])
        mixed = F.interpolate(mixed, size=size, mode="bilinear", align_corners=False)
        prompt: Tensor = self.conv(mixed)
        return prompt

    def forward(
        self, x: Tensor, *, return_routing: bool = False
    ) -> Tensor | tuple[Tensor, Routing]:
        """The prompt for ``x`` (and its routing with ``return_routing=True``).

        Inside [negative_prompts][contrastive_prompts.negative_prompts] this is
        the negative prompt; inside
        [record_routing][contrastive_prompts.record_routing] the routing is also logged.

        Args:
            x: ``(B, dim, H, W)`` features, ``H, W >= 1``.
            return_routing: also return the [Routing][contrastive_prompts.core.Routing] that made
                the prompt.

        Returns:
            The ``(B, prompt_dim, H, W)`` prompt, or ``(prompt, routing)``.
        """
        mode = self._negative_mode
        if mode is not None:
            return self._negative(
                x, generator=mode.generator, labels=mode.labels, return_routing=return_routing
            )
        routing = self._positive(x)
        for log, name in self._routing_logs:
            log.append(routing)
            log.names.append(name)
        prompt = self.render(routing.weights, x.shape[-2:])
        return (prompt, routing) if return_routing else prompt

    def _positive(self, x: Tensor, *, copies: bool = False) -> Routing:
        """The routing of ``x``'s own prompt: the router's, or what a fixing block set (for
        every copy of the batch in ``x``, with ``copies``: the rows of a negative pass)."""
        routing = self.route(x)
        fixed, batch = self._fixed, x.shape[0]
        if isinstance(fixed, Routing):
            return Routing(*(_rows(t, batch, "fixed_routing", copies=copies) for t in fixed))
        if fixed is not None:
            return _route_to(routing.probs, _rows(fixed, batch, "fixed_experts", copies=copies))
        return routing

    @torch.no_grad()
    def _negative(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        return_routing: bool = False,
    ) -> Tensor | tuple[Tensor, Routing]:
        """A negative prompt for ``x``, built without gradient.

        The experts are drawn by [negative_route][contrastive_prompts.core.negative_route],
        outside the positive's: the router's choice, or the experts a
        [fixed_experts][contrastive_prompts.core.fixed_experts] or
        [fixed_routing][contrastive_prompts.core.fixed_routing] block gives.

        Args:
            x: ``(B, dim, H, W)`` features.
            generator: source of randomness, for reproducible negatives.
            labels: optional ``(B,)`` degradation labels: draw other degradations' experts first.
            return_routing: also return the negative [Routing][contrastive_prompts.core.Routing].

        Returns:
            ``(B, prompt_dim, H, W)`` prompt (and its routing).
        """
        positive = self._positive(x, copies=True)
        routing = negative_route(positive, generator=generator, labels=labels)
        prompt = self.render(routing.weights, x.shape[-2:])
        return (prompt, routing) if return_routing else prompt


class _NegativeMode(NamedTuple):
    generator: torch.Generator | None
    labels: Tensor | None


class RoutingLog(list[Routing]):
    """The routings that [record_routing][contrastive_prompts.record_routing] collected.

    A list of [Routing][contrastive_prompts.core.Routing] in the order the layers ran; ``names[i]``
    is the qualified name (as in ``model.named_modules()``) of the layer that made ``self[i]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []


def prompt_layers(model: nn.Module) -> dict[str, SparsePrompt]:
    """Every [SparsePrompt][contrastive_prompts.SparsePrompt] inside ``model``, by qualified name.

    ``model`` may be a layer itself (its name is then ``""``), any network holding layers at any
    depth, or such a network wrapped in ``DistributedDataParallel`` or ``AveragedModel``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), SparsePrompt(dim=8, prompt_dim=4,
        ...                                                                  prompt_size=2))
        >>> list(prompt_layers(net))
        ['1']
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"prompt_layers: expected an nn.Module, got {type(model).__name__}")
    return {name: m for name, m in model.named_modules() if isinstance(m, SparsePrompt)}


def require_prompt_layers(where: str, model: nn.Module) -> dict[str, SparsePrompt]:
    """The [prompt_layers][contrastive_prompts.core.prompt_layers] of ``model``; none is an error.

    Args:
        where: the caller's name, for the message.
        model: the network.

    Returns:
        The layers by qualified name, at least one.

    Raises:
        InputError: ``model`` holds no SparsePrompt; the message names ``where``.
    """
    layers = prompt_layers(model)
    if not layers:
        raise InputError(
            f"{where}: expected a model containing SparsePrompt layers, got "
            f"{type(model).__name__} with none (add_prompts adds them to an existing network)"
        )
    return layers


@contextlib.contextmanager
def negative_prompts(
    model: nn.Module,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Iterator[None]:
    """Run ``model`` with negative prompts: every SparsePrompt inside renders CPL's negative.

    Inside the block each [SparsePrompt][contrastive_prompts.SparsePrompt] of ``model``, at any
    depth, returns a negative prompt instead of its own
    prompt: experts it did not select, drawn from ``generator`` (see
    [negative_route][contrastive_prompts.core.negative_route]). The block runs under
    ``torch.no_grad()``: negatives are targets to push away from, not paths for the gradient.
    The mode is a flag per layer instance, set on entry and restored on exit, an exception
    included; blocks nest (the innermost one's generator and labels apply). A model wrapped in
    ``DistributedDataParallel`` works as it is. Under ``torch.compile`` the flag is guarded
    state: the first call in each mode compiles, later calls reuse the graphs (the draw from
    ``generator`` is a graph break).

    Args:
        model: a network holding SparsePrompt layers.
        generator: source of randomness for the negative experts, drawn by each layer in call
            order.
        labels: optional ``(B,)`` degradation labels of the batch the block will run: negatives
            favour experts that other degradations selected.

    Raises:
        InputError: ``model`` holds no SparsePrompt, or one whose ``top_k`` leaves no expert for
            negatives (``top_k == num_prompts``).

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> x = torch.rand(2, 3, 16, 16)
        >>> with negative_prompts(model, generator=torch.Generator().manual_seed(0)):
        ...     negative = model(x)
        >>> negative.shape, negative.requires_grad
        (torch.Size([2, 3, 16, 16]), False)
    """
    layers = require_prompt_layers("negative_prompts", model)
    dense = [name for name, layer in layers.items() if layer.top_k >= layer.num_prompts]
    if dense:
        raise InputError(
            "negative_prompts: expected layers with top_k < num_prompts (experts left for "
            f"negatives), got top_k == num_prompts in {dense}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(
            "negative_prompts: expected generator to be a torch.Generator or None, got "
            f"{type(generator).__name__}"
        )
    mode = _NegativeMode(generator, labels)
    previous = {name: layer._negative_mode for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer._negative_mode = mode
        with torch.no_grad():
            yield
    finally:
        for name, layer in layers.items():
            layer._negative_mode = previous[name]


@contextlib.contextmanager
def fixed_experts(model: nn.Module, experts: Mapping[str, Tensor | int]) -> Iterator[None]:
    """Run ``model`` with chosen experts: each named SparsePrompt uses the experts given.

    Inside the block the layer named ``name`` (as in
    [prompt_layers][contrastive_prompts.core.prompt_layers]) renders its prompt from
    ``experts[name]`` instead of its own top-k choice, each expert at the weight its router
    gives it, as a negative prompt is weighted: what the paper's negatives mean when experts
    specialise, "another degradation's prompt". Layers not named route as usual. Giving each
    image the experts another degradation uses measures the *swap* cost. Negative prompts drawn
    inside the block ([negative_prompts][contrastive_prompts.negative_prompts],
    [forward_with_negatives][contrastive_prompts.forward_with_negatives]) come from outside the
    experts given. The flag is restored on exit, an exception included. Gradients flow as
    usual.

    Args:
        model: a network holding SparsePrompt layers.
        experts: ``{layer name: experts}``; experts are an int (one expert for every sample),
            a ``(B,)`` integer tensor (one per sample) or ``(B, k)`` (``k`` per sample); a
            first dimension of 1 serves every sample.

    Raises:
        InputError: a name that is not a prompt layer of ``model``, or experts that are not
            integers in ``[0, num_prompts)``.

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> with fixed_experts(model, {"1.prompt": 3}), record_routing(model) as log:
        ...     out = model(torch.rand(2, 3, 16, 16))
        >>> log[-1].indices.tolist()
        [[3], [3]]
    """
    layers = _named_layers("fixed_experts", model, experts, "experts")
    chosen: dict[str, Tensor] = {}
    for name, value in experts.items():
        layer = layers[name]
        if isinstance(value, bool) or not isinstance(value, (int, Tensor)):
            raise InputTypeError(
                f"fixed_experts: expected an int or an integer tensor for {name!r}, got "
                f"{type(value).__name__}"
            )
        tensor = torch.as_tensor(value, device=layer.prompts.device)
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise InputError(
                f"fixed_experts: expected integer experts for {name!r}, got {tensor.dtype}"
            )
        tensor = tensor.long().reshape(-1, 1) if tensor.ndim < 2 else tensor.long()
        if tensor.ndim != 2 or tensor.numel() == 0:
            raise InputError(
                f"fixed_experts: expected an int, (B,) or (B, k) experts for {name!r}, got "
                f"shape {tuple(torch.as_tensor(value).shape)}"
            )
        if bool(((tensor < 0) | (tensor >= layer.num_prompts)).any()):
            raise InputError(
                f"fixed_experts: expected experts in [0, {layer.num_prompts - 1}] for {name!r}, "
                f"got {sorted(set(tensor.flatten().tolist()))}"
            )
        chosen[name] = tensor
    with _fixing(layers, chosen):
        yield


@contextlib.contextmanager
def fixed_routing(model: nn.Module, routings: Mapping[str, Routing]) -> Iterator[None]:
    """Run ``model`` with given routings: each named SparsePrompt renders its prompt from one.

    Inside the block the layer named ``name`` (as in
    [prompt_layers][contrastive_prompts.core.prompt_layers]) ignores its router's choice and
    renders from ``routings[name].weights``, experts and weights both; it reports that routing
    (to ``return_routing`` and [record_routing][contrastive_prompts.record_routing]). With the
    routing of a whole image (from [pooled_routing][contrastive_prompts.core.pooled_routing] of
    its tiles) every tile is restored under the same prompts; ``tiled(routing="image")`` does
    so. Layers not named route as usual; the flags are restored on exit, an exception included.

    Args:
        model: a network holding SparsePrompt layers.
        routings: ``{layer name: Routing}`` with ``(1, N)`` rows (one for every sample) or one
            row per sample of the batch the layer will route, on the layer's device.

    Raises:
        InputError: a name that is not a prompt layer of ``model``, a routing whose rows do not
            hold that layer's ``N`` experts, or (when the layer runs) rows that are neither 1 nor
            the batch.

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             torch.nn.Conv2d(8, 3, 3, padding=1))
        >>> x = torch.rand(1, 3, 16, 16)
        >>> with record_routing(model) as log:
        ...     first = model(x)
        >>> with fixed_routing(model, dict(zip(log.names, log))):
        ...     torch.equal(model(x), first)
        True
    """
    layers = _named_layers("fixed_routing", model, routings, "Routing")
    chosen: dict[str, Routing] = {}
    for name, routing in routings.items():
        if not isinstance(routing, Routing):
            raise InputTypeError(
                f"fixed_routing: expected a Routing for {name!r}, got {type(routing).__name__}"
            )
        experts = layers[name].num_prompts
        if routing.weights.ndim != 2 or routing.weights.shape[-1] != experts:
            raise InputError(
                f"fixed_routing: expected weights of shape (B, {experts}) for {name!r}, got "
                f"{tuple(routing.weights.shape)}"
            )
        chosen[name] = routing
    with _fixing(layers, chosen):
        yield


def _named_layers(
    where: str, model: nn.Module, chosen: object, what: str
) -> dict[str, SparsePrompt]:
    """The prompt layers of ``model``, once ``chosen`` is a mapping of some of their names."""
    layers = require_prompt_layers(where, model)
    if not isinstance(chosen, Mapping):
        raise InputTypeError(
            f"{where}: expected a mapping of prompt layer names to {what}, got "
            f"{type(chosen).__name__}"
        )
    for name in chosen:
        if name not in layers:
            raise InputError(
                f"{where}: expected names of prompt layers of {type(model).__name__}, "
                f"among {sorted(layers)}, got {name!r}"
            )
    return layers


@contextlib.contextmanager
def _fixing(
    layers: Mapping[str, SparsePrompt], fixed: Mapping[str, Tensor | Routing | None]
) -> Iterator[None]:
    previous = {name: layers[name]._fixed for name in fixed}
    try:
        for name, value in fixed.items():
            layers[name]._fixed = value
        yield
    finally:
        for name, before in previous.items():
            layers[name]._fixed = before


def _unfixed(layers: Iterable[nn.Module]) -> contextlib.AbstractContextManager[None]:
    """The prompt layers among ``layers`` route by their routers in the block, whatever a
    fixing block set (for a look-only pass on another batch size)."""
    prompts = {str(i): m for i, m in enumerate(layers) if isinstance(m, SparsePrompt)}
    return _fixing(prompts, dict.fromkeys(prompts))


@contextlib.contextmanager
def record_routing(model: nn.Module) -> Iterator[RoutingLog]:
    """Collect the routing of every SparsePrompt inside ``model`` as it runs, in call order.

    No ``return_routing`` needs threading through the network's code: each
    [SparsePrompt][contrastive_prompts.SparsePrompt] of ``model`` appends its positive
    [Routing][contrastive_prompts.core.Routing] (with gradient, for a balance loss) to the yielded
    [RoutingLog][contrastive_prompts.core.RoutingLog], whose ``names`` say which layer made each
    one. Negative prompts are not logged. Blocks nest: every open block collects.

    Raises:
        InputError: ``model`` holds no SparsePrompt (the log would stay empty).

    Examples:
        >>> from contrastive_prompts import PromptStage
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             PromptStage(dim=8, prompt_size=4),
        ...                             PromptStage(dim=8, prompt_size=4))
        >>> with record_routing(model) as log:
        ...     out = model(torch.rand(2, 3, 16, 16))
        >>> log.names, log[0].indices.shape  # in call order
        (['1.prompt', '2.prompt'], torch.Size([2, 1]))
    """
    layers = require_prompt_layers("record_routing", model)
    log = RoutingLog()
    previous = {name: layer._routing_logs for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer._routing_logs = (*layer._routing_logs, (log, name))
        yield log
    finally:
        for name, layer in layers.items():
            layer._routing_logs = previous[name]


class PromptFusion(nn.Module):
    """PromptIR's prompt interaction block: ``proj(block(concat(x, prompt)))``.

    Args:
        dim: channels of the features ``x``.
        prompt_dim: channels of the prompt.
        out_dim: channels of the output; ``dim`` by default.
        num_heads: attention heads of the default block (must divide ``dim + prompt_dim``).
        ffn_expansion_factor: feed-forward width of the default block.
        block: any module mapping ``(B, dim + prompt_dim, H, W)`` to the same shape; one
            Restormer [TransformerBlock][contrastive_prompts.core.TransformerBlock] by default.
        device: where to allocate the parameters (of the default block too).
        dtype: dtype of the parameters (of the default block too).

    Shape:
        - x: ``(B, dim, H, W)`` with ``H, W >= 1``; prompt: ``(B, prompt_dim, H, W)``.
        - Output: ``(B, out_dim, H, W)``; ``B = 0`` gives an empty output.

    ``x`` and ``prompt`` follow the dtype rule of
    [SparsePrompt][contrastive_prompts.SparsePrompt]: the parameters' dtype, or the autocast
    dtype under `torch.autocast`.

    Raises:
        InputTypeError: a width that is not an integer, or (for the default block)
            ``ffn_expansion_factor`` that is not a number.
        InputError: a width below 1, or (for the default block) ``ffn_expansion_factor``
            that is not a finite number > 0.

    Examples:
        >>> fusion = PromptFusion(dim=16, prompt_dim=8, num_heads=2)
        >>> fusion(torch.rand(2, 16, 6, 6), torch.rand(2, 8, 6, 6)).shape
        torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self,
        *,
        dim: int,
        prompt_dim: int,
        out_dim: int | None = None,
        num_heads: int = 1,
        ffn_expansion_factor: float = 2.66,
        block: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_int_range("PromptFusion", "dim", dim, 1)
        check_int_range("PromptFusion", "prompt_dim", prompt_dim, 1)
        if out_dim is not None:
            check_int_range("PromptFusion", "out_dim", out_dim, 1)
        width = dim + prompt_dim
        if block is None:
            check_positive("PromptFusion", "ffn_expansion_factor", ffn_expansion_factor)
            check_parameters_fit(
                "PromptFusion",
                lambda: TransformerBlock(
                    width,
                    num_heads=num_heads,
                    ffn_expansion_factor=ffn_expansion_factor,
                    device="meta",
                ),
                device,
                dtype,
                f"dim={dim}, prompt_dim={prompt_dim}, ffn_expansion_factor={ffn_expansion_factor}",
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.dim, self.prompt_dim = dim, prompt_dim
        self.out_dim = dim if out_dim is None else out_dim
        self.block = (
            block
            if block is not None
            else TransformerBlock(
                width, num_heads=num_heads, ffn_expansion_factor=ffn_expansion_factor, **factory
            )
        )
        self.proj = nn.Conv2d(width, self.out_dim, 1, bias=False, **factory)

    def reset_parameters(self) -> None:
        """The block's start (each part's, for a block of your own) and the projection at
        PyTorch's default."""
        reset_submodules(self)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, prompt_dim={self.prompt_dim}, out_dim={self.out_dim}"

    def forward(self, x: Tensor, prompt: Tensor) -> Tensor:
        """Fuse the prompt into the features: ``proj(block(concat(x, prompt)))``.

        Args:
            x: ``(B, dim, H, W)`` features.
            prompt: ``(B, prompt_dim, H, W)``, e.g. the output of a
                [SparsePrompt][contrastive_prompts.SparsePrompt] at the size of ``x``.

        Returns:
            ``(B, out_dim, H, W)``.
        """
        check_shape("PromptFusion", "x", x, ("B", self.dim, "H", "W"))
        check_spatial("PromptFusion", "x", x)
        b, _, h, w = x.shape
        check_shape("PromptFusion", "prompt", prompt, (b, self.prompt_dim, h, w))
        check_dtype_like("PromptFusion", "x", x, self.proj.weight)
        check_dtype_like("PromptFusion", "prompt", prompt, self.proj.weight)
        fused: Tensor = self.proj(self.block(torch.cat([x, prompt], dim=1)))
        return fused
