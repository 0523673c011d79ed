"""Release hygiene: the wheel and the sdist build offline, hold the package and install cleanly.

``python -m build --no-isolation`` uses the build backend of this environment (hatchling, in the
``dev`` extra), so no network is needed. Each artefact is installed with ``--no-deps`` into a fresh
venv and imported from outside the repository; the venv sees this environment's packages (torch,
einops, kornia, numpy, hatchling) through a ``.pth`` file, so torch is not reinstalled, but not its
editable install of this package, so the import really comes from the artefact.
"""

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import contrastive_prompts

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(  # sub-packages too (contrastive_prompts/app/data/)
    p.relative_to(ROOT / "contrastive_prompts").as_posix()
    for p in (ROOT / "contrastive_prompts").rglob("*.py")
)
SMOKE = (
    "import contrastive_prompts as cp; "
    "cp.SparsePrompt(dim=4, prompt_dim=2, prompt_size=2); "
    "print(cp.__version__, cp.__file__)"
)


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def make_venv(path: Path) -> Path:
    """A venv with system site packages that also sees this environment's site-packages."""
    venv.create(path, system_site_packages=True, with_pip=False)
    python = path / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_outer_env.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python


def install_and_import(artefact: Path, env: Path, *extra: str) -> str:
    python = make_venv(env)
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--quiet", *extra, artefact)  # fmt: skip
    outside = env / "cwd"
    outside.mkdir()
    version, location = run(python, "-c", SMOKE, cwd=outside).split()
    assert version == contrastive_prompts.__version__
    assert Path(location).resolve().is_relative_to(env.resolve()), location
    return location


def test_wheel_holds_the_package_and_py_typed(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    expected = {f"contrastive_prompts/{m}" for m in [*MODULES, "py.typed"]}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(dist["wheel"]).read(entry_points).decode()
    assert "contrastive-prompts = contrastive_prompts.app.cli:main" in text


def test_sdist_holds_the_package_and_its_tests(dist):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    expected = {f"contrastive_prompts/{m}" for m in [*MODULES, "py.typed"]}
    expected |= {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "conftest.py"}
    expected |= {"tests/test_prompt.py", "tests/test_packaging.py"}
    assert expected <= names, sorted(expected - names)


def test_wheel_installs_into_a_clean_venv(dist, tmp_path):
    install_and_import(dist["wheel"], tmp_path / "venv")
    assert "restore" in run(tmp_path / "venv" / "bin" / "contrastive-prompts", "--help")


def test_sdist_installs_into_a_clean_venv(dist, tmp_path):
    install_and_import(dist["sdist"], tmp_path / "venv", "--no-build-isolation")


def readme_install_blocks() -> list[list[str]]:
    """The command lines of each bash block of the README's install section (comments dropped,
    ``a && b`` as two commands)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, "README: expected bash blocks under '## Install'"
    return [
        [command.strip() for line in block.splitlines()
         for command in line.split("#", 1)[0].split("&&") if command.strip()]
        for block in blocks
    ]  # fmt: skip


def source_url() -> str:
    found = re.search(r'^Source = "(.+)"$', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    assert found, "pyproject.toml: expected a Source URL under [project.urls]"
    return found.group(1)


def test_readme_install_commands_work_in_a_fresh_clone_and_venv(tmp_path):
    """The README's install lines, as written, in a copy of the repository's tracked files.

    The section has three blocks: the clone and install with the CPU build of torch, the CUDA
    line that replaces the CPU line, and a wheel built in the clone. Offline: ``git clone`` of
    the address pyproject.toml gives is a copy of the tracked files; ``pip install`` gets
    ``--no-index --no-build-isolation`` and loses ``--index-url`` (everything it needs is in the
    venv through this environment's packages, so nothing is downloaded and torch is not
    replaced); ``python -m build`` gets ``--no-isolation``. Each install is checked by importing
    the package from outside the clone.
    """
    clone_block, cuda_block, wheel_block = readme_install_blocks()
    assert [c.split()[:2] for c in clone_block] == [
        ["git", "clone"], ["cd", "contrastive_prompts"], ["python3", "-m"],
        [".", ".venv/bin/activate"], ["pip", "install"], ["pip", "install"],
    ], clone_block  # fmt: skip
    torch_cpu, torch_cuda = clone_block[4].split(), cuda_block[0].split()
    assert torch_cpu[:3] == torch_cuda == ["pip", "install", torch_cuda[2]], (torch_cpu, cuda_block)
    assert torch_cuda[2].startswith("torch==")  # torch first, pinned, the same release
    assert torch_cpu[3:] == ["--index-url", "https://download.pytorch.org/whl/cpu"]
    assert len(cuda_block) == 1
    url = clone_block[0].split()[2]
    assert url == source_url() and url.rsplit("/", 1)[1] == clone_block[1].split()[1]
    clone = tmp_path / "contrastive_prompts"
    for name in run("git", "ls-files", cwd=ROOT).splitlines():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    outside = tmp_path / "outside"
    outside.mkdir()
    venvs = {"clone": clone / ".venv", "elsewhere": tmp_path / "elsewhere"}
    steps = {"clone": clone_block[2:] + cuda_block, "elsewhere": wheel_block}
    for where, commands in steps.items():
        python = make_venv(venvs[where])
        for command in commands:
            words = shlex.split(command)
            if words[:3] == ["python3", "-m", "venv"] or words[0] == ".":
                continue  # the venv: made above, with this environment's packages in sight
            if words[0] == "pip":
                if "--index-url" in words:
                    at = words.index("--index-url")
                    del words[at : at + 2]
                found = [str(p) for w in words[2:] for p in sorted(clone.glob(w))] or words[2:]
                run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
                    "--no-build-isolation", "--quiet", *found, cwd=clone)  # fmt: skip
            else:
                assert words[:3] == ["python", "-m", "build"], command
                run(python, *words[1:], "--no-isolation", cwd=clone)
        version, location = run(python, "-c", SMOKE, cwd=outside).split()
        assert version == contrastive_prompts.__version__
        assert Path(location).resolve().is_relative_to(venvs[where].resolve()), location


# what ``pip install`` may name: packages on the index, the clone (``.`` with extras), a wheel
ON_THE_INDEX = {"torch", "build", "onnx", "onnxscript", "onnxruntime", "tensorboard", "matplotlib",
                "scikit-image", "huggingface_hub", "spandrel", "spandrel_extra_arches", "pytest",
                "hypothesis", "torchvision"}  # fmt: skip


def install_mentions() -> list[tuple[str, str, str]]:
    """``(file, what follows "pip install", its line)`` everywhere a user reads: the package's
    messages and docstrings, the README, the docs, the examples, the benchmarks, the Makefile."""
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").rglob("*.md"))]
    for folder in ("contrastive_prompts", "examples", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    found = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"pip install ([^`)#;]*)", line):
                found.append((path.relative_to(ROOT).as_posix(), match.group(1), line))
    return found


def test_every_install_named_anywhere_works():
    """No message or page names an install that fails: the package itself is not on the index
    yet (one sentence says so), and every extra named exists."""
    extras = set(re.findall(r"^(\w+) = \[", (ROOT / "pyproject.toml").read_text().split(
        "[project.optional-dependencies]", 1)[1].split("\n[", 1)[0], flags=re.M))  # fmt: skip
    mentions = install_mentions()
    assert len(mentions) > 10, mentions  # the search finds them
    for where, text, line in mentions:
        words = iter(text.split())
        for word in words:
            word = word.rstrip(",").strip("\"'")
            if word in ("--index-url", "--extra-index-url"):
                next(words)
            elif word in ("&&", "or") or word.startswith(("(", "$(")):
                break  # the next command, prose, or make's TORCH_SPEC (tested with make)
            elif word.startswith("-") or word.startswith("dist/"):
                continue
            elif word.startswith("."):
                named = re.fullmatch(r"\.(?:\[([\w,]+)\])?", word)
                assert named, (where, text)
                assert set(filter(None, (named.group(1) or "").split(","))) <= extras, (where, text)
            elif word == "contrastive-prompts":
                assert where == "README.md" and "will install it" in line, (where, line)
            else:
                name = re.split(r"[=<>\[]", word)[0]
                assert name in ON_THE_INDEX, f"{where}: pip install {text}"
