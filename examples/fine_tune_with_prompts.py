"""Fine-tune a trained network with prompts: its weights load as they are, and nothing is lost.

The journey of a network that was trained without prompts:

1. a plain two-level U-Net (the one of ``plug_into_your_network.py``) is trained with L1 on
   procedural images degraded by haze or by low light, and its state dict is saved to a file;
2. a fresh plain U-Net loads that file strictly, and ``add_prompts`` gives each decoder block a
   prompt stage, finding the channels from ``example_input=`` (no ``dim`` typed): every key of
   the network is kept, and the prompted network computes exactly what the trained one did;
3. ``CPLObjective`` (the plug-in example's settings: lambda 0.1, a balance term, one
   label-aware negative, two experts per stage) fine-tunes it, the new stages at a higher
   learning rate than the trained weights;
4. on held-out images from another random stream, ``prompt_effect`` scores the output under the
   network's own prompts and under negative prompts, next to the trained plain network it
   started from (the same images) and a control: the same plain network trained the same extra
   steps on the same images with L1 alone, at the trained weights' learning rate;
5. ``remove_prompts(copy.deepcopy(model)).state_dict()`` loads strictly into the plain U-Net.

One run at the defaults (``OMP_NUM_THREADS=1 python examples/fine_tune_with_prompts.py``: 600
plain steps, then 400 with prompts, the label-routing term on as by default; 90 s of training on
a 2-core CPU shared with other runs; ``benchmarks/results/fine_tune_seed0.json``):

| held-out PSNR (dB) | haze | low_light | average |
|---|---|---|---|
| degraded input | 13.20 | 8.50 | 10.85 |
| start: the trained plain network | 19.71 | 18.69 | 19.20 |
| control: plain, 400 more L1 steps | 20.09 | 19.36 | 19.73 |
| fine-tuned with prompts, own prompts | 21.28 | 20.72 | 21.00 |
| fine-tuned with prompts, negative prompts | 19.00 | 18.33 | 18.66 |
| cost of a negative prompt | 2.28 | 2.40 | 2.34 |
| fine-tuned weights without the stages | 19.06 | 18.90 | 18.98 |

The prompted network started exactly where the plain one was (outputs equal) and gained 1.80 dB,
1.27 dB more than the control; under the other degradation's expert it fell below the control,
so the right prompt is worth 2.34 dB. The fine-tuned weights without the stages restore worse
than the start: the stages' work is not in them. The prompt matters less than in a network
trained with prompts from the start (``plug_into_your_network.py``: 7.3-8.4 dB): the trained
weights still restore partly without it. The learning rates were chosen on images of the
plug-in example's ``VALIDATION_SEED`` stream.
Everything is importable: ``run(...)`` returns the numbers.

    python examples/fine_tune_with_prompts.py [--pretrain-steps 600] [--steps 400] [--seed 0]
        [--lr 1e-3] [--stage-lr 5e-3] [--no-control]
        [--folder DIR]  # where the plain network's weights are saved (a temporary one otherwise)
        [--json FILE]  # the figures, written to a new file
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from plug_into_your_network import DEGRADATIONS, HELD_OUT_SEED, UNet, make_batch
from torch import Tensor, nn

from contrastive_prompts import CPLObjective, add_prompts, remove_prompts
from contrastive_prompts.app.degradations import DegradationMix
from contrastive_prompts.app.effect import PromptEffect, prompt_effect
from contrastive_prompts.app.metrics import psnr

STAGES = ("decoder.0", "decoder.1")  # the U-Net's two decoder blocks, as named_modules() says


@dataclass
class Result:
    """What one run measured: the checks of the journey and the held-out PSNRs.

    Attributes:
        names: the degradations, in label order.
        degraded: held-out PSNR of the degraded input, per degradation (dB).
        pretrained: held-out PSNR of the trained plain network, where fine-tuning starts.
        control: held-out PSNR of the plain network trained ``steps`` more steps with L1 on the
            same images as the fine-tuning (``None`` when skipped).
        start: ``prompt_effect`` of the prompted network before fine-tuning (cost 0: new stages
            are the identity).
        effect: ``prompt_effect`` after fine-tuning with prompts.
        without_stages: held-out PSNR of the plain U-Net holding the fine-tuned weights without
            the stages (what ``remove_prompts`` gives).
        start_difference: the largest absolute difference between the outputs of the prompted
            network before fine-tuning and of the trained plain network (0 when unchanged).
        new_keys: state-dict keys that ``add_prompts`` added (the plain network's all stay).
        shared_keys: the keys of ``remove_prompts(copy.deepcopy(model)).state_dict()``.
        plain_keys: the keys of the plain network's state dict.
        pretrain_losses: L1 of every pretraining step.
        fine_tune_losses: ``CPLObjective``'s loss of every fine-tuning step.
        seconds: wall time of the pretraining, the control and the fine-tuning.
        weights: the file holding the plain network's weights, when a folder was given.
        model: the fine-tuned prompted network, in eval mode.
    """

    names: tuple[str, ...]
    degraded: dict[str, float]
    pretrained: dict[str, float]
    control: dict[str, float] | None
    start: PromptEffect
    effect: PromptEffect
    without_stages: dict[str, float]
    start_difference: float
    new_keys: list[str]
    shared_keys: list[str]
    plain_keys: list[str]
    pretrain_losses: list[float]
    fine_tune_losses: list[float]
    seconds: dict[str, float]
    weights: Path | None
    model: nn.Module

    def gain(self) -> float:
        """Own-prompt PSNR after fine-tuning minus the trained plain network's, averaged (dB)."""
        return self.effect.average("own") - _mean(self.pretrained)


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


@torch.no_grad()
def held_out_psnr(
    model: nn.Module, degraded: Tensor, clean: Tensor, labels: Tensor, names: Sequence[str]
) -> dict[str, float]:
    """Per-image PSNR of ``model``'s clamped outputs, averaged per degradation, in eval mode."""
    model.eval()
    values = psnr(model(degraded).clamp(0, 1), clean).double()
    return {name: values[labels == k].mean().item() for k, name in enumerate(names)}


def train_plain(
    model: nn.Module,
    mix: DegradationMix,
    generator: torch.Generator,
    *,
    steps: int,
    batch: int,
    size: int,
    lr: float,
) -> list[float]:
    """Train ``model`` with L1 alone (AdamW, cosine learning rate); the loss of every step."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    model.train()
    losses = []
    for _ in range(steps):
        degraded, clean, _ = make_batch(mix, batch, size, generator)
        loss = F.l1_loss(model(degraded), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def run(
    *,
    pretrain_steps: int = 600,
    steps: int = 400,
    size: int = 32,
    batch: int = 12,
    pretrain_lr: float = 2e-3,
    lr: float = 1e-3,
    stage_lr: float | None = 5e-3,
    weight: float = 0.1,
    balance_weight: float = 0.05,
    num_negatives: int = 1,
    label_negatives: bool = True,
    num_prompts: int = 2,
    prompt_size: int = 8,
    width: int = 16,
    degradations: Sequence[str] = ("haze", "low_light"),
    seed: int = 0,
    held_out_seed: int = HELD_OUT_SEED,
    held_out: int = 48,
    control: bool = True,
    folder: str | Path | None = None,
) -> Result:
    """Pretrain a plain U-Net, prompt it, fine-tune it with CPL, score it on held-out images.

    Args:
        pretrain_steps: L1 steps of the plain network.
        steps: fine-tuning steps with ``CPLObjective`` (and of the L1 control).
        size: image side, a multiple of 2.
        batch: images per step, every degradation equally often.
        pretrain_lr: peak learning rate of the pretraining (cosine).
        lr: peak learning rate of the fine-tuning and of the control (cosine).
        stage_lr: peak learning rate of the new prompt stages (``None``: ``lr``).
        weight: lambda of the contrastive term.
        balance_weight: weight of the expert-balance term.
        num_negatives: negatives per image.
        label_negatives: draw the negatives from other degradations' experts.
        num_prompts: experts per prompt stage.
        prompt_size: spatial size of each expert prompt.
        width: channels of the U-Net's first level.
        degradations: names from ``plug_into_your_network.DEGRADATIONS``.
        seed: the initial weights and the training images (one stream for both phases).
        held_out_seed: the random stream of the images scored; never the training one.
        held_out: images scored (split evenly over the degradations).
        control: also train the plain network ``steps`` more steps with L1 alone.
        folder: where to save the plain network's weights (``plain.pt``); a temporary folder,
            removed afterwards, otherwise.

    Returns:
        A Result: the journey's checks and the held-out PSNRs.
    """
    if seed == held_out_seed:
        raise ValueError(f"run: expected held_out_seed other than the training seed, got {seed}")
    mix = DegradationMix({name: DEGRADATIONS[name]() for name in degradations})
    names = tuple(mix.names)
    generator = torch.Generator().manual_seed(seed)
    seconds = {}

    # 1. a plain network, trained without prompts, saved as a state dict
    torch.manual_seed(seed)
    pretrained = UNet(width)
    start = time.perf_counter()
    pretrain_losses = train_plain(
        pretrained, mix, generator, steps=pretrain_steps, batch=batch, size=size, lr=pretrain_lr
    )
    seconds["pretrain"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(folder if folder is not None else scratch) / "plain.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(pretrained.state_dict(), path)

        # 2. a fresh plain network loads the weights strictly; the prompts go in afterwards
        model = UNet(width)
        model.load_state_dict(torch.load(path, weights_only=True))  # strict by default
    plain_keys = list(model.state_dict())
    options = {"num_prompts": num_prompts, "prompt_size": prompt_size}
    example = torch.rand(1, 3, size, size)  # only its shape matters: it finds each block's dim
    add_prompts(model, {name: options for name in STAGES}, example_input=example)
    new_keys = [key for key in model.state_dict() if key not in plain_keys]

    scoring = torch.Generator().manual_seed(held_out_seed)
    degraded, clean, labels = make_batch(mix, held_out, size, scoring)
    with torch.no_grad():
        pretrained.eval()
        model.eval()
        start_difference = (model(degraded) - pretrained(degraded)).abs().max().item()
    before = prompt_effect(model, degraded, clean, labels, names=names)
    scores = {
        "degraded": before.degraded,
        "pretrained": held_out_psnr(pretrained, degraded, clean, labels, names),
    }

    # 3. fine-tune with CPL; the control sees the same images, with L1 alone and no prompts
    images = generator.get_state()
    if control:
        start = time.perf_counter()
        train_plain(pretrained, mix, generator, steps=steps, batch=batch, size=size, lr=lr)
        seconds["control"] = time.perf_counter() - start
        scores["control"] = held_out_psnr(pretrained, degraded, clean, labels, names)
        generator.set_state(images)
    objective = CPLObjective(
        weight=weight,
        num_negatives=num_negatives,
        balance_weight=balance_weight,
        num_labels=mix.num_degradations,
        label_negatives=label_negatives,
    )
    stage = [p for name, p in model.named_parameters() if ".prompt_stage." in name]
    rest = [p for name, p in model.named_parameters() if ".prompt_stage." not in name]
    groups = [{"params": rest}, {"params": stage, "lr": lr if stage_lr is None else stage_lr}]
    optimiser = torch.optim.AdamW(groups, lr=lr)  # after add_prompts: it adds parameters
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    model.train()
    fine_tune_losses = []
    start = time.perf_counter()
    for _ in range(steps):
        batch_degraded, batch_clean, batch_labels = make_batch(mix, batch, size, generator)
        parts = objective(model, batch_degraded, batch_clean, batch_labels, generator=generator)
        optimiser.zero_grad()
        parts.loss.backward()
        optimiser.step()
        schedule.step()
        fine_tune_losses.append(parts.loss.item())
    seconds["fine_tune"] = time.perf_counter() - start

    # 4. does the prompt matter, on the held-out images?
    effect = prompt_effect(model, degraded, clean, labels, names=names)

    # 5. the fine-tuned weights without the prompts load into the plain network
    shared = remove_prompts(copy.deepcopy(model)).state_dict()
    plain = UNet(width)
    plain.load_state_dict(shared)  # strict: raises on a missing or unexpected key
    without_stages = held_out_psnr(plain, degraded, clean, labels, names)
    model.eval()
    return Result(
        names=names,
        degraded=scores["degraded"],
        pretrained=scores["pretrained"],
        control=scores.get("control"),
        start=before,
        effect=effect,
        without_stages=without_stages,
        start_difference=start_difference,
        new_keys=new_keys,
        shared_keys=list(shared),
        plain_keys=plain_keys,
        pretrain_losses=pretrain_losses,
        fine_tune_losses=fine_tune_losses,
        seconds=seconds,
        weights=path if folder is not None else None,
        model=model,
    )


def report(result: Result, *, steps: int) -> str:
    """The held-out PSNR table, as Markdown, then the most used expert per prompt layer."""
    effect = result.effect
    rows = [
        ("degraded input", result.degraded),
        ("start: the trained plain network", result.pretrained),
    ]
    if result.control is not None:
        rows.append((f"control: plain, {steps} more L1 steps", result.control))
    rows += [
        ("fine-tuned with prompts, own prompts", effect.own),
        ("fine-tuned with prompts, negative prompts", effect.negative),
        ("cost of a negative prompt", effect.cost),
        ("fine-tuned weights without the stages", result.without_stages),
    ]
    lines = [
        "| held-out PSNR (dB) | " + " | ".join(result.names) + " | average |",
        "|---" * (len(result.names) + 2) + "|",
    ]
    for label, values in rows:
        cells = [values[n] for n in result.names] + [_mean(values)]
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    experts = effect.table().split("\n\n", 1)
    return "\n".join(lines) + ("\n\n" + experts[1] if len(experts) == 2 else "")


def main() -> None:
    default = {name: p.default for name, p in inspect.signature(run).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=default["pretrain_steps"])
    parser.add_argument("--steps", type=int, default=default["steps"], help="fine-tuning steps")
    parser.add_argument("--lr", type=float, default=default["lr"], help="fine-tuning rate")
    parser.add_argument(
        "--stage-lr", type=float, default=default["stage_lr"], help="the new stages' rate"
    )
    parser.add_argument("--seed", type=int, default=default["seed"])
    parser.add_argument("--weight", type=float, default=default["weight"], help="CPR's lambda")
    parser.add_argument(
        "--degradations",
        nargs="+",
        default=list(default["degradations"]),
        choices=sorted(DEGRADATIONS),
    )
    parser.add_argument("--no-control", action="store_true", help="skip the L1 control")
    parser.add_argument("--folder", help="where to save the plain network's weights")
    parser.add_argument("--json", help="also write the figures to this new file")
    args = parser.parse_args()
    if args.json and Path(args.json).exists():
        parser.error(f"--json: expected a new file, got {args.json!r}, which exists")

    result = run(
        pretrain_steps=args.pretrain_steps,
        steps=args.steps,
        lr=args.lr,
        stage_lr=args.stage_lr,
        seed=args.seed,
        weight=args.weight,
        degradations=args.degradations,
        control=not args.no_control,
        folder=args.folder,
    )
    times = ", ".join(f"{name} {s:.0f} s" for name, s in result.seconds.items())
    print(f"plain network: {args.pretrain_steps} L1 steps; prompts: {args.steps} steps ({times})")
    print(
        f"prompts added: {len(result.new_keys)} new keys, all {len(result.plain_keys)} plain "
        f"keys kept; output at the start differs by {result.start_difference:g}"
    )
    print(
        f"remove_prompts gives {len(result.shared_keys)} keys, loaded strictly into the plain "
        "network\n"
    )
    print(report(result, steps=args.steps))
    finite = all(math.isfinite(v) for v in result.pretrain_losses + result.fine_tune_losses)
    print(
        f"\nfine-tuning with prompts: {result.gain():+.2f} dB over the start; a negative prompt "
        f"costs {result.effect.average('cost'):.2f} dB" + ("" if finite else "; losses not finite")
    )
    if args.json:
        figures = {
            "options": {k: v for k, v in vars(args).items() if k != "json"},
            "names": list(result.names),
            "degraded": result.degraded,
            "pretrained": result.pretrained,
            "control": result.control,
            "start": result.start.to_dict(),
            "effect": result.effect.to_dict(),
            "without_stages": result.without_stages,
            "start_difference": result.start_difference,
            "gain": result.gain(),
            "seconds": result.seconds,
        }
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
