"""Every code block of the README and the documentation site works alone, as a reader runs it.

A reader copies one block into a file and runs it. So each ``python`` block is written to a file
and run by a new Python interpreter, in a folder holding the files the pages name (built once:
the Datasets page's folder trees with small images, a PromptIR checkpoint, exported weights, an
ONNX file): a block that uses a name from another block, or from the test, fails here. A few
blocks are followed by checks of what they computed (``CHECKS``), run in the same process.
Blocks that only include a file (``--8<-- "path"``) are that file, which the tests named in
``INCLUDED`` run. Every ``contrastive-prompts`` command line of a ``bash`` block must parse.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
if not DOCS.is_dir():  # an sdist ships the tests without the docs pages
    pytest.skip("docs/ is not in this tree", allow_module_level=True)
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
INCLUDE = re.compile(r'^--8<-- "(.+)"\s*$')
# included files and the tests that run them alone (each in a namespace of its own)
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
# what runs before a block: training on the papers' data takes days on GPUs, so ``fit`` says
# what it was given instead
BEFORE = {
    ("training.md", 0): (
        "from contrastive_prompts.app.train import Trainer\n"
        "Trainer.fit = lambda self, **kw: print('fit', len(self.train_data)) or []\n"
    ),
}
# what a block computed, checked after it in the same process
CHECKS = {
    ("README.md", 0): (
        "assert prompt.shape == (2, 64, 32, 32) and fused.shape == (2, 96, 32, 32)\n"
        "assert negative.shape == prompt.shape and not torch.allclose(negative, prompt)\n"
        "assert ((routing.weights != 0).sum(dim=1) == 1).all()  # top-1\n"
        "assert parts.stages == ('2.prompt_stage.prompt',)\n"
        "torch.testing.assert_close(parts.loss, parts.l1 + 0.01 * parts.cpr)\n"
        "assert net[2].prompt_stage.fusion.proj.weight.abs().sum() > 0  # the step moved it\n"
    ),
    ("README.md", 2): "assert not model.training and model.config.dim == 16  # tiny\n",
    ("README.md", 3): (
        "assert promptir.config.top_k == 5 and start.config.top_k == 1\n"
        "assert torch.equal(promptir.prompt1.prompts, start.prompt1.prompts)\n"
    ),
    ("model.md", 0): (
        "assert restored.shape == degraded.shape == (1, 3, 61, 93)\n"
        "assert image.min() >= 0 and image.max() <= 1\n"
        "assert model.config.top_k == 1 and promptir.config.top_k == 5\n"
    ),
    ("model.md", 2): (
        "assert out.output.requires_grad and not out.negatives.requires_grad\n"
        "assert out.negatives.shape == (out.output.shape[0], 4, *out.output.shape[1:])\n"
    ),
    ("training.md", 0): (
        "assert int(trainer.train_data[len(trainer.train_data) - 1][2]) == 4\n"
        "assert trainer.label_names == names\n"
    ),
    ("training.md", 1): (
        "assert trainer.step == 8 and [r['step'] for r in trainer.history] == [*range(1, 9)]\n"
    ),
    ("training.md", 2): "assert model.training and next(model.parameters()).grad is not None\n",
    ("metrics.md", 0): "assert p.shape == s.shape == (2,)\n",
    ("faq.md", 0): "assert features.shape[1] == C\n",
    ("degradations.md", 0): "assert degraded.shape == x.shape and labels.shape == (8,)\n",
    ("sharing.md", 0): (
        "from pathlib import Path\n"
        "assert 'you/cpl-tiny' in Path('cpl-tiny/README.md').read_text()\n"
        "assert sorted(p.name for p in Path('my-model').iterdir()) == "
        "['README.md', 'config.json', 'model.safetensors']\n"
    ),
    ("sharing.md", 1): "assert restored.shape == image.shape and not model.training\n",
    ("weights.md", 1): "assert model.config.top_k == 1 and model.config.dim == 48\n",
}
# what a block must print (the Quickstart says what it computed)
PRINTS = {
    ("README.md", 0): re.compile(r"loss \d+\.\d+"),
    # three steps, CPR 0 at the first (the new stage starts as the identity), then the stage
    ("index.md", 0): re.compile(
        r"\Astep 0: loss \S+ = L1 \S+ \+ 0\.01 \* CPR -?0\.0000\n"
        r"step 1: loss \S+ = L1 \S+ \+ 0\.01 \* CPR \S+\n"
        r"step 2: loss \S+ = L1 \S+ \+ 0\.01 \* CPR \S+\n"
        r"prompt layers: \('0\.prompt_stage\.prompt',\)\n\Z"
    ),
}
# spandrel needs torchvision of the installed torch's release: tests/test_spandrel.py runs these
NEEDS = {("export.md", 1): ("onnxruntime",), ("sharing.md", 2): ("spandrel",)}


def page_name(page: Path) -> str:
    return page.name if page.parent == ROOT else page.relative_to(DOCS).as_posix()


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


def python_blocks() -> list[tuple[str, int, str]]:
    """``(page, index on the page, code)`` of every Python block that is not an include."""
    found = []
    for page in PAGES:
        for index, code in enumerate(code_blocks(page, "python")):
            if not INCLUDE.match(code.strip()):
                found.append((page_name(page), index, code))
    return found


BLOCKS = python_blocks()


@pytest.fixture(scope="module")
def world(tmp_path_factory, exported_weights, promptir_checkpoint) -> Path:
    """A folder with every file the pages' blocks read."""

    from contrastive_prompts.app.checkpoints import UNUSED_PROMPTIR_KEYS
    from contrastive_prompts.app.pretrained import export_folder

    from .test_datasets_page import tree_paths, trees
    from .test_datasets_page import write_image as write_tree_image

    folder = tmp_path_factory.mktemp("docs_world")
    generator = torch.Generator().manual_seed(0)
    for tree in trees():  # the Datasets page's layouts (Rain100L, SOTS, BSD400, WED, ...)
        for path in tree_paths(tree):
            write_tree_image(folder / path, generator)
    shutil.copy(exported_weights, folder / "mine.safetensors")
    shutil.copy(promptir_checkpoint, folder / "promptir.ckpt")
    # a training run, its model folder, and CPL's released checkpoint (the Weights page)
    (folder / "runs" / "cpl").mkdir(parents=True)
    shutil.copy(exported_weights.parent / "run" / "last.pt", folder / "runs" / "cpl" / "last.pt")
    export_folder(folder / "runs" / "cpl" / "last.pt", folder / "mine")
    promptir = torch.load(promptir_checkpoint, weights_only=True)["state_dict"]
    cpl = {k[4:]: v for k, v in promptir.items() if not UNUSED_PROMPTIR_KEYS.match(k[4:])}
    torch.save({"params": cpl}, folder / "CPLIR_Weatherbench.pth")
    try:
        from contrastive_prompts import SparsePromptIR
        from contrastive_prompts.app.export import export_onnx

        bare = SparsePromptIR("tiny", num_blocks=(0, 0, 0, 0), num_refinement_blocks=0)
        export_onnx(bare.eval(), folder / "model.onnx")
    except ImportError:  # without the export extra the ONNX block is skipped
        pass
    return folder


def test_every_include_is_run_by_a_test():
    for page in PAGES:
        for code in code_blocks(page, "python"):
            included = INCLUDE.match(code.strip())
            if included:
                assert included.group(1) in INCLUDED, f"{page_name(page)}: {included.group(1)}"
                assert (ROOT / INCLUDED[included.group(1)]).is_file()
    assert BLOCKS, "no Python block found"
    known = {(page, index) for page, index, _ in BLOCKS}
    for table in (BEFORE, CHECKS, PRINTS, NEEDS):  # no check left behind by a moved block
        assert set(table) <= known, sorted(set(table) - known)


@pytest.mark.parametrize(
    ("page", "index", "code"), BLOCKS, ids=[f"{page}:{index}" for page, index, _ in BLOCKS]
)
def test_block_runs_alone_in_a_fresh_process(page, index, code, world, tmp_path):
    for module in NEEDS.get((page, index), ()):
        pytest.importorskip(module)
    folder = tmp_path / "reader"
    shutil.copytree(world, folder)
    source = BEFORE.get((page, index), "") + code
    check = CHECKS.get((page, index))
    if check:
        source += "\n# checks of the test\nimport torch\n" + check
    (folder / "block.py").write_text(source)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "block.py"], cwd=folder, capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{page} block {index}:\n{code}\n{done.stdout}\n{done.stderr}"
    printed = PRINTS.get((page, index))
    if printed:
        assert printed.search(done.stdout), f"{page} block {index} printed:\n{done.stdout}"


def command_lines() -> list[tuple[str, str]]:
    """``(page, line)`` of every ``contrastive-prompts`` command in a ``bash`` block."""
    found = []
    for page in PAGES:
        for block in code_blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():  # continued lines joined
                words = shlex.split(line, comments=True)
                if "contrastive-prompts" in words or (
                    words[:1] in (["python"], ["torchrun"]) and "contrastive_prompts" in words
                ):
                    found.append((page_name(page), line))
    return found


@pytest.mark.parametrize(("page", "line"), command_lines())
def test_command_line_parses(page, line):
    from contrastive_prompts.app.cli import build_parser

    words = shlex.split(line, comments=True)
    start = words.index("contrastive-prompts" if "contrastive-prompts" in words else
                        "contrastive_prompts") + 1  # fmt: skip
    arguments = [w for w in words[start:] if w != "..."]  # "...": more options of the reader's
    if not arguments or arguments[0] in ("-h", "--help"):
        return
    try:
        build_parser().parse_args(arguments)
    except SystemExit as e:  # argparse's way of refusing
        pytest.fail(f"{page}: {line!r} does not parse (status {e.code})")


def test_code_lines_fit_the_page():
    """No line of a code block is wider than 100 characters: wider ones scroll off the column."""
    for page in PAGES:
        for block in re.findall(r"^```\w*\n(.*?)^```", page.read_text(), flags=re.M | re.S):
            for line in block.splitlines():
                assert len(line) <= 100, f"{page_name(page)}: {len(line)} characters: {line}"
