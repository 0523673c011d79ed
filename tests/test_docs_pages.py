"""Every Python block on the documentation site runs, page by page, as a reader would run it.

A page's blocks run in order in one namespace, in a folder holding the files the page names
(a PromptIR checkpoint, exported weights, small benchmark folders). Blocks that only include a
file (``--8<-- "path"``) run through the tests of that file. A page with Python that this test
does not know fails it, so new code on the site cannot go unrun.
"""

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from contrastive_prompts.app.data import DegradedCopies, write_image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INCLUDE = re.compile(r'^--8<-- "(.+)"\s*$')
# included files and the tests that run them
INCLUDED = {
    "docs/snippets/quickstart.py": "tests/test_readme.py",
    "docs/snippets/own_network_add_prompts.py": "tests/test_docs_snippets.py",
    "docs/snippets/own_network_layers.py": "tests/test_docs_snippets.py",
    "docs/snippets/own_network_trainer.py": "tests/test_docs_snippets.py",
    "docs/snippets/own_network_fine_tune.py": "tests/test_docs_snippets.py",
    "examples/train_all_in_one.py": "tests/test_examples.py",
    "examples/plug_into_your_network.py": "tests/test_examples.py",
    "examples/fine_tune_with_prompts.py": "tests/test_examples.py",
}
# pages whose code another test runs
RUN_ELSEWHERE = {"datasets.md": "tests/test_datasets_page.py", "export.md": "tests/test_export.py"}


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def _images(folder: Path, names: list[str], size: tuple[int, int] = (24, 32)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name, torch.rand(3, *size))


def _promptir_checkpoint(folder: Path, files: dict[str, Path]) -> None:
    shutil.copy(files["promptir.ckpt"], folder / "promptir.ckpt")


def _exported_weights(folder: Path, files: dict[str, Path]) -> None:
    shutil.copy(files["mine.safetensors"], folder / "mine.safetensors")


def _metrics(folder: Path) -> dict:
    from contrastive_prompts import SparsePromptIR

    clean = torch.rand(2, 3, 32, 32)
    return {
        "restored": (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1),
        "clean": clean,
        "model": SparsePromptIR("tiny"),
        "test_set": DegradedCopies(list(clean), "3task"),
    }


def _faq(folder: Path) -> dict:
    from contrastive_prompts import SparsePrompt
    from contrastive_prompts.core import PromptFusion

    return {"C": 32, "D": 16, "S": 8, "features": torch.rand(2, 32, 24, 24),
            "SparsePrompt": SparsePrompt, "PromptFusion": PromptFusion}  # fmt: skip


def _training(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Tiny copies of the papers' training sets; ``fit`` is recorded, not run (days on GPUs)."""
    from contrastive_prompts.app.train import Trainer

    _images(folder / "BSD400", ["1.png", "2.png"], (160, 160))
    _images(folder / "WED", ["1.png"], (160, 160))
    _images(folder / "Rain100L/train/rainy", ["rain-1.png"], (160, 160))
    _images(folder / "Rain100L/train/gt", ["norain-1.png"], (160, 160))
    _images(folder / "RESIDE/OTS/hazy", ["0001_0.8_0.2.jpg"], (160, 160))
    _images(folder / "RESIDE/OTS/gt", ["0001.png"], (160, 160))
    fitted: list[Trainer] = []
    monkeypatch.setattr(Trainer, "fit", lambda self: fitted.append(self) or [])
    return {"_fitted": fitted}


def _check_training(ns: dict) -> None:
    (trainer,) = ns["_fitted"]
    assert len(trainer.train_data) == 3 + 1 + 1
    _, _, label = trainer.train_data[4]
    assert int(label) == 4 and trainer.label_names == ns["names"]


def _check_model(ns: dict) -> None:
    assert ns["restored"].shape == ns["degraded"].shape == (1, 3, 61, 93)
    assert ns["image"].min() >= 0 and ns["image"].max() <= 1
    assert ns["model"].config.top_k == 1 and ns["promptir"].config.top_k == 5
    assert ns["out"].negatives.shape == (1, 4, 3, 61, 93) and not ns["out"].negatives.requires_grad


Setup = Callable[..., dict | None]
PAGES: dict[str, tuple[list[Setup], Callable[[dict], None] | None]] = {
    "degradations.md": ([], lambda ns: ns["degraded"].shape == (8, 3, 128, 128)),
    "faq.md": ([_faq], lambda ns: ns["features"].shape == (2, 32, 24, 24)),
    "getting-started.md": ([], lambda ns: ns["parts"].loss.grad_fn is not None),
    "metrics.md": ([_metrics], lambda ns: ns["p"].shape == (2,)),
    "model.md": ([_promptir_checkpoint], _check_model),
    "safety.md": ([_exported_weights], lambda ns: ns["model"].training is False),
    "training.md": ([_training], _check_training),
}


def test_every_page_with_python_is_run_here_or_elsewhere():
    for page in sorted(DOCS.rglob("*.md")):
        name = page.relative_to(DOCS).as_posix()
        for block in python_blocks(page):
            included = INCLUDE.match(block.strip())
            if included:
                assert included.group(1) in INCLUDED, f"{name} includes {included.group(1)}"
                assert (ROOT / INCLUDED[included.group(1)]).is_file()
            else:
                assert name in PAGES or name in RUN_ELSEWHERE, f"{name} has Python no test runs"
    for name, test in RUN_ELSEWHERE.items():
        if (DOCS / name).is_file():
            assert (ROOT / test).is_file(), f"{name}: {test} is missing"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_code_runs(name, tmp_path, monkeypatch, exported_weights, promptir_checkpoint):
    setups, check = PAGES[name]
    monkeypatch.chdir(tmp_path)
    files = {"mine.safetensors": exported_weights, "promptir.ckpt": promptir_checkpoint}
    ns: dict = {"__name__": f"__docs_{name}__"}
    for setup in setups:
        takes = setup.__code__.co_varnames[: setup.__code__.co_argcount]
        extra = {"monkeypatch": monkeypatch, "files": files}
        found = setup(tmp_path, *(extra[arg] for arg in takes[1:]))
        ns.update(found or {})
    blocks = [b for b in python_blocks(DOCS / name) if not INCLUDE.match(b.strip())]
    assert blocks, f"{name} has no Python left to run"
    for block in blocks:
        exec(compile(block, name, "exec"), ns)
    if check is not None:
        assert check(ns) is not False, name
