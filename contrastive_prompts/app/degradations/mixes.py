"""Several degradations at once: the mix that applies one per sample with labels, composites in
physical order, and the named mixes of the papers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive_prompts._checks import (
    InputError,
    InputTypeError,
    check_choice,
    check_int_range,
    check_shape,
)

from ._ranges import _check_image
from .blur import GaussianBlur, MotionBlur
from .camera import JpegCompression, LowLight
from .noise import GaussianNoise
from .weather import Haze, RainStreaks, Snow

__all__ = [
    "CDD11",
    "DEGRADATIONS",
    "MIXES",
    "PHYSICAL_ORDER",
    "Composite",
    "DegradationMix",
    "make_mix",
]


Degradation = Callable[..., Tensor]


class DegradationMix(nn.Module):
    """Apply one (or several) of a list of named degradations to each sample.

    Each degradation is called as ``fn(x, generator=generator)`` on the samples it was drawn for.
    The labels index `names`. Several tasks may share a degradation kind (the 3-task protocol
    has three noise levels of one kind); `kinds` names the kind of each task and
    [kind_labels][contrastive_prompts.app.degradations.DegradationMix.kind_labels] maps task labels
    to indices into `kind_names`.

    Args:
        degradations: ``{name: degradation}`` in label order, or a sequence of ``(name, fn)``.
        kinds: the degradation kind of each task (``{name: kind}`` or one kind per name);
            by default every task is its own kind.
        probs: the probability of each task (finite numbers >= 0 with a positive sum,
            normalised); uniform by default.
        max_per_sample: with 1, each sample gets exactly one degradation and the labels are
            ``(B,)`` integers. With ``k > 1`` each sample gets between 1 and ``k`` distinct
            degradations, applied in list order, and the labels are a ``(B, N)`` boolean
            multi-hot mask (``probs`` is then ignored).

    Attributes:
        names: the task names, in label order.
        kinds: the degradation kind of each task.
        kind_names: the distinct kinds, in order of first appearance.
        probs: the probability of each task, normalised to sum to 1.
        max_per_sample: the most degradations one sample gets.
        parts: the degradations each task applies: a
            [Composite][contrastive_prompts.app.degradations.Composite]'s parts, or the task's
            name alone.

    Shape:
        - x: $(B, C, H, W)$.
        - degraded: same as ``x``.
        - labels: $(B,)$ int64, or $(B, N)$ bool when ``max_per_sample > 1``.

    Examples:
        >>> mix = DegradationMix({"noise": GaussianNoise(25.0), "haze": Haze()})
        >>> y, labels = mix(torch.rand(4, 3, 16, 16), generator=torch.Generator().manual_seed(0))
        >>> y.shape, labels.shape
        (torch.Size([4, 3, 16, 16]), torch.Size([4]))
    """

    def __init__(
        self,
        degradations: Mapping[str, Degradation] | Sequence[tuple[str, Degradation]],
        *,
        kinds: Mapping[str, str] | Sequence[str] | None = None,
        probs: Sequence[float] | None = None,
        max_per_sample: int = 1,
    ) -> None:
        super().__init__()
        where = "DegradationMix"
        items = list(degradations.items() if isinstance(degradations, Mapping) else degradations)
        if not items:
            raise InputError(f"{where}: expected at least one degradation, got none")
        names = tuple(str(n) for n, _ in items)
        if len(set(names)) != len(names):
            raise InputError(f"{where}: expected distinct degradation names, got {names}")
        for name, fn in items:
            if not callable(fn):
                raise InputError(
                    f"{where}: expected degradation {name!r} to be callable, "
                    f"got {type(fn).__name__}"
                )
        self.names: tuple[str, ...] = names
        self.parts: tuple[tuple[str, ...], ...] = tuple(
            fn.parts if isinstance(fn, Composite) else (name,) for name, fn in items
        )
        self._fns = [fn for _, fn in items]
        # register modules so .to() and print() see them
        self.degradations = nn.ModuleList([fn for fn in self._fns if isinstance(fn, nn.Module)])
        if kinds is None:
            kinds_t = names
        elif isinstance(kinds, Mapping):
            missing = [n for n in names if n not in kinds]
            if missing:
                raise InputError(f"{where}: expected a kind for every name, missing {missing}")
            kinds_t = tuple(kinds[n] for n in names)
        else:
            kinds_t = tuple(kinds)
            if len(kinds_t) != len(names):
                raise InputError(
                    f"{where}: expected {len(names)} kinds (one per name), got {len(kinds_t)}"
                )
        self.kinds: tuple[str, ...] = kinds_t
        self.kind_names: tuple[str, ...] = tuple(dict.fromkeys(kinds_t))
        self._task_to_kind = [self.kind_names.index(k) for k in kinds_t]
        if probs is None:
            probs = [1.0] * len(names)
        probs = list(probs)
        if len(probs) != len(names) or any(
            not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < math.inf
            for p in probs
        ):
            raise InputError(
                f"{where}: expected probs to be {len(names)} numbers, finite and >= 0, "
                f"got {probs!r}"
            )
        if sum(probs) <= 0:
            raise InputError(f"{where}: expected probs with a positive sum, got {probs!r}")
        self.probs: tuple[float, ...] = tuple(float(p) / sum(probs) for p in probs)
        check_int_range(where, "max_per_sample", max_per_sample, 1, len(names))
        self.max_per_sample = max_per_sample

    @property
    def num_degradations(self) -> int:
        """The number of tasks, ``len(names)``."""
        return len(self.names)

    def with_probs(self, probs: Sequence[float] | None = None) -> DegradationMix:
        """The same degradations, names and kinds, drawn with other probabilities.

        Args:
            probs: the probability of each task, as the constructor takes them (uniform by
                default).

        Examples:
            >>> make_mix("3task", probs=[0, 0, 0, 0, 1]).with_probs().probs
            (0.2, 0.2, 0.2, 0.2, 0.2)
        """
        return DegradationMix(
            list(zip(self.names, self._fns, strict=True)),
            kinds=self.kinds,
            probs=probs,
            max_per_sample=self.max_per_sample,
        )

    def kind_labels(self, labels: Tensor) -> Tensor:
        """Map ``(B,)`` task labels to ``(B,)`` indices into `kind_names`."""
        table = torch.tensor(self._task_to_kind, device=labels.device, dtype=torch.long)
        return table[labels.long()]

    def sample_labels(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw labels as [forward][contrastive_prompts.app.degradations.DegradationMix.forward]
        does.

        Returns:
            ``(B,)`` int64 labels, or a ``(B, N)`` bool mask when ``max_per_sample > 1``.
        """
        n = len(self.names)
        if self.max_per_sample == 1:
            p = torch.tensor(self.probs, device=device, dtype=torch.float64)
            if batch_size == 0:
                return torch.zeros(0, dtype=torch.long, device=device)
            return torch.multinomial(p, batch_size, replacement=True, generator=generator)
        count = torch.randint(
            1, self.max_per_sample + 1, (batch_size, 1), device=device, generator=generator
        )
        order = torch.rand((batch_size, n), device=device, generator=generator).argsort(dim=1)
        rank = order.argsort(dim=1)  # rank of each degradation in a random permutation
        return rank < count

    def degrade(
        self, x: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Apply the degradations that ``labels`` name (``(B,)`` ints or a ``(B, N)`` mask).

        Integer labels must lie in ``[0, N)``; any other label, or a floating or boolean
        ``(B,)`` tensor, raises [InputError][contrastive_prompts.InputError].
        """
        where = "DegradationMix"
        _check_image(where, x)
        n = len(self.names)
        if not isinstance(labels, Tensor):
            raise InputTypeError(
                f"{where}: expected labels to be a torch.Tensor, got {type(labels).__name__}"
            )
        if labels.ndim == 1:
            check_shape(where, "labels", labels, (x.shape[0],))
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise InputError(
                    f"{where}: expected labels to be an integer tensor, got {labels.dtype}"
                )
            # a value check, unlike forward checks elsewhere: labels are a few integers and
            # degrade is never compiled, so the sync it costs is negligible
            bad = labels[(labels < 0) | (labels >= n)]
            if bad.numel():
                values = ", ".join(str(v) for v in sorted(set(bad.tolist())))
                raise InputError(
                    f"{where}: expected labels to be integers in [0, {n}) (one per degradation "
                    f"of {self.names}), got {values}"
                )
            mask = F.one_hot(labels.long(), n).bool()
        else:
            check_shape(where, "labels", labels, (x.shape[0], n))
            mask = labels.bool()
        out = x.clone()
        for j, fn in enumerate(self._fns):
            idx = mask[:, j].nonzero().flatten()
            if idx.numel():
                out[idx] = fn(out[idx], generator=generator)
        return out

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw labels for the batch (as `sample_labels` does) and apply what they name.

        Args:
            x: $(B, C, H, W)$ images in [0, 1].
            generator: source of randomness for the labels and the degradations, on x's device.

        Returns:
            ``(degraded, labels)``: the batch, and $(B,)$ int64 labels indexing `names` (or a
            $(B, N)$ bool mask when ``max_per_sample > 1``).
        """
        _check_image("DegradationMix", x)
        labels = self.sample_labels(x.shape[0], device=x.device, generator=generator)
        return self.degrade(x, labels, generator=generator), labels

    def extra_repr(self) -> str:
        return f"names={self.names}, kinds={self.kinds}, max_per_sample={self.max_per_sample}"


DEGRADATIONS: dict[str, Callable[[], nn.Module]] = {
    "noise": GaussianNoise,
    "haze": Haze,
    "rain": RainStreaks,
    "snow": Snow,
    "gaussian_blur": GaussianBlur,
    "blur": MotionBlur,
    "low_light": LowLight,
    "jpeg": JpegCompression,
}
"""Every named degradation with its default options; ``"blur"`` is motion blur (GoPro-like)."""


PHYSICAL_ORDER = ("haze", "rain", "snow", "low_light", "blur", "gaussian_blur", "noise", "jpeg")
"""The order in which a [Composite][contrastive_prompts.app.degradations.Composite] applies its
parts, as light reaches the file: the atmosphere between the scene and the camera (haze), what
falls close to the camera (rain, snow), the light the whole is captured in (low light), the
camera's motion and optics (blur), its sensor (noise), the file (JPEG)."""


class Composite(nn.Module):
    """Several degradations of one image, applied in physical order.

    The parts apply in [PHYSICAL_ORDER][contrastive_prompts.app.degradations.PHYSICAL_ORDER],
    whatever order they are given in.

    The name of a composite joins its parts' names with ``+`` in the order they apply
    (``"haze+rain+low_light"``);
    [DegradationMix][contrastive_prompts.app.degradations.DegradationMix] reports its parts
    (``mix.parts``) beside the label.

    Args:
        names: two or more distinct names of
            [DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS], in any order (as a
            sequence, or one string joined by ``+``); each part has its default options.

    Attributes:
        parts: the parts' names, in the order they apply.
        name: ``"+".join(parts)``.

    Shape:
        - Input: $(B, C, H, W)$ in [0, 1]; output: the same.

    Raises:
        InputError: fewer than two names, a name twice, or a name that is not a degradation.

    Examples:
        >>> Composite(["low_light", "rain", "haze"]).name
        'haze+rain+low_light'
        >>> Composite("rain+haze")(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, names: str | Sequence[str]) -> None:
        super().__init__()
        where = "Composite"
        listed = names.split("+") if isinstance(names, str) else list(names)
        for name in listed:
            check_choice(where, "a part", name, PHYSICAL_ORDER)
        if len(listed) < 2 or len(set(listed)) != len(listed):
            raise InputError(f"{where}: expected two or more distinct degradations, got {listed}")
        self.parts: tuple[str, ...] = tuple(sorted(listed, key=PHYSICAL_ORDER.index))
        self.name = "+".join(self.parts)
        self.steps = nn.ModuleList([DEGRADATIONS[name]() for name in self.parts])

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Apply every part in turn, each drawing from ``generator``."""
        for step in self.steps:
            x = step(x, generator=generator)
        return x

    def extra_repr(self) -> str:
        return f"parts={self.parts}"


def _preset_3task() -> dict[str, nn.Module]:
    return {
        "noise_15": GaussianNoise(15.0, quantize=True),
        "noise_25": GaussianNoise(25.0, quantize=True),
        "noise_50": GaussianNoise(50.0, quantize=True),
        "rain": RainStreaks(),
        "haze": Haze(),
    }


def _preset_5task() -> dict[str, nn.Module]:
    return {
        "noise": GaussianNoise(25.0, quantize=True),
        "rain": RainStreaks(),
        "haze": Haze(),
        "blur": MotionBlur(),
        "low_light": LowLight(),
    }


CDD11 = (
    "low_light", "haze", "rain", "snow", "haze+low_light", "rain+low_light", "snow+low_light",
    "haze+rain", "haze+snow", "haze+rain+low_light", "haze+snow+low_light",
)  # fmt: skip
"""The eleven kinds of CDD-11 (OneRestore's composite benchmark): low light, haze, rain, snow
and seven composites of them, named by their parts in the order they apply."""


def _task(name: str) -> tuple[str, nn.Module]:
    """A task of a mix by name: a degradation, or a composite of ``+``-joined degradations."""
    if "+" in name:
        composite = Composite(name)
        return composite.name, composite
    check_choice("make_mix", "degradation name", name, DEGRADATIONS)
    return name, DEGRADATIONS[name]()


MIXES: dict[str, tuple[Callable[[], dict[str, nn.Module]], dict[str, str]]] = {
    "3task": (
        _preset_3task,
        {"noise_15": "noise", "noise_25": "noise", "noise_50": "noise"}
        | {"rain": "rain", "haze": "haze"},
    ),
    "5task": (
        _preset_5task,
        {n: n for n in ("noise", "rain", "haze", "blur", "low_light")},
    ),
    "cdd11": (lambda: dict(map(_task, CDD11)), {n: n for n in CDD11}),
}
"""The mixes of the papers: ``"3task"`` has five tasks (noise at sigma 15, 25 and 50, rain, haze)
of three kinds; ``"5task"`` has noise (sigma 25), rain, haze, motion blur and low light;
``"cdd11"`` has the eleven kinds of CDD-11, low light, haze, rain, snow and their composites."""


def make_mix(
    preset: str | Sequence[str] = "3task",
    *,
    add: Sequence[str] = (),
    probs: Sequence[float] | None = None,
    max_per_sample: int = 1,
) -> DegradationMix:
    """Build a `DegradationMix` from a preset name or a list of degradation names.

    Presets ([MIXES][contrastive_prompts.app.degradations.MIXES]):

    - ``"3task"``: tasks ``noise_15``, ``noise_25``, ``noise_50``, ``rain``, ``haze``. The three
      noise levels are three labels, as the PromptIR protocol trains them as three tasks, and one
      kind ``"noise"`` (see `DegradationMix.kinds`). Noise is quantised to 8 bits.
    - ``"5task"``: ``noise`` (sigma 25, the level the 5-task protocol tests), ``rain``, ``haze``,
      ``blur`` (motion), ``low_light``.
    - ``"cdd11"``: the eleven kinds of [CDD11][contrastive_prompts.app.degradations.CDD11]:
      ``low_light``, ``haze``, ``rain``, ``snow`` and seven
      [Composite][contrastive_prompts.app.degradations.Composite] degradations of them.

    A list picks names from [DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS] with
    their default options, or composites of them joined by ``+`` (``"haze+rain"``); ``add``
    appends such names to a preset's tasks (each its own kind).

    Args:
        preset: a preset name or a sequence of degradation names.
        add: names of [DEGRADATIONS][contrastive_prompts.app.degradations.DEGRADATIONS] or
            composites to append, a new label each (``["low_light"]`` after ``"3task"`` is
            label 5).
        probs: task probabilities (uniform by default).
        max_per_sample: maximum number of degradations per sample (see
            [DegradationMix][contrastive_prompts.app.degradations.DegradationMix]).

    Returns:
        The mix.

    Examples:
        >>> make_mix("3task").names
        ('noise_15', 'noise_25', 'noise_50', 'rain', 'haze')
        >>> make_mix("3task").kind_names
        ('noise', 'rain', 'haze')
        >>> make_mix("3task", add=["low_light"]).names[-2:]
        ('haze', 'low_light')
    """
    where = "make_mix"
    if isinstance(add, str) or not isinstance(add, Sequence):
        raise InputTypeError(
            f"{where}: expected add to be a sequence of degradation names, got {add!r}"
        )
    added_list = [_task(n) for n in add]
    added = dict(added_list)
    if isinstance(preset, str):
        check_choice(where, "preset", preset, MIXES)
        build, kinds = MIXES[preset]
        tasks = build()
    else:
        tasks = dict(_task(n) for n in preset)
        kinds = {n: n for n in tasks}
        if len(tasks) != len(preset):
            raise InputError(f"{where}: expected distinct degradation names, got {list(preset)}")
    names = [n for n, _ in added_list]
    repeated = sorted({n for n in names if names.count(n) > 1 or n in tasks})
    if repeated:
        raise InputError(
            f"{where}: expected added degradations that the mix does not have, once each, got "
            f"{repeated} again"
        )
    return DegradationMix(
        {**tasks, **added},
        kinds={**kinds, **{n: n for n in added}},
        probs=probs,
        max_per_sample=max_per_sample,
    )
