"""The gated model: tile statistics, the gate, the routing of each image, and its fitting."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from contrastive_prompts import InputError
from contrastive_prompts._checks import InputTypeError
from contrastive_prompts.app.data import DegradedCopies, sample_split
from contrastive_prompts.app.degradations import make_mix
from contrastive_prompts.app.growth import fit_gate, gate_check, gate_scenes, gate_warning
from contrastive_prompts.reference import GatedRestorer, ImageGate, tile_statistics

FLOOR = math.log(1e-3)


# -- tile statistics ---------------------------------------------------------------------------


def test_statistics_of_a_constant_tile_are_its_value_and_no_spread():
    stats = tile_statistics(torch.full((1, 3, 64, 64), 0.25))[0, 0]
    torch.testing.assert_close(stats[:3], torch.full((3,), 0.25))  # mean
    torch.testing.assert_close(stats[3:6], torch.zeros(3))  # std
    torch.testing.assert_close(stats[6:12], torch.full((6,), 0.25))  # min, max
    torch.testing.assert_close(stats[12:], torch.full((9,), FLOOR))  # log(0.001 + 0)


def test_statistics_of_stripes_tell_horizontal_from_vertical_and_near_from_far():
    columns = (torch.arange(64) % 2).float()  # 0, 1, 0, 1, ... along the width
    image = columns.expand(1, 3, 64, 64)
    stats = tile_statistics(image)[0, 0]
    torch.testing.assert_close(stats[:3], torch.full((3,), 0.5))
    torch.testing.assert_close(stats[6:9], torch.zeros(3))
    torch.testing.assert_close(stats[9:12], torch.ones(3))
    torch.testing.assert_close(stats[12:15], torch.full((3,), math.log(1 + 1e-3)))  # 1 apart
    torch.testing.assert_close(stats[15:18], torch.full((3,), FLOOR))  # vertically: equal
    torch.testing.assert_close(stats[18:21], torch.full((3,), FLOOR))  # 4 apart: equal


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(0, 63), st.integers(0, 63),
    st.integers(0, 2**31),
)  # fmt: skip
def test_an_image_s_statistics_are_those_of_its_tiles_read_alone(rows, columns, dy, dx, seed):
    """Tiles are read apart, in row order; a remainder narrower than a tile is not read."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 64 * rows + dy, 64 * columns + dx, generator=g)
    stats = tile_statistics(image)
    assert stats.shape == (1, rows * columns, 21)
    for r in range(rows):
        for c in range(columns):
            alone = tile_statistics(image[..., 64 * r : 64 * r + 64, 64 * c : 64 * c + 64])
            torch.testing.assert_close(stats[0, r * columns + c], alone[0, 0])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70))
def test_statistics_are_finite_for_images_of_any_size(h, w):
    stats = tile_statistics(torch.rand(2, 3, h, w))
    assert stats.shape[0] == 2 and stats.shape[-1] == 21
    assert bool(stats.isfinite().all())


@pytest.mark.parametrize(
    ("images", "tile", "match"),
    [
        (torch.rand(3, 8, 8), 64, r"expected images of shape \(B, 3, H, W\)"),
        (torch.rand(1, 1, 8, 8), 64, r"expected images of shape \(B, 3, H, W\)"),
        (torch.rand(1, 3, 8, 8), 0, "expected tile"),
    ],
)
def test_statistics_refuse_what_they_cannot_read(images, tile, match):
    with pytest.raises(InputError, match=match):
        tile_statistics(images, tile)


# -- the gate and the gated model --------------------------------------------------------------


def _bright_gate(threshold: float = 0.5) -> ImageGate:
    """A gate sending tiles brighter than ``threshold`` (mean of the red channel) to class 1."""
    gate = ImageGate(2, hidden=1)
    with torch.no_grad():
        first, _, last = gate.score
        first.weight.zero_()
        first.weight[0, 0] = 1.0  # the red channel's mean
        first.bias.fill_(-threshold)
        last.weight.copy_(torch.tensor([[0.0], [1.0]]))
        last.bias.zero_()
    return gate.eval()


class AddConstant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


def test_a_new_gate_gives_every_image_to_the_first_network():
    gate = ImageGate(3)
    assert gate(torch.rand(4, 3, 100, 70)).tolist() == [0, 0, 0, 0]
    assert gate.votes(torch.rand(1, 3, 128, 128)).tolist() == [[4, 0, 0]]


def test_an_image_goes_where_most_of_its_tiles_vote_and_a_tie_to_the_lower_class():
    gate = _bright_gate()
    dark, bright = torch.zeros(3, 64, 64), torch.ones(3, 64, 64)
    three_bright = torch.cat([torch.cat([dark, bright], 2), torch.cat([bright, bright], 2)], 1)
    tie = torch.cat([dark, bright], 2)
    assert gate(torch.stack([three_bright, torch.cat([tie, tie], 1)])).tolist() == [1, 0]
    assert gate.votes(tie[None]).tolist() == [[1, 1]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=6), st.integers(0, 2**31))
def test_each_image_is_restored_by_its_network_alone_whatever_the_batch(brights, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([
        (0.55 if bright else 0.0) + 0.4 * torch.rand(3, 64, 64, generator=g) for bright in brights
    ])  # fmt: skip
    model = GatedRestorer([AddConstant(10.0), AddConstant(20.0)], _bright_gate())
    out = model(x)
    assert model.route(x).tolist() == [int(b) for b in brights]
    for i, bright in enumerate(brights):
        alone = model.networks[int(bright)](x[i : i + 1])
        assert torch.equal(out[i : i + 1], alone)


def test_restore_uses_each_network_s_own_restore_and_clamps_the_others():
    class WithRestore(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.options: dict[str, object] = {}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def restore(self, x: torch.Tensor, **options: object) -> torch.Tensor:
            self.options = options
            return torch.full_like(x, 0.5)

    first = WithRestore()
    model = GatedRestorer([first, AddConstant(5.0)], _bright_gate())
    dark, bright = torch.zeros(3, 64, 64), torch.full((3, 64, 64), 0.9)
    out = model.restore(torch.stack([dark, bright]), tile=32)
    assert first.options == {"tile": 32}
    assert torch.equal(out[0], torch.full((3, 64, 64), 0.5))
    assert torch.equal(out[1], torch.ones(3, 64, 64))  # 0.9 + 5, clamped
    assert model.restore(dark).shape == (3, 64, 64)
    assert model(torch.zeros(0, 3, 64, 64)).shape == (0, 3, 64, 64)


def test_gated_models_refuse_what_does_not_fit():
    with pytest.raises(InputError, match=r"one class per network \(2\), got a gate of 3"):
        GatedRestorer([nn.Identity(), nn.Identity()], ImageGate(3))
    with pytest.raises(InputError, match=r"label_networks of integers in \[0, 1\], got \[0, 2\]"):
        GatedRestorer([nn.Identity(), nn.Identity()], ImageGate(2), label_networks=[0, 2])
    with pytest.raises(InputTypeError, match=r"expected nn.Modules as networks, got \['str'\]"):
        GatedRestorer([nn.Identity(), "net"], ImageGate(2))  # type: ignore[list-item]
    with pytest.raises(InputTypeError, match="expected an ImageGate, got Linear"):
        GatedRestorer([nn.Identity(), nn.Identity()], nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected classes"):
        ImageGate(1)
    with pytest.raises(InputError, match=r"expected x of shape \(B, 3, H, W\)"):
        GatedRestorer([nn.Identity(), nn.Identity()], ImageGate(2))(torch.rand(3, 8, 8))


# -- fitting a gate ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def low_light_gate():
    mix = make_mix("3task", add=["low_light"])
    table = [0] * 5 + [1]
    return mix, table, fit_gate(mix, table, gate_scenes(), seed=0)


def test_a_fitted_gate_sends_every_held_out_photo_to_its_network(low_light_gate):
    """Fitted on other scenes, it tells low light from noise, rain and haze on photos it never
    saw (the held-out photos whole, three draws of every degradation)."""
    mix, table, gate = low_light_gate
    model = GatedRestorer([nn.Identity(), nn.Identity()], gate, label_networks=table)
    for draw in range(3):
        copies = DegradedCopies(sample_split()[1], mix, seed=1 + 100 * draw)
        check = gate_check(model, copies, mix.names)
        assert check == {name: (2, 2) for name in mix.names}, check
        assert gate_warning(check) is None


def test_fitting_is_deterministic_and_leaves_the_random_state_alone(low_light_gate):
    mix, table, _ = low_light_gate
    state = torch.get_rng_state()
    again = fit_gate(mix, table, gate_scenes(), seed=0, samples=200, iterations=20)
    assert torch.equal(torch.get_rng_state(), state)
    twice = fit_gate(mix, table, gate_scenes(), seed=0, samples=200, iterations=20)
    for key, value in again.state_dict().items():
        assert torch.equal(value, twice.state_dict()[key]), key


@pytest.mark.parametrize("table", [[0] * 6, [0] * 5, [0] * 5 + [2], [0] * 5 + [-1]])
def test_fitting_refuses_a_table_that_does_not_give_each_label_a_network(table):
    mix = make_mix("3task", add=["low_light"])
    with pytest.raises(InputError, match=r"expected a network in 0, 1, \.\.\. for each of the 6"):
        fit_gate(mix, table, gate_scenes(), samples=10, iterations=1)


def test_fitting_refuses_a_mix_it_cannot_label():
    several = make_mix("3task", max_per_sample=2)
    with pytest.raises(InputError, match="got a mix of up to 2 degradations an image"):
        fit_gate(several, [0, 0, 0, 1, 1], gate_scenes(), samples=10, iterations=1)
    with pytest.raises(InputError, match="of one degradation an image, got str"):
        fit_gate("3task", [0, 0, 0, 1, 1], gate_scenes())  # type: ignore[arg-type]


def test_a_gate_warning_names_each_degradation_sent_elsewhere():
    check = {"rain": (3, 4), "haze": (0, 2), "noise": (5, 5)}
    assert gate_warning(check) == (
        "the gate sent 1 of 4 rain, 2 of 2 haze images to another network than their own"
    )
