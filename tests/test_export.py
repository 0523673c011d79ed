"""Export for deployment: the torch.export program and the ONNX file compute what eager PyTorch
computes, on sizes and batches never seen at export, with the same experts.

The reference model's program and ONNX file are the ones docs/export.md makes: the page runs here
as a reader runs it (its ``contrastive-prompts`` command, then its Python blocks in page order),
and the tests check what it made against eager PyTorch.
"""

import re
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive_prompts import (
    InputError,
    InputTypeError,
    SparsePrompt,
    SparsePromptIR,
    add_prompts,
    negative_prompts,
    record_routing,
)
from contrastive_prompts.app.cli import main
from contrastive_prompts.app.export import export_onnx, export_program
from contrastive_prompts.core import PromptFusion, prompt_layers

from .networks import PlainUNet

PAGE = Path(__file__).resolve().parents[1] / "docs" / "export.md"
# (batch, height, width) never used at export (a batch of 2 at 32 x 32): 40 x 24 needs no padding
# to a multiple of 8, 57 x 33 needs some on both sides
SIZES = [(3, 40, 24), (1, 57, 33)]
PROGRAM_TOLERANCE = 1e-5  # the program runs the same kernels as eager PyTorch
ONNX_TOLERANCE = 1e-4  # ONNX Runtime's kernels round differently


def degraded_batch(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """Images of different brightness, so that the samples of a batch pick different experts."""
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return x * torch.linspace(0.1, 1.0, batch).view(batch, 1, 1, 1)


def spread_routers(model: nn.Module) -> nn.Module:
    """Routers with larger weights: the experts then depend more on the input."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in prompt_layers(model).values():
            layer.router.weight.normal_(0.0, 1.0, generator=generator)
    return model


def session(path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def page_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), flags=re.M | re.S)


# -- the reference model, as the docs page exports it ------------------------------------------


@pytest.fixture(scope="module")
def page(tmp_path_factory, exported_weights):
    """docs/export.md run in a folder holding the files it names.

    ``mine.safetensors`` is a one-step ``tiny`` run. ``runs/cpl/last.pt``, which the page's
    command exports to ONNX, holds the ``tiny`` preset's widths and prompt stages without the
    Restormer blocks between them: every part the export must carry (the padding, three routed
    prompt stages and their fusion blocks, the crop) at a third of the export time.
    """
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.app.train import Trainer

    if not PAGE.is_file():  # an sdist ships the tests without the docs pages
        pytest.skip("docs/export.md is not in this tree")
    for module in ("onnxscript", "onnxruntime"):
        pytest.importorskip(module)
    folder = tmp_path_factory.mktemp("export_page")
    shutil.copy(exported_weights, folder / "mine.safetensors")
    torch.manual_seed(0)
    bare = SparsePromptIR("tiny", num_blocks=(0, 0, 0, 0), num_refinement_blocks=0)
    config = TrainConfig(out_dir=str(folder / "runs" / "cpl"), device="cpu")
    checkpoint = Trainer(config, model=spread_routers(bare)).save()
    (command,) = [
        line
        for block in page_blocks("bash")
        for line in block.splitlines()
        if line.startswith("contrastive-prompts export")
    ]
    program_block, onnx_block = page_blocks("python")
    found: dict = {"__name__": "__docs_export__"}
    ran: dict = {"__name__": "__docs_export_onnx__"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(shlex.split(command)[1:]) == 0
        exec(compile(program_block, str(PAGE), "exec"), found)
        exec(compile(onnx_block, str(PAGE), "exec"), ran)  # alone: it needs nothing above it
    return SimpleNamespace(
        folder=folder, command=command, checkpoint=checkpoint, onnx=folder / "model.onnx",
        onnx_image=ran["image"], onnx_restored=ran["restored"],
        **{name: found[name] for name in ("model", "program", "image", "experts")},
    )  # fmt: skip


def test_the_page_runs_as_written(page):
    assert page.onnx_restored.shape == page.onnx_image.shape == (1, 3, 57, 33)  # ONNX Runtime
    assert list(page.experts) == ["prompt3", "prompt2", "prompt1"]
    assert all(e.shape == (1, 1) and e.dtype == torch.int64 for e in page.experts.values())
    loaded = torch.export.load(page.folder / "model.pt2")
    saved_out, _ = loaded.module()(page.image)
    program_out, _ = page.program.module()(page.image)
    assert torch.equal(saved_out, program_out)


def test_the_program_matches_eager_with_the_same_experts(page):
    runner, experts_used = page.program.module(), set()
    for batch, height, width in SIZES:
        x = degraded_batch(batch, height, width)
        out, routing = runner(x)
        with torch.no_grad(), record_routing(page.model) as log:
            expected = page.model(x)
        expected_routing = reversed(log)  # run prompt3, prompt2, prompt1
        assert out.shape == (batch, 3, height, width)
        assert (out - expected).abs().max() <= PROGRAM_TOLERANCE
        assert list(routing) == ["prompt3", "prompt2", "prompt1"]  # in the order they ran
        layers = zip(("prompt1", "prompt2", "prompt3"), expected_routing, strict=True)
        for name, expected_layer in layers:
            assert torch.equal(routing[name], expected_layer.indices), name
            experts_used |= {(name, int(i)) for i in expected_layer.indices.flatten()}
    # some layer routes these inputs to several experts: a graph that fixed one would fail above
    assert len(experts_used) > 3


def test_the_program_serves_sizes_down_to_its_minimum_and_refuses_smaller(page):
    x = degraded_batch(2, 9, 16)
    out, _ = page.program.module()(x)
    with torch.no_grad():
        assert (out - page.model(x)).abs().max() <= PROGRAM_TOLERANCE
    with pytest.raises((AssertionError, RuntimeError), match=">= 9"):
        page.program.module()(degraded_batch(1, 8, 16))


def test_the_command_line_writes_onnx_that_matches_eager(page):
    from contrastive_prompts.app.checkpoints import load_checkpoint_model

    model = load_checkpoint_model(page.checkpoint)
    runtime = session(page.onnx)
    assert [i.name for i in runtime.get_inputs()] == ["input"]
    assert [o.name for o in runtime.get_outputs()] == ["output"]
    for batch, height, width in SIZES:
        x = degraded_batch(batch, height, width)
        (out,) = runtime.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = model(x)
            # the same images under other experts: what a wrong routing would give
            with negative_prompts(model, generator=torch.Generator().manual_seed(0)):
                elsewhere = model(x)
        assert out.shape == (batch, 3, height, width)
        assert (torch.from_numpy(out) - expected).abs().max() <= ONNX_TOLERANCE
        assert (elsewhere - expected).abs().max() > 100 * ONNX_TOLERANCE


def test_the_command_line_never_writes_over_a_file(page, monkeypatch, capsys):
    monkeypatch.chdir(page.folder)
    before = page.onnx.read_bytes()
    assert main(shlex.split(page.command)[1:]) == 2
    assert "'model.onnx' exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert page.onnx.read_bytes() == before
    command = ["export", "--checkpoint", str(page.checkpoint), "model.bin", "--format", "onnx"]
    assert main(command) == 2
    assert "expected a path ending in .onnx, got 'model.bin'" in capsys.readouterr().err
    assert not (page.folder / "model.bin").exists()


# -- a network of one's own ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_network():
    """A plain U-Net given prompt stages by add_prompts, with fusions that change the output."""
    torch.manual_seed(0)
    stages = {"decoder.0": {"dim": 16, "prompt_size": 4}, "decoder.1": {"dim": 8}}
    network = spread_routers(add_prompts(PlainUNet(), stages))
    for name, module in network.named_modules():
        if name.endswith("fusion.proj"):
            nn.init.normal_(module.weight, std=0.1)  # add_prompts starts them at zero
    return network


def test_a_network_of_ones_own_exports_in_eval_mode_and_runs_in_onnx(own_network, tmp_path):
    own_network.train()
    own_network.decoder[0].eval()
    example = degraded_batch(2, 24, 32)
    program = export_program(own_network, example, size_multiple=2, return_routing=True)
    assert own_network.training and not own_network.decoder[0].training  # modes restored
    target = export_onnx(program, tmp_path / "own.onnx")
    runtime = session(target)
    names = [o.name for o in runtime.get_outputs()]
    assert names == [
        "output",
        "routing.decoder.0.prompt_stage.prompt",
        "routing.decoder.1.prompt_stage.prompt",
    ]
    own_network.eval()
    for batch, height, width in [(3, 18, 30), (1, 40, 12)]:
        x = degraded_batch(batch, height, width)
        out, routing = program.module()(x)
        onnx_out, *onnx_routing = runtime.run(None, {"input": x.numpy()})
        with torch.no_grad(), record_routing(own_network) as log:
            expected = own_network(x)
        assert (out - expected).abs().max() <= PROGRAM_TOLERANCE
        assert (torch.from_numpy(onnx_out) - expected).abs().max() <= ONNX_TOLERANCE
        for name, indices, from_onnx, eager in zip(
            routing, routing.values(), onnx_routing, log, strict=True
        ):
            assert torch.equal(indices, eager.indices), name
            assert torch.equal(torch.from_numpy(from_onnx), eager.indices), name
    with pytest.raises((AssertionError, RuntimeError)):  # an odd height is outside the graph
        program.module()(degraded_batch(1, 19, 30))


class PadsItself(nn.Module):
    """A network that pads its input to a multiple of 8 and crops back, as users write one: the
    pad computed with ``%`` (0 at a multiple of 8) and the crop a slice."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 2, stride=2)
        self.prompt = SparsePrompt(dim=8, prompt_dim=4, prompt_size=4)
        self.fuse = PromptFusion(dim=8, prompt_dim=4, num_heads=2)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, (8 - w % 8) % 8, 0, (8 - h % 8) % 8), mode="reflect")
        z = self.down(self.head(padded))
        z = self.fuse(z, self.prompt(z))
        return x + self.tail(self.up(z))[..., :h, :w]


@pytest.mark.parametrize("traced_at", [(32, 32), (27, 29)], ids=["multiple-of-8", "padded"])
def test_a_network_that_pads_itself_serves_every_size_eager_serves(traced_at, tmp_path):
    # Traced at a multiple of 8 (no padding) or not, the program pads by the amount each size
    # needs: it serves sizes that need padding and sizes that need none, as eager PyTorch and
    # the ONNX file do.
    torch.manual_seed(0)
    network = spread_routers(PadsItself()).eval()
    program = export_program(network, degraded_batch(2, *traced_at), return_routing=True)
    assert not torch.fx.experimental._config.backed_size_oblivious  # torch's setting restored
    sizes = [*SIZES, (2, 32, 32), (1, 27, 29), (2, 5, 7)]
    for batch, height, width in sizes:
        x = degraded_batch(batch, height, width)
        out, routing = program.module()(x)
        with torch.no_grad(), record_routing(network) as log:
            expected = network(x)
        assert out.shape == (batch, 3, height, width)
        assert (out - expected).abs().max() <= PROGRAM_TOLERANCE
        assert torch.equal(routing["prompt"], log[0].indices)
    pytest.importorskip("onnxscript")
    runtime = session(export_onnx(program, tmp_path / "pads.onnx"))
    for batch, height, width in sizes:
        x = degraded_batch(batch, height, width)
        onnx_out, _ = runtime.run(None, {"input": x.numpy()})
        with torch.no_grad():
            assert (torch.from_numpy(onnx_out) - network(x)).abs().max() <= ONNX_TOLERANCE


# -- what is refused, and why --------------------------------------------------------------------


def test_bad_inputs_are_refused_with_the_reason(own_network, tmp_path):
    tiny = SparsePromptIR("tiny")
    cases = [
        (lambda: export_program("model"), InputTypeError, "expected an nn.Module, got str"),
        (
            lambda: export_program(nn.Conv2d(3, 3, 1)),
            InputError,
            "export_program: expected an example input of shape (B, C, H, W) for a network "
            "other than SparsePromptIR, got None",
        ),
        (
            lambda: export_program(tiny, torch.rand(2, 3, 32)),
            InputError,
            "export_program: expected example of shape (B, C, H, W), got (2, 3, 32)",
        ),
        (
            lambda: export_program(tiny, torch.rand(1, 3, 32, 32)),
            InputError,
            "expected an example batch of at least 2 (a batch of 1 would be fixed into the "
            "graph), got 1",
        ),
        (
            lambda: export_program(tiny, torch.rand(2, 3, 8, 16)),
            InputError,
            "expected an example height of at least 9, got 8",
        ),
        (
            lambda: export_program(tiny, min_size=8),
            InputError,
            "expected min_size >= 9 for SparsePromptIR (its latent, an eighth of the padded "
            "input, must stay at least 2 pixels), got 8",
        ),
        (
            lambda: export_program(own_network, torch.rand(2, 3, 24, 33), size_multiple=2),
            InputError,
            "expected an example width of at least 4 and a multiple of 2, got 33",
        ),
        (
            lambda: export_program(nn.Conv2d(3, 3, 1), torch.rand(2, 3, 8, 8), return_routing=True),
            InputError,
            "expected a model containing SparsePrompt layers, got Conv2d with none",
        ),
        (
            lambda: export_onnx(tiny, tmp_path / "model.pt"),
            InputError,
            "export_onnx: expected a path ending in .onnx, got",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    with (
        negative_prompts(tiny),
        pytest.raises(InputError, match=re.escape("outside negative_prompts()")),
    ):
        export_program(tiny)
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"mine")
    with pytest.raises(InputError, match=re.escape("exists; pass overwrite=True")):
        export_onnx(tiny, existing)
    assert existing.read_bytes() == b"mine"


def test_a_program_takes_no_export_options(page, tmp_path):
    expected = "expected no export options with an ExportedProgram (it is already traced), got "
    with pytest.raises(InputError, match=re.escape(expected + "min_size, return_routing")):
        export_onnx(page.program, tmp_path / "m.onnx", min_size=16, return_routing=True)


def test_the_onnx_export_never_runs_a_checkpoint_payload(tmp_path, capsys):
    from contrastive_prompts.app.checkpoints import CHECKPOINT_FORMAT

    from .test_safety import Payload

    marker, checkpoint, target = tmp_path / "PWNED", tmp_path / "evil.pt", tmp_path / "m.onnx"
    torch.save({"format": CHECKPOINT_FORMAT, "x": Payload(marker)}, checkpoint)
    command = ["export", "--checkpoint", str(checkpoint), str(target), "--format", "onnx"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "posix.system" in err and "can run code" in err
    assert not marker.exists() and not target.exists()
