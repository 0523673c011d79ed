"""Training an all-in-one restorer with Contrastive Prompt Learning.

[Trainer][contrastive_prompts.app.train.Trainer] runs the whole loop: AdamW with warm-up then cosine
decay, ``L1 + lambda * CPR`` through [CPLObjective][contrastive_prompts.CPLObjective], EMA
weights, gradient clipping, mixed precision, periodic validation with the protocol metrics, a
progress line, JSON-lines logs, PNG plots and checkpoints that resume exactly. Under ``torchrun`` it
trains with DistributedDataParallel (NCCL on GPUs, gloo on CPUs); rank 0 alone writes. What it
builds comes from functions that can be called alone, in ``app.building``, as BasicSR splits its
set-up: [setup_distributed][contrastive_prompts.app.building.setup_distributed],
[build_model][contrastive_prompts.app.building.build_model],
[build_objective][contrastive_prompts.app.building.build_objective],
[build_step_module][contrastive_prompts.app.building.build_step_module],
[build_optimizer][contrastive_prompts.app.building.build_optimizer] and
[build_data][contrastive_prompts.app.building.build_data].
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import filelock
import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from .._checks import InputError
from ..core.growth import only_new_experts
from ..core.prompt import prompt_layers
from ..reference.gated import GatedRestorer
from ..reference.model import SparsePromptIR
from ..reference.padding import pad_to_multiple
from .building import (
    StepBatchSampler,
    _check_config,
    _EpochIndexed,
    build_data,
    build_model,
    build_objective,
    build_optimizer,
    build_step_module,
    setup_distributed,
)
from .checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    as_tuple,
    gated_layout,
    load_checkpoint_model,
    read_checkpoint,
    state_problems,
)
from .compiling import compile_regions
from .config import ADDED_FIELDS, RECIPES, RUN_FIELDS, TrainConfig
from .data._common import derived_seed
from .effect import PromptEffect, collapse_warning, has_negatives, measure_effect
from .files import json_text, make_folder, remove_stale, writing
from .growth import build_mix, fit_gate, gate_check, gate_scenes, gate_warning, start_growth
from .metrics import EvaluationResult, batches_of, evaluate
from .tensorboard import TensorBoardLog

__all__ = [
    "RECIPES",
    "CheckpointError",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "load_checkpoint_model",
    "read_checkpoint",
]

# -- distributed helpers -----------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """Training met a non-finite loss or gradient norm and stopped before applying the step.

    Nothing is saved after the last finite step: the run's last checkpoint stays as it was.
    The message names the step and the terms (L1, CPR, balance) or the gradient norm.
    """


@contextlib.contextmanager
def _deferred_interrupt(received: list[int]) -> Iterator[None]:
    """Hold SIGINT back during the block, noting it in ``received`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    """The reference model's configuration, or ``None`` for a network of the user's own."""
    return asdict(model.config) if isinstance(model, SparsePromptIR) else None


class _Progress:
    """One status line: a carriage-return bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()

    def update(self, step: int, values: dict[str, float], rate: float) -> None:
        if not self.enabled:
            return
        width = 24
        done = int(width * step / self.total)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        line = (
            f"[{'#' * done}{'.' * (width - done)}] {step}/{self.total} {parts} "
            f"| {rate:.2f} it/s | eta {eta / 60:.1f} min"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


# -- the trainer's parts -----------------------------------------------------------------------
#
# Trainer.__init__ is these calls in order. Each can be called alone: to test one part, to read
# what the trainer builds, or to write a loop of one's own with the trainer's pieces.


# -- the trainer -------------------------------------------------------------------------------


class Trainer:
    """Trains a network with CPL: the reference [SparsePromptIR][contrastive_prompts.SparsePromptIR]
    by default, or a network of your own (``model=``).

    Args:
        config: the run's options.
        train_data: a dataset of ``(degraded, clean, label)`` items; by default clean images from
            ``config.data`` (or the scikit-image photos) degraded on the fly by ``config.mix``.
        val_data: a dataset of ``(degraded, clean, label)`` items for validation; by default
            ``config.val_data`` (or, without ``config.data``, the held-out scikit-image photos)
            under every degradation of the mix.
        label_names: names of the labels of ``train_data`` / ``val_data`` when they are not the
            mix's.
        model: your own network to train instead of the reference model, for example one
            given prompt layers by [add_prompts][contrastive_prompts.add_prompts]. It is called
            as ``model(degraded)`` and returns the restored batch; ``config.preset``, ``top_k``,
            ``use_prompts`` and ``init_promptir`` do not apply to it. Its checkpoints hold its
            weights without a model configuration: load them into the network you build
            (``model.load_state_dict(read_checkpoint(path)["ema"])``).

    Building one is a sequence of module functions, each of which can be called alone:
    [setup_distributed][contrastive_prompts.app.building.setup_distributed] (rank, processes,
    device), [build_model][contrastive_prompts.app.building.build_model] (after
    ``torch.manual_seed(config.seed)``), an EMA copy of it,
    [build_objective][contrastive_prompts.app.building.build_objective],
    [build_step_module][contrastive_prompts.app.building.build_step_module]
    (DistributedDataParallel under several processes),
    [build_optimizer][contrastive_prompts.app.building.build_optimizer] and
    [build_data][contrastive_prompts.app.building.build_data]. Called by the trainer, their errors
    begin with ``Trainer:``.

    Examples:
        >>> import tempfile
        >>> config = TrainConfig(steps=2, batch_size=1, crop=32, val_crop=32,
        ...                      out_dir=tempfile.mkdtemp(), log_every=1)
        >>> history = Trainer(config).fit()
        >>> len(history)
        2
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        train_data: Dataset[Any] | None = None,
        val_data: Dataset[Any] | None = None,
        label_names: Sequence[str] | None = None,
        model: nn.Module | None = None,
    ) -> None:
        _check_config("Trainer", config)
        self.config = config
        self.rank, self.world_size, self.device = setup_distributed(config, where="Trainer")
        self.is_main = self.rank == 0
        self.out_dir = Path(config.out_dir)

        # the checkpoint of a run that grows a model, read once: the plan and the grown model
        growth = start_growth(config, where="Trainer") if model is None else None
        self.growth = growth.plan if growth is not None else None
        torch.manual_seed(config.seed)  # the reference model's weights come from this state
        self.model = build_model(config, model, device=self.device, where="Trainer", growth=growth)
        trained = None
        gated = growth is not None and config.growth == "gated"
        if self.growth is not None and not gated:  # the new experts and their router rows
            new = {
                name: range(self.growth.base_experts, layer.num_prompts)
                for name, layer in prompt_layers(self.model).items()
            }
            self._new_experts = only_new_experts(self.model, new)
            trained = self._new_experts.param_groups
            self._trained = self._new_experts.trained
        self.ema = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
        self.mix = build_mix(config, self.growth)
        self.label_names = list(label_names) if label_names else list(self.mix.names)
        self.objective = build_objective(
            config,
            len(self.label_names),
            self.device,
            where="Trainer",
            label_experts=growth.plan.label_experts if growth and not gated else None,
        )
        if config.compile:
            # after the EMA copy is made, so that validation runs uncompiled at any size
            compile_regions(self.model)
            compile_regions(self.objective.loss)
        self.step_module = build_step_module(
            self.model, self.objective, self.device, self.world_size
        )
        self.optimizer, self.scheduler = build_optimizer(
            config, self.model, where="Trainer", parameters=trained
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step = 0
        self.run_id = uuid.uuid4().hex  # names the run in its folder and its checkpoints
        self._resumed_from: Path | None = None
        self._announce_resume = False  # said once, by the fit after load, once the folder is ours
        self._interrupts: list[int] = []
        self._saved: tuple[Path, int] | None = None  # the last checkpoint written: (path, step)
        self.history: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []
        self._board: TensorBoardLog | None = None
        self.train_data, self.val_data = build_data(
            config, self.mix, train_data=train_data, val_data=val_data, where="Trainer"
        )
        # a gated run's model: the checkpoint's networks, then the EMA of the trained copy
        self.gated: GatedRestorer | None = None
        if gated:
            assert growth is not None
            gate = fit_gate(
                self.mix, growth.label_networks, config.data or gate_scenes(), seed=config.seed
            )
            self.gated = growth.restorer(self.ema.module, gate).to(self.device)

    # -- one step ------------------------------------------------------------------------------

    def train_step(self, degraded: Tensor, clean: Tensor, labels: Tensor) -> dict[str, Any]:
        """One optimisation step on a batch; returns the logged values."""
        config = self.config
        self.objective.check_labels(labels)  # on the CPU, before they move: no device wait
        degraded = degraded.to(self.device, non_blocking=True)
        clean = clean.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        generator = torch.Generator(device=self.device).manual_seed(
            derived_seed((config.seed * 1_000_003 + self.step) * 257 + self.rank)
        )
        autocast = torch.autocast(
            self.device.type,
            dtype=torch.bfloat16 if config.precision == "bf16" else torch.float16,
            enabled=config.precision != "fp32",
        )
        with autocast:
            parts = self.step_module(degraded, clean, labels, generator=generator)
        # one synchronisation reads every term; a non-finite one stops the run before the update
        loss, l1, cpr, balance, routing = torch.stack(
            [parts.loss, parts.l1, parts.cpr, parts.balance, parts.routing.to(parts.loss.dtype)]
        ).tolist()
        if not all(map(math.isfinite, (loss, l1, cpr, balance, routing))):
            self._diverged("loss", {"l1": l1, "cpr": cpr, "balance": balance, "routing": routing})
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(parts.loss).backward()
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16 loss scaling
        grad_norm = float(
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or math.inf)
        )
        # under fp16 a non-finite gradient is the scaler's business: it skips the step and
        # lowers the scale; anywhere else it is divergence
        if not math.isfinite(grad_norm) and config.precision != "fp16":
            self._diverged("gradient norm", {"grad_norm": grad_norm})
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        # Ctrl-C during the update is held until the step is whole and logged (see fit)
        with _deferred_interrupt(self._interrupts):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update_parameters(self.model)
            self.step += 1
        return {
            "step": self.step,
            "loss": loss,
            "l1": l1,
            "cpr": cpr,
            "balance": balance,
            "routing": routing,
            "lr": lr,
            "grad_norm": grad_norm,
            "expert_counts": [c.tolist() for c in parts.expert_counts],
            "stages": list(parts.stages),
        }

    def _diverged(self, what: str, values: dict[str, float]) -> NoReturn:
        """Log and raise [TrainingDiverged][contrastive_prompts.app.train.TrainingDiverged]."""
        step = self.step + 1
        names = {
            "l1": "L1", "cpr": "CPR", "balance": "balance", "routing": "routing",
            "grad_norm": "gradient norm",
        }  # fmt: skip
        detail = ", ".join(f"{names[k]} {v:.4g}" for k, v in values.items())
        if self._saved is not None:
            kept = (
                f"the last checkpoint, {str(self._saved[0])!r} (step {self._saved[1]}), is intact"
            )
        else:
            kept = "no checkpoint was written"
        self._log({"diverged": {"step": step, "what": what, **values}})
        raise TrainingDiverged(
            f"training diverged at step {step}: non-finite {what} ({detail}); the step was not "
            f"applied and nothing was saved; {kept}. Lower lr (now {self.config.lr:g}) or "
            f"cpr_weight (now {self.config.cpr_weight:g}), or clip gradients (grad_clip)"
        )

    # -- the loop ------------------------------------------------------------------------------

    def _loader(self) -> DataLoader[Any]:
        sampler = StepBatchSampler(
            len(self.train_data),  # type: ignore[arg-type]  # torch's Dataset is not Sized
            self.config.batch_size,
            seed=self.config.seed,
            start_step=self.step,
            rank=self.rank,
            world_size=self.world_size,
        )
        return DataLoader(
            _EpochIndexed(self.train_data),
            batch_sampler=sampler,
            num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
        )

    def fit(self, *, overwrite: bool = False) -> list[dict[str, Any]]:
        """Train until ``config.steps``; returns the per-step log records of this call.

        A run folder belongs to one run, and to one ``fit`` at a time: ``fit`` holds the lock
        ``out_dir/fit.lock`` while it runs (released when it returns or raises, and by the system
        if the process dies), so a second ``fit`` into the same folder, in this process or
        another (a second ``--resume`` of a run still training, say), is refused before it
        writes. Before anything is written, ``out_dir`` must be new or empty, or hold this run:
        the one this trainer [loaded][contrastive_prompts.app.train.Trainer.load] (its
        ``run.json`` names the same run, or the checkpoint loaded is its own ``last.pt``) or
        trained before. A folder holding another run is refused, unless ``overwrite``: then the
        other run's files (``run.json``, ``config.json``, ``log.jsonl``, ``last.pt``, plots and
        TensorBoard events) are removed first, so nothing of it is mixed with this one.

        Ctrl-C (KeyboardInterrupt) writes a checkpoint before leaving, so ``--resume`` carries on.

        Args:
            overwrite: replace another run held by ``out_dir``.

        Raises:
            InputError: ``out_dir`` is not a folder, another ``fit`` holds its lock, or it holds
                another run and ``overwrite`` is false; nothing was written.
            TrainingDiverged: a loss term or the gradient norm is not finite (under fp16, a
                non-finite gradient is a step the loss scaler skips, as usual). Nothing is
                saved from that step on.
        """
        with self._folder_lock() if self.is_main else contextlib.nullcontext():
            return self._fit(overwrite)

    def _folder_lock(self) -> filelock.BaseFileLock:
        """The lock of ``out_dir`` (made a folder first), held; refused if another fit holds it."""
        folder = make_folder(self.out_dir, "out_dir")
        lock = filelock.FileLock(folder / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise InputError(
                f"Trainer: expected out_dir {str(folder)!r} to be free, got a folder another "
                f"training is writing to (it holds {str(folder / LOCK_FILE)!r}); wait for it to "
                "end or stop it, or choose another out_dir"
            ) from None
        remove_stale(folder)  # the folder is this fit's: what a killed one left goes
        return lock

    def _fit(self, overwrite: bool) -> list[dict[str, Any]]:
        config = self.config
        if self.is_main:
            self._claim_folder(overwrite)
            if self._resumed_from is not None:  # steps logged after the checkpoint are redone
                _truncate_log(self.out_dir / "log.jsonl", self.step)
            if self._announce_resume:
                print(f"resumed from {self._resumed_from} at step {self.step}", file=sys.stderr)
                self._announce_resume = False
            with writing(self.out_dir / "config.json") as temporary:
                temporary.write_text(json.dumps(asdict(config), indent=2))
            print(self._plan(), file=sys.stderr)  # a sign of life before the first step
        records: list[dict[str, Any]] = []
        if self.is_main and config.tensorboard:
            self._board = TensorBoardLog(
                self.out_dir / "tensorboard", label_names=self.label_names, start_step=self.step
            )
        progress = _Progress(config.steps, self.is_main)
        window_start, window_steps = time.perf_counter(), 0
        totals: dict[str, float] = {}
        try:
            batches = iter(self._loader())
            while self.step < config.steps:
                degraded, clean, labels = next(batches)
                try:
                    record = self.train_step(degraded, clean, labels)
                except (torch.OutOfMemoryError, RuntimeError) as error:
                    if not _out_of_memory(error):
                        raise
                    raise InputError(
                        f"Trainer: expected a training step that fits in the memory of "
                        f"{self.device}, got a step of batch {config.batch_size} of "
                        f"{config.crop}x{config.crop} crops with {config.num_negatives} "
                        f"negatives that does not (at step {self.step + 1}): lower --batch-size "
                        "or --crop, or set --chunk-size; the last checkpoint, if any, is as it was"
                    ) from error
                records.append(record)
                self.history.append(record)
                if self._board is not None:
                    self._board.step(record)
                if self._interrupts:
                    self._interrupts.clear()
                    raise KeyboardInterrupt
                window_steps += 1
                if len(records) == 1 and self.is_main:  # the first step of this call
                    took = time.perf_counter() - window_start
                    left = (config.steps - self.step) * took / 60
                    print(
                        f"step {self.step} took {took:.2f} s (the first is the slowest); the "
                        f"{config.steps - self.step} left take about {left:.1f} min at that pace",
                        file=sys.stderr,
                    )
                for key in ("loss", "l1", "cpr"):
                    totals[key] = totals.get(key, 0.0) + record[key]
                if self.step % config.log_every == 0 or self.step == config.steps:
                    rate = window_steps / (time.perf_counter() - window_start)
                    means = {k: v / window_steps for k, v in totals.items()}
                    self._log({**record, **{f"mean_{k}": v for k, v in means.items()},
                               "steps_per_s": rate})  # fmt: skip
                    progress.update(self.step, means, rate)
                    window_start, window_steps, totals = time.perf_counter(), 0, {}
                if config.val_every and self.step % config.val_every == 0:
                    self.validate()
                if self.step % config.save_every == 0 and self.step < config.steps:
                    self.save()
            progress.close()
            self.save()  # before anything after training that could fail
            if self.val_data is not None and (
                not config.val_every or self.step % config.val_every != 0
            ):
                self.validate()
                self.save()  # again, with the final validation
            self.plot()
        except TrainingDiverged:
            progress.close()
            raise
        except KeyboardInterrupt:
            progress.close()
            path = self.save()
            if self.is_main:
                print(f"interrupted at step {self.step}; checkpoint {path}", file=sys.stderr)
            raise
        finally:
            if self._board is not None:
                self._board.close()
                self._board = None
        return records

    def _plan(self) -> str:
        """One line saying what ``fit`` is about to do."""
        name = type(self.model).__name__
        parameters = f"{sum(p.numel() for p in self.model.parameters()):,} parameters"
        config = self.config
        if self.gated is not None and self.growth is not None:
            parameters = (
                f"{parameters}: a copy of the model, for {', '.join(self.growth.new_labels)} (a "
                "gate gives each image to the copy or to the networks before it)"
            )
        elif self.growth is not None:
            parameters = (
                f"{self._trained:,} of {parameters}: the new experts of "
                f"{', '.join(self.growth.new_labels)} and their router rows"
            )
        return (
            f"training {name} ({parameters}) from step {self.step} to "
            f"{config.steps} on {self.device}, batch {config.batch_size} of {config.crop}x"
            f"{config.crop} crops, CPR weight {config.cpr_weight:g} with {config.num_negatives} "
            f"negatives; writing to {str(self.out_dir)!r}"
        )

    def _claim_folder(self, overwrite: bool) -> None:
        """Make ``out_dir`` this run's folder, or refuse before anything is written."""
        folder = self.out_dir
        held = [name for name in RUN_FILES if (folder / name).exists()]
        owner = _folder_run(folder)
        own_checkpoint = (
            self._resumed_from is not None
            and self._resumed_from.resolve() == (folder / "last.pt").resolve()
            and owner in (None, self.run_id)
        )
        if held and owner != self.run_id and not own_checkpoint:
            if not overwrite:
                whose = f"run {owner}" if owner else "a run"
                resumed = (
                    f"; the checkpoint resumed, {str(self._resumed_from)!r}, is of run "
                    f"{self.run_id}"
                    if self._resumed_from is not None
                    else ""
                )
                raise InputError(
                    f"Trainer: expected out_dir {str(folder)!r} to be new, empty or this run's own "
                    f"folder, got one that holds {whose} ({', '.join(held)}){resumed}; resume it "
                    "from its own last.pt (--resume), choose another out_dir, or pass "
                    "--overwrite (fit(overwrite=True)) to replace it"
                )
            for name in (*RUN_FILES, *PLOT_FILES):
                (folder / name).unlink(missing_ok=True)
            for event in (folder / "tensorboard").glob("events.out.tfevents.*"):
                event.unlink()
        with writing(folder / "run.json") as temporary:
            temporary.write_text(json.dumps({"run": self.run_id}))

    def validate(self) -> EvaluationResult | None:
        """Protocol PSNR / SSIM of the EMA weights on the validation data (rank 0).

        A network whose prompt layers leave experts for negatives is also scored by
        [measure_effect][contrastive_prompts.app.effect.prompt_effect] on the centres of the
        same images, at most ``config.crop`` pixels a side (it runs the network several times an
        image, so its cost is bounded whatever the size of the validation images): the cost of a
        negative and of a swapped prompt, and per prompt layer whether the experts specialise; a
        layer whose experts do not is named in a warning on standard error.
        """
        if self.val_data is None or not self.is_main:
            return None
        pad = self.config.val_pad_multiple
        if pad is None:  # the reference model pads itself; another network may need it done
            pad = 1 if isinstance(self.restorer, SparsePromptIR | GatedRestorer) else 16
        result = evaluate(self.restorer, self.val_data, names=self.label_names, pad_multiple=pad)
        record: dict[str, Any] = {
            "step": self.step,
            "psnr": result.psnr,
            "ssim": result.ssim,
            "average_psnr": result.average_psnr,
            "average_ssim": result.average_ssim,
            "count": result.count,
        }
        if self.gated is not None:  # where the gate sent each degradation's images
            check = gate_check(self.gated, self.val_data, self.label_names)
            record["gate"] = {name: list(found) for name, found in check.items()}
            warning = gate_warning(check)
            if warning:
                print(f"step {self.step}: {warning}", file=sys.stderr)
        # the copy of a gated run knows only the new degradations: its prompts are not measured
        effect = self._prompt_effect(pad) if self.gated is None else None
        if effect is not None:
            record["negative_cost"] = effect.average("cost")
            record["swap_cost"] = effect.average("swap_cost")
            record["specialisation"] = {
                layer: found._asdict() for layer, found in effect.specialisation.items()
            }
            record["effect"] = effect.to_dict()
            warning = collapse_warning(effect.specialisation)
            if warning:
                print(f"step {self.step}: {warning}", file=sys.stderr)
        self.validations.append(record)
        self._log({"validation": record})
        if self._board is not None:
            self._board.validation(
                self.step, result.psnr, result.ssim, self._examples(pad), effect=effect
            )
        return result

    @property
    def restorer(self) -> nn.Module:
        """What validation scores and a checkpoint gives back: the EMA weights of the network, or
        for a run with ``growth="gated"`` the gated model around them."""
        return self.gated if self.gated is not None else self.ema.module

    def _prompt_effect(self, pad: int) -> PromptEffect | None:
        """Negative and swap costs and the experts' specialisation on the validation images."""
        model = self.ema.module
        if not has_negatives(model):
            return None

        def run(x: Tensor) -> Tensor:
            h, w = x.shape[-2:]
            out: Tensor = model(pad_to_multiple(x, pad))
            return out[..., :h, :w]

        side = self.config.crop

        def centres() -> Iterator[tuple[Tensor, Tensor, Tensor]]:
            for degraded, clean, labels in batches_of(self.val_data):
                h, w = degraded.shape[-2:]
                top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
                window = (..., slice(top, top + side), slice(left, left + side))
                yield degraded[window], clean[window], labels

        return measure_effect(
            model,
            centres,
            names=dict(enumerate(self.label_names)),
            num_negatives=1,
            generator=torch.Generator().manual_seed(self.config.seed),
            label_negatives=False,
            forward=run,
            y_channel=False,
            where="Trainer",
        )

    @torch.no_grad()
    def _examples(self, pad: int, limit: int = 6) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(degraded, restored, clean) for the first validation image of each degradation."""
        found: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        if self.val_data is None:
            return []
        model = self.restorer
        for index in range(len(self.val_data)):  # type: ignore[arg-type]
            degraded, clean, label = self.val_data[index]
            label = int(label)
            if label in found:
                continue
            x = degraded[None].to(self.device)
            h, w = x.shape[-2:]
            restored = model(pad_to_multiple(x, pad))[..., :h, :w][0].clamp(0, 1)
            found[label] = (degraded, restored.cpu(), clean)
            if len(found) >= min(limit, len(self.label_names)):
                break
        return [found[k] for k in sorted(found)]

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        make_folder(self.out_dir, "out_dir")
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json_text(record) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: weights, EMA, optimiser, schedule, step, RNG states."""
        return {
            "format": CHECKPOINT_FORMAT,
            "run": self.run_id,
            "config": asdict(self.config),
            "model_config": _model_config(self.model),
            "label_names": self.label_names,
            "gated": self._gated_state(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict(),
            "ema_n_averaged": self.ema.n_averaged.clone(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "history": self.history,
            "validations": self.validations,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                # the global state users seed, its key array as a list: no numpy in the pickle
                "numpy": [
                    v.tolist() if isinstance(v, np.ndarray) else v
                    for v in np.random.get_state()  # noqa: NPY002
                ],
                "python": random.getstate(),
            },
        }

    def _gated_state(self) -> dict[str, Any] | None:
        """What a gated run keeps beside the trained copy: the networks before it and the gate."""
        if self.gated is None:
            return None
        gate = self.gated.gate
        return {
            "networks": [n.state_dict() for n in self.gated.networks[:-1]],
            "gate": gate.state_dict(),
            **gated_layout(self.gated),
        }

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write a checkpoint atomically (a temporary file, then a rename); rank 0 only.

        Raises:
            TrainingDiverged: a weight is not finite; nothing is written, so the last
                checkpoint stays as it was.
        """
        target = Path(path) if path is not None else self.out_dir / "last.pt"
        weights = [*self.model.parameters(), *self.ema.module.parameters()]
        if not bool(torch.stack([w.isfinite().all() for w in weights]).all()):
            message = f"training diverged by step {self.step}: a weight is not finite; not saved"
            raise TrainingDiverged(message)
        if self.is_main:
            make_folder(target.parent, "the checkpoint's folder")
            with writing(target) as temporary, open(temporary, "wb") as f:
                torch.save(self.state_dict(), f)
                f.flush()
                os.fsync(f.fileno())
        self._saved = (target, self.step)
        return target

    def load(self, path: str | os.PathLike[str]) -> None:
        """Continue from a checkpoint, exactly where it stopped.

        ``path`` is a checkpoint written by [save][contrastive_prompts.app.train.Trainer.save].
        """
        state = read_checkpoint(path)
        mine, theirs = _model_config(self.model), state["model_config"]
        if (mine is None) != (theirs is None):
            kinds = ("your own network", "the reference model")
            raise CheckpointError(
                f"checkpoint {str(path)!r} is for {kinds[theirs is not None]}, the run trains "
                f"{kinds[mine is not None]}"
            )
        if mine is not None:
            differ = sorted(k for k in mine if mine[k] != as_tuple(theirs.get(k)))
            if differ:
                detail = ", ".join(
                    f"{k}: run {mine[k]!r}, checkpoint {theirs.get(k)!r}" for k in differ
                )
                raise CheckpointError(f"checkpoint {str(path)!r} is for another model ({detail})")
        problems = state_problems(self.model.state_dict(), state["model"], {})
        if problems:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit the run's model: " + "; ".join(problems)
            )
        run, saved = asdict(self.config), state["config"]
        # fields newer than the checkpoint, with the value it trained with
        saved = {**{k: v for k, v in ADDED_FIELDS.items() if k not in saved}, **saved}
        changed = [k for k in RUN_FIELDS if as_tuple(run[k]) != as_tuple(saved.get(k))]
        if run["grow_from"] is None and saved.get("grow_from") is None:
            changed = [k for k in changed if k != "growth"]  # it says how to grow: nothing here
        if changed:
            detail = ", ".join(f"{k}: run {run[k]!r}, checkpoint {saved.get(k)!r}" for k in changed)
            raise CheckpointError(
                f"checkpoint {str(path)!r} was trained with other options ({detail}); resuming "
                "exactly needs the same ones (the command line's --resume starts from them)"
            )
        if (self.gated is None) != (state.get("gated") is None):
            kinds = ("a model of one network", "a gated model")
            raise CheckpointError(
                f"checkpoint {str(path)!r} is for {kinds[state.get('gated') is not None]}, the run "
                f"trains {kinds[self.gated is not None]}"
            )
        if self.gated is not None:  # the networks and gate it saved, exactly
            saved_gated = state["gated"]
            kept = self.gated.networks[:-1]
            saved_networks = list(saved_gated["networks"])
            problems = [] if len(saved_networks) == len(kept) else ["another number of networks"]
            for network, weights in zip(kept, saved_networks, strict=False):
                problems += state_problems(network.state_dict(), weights, {})
            problems += state_problems(self.gated.gate.state_dict(), saved_gated["gate"], {})
            if problems:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} does not fit the run's gated model: "
                    + "; ".join(problems)
                )
            for network, weights in zip(kept, saved_networks, strict=True):
                network.load_state_dict(weights)
            self.gated.gate.load_state_dict(saved_gated["gate"])
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.ema.n_averaged.copy_(state["ema_n_averaged"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.validations = list(state["validations"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"][: torch.cuda.device_count()])
        np.random.set_state(tuple(rng["numpy"]))  # noqa: NPY002
        self._saved = (Path(path), self.step)
        self._resumed_from = Path(path)
        self._announce_resume = True
        if isinstance(state.get("run"), str):  # checkpoints before 0.3 name no run
            self.run_id = state["run"]
        random.setstate(rng["python"])

    # -- plots ---------------------------------------------------------------------------------

    def plot(self) -> list[Path]:
        """Write ``loss.png``, ``validation.png`` and ``experts.png`` to ``out_dir`` (rank 0)."""
        if not self.is_main or not self.history:
            return []
        from .plots import plot_training

        return plot_training(self.history, self.validations, self.label_names, self.out_dir)


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator's refusal (CUDA's, or the CPU's raised as RuntimeError)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


RUN_FILES = ("run.json", "config.json", "log.jsonl", "last.pt")
"""The files that make a folder a run's: a new run refuses a folder holding any of them."""

PLOT_FILES = ("loss.png", "validation.png", "experts.png")

LOCK_FILE = "fit.lock"
"""Held by a ``fit`` while it writes to its folder; left behind, empty, when it is released."""


def _folder_run(folder: Path) -> str | None:
    """The run named by ``folder/run.json``, or ``None`` (no such file, or not readable)."""
    try:
        record = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    run = record.get("run") if isinstance(record, dict) else None
    return run if isinstance(run, str) else None


def _truncate_log(log: Path, step: int) -> None:
    """Drop the records of steps after ``step`` (logged before a crash, redone on resume).

    A line cut short by the crash is dropped too. The log is rewritten atomically.
    """
    if not log.is_file():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        inner = next((record[k] for k in ("validation", "diverged") if k in record), record)
        if isinstance(inner, dict) and int(inner.get("step", 0)) <= step:
            kept.append(line)
    with writing(log) as temporary:
        temporary.write_text("".join(f"{line}\n" for line in kept))
