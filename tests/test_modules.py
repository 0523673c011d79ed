"""Every module with parameters: factory arguments, any device and dtype, reprs, compilation.

The ``device`` and ``dtype`` fixtures (conftest) run these on the CPU and on CUDA when there is
one, in float32, float64 and bfloat16.
"""

import re

import pytest
import torch
from torch import nn

from contrastive_prompts import (
    ContrastivePromptLoss,
    CPLObjective,
    InputError,
    InputTypeError,
    PromptStage,
    SparsePrompt,
    SparsePromptIR,
    add_prompts,
    forward_with_negatives,
    negative_prompts,
)
from contrastive_prompts.app.degradations import make_mix
from contrastive_prompts.app.metrics import evaluate, psnr
from contrastive_prompts.core import (
    PromptFusion,
    TransformerBlock,
    VGG16Features,
    contrastive_prompt_loss,
    prompt_layers,
)
from contrastive_prompts.core.restormer import (
    Attention,
    FeedForward,
    LayerNorm2d,
    downsample,
    upsample,
)


def _builders():
    """(name, build(**factory), input channels, call) for each module with parameters."""
    return [
        ("SparsePrompt", lambda **f: SparsePrompt(dim=8, prompt_dim=4, prompt_size=3, **f), 8),
        (
            "PromptFusion",
            lambda **f: _Fused(PromptFusion(dim=8, prompt_dim=4, num_heads=2, **f)),
            8,
        ),
        ("TransformerBlock", lambda **f: TransformerBlock(8, num_heads=2, **f), 8),
        ("LayerNorm2d", lambda **f: LayerNorm2d(8, **f), 8),
        ("Attention", lambda **f: Attention(8, num_heads=2, **f), 8),
        ("FeedForward", lambda **f: FeedForward(8, ffn_expansion_factor=2.0, **f), 8),
        ("downsample", lambda **f: downsample(8, **f), 8),
        ("upsample", lambda **f: upsample(8, **f), 8),
        ("PromptStage", lambda **f: PromptStage(dim=8, prompt_size=3, **f), 8),
        ("SparsePromptIR", lambda **f: SparsePromptIR("tiny", **f), 3),
    ]


class _Fused(nn.Module):
    """PromptFusion called on one input (the prompt is a slice of it), for a uniform test."""

    def __init__(self, fusion: PromptFusion) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fusion(x, x[:, :4])
        return out


@pytest.mark.parametrize(
    ("name", "build", "channels"), _builders(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_factory_arguments_place_every_parameter(name, build, channels, device, dtype):
    module = build(device=device, dtype=dtype)
    tensors = list(module.parameters()) + list(module.buffers())
    assert tensors, name
    assert all(t.device.type == device.type and t.dtype == dtype for t in tensors), name
    x = torch.rand(2, channels, 16, 16, device=device, dtype=dtype)
    y = module(x)
    assert y.device.type == device.type and y.dtype == dtype, name
    assert torch.isfinite(y.float()).all(), name


def test_the_paper_size_model_builds_on_the_meta_device_without_memory():
    model = SparsePromptIR("base", device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 35_376_967
    # materialised and filled from a real state dict, it computes
    small = SparsePromptIR("tiny", device="meta").to_empty(device="cpu")
    small.load_state_dict(SparsePromptIR("tiny").state_dict())
    assert small(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    ("build", "given"),
    [
        (LayerNorm2d, {"dim": 8, "eps": 1e-3}),
        (Attention, {"dim": 8, "num_heads": 2}),
        (FeedForward, {"dim": 8, "ffn_expansion_factor": 2.0}),
        (TransformerBlock, {"dim": 8, "num_heads": 4, "ffn_expansion_factor": 1.5}),
        (PromptFusion, {"dim": 8, "prompt_dim": 4, "out_dim": 6, "num_heads": 2}),
        (SparsePrompt, {"dim": 8, "prompt_dim": 4, "num_prompts": 3, "prompt_size": 2, "top_k": 2}),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_a_repr_shows_every_argument_a_module_was_built_with(build, given):
    positional = "dim" if build in (LayerNorm2d, Attention, FeedForward, TransformerBlock) else None
    args = [given[positional]] if positional else []
    module = build(*args, **{k: v for k, v in given.items() if k != positional})
    shown = repr(
        module
    )  # the module's own line, then its parts' (a fusion's heads are its block's)
    for name, value in given.items():
        if name == positional:
            assert re.match(rf"{build.__name__}\(\s*{value}\b", shown), shown
        else:
            assert re.search(rf"\b{name}={value}\b", shown), (name, shown)


@pytest.mark.parametrize(
    "call",
    [
        lambda: TransformerBlock(8, 2),
        lambda: Attention(8, 2),
        lambda: FeedForward(8, 2.0),
        lambda: PromptFusion(8, 4),
        lambda: SparsePrompt(8, 4, 5, 2),
        lambda: SparsePromptIR("tiny", None),
    ],
)
def test_options_are_keyword_only(call):
    with pytest.raises(TypeError, match="positional argument"):
        call()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: SparsePrompt(dim=4, prompt_dim=2, prompt_size=2)([[0.5]]),
            "x to be a torch.Tensor, got list",
        ),
        (lambda: psnr(0.5, torch.rand(1, 3, 8, 8)), "to be a torch.Tensor, got float"),
        (lambda: evaluate("model", []), "model to be callable, got str"),
        (lambda: add_prompts("net", {"a": {"dim": 4}}), "model to be an nn.Module, got str"),
        (lambda: PromptStage(dim="4"), "PromptStage: expected dim to be an integer >= 1, got '4'"),
        (lambda: prompt_layers([1]), "an nn.Module, got list"),
        (
            lambda: forward_with_negatives(SparsePromptIR("tiny"), [1.0], num_negatives=1),
            "x to be a torch.Tensor, got list",
        ),
        (lambda: SparsePrompt(dim="8", prompt_dim=2, prompt_size=2), "dim to be an integer >= 1"),
        (lambda: CPLObjective(num_negatives=2.0), r"num_negatives to be an integer in \[1, 64\]"),
        (lambda: psnr(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), data_range="1"), "range"),
        (
            lambda: make_mix("3task").degrade(torch.rand(1, 3, 8, 8), [0]),
            "labels to be a torch.Tensor, got list",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_a_type_error(call, message):
    with pytest.raises(InputTypeError, match=message) as caught:
        call()
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, InputError)
    assert isinstance(caught.value, ValueError)  # code catching InputError keeps working


def test_a_wrong_shape_is_no_type_error():
    with pytest.raises(InputError) as caught:
        SparsePrompt(dim=4, prompt_dim=2, prompt_size=2)(torch.rand(1, 5, 8, 8))
    assert not isinstance(caught.value, TypeError)


def test_loss_on_any_device_and_dtype_matches_float64(device, dtype):
    g = torch.Generator().manual_seed(0)
    a, y = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    n = torch.rand(2, 3, 3, 16, 16, generator=g)
    tolerance = {torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for mode in ("infonce", "ratio", "subtractive"):
        reference = contrastive_prompt_loss(a.double(), y.double(), n.double(), mode=mode)
        moved = [t.to(device, dtype) for t in (a, y, n)]
        value = contrastive_prompt_loss(*moved, mode=mode)
        assert value.dtype == dtype and value.device.type == device.type
        torch.testing.assert_close(value.double().cpu(), reference, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_negatives_equal_the_naive_way_on_any_device(device, dtype):
    torch.manual_seed(0)
    model = SparsePromptIR("tiny", device=device, dtype=dtype).eval()
    x = torch.rand(2, 3, 19, 21, device=device, dtype=dtype)
    fast = forward_with_negatives(
        model, x, num_negatives=3, generator=torch.Generator(device).manual_seed(1)
    ).negatives
    with negative_prompts(model, generator=torch.Generator(device).manual_seed(1)):
        naive = model(x.repeat(3, 1, 1, 1)).view(3, 2, 3, 19, 21).transpose(0, 1)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(fast, naive, rtol=tolerance, atol=tolerance)


def test_objective_step_in_any_dtype(device, dtype):
    torch.manual_seed(0)
    model = SparsePromptIR("tiny", device=device, dtype=dtype)
    degraded = torch.rand(2, 3, 16, 16, device=device, dtype=dtype)
    clean = torch.rand_like(degraded)
    parts = CPLObjective(num_negatives=2)(model, degraded, clean)
    parts.loss.backward()
    assert parts.loss.dtype == dtype and torch.isfinite(parts.loss.float())
    assert all(p.grad is not None and p.grad.dtype == dtype for p in model.parameters())


# -- torch.compile: AOT autograd's graphs by default, Inductor's generated code with -m slow -------
# (test_fullgraph.py compiles these modules whole; the eager backend: test_prompt, test_loss)


INDUCTOR_WARNING = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]


@pytest.mark.filterwarnings(INDUCTOR_WARNING)  # raised inside Inductor
@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_layer_compiled_matches_eager_with_and_without_negative_prompts(backend):
    torch.manual_seed(0)
    layer = SparsePrompt(dim=16, prompt_dim=8, prompt_size=4)
    x = torch.rand(2, 16, 12, 12)
    compiled = torch.compile(layer, backend=backend)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-6)
    with negative_prompts(layer, generator=torch.Generator().manual_seed(0)):
        expected = layer(x)
    with negative_prompts(layer, generator=torch.Generator().manual_seed(0)):
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings(INDUCTOR_WARNING)
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_compiled_matches_eager(backend):
    g = torch.Generator().manual_seed(0)
    a, y = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    n = torch.rand(2, 2, 3, 16, 16, generator=g)
    module = ContrastivePromptLoss(mode="infonce")
    compiled = torch.compile(module, backend=backend)
    torch.testing.assert_close(compiled(a, y, n), module(a, y, n), rtol=1e-5, atol=1e-6)


def test_vgg16_features_take_factory_arguments(device, dtype):
    shapes = {"0.weight": (64, 3, 3, 3), "0.bias": (64,)}
    state = {f"features.{k}": torch.randn(s) for k, s in shapes.items()}
    vgg = VGG16Features(
        state, layers=("relu1_1",), layer_weights=(1.0,), device=device, dtype=dtype
    )
    tensors = [*vgg.parameters(), *vgg.buffers()]
    assert all(t.device.type == device.type and t.dtype == dtype for t in tensors)
    (maps,) = vgg(torch.rand(1, 3, 8, 8, device=device, dtype=dtype))
    assert maps.dtype == dtype and maps.shape == (1, 64, 8, 8)
