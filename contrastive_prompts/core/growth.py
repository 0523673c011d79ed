"""Teaching a trained network a new degradation: more experts, and training them alone.

A bank of experts can grow. [add_experts][contrastive_prompts.core.add_experts] gives every
[SparsePrompt][contrastive_prompts.SparsePrompt] of a network new experts, keeping every weight
and key it had; [only_new_experts][contrastive_prompts.core.only_new_experts] then lets the
gradient reach the new experts and the router rows that choose them, nothing else, so the
network learns a degradation it never saw while what it knew stays where it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import InputError, InputTypeError, check_int_range
from .prompt import SparsePrompt, _named_layers, require_prompt_layers

__all__ = ["NewExperts", "add_experts", "only_new_experts"]


def add_experts(model: nn.Module, count: int = 1) -> dict[str, range]:
    """Give every SparsePrompt inside ``model`` ``count`` new experts, in place.

    Each layer grows as [SparsePrompt.add_experts][contrastive_prompts.SparsePrompt.add_experts]
    says: its bank and its router gain ``count`` rows, every existing value and parameter name
    stays, and a new expert starts as the mean of its bank with a logit that is the mean of the
    others'. Grow the model before building its optimiser, an EMA
    (``AveragedModel``) or a ``DistributedDataParallel`` wrapper: the grown parameters are new
    tensors. For the reference model call its own ``add_experts``, which also updates its
    configuration (``num_prompts``), so that its checkpoints load.

    Args:
        model: a network holding SparsePrompt layers (a layer itself, the reference model, or
            a network given stages by [add_prompts][contrastive_prompts.add_prompts]).
        count: experts to add to every layer, an integer >= 1.

    Returns:
        ``{layer name: indices of its new experts}``, names as in
        [prompt_layers][contrastive_prompts.core.prompt_layers]: what
        [only_new_experts][contrastive_prompts.core.only_new_experts] takes.

    Raises:
        InputTypeError: ``count`` is not an integer.
        InputError: ``model`` holds no SparsePrompt, or ``count < 1``; nothing changed.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1),
        ...                           SparsePrompt(dim=8, prompt_dim=4, prompt_size=2))
        >>> add_experts(net, 1)
        {'1': range(5, 6)}
    """
    layers = require_prompt_layers("add_experts", model)
    check_int_range("add_experts", "count", count, 1)
    return {name: layer.add_experts(count) for name, layer in layers.items()}


def _row_mask(rows: int, keep: Sequence[int], like: Tensor) -> Tensor:
    """``(rows, 1, ..., 1)`` ones at ``keep``, zeros elsewhere, broadcasting over ``like``."""
    mask = torch.zeros(rows, dtype=like.dtype, device=like.device)
    mask[list(keep)] = 1
    return mask.view(rows, *(1,) * (like.ndim - 1))


class NewExperts:
    """What [only_new_experts][contrastive_prompts.core.only_new_experts] froze, and its undoing.

    Attributes:
        param_groups: the optimiser's parameter groups: the bank and router of each grown layer
            (their old rows get no gradient), with ``weight_decay=0`` (AdamW's decoupled decay
            shrinks every element of a parameter, the old rows included, gradient or not).
        trained: how many numbers training can change: the new rows, not the whole tensors.

    ``remove()`` (or leaving a ``with`` block) gives every parameter back its
    ``requires_grad`` and takes the gradient masks off.
    """

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        trained: int,
        frozen: list[tuple[nn.Parameter, bool]],
        handles: list[Any],
    ) -> None:
        self.param_groups, self.trained = param_groups, trained
        self._frozen, self._handles = frozen, handles

    def remove(self) -> None:
        """Restore every parameter's ``requires_grad`` and remove the gradient masks."""
        for handle in self._handles:
            handle.remove()
        for parameter, requires_grad in self._frozen:
            parameter.requires_grad_(requires_grad)
        self._handles, self._frozen = [], []

    def __enter__(self) -> NewExperts:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()


def only_new_experts(model: nn.Module, experts: Mapping[str, Sequence[int]]) -> NewExperts:
    """Freeze ``model`` but the given experts of its prompt layers and their router rows.

    Every parameter of ``model`` stops requiring gradient except, in each named
    [SparsePrompt][contrastive_prompts.SparsePrompt], the bank (``prompts``) and the router;
    there a gradient hook zeroes every row but the given experts', so a backward pass reaches
    the new experts and the router rows that choose them, nothing else. Give the returned
    ``param_groups`` to the optimiser. An old input's output can still change through the
    router's softmax: the new experts' logits take a share of it from the input's own expert,
    which training on the old degradations beside the new one keeps small.
    Batch-norm statistics are buffers, not parameters: put such layers in eval mode for a
    network that has them.

    Args:
        model: a network holding SparsePrompt layers.
        experts: ``{layer name: experts to train}``, as
            [add_experts][contrastive_prompts.core.add_experts] returns it.

    Returns:
        A [NewExperts][contrastive_prompts.core.NewExperts] handle: ``param_groups`` for the
        optimiser, ``trained`` (numbers it can change), ``remove()`` to undo (or use it in a
        ``with`` block).

    Raises:
        InputTypeError: ``experts`` is not a mapping of names to sequences of integers.
        InputError: a name that is not a prompt layer of ``model``, an expert outside
            ``[0, num_prompts)``, or no expert at all.

    Examples:
        >>> layer = SparsePrompt(dim=8, prompt_dim=4, prompt_size=2)
        >>> new = add_experts(layer, 1)
        >>> with only_new_experts(layer, new) as frozen:
        ...     layer(torch.rand(2, 8, 4, 4)).sum().backward()
        ...     bool(layer.prompts.grad[:5].eq(0).all()), layer.conv.weight.grad is None
        (True, True)
    """
    layers = _named_layers("only_new_experts", model, experts, "experts")
    chosen: dict[str, list[int]] = {}
    for name, rows in experts.items():
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise InputTypeError(
                f"only_new_experts: expected a sequence of experts for {name!r} (a range, say), "
                f"got {type(rows).__name__}"
            )
        count = layers[name].num_prompts
        if any(isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < count for r in rows):
            raise InputError(
                f"only_new_experts: expected experts in [0, {count - 1}] for {name!r}, "
                f"got {list(rows)}"
            )
        if rows:
            chosen[name] = sorted(set(rows))
    if not chosen:
        raise InputError(f"only_new_experts: expected at least one expert to train, got {experts}")
    open_rows: list[tuple[Tensor, list[int]]] = []
    for name, rows in chosen.items():
        layer: SparsePrompt = layers[name]
        open_rows += [(layer.prompts, rows), (layer.router.weight, rows)]
        if layer.router.bias is not None:
            open_rows.append((layer.router.bias, rows))
    trainable = {id(p) for p, _ in open_rows}
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    handles = []
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    for tensor, rows in open_rows:
        mask = _row_mask(tensor.shape[0], rows, tensor)
        handles.append(tensor.register_hook(lambda grad, mask=mask: grad * mask))
    groups = [{"params": [t for t, _ in open_rows], "weight_decay": 0.0}]
    trained = sum(t[0].numel() * len(rows) for t, rows in open_rows)  # rows times a row's size
    return NewExperts(groups, trained, frozen, handles)
