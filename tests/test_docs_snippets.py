"""The code on the docs page 'CPL in your own network' runs as written and does what it says."""

import math
import re
import runpy
from pathlib import Path

import torch
from torch import nn

from contrastive_prompts import PromptStage

SNIPPETS = Path(__file__).resolve().parents[1] / "docs" / "snippets"


def run(name: str) -> dict:
    return runpy.run_path(str(SNIPPETS / name), run_name="__snippet__")


def test_add_prompts_snippet_trains_a_network_that_knew_no_prompts():
    found = run("own_network_add_prompts.py")
    model = found["model"]
    stage = model.decoder.prompt_stage  # a child of the prompted module, which stays in place
    assert isinstance(model.decoder, nn.Sequential) and isinstance(stage, PromptStage)
    assert stage.prompt.dim == 16  # found from example_input
    new_keys = set(model.state_dict()) - found["keys"]
    assert found["keys"] <= set(model.state_dict())
    assert new_keys and all(k.startswith("decoder.prompt_stage.") for k in new_keys)
    assert found["parts"].stages == ("decoder.prompt_stage.prompt",)
    assert math.isfinite(found["parts"].loss.item())
    assert stage.fusion.proj.weight.abs().sum() > 0  # the step moved the stage


def test_fine_tune_snippet_starts_where_the_plain_network_was_and_goes_back(monkeypatch):
    saved = []
    monkeypatch.setattr(nn.Module, "load_state_dict", _recording(nn.Module.load_state_dict, saved))
    found = run("own_network_fine_tune.py")
    model, weights, plain = found["model"], found["weights"], found["plain"]
    # both loads were strict and matched every key: the pretrained weights into the plain
    # network, then the weights without the stages into a fresh plain network
    assert [strict for strict, _ in saved] == [True, True]
    assert all(not r.missing_keys and not r.unexpected_keys for _, r in saved)
    assert list(plain) == list(weights)
    # the pretrained weights are in the prompted network under their own names
    assert set(weights) <= set(model.state_dict())
    assert isinstance(model[2].prompt_stage, PromptStage) and model[2].prompt_stage.prompt.dim == 16
    # unchanged output at the start: what the snippet asserts, checked independently here
    fresh = found["plain_network"]()
    fresh.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(found["before"], fresh(found["degraded"]), rtol=0, atol=0)
    # fine-tuning moved the stage, and remove_prompts worked on a copy: the model keeps it
    assert model[2].prompt_stage.fusion.proj.weight.abs().sum() > 0
    assert not any(torch.equal(plain[k], weights[k]) for k in plain if k.endswith("weight"))
    # the report: own against negative prompts for both degradations, 4 images each
    effect = found["effect"]
    assert effect.names == ("haze", "low light") and effect.count == {"haze": 4, "low light": 4}
    assert list(effect.experts) == ["2.prompt_stage.prompt"]


def _recording(load, saved):
    def recorded(self, state_dict, strict=True, **kwargs):
        result = load(self, state_dict, strict, **kwargs)
        saved.append((strict, result))
        return result

    return recorded


def test_own_layers_snippet_gets_negatives_and_routing():
    found = run("own_network_layers.py")
    assert found["negatives"].shape == (4, 2, 3, 32, 32)
    assert found["routing"].names == ["prompt"]
    assert found["model"].prompt.router.weight.grad is not None


def test_trainer_snippet_trains_ones_own_network(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.mkdtemp", lambda: str(tmp_path))
    found = run("own_network_trainer.py")
    assert len(found["history"]) == 4
    assert (tmp_path / "last.pt").is_file()
    assert torch.isfinite(torch.tensor([r["loss"] for r in found["history"]])).all()


def test_the_option_table_maps_each_trainer_field_to_the_objective():
    """Each row of the own-network page's table: the field set to a value that is not its
    default reaches the objective under the name the table gives."""
    from contrastive_prompts.app.building import build_objective
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.core import FilterFeatures, PixelFeatures

    text = (SNIPPETS.parents[0] / "own-network.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \(`(--[\w-]+)`\) \| `(\w+)\((\w+)=", text, flags=re.M)
    values = {"cpr_weight": 0.5, "num_negatives": 3, "use_labels": False, "balance_weight": 0.2,
              "routing_weight": 0.3, "chunk_size": 5, "cpr_mode": "ratio",
              "cpr_features": "pixels", "temperature": 0.3}  # fmt: skip
    assert [field for field, *_ in rows] == list(values), rows
    for field, flag, owner, argument in rows:
        assert flag == "--" + field.replace("_", "-")
        assert values[field] != getattr(TrainConfig(), field), field  # the test can tell
        objective = build_objective(TrainConfig(**{field: values[field]}), 5, "cpu")
        target = objective if owner == "CPLObjective" else objective.loss
        assert owner == type(target).__name__, (field, owner)
        got = getattr(target, argument)
        if field == "cpr_features":
            assert isinstance(got, PixelFeatures) and not isinstance(got, FilterFeatures)
        else:
            assert got == values[field], (field, argument, got)
