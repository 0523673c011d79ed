"""The example scripts run end to end (shortened)."""

import runpy
import sys

import pytest
import torch


def run_example(path: str, *args: str) -> None:
    argv = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        sys.argv = argv


def test_plug_into_your_network(capsys):
    run_example(
        "examples/plug_into_your_network.py", "--steps", "3", "--size", "32", "--batch", "4"
    )
    out = capsys.readouterr().out
    assert "3 steps in" in out and "held-out PSNR" in out


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])


def test_train_all_in_one(tmp_path, capsys):
    from contrastive_prompts.data import write_image

    out, photo = tmp_path / "demo", tmp_path / "held_out.png"
    write_image(photo, torch.rand(3, 40, 56))  # a small held-out image keeps the test fast
    run_example(
        "examples/train_all_in_one.py", "--steps", "2", "--out", str(out), "--held-out", str(photo)
    )
    printed = capsys.readouterr().out
    assert "average PSNR:" in printed and "| haze |" in printed
    for name in ("grid.png", "metrics.md", "metrics.json", "run/last.pt", "run/loss.png"):
        assert (out / name).is_file(), name
