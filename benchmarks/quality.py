"""Restoration quality without prompts, with dense prompts and with CPL: seeds, unseen photos.

Every variant trains the same small network on the same data stream per seed, for each seed of
``--seeds``:

- ``none``: the network without prompts (L1);
- ``dense``: PromptIR's dense prompts, ``top_k = num_prompts`` (L1);
- ``sparse``: sparse top-1 prompts without CPR (L1), to separate the two parts of CPL;
- ``cpl``: sparse top-1 prompts with contrastive prompt regularisation (L1 + lambda * CPR), once
  per ``--cpl`` spec, so the same run compares CPR settings.

The six colour photos that ship with scikit-image (the others are grey, synthetic or
microscopy; the right view of ``stereo_motorcycle`` repeats the left one's scene) are split
three ways (see ``photo_split``): three train the networks, less a strip on the right of each;
crops of those strips are the selection set, on which the CPR settings are chosen; the three
others, never trained on and never used by this script for a choice, are the report set. Each
set is scored with the EMA weights under every degradation of the mix, image by image, with the
same degraded inputs for every seed. Per set, variant and degradation the summary gives the mean
and standard deviation over seeds, and the paired difference against dense prompts over every
(seed, image) pair with the standard deviation of those pairs: a difference no larger than its
spread is a tie.

The CPR setting with the best seed-averaged selection score is chosen only when it beats the
fallback (``--fallback``, the paper's settings) by more than the spread of their paired
difference; otherwise the fallback is kept. The last line printed is one JSON object (also
written to ``--json`` after every run, with the variants that have every seed summarised).

    python benchmarks/quality.py --steps 128 --ema-decay 0.97 --threads 1 \\
        --cpl default subtractive/filters/0.01/4 --fallback subtractive/filters/0.01/4
    python benchmarks/quality.py --mix 5task --seeds 0 1 2 3 4 --cpl default default+labels
    python benchmarks/quality.py --preset small --steps 4000 --crop 128 --batch 16 --device cuda

With few steps, lower ``--ema-decay`` too: the EMA weights start as a copy of the first step's,
which still weigh ``ema_decay ** steps`` at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch

from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.data import DegradedCopies, SyntheticDataset, sample_images
from contrastive_prompts.app.degradations import MIXES
from contrastive_prompts.app.metrics import evaluate
from contrastive_prompts.app.train import Trainer

TRAIN_PHOTOS = ("astronaut", "hubble_deep_field", "stereo_motorcycle")
"""Photos the networks train on, less a strip on the right that the selection crops come from."""
REPORT_PHOTOS = ("chelsea", "coffee", "rocket")
"""Photos never trained on and never used for a choice: the reported figures."""


def photo_split(
    *, strip: int, report_crop: int | None
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(train, selection, report)`` images; selection and report as ``{name: image}``.

    Each training photo loses its ``strip`` rightmost columns; two ``strip x strip`` squares
    from that strip (centred at a quarter and three quarters of the height) are its selection
    crops, so no selection pixel is ever trained on. Report photos are centre-cropped to
    ``report_crop`` (``None``: whole).
    """
    photos = sample_images([*TRAIN_PHOTOS, *REPORT_PHOTOS])
    train, selection, report = [], {}, {}
    for name in TRAIN_PHOTOS:
        image = photos[name]
        h, w = image.shape[-2:]
        if h < 2 * strip or w < 2 * strip:
            raise SystemExit(f"--strip: expected at most {min(h, w) // 2} for {name}, got {strip}")
        train.append(image[:, :, : w - strip])
        for part, centre in (("upper", h // 4), ("lower", 3 * h // 4)):
            top = min(max(0, centre - strip // 2), h - strip)
            selection[f"{name} strip {part}"] = image[:, top : top + strip, w - strip :]
    for name in REPORT_PHOTOS:
        image = photos[name]
        if report_crop is not None:
            h, w = image.shape[-2:]
            side_h, side_w = min(report_crop, h), min(report_crop, w)
            top, left = (h - side_h) // 2, (w - side_w) // 2
            image = image[:, top : top + side_h, left : left + side_w]
        report[name] = image
    return train, selection, report


def parse_cpl(spec: str) -> dict[str, object]:
    """``default`` or ``mode/features/weight[/negatives[/temperature]]``, then ``+labels``,
    ``+nolabels``, ``+balance=W`` or ``+routing=W`` as often as wanted -> the TrainConfig fields
    that differ from the defaults."""
    head, *flags = spec.split("+")
    fields: dict[str, object] = {}
    if head != "default":
        parts = head.split("/")
        if not 3 <= len(parts) <= 5:
            raise SystemExit(
                "--cpl: expected 'default' or mode/features/weight[/negatives[/temperature]] "
                f"with +labels, +nolabels, +balance=W or +routing=W after it, got {spec!r}"
            )
        fields.update(cpr_mode=parts[0], cpr_features=parts[1], cpr_weight=float(parts[2]))
        if len(parts) > 3:
            fields["num_negatives"] = int(parts[3])
        if len(parts) > 4:
            fields["temperature"] = float(parts[4])
    for flag in flags:
        if flag in ("labels", "nolabels"):
            fields["use_labels"] = flag == "labels"
        elif flag.startswith("balance="):
            fields["balance_weight"] = float(flag.removeprefix("balance="))
        elif flag.startswith("routing="):
            fields["routing_weight"] = float(flag.removeprefix("routing="))
        else:
            raise SystemExit(
                f"--cpl: expected +labels, +nolabels, +balance=W or +routing=W in {spec!r}, "
                f"got +{flag}"
            )
    return fields


def cpl_name(spec: str) -> str:
    return "cpl" if spec == "default" else f"cpl {spec}"


def variant_configs(base: TrainConfig, variants: list[str], specs: list[str]) -> dict[str, Any]:
    """``{variant name: TrainConfig}`` in the order they run."""
    runs: dict[str, TrainConfig] = {}
    if "none" in variants:
        runs["none"] = dataclasses.replace(base, use_prompts=False, cpr_weight=0.0)
    if "dense" in variants:
        runs["dense"] = dataclasses.replace(base, top_k=5, cpr_weight=0.0)
    if "sparse" in variants:
        runs["sparse"] = dataclasses.replace(base, cpr_weight=0.0)
    if "cpl" in variants:
        for spec in specs:
            runs[cpl_name(spec)] = dataclasses.replace(base, **parse_cpl(spec))
    return runs


# -- the statistics ----------------------------------------------------------------------------


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values)}


def mark(mean: float, std: float) -> str:
    """``gain`` / ``loss`` when the difference exceeds its spread, ``tie`` otherwise."""
    if abs(mean) <= std:
        return "tie"
    return "gain" if mean > 0 else "loss"


def seed_figures(scores: dict[str, list[float]]) -> dict[str, float]:
    """One seed's figure per degradation (mean over images) and their average."""
    out = {deg: statistics.fmean(values) for deg, values in scores.items()}
    out["average"] = statistics.fmean(out.values())
    return out


def paired(a: dict[str, dict[str, list[float]]], b: dict[str, dict[str, list[float]]],
           seeds: list[str]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``a - b`` per (seed, image) pair, per degradation and averaged over degradations.

    ``a`` and ``b`` are ``{seed: {degradation: [per-image PSNR]}}``. Returns per column the mean
    and standard deviation over the pairs, their number and the tie mark.
    """
    degradations = list(a[seeds[0]])
    pairs: dict[str, list[float]] = {deg: [] for deg in [*degradations, "average"]}
    for seed in seeds:
        per_image = [
            [x - y for x, y in zip(a[seed][deg], b[seed][deg], strict=True)] for deg in degradations
        ]
        for deg, diffs in zip(degradations, per_image, strict=True):
            pairs[deg].extend(diffs)
        pairs["average"].extend(statistics.fmean(d) for d in zip(*per_image, strict=True))
    out = {}
    for column, diffs in pairs.items():
        stats = _mean_std(diffs)
        out[column] = {**stats, "pairs": len(diffs), "mark": mark(stats["mean"], stats["std"])}
    return out


def summarise(runs: dict[str, dict[str, Any]], set_name: str) -> dict[str, Any]:
    """Mean and spread over seeds per variant, and paired differences against ``dense``."""
    out: dict[str, Any] = {}
    for variant, by_seed in runs.items():
        seeds = list(by_seed)
        row: dict[str, Any] = {}
        for metric in ("psnr", "ssim"):
            per_seed = [seed_figures(by_seed[s][set_name][metric]) for s in seeds]
            row[metric] = {
                column: {
                    **_mean_std([f[column] for f in per_seed]),
                    "per_seed": [f[column] for f in per_seed],
                }
                for column in per_seed[0]
            }
        if "dense" in runs and variant != "dense":
            row["vs_dense"] = paired(
                {s: by_seed[s][set_name]["psnr"] for s in seeds},
                {s: runs["dense"][s][set_name]["psnr"] for s in seeds},
                seeds,
            )
        out[variant] = row
    return out


def choose(runs: dict[str, dict[str, Any]], summary: dict[str, Any], fallback: str) -> dict:
    """The CPR setting to keep: the best on the selection set if it beats ``fallback`` by more
    than the spread of their paired difference, else ``fallback``."""
    candidates = [v for v in runs if v.startswith("cpl")]
    if fallback not in candidates:
        raise SystemExit(f"--fallback: expected one of {candidates}, got {fallback!r}")
    best = max(candidates, key=lambda v: summary[v]["psnr"]["average"]["mean"])
    out: dict[str, Any] = {"candidates": candidates, "best": best, "fallback": fallback}
    if best == fallback:
        out["chosen"] = fallback
        return out
    seeds = list(runs[best])
    difference = paired(
        {s: runs[best][s]["selection"]["psnr"] for s in seeds},
        {s: runs[fallback][s]["selection"]["psnr"] for s in seeds},
        seeds,
    )["average"]
    out["best_vs_fallback"] = difference
    out["chosen"] = best if difference["mark"] == "gain" else fallback
    return out


def report(runs: dict[str, dict[str, Any]], fallback: str | None) -> dict[str, Any]:
    """Summaries of both sets and the choice, over the variants that have every seed."""
    out: dict[str, Any] = {s: summarise(runs, s) for s in ("selection", "report")}
    if fallback is not None and any(v.startswith("cpl") for v in runs):
        out["choice"] = choose(runs, out["selection"], fallback)
    return out


def table(summary: dict[str, Any], degradations: list[str]) -> str:
    """Markdown: PSNR mean ± std over seeds, then the paired difference against dense."""
    columns = [*degradations, "average"]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant, row in summary.items():
        cells = [f"{row['psnr'][c]['mean']:.2f} ± {row['psnr'][c]['std']:.2f}" for c in columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "| vs dense | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant, row in summary.items():
        if "vs_dense" in row:
            diff = row["vs_dense"]
            cells = [f"{diff[c]['mean']:+.2f} ± {diff[c]['std']:.2f} {diff[c]['mark']}"
                     for c in columns]  # fmt: skip
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the runs ----------------------------------------------------------------------------------


def scores(model: torch.nn.Module, data: DegradedCopies, names: list[str]) -> dict[str, Any]:
    """``{"psnr"|"ssim": {degradation: [one figure per image, in the order of names]}}``."""
    result = evaluate(model, data)
    labels = len(data.names)
    out: dict[str, Any] = {m: {deg: [] for deg in data.names.values()} for m in ("psnr", "ssim")}
    for k, (label, p, s) in enumerate(result.per_image):
        if k // labels >= len(names) or label != k % labels:
            raise RuntimeError(f"evaluate: expected items image-major, got label {label} at {k}")
        out["psnr"][data.names[label]].append(p)
        out["ssim"][data.names[label]].append(s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--mix", default="3task", choices=sorted(MIXES))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads for torch (default: what torch has)")  # fmt: skip
    parser.add_argument("--strip", type=int, default=128,
                        help="width of the strip held out of each training photo, and side of "
                             "the selection crops")  # fmt: skip
    parser.add_argument("--report-crop", type=int, default=256,
                        help="centre crop of the report photos (0: whole photos)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=["none", "dense", "sparse", "cpl"],
                        choices=("none", "dense", "sparse", "cpl"))  # fmt: skip
    parser.add_argument("--cpl", nargs="+", default=["default"],
                        help="CPR settings: 'default' (the library's) or "
                             "mode/features/weight[/negatives[/temperature]], then +labels "
                             "or +nolabels (label-aware negatives or not), +balance=W or "
                             "+routing=W (the label-routing term)")  # fmt: skip
    parser.add_argument("--fallback", default=None,
                        help="the --cpl spec kept when no setting beats it by more than the "
                             "spread (default: the first)")  # fmt: skip
    parser.add_argument("--out", default="results/quality")
    parser.add_argument("--json", help="rewrite this JSON file after every run")
    args = parser.parse_args()
    if len(set(args.seeds)) < 2:
        raise SystemExit(f"--seeds: expected at least two different seeds, got {args.seeds}")
    torch.set_num_threads(args.threads)
    fallback = cpl_name(args.fallback or args.cpl[0]) if "cpl" in args.variants else None

    train_images, selection_images, report_images = photo_split(
        strip=args.strip, report_crop=args.report_crop or None
    )
    sets = {
        "selection": (list(selection_images), DegradedCopies(
            list(selection_images.values()), args.mix, seed=2)),
        "report": (list(report_images), DegradedCopies(
            list(report_images.values()), args.mix, seed=1)),
    }  # fmt: skip
    degradations = list(sets["report"][1].names.values())
    base = TrainConfig(
        preset=args.preset, mix=args.mix, steps=args.steps, crop=args.crop,
        batch_size=args.batch, lr=args.lr, warmup_steps=max(1, args.steps // 20),
        ema_decay=args.ema_decay, device=args.device, precision=args.precision,
        val_every=0, save_every=args.steps, log_every=max(1, args.steps // 10),
    )  # fmt: skip
    configs = variant_configs(base, args.variants, args.cpl)
    if fallback is not None and fallback not in configs:
        raise SystemExit(f"--fallback: expected one of --cpl {args.cpl}, got {args.fallback!r}")
    header: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/quality.py", *sys.argv[1:]]),
        "args": vars(args),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "split": {
            "train": [f"{n} less its {args.strip} rightmost columns" for n in TRAIN_PHOTOS],
            "selection": sets["selection"][0],
            "report": sets["report"][0],
        },
        "degradations": degradations,
    }
    runs: dict[str, dict[str, Any]] = {}
    complete: dict[str, dict[str, Any]] = {}
    for variant, config in configs.items():  # every seed of a variant before the next variant
        for seed in args.seeds:
            tag = f"{variant.replace(' ', '_').replace('/', '-')}/seed{seed}"
            config_seed = dataclasses.replace(config, seed=seed, out_dir=f"{args.out}/{tag}")
            train = SyntheticDataset(
                train_images, args.mix, crop_size=args.crop, seed=seed, cache=True
            )
            trainer = Trainer(config_seed, train_data=train)
            trainer.val_data = None  # scored below, on both sets
            header["machine"]["device"] = (
                torch.cuda.get_device_name(trainer.device)
                if trainer.device.type == "cuda" else "cpu"
            )  # fmt: skip
            start = time.perf_counter()
            trainer.fit()
            seconds = time.perf_counter() - start
            record = {s: scores(trainer.ema.module, data, names)
                      for s, (names, data) in sets.items()}  # fmt: skip
            record["train_seconds"] = seconds
            runs.setdefault(variant, {})[str(seed)] = record
            figures = seed_figures(record["report"]["psnr"])
            print(f"{variant} seed {seed}: report average {figures['average']:.2f} dB "
                  f"after {seconds:.0f} s", flush=True)  # fmt: skip
            if len(runs[variant]) == len(args.seeds):
                complete[variant] = runs[variant]
            result = {**header, "runs": runs,
                      **(report(complete, fallback if fallback in complete else None)
                         if len(complete) else {})}  # fmt: skip
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(result, f)

    summary = report(complete, fallback)
    machine = header["machine"]
    print(f"\npreset={args.preset} mix={args.mix} steps={args.steps} crop={args.crop} "
          f"batch={args.batch} seeds={args.seeds} device={machine['device']} "
          f"threads={machine['threads']}")  # fmt: skip
    for set_name in ("selection", "report"):
        print(f"\n{set_name} set: {', '.join(header['split'][set_name])}")
        print(table(summary[set_name], degradations))
    if "choice" in summary:
        print(f"\nchoice on the selection set: {summary['choice']}")
    print(json.dumps({**header, "runs": runs, **summary}))


if __name__ == "__main__":
    main()
