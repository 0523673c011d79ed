"""The picture of the method (docs/images/method.svg, a static file) still shows the network.

The SVG was drawn once by a script that is gone; what it claims about ``SparsePromptIR`` (the
names of its prompt layers and fusions, their channels) is checked here against the model, so a
change to the architecture that makes the picture wrong fails this test.
"""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from contrastive_prompts import SparsePrompt, SparsePromptIR
from contrastive_prompts.core import PromptFusion

SVG = Path(__file__).resolve().parents[1] / "docs" / "images" / "method.svg"
if not SVG.is_file():  # an sdist ships the tests without the docs
    pytest.skip("docs/images/method.svg is not in this tree", allow_module_level=True)


def test_the_picture_names_the_models_prompt_layers_and_their_channels():
    ET.parse(SVG)  # well-formed: a broken file would show as a broken image
    # matplotlib drew the text as paths, each after a comment holding its string
    labels = re.findall(r"<!-- (.*?) -->", SVG.read_text(encoding="utf-8"))
    model = SparsePromptIR("tiny")
    c = model.config.dim
    stages = [re.fullmatch(r"prompt stage (\d)  \((?:latent, )?(\d)C → (\d)C\)", t) for t in labels]
    stages = [s.groups() for s in stages if s]
    assert sorted(i for i, _, _ in stages) == ["1", "2", "3"]
    for i, into, out in stages:
        assert isinstance(model.get_submodule(f"prompt{i}"), SparsePrompt)
        fusion = model.get_submodule(f"fusion{i}")
        assert isinstance(fusion, PromptFusion)
        assert (fusion.dim, fusion.out_dim) == (int(into) * c, int(out) * c), f"stage {i}"
    assert {f"SparsePrompt prompt{i}" for i in "123"} | {f"fusion{i}" for i in "123"} <= set(labels)
