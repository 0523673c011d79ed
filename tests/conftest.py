import os

import pytest
import torch
from hypothesis import settings

# CI=true makes Hypothesis deterministic (its "ci" profile); keep examples few on 2 cores.
settings.register_profile("default", deadline=None, max_examples=20)
settings.register_profile("ci", deadline=None, max_examples=20, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
