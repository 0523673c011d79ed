"""Argument checks shared by every public entry point.

Each check raises :class:`InputError`, a :class:`ValueError`, whose message names the caller, the
argument, what was expected and what came. Only shapes, dtypes and option values are checked, never
tensor values, so the checks stay compatible with ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor

__all__ = ["InputError"]


class InputError(ValueError):
    """An argument has the wrong shape, type or value.

    The message names the argument, what was expected and what came, for example
    ``SparsePrompt: expected x of shape (B, 48, H, W), got (2, 32, 16, 16)``.

    Example:
        >>> from contrastive_prompts import SparsePrompt
        >>> layer = SparsePrompt(dim=48, prompt_dim=8, prompt_size=4)
        >>> try:
        ...     layer(torch.rand(2, 32, 16, 16))
        ... except InputError as error:
        ...     print(error)
        SparsePrompt: expected x of shape (B, 48, H, W), got (2, 32, 16, 16)
    """


def _fmt(shape: Sequence[object]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_shape(where: str, name: str, x: object, expected: Sequence[int | str]) -> None:
    """Check that ``x`` is a tensor whose shape matches ``expected``.

    Entries of ``expected`` that are ints must match exactly; strings are free dimensions and only
    name the axis in the message.
    """
    if not isinstance(x, Tensor):
        raise InputError(f"{where}: expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != len(expected) or any(
        isinstance(e, int) and s != e for s, e in zip(x.shape, expected, strict=False)
    ):
        raise InputError(
            f"{where}: expected {name} of shape {_fmt(expected)}, got {_fmt(tuple(x.shape))}"
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
    raise InputError(f"{where}: expected {name} to be {bound}, got {value!r}")


def check_positive(where: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value > 0 or (allow_zero and value == 0))
    ):
        return
    what = "a number >= 0" if allow_zero else "a number > 0"
    raise InputError(f"{where}: expected {name} to be {what}, got {value!r}")
