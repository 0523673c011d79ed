"""TensorBoard logging: what a run writes, and a resumed run without duplicate steps."""

import builtins

import pytest
import torch

from contrastive_prompts import InputError
from contrastive_prompts.app.tensorboard import TensorBoardLog, expert_use_image, image_grid
from tests.test_train import make_trainer

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read(log_dir) -> event_accumulator.EventAccumulator:
    events = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return events


def steps(events, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


def test_a_run_logs_losses_validation_experts_and_images(tmp_path):
    trainer = make_trainer(tmp_path, steps=4, val_every=2, tensorboard=True)
    trainer.fit()
    events = read(tmp_path / "run" / "tensorboard")
    tags = events.Tags()
    for key in ("loss", "l1", "cpr", "balance", "routing", "lr", "grad_norm"):
        assert steps(events, f"train/{key}") == [1, 2, 3, 4]
    assert steps(events, "val/swap_cost") == [2, 4]
    assert [e.value for e in events.Scalars("val/swap_cost")] == pytest.approx(
        [v["swap_cost"] for v in trainer.validations]
    )
    for stage in ("prompt3", "prompt2", "prompt1"):
        assert steps(events, f"specialisation/{stage}") == [2, 4]
    logged = [e.value for e in events.Scalars("train/loss")]
    assert logged == pytest.approx([r["loss"] for r in trainer.history])
    names = trainer.label_names
    assert {f"val_psnr/{n}" for n in names} | {f"val_ssim/{n}" for n in names} <= set(
        tags["scalars"]
    )
    assert steps(events, "val/average_psnr") == [2, 4]
    assert [e.value for e in events.Scalars("val/average_psnr")] == pytest.approx(
        [v["average_psnr"] for v in trainer.validations]
    )
    stages = trainer.history[0]["stages"]
    assert {f"experts/{s}" for s in stages} | {"val/degraded_restored_clean"} <= set(tags["images"])
    grid = events.Images("val/degraded_restored_clean")[-1]
    # one row (degraded, restored, clean) of 24x24 crops per degradation, 2-pixel gaps
    assert (grid.height, grid.width) == (len(names) * 26 + 2, 3 * 26 + 2)
    experts = events.Images(f"experts/{stages[0]}")[0]
    assert experts.height == len(names) * 24


def test_a_resumed_run_shows_each_step_once(tmp_path, monkeypatch):
    straight = make_trainer(tmp_path / "a", steps=6, save_every=3, tensorboard=True)
    straight.fit()
    crashed = make_trainer(tmp_path / "b", steps=6, save_every=3, tensorboard=True)
    original = crashed.train_step

    def crash(*batch):  # a crash, not Ctrl-C: no checkpoint, steps 4 and 5 logged already
        if crashed.step == 5:
            raise RuntimeError("the machine went away")
        return original(*batch)

    monkeypatch.setattr(crashed, "train_step", crash)
    with pytest.raises(RuntimeError, match="went away"):
        crashed.fit()
    assert steps(read(tmp_path / "b/run/tensorboard"), "train/loss") == [1, 2, 3, 4, 5]
    resumed = make_trainer(tmp_path / "b", steps=6, save_every=3, tensorboard=True)
    resumed.load(tmp_path / "b/run/last.pt")
    assert resumed.step == 3
    resumed.fit()
    events = read(tmp_path / "b/run/tensorboard")
    assert steps(events, "train/loss") == [1, 2, 3, 4, 5, 6]
    expected = [e.value for e in read(tmp_path / "a/run/tensorboard").Scalars("train/loss")]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(expected)


def test_without_the_package_the_error_names_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("TensorBoard logging requires TensorBoard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(InputError, match="expected the tensorboard package for tensorboard=True"):
        TensorBoardLog(tmp_path, label_names=["rain"])


def test_expert_use_rows_are_shares_and_grids_hold_every_image():
    image = expert_use_image([[2, 2, 0], [0, 0, 5]], cell=3)
    assert image.shape == (6, 9)
    assert image[0, 0] == 0.5 and image[3, 8] == 1.0 and image[3, 0] == 0.0
    rows = [[torch.full((3, 4, 5), 0.2), torch.full((3, 4, 5), 0.4)]]
    grid = image_grid(rows, gap=1)
    assert grid.shape == (3, 6, 13)
    assert grid[0, 1, 1] == pytest.approx(0.2) and grid[0, 1, 7] == pytest.approx(0.4)
    assert grid[0, 0, 0] == 1.0  # the background
    with pytest.raises(InputError, match=r"expected rows of one length, got lengths \[1, 2\]"):
        image_grid([[torch.zeros(3, 2, 2)], [torch.zeros(3, 2, 2)] * 2])
