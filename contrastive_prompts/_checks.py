"""Argument checks shared by every public entry point.

Each check raises [InputError][contrastive_prompts.InputError], a `ValueError`, whose message
names the caller, the argument, what was expected and what came. Only shapes, dtypes and option
values are checked, never tensor values, so the checks stay compatible with ``torch.compile``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["InputError", "InputTypeError"]


class InputError(ValueError):
    """An argument has the wrong shape, type or value.

    The message names the argument, what was expected and what came, for example
    ``SparsePrompt: expected x of shape (B, 48, H, W), got (2, 32, 16, 16)``.

    Examples:
        >>> from contrastive_prompts import SparsePrompt
        >>> layer = SparsePrompt(dim=48, prompt_dim=8, prompt_size=4)
        >>> try:
        ...     layer(torch.rand(2, 32, 16, 16))
        ... except InputError as error:
        ...     print(error)
        SparsePrompt: expected x of shape (B, 48, H, W), got (2, 32, 16, 16)
    """


class InputTypeError(InputError, TypeError):
    """An argument is not of the expected type: a list where a tensor is expected, say.

    Both an [InputError][contrastive_prompts.InputError] (so ``except InputError`` and
    ``except ValueError`` catch it, as before) and a `TypeError`, as Python's own type
    errors are.

    Examples:
        >>> from contrastive_prompts import SparsePrompt
        >>> layer = SparsePrompt(dim=4, prompt_dim=2, prompt_size=2)
        >>> try:
        ...     layer([[0.5]])
        ... except TypeError as error:
        ...     print(error)
        SparsePrompt: expected x to be a torch.Tensor, got list
    """


def _fmt(shape: Sequence[object]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_shape(where: str, name: str, x: object, expected: Sequence[int | str]) -> None:
    """Check that ``x`` is a tensor whose shape matches ``expected``.

    Entries of ``expected`` that are ints must match exactly; strings are free dimensions and only
    name the axis in the message.
    """
    if not isinstance(x, Tensor):
        raise InputTypeError(
            f"{where}: expected {name} to be a torch.Tensor, got {type(x).__name__}"
        )
    if x.ndim != len(expected) or any(
        isinstance(e, int) and s != e for s, e in zip(x.shape, expected, strict=False)
    ):
        raise InputError(
            f"{where}: expected {name} of shape {_fmt(expected)}, got {_fmt(tuple(x.shape))}"
        )


def check_shape_any(
    where: str, name: str, x: object, *expected: Sequence[int | str], hint: str = ""
) -> None:
    """Check that ``x`` is a tensor whose shape matches one of ``expected``.

    Each entry of ``expected`` is read as in ``check_shape``; the message lists them all, then
    ``hint`` (what to do) if given.
    """
    if not isinstance(x, Tensor):
        raise InputTypeError(
            f"{where}: expected {name} to be a torch.Tensor, got {type(x).__name__}"
        )
    for shape in expected:
        if x.ndim == len(shape) and all(
            not isinstance(e, int) or s == e for s, e in zip(x.shape, shape, strict=True)
        ):
            return
    options = " or ".join(_fmt(shape) for shape in expected)
    hint = f"; {hint}" if hint else ""
    raise InputError(
        f"{where}: expected {name} of shape {options}, got {_fmt(tuple(x.shape))}{hint}"
    )


def check_channels(where: str, name: str, x: Tensor) -> None:
    """Check that ``(B, C, H, W)`` images ``x`` have at least one channel."""
    if x.shape[1] < 1:
        raise InputError(
            f"{where}: expected {name} with at least one channel (C >= 1), "
            f"got {_fmt(tuple(x.shape))}"
        )


def check_same_shape(where: str, name: str, x: Tensor, other_name: str, other: Tensor) -> None:
    if x.shape != other.shape:
        raise InputError(
            f"{where}: expected {name} of the same shape as {other_name} "
            f"{_fmt(tuple(other.shape))}, got {_fmt(tuple(x.shape))}"
        )


def check_floating(where: str, name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise InputError(f"{where}: expected {name} to be a floating-point tensor, got {x.dtype}")


def check_dtype_like(where: str, name: str, x: Tensor, parameter: Tensor) -> None:
    """Check that ``x`` can meet ``parameter`` in a matrix product or a convolution.

    ``x`` must be floating and have the parameter's dtype, except under `torch.autocast`
    for ``x``'s device, where the autocast dtype is accepted too (autocast casts the operands of
    products and convolutions itself). Other dtypes are refused under autocast as well: autocast
    never casts float64, and it cannot mix float16 with bfloat16. The message gives the fix.
    """
    expected = parameter.dtype
    if not x.is_floating_point():
        if x.dtype == torch.uint8:
            fix = f"scale 8-bit images to [0, 1] with {name}.to({expected}) / 255"
        else:
            fix = f"convert with {name}.to({expected})"
        raise InputError(
            f"{where}: expected {name} to be a floating-point tensor of dtype {expected} "
            f"(the parameters' dtype), got {x.dtype}; {fix}"
        )
    if x.dtype == expected:
        return
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        autocast_dtype = torch.get_autocast_dtype(device_type)
        if x.dtype == autocast_dtype:
            return
        raise InputError(
            f"{where}: expected {name} of dtype {expected} (the parameters' dtype) or "
            f"{autocast_dtype} (the autocast dtype), got {x.dtype}; convert with "
            f"{name}.to({expected})"
        )
    raise InputError(
        f"{where}: expected {name} of dtype {expected} (the parameters' dtype), got {x.dtype}; "
        f"convert the input with {name}.to({expected}), the model with model.to({x.dtype}), "
        f"or run under torch.autocast"
    )


def check_spatial(where: str, name: str, x: Tensor) -> None:
    """Check that the last two dimensions of ``x`` (``H, W``) are at least 1."""
    h, w = x.shape[-2:]
    if h < 1 or w < 1:
        raise InputError(f"{where}: expected {name} with H, W >= 1, got H={h}, W={w}")


def check_choice(where: str, name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise InputError(f"{where}: expected {name} to be one of {options}, got {value!r}")


def check_int_range(
    where: str, name: str, value: object, low: int, high: int | None = None
) -> None:
    """Check ``low <= value <= high`` (``high=None`` means no upper bound)."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    ):
        return
    bound = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    error = InputError if isinstance(value, int) and not isinstance(value, bool) else InputTypeError
    raise error(f"{where}: expected {name} to be {bound}, got {value!r}")


def check_positive(where: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    """Check that ``value`` is a finite number ``> 0`` (``>= 0`` with ``allow_zero``).

    ``inf`` and ``nan`` are refused: no option of the library means anything when infinite.
    """
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InputError(
                f"{where}: expected {name} to be a finite number {bound}, got {value!r}"
            )
        if value > 0 or (allow_zero and value == 0):
            return
        raise InputError(f"{where}: expected {name} to be a number {bound}, got {value!r}")
    raise InputTypeError(f"{where}: expected {name} to be a number {bound}, got {value!r}")


def check_bool(where: str, name: str, value: object) -> None:
    """Check that ``value`` is a real ``bool``: ``"false"``, ``0`` or ``None`` are refused.

    A string flag would otherwise be taken as true whatever it says.
    """
    if not isinstance(value, bool):
        raise InputTypeError(
            f"{where}: expected {name} to be a bool (True or False), "
            f"got {type(value).__name__} {value!r}"
        )


def check_batch(where: str, name: str, x: Tensor) -> None:
    """Check that the batch ``x`` (batch axis first) holds at least one sample.

    For losses and objectives, whose mean over an empty batch means nothing.
    """
    if x.shape[0] < 1:
        raise InputError(
            f"{where}: expected a batch of at least one image, got 0 "
            f"({name} of shape {_fmt(tuple(x.shape))})"
        )


def check_weights(where: str, name: str, value: object) -> tuple[float, ...]:
    """``value`` as a tuple of floats, checked: finite numbers ``>= 0`` with a positive sum.

    Any iterable of numbers (0-d tensors included) is taken; a string, a bool or a
    non-number is refused.
    """
    expected = f"{where}: expected {name} to be finite numbers >= 0 with a positive sum"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InputTypeError(f"{expected}, got {type(value).__name__} {value!r}")
    weights = []
    for weight in value:
        if isinstance(weight, (str, bytes, bool)):
            raise InputTypeError(f"{expected}, got an entry {weight!r}")
        try:
            weights.append(float(weight))
        except (TypeError, ValueError, RuntimeError) as error:
            raise InputTypeError(f"{expected}, got an entry {weight!r}") from error
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise InputError(f"{expected}, got {tuple(weights)}")
    return tuple(weights)


REDUCTIONS = ("none", "mean", "sum")
"""How a per-sample loss or metric is reduced over the batch, everywhere in the library."""


def reduce_batch(values: Tensor, reduction: str) -> Tensor:
    """``values`` (per sample) reduced as ``reduction`` (one of REDUCTIONS, already checked)."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def memory_of(device: torch.device) -> int | None:
    """The bytes of memory ``device`` has in all (the machine's for the CPU); ``None``: unknown."""
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    return None


def check_parameters_fit(
    where: str,
    build: Callable[[], nn.Module],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    sizes: str,
) -> None:
    """Refuse, before allocating, a module whose parameters alone exceed its device's memory.

    ``build`` makes the module on the meta device (nothing allocated) to count them; ``sizes``
    names the options that set its size, for the message.
    """
    target = torch.device(device) if device is not None else torch.get_default_device()
    if target.type == "meta":
        return
    memory = memory_of(target)
    if memory is None:
        return
    module = build()
    count = sum(t.numel() for t in (*module.parameters(), *module.buffers()))
    needed = count * (dtype or torch.get_default_dtype()).itemsize
    if needed > memory:
        raise InputError(
            f"{where}: expected a module that fits in the memory of {target} "
            f"({memory / 1e9:.1f} GB), got {count:,} parameters ({needed / 1e9:.1f} GB) from "
            f"{sizes}"
        )
