import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# CI=true makes Hypothesis deterministic (its "ci" profile); keep examples few on 2 cores.
settings.register_profile("default", deadline=None, max_examples=20)
settings.register_profile("ci", deadline=None, max_examples=20, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# at most two threads, and the cores shared among pytest-xdist's workers (``-n``): one each on two
# cores, for the workers and for the processes they start (OMP_NUM_THREADS), rather than more
# threads than cores
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
torch.set_num_threads(THREADS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# kornia-style fixtures: a test that takes ``device`` / ``dtype`` runs on the CPU and on CUDA when
# there is one, in float32, float64 and bfloat16.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=list(DTYPES.values()), ids=list(DTYPES))
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


# Files several tests read as a user would, made once per session and copied where needed.


@pytest.fixture(scope="session")
def exported_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mine.safetensors``: a one-step ``tiny`` run exported by the library itself."""
    from contrastive_prompts.app.checkpoints import export_weights
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.app.data import DegradedCopies
    from contrastive_prompts.app.train import Trainer

    folder = tmp_path_factory.mktemp("exported")
    config = TrainConfig(steps=1, batch_size=1, crop=32, save_every=1, device="cpu",
                         out_dir=str(folder / "run"))  # fmt: skip
    Trainer(config, val_data=DegradedCopies([torch.rand(3, 16, 16)], "3task")).fit()
    return export_weights(folder / "run" / "last.pt", folder / "mine.safetensors")


@pytest.fixture(scope="session")
def promptir_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``promptir.ckpt``: every tensor of the official PromptIR model, as its Lightning saves."""
    from .test_model import random_promptir_state_dict

    path = tmp_path_factory.mktemp("promptir") / "promptir.ckpt"
    lightning = {f"net.{k}": v for k, v in random_promptir_state_dict().items()}
    torch.save({"state_dict": lightning}, path)
    return path


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The documentation site, built once with ``mkdocs build --strict``: its folder and the log."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "mkdocs.yml").is_file():  # an sdist ships no docs sources
        pytest.skip("the docs sources are not in this tree")
    for module in ("mkdocs", "material", "mkdocstrings", "latex2mathml"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=root,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return out, build.stdout + build.stderr
