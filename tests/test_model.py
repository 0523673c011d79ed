import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrastive_prompts import (
    CPLObjective,
    InputError,
    SparsePromptIR,
    forward_with_negatives,
    negative_prompts,
    record_routing,
)
from contrastive_prompts.app.checkpoints import convert_promptir_state_dict, load_promptir
from contrastive_prompts.reference import MODEL_PRESETS, pad_to_multiple, tiled
from contrastive_prompts.reference.model import parameter_count, restore_tile

from .promptir_reference import PromptIRReference, promptir_state_dict_shapes


def negative_output(model, x, *, generator=None, labels=None):
    """The whole network under negative prompts: the naive way, one full forward."""
    with negative_prompts(model, generator=generator, labels=labels):
        return model(x)


@pytest.fixture(scope="module")
def tiny() -> SparsePromptIR:
    torch.manual_seed(0)
    return SparsePromptIR("tiny").eval()


def test_base_parameter_count_matches_official_less_unused_convs():
    shapes = promptir_state_dict_shapes()
    official = sum(torch.Size(s).numel() for s in shapes.values())
    unused = sum(
        torch.Size(s).numel()
        for k, s in shapes.items()
        if k.startswith(("chnl_reduce", "reduce_noise_channel_"))
    )
    assert official == 35_592_263
    assert parameter_count(SparsePromptIR("base")) == official - unused == 35_376_967


def test_small_presets_are_small():
    assert 1_000_000 <= parameter_count(SparsePromptIR("tiny")) <= 4_000_000
    assert 1_000_000 <= parameter_count(SparsePromptIR("small")) <= 4_000_000


@given(h=st.integers(1, 37), w=st.integers(1, 37), batch=st.integers(1, 2))
def test_any_size_keeps_shape(tiny, h, w, batch):
    x = torch.rand(batch, 3, h, w)
    assert tiny(x).shape == (batch, 3, h, w)


def test_odd_image_size_like_bsd68(tiny):
    with torch.no_grad():
        assert tiny(torch.rand(1, 3, 321, 481)).shape == (1, 3, 321, 481)


def test_pad_to_multiple_reflects():
    x = torch.arange(10.0).view(1, 1, 2, 5)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 8)
    assert padded[0, 0, 0, 5:].tolist() == [3.0, 2.0, 1.0]  # reflected along the row
    assert padded[0, 0, 2:, 0].tolist() == [5.0, 5.0]  # 2 rows cannot reflect by 2: replicated
    assert torch.equal(padded[..., :2, :5], x)
    assert pad_to_multiple(torch.rand(1, 1, 1, 1), 8).shape == (1, 1, 8, 8)  # too small to reflect


def test_batch_independence(tiny):
    x = torch.rand(3, 3, 24, 24)
    with torch.no_grad():
        whole = tiny(x)
        parts = torch.cat([tiny(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trips_exactly(tmp_path):
    torch.manual_seed(1)
    model = SparsePromptIR("tiny", top_k=2)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    again = SparsePromptIR("tiny", top_k=2)
    again.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(model(x), again(x))


def random_promptir_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of every shape in the official PromptIR state dict (from the tsv)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in promptir_state_dict_shapes().items():
        if key.endswith("temperature") or (".norm" in key and key.endswith("weight")):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "prompt_param" in key:
            state[key] = torch.rand(shape, generator=g)
        else:
            fan_in = max(1, torch.Size(shape)[1:].numel())
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


@pytest.fixture(scope="module")
def promptir_state():
    return random_promptir_state_dict()


def test_from_promptir_bare_and_lightning_checkpoints(tmp_path, promptir_state):
    model = load_promptir(promptir_state, top_k=5)
    assert torch.equal(model.prompt3.prompts, promptir_state["prompt3.prompt_param"][0])
    assert torch.equal(
        model.fusion2.block.attn.qkv.weight, promptir_state["noise_level2.attn.qkv.weight"]
    )
    lightning = {"state_dict": {f"net.{k}": v for k, v in promptir_state.items()}, "epoch": 3}
    torch.save(lightning, tmp_path / "promptir.ckpt")
    again = load_promptir(tmp_path / "promptir.ckpt", top_k=1)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert again.config.top_k == 1


def test_from_promptir_top5_computes_what_promptir_computes(promptir_state):
    """An independent re-statement of PromptIR's forward, loaded with the official names."""
    ours = load_promptir(promptir_state, top_k=5).double().eval()
    reference = PromptIRReference().double().eval()
    reference.load_state_dict({k: v.double() for k, v in promptir_state.items()})
    x = torch.rand(1, 3, 32, 40, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-9, atol=1e-9)


def test_from_promptir_lists_problems(promptir_state):
    broken = dict(promptir_state)
    del broken["latent.0.attn.temperature"]
    broken["prompt1.conv3x3.weight"] = torch.zeros(64, 64, 1, 1)
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as error:
        load_promptir(broken, top_k=1)
    message = str(error.value)
    assert "missing keys ['latent.0.attn.temperature']" in message
    assert "unexpected keys ['extra.weight']" in message
    assert "prompt1.conv3x3.weight: expected (64, 64, 3, 3), got (64, 64, 1, 1)" in message
    with pytest.raises(FileNotFoundError, match=r"PromptIR checkpoint 'absent\.ckpt' not found"):
        load_promptir("absent.ckpt", top_k=1)


def test_convert_drops_the_six_unused_convs(promptir_state):
    converted = convert_promptir_state_dict(promptir_state)
    assert len(promptir_state) - len(converted) == 6
    assert not any("chnl_reduce" in k or "reduce_noise_channel" in k for k in converted)


def test_negatives_shapes_no_gradient_and_differ(tiny):
    x = torch.rand(2, 3, 20, 28)
    out = forward_with_negatives(
        tiny, x, num_negatives=3, generator=torch.Generator().manual_seed(0)
    )
    assert out.output.shape == (2, 3, 20, 28)
    assert out.negatives.shape == (2, 3, 3, 20, 28)
    assert out.output.requires_grad and not out.negatives.requires_grad
    assert (out.negatives - out.output.detach()[:, None]).abs().amax(dim=(2, 3, 4)).min() > 0
    torch.testing.assert_close(out.output, tiny(x))


@pytest.mark.parametrize("labels", [None, torch.tensor([0, 1])])
@pytest.mark.parametrize("chunk_size", [None, 2, 4])
def test_shared_encoder_negatives_equal_naive_full_rerun(tiny, labels, chunk_size):
    """Row r of the negatives (negative-major) is a full forward of sample r % B."""
    x, m = torch.rand(2, 3, 19, 26), 3
    fast = forward_with_negatives(
        tiny,
        x,
        num_negatives=m,
        generator=torch.Generator().manual_seed(5),
        labels=labels,
        chunk_size=chunk_size,
    ).negatives
    rows = x.repeat(m, 1, 1, 1)
    row_labels = None if labels is None else labels.repeat(m)
    generator = torch.Generator().manual_seed(5)
    naive = torch.cat(
        [
            negative_output(
                tiny, rows[i], generator=generator, labels=None if labels is None else row_labels[i]
            )
            for i in torch.arange(2 * m).split(chunk_size or 2 * m)
        ]
    )
    torch.testing.assert_close(
        fast, naive.view(m, 2, 3, 19, 26).transpose(0, 1), rtol=1e-5, atol=1e-6
    )


def test_negatives_build_no_autograd_graph(tiny):
    """Saved tensors for backward are the same with 1 or 8 negatives."""
    x = torch.rand(1, 3, 16, 16)

    def saved_bytes(m: int) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward_with_negatives(tiny, x, num_negatives=m)
        return total

    assert saved_bytes(8) == saved_bytes(1)


class LocalNet(torch.nn.Module):
    """Two 3x3 convs: receptive field 5x5, so overlapping tiles can reproduce it exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 3, 3, padding=1)
        self.largest = 0

    def forward(self, x):
        self.largest = max(self.largest, x.shape[-1] * x.shape[-2])
        return self.b(F.relu(self.a(x)))


def test_tiled_blending_is_exact_for_a_local_model():
    net, image = LocalNet(), torch.rand(2, 3, 70, 93)
    with torch.no_grad():
        blended = tiled(net, image, tile=32, overlap=12)
        assert net.largest == 32 * 32  # the model never sees more than a tile
        torch.testing.assert_close(blended, net(image), atol=1e-5, rtol=1e-5)


def test_tiled_restore_has_no_seams(tiny):
    skimage = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(skimage.astronaut()[::2, ::2][:192, :192].copy())
    image = photo.permute(2, 0, 1).float()[None] / 255
    full = tiny.restore(image)
    tile = tiny.restore(image, tile=96, overlap=32)
    error = (full - tile).abs().mean(dim=(0, 1))
    psnr = -10 * torch.log10((full - tile).square().mean())
    assert psnr > 40
    # columns around the seams (tiles start at 0, 64, 96) are no worse than the average column
    seams = error[:, 56:72].mean() + error[:, 88:104].mean()
    assert seams / 2 < 2 * error.mean()
    assert tiny.restore(image[0]).shape == image[0].shape


@pytest.mark.parametrize("tile_batch", [2, 5, 64])
def test_batched_tiles_equal_tiles_one_at_a_time(tiny, tile_batch):
    image = torch.rand(2, 3, 70, 93, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = tiny.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            one = tiny.restore(image, tile=32, overlap=8, routing="tile")
            ones, calls[:] = list(calls), []
            batched = tiny.restore(image, tile=32, overlap=8, tile_batch=tile_batch, routing="tile")
            batches, calls[:] = list(calls), []
            # one routing per image: a first pass over the 3 x 3 grid of tiles, then the tiles
            shared = tiny.restore(image, tile=32, overlap=8)
            shared_ones, calls[:] = list(calls), []
            shared_batched = tiny.restore(image, tile=32, overlap=8, tile_batch=tile_batch)
    finally:
        hook.remove()
    tiles = len(ones)  # 3 rows x 4 columns of 32x32 tiles
    assert tiles == 12 and set(ones) == {2}
    assert batches == [2 * min(tile_batch, tiles - i) for i in range(0, tiles, tile_batch)]
    torch.testing.assert_close(batched, one, atol=1e-5, rtol=1e-5)
    assert shared_ones == [2] * (9 + 12)
    assert calls == [2 * min(tile_batch, 9 - i) for i in range(0, 9, tile_batch)] + batches
    torch.testing.assert_close(shared_batched, shared, atol=1e-5, rtol=1e-5)


def test_auto_tiles_are_the_devices_tile_and_one_pass_below_it(tiny):
    image = torch.rand(1, 3, 270, 40, generator=torch.Generator().manual_seed(0))
    calls = []
    hook = tiny.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[-2:]))
    try:
        with torch.no_grad():
            auto = tiny.restore(image)  # tile="auto": 256 on a CPU
            torch.testing.assert_close(auto, tiny.restore(image, tile=256), rtol=0, atol=0)
            assert calls[:2] == [(256, 40)] * 2
            calls.clear()
            tiny.restore(image[..., :256, :])
    finally:
        hook.remove()
    assert calls == [(256, 40)]  # no larger than a tile: one pass
    assert restore_tile("cpu") == 256 and restore_tile("meta") == 512
    with pytest.raises(
        InputError, match=r"expected tile to be an integer, None or 'auto', got 'big'"
    ):
        tiny.restore(image, tile="big")


def test_tile_batch_is_checked(tiny):
    with pytest.raises(InputError, match=r"tiled: expected tile_batch to be an integer >= 1"):
        tiny.restore(torch.rand(1, 3, 16, 16), tile=8, overlap=2, tile_batch=0)


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = SparsePromptIR("tiny")
    objective = CPLObjective(num_negatives=2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clean = F.interpolate(torch.rand(4, 3, 8, 8), size=32, mode="bilinear")
    degraded = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    labels = torch.tensor([0, 1, 0, 1])
    losses = []
    for step in range(12):
        parts = objective(
            model, degraded, clean, labels, generator=torch.Generator().manual_seed(step)
        )
        optimiser.zero_grad()
        parts.loss.backward()
        optimiser.step()
        losses.append(parts.l1.item())
    assert losses[-1] < 0.7 * losses[0]
    assert [c.shape for c in parts.expert_counts] == [(2, 5)] * 3
    assert all(c.sum() == 4 for c in parts.expert_counts)


def test_objective_without_cpr_makes_no_negatives(tiny):
    parts = CPLObjective(weight=0.0)(tiny, torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert parts.cpr == 0 and parts.loss == parts.l1


def test_bad_arguments(tiny):
    with pytest.raises(
        InputError, match=r"expected preset to be one of 'base', 'small', 'tiny', got 'huge'"
    ):
        SparsePromptIR("huge")
    with pytest.raises(InputError, match=r"expected overrides among .*got \['width'\]"):
        SparsePromptIR("tiny", width=3)
    with pytest.raises(InputError, match=r"expected top_k to be an integer in \[1, 5\], got 7"):
        SparsePromptIR("tiny", top_k=7)
    with pytest.raises(InputError, match=r"expected x of shape \(B, 3, H, W\), got \(3, 16, 16\)"):
        tiny(torch.rand(3, 16, 16))
    with pytest.raises(
        InputError, match=r"expected num_negatives to be an integer in \[1, 64\], got 0"
    ):
        forward_with_negatives(tiny, torch.rand(1, 3, 8, 8), num_negatives=0)
    with pytest.raises(InputError, match=r"expected clean of the same shape as degraded"):
        CPLObjective()(tiny, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(InputError, match="top_k < num_prompts"):
        forward_with_negatives(
            SparsePromptIR("tiny", top_k=5), torch.rand(1, 3, 8, 8), num_negatives=1
        )


def test_presets_are_named_argument_sets():
    assert SparsePromptIR("small").config == MODEL_PRESETS["small"]
    assert SparsePromptIR("tiny", dim=8).config.dim == 8


def test_model_without_prompts_is_a_plain_baseline():
    model = SparsePromptIR("tiny", use_prompts=False)
    assert not any(name.startswith("prompt") for name, _ in model.named_parameters())
    with pytest.raises(InputError, match="expected a model containing SparsePrompt layers"):
        with record_routing(model):
            pass
    assert model(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
    parts = CPLObjective(weight=0.0)(model, torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    parts.loss.backward()
    with pytest.raises(InputError, match="expected a model containing SparsePrompt layers"):
        forward_with_negatives(model, torch.rand(1, 3, 8, 8), num_negatives=1)


def test_label_aware_negatives_see_the_whole_batch_whatever_the_chunk(tiny):
    x, labels = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    runs = [
        forward_with_negatives(
            tiny, x, num_negatives=2, generator=torch.Generator().manual_seed(3), labels=labels,
            chunk_size=chunk,
        ).negatives
        for chunk in (1, 2)
    ]  # fmt: skip
    torch.testing.assert_close(runs[0], runs[1])


# ---------------------------------------------------------------------------------------------
# dtypes, empty batches and images, bad shapes

ENTRY_POINTS = {
    "forward": ("SparsePromptIR", "x", lambda m, x: m(x)),
    "negative_prompts": ("SparsePromptIR", "x", lambda m, x: negative_output(m, x)),
    "forward_with_negatives": (
        "SparsePromptIR",
        "x",
        lambda m, x: forward_with_negatives(m, x, num_negatives=2),
    ),
    "restore": ("SparsePromptIR.restore", "image", lambda m, x: m.restore(x)),
    "restore_tiled": ("SparsePromptIR.restore", "image", lambda m, x: m.restore(x, tile=8)),
}


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int64]
)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_wrong_dtype_names_expected_given_and_fix(tiny, entry, dtype):
    where, name, call = ENTRY_POINTS[entry]
    if dtype.is_floating_point:
        message = (
            rf"{where}: expected {name} of dtype torch.float32 \(the parameters' dtype\), "
            rf"got {dtype}; convert the input with {name}\.to\(torch\.float32\), the model with "
            rf"model\.to\({dtype}\), or run under torch\.autocast"
        )
    else:
        fix = (
            rf"scale 8-bit images to \[0, 1\] with {name}\.to\(torch\.float32\) / 255"
            if dtype == torch.uint8
            else rf"convert with {name}\.to\(torch\.float32\)"
        )
        message = (
            rf"{where}: expected {name} to be a floating-point tensor of dtype torch.float32 "
            rf"\(the parameters' dtype\), got {dtype}; {fix}"
        )
    with pytest.raises(InputError, match=message):
        call(tiny, torch.zeros(1, 3, 8, 8, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_autocast_refuses_dtypes_it_cannot_cast(tiny, dtype):
    message = (
        r"SparsePromptIR: expected x of dtype torch.float32 \(the parameters' dtype\) or "
        rf"torch.bfloat16 \(the autocast dtype\), got {dtype}; "
        r"convert with x\.to\(torch\.float32\)"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(InputError, match=message):
        tiny(torch.rand(1, 3, 8, 8, dtype=dtype))


def test_float64_model_gives_float64():
    torch.manual_seed(0)
    model = SparsePromptIR("tiny").to(torch.float64).eval()
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64)
    assert model(x).dtype == torch.float64
    assert negative_output(model, x).dtype == torch.float64
    out = forward_with_negatives(model, x, num_negatives=2)
    assert out.output.dtype == out.negatives.dtype == torch.float64
    assert model.restore(x[0], tile=8, overlap=2).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bfloat16_autocast_on_cpu_works(tiny, dtype):
    x = torch.rand(2, 3, 20, 20).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(x)
        parts = forward_with_negatives(tiny, x, num_negatives=2, labels=torch.tensor([0, 1]))
        restored = tiny.restore(x, tile=16, overlap=4)
    assert out.shape == restored.shape == (2, 3, 20, 20)
    assert parts.negatives.shape == (2, 2, 3, 20, 20)
    assert torch.isfinite(out.float()).all() and torch.isfinite(parts.negatives.float()).all()


def test_empty_batch_gives_empty_outputs(tiny):
    x = torch.rand(0, 3, 13, 17)
    with record_routing(tiny) as routing:
        out = tiny(x)
    assert out.shape == (0, 3, 13, 17)
    assert [r.indices.shape for r in routing] == [(0, 1)] * 3
    assert negative_output(tiny, x).shape == (0, 3, 13, 17)
    for labels, chunk_size in ((None, None), (torch.zeros(0, dtype=torch.long), 3)):
        parts = forward_with_negatives(
            tiny, x, num_negatives=2, labels=labels, chunk_size=chunk_size
        )
        assert parts.output.shape == (0, 3, 13, 17)
        assert parts.negatives.shape == (0, 2, 3, 13, 17)
    assert tiny.restore(x).shape == (0, 3, 13, 17)
    assert tiny.restore(x, tile=8, overlap=2).shape == (0, 3, 13, 17)
    assert tiled(tiny, x, tile=8, overlap=2).shape == (0, 3, 13, 17)


@pytest.mark.parametrize(("h", "w"), [(0, 16), (16, 0)])
def test_empty_image_raises(tiny, h, w):
    sizes = rf"H, W >= 1, got H={h}, W={w}"
    with pytest.raises(InputError, match=r"SparsePromptIR: expected x with " + sizes):
        tiny(torch.rand(1, 3, h, w))
    with pytest.raises(InputError, match=r"SparsePromptIR: expected x with " + sizes):
        forward_with_negatives(tiny, torch.rand(1, 3, h, w), num_negatives=1)
    with pytest.raises(InputError, match=r"SparsePromptIR.restore: expected image with " + sizes):
        tiny.restore(torch.rand(3, h, w))
    with pytest.raises(InputError, match=r"tiled: expected image with " + sizes):
        tiled(tiny, torch.rand(1, 3, h, w), tile=8)


@pytest.mark.parametrize("shape", [(16, 16), (1, 1, 3, 16, 16), (4, 16, 16), (2, 1, 16, 16)])
def test_restore_checks_the_shape_up_front(tiny, shape):
    got = "(" + ", ".join(map(str, shape)) + ")"
    with pytest.raises(
        InputError,
        match=r"SparsePromptIR.restore: expected image of shape \(3, H, W\) or \(B, 3, H, W\), "
        rf"got {re.escape(got)}",
    ):
        tiny.restore(torch.rand(shape))


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 1, 3, 16, 16)])
def test_tiled_checks_the_shape_up_front(tiny, shape):
    got = "(" + ", ".join(map(str, shape)) + ")"
    with pytest.raises(
        InputError, match=rf"tiled: expected image of shape \(B, C, H, W\), got {re.escape(got)}"
    ):
        tiled(tiny, torch.rand(shape), tile=8)


def test_objective_weights_must_be_finite():
    with pytest.raises(
        InputError, match=r"CPLObjective: expected weight to be a finite number >= 0, got inf"
    ):
        CPLObjective(weight=float("inf"))
