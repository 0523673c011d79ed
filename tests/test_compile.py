"""Compiled training: compile_regions, the negatives path through compiled regions, no recompiles.

The default suite compiles with the ``aot_eager`` backend (Dynamo and AOT autograd, without
Inductor's code generation): the graphs, the guards and the recompiles are the ones Inductor
gets, in seconds. ``-m slow`` runs the same training through Inductor.
"""

import copy
import functools

import pytest
import torch
from torch._dynamo.utils import counters
from torch.nn.utils import parameters_to_vector

from contrastive_prompts import (
    CPLObjective,
    InputError,
    InputTypeError,
    SparsePromptIR,
    forward_with_negatives,
)
from contrastive_prompts.app import train as train_module
from contrastive_prompts.app.compiling import compile_regions, compiled_region
from contrastive_prompts.core import negatives_reuse, prompt_layers
from contrastive_prompts.core.negatives import _watched
from tests.test_train import interrupt_at, make_trainer

REFERENCE_REGIONS = {
    "encoder_level1", "down1_2", "encoder_level2", "down2_3", "encoder_level3", "down3_4",
    "latent", "fusion1", "fusion2", "fusion3", "up4_3", "decoder_level3", "up3_2",
    "decoder_level2", "up2_1", "decoder_level1", "refinement",
}  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """A clean Dynamo, which raises where it would fall back to eager at its recompile limit."""
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


def twin_models() -> tuple[SparsePromptIR, SparsePromptIR]:
    torch.manual_seed(0)
    eager = SparsePromptIR("tiny")
    return eager, copy.deepcopy(eager)


def test_regions_of_the_reference_model_are_its_prompt_free_parts():
    model = SparsePromptIR("tiny")
    keys = list(model.state_dict())
    names = compile_regions(model, backend="aot_eager")
    assert set(names) == REFERENCE_REGIONS  # no prompt layer, no lone convolution
    assert all(compiled_region(model.get_submodule(n)) for n in names)
    assert not any(compiled_region(p) for p in prompt_layers(model).values())
    assert list(model.state_dict()) == keys  # the module tree and the state dict are unchanged
    assert compile_regions(model, backend="aot_eager") == []  # compiled already


def test_a_network_without_prompts_is_compiled_whole():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    assert compile_regions(net, backend="aot_eager") == [""]
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(net(x), net[1](net[0](x)))


def test_compiled_regions_compute_what_eager_does_and_copies_use_their_own_weights():
    eager, compiled = twin_models()
    compile_regions(compiled, backend="aot_eager")
    x = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
    duplicate = copy.deepcopy(compiled)
    with torch.no_grad():
        for p in duplicate.parameters():
            p.mul_(0.5)
    assert not torch.allclose(duplicate(x), compiled(x), atol=1e-3)
    duplicate_eager = copy.deepcopy(eager)
    duplicate_eager.load_state_dict(duplicate.state_dict())
    torch.testing.assert_close(duplicate(x), duplicate_eager(x), rtol=1e-5, atol=1e-6)


def test_negatives_through_compiled_regions_equal_eager_and_reuse_the_encoder():
    eager, compiled = twin_models()
    names = compile_regions(compiled, backend="aot_eager")
    x = torch.rand(2, 3, 32, 32)
    runs = []
    for model in (eager, compiled):
        out = forward_with_negatives(
            model, x, num_negatives=3, generator=torch.Generator().manual_seed(1)
        )
        out.output.mean().backward()
        runs.append(out)
    torch.testing.assert_close(runs[1].output, runs[0].output, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(runs[1].negatives, runs[0].negatives, rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[1].routing, runs[0].routing, strict=True):
        assert torch.equal(a.indices, b.indices)
    for a, b in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    # the insides of compiled regions are not hooked; the regions themselves are served
    watched = set(_watched(compiled))
    inside = {m for n in names for m in compiled.get_submodule(n).modules()} - {
        compiled.get_submodule(n) for n in names
    }
    assert not watched & inside
    served = set(negatives_reuse(compiled, x).served)
    assert {"encoder_level1", "encoder_level2", "encoder_level3", "latent"} <= served


def test_module_compile_is_watched_as_one_opaque_call():
    torch.manual_seed(0)
    model = SparsePromptIR("tiny")
    model.latent.compile(backend="aot_eager")  # torch's own: hooks would run inside the graph
    watched = set(_watched(model))
    assert model.latent not in watched and not watched & set(model.latent.modules())
    x = torch.rand(1, 3, 16, 16)
    out = forward_with_negatives(model, x, num_negatives=2)
    assert out.negatives.shape == (1, 2, 3, 16, 16)


def test_bad_input_names_what_was_expected():
    with pytest.raises(InputTypeError, match=r"compile_regions: expected an nn.Module, got int"):
        compile_regions(3)  # type: ignore[arg-type]


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture
def aot_eager_training(monkeypatch):
    """Trainers compile with aot_eager: Dynamo's graphs and guards, AOT autograd, no codegen."""
    monkeypatch.setattr(
        train_module, "compile_regions", functools.partial(compile_regions, backend="aot_eager")
    )


def test_compiled_training_equals_eager_stops_compiling_and_resumes(
    tmp_path, aot_eager_training, monkeypatch
):
    straight = make_trainer(tmp_path / "eager", steps=5, val_every=2)
    straight.fit()

    def counting(trainer, after):  # graphs compiled so far, after each step
        step = trainer.train_step
        trainer.train_step = lambda *batch: (step(*batch), after.append(graphs()))[0]

    first, after = make_trainer(tmp_path / "compiled", steps=5, val_every=2, compile=True), []
    assert compiled_region(first.model.latent)
    assert not compiled_region(first.ema.module.latent)  # validation runs the EMA copy, eager
    counting(first, after)
    interrupt_at(first, 3, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = make_trainer(tmp_path / "compiled", steps=5, val_every=2, compile=True)
    resumed.load(tmp_path / "compiled" / "run" / "last.pt")
    counting(resumed, after)
    resumed.fit()
    # the first step compiles the positive, negative and backward graphs; the next steps and
    # the validation at step 2 compile nothing; a resumed process compiles its graphs again in
    # its first step (step 4), then nothing (step 5 and the validation at 4)
    # every region compiled (none left to eager by a shared cache): a graph each at least
    assert after[0] >= len(REFERENCE_REGIONS) and after[1:3] == [after[0]] * 2
    assert after[3] > after[2] and after[4] == after[3]
    # the compiled graphs round differently (1e-7 relative in the first steps); AdamW's
    # normalised updates let that grow to some 1e-4 over five steps at lr 1e-3
    losses = [r["loss"] for r in resumed.history]
    assert losses[:2] == pytest.approx([r["loss"] for r in straight.history[:2]], rel=1e-5)
    assert losses == pytest.approx([r["loss"] for r in straight.history], rel=1e-3)
    ours, theirs = (parameters_to_vector(m.parameters()) for m in (resumed.model, straight.model))
    assert (ours - theirs).norm() < 1e-3 * theirs.norm()


def test_compile_is_a_checked_config_field(tmp_path):
    with pytest.raises(InputError, match=r"expected compile to be a bool \(True or False\), got"):
        make_trainer(tmp_path, compile="yes")


@pytest.mark.slow
def test_inductor_training_equals_eager(tmp_path):
    straight = make_trainer(tmp_path / "eager", steps=3)
    straight.fit()
    compiled = make_trainer(tmp_path / "compiled", steps=3, compile=True)
    compiled.fit()
    assert [r["loss"] for r in compiled.history] == pytest.approx(
        [r["loss"] for r in straight.history], rel=1e-4
    )


def test_objective_through_compiled_loss_equals_eager():
    eager, compiled = twin_models()
    objective = CPLObjective(num_negatives=2)
    compiled_objective = copy.deepcopy(objective)
    compile_regions(compiled, backend="aot_eager")
    compile_regions(compiled_objective.loss, backend="aot_eager")
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    a = objective(eager, x, y, generator=torch.Generator().manual_seed(0))
    b = compiled_objective(compiled, x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.cpr, a.cpr, rtol=1e-5, atol=1e-7)
