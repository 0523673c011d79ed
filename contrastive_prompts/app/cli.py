"""The ``contrastive-prompts`` command line (also ``python -m contrastive_prompts``).

Subcommands: ``train`` (every [TrainConfig][contrastive_prompts.app.config.TrainConfig] field is a
flag; works under ``torchrun``), ``evaluate`` (per-degradation PSNR / SSIM, and for a model
with sparse prompts the PSNR under its own against negative prompts), ``restore`` (images or
folders in, restored images out, tiled; never over an existing file unless ``--overwrite``,
never over an input), ``export`` (a checkpoint's weights as ``.safetensors``, as a model folder
with its card with ``--format folder``, or the network as ONNX with ``--format onnx``) and
``demo``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import InputError
from .data import BENCHMARKS, image_paths
from .files import check_folder, json_text, make_folder, remove_stale, writing

__all__ = ["main"]


class _NoneGiven:
    """Marks an option set to ``none`` on the command line (``None`` means "not given")."""


NONE_GIVEN = _NoneGiven()


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return NONE_GIVEN if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _int_or_none(text: str) -> int | None:
    return None if text.lower() in ("none", "null") else int(text)


def _seed(text: str) -> int:
    from .config import MAX_SEED

    seed = int(text)
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63 - 1], got {text}")
    return seed


def _pixels(text: str) -> int | None:
    pixels = _int_or_none(text)
    if pixels is not None and pixels < 1:
        raise argparse.ArgumentTypeError(f"expected a number of pixels >= 1 or none, got {text}")
    return pixels


def _pad_multiple(text: str) -> int:
    from ..reference.padding import MAX_PAD_MULTIPLE

    multiple = int(text)
    if not 1 <= multiple <= MAX_PAD_MULTIPLE:
        raise argparse.ArgumentTypeError(
            f"expected a multiple in [1, {MAX_PAD_MULTIPLE}], got {text}"
        )
    return multiple


def _tile(text: str) -> int | str | None:
    return "auto" if text.lower() == "auto" else _int_or_none(text)


_REFERENCE = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")  # a docs cross-reference, [text][target]


def _plain(text: str) -> str:
    """A field's description as help text: ``[text][target]`` is ``text``; no backticks."""
    return _REFERENCE.sub(r"\1", text).replace("`", "").replace("%", "%%")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from ..core.loss import MODES
    from ..reference.model import MODEL_PRESETS
    from .config import GROWTHS, PRECISIONS, TrainConfig
    from .degradations import MIXES

    # the names a field takes, listed by --help and checked by argparse, from their one home
    choices = {"preset": list(MODEL_PRESETS), "mix": list(MIXES), "cpr_mode": list(MODES),
               "precision": list(PRECISIONS), "growth": list(GROWTHS)}  # fmt: skip
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        default = getattr(defaults, f.name)
        help_text = f"{_plain(f.metadata['help'])} (default: the recipe's, else {default!r})"
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)  # fmt: skip
        elif typing.get_origin(hint) is list:
            parser.add_argument(flag, nargs="+", default=None, help=help_text,
                                choices=choices.get(f.name))  # fmt: skip
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, nargs=len(args), type=args[0], default=None, help=help_text)
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            inner = next(a for a in args if a is not type(None))
            parser.add_argument(flag, type=_optional(inner), default=None, help=help_text)
        else:
            parser.add_argument(flag, type=hint, default=None, help=help_text,
                                choices=choices.get(f.name))  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    from .checkpoints import read_checkpoint
    from .config import RECIPES, TrainConfig
    from .train import Trainer, TrainingDiverged

    overrides: dict[str, Any] = {
        f.name: None if value is NONE_GIVEN else value
        for f in dataclasses.fields(TrainConfig)
        if (value := getattr(args, f.name)) is not None
    }
    if "betas" in overrides:
        overrides["betas"] = tuple(overrides["betas"])
    checkpoint = None
    if args.resume:
        if args.config:
            raise InputError(
                "train: expected --resume or --config, got both: a resumed run starts from its "
                "checkpoint's options (flags may change steps, logging, validation and output)"
            )
        # a resumed run starts from the checkpoint's own options; flags change only what they name
        out_dir = overrides.get("out_dir") or (
            RECIPES[args.recipe].out_dir if args.recipe else TrainConfig().out_dir
        )
        checkpoint = Path(args.resume) if args.resume != "last" else Path(out_dir, "last.pt")
        config = TrainConfig.from_dict(read_checkpoint(checkpoint)["config"])
    else:
        config = RECIPES[args.recipe] if args.recipe else TrainConfig()
        if args.config:
            try:
                values = json.loads(Path(args.config).read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
                detail = "nested too deeply" if isinstance(error, RecursionError) else error
                raise InputError(
                    f"train: expected --config to be a JSON file, got {args.config!r}, which is "
                    f"not valid JSON ({detail})"
                ) from error
            if not isinstance(values, dict):
                raise InputError(
                    f"--config {args.config!r}: expected a JSON object of TrainConfig fields, "
                    f"got a JSON {type(values).__name__}"
                )
            config = TrainConfig.from_dict({**dataclasses.asdict(config), **values})
    config = dataclasses.replace(config, **overrides)
    if config.init_promptir and config.preset != "base" and "preset" not in overrides:
        # PromptIR's weights fit the base preset alone: choose it rather than refuse
        config = dataclasses.replace(config, preset="base")
        print("--init-promptir: training the base preset (PromptIR's size)", file=sys.stderr)
    trainer = Trainer(config)
    if checkpoint is not None:
        trainer.load(checkpoint)
        if trainer.step >= config.steps:
            raise InputError(
                f"train: expected --steps beyond the checkpoint's step {trainer.step} to train "
                f"on, got {config.steps}"
            )
    try:
        trainer.fit(overwrite=args.overwrite)
    except KeyboardInterrupt:
        return 130
    except TrainingDiverged as error:
        print(f"contrastive-prompts train: error: {error}", file=sys.stderr)
        return 1
    if trainer.is_main:
        print(f"done: {config.out_dir} (checkpoint last.pt, log.jsonl, plots)")
    return 0


def _dataset(args: argparse.Namespace) -> Any:
    from . import data
    from .degradations import make_mix

    if args.benchmark:
        if not args.root:
            raise InputError(f"evaluate: expected --root with --benchmark {args.benchmark}")
        return data.read_benchmark(
            args.benchmark, args.root, sigma=args.sigma, max_pixels=args.max_pixels
        )
    if not args.data:
        raise InputError("evaluate: expected --data FOLDER or --benchmark NAME --root FOLDER")
    paths = image_paths(args.data)
    _check_images(args.command, paths, args.max_pixels)
    images = [_read(p, args.max_pixels) for p in paths]
    mix = make_mix(args.mix, add=args.add_degradations or ())
    return data.DegradedCopies(images, mix, seed=args.seed)


def _read(path: Path, max_pixels: int | None) -> torch.Tensor:
    from .data import read_image

    try:
        return read_image(path, max_pixels=max_pixels)
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"cannot read image {str(path)!r}: {error}") from error


def _check_images(command: str, paths: Sequence[Path], max_pixels: int | None) -> None:
    """Every input's header, checked before any work: all the bad files, in one line."""
    from .data import check_image_file

    bad = []
    for path in paths:
        try:
            check_image_file(path, max_pixels=max_pixels)
        except (InputError, OSError) as error:
            bad.append(str(error).split(": ", 1)[-1])
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise InputError(
            f"{command}: expected image files it can read (within --max-pixels), got {len(bad)} of "
            f"{len(paths)} inputs that are not: {'; '.join(bad[:3])}{more}; nothing was done"
        )


def _model(args: argparse.Namespace) -> Any:
    from .checkpoints import load_checkpoint_model
    from .config import resolve_device

    device = resolve_device(args.command, args.device)
    model = load_checkpoint_model(
        args.checkpoint, device=device, promptir_top_k=args.promptir_top_k
    )
    return model, device


def _evaluate(args: argparse.Namespace) -> int:
    from ..reference.gated import GatedRestorer
    from ..reference.padding import pad_to_multiple
    from .effect import has_negatives, measure_effect
    from .metrics import batches_of, evaluate, names_of

    if args.json:
        _check_json_target(args)
    model, _ = _model(args)
    dataset = _dataset(args)

    def restored(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, args.pad_multiple)
        out: torch.Tensor = model.restore(
            padded, tile=args.tile, overlap=args.overlap, routing=args.routing
        )
        return out[..., :h, :w]

    result = evaluate(restored, dataset, y_channel=args.y_channel)
    print(result.to_markdown())
    figures: dict[str, Any] = dataclasses.asdict(result)
    gated = isinstance(model, GatedRestorer)
    if args.prompt_effect and gated:
        print(
            "\nPrompt effect: not measured for a gated model (each network knows only its own "
            "degradations); the table above is the gated model's",
            file=sys.stderr,
        )
    if args.prompt_effect and has_negatives(model) and not gated:
        # the same images again, under the model's own prompts and under negative prompts
        effect = measure_effect(
            model,
            lambda: batches_of(dataset),
            names=names_of(dataset),
            num_negatives=1,
            generator=None,
            label_negatives=False,
            forward=restored,
            y_channel=args.y_channel,
            where="evaluate",
        )
        print(
            "\nPrompt effect: PSNR under the model's own prompts, under negative prompts "
            "(experts its routers did not select) and under swapped prompts (the experts another "
            "degradation uses most); each cost is own minus that; then whether each prompt "
            "layer's experts specialise\n"
        )
        print(effect.table())
        figures["prompt_effect"] = effect.to_dict()
    if args.json:
        target = Path(args.json)
        make_folder(target.parent, "the folder of --json")
        with writing(target) as temporary:  # never a half-written table
            temporary.write_text(json_text(figures))
    return 0


def _check_json_target(args: argparse.Namespace) -> None:
    """Refuse ``--json`` before any work: an input of the run, an existing file, a bad folder."""
    target = Path(args.json)
    inputs = [Path(args.checkpoint)]
    if args.data:
        inputs += [p for p in map(Path, args.data) if p.is_file()]
        inputs += [p for d in map(Path, args.data) if d.is_dir() for p in d.iterdir()]
    resolved = target.resolve()
    if any(p.exists() and p.resolve() == resolved for p in inputs) or (
        args.root and target.is_file() and resolved.is_relative_to(Path(args.root).resolve())
    ):
        raise InputError(
            f"evaluate: expected --json to name a file apart from the inputs, got {args.json!r}, "
            "which is the checkpoint or an input image; inputs are never written over, even "
            "with --overwrite"
        )
    if target.exists() and not args.overwrite:
        # checked before any work, like restore: a user's file is never replaced unasked
        raise InputError(
            f"evaluate: expected --json to name a new file, got {args.json!r}, which exists; "
            "pass --overwrite to replace it"
        )
    if target.is_dir():
        raise InputError(f"evaluate: expected --json to name a file, got {args.json!r}, a folder")
    check_folder(target.parent, "the folder of --json")


def _listed(paths: Sequence[object], limit: int = 8) -> str:
    names = [str(p) for p in paths]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def restore_plan(
    inputs: Sequence[Path], out_dir: Path, *, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs for ``restore``, checked before any work is done.

    Each input ``x.*`` goes to ``out_dir / "x.png"``. Refused: two inputs with one output name;
    an output that is one of the inputs (never written over, even with ``overwrite``); an
    output that exists, unless ``overwrite``.

    Raises:
        InputError: listing every clash, input or existing file.
    """
    plan, sources = [], set()
    for path in inputs:
        if path.resolve() not in sources:  # a file named twice is restored once
            sources.add(path.resolve())
            plan.append((path, out_dir / f"{path.stem}.png"))
    by_output: dict[Path, list[Path]] = {}
    for source, target in plan:
        by_output.setdefault(target, []).append(source)
    clashes = [f"{_listed(s)} -> {t}" for t, s in by_output.items() if len(s) > 1]
    if clashes:
        raise InputError(
            "restore: expected inputs with distinct names, got inputs that would share an "
            f"output: {'; '.join(clashes)}; restore them into separate --output folders"
        )
    over_inputs = [t for _, t in plan if t.resolve() in sources]
    if over_inputs:
        raise InputError(
            f"restore: expected an --output folder apart from the inputs, got outputs that are "
            f"input files ({_listed(over_inputs)}); inputs are never written over"
        )
    existing = [t for _, t in plan if t.exists()]
    if existing and not overwrite:
        raise InputError(
            f"restore: expected new output files, got {len(existing)} that exist "
            f"({_listed(existing)}); pass --overwrite to replace them"
        )
    return plan


def _restore(args: argparse.Namespace) -> int:
    from .data import write_image

    out_dir = check_folder(args.output, "the output folder")  # before any work
    plan = restore_plan(image_paths(args.inputs), out_dir, overwrite=args.overwrite)
    _check_images("restore", [source for source, _ in plan], args.max_pixels)
    model, device = _model(args)
    make_folder(out_dir, "the output folder")
    remove_stale(out_dir)
    failed = []
    for source, target in plan:
        try:
            image = _read(source, args.max_pixels).to(device)
        except InputError as error:  # a body that does not decode: the others are still done
            print(f"{source}: skipped: {error}", file=sys.stderr)
            failed.append(str(source))
            continue
        with torch.no_grad():
            restored = model.restore(
                image, tile=args.tile, overlap=args.overlap, routing=args.routing
            )
        # written whole or not at all: a temporary file of its own, then a rename
        with writing(target) as temporary:
            write_image(temporary, restored.cpu())
        print(f"{source} -> {target}")
    if failed:
        raise InputError(
            f"restore: expected every input to decode, got {len(failed)} that did not "
            f"({_listed(failed)}); the other {len(plan) - len(failed)} were restored"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from .checkpoints import export_weights, load_checkpoint_model
    from .export import export_onnx
    from .pretrained import export_folder

    if args.repo_id is not None and args.format != "folder":
        raise InputError(f"export: --repo-id goes with --format folder, got --format {args.format}")
    if args.format == "safetensors":
        target = export_weights(
            args.checkpoint, args.target, ema=not args.raw, overwrite=args.overwrite
        )
    elif args.format == "folder":
        target = export_folder(
            args.checkpoint,
            args.target,
            ema=not args.raw,
            repo_id=args.repo_id,
            overwrite=args.overwrite,
        )
    else:
        model = load_checkpoint_model(args.checkpoint, ema=not args.raw)
        try:
            target = export_onnx(model, args.target, overwrite=args.overwrite)
        except ModuleNotFoundError as error:
            raise InputError(str(error)) from error
    print(f"{args.checkpoint} -> {target}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, steps=args.steps, overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import RECIPES
    from .data import MAX_IMAGE_PIXELS
    from .degradations import DEGRADATIONS, MIXES

    parser = argparse.ArgumentParser(
        prog="contrastive-prompts",
        description="All-in-one image restoration with Contrastive Prompt Learning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (run under torchrun for several GPUs)")
    train.add_argument("--recipe", choices=sorted(RECIPES), help="start from a named recipe")
    train.add_argument("--config", help="a JSON file of TrainConfig fields")
    train.add_argument("--resume", nargs="?", const="last", default=None,
                       help="continue from a checkpoint (default: OUT_DIR/last.pt)")  # fmt: skip
    train.add_argument("--overwrite", action="store_true",
                       help="replace another run held by --out-dir (its checkpoint, log, "
                       "configuration and plots); without it such a folder is refused")  # fmt: skip
    _add_config_flags(train)
    train.set_defaults(run=_train)

    def add_model_flags(p: argparse.ArgumentParser, *, tile: int | str | None) -> None:
        from ..reference.model import ROUTINGS

        p.add_argument("--checkpoint", required=True,
                       help="a checkpoint from train, weights or a model folder from export, "
                       "or an official PromptIR checkpoint")  # fmt: skip
        p.add_argument("--promptir-top-k", type=int, default=5,
                       help="experts per prompt when --checkpoint is a PromptIR checkpoint "
                       "(5: PromptIR itself; 1: CPL weights in PromptIR's format)")  # fmt: skip
        p.add_argument("--tile", type=_tile, default=tile,
                       help="tile side for large images (none: one pass; auto: 256 on a CPU, "
                       "512 on a GPU)")  # fmt: skip
        p.add_argument("--overlap", type=int, default=32, help="overlap between tiles")
        p.add_argument("--routing", choices=ROUTINGS, default="image",
                       help="route the prompts once per image, for all its tiles (image), or "
                       "per tile (tile)")  # fmt: skip
        p.add_argument("--device", default="auto",
                       help="auto (a GPU if there is one), cpu, cuda, cuda:1...")  # fmt: skip
        p.add_argument("--max-pixels", type=_pixels, default=MAX_IMAGE_PIXELS,
                       help="the most pixels (width x height) an input image may declare, "
                       "checked from its header before it is decoded (none: no limit)")  # fmt: skip

    shown = argparse.ArgumentDefaultsHelpFormatter  # --help shows every default
    evaluate = sub.add_parser(
        "evaluate", help="per-degradation PSNR / SSIM table", formatter_class=shown
    )
    # scored as the Python evaluate() scores: one pass over each image, unless --tile is given
    add_model_flags(evaluate, tile=None)
    evaluate.add_argument("--data", nargs="+", help="clean images or folders, degraded by --mix")
    evaluate.add_argument("--mix", default="3task", choices=sorted(MIXES),
                          help="the degradations applied to --data")  # fmt: skip
    evaluate.add_argument("--add-degradations", nargs="+",
                          help="degradations appended to --mix, among "
                          f"{', '.join(DEGRADATIONS)}, or composites of them such as haze+rain "
                          "(as train's --add-degradations: a model grown with them)")  # fmt: skip
    evaluate.add_argument("--seed", type=_seed, default=0, help="seed of the degradations")
    evaluate.add_argument(
        "--benchmark",
        choices=list(BENCHMARKS),
        help="a benchmark laid out under --root: "
        + "; ".join(f"{b.name}: {b.layout}" for b in BENCHMARKS.values()).replace("%", "%%"),
    )
    evaluate.add_argument("--root", help="the benchmark's folder")
    evaluate.add_argument("--sigma", type=float, default=25.0, help="noise level for cbsd68")
    evaluate.add_argument(
        "--pad-multiple",
        type=_pad_multiple,
        default=1,
        help="pad inputs to this multiple first (the reference model pads to 8 itself)",
    )
    evaluate.add_argument("--y-channel", action="store_true", help="score the luma channel")
    evaluate.add_argument(
        "--no-prompt-effect",
        dest="prompt_effect",
        action="store_false",
        help="skip the prompt-effect table (own against negative and swapped prompts), which "
        "runs the model again on every image: under its own prompts, two negatives and each "
        "other degradation's experts",
    )
    evaluate.add_argument("--json", help="also write the table as JSON here (a new file)")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="let --json replace an existing file")  # fmt: skip
    evaluate.set_defaults(run=_evaluate)

    restore = sub.add_parser(
        "restore", help="restore images or folders of images", formatter_class=shown
    )
    add_model_flags(restore, tile="auto")
    restore.add_argument("inputs", nargs="+", help="image files or folders")
    restore.add_argument("--output", required=True, help="folder for the restored PNGs")
    restore.add_argument("--overwrite", action="store_true",
                         help="replace existing outputs (never an input)")  # fmt: skip
    restore.set_defaults(run=_restore)

    export = sub.add_parser(
        "export",
        help="write a checkpoint's weights as .safetensors, as a model folder with its card, "
        "or the model as ONNX",
    )
    export.add_argument("--checkpoint", required=True,
                        help="a checkpoint written by train (for onnx also weights from export "
                        "or an official PromptIR checkpoint)")  # fmt: skip
    export.add_argument("target", help="the .safetensors or .onnx file, or the folder, to write")
    export.add_argument("--format", choices=["safetensors", "folder", "onnx"],
                        default="safetensors",
                        help="safetensors: the weights and configuration, to load in PyTorch; "
                        "folder: config.json, model.safetensors and a model card (README.md), "
                        "as the Hugging Face Hub shares models; onnx: the network with dynamic "
                        "batch, height and width, for ONNX runtimes (needs the export "
                        "extra)")  # fmt: skip
    export.add_argument("--repo-id",
                        help="with --format folder: the Hub repository (owner/name) the folder "
                        "will be published as, for its card's loading lines")  # fmt: skip
    export.add_argument("--raw", action="store_true",
                        help="export the raw weights instead of the EMA weights")  # fmt: skip
    export.add_argument("--overwrite", action="store_true", help="replace an existing target")
    export.set_defaults(run=_export)

    demo = sub.add_parser("demo", help="train on the bundled photos and write a report")
    demo.add_argument("--out", default="results/demo")
    demo.add_argument("--steps", type=int, default=None)
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo's run")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage or input error).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status: 0 on success, 2 for a usage or input error (the message goes to
        stderr). ``--help`` and argparse's own usage errors exit through `SystemExit`.

    Examples:
        >>> main(["evaluate", "--checkpoint", "no-such-file.pt"])
        2
    """
    from .checkpoints import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (InputError, CheckpointError, FileNotFoundError, OSError) as error:
        print(f"contrastive-prompts {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was written is whole; temporary files are removed
        print(f"contrastive-prompts {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
