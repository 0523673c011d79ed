"""Timing and memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from contrastive_prompts.app.train import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object],
    *,
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    calls: dict[str, Callable[[], object]],
    *,
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Median seconds of each call, timed round-robin (in a rotating order) so that machine noise
    and the state one call leaves behind hit all alike."""
    device = torch.device(device)
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(repeats):
        # rotate the order each round, so no call always follows the same neighbour
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            fn = calls[name]
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class _PeakLive(TorchDispatchMode):
    """Tracks the peak bytes of live tensor storages created by ops while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.largest = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key in self._seen or storage.nbytes() == 0:
                    continue
                self._seen.add(key)
                nbytes = storage.nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                self.largest = max(self.largest, nbytes)
                weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_memory(fn: Callable[[], object], *, device: torch.device | str = "cpu") -> dict[str, int]:
    """Peak bytes allocated by ``fn()`` above what was live before, and its largest tensor.

    On CUDA, ``torch.cuda.max_memory_allocated``; elsewhere a dispatch mode that follows the
    storages every op creates until they are freed (the same quantity, counted op by op).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        mode = _PeakLive()
        with mode:
            fn()
        torch.cuda.synchronize(device)
        return {"peak": torch.cuda.max_memory_allocated(device) - base, "largest": mode.largest}
    mode = _PeakLive()
    with mode:
        fn()
    return {"peak": mode.peak, "largest": mode.largest}


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plug_into_your_network.py"


def example_module() -> Any:
    """The plug-in example, imported by path (once)."""
    if "plug_into_your_network" in sys.modules:
        return sys.modules["plug_into_your_network"]
    spec = importlib.util.spec_from_file_location("plug_into_your_network", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def example_network() -> nn.Module:
    """``build_network()`` of the plug-in example, imported by path."""
    module = example_module()
    if not hasattr(module, "build_network"):
        raise SystemExit(f"expected build_network() in {EXAMPLE}, found none")
    network: nn.Module = module.build_network()
    return network


def library_state() -> dict[str, Any]:
    """The library's commit, and which of its files differed from it when measured."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "contrastive_prompts"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.split("\n")  # fmt: skip
        return {"commit": commit, "uncommitted": sorted(line[3:] for line in changed if line)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted": None}


def train_or_resume(config: Any, **options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Train a ``TrainConfig`` to its steps (carrying on from ``out_dir/last.pt``).

    Returns the EMA model, in eval mode, and the run's facts: steps and parameters in the
    optimiser.
    """

    trainer = Trainer(config, **options)
    last = Path(config.out_dir, "last.pt")
    if last.exists():
        trainer.load(last)
    if trainer.step < config.steps:
        trainer.fit()
    facts = {
        "steps": trainer.step,
        "trained_parameters": sum(
            p.numel() for g in trainer.optimizer.param_groups for p in g["params"]
        ),
    }
    return trainer.ema.module.eval(), facts
