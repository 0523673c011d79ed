"""Prompting an existing network without editing its code or moving its weights.

[add_prompts][contrastive_prompts.add_prompts] gives named submodules of any network a
[PromptStage][contrastive_prompts.PromptStage]: the submodule's output ``h`` becomes
``h + fusion(h, prompt(h))``, with a [SparsePrompt][contrastive_prompts.SparsePrompt] and a
[PromptFusion][contrastive_prompts.core.PromptFusion]. The stage is added *inside* the named
submodule, as its child ``prompt_stage``, so every parameter and buffer the network had keeps its
name: a checkpoint of the plain network loads into the prompted one, and
[remove_prompts][contrastive_prompts.remove_prompts] gives the plain network back.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from .._checks import (
    InputError,
    InputTypeError,
    check_int_range,
    check_shape,
)
from ._state import quiet_run, reset_submodules
from .prompt import PromptFusion, SparsePrompt

__all__ = ["STAGE_NAME", "PromptStage", "add_prompts", "remove_prompts"]

_log = logging.getLogger("contrastive_prompts")

STAGE_NAME = "prompt_stage"
"""The child name under which [add_prompts][contrastive_prompts.add_prompts] adds each stage."""

_PROMPT_OPTIONS = ("prompt_dim", "prompt_size", "num_prompts", "top_k", "renormalize")
_FUSION_OPTIONS = ("num_heads", "ffn_expansion_factor")


class PromptStage(nn.Module):
    """A residual prompt: ``h + fusion(h, prompt(h))`` for features ``h``.

    The fusion's output projection starts at zero, so a new stage is the identity: prompting a
    trained network does not disturb it before training starts, and the prompt path grows from
    there. [add_prompts][contrastive_prompts.add_prompts] puts one after a submodule of a
    network; it can also be called in a ``forward`` of one's own.

    Args:
        dim: channels of the features.
        prompt_dim: channels of the prompt (``dim // 2`` by default, at least 1).
        prompt_size: spatial size of each expert prompt.
        num_prompts: experts in the bank.
        top_k: experts per sample (1 for CPL); ``num_prompts`` gives PromptIR's dense prompt,
            which leaves no expert for CPL's negatives (train it with L1 alone).
        renormalize: rescale the kept routing weights to sum to 1 (a bool).
        num_heads: attention heads of the fusion block (must divide ``dim + prompt_dim``).
        ffn_expansion_factor: feed-forward width of the fusion block, a finite number > 0.
        device: where to allocate the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input ``h``: ``(B, dim, H, W)``; output: the same.

    Raises:
        InputTypeError: ``dim``, ``prompt_dim``, ``prompt_size``, ``num_prompts``, ``top_k`` or
            ``num_heads`` not an int, ``ffn_expansion_factor`` not a number, or
            ``renormalize`` not a bool (a string such as ``"no"`` would read as true).
        InputError: a size below 1, ``top_k`` outside ``[1, num_prompts]``, ``num_heads`` that
            does not divide ``dim + prompt_dim``, or ``ffn_expansion_factor <= 0``. The part
            that takes the option says so: ``SparsePrompt`` for the bank and its routing,
            ``PromptFusion`` (and its block) for the fusion.

    Examples:
        >>> stage = PromptStage(dim=8, prompt_size=4)
        >>> h = torch.rand(2, 8, 10, 10)
        >>> torch.equal(stage(h), h)  # the identity until trained
        True
    """

    def __init__(
        self,
        *,
        dim: int,
        prompt_dim: int | None = None,
        prompt_size: int = 16,
        num_prompts: int = 5,
        top_k: int = 1,
        renormalize: bool = False,
        num_heads: int = 1,
        ffn_expansion_factor: float = 2.66,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        # each part checks the options it takes (and that its parameters fit); the stage only
        # derives the default prompt width, from a dim it checks for that
        if prompt_dim is None:
            check_int_range("PromptStage", "dim", dim, 1)
            prompt_dim = max(1, dim // 2)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.prompt = SparsePrompt(
            dim=dim,
            prompt_dim=prompt_dim,
            prompt_size=prompt_size,
            num_prompts=num_prompts,
            top_k=top_k,
            renormalize=renormalize,
            **factory,
        )
        self.fusion = PromptFusion(
            dim=dim,
            prompt_dim=prompt_dim,
            num_heads=num_heads,
            ffn_expansion_factor=ffn_expansion_factor,
            **factory,
        )
        nn.init.zeros_(self.fusion.proj.weight)
        # set by add_prompts on the stages it adds, the only ones remove_prompts takes out (a
        # stage a network holds of its own, under any name, is the network's)
        self._added = False
        # set while the forward hook of add_prompts calls the stage: any other call of a stage
        # added by a hook means the host module called its children in turn (see _after_host)
        self._hooked = False
        self._in_hook = False

    def reset_parameters(self) -> None:
        """The prompt's and the fusion's start, then the fusion's projection at zero: the
        stage is the identity again."""
        reset_submodules(self)
        nn.init.zeros_(self.fusion.proj.weight)

    def extra_repr(self) -> str:
        return f"dim={self.prompt.dim}, prompt_dim={self.prompt.prompt_dim}"

    def add_experts(self, count: int = 1) -> range:
        """Grow the stage's prompt bank by ``count`` experts, keeping every weight and key.

        See [SparsePrompt.add_experts][contrastive_prompts.SparsePrompt.add_experts]; the fusion
        is shared by every expert and stays as it is.

        Returns:
            The indices of the new experts.

        Examples:
            >>> stage = PromptStage(dim=8, prompt_size=4)
            >>> stage.add_experts(), stage.prompt.num_prompts
            (range(5, 6), 6)
        """
        return self.prompt.add_experts(count)

    def forward(self, h: Tensor) -> Tensor:
        """``h + fusion(h, prompt(h))``.

        Args:
            h: ``(B, dim, H, W)`` features.

        Returns:
            ``(B, dim, H, W)``.
        """
        if self._hooked and not self._in_hook:
            raise InputError(
                "PromptStage: expected to be called by add_prompts' hook after its host module, "
                "got a call from the host's forward (it calls its children in turn): prompt the "
                "host's parent or one of its children instead"
            )
        check_shape(
            "PromptStage", "the prompted module's output", h, ("B", self.prompt.dim, "H", "W")
        )
        fused: Tensor = h + self.fusion(h, self.prompt(h))
        return fused


def _after_host(module: nn.Module, args: Any, output: Any) -> Tensor:
    """The forward hook of a prompted module: its output through its ``prompt_stage``.

    A plain function that finds the stage on the module it is given, so copies of the network
    (``copy.deepcopy``, an EMA, pickling) run their own stages.
    """
    stage = cast(PromptStage, module.get_submodule(STAGE_NAME))  # only add_prompts hooks it
    if not isinstance(output, Tensor):
        raise InputError(
            f"add_prompts: expected the prompted {type(module).__name__} to return a tensor, "
            f"got {type(output).__name__}"
        )
    stage._in_hook = True
    try:
        out: Tensor = stage(output)
    finally:
        stage._in_hook = False
    return out


def _remove_hook(module: nn.Module) -> None:
    """Remove the hook of add_prompts from ``module``, as its RemovableHandle would."""
    # torch's private hook dictionaries, because no public mechanism does this: a hook is removed
    # through the handle that registered it, and a copy of the network (deepcopy, an EMA,
    # pickling) holds the hook with no handle at all
    for key in [key for key, hook in module._forward_hooks.items() if hook is _after_host]:
        for hooks in (
            module._forward_hooks,
            module._forward_hooks_with_kwargs,
            module._forward_hooks_always_called,
        ):
            hooks.pop(key, None)


def _unknown_name(where: str, model: nn.Module, name: object, known: list[str]) -> InputError:
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return InputError(
        f"{where}: expected names of submodules of {type(model).__name__} as "
        f"model.named_modules() gives them, got {name!r}{hint}"
    )


def _output_channels(model: nn.Module, names: list[str], example_input: Any) -> dict[str, int]:
    """The channels of each named submodule's first output, from one run of ``model``."""
    found: dict[str, Any] = {}
    handles = []
    for name in names:

        def note(module: nn.Module, args: Any, output: Any, name: str = name) -> None:
            found.setdefault(name, output)

        handles.append(model.get_submodule(name).register_forward_hook(note))
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        quiet_run(model, lambda: model(*inputs))
    finally:
        for handle in handles:
            handle.remove()
    channels = {}
    for name in names:
        if name not in found:
            raise InputError(f"add_prompts: expected {name!r} to run on example_input, got no call")
        output = found[name]
        if not isinstance(output, Tensor) or output.ndim != 4:
            shown = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise InputError(
                f"add_prompts: expected {name!r} to return a (B, C, H, W) tensor, got {shown}"
            )
        channels[name] = output.shape[1]
    return channels


def add_prompts(
    model: nn.Module,
    stages: Mapping[str, Mapping[str, Any]],
    *,
    example_input: Any = None,
) -> nn.Module:
    """Give the named submodules of ``model`` a prompt stage each, in place, keeping every key.

    Each named submodule gets a [PromptStage][contrastive_prompts.PromptStage] as its child
    ``prompt_stage``, and its output ``h`` becomes ``h + fusion(h, prompt(h))``: an
    ``nn.Sequential`` runs the stage as its last layer; any other module runs it from a forward
    hook on its output. Nothing the network had moves: every parameter and buffer keeps its name
    (a plain network's state dict loads with only the ``prompt_stage`` keys missing), the named
    module stays the same object at the same place (so every name it is reachable by, and every
    call of it, is prompted), and its own hooks stay (they see its output before the prompt,
    since the stage's hook is registered after them). New stages start as the identity, so a
    trained network computes what it did until training moves them.
    [remove_prompts][contrastive_prompts.remove_prompts] takes the stages out again.

    The model then works with everything in the library:
    [CPLObjective][contrastive_prompts.CPLObjective],
    [negative_prompts][contrastive_prompts.negative_prompts],
    [record_routing][contrastive_prompts.record_routing] and any training loop. Put the
    stages late in the network (decoder side): the negatives reuse everything computed before
    the first prompt layer. Load pretrained weights before or after this call, and build the
    optimiser, an EMA (``AveragedModel``) or a ``DistributedDataParallel`` wrapper after it: it
    adds parameters.

    Args:
        model: any network.
        stages: ``{qualified submodule name: options}``, names as in ``model.named_modules()``
            (``"decoder.1"``). Options are [PromptStage][contrastive_prompts.PromptStage]'s:
            ``dim`` (the submodule's output channels; found from ``example_input`` when that
            is given), ``prompt_dim``, ``prompt_size``, ``num_prompts``, ``top_k``,
            ``renormalize``, ``num_heads``, ``ffn_expansion_factor``.
        example_input: an input of ``model`` (a tensor, or a tuple of positional arguments):
            one run without gradient finds each submodule's output channels, and checks a
            given ``dim``. The run leaves buffers (batch-norm statistics), the random state and
            the modules' modes as they were.

    Returns:
        ``model`` itself, changed in place; its new parameters are on the device and in the
        dtype of the named submodule's parameters (or of the model's, for a submodule without
        any).

    Raises:
        InputTypeError: ``model`` is not an ``nn.Module``, a stage's options are not a mapping,
            or an option has the wrong type (a ``dim`` given as a string, say: see
            [PromptStage][contrastive_prompts.PromptStage]).
        InputError: a scripted or traced model, or one wrapped (``AveragedModel``,
            ``DistributedDataParallel``, ``DataParallel``); a name that is not a submodule (with
            the closest names), a part of a prompt layer, the model itself,
            a submodule named twice, inside another named one or already prompted, a container
            that is not called (``ModuleList``, ``ModuleDict``), a missing ``dim`` without
            ``example_input``, a ``dim`` that the example's output contradicts, or an unknown
            option.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.GELU(),
        ...                           torch.nn.Conv2d(16, 3, 3, padding=1))
        >>> keys = set(net.state_dict())
        >>> net = add_prompts(net, {"1": {"prompt_size": 8}}, example_input=torch.rand(1, 3, 8, 8))
        >>> keys <= set(net.state_dict()), net(torch.rand(2, 3, 12, 12)).shape
        (True, torch.Size([2, 3, 12, 12]))
        >>> sorted({k.split(".")[1] for k in set(net.state_dict()) - keys})
        ['prompt_stage']
    """
    where = "add_prompts"
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"{where}: expected model to be an nn.Module, got {type(model).__name__}"
        )
    if isinstance(model, torch.jit.ScriptModule):
        raise InputError(
            f"{where}: expected an eager nn.Module, got a {type(model).__name__} (scripted or "
            "traced), whose modules cannot be changed: prompt the eager network, then script, "
            "trace or export it"
        )
    if isinstance(model, (AveragedModel, nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise InputError(
            f"{where}: expected the network itself, got it wrapped in {type(model).__name__}, "
            "which keeps copies or views of its parameters as they were: prompt the network "
            "first, then wrap it (an EMA taken before add_prompts cannot follow it either)"
        )
    if not isinstance(stages, Mapping) or not stages:
        raise InputError(f"{where}: expected a non-empty mapping of submodule names to options")
    known = dict(model.named_modules(remove_duplicate=False))
    names = [k for k in known if k]
    allowed = {"dim", *_PROMPT_OPTIONS, *_FUSION_OPTIONS}
    requested = list(stages)
    hosts: dict[nn.Module, str] = {}
    for name in requested:
        if not isinstance(name, str) or name not in known or name == "":
            raise _unknown_name(where, model, name, names)
        host = known[name]
        if host in hosts:
            raise InputError(
                f"{where}: expected each submodule once, got {name!r} and {hosts[host]!r}, "
                "two names of one module (a stage on a module prompts every call of it)"
            )
        hosts[host] = name
        nested = [other for other in requested if name.startswith(f"{other}.")]
        if nested:
            raise InputError(f"{where}: expected separate submodules, got {name!r} inside {nested}")
        parts = name.split(".")
        inside = [
            ".".join(parts[:i])
            for i in range(1, len(parts))
            if isinstance(known.get(".".join(parts[:i])), (SparsePrompt, PromptStage))
        ]
        if inside:
            raise InputError(
                f"{where}: expected a submodule of the network, got {name!r}, part of the prompt "
                f"layer {inside[-1]!r}"
            )
        if isinstance(host, (SparsePrompt, PromptStage)) or STAGE_NAME in host._modules:
            raise InputError(
                f"{where}: expected a submodule without a prompt stage, got {name!r}, which is "
                "or has one already (remove_prompts takes stages out)"
            )
        if isinstance(host, (nn.ModuleList, nn.ModuleDict)):
            raise InputError(
                f"{where}: expected a submodule that is called, got {name!r}, a "
                f"{type(host).__name__}: name one of its entries"
            )
        options = stages[name]
        if not isinstance(options, Mapping):
            raise InputTypeError(
                f"{where}: expected a mapping of options for {name!r}, got {type(options).__name__}"
            )
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputError(f"{where}: expected options among {sorted(allowed)}, got {unknown}")
        if "dim" not in options and example_input is None:
            raise InputError(
                f"{where}: expected options with 'dim' (the output channels of {name!r}) or "
                f"example_input=, got {dict(options)!r}"
            )
    found = _output_channels(model, requested, example_input) if example_input is not None else {}
    built = {}
    for name in requested:
        options = dict(stages[name])
        if name in found:
            given = options.setdefault("dim", found[name])
            # a dim of the wrong type is PromptStage's to refuse, by its type
            if isinstance(given, int) and not isinstance(given, bool) and given != found[name]:
                raise InputError(
                    f"{where}: expected dim={found[name]} for {name!r} (its output on "
                    f"example_input has {found[name]} channels), got dim={options['dim']}"
                )
        reference = next(known[name].parameters(), next(model.parameters(), None))
        if reference is not None:
            options.setdefault("device", reference.device)
            options.setdefault("dtype", reference.dtype)
        built[name] = PromptStage(**options)
    for name, stage in built.items():  # the model changes only once every stage is built
        host = known[name]
        host.add_module(STAGE_NAME, stage)
        stage._added = True
        if not isinstance(host, nn.Sequential):
            stage._hooked = True
            host.register_forward_hook(_after_host)
    return model


def remove_prompts(model: nn.Module) -> nn.Module:
    """Take out every stage that [add_prompts][contrastive_prompts.add_prompts] added, in place.

    The network computes what it computed before ``add_prompts`` and its state dict has the keys
    it had: the way back to the plain network, for example to share fine-tuned weights without
    the prompts (``remove_prompts(copy.deepcopy(model)).state_dict()``). Only the stages
    ``add_prompts`` added are taken out (a copy, an EMA or a pickled model keeps that mark); a
    [PromptStage][contrastive_prompts.PromptStage] the network holds of its own, whatever its
    name, is part of the network and stays. The qualified names of the modules whose stages
    were removed are logged at ``INFO`` by the ``contrastive_prompts`` logger.

    Returns:
        ``model`` itself.

    Raises:
        InputTypeError: ``model`` is not an ``nn.Module``.
        InputError: ``model`` holds no stage that ``add_prompts`` added (it was never prompted,
            or its stages were removed already); nothing changed.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 3, 1))
        >>> keys = list(net.state_dict())
        >>> net = remove_prompts(add_prompts(net, {"0": {"dim": 8}}))
        >>> list(net.state_dict()) == keys
        True
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"remove_prompts: expected model to be an nn.Module, got {type(model).__name__}"
        )
    hosts = [
        (name, module)
        for name, module in model.named_modules()
        if getattr(module._modules.get(STAGE_NAME), "_added", False)
    ]
    if not hosts:
        own = [name for name, module in model.named_modules() if isinstance(module, PromptStage)]
        kept = f"; its own PromptStage modules stay: {own}" if own else ""
        raise InputError(
            f"remove_prompts: expected a model with stages added by add_prompts, got a "
            f"{type(model).__name__} without any (never prompted, or removed already){kept}"
        )
    for _, module in hosts:
        _remove_hook(module)
        del module._modules[STAGE_NAME]
    _log.info("remove_prompts: removed the prompt stages of %s", [name for name, _ in hosts])
    return model
