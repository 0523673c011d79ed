"""spandrel recognises this library's weights, PromptIR's and CPL's, and builds the same model.

spandrel needs torchvision, built for one torch release: ``make test-spandrel`` runs these tests
in a virtual environment of their own (where a missing spandrel fails them, SPANDREL_REQUIRED);
elsewhere, without spandrel, they are skipped.
"""

import importlib
import os
import re
import textwrap
from pathlib import Path

import pytest
import torch

if os.environ.get("SPANDREL_REQUIRED"):
    spandrel = importlib.import_module("spandrel")
    extra = importlib.import_module("spandrel_extra_arches")
else:
    spandrel = pytest.importorskip("spandrel")
    extra = pytest.importorskip("spandrel_extra_arches")

from safetensors.torch import save_file

from contrastive_prompts import SparsePromptIR
from contrastive_prompts.app.checkpoints import (
    UNUSED_PROMPTIR_KEYS,
    load_checkpoint_model,
    load_promptir,
)
from contrastive_prompts.app.pretrained import WEIGHTS_FILE, save_pretrained
from contrastive_prompts.app.spandrel_arch import ARCH_ID, SparsePromptIRArch, install

from .test_model import random_promptir_state_dict


@pytest.fixture
def registry():
    """spandrel's registry with its extra architectures (Restormer among them), then ours."""
    found = spandrel.MAIN_REGISTRY.copy()
    found.add(*extra.EXTRA_REGISTRY, ignore_duplicates=True)
    assert install(found) is True
    return found


def _load(registry, path):
    return spandrel.ModelLoader(registry=registry).load_from_file(path)


def _image(size=(1, 3, 21, 26), seed=0):
    return torch.rand(size, generator=torch.Generator().manual_seed(seed))


def _same_output(descriptor, model):
    x = _image()
    with torch.no_grad():
        expected = model.eval()(x).clamp(0, 1)
    assert torch.equal(descriptor(x), expected)


def test_install_adds_the_architecture_once_ahead_of_restormer(registry):
    assert install(registry) is False
    order = [support.architecture.id for support in registry.architectures("detection")]
    assert order.index(ARCH_ID) < order.index("Restormer")


OTHER_SIZES = {"dim": 8, "num_blocks": (1, 1, 2, 1), "num_refinement_blocks": 0}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_prompts": 3}, {"use_prompts": False}, OTHER_SIZES],
    ids=["tiny", "three-experts", "no-prompts", "other-sizes"],
)
def test_this_librarys_weights_load_with_their_sizes_read_from_the_shapes(
    registry, tmp_path, overrides
):
    torch.manual_seed(0)
    model = SparsePromptIR("tiny", **overrides)
    path = save_pretrained(model, tmp_path / "m") / WEIGHTS_FILE
    descriptor = _load(registry, path)
    assert descriptor.architecture.id == ARCH_ID and descriptor.purpose == "Restoration"
    assert descriptor.scale == 1 and descriptor.tiling == spandrel.ModelTiling.DISCOURAGED
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in descriptor.model.state_dict().items()} == shapes
    if model.config.use_prompts:  # without prompts, their sizes are in no tensor
        assert descriptor.model.config == model.config
    _same_output(descriptor, load_checkpoint_model(path))


def test_the_experts_kept_per_image_are_a_choice_spandrel_cannot_read(tmp_path):
    model = SparsePromptIR("tiny", top_k=2)
    path = save_pretrained(model, tmp_path / "m") / WEIGHTS_FILE
    found = spandrel.MAIN_REGISTRY.copy()
    install(found, top_k=2)
    descriptor = _load(found, path)
    assert descriptor.model.config.top_k == 2 and "top-2" in descriptor.tags
    _same_output(descriptor, model)
    with pytest.raises(Exception, match=r"expected top_k to be an integer"):
        SparsePromptIRArch(top_k=0)


def test_an_official_promptir_checkpoint_runs_as_promptir(registry, promptir_checkpoint):
    descriptor = _load(registry, promptir_checkpoint)
    assert descriptor.architecture.id == ARCH_ID and "PromptIR" in descriptor.tags
    assert descriptor.model.config.top_k == 5
    _same_output(descriptor, load_promptir(promptir_checkpoint, top_k=5))


def test_a_bare_promptir_state_dict_is_ours_not_restormers(registry, tmp_path):
    """Restormer's names are all in PromptIR's: ours must be asked first."""
    path = tmp_path / "promptir.pth"
    torch.save(random_promptir_state_dict(), path)
    descriptor = _load(registry, path)
    assert descriptor.architecture.id == ARCH_ID
    _same_output(descriptor, load_promptir(path, top_k=5))


def test_a_cpl_release_checkpoint_runs_with_one_expert(registry, tmp_path):
    """CPL's released code saves PromptIR's names without the six unused convolutions, as
    BasicSR does (under ``params``), and runs the top-1 expert."""
    state = {k: v for k, v in random_promptir_state_dict(1).items()
             if not UNUSED_PROMPTIR_KEYS.match(k)}  # fmt: skip
    state["var_conv.0.weight"] = torch.rand(96, 96, 3, 3)  # its training code's uncertainty head
    path = tmp_path / "CPLIR_Weatherbench.pth"
    torch.save({"params": state}, path)
    descriptor = _load(registry, path)
    assert descriptor.model.config.top_k == 1 and "CPL" in descriptor.tags
    _same_output(descriptor, load_promptir(path, top_k=1))


def test_what_is_not_the_reference_model_is_left_to_the_others(registry, tmp_path):
    restormer = extra.architectures.Restormer.Restormer(num_blocks=[1, 1, 1, 1],
                                                         num_refinement_blocks=1)  # fmt: skip
    path = tmp_path / "restormer.safetensors"
    save_file(restormer.state_dict(), path)
    assert not SparsePromptIRArch().detect(restormer.state_dict())
    assert _load(registry, path).architecture.id == "Restormer"


def test_bfloat16_as_the_descriptor_says(tmp_path):
    torch.manual_seed(0)
    model = SparsePromptIR("tiny")
    path = save_pretrained(model, tmp_path / "m") / WEIGHTS_FILE
    found = spandrel.MAIN_REGISTRY.copy()
    install(found)
    descriptor = _load(found, path)
    assert descriptor.supports_bfloat16
    descriptor.bfloat16()
    out = descriptor(_image().bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 21, 26)
    with torch.no_grad():
        reference = model(_image()).clamp(0, 1)
    assert (out.float() - reference).abs().mean() < 0.05


def _page_blocks(text):
    """Python blocks of a page, indented ones (in a list) included, without their indent."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.M | re.S)
    return [textwrap.dedent(code) for _, code in blocks]


def test_the_sharing_pages_spandrel_lines_run(tmp_path, monkeypatch):
    """The page's loading block, and the ComfyUI package's ``__init__.py`` it gives."""
    page = Path(__file__).resolve().parents[1] / "docs" / "sharing.md"
    if not page.is_file():
        pytest.skip("docs/ is not in this tree")
    blocks = [code for code in _page_blocks(page.read_text()) if "spandrel_arch" in code]
    assert len(blocks) == 2
    loading, comfyui = blocks
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = SparsePromptIR("tiny")
    save_pretrained(model, tmp_path / "mine")
    namespace: dict = {}
    exec(loading, namespace)
    assert namespace["model"].architecture.id == ARCH_ID
    assert namespace["restored"].shape == namespace["image"].shape
    namespace = {}
    exec(comfyui, namespace)
    assert namespace["NODE_CLASS_MAPPINGS"] == {} and ARCH_ID in spandrel.MAIN_REGISTRY
