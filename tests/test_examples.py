"""The example scripts run end to end (shortened)."""

import runpy
import sys

import pytest


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
