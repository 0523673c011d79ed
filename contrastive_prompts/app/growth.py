"""A training run that teaches a trained reference model new degradations.

``TrainConfig(grow_from=<checkpoint>, add_degradations=[...])`` starts from the EMA weights of a
training checkpoint, gives each prompt layer one new expert per degradation the checkpoint was not
trained on ([SparsePromptIR.add_experts][contrastive_prompts.SparsePromptIR.add_experts]), and
trains those experts and their router rows alone
([only_new_experts][contrastive_prompts.core.only_new_experts]) on the checkpoint's degradations
and the new ones, the new ones in half the samples: the old degradations are there so that the
router learns not to send them to the new experts. The routing term teaches each old label the
expert it was taught before and each new label its new expert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._checks import InputError
from ..reference.model import SparsePromptIR
from .checkpoints import checkpoint_model, read_checkpoint
from .config import TrainConfig
from .degradations import DegradationMix, make_mix

__all__ = ["Growth", "GrowthPlan", "build_mix", "growth_plan", "start_growth"]


@dataclass(frozen=True)
class GrowthPlan:
    """What a run that grows a trained model adds to it.

    Attributes:
        base_labels: the degradations the checkpoint was trained on, in label order.
        base_experts: experts per prompt layer in the checkpoint.
        new_labels: the degradations the run adds, each with a new expert per layer.

    Examples:
        >>> plan = GrowthPlan(("noise", "rain"), 5, ("haze",))
        >>> plan.label_experts
        (0, 1, 5)
    """

    base_labels: tuple[str, ...]
    base_experts: int
    new_labels: tuple[str, ...]

    @property
    def label_experts(self) -> tuple[int, ...]:
        """The expert the routing term teaches each label: an old label the one it was taught
        (``label % base_experts``), the ``j``-th new label the ``j``-th new expert."""
        old = tuple(label % self.base_experts for label in range(len(self.base_labels)))
        return old + tuple(range(self.base_experts, self.base_experts + len(self.new_labels)))


def growth_plan(config: TrainConfig, *, where: str = "growth_plan") -> GrowthPlan | None:
    """The plan of a run with ``config.grow_from``, read from its checkpoint; ``None`` without.

    Raises:
        CheckpointError: the checkpoint cannot be read as a training checkpoint.
        InputError: it holds a network of the user's own (not the reference model), or the
            run's degradations do not begin with the checkpoint's and add at least one.
    """
    if config.grow_from is None:
        return None
    return _plan(config, read_checkpoint(config.grow_from), where)


def _plan(config: TrainConfig, state: dict[str, Any], where: str) -> GrowthPlan:
    """The plan of ``config``'s run from its ``grow_from`` checkpoint, already read."""
    if state["model_config"] is None:
        raise InputError(
            f"{where}: expected grow_from to be a checkpoint of the reference model, got "
            f"{config.grow_from!r}, a network of your own (grow it with add_experts and train it "
            "with only_new_experts in Python)"
        )
    base = tuple(state["label_names"])
    names = make_mix(config.mix, add=config.add_degradations).names
    if names[: len(base)] != base or len(names) == len(base):
        raise InputError(
            f"{where}: expected the run's degradations (mix {config.mix!r}, then "
            f"add_degradations) to begin with the {len(base)} the checkpoint was trained on, "
            f"{list(base)}, and add at least one, got {list(names)}"
        )
    return GrowthPlan(base, int(state["model_config"]["num_prompts"]), names[len(base) :])


def build_mix(config: TrainConfig, plan: GrowthPlan | None = None) -> DegradationMix:
    """The run's degradations: ``config.mix`` and then ``config.add_degradations``.

    Every task is equally likely, except in a run that grows a model (``plan``), where the new
    degradations carry half the samples and the checkpoint's the other half.

    Examples:
        >>> build_mix(TrainConfig(mix="5task", add_degradations=["jpeg"])).names[-2:]
        ('low_light', 'jpeg')
    """
    probs = None
    if plan is not None:
        old, new = len(plan.base_labels), len(plan.new_labels)
        probs = [0.5 / old] * old + [0.5 / new] * new
    return make_mix(config.mix, add=config.add_degradations, probs=probs)


@dataclass(frozen=True)
class Growth:
    """The start of a run that grows a model: its plan and the grown model.

    Attributes:
        plan: what the run adds.
        model: the checkpoint's EMA weights with one new expert per new degradation in every
            prompt layer, in train mode, on the CPU.
    """

    plan: GrowthPlan
    model: SparsePromptIR


def start_growth(config: TrainConfig, *, where: str = "start_growth") -> Growth | None:
    """The plan and the grown model of a run with ``config.grow_from``, from one reading of
    its checkpoint; ``None`` without.

    Raises:
        CheckpointError: the checkpoint cannot be read as a training checkpoint.
        InputError: as [growth_plan][contrastive_prompts.app.growth.growth_plan].
    """
    if config.grow_from is None:
        return None
    state = read_checkpoint(config.grow_from)
    plan = _plan(config, state, where)
    model = checkpoint_model(state, where=f"checkpoint {config.grow_from!r}")
    model.add_experts(len(plan.new_labels))
    return Growth(plan, model.train())
