"""Model folders: the reference model shared as the Hugging Face Hub shares models.

A model folder holds three files:

- ``config.json``: the model's sizes (its [ModelConfig][contrastive_prompts.reference.ModelConfig]),
  the degradations it was trained on and the training step, with the folder format's name;
- ``model.safetensors``: the weights (tensors and strings only: reading it runs no code), with the
  same configuration in its metadata, so the file alone also loads with
  [load_checkpoint_model][contrastive_prompts.app.checkpoints.load_checkpoint_model];
- ``README.md``: the model card, what the Hub shows on the model's page: what it restores, how it
  was trained, its held-out PSNR / SSIM per degradation, whether its prompts matter
  ([prompt_effect][contrastive_prompts.app.effect.prompt_effect]'s table), the licence, the
  citation, and how to load it.

[save_pretrained][contrastive_prompts.app.pretrained.save_pretrained] writes one from a model,
[export_folder][contrastive_prompts.app.pretrained.export_folder] (``contrastive-prompts export
--format folder``) from a training checkpoint, card filled from what the run recorded.
[from_pretrained][contrastive_prompts.app.pretrained.from_pretrained] loads a folder, or a Hub
repository by its id (``owner/name``) with the optional ``huggingface_hub`` (``pip install
huggingface_hub``, the ``hub`` extra), which downloads the folder's files into its cache.
Loading checks what it reads as
[load_checkpoint_model][contrastive_prompts.app.checkpoints.load_checkpoint_model] does: sizes
are bounded before anything is allocated and every tensor must fit.

The Hub's ``PyTorchModelHubMixin`` is not used: it would make the reference model a Hub class
(the reference layer reads no file) and builds the network from the configuration before
checking the weights against it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__
from .._checks import InputError, InputTypeError, check_bool
from .checkpoints import (
    build_exported_model,
    checkpoint_model,
    gated_layout,
    read_checkpoint,
    read_exported_weights,
    reference_config,
    write_weights,
)
from .effect import PromptEffect
from .files import CheckpointError, file_problem, make_folder, remove_stale, writing
from .metrics import EvaluationResult

if TYPE_CHECKING:
    from ..reference.gated import GatedRestorer
    from .checkpoints import Restorer

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "FOLDER_FORMAT",
    "WEIGHTS_FILE",
    "ModelCard",
    "export_folder",
    "from_pretrained",
    "is_model_folder",
    "save_pretrained",
]

FOLDER_FORMAT = "contrastive_prompts.folder/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MAX_CONFIG_BYTES = 1 << 20
"""The largest ``config.json`` read (a real one is under 2 kB)."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

CITATION = """\
@article{wu2025cpl,
  title   = {Beyond Degradation Redundancy: Contrastive Prompt Learning for All-in-One Image
             Restoration},
  author  = {Wu, Gang and Jiang, Junjun and Jiang, Kui and Liu, Xianming and Nie, Liqiang},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  year    = {2025},
  note    = {arXiv:2504.09973}
}

@inproceedings{potlapalli2023promptir,
  title     = {PromptIR: Prompting for All-in-One Blind Image Restoration},
  author    = {Potlapalli, Vaishnav and Zamir, Syed Waqas and Khan, Salman and Khan, Fahad Shahbaz},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023}
}"""
"""The papers a model card asks its users to cite (the citation page holds them too)."""

# TrainConfig fields a card states, in this order, when the run recorded them
_CARD_TRAINING = (
    "preset", "mix", "add_degradations", "data", "crop", "batch_size", "steps", "lr",
    "cpr_weight", "num_negatives", "routing_weight", "balance_weight", "precision", "seed",
)  # fmt: skip


@dataclass(frozen=True)
class ModelCard:
    """What a model folder's ``README.md`` says beyond the model's sizes.

    Every field is optional: a card says what it is given and leaves the rest out.

    Attributes:
        label_names: the degradations the model was trained on, in label order.
        step: the training step of the weights.
        training: the run's [TrainConfig][contrastive_prompts.app.config.TrainConfig] fields, as
            a mapping (``dataclasses.asdict(config)``).
        evaluation: held-out PSNR / SSIM per degradation.
        effect: what [prompt_effect][contrastive_prompts.app.effect.prompt_effect] measured on
            held-out images.
        evaluated_at: the step of ``evaluation`` and ``effect``, when it differs from ``step``.
        license: the weights' licence, as the Hub names licences.
        repo_id: where the folder is published (``owner/name``), for the card's loading lines.
        weights: which weights of the run these are, ``"ema"`` or ``"raw"``.

    Examples:
        >>> from contrastive_prompts import SparsePromptIR
        >>> card = ModelCard(label_names=("noise_25", "rain"), step=600)
        >>> print(card.text(SparsePromptIR("tiny").config, "my-model").splitlines()[13])
        An all-in-one image restoration model: one network for noise_25, rain. It is ...
    """

    label_names: tuple[str, ...] = ()
    step: int | None = None
    training: Mapping[str, Any] | None = None
    evaluation: EvaluationResult | None = None
    effect: PromptEffect | None = None
    evaluated_at: int | None = None
    license: str = "mit"
    repo_id: str | None = None
    weights: str | None = None

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> ModelCard:
        """The card of a training checkpoint already read: its degradations, step and
        configuration, and its last validation's scores and prompt effect.

        A run that started from the official PromptIR weights (``init_promptir``) gets the
        licence ``other`` and a card that says PromptIR's non-commercial licence applies.
        """
        training = dict(state.get("config") or {})
        validations = list(state.get("validations") or [])
        last = validations[-1] if validations else None
        evaluation = effect = None
        if last is not None and "count" in last:
            names = list(last["psnr"])
            evaluation = EvaluationResult(
                names, dict(last["psnr"]), dict(last["ssim"]), dict(last["count"])
            )
        if last is not None and "effect" in last:
            effect = PromptEffect.from_dict(last["effect"])
        step = int(state["step"]) if "step" in state else None
        at = int(last["step"]) if last is not None else None
        return cls(
            label_names=tuple(state.get("label_names") or ()),
            step=step,
            training=training,
            evaluation=evaluation,
            effect=effect,
            evaluated_at=at if at != step else None,
            license="other" if training.get("init_promptir") else "mit",
        )

    def text(self, model_config: Any, name: str) -> str:
        """The card as Markdown with the Hub's metadata block, for a model of ``model_config``
        (a [ModelConfig][contrastive_prompts.reference.ModelConfig]) called ``name``."""
        config = asdict(model_config)
        where = self.repo_id or name
        local = where.rsplit("/", 1)[-1]  # the folder a download of it is put in
        download = [f"hf download {self.repo_id} --local-dir {local}"] if self.repo_id else []
        restores = ", ".join(self.label_names) if self.label_names else "the degradations it saw"
        prompts = (
            f"sparse prompts: the top {config['top_k']} of {config['num_prompts']} experts of each "
            "of its three prompt banks, chosen per image"
            if config["use_prompts"]
            else "no prompts (the baseline without prompting)"
        )
        lines = [
            "---",
            f"license: {self.license}",
            "library_name: contrastive-prompts",
            "pipeline_tag: image-to-image",
            "tags:",
            "- image-restoration",
            "- all-in-one",
            "- prompt-learning",
            "- pytorch",
            "---",
            "",
            f"# {where}",
            "",
            f"An all-in-one image restoration model: one network for {restores}. It is "
            f"SparsePromptIR, PromptIR's architecture with {prompts}, trained with the "
            "contrastive_prompts library (Contrastive Prompt Learning, arXiv:2504.09973).",
            "",
            "## How to load it",
            "",
            "```python",
            "from contrastive_prompts.app.pretrained import from_pretrained",
            "",
            f'model = from_pretrained("{where}")  # a Hub id or a local folder',
            "restored = model.restore(image)  # (B, 3, H, W) images in [0, 1]",
            "```",
            "",
            "From the command line, on a local copy of the folder:",
            "",
            "```bash",
            *download,
            f"contrastive-prompts restore --checkpoint {local} photo.jpg --output restored/",
            "```",
            "",
            "Both need the contrastive_prompts library; `from_pretrained` with a Hub id also "
            "needs `pip install huggingface_hub`. Loading reads tensors and JSON "
            "only: no file in this folder can run code.",
            "",
            "## Model",
            "",
            "| size | value |",
            "|---|---|",
            *(f"| {key} | {_plain(value)} |" for key, value in config.items()),
        ]
        lines += self._training_lines()
        lines += self._evaluation_lines()
        training = self.training or {}
        if training.get("init_promptir"):
            license_line = (
                "These weights were fine-tuned from the official PromptIR weights, whose academic "
                "licence allows non-commercial use only; it applies to these weights too."
            )
        elif self.license == "mit":
            license_line = "MIT, the licence of the library that trained these weights."
        else:
            license_line = f"`{self.license}`: see where these weights came from."
        lines += [
            "",
            "## Licence",
            "",
            license_line,
            "",
            "## Citation",
            "",
            "```bibtex",
            CITATION,
            "```",
            "",
        ]
        return "\n".join(lines)

    def _training_lines(self) -> list[str]:
        if self.step is None and not self.training:
            return []
        lines = ["", "## Training", ""]
        if self.step is not None:
            kind = {"ema": "the EMA weights", "raw": "the raw weights"}.get(self.weights or "")
            held = f"; the folder holds {kind} of the last" if kind else ""
            lines.append(f"{self.step} steps{held}.")
        training = self.training or {}
        shown = [(key, training[key]) for key in _CARD_TRAINING if key in training]
        if shown:
            lines += ["", "| setting | value |", "|---|---|"]
            lines += [f"| {key} | {_plain(_private(key, value))} |" for key, value in shown]
        if training.get("init_promptir"):
            lines += ["", "Started from the official PromptIR weights."]
        if training.get("grow_from"):
            lines += ["", "Grown from an earlier model by new experts (`add_degradations`)."]
        return lines

    def _evaluation_lines(self) -> list[str]:
        at = f" (at step {self.evaluated_at})" if self.evaluated_at is not None else ""
        lines: list[str] = []
        if self.evaluation is not None:
            lines += [
                "",
                "## Held-out scores" + at,
                "",
                "PSNR and SSIM on the run's validation images, never trained on:",
                "",
                self.evaluation.to_markdown(),
            ]
        if self.effect is not None:
            lines += [
                "",
                "## Does the prompt matter?" + at,
                "",
                "PSNR (dB) on the centres of the same images under the model's own prompts, under "
                "a negative prompt (experts its router did not choose) and under a swapped prompt "
                "(the experts another degradation uses most); then each prompt layer's most used "
                "expert and whether its experts specialise per degradation.",
                "",
                self.effect.table(),
            ]
        if not lines:
            lines = [
                "",
                "## Held-out scores",
                "",
                "Not recorded with these weights: `contrastive-prompts evaluate --checkpoint "
                "FOLDER` scores them.",
            ]
        return lines


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "-"
    return "-" if value is None else str(value).replace("|", "\\|")


def _private(key: str, value: Any) -> Any:
    """A training file's name without the folders above it: a card is public."""
    if key != "data" or not isinstance(value, list | tuple):
        return value
    return [Path(v).name for v in value] or "the photos that ship with scikit-image"


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a ``config.json`` (what
    [from_pretrained][contrastive_prompts.app.pretrained.from_pretrained] reads first)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def save_pretrained(
    model: Restorer,
    folder: str | os.PathLike[str],
    *,
    card: ModelCard | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a model folder: ``config.json``, ``model.safetensors``, ``README.md``.

    Each file is written under a temporary name and renamed, so a failed save leaves no file
    half-written. Upload the folder with the Hub's tools (``hf upload owner/name FOLDER``) to
    share it.

    Args:
        model: the [SparsePromptIR][contrastive_prompts.SparsePromptIR] to save (its weights as
            they are, in their dtype, moved to the CPU), or a
            [GatedRestorer][contrastive_prompts.reference.GatedRestorer] of them (a run grown
            with ``growth="gated"``; the card then says which network restores what).
        folder: the folder to write; made if missing.
        card: what the model card says beyond the sizes; by default the sizes and how to load.
        overwrite: replace the three files if the folder holds any of them (other files in
            the folder are left alone).

    Returns:
        ``folder`` as a path.

    Raises:
        InputTypeError: ``model`` is not a SparsePromptIR or a gated model of them, or ``card``
            not a ModelCard.
        InputError: the folder holds one of the three files and ``overwrite`` is not set, or
            ``folder`` is a file.

    Examples:
        >>> import tempfile
        >>> from contrastive_prompts import SparsePromptIR
        >>> folder = save_pretrained(SparsePromptIR("tiny"), tempfile.mkdtemp() + "/tiny")
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
    """
    from ..reference.gated import GatedRestorer
    from ..reference.model import SparsePromptIR

    where = "save_pretrained"
    gated = isinstance(model, GatedRestorer)
    networks = list(model.networks) if isinstance(model, GatedRestorer) else [model]
    if not all(isinstance(n, SparsePromptIR) for n in networks) or (
        gated and len({n.config for n in networks}) != 1
    ):
        raise InputTypeError(
            f"{where}: expected a SparsePromptIR or a gated model of SparsePromptIRs of one "
            f"configuration, got {type(model).__name__} (a network of your own saves with "
            "safetensors.torch.save_file(model.state_dict(), path))"
        )
    card = ModelCard() if card is None else card
    if not isinstance(card, ModelCard):
        raise InputTypeError(f"{where}: expected card to be a ModelCard, got {type(card).__name__}")
    check_bool(where, "overwrite", overwrite)
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise InputError(f"{where}: expected a folder, got the file {str(target)!r}")
    present = [n for n in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE) if (target / n).exists()]
    if present and not overwrite:
        raise InputError(
            f"{where}: {str(target)!r} already holds {', '.join(present)}; pass overwrite=True "
            "(--overwrite) to replace them"
        )
    config = reference_config(model)
    model_config = asdict(config)
    info = {
        "format": FOLDER_FORMAT,
        "architecture": "SparsePromptIR",
        "library": "contrastive_prompts",
        "library_version": __version__,
        "model_config": model_config,
        "label_names": list(card.label_names),
        "step": card.step,
    }
    text = card.text(config, target.resolve().name)
    if isinstance(model, GatedRestorer):
        info["gated"] = gated_layout(model)
        text += _gated_card(model, card.label_names)
    make_folder(target, "the model folder")
    remove_stale(target)
    write_weights(model, target / WEIGHTS_FILE, label_names=card.label_names, step=card.step)
    with writing(target / CONFIG_FILE) as temporary:
        temporary.write_text(json.dumps(info, indent=2) + "\n")
    with writing(target / CARD_FILE) as temporary:
        temporary.write_text(text)
    return target


def _gated_card(model: GatedRestorer, names: Sequence[str]) -> str:
    """The card's section on a gated model: its networks, what each restores, the gate."""
    count = len(model.networks)
    lines = [
        "",
        "## A gated model",
        "",
        f"It holds {count} networks of this architecture and a gate that gives each image to one "
        "of them, by a vote of simple statistics of its 64-pixel tiles; an image is restored by "
        "its network alone. The first is the model as first trained; each later one is a copy "
        "of it trained on degradations added later.",
        "",
        "| network | restores |",
        "|---:|---|",
    ]
    for k in range(count):
        restores = [n for n, net in zip(names, model.label_networks, strict=False) if net == k]
        lines.append(f"| {k} | {', '.join(restores) or 'no named degradation'} |")
    return "\n".join(lines) + "\n"


def export_folder(
    checkpoint: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    ema: bool = True,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a training checkpoint's model as a model folder, its card filled from the run.

    The card states the run's degradations, steps and main settings, and its last validation:
    the held-out PSNR / SSIM per degradation and the prompt effect (runs from before this
    release recorded the effect's averages only: its table is then left out).

    Args:
        checkpoint: a training checkpoint (``last.pt``).
        folder: the folder to write.
        ema: the EMA weights (what validation scored); ``False``: the raw weights.
        repo_id: where the folder will be published (``owner/name``), for the card's loading
            lines.
        overwrite: replace the folder's model files if it holds any.

    Raises:
        CheckpointError: the checkpoint cannot be read or does not fit its configuration.
        InputError: as for [save_pretrained][contrastive_prompts.app.pretrained.save_pretrained].

    Examples:
        >>> export_folder("runs/cpl/last.pt", "cpl-tiny")  # doctest: +SKIP
        PosixPath('cpl-tiny')
    """
    if repo_id is not None:
        _check_repo_id("export_folder", repo_id)
    name = os.fspath(checkpoint)
    state = read_checkpoint(name)
    model = checkpoint_model(state, ema=ema, where=f"checkpoint {name!r}")
    card = replace(
        ModelCard.from_checkpoint(state), repo_id=repo_id, weights="ema" if ema else "raw"
    )
    return save_pretrained(model, folder, card=card, overwrite=overwrite)


def _check_repo_id(where: str, repo_id: object) -> None:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise InputError(f"{where}: expected a Hub repository id 'owner/name', got {repo_id!r}")


def from_pretrained(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> Restorer:
    """Load a model folder, local or on the Hugging Face Hub, in eval mode.

    ``source`` is read as a local folder when one exists at that path; otherwise as a Hub
    repository id (``owner/name``), whose ``config.json``, ``model.safetensors`` and
    ``README.md`` ``huggingface_hub`` downloads into its cache (or finds there: with
    ``HF_HUB_OFFLINE=1`` it never reaches the network). Nothing read can run code; the model's
    sizes are checked against the number of tensors before anything is allocated, and every
    tensor must fit them.

    Args:
        source: a folder written by
            [save_pretrained][contrastive_prompts.app.pretrained.save_pretrained], or a Hub id.
        revision: with a Hub id, a branch, tag or commit (default: the main branch).
        cache_dir: with a Hub id, the download cache (default: the Hub's own).
        device: where to put the model.

    Returns:
        The [SparsePromptIR][contrastive_prompts.SparsePromptIR] of the folder.

    Raises:
        CheckpointError: the folder lacks a file, a file is not what the folder format holds,
            the weights do not fit the configuration, or the Hub cannot give the files (one
            line saying why: unreachable, offline, no such repository or revision).
        InputError: ``source`` is neither a folder nor a Hub id.
        ModuleNotFoundError: a Hub id without ``huggingface_hub`` installed.

    Examples:
        >>> import tempfile
        >>> from contrastive_prompts import SparsePromptIR
        >>> folder = save_pretrained(SparsePromptIR("tiny"), tempfile.mkdtemp() + "/m")
        >>> from_pretrained(folder).config.dim
        16
    """
    where = "from_pretrained"
    if not isinstance(source, str | os.PathLike):
        raise InputTypeError(
            f"{where}: expected a folder or a Hub id as a string, got {type(source).__name__}"
        )
    name = os.fspath(source)
    if os.path.isdir(name):
        folder = Path(name)
    elif os.path.exists(name):
        raise InputError(f"{where}: expected a model folder, got the file {name!r}")
    elif _REPO_ID.match(name):
        folder = _download(name, revision, cache_dir)
    else:
        raise InputError(
            f"{where}: expected a model folder or a Hub repository id 'owner/name', got {name!r} "
            "(no such folder)"
        )
    return _read_folder(folder).to(device).eval()


def _download(repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The folder of ``repo_id``'s model files in the Hub's cache, downloaded if need be."""
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError as error:
        raise ModuleNotFoundError(
            f"from_pretrained: loading {repo_id!r} from the Hugging Face Hub needs "
            "huggingface_hub: pip install huggingface_hub (the hub extra), or pass a local folder"
        ) from error
    try:
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE],
            library_name="contrastive-prompts",
            library_version=__version__,
        )
    except errors.RepositoryNotFoundError as error:
        raise CheckpointError(
            f"from_pretrained: the Hub has no repository {repo_id!r} that you can read (a private "
            "or gated one needs `hf auth login`)"
        ) from error
    except errors.RevisionNotFoundError as error:
        raise CheckpointError(
            f"from_pretrained: the Hub repository {repo_id!r} has no revision {revision!r}"
        ) from error
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as error:
        why = (
            "offline mode is on (HF_HUB_OFFLINE)"
            if constants.HF_HUB_OFFLINE
            else "the Hub cannot be reached from here"
        )
        raise CheckpointError(
            f"from_pretrained: cannot download {repo_id!r}: {why}, and the Hub's cache holds no "
            "copy; where the Hub is reachable run `hf download "
            f"{repo_id} --local-dir FOLDER` and pass FOLDER"
        ) from error
    except errors.HfHubHTTPError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"from_pretrained: the Hub refused {repo_id!r}: {first}") from error
    return Path(str(path))


def _read_folder(folder: Path) -> Restorer:
    """The model of a local model folder, every file checked."""
    where = f"model folder {str(folder)!r}"
    problems = [f"{n} {p}" for n in (CONFIG_FILE, WEIGHTS_FILE) if (p := file_problem(folder / n))]
    if problems:
        raise CheckpointError(
            f"{where}: {'; '.join(problems)} (a model folder holds {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, written by save_pretrained or `contrastive-prompts export "
            "--format folder`)"
        )
    info = _read_config(where, folder / CONFIG_FILE)
    weights_config, weights, layout = read_exported_weights(os.fspath(folder / WEIGHTS_FILE))
    if weights_config != info["model_config"] or layout != info.get("gated"):
        raise CheckpointError(
            f"{where}: {CONFIG_FILE} and {WEIGHTS_FILE} describe different models "
            f"({info['model_config']!r}, gated {info.get('gated')!r} against {weights_config!r}, "
            f"gated {layout!r})"
        )
    return build_exported_model(where, info["model_config"], weights, layout)


def _read_config(where: str, path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{where}: expected a {CONFIG_FILE} of at most {MAX_CONFIG_BYTES} bytes, got {size}"
        )
    try:
        info = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else error
        raise CheckpointError(f"{where}: its {CONFIG_FILE} is not JSON ({detail})") from error
    if not isinstance(info, dict) or info.get("format") != FOLDER_FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise CheckpointError(
            f"{where}: expected a {CONFIG_FILE} of format {FOLDER_FORMAT!r}, got {found!r}"
        )
    if not isinstance(info.get("model_config"), Mapping):
        raise CheckpointError(f"{where}: its {CONFIG_FILE} holds no model_config mapping")
    return info
