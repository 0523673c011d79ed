"""Makes ``torch`` available to the docstring examples that pytest runs as doctests.

The spandrel architecture's module needs spandrel, which brings torchvision (the release made for
the installed torch): without it the module is not collected; ``make test-spandrel`` runs it in
an environment of its own.
"""

import importlib.util

import pytest
import torch

collect_ignore = []
if importlib.util.find_spec("spandrel") is None:
    collect_ignore.append("contrastive_prompts/app/spandrel_arch.py")


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
