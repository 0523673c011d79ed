import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrastive_prompts import ContrastivePromptLoss, CPLObjective, InputError, InputTypeError
from contrastive_prompts.core import FilterFeatures, PixelFeatures, contrastive_prompt_loss
from contrastive_prompts.core.loss import MODES, _layer_distances

from .networks import PromptedUNet


def triple(seed: int, batch: int = 2, m: int = 3, size: int = 12, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, 3, size, size, generator=g, dtype=dtype)
    y = torch.rand(batch, 3, size, size, generator=g, dtype=dtype)
    n = torch.rand(batch, m, 3, size, size, generator=g, dtype=dtype)
    return a, y, n


def reference(a, y, n, *, mode, features, temperature=0.1, eps=1e-6):
    """Loop-based reference: one sample, one negative, one layer at a time."""
    weights = features.layer_weights
    out = []
    for i in range(a.shape[0]):

        def d(u, v):
            total = 0.0
            for w, fu, fv in zip(weights, features(u[None]), features(v[None]), strict=True):
                fu = fu / fu.norm(dim=1, keepdim=True).clamp_min(1e-12)
                fv = fv / fv.norm(dim=1, keepdim=True).clamp_min(1e-12)
                total = total + w * (fu - fv).abs().mean()
            return total

        if mode == "infonce":
            dp = d(a[i], y[i])
            dn = [d(a[i], n[i, j]) for j in range(n.shape[1])]
            num = torch.exp(-dp / temperature)
            den = num + sum(torch.exp(-x / temperature) for x in dn)
            out.append(-torch.log(num / den))
        elif mode == "subtractive":
            out.append(-sum(d(a[i], n[i, j]) for j in range(n.shape[1])))
        else:
            total = 0.0
            for li, w in enumerate(weights):
                single = _OneLayer(features, li)
                dp = single_distance(single, a[i], y[i])
                dn = sum(single_distance(single, a[i], n[i, j]) for j in range(n.shape[1]))
                total = total + w * dp / (dn / n.shape[1] + eps)
            out.append(total)
    return torch.stack([torch.as_tensor(v, dtype=a.dtype) for v in out])


class _OneLayer:
    def __init__(self, features, index):
        self.features, self.index = features, index

    def __call__(self, x):
        return self.features(x)[self.index]


def single_distance(layer, u, v):
    fu, fv = layer(u[None]), layer(v[None])
    fu = fu / fu.norm(dim=1, keepdim=True).clamp_min(1e-12)
    fv = fv / fv.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (fu - fv).abs().mean()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "features", [PixelFeatures(), FilterFeatures(num_scales=2, layer_weights=(0.3, 0.7))]
)
def test_matches_loop_reference(mode, features):
    a, y, n = triple(0, dtype=torch.float64)
    got = contrastive_prompt_loss(a, y, n, mode=mode, features=features, reduction="none")
    torch.testing.assert_close(got, reference(a, y, n, mode=mode, features=features))


@given(m=st.integers(1, 6), seed=st.integers(0, 2**16), temperature=st.floats(0.01, 10))
def test_infonce_equals_log_m_plus_one_when_distances_equal(m, seed, temperature):
    a, y, _ = triple(seed, m=m)
    negatives = y.unsqueeze(1).expand(-1, m, -1, -1, -1)
    loss = contrastive_prompt_loss(
        a, y, negatives, mode="infonce", temperature=temperature, reduction="none"
    )
    torch.testing.assert_close(loss, torch.full((2,), math.log(m + 1)))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_infonce_non_negative_and_ratio_zero_at_positive(seed, m):
    a, y, n = triple(seed, m=m)
    assert (contrastive_prompt_loss(a, y, n, mode="infonce", reduction="none") >= 0).all()
    zero = contrastive_prompt_loss(a, a, n, mode="ratio", reduction="none")
    assert torch.equal(zero, torch.zeros(2))


@given(
    batch=st.integers(1, 3),
    m=st.integers(1, 4),
    size=st.integers(8, 20),
    seed=st.integers(0, 2**16),
)
def test_default_is_negative_zero_without_effect_and_summed_over_negatives(batch, m, size, seed):
    """What the docs and the loss plot say of the default's sign: CPR <= 0, 0 when the negatives
    equal the output, and a sum over the negatives (twice the negatives, twice the value)."""
    a, y, n = triple(seed, batch=batch, m=m, size=size)
    loss = ContrastivePromptLoss(reduction="none")
    assert loss.mode == "subtractive"
    value = loss(a, y, n)
    assert (value < 0).all()
    assert torch.equal(loss(a, None, a.unsqueeze(1).expand(-1, m, -1, -1, -1)), torch.zeros(batch))
    torch.testing.assert_close(loss(a, y, torch.cat([n, n], dim=1)), 2 * value)


@pytest.mark.parametrize("mode", MODES)
def test_pulls_and_pushes(mode):
    """Moving the anchor towards the positive and away from the negatives lowers the loss."""
    a, y, n = triple(1)
    near = 0.5 * a + 0.5 * y
    far_negatives = (n + 0.5 * (n - a.unsqueeze(1))).clamp(0, 1)
    base = contrastive_prompt_loss(a, y, n, mode=mode)
    if mode != "subtractive":  # it ignores the positive
        assert contrastive_prompt_loss(near, y, n, mode=mode) < base
    assert contrastive_prompt_loss(a, y, far_negatives, mode=mode) < base


@pytest.mark.parametrize("seed", range(5))
def test_permutation_invariance_over_negatives(seed):
    a, y, n = triple(seed, m=4)
    perms = [[1, 2, 3, 0], [3, 2, 1, 0], [1, 0, 2, 3]]  # a cycle, a reversal, a swap
    for perm in perms:
        for mode in MODES:
            torch.testing.assert_close(
                contrastive_prompt_loss(a, y, n, mode=mode, reduction="none"),
                contrastive_prompt_loss(a, y, n[:, perm], mode=mode, reduction="none"),
            )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reductions_and_module_equals_function(reduction):
    a, y, n = triple(2)
    per_sample = contrastive_prompt_loss(a, y, n, reduction="none")
    got = ContrastivePromptLoss(reduction=reduction)(a, y, n)
    expected = {"none": per_sample, "mean": per_sample.mean(), "sum": per_sample.sum()}[reduction]
    torch.testing.assert_close(got, expected)
    assert got.shape == ((2,) if reduction == "none" else ())


@pytest.mark.parametrize("batch", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_batch_independence(seed, batch):
    a, y, n = triple(seed, batch=batch)
    for mode in MODES:
        whole = contrastive_prompt_loss(a, y, n, mode=mode, reduction="none")
        for i in range(batch):
            one = slice(i, i + 1)
            part = contrastive_prompt_loss(a[one], y[one], n[one], mode=mode, reduction="none")
            torch.testing.assert_close(part, whole[one])


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    a, y, n = triple(3, batch=1, m=2, size=6, dtype=torch.float64)
    a.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a_, y_: contrastive_prompt_loss(
            a_, y_, n, mode=mode, features=FilterFeatures(num_scales=2)
        ),
        (a, y),
    )


@pytest.mark.parametrize("mode", MODES)
def test_degenerate_inputs_are_finite_with_working_backward(mode):
    for fill in (0.0, 0.5):
        a = torch.full((2, 3, 8, 8), fill, requires_grad=True)
        loss = contrastive_prompt_loss(
            a, a.detach().clone(), a.detach()[:, None].repeat(1, 2, 1, 1, 1), mode=mode
        )
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_autocast_finite(mode):
    a, y, n = triple(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_prompt_loss(a, y, n, mode=mode)
    assert torch.isfinite(loss.float())


def test_compile_eager_matches():
    a, y, n = triple(5)
    module = ContrastivePromptLoss()
    torch.testing.assert_close(torch.compile(module, backend="eager")(a, y, n), module(a, y, n))


class _RecordingLoss(ContrastivePromptLoss):
    """The default loss, keeping what CPLObjective hands it (and the anchor's gradient)."""

    def forward(self, anchor, positive, negatives):
        anchor.retain_grad()
        self.seen = anchor, negatives
        return super().forward(anchor, positive, negatives)


@pytest.mark.parametrize("mode", MODES)
def test_no_gradient_flows_into_negatives_unless_asked(mode):
    # By default (CPLObjective) the negatives are made from the model's parameters, which all
    # require grad, yet they reach the loss with no graph: the gradient goes to the output only.
    torch.manual_seed(0)
    model = PromptedUNet()
    recorder = _RecordingLoss(mode=mode)
    g = torch.Generator().manual_seed(6)
    degraded, clean = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    objective = CPLObjective(weight=1.0, num_negatives=2, loss=recorder)
    objective(model, degraded, clean, generator=g).cpr.backward()
    output, negatives = recorder.seen
    assert all(p.requires_grad for p in model.parameters())
    assert not negatives.requires_grad and negatives.grad_fn is None and negatives.grad is None
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert model.out.weight.grad.abs().sum() > 0  # the model learns through the output

    # Asked: negatives that require grad get the loss's gradient (the loss never detaches them).
    a, y, n = triple(6)
    a.requires_grad_(True)
    n.requires_grad_(True)
    contrastive_prompt_loss(a, y, n, mode=mode).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert n.grad is not None and n.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda a, y, n: contrastive_prompt_loss(a[0], y, n),
            r"expected anchor of shape \(B, C, H, W\), got \(3, 12, 12\)",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y[:1], n),
            r"expected positive of the same shape as anchor \(2, 3, 12, 12\), got \(1, 3, 12, 12\)",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n[:1]),
            r"expected negatives of shape \(2, M, 3, 12, 12\), got \(1, 3, 3, 12, 12\)",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n[:, 0]),
            r"expected negatives of shape \(2, M, 3, 12, 12\), got \(2, 3, 12, 12\)",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n[:, :0]),
            r"expected at least one negative \(M >= 1\), got M=0",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n, temperature=0),
            r"expected temperature to be a number > 0, got 0",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n, mode="cosine"),
            r"expected mode to be one of 'infonce', 'ratio', 'subtractive', got 'cosine'",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n, reduction="max"),
            r"expected reduction to be one of 'none', 'mean', 'sum', got 'max'",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a, y, n, layer_weights=[1.0, 2.0]),
            r"expected 3 layer_weights \(one per feature map\), got 2",
        ),
        (
            lambda a, y, n: ContrastivePromptLoss(temperature=-1.0),
            r"ContrastivePromptLoss: expected temperature to be a number > 0, got -1.0",
        ),
        (
            lambda a, y, n: contrastive_prompt_loss(a.long(), y, n),
            r"expected anchor to be a floating-point tensor, got torch.int64",
        ),
    ],
)
def test_bad_input(call, message):
    a, y, n = triple(0)
    with pytest.raises(InputError, match=message):
        call(a, y, n)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(eps=-1.0), r"expected eps to be a number > 0, got -1.0"),
        (dict(eps=0.0), r"expected eps to be a number > 0, got 0.0"),
        (dict(eps=float("inf")), r"expected eps to be a finite number > 0, got inf"),
        (
            dict(temperature=float("inf")),
            r"expected temperature to be a finite number > 0, got inf",
        ),
        (
            dict(temperature=float("nan")),
            r"expected temperature to be a finite number > 0, got nan",
        ),
    ],
)
def test_eps_and_temperature_must_be_finite_and_positive(options, message):
    a, y, n = triple(0)
    with pytest.raises(InputError, match="contrastive_prompt_loss: " + message):
        contrastive_prompt_loss(a, y, n, mode="ratio", **options)
    with pytest.raises(InputError, match="ContrastivePromptLoss: " + message):
        ContrastivePromptLoss(mode="ratio", **options)


def test_the_module_checks_its_options_once_at_construction(monkeypatch):
    from contrastive_prompts.core import loss as loss_module

    module = ContrastivePromptLoss(mode="infonce", layer_weights=[1, 2, 3])
    assert module.layer_weights == (1.0, 2.0, 3.0)

    def refuse(*args, **kwargs):
        raise AssertionError("options checked again at the call")

    monkeypatch.setattr(loss_module, "_checked_options", refuse)
    a, y, n = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2, 2, 3, 8, 8)
    assert torch.isfinite(module(a, y, n))
    with pytest.raises(AssertionError, match="checked again"):
        contrastive_prompt_loss(a, y, n)  # the function checks at its call


@pytest.mark.parametrize("features", ["vgg16", [PixelFeatures()], 3])
def test_the_function_refuses_features_that_are_not_a_module_naming_itself(features):
    a, y, n = triple(6)
    with pytest.raises(InputTypeError, match=r"^contrastive_prompt_loss: expected features to be"):
        contrastive_prompt_loss(a, y, n, features=features)


def test_distances_of_bfloat16_maps_are_taken_in_float32():
    # InfoNCE of bfloat16 images is their float32 loss rounded once to bfloat16 (within one
    # bfloat16 step, 2**-8 relative); distances summed in bfloat16 miss that by several steps
    a, y, n = (t.bfloat16() for t in triple(7, size=16))
    got = contrastive_prompt_loss(a, y, n, mode="infonce", features=PixelFeatures(),
                                  reduction="none")  # fmt: skip
    exact = contrastive_prompt_loss(a.float(), y.float(), n.float(), mode="infonce",
                                    features=PixelFeatures(), reduction="none")  # fmt: skip
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), exact, rtol=2**-8, atol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_the_distances_of_bfloat16_maps_are_those_of_their_float32_values(normalize):
    # the loss rounds its result to bfloat16, which hides the error of normalising and comparing
    # in bfloat16: the per-layer distances show it
    g = torch.Generator().manual_seed(7)
    anchor = torch.randn(2, 5, 6, 6, generator=g).bfloat16()
    targets = torch.randn(4, 5, 6, 6, generator=g).bfloat16()
    got = _layer_distances([anchor], [targets], normalize, 2)
    exact = _layer_distances([anchor.float()], [targets.float()], normalize, 2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, exact, rtol=1e-6, atol=0)
