"""The Datasets page holds: its trees are layouts the readers accept, its code runs on them.

Every ``text`` block of docs/datasets.md that draws a folder tree is built in a temporary folder
with tiny images; every ``python`` block then runs there, in page order, and every
``contrastive-prompts`` command of a ``bash`` block runs (``evaluate``) or is checked
(``train``: its ``--data`` folders hold images the reader decodes). A snippet, a command or a tree
that stops working makes these tests fail, and so does a table or an error message on the page
that no longer says what the code does.
"""

import contextlib
import os
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from contrastive_prompts import InputError
from contrastive_prompts.app.cli import build_parser, main
from contrastive_prompts.app.data import BENCHMARKS, image_paths, read_benchmark, read_image
from contrastive_prompts.app.data import write_image as write_png

Image = pytest.importorskip("PIL.Image")

PAGE = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
if not PAGE.is_file():  # an sdist ships the tests without the docs pages
    pytest.skip("docs/datasets.md is not in this tree", allow_module_level=True)
SIDE = (
    64  # every image is 64x64: half the crops the page's snippets ask for, fast for the tiny model
)
TREE_CHARS = "│├└─ \u00a0"


def blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def bash_blocks() -> list[str]:
    """The ``bash`` blocks with continued lines (``\\`` at the end) joined."""
    return [block.replace("\\\n", " ") for block in blocks("bash")]


def trees() -> list[str]:
    return [b for b in blocks("text") if b.splitlines()[0].endswith("/")]


def tree_paths(tree: str) -> list[Path]:
    """The files a tree names (folders end in ``/``; ``...`` lines stand for more of the same)."""
    stack: list[str] = []
    files = []
    for line in tree.splitlines():
        column = len(line) - len(line.lstrip(TREE_CHARS))
        name = line[column:].split("  #")[0].strip()
        depth = column // 4
        if not name or name in ("...", "…"):
            continue
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            files.append(Path(*stack, name))
    return files


def write_image(path: Path, generator: torch.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = torch.rand(3, SIDE, SIDE, generator=generator)
    if path.suffix.lower() == ".bmp":  # kornia cannot write BMP: Pillow does
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(path)
    else:
        write_png(path, image)


@contextlib.contextmanager
def inside(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def page(tmp_path_factory, exported_weights):
    """The page's trees built in one folder, and its Python blocks run there, in order."""
    root = tmp_path_factory.mktemp("datasets")
    generator = torch.Generator().manual_seed(0)
    for tree in trees():
        for path in tree_paths(tree):
            write_image(root / path, generator)
    shutil.copy(exported_weights, root / "mine.safetensors")
    namespaces: list[dict] = []
    error = None
    with inside(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crops larger than the tiny images warn; not our point
        for i, code in enumerate(blocks("python")):
            namespace: dict = {"__name__": f"datasets_page_{i}"}
            try:
                exec(compile(code, f"docs/datasets.md python block {i + 1}", "exec"), namespace)
            except Exception as e:  # reported by the test below, with the block's number
                error = e
                break
            namespaces.append(namespace)
    return root, namespaces, error


def find(namespaces: list[dict], name: str, *, beside: str = ""):
    """``name`` as the first snippet that defines it (and ``beside``, if given) left it."""
    found = [ns[name] for ns in namespaces if name in ns and (not beside or beside in ns)]
    assert found, f"no snippet on the page defines {name!r}"
    return found[0]


def test_the_page_has_trees_snippets_and_commands():
    assert len(trees()) >= 7
    assert len(blocks("python")) >= 9
    commands = [c for b in bash_blocks() for c in b.splitlines() if c.startswith("contrastive")]
    benchmarks = {shlex.split(c)[shlex.split(c).index("--benchmark") + 1] for c in commands
                  if "--benchmark" in c}  # fmt: skip
    assert benchmarks == set(BENCHMARKS)  # an evaluate command for every benchmark


def test_every_python_snippet_runs_on_the_trees(page):
    _, namespaces, error = page
    if error is not None:
        raise error
    assert len(namespaces) == len(blocks("python"))


def test_what_the_snippets_say_they_read(page):
    _, namespaces, error = page
    assert error is None
    test, label = find(namespaces, "test"), find(namespaces, "label")
    assert int(label) == 0 and test.names == {0: "rain"} and test.unmatched == []
    assert len(test) == 2 and find(namespaces, "train").names == {3: "rain"}
    assert find(namespaces, "degraded").shape == (3, SIDE, SIDE)
    assert len(find(namespaces, "sots")) == 3 and len(find(namespaces, "ots")) == 3
    assert find(namespaces, "noisy")[25].names == {0: "noise_25"}
    assert find(namespaces, "denoising").names == {0: "noise_15", 1: "noise_25", 2: "noise_50"}
    assert len(find(namespaces, "denoising").paths) == 6  # BSD400's 3 and WED's 3, as PNG
    assert len(find(namespaces, "gopro")) == 3
    assert len(find(namespaces, "lol_test")) == 2 and len(find(namespaces, "lol_train")) == 2
    assert find(namespaces, "gamma_blur").names == {0: "blur_gamma"}
    assert len(find(namespaces, "rain")) == 2 and len(find(namespaces, "haze")) == 2
    assert len(find(namespaces, "noise", beside="rain_train")) == 2
    assert len(find(namespaces, "rain_train")) == 2
    assert len(find(namespaces, "ots", beside="missing")) == 4  # PromptIR's four parts


def test_every_command_on_the_page_works(page, capsys):
    root, _, error = page
    assert error is None  # the WED conversion snippet has run
    commands = [c for b in bash_blocks() for c in b.splitlines() if c.startswith("contrastive")]
    assert commands
    with inside(root):
        for command in commands:
            argv = shlex.split(command)[1:]
            if argv[0] == "evaluate":
                assert main(argv) == 0, command
                args = build_parser().parse_args(argv)
                name = BENCHMARKS[args.benchmark].degradation
                name += f"_{args.sigma:g}" if args.benchmark == "cbsd68" else ""
                assert f"| {name} |" in capsys.readouterr().out, command
            elif argv[0] == "train":
                args = build_parser().parse_args(argv)
                for path in image_paths(args.data):  # every image decodes: none is skipped
                    assert read_image(path).shape == (3, SIDE, SIDE), (command, path)
            else:
                pytest.fail(f"no check for the page's command {command!r}")


def test_the_table_is_the_readers_table():
    text = PAGE.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \| ([^|]*) \|", text, flags=re.M)
    rows = [row for row in rows if row[0] != "name"]  # the header
    assert {name for name, _, _ in rows} == set(BENCHMARKS)
    for name, degraded, clean in rows:
        layout = BENCHMARKS[name]
        assert re.findall(r"`(\w+)/`", degraded) == list(layout.degraded_dirs), name
        clean_dirs = re.findall(r"`(\w+)/`", clean)
        assert clean_dirs == list(layout.clean_dirs) or (not layout.clean_dirs and "root" in clean)


def test_the_error_shown_is_the_error_raised(tmp_path, capsys, exported_weights):
    shown = [" ".join(b.split()) for b in blocks("text") if b.startswith("read_benchmark(")]
    assert len(shown) == 1
    message = shown[0]
    found = re.fullmatch(
        r"read_benchmark\('(\w+)'\): (\d+) files in '([^']+)' have no partner: (.*) "
        r"\(pass strict=False to skip them\)",
        message,
    )
    assert found, message
    name, count, root, listed = found.groups()
    lonely = listed.split(", ")
    assert int(count) == len(lonely)
    layout = BENCHMARKS[name]
    generator = torch.Generator().manual_seed(1)
    # one good pair, and the files the message names
    write_image(tmp_path / root / layout.degraded_dirs[0] / "rain-1.png", generator)
    write_image(tmp_path / root / layout.clean_dirs[0] / "norain-1.png", generator)
    for path in lonely:
        write_image(tmp_path / root / path, generator)
    shutil.copy(exported_weights, tmp_path / "mine.safetensors")
    with inside(tmp_path):
        with pytest.raises(InputError) as raised:
            read_benchmark(name, root)
        assert str(raised.value) == message
        with pytest.warns(RuntimeWarning, match="have no partner"):
            dataset = read_benchmark(name, root, strict=False)
        assert dataset.unmatched == lonely and len(dataset) == 1
        argv = ["evaluate", "--checkpoint", "mine.safetensors", "--benchmark", name, "--root", root]
        assert main(argv) == 2  # the command line reads strictly
        assert message in capsys.readouterr().err


def test_the_wed_bmp_files_are_read_as_they_are(page):
    """The page reads WED's BMP files as they are: every one decodes, none is skipped."""
    root, namespaces, error = page
    assert error is None
    denoising = find(namespaces, "denoising")
    assert [p.suffix for p in denoising.paths].count(".bmp") == 3  # the WED tree's files
    with inside(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crops larger than the tiny images warn; not our point
        items = [denoising[i] for i in range(len(denoising))]
    assert len(items) == 6 and denoising.skipped == {}
