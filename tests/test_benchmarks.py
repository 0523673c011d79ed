"""The benchmark scripts run, and the figures they print hang together (shortened runs)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_benchmark_reports_both_networks():
    command = [
        sys.executable,
        "benchmarks/train_step.py",
        "--crop", "16",
        "--batch", "2",
        "--negatives", "1", "2",
        "--repeats", "1",
        "--networks", "reference", "example",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures["networks"]) == {"reference", "example"}
    for network in figures["networks"].values():
        step, negative_pass = network["plain_step_s"], network["decoder_nograd_s"]
        assert step > 0 and negative_pass > 0
        assert set(network["negatives"]) == {"1", "2"}
        for m, row in network["negatives"].items():
            # the floor is computed from the two measured times
            assert abs(row["floor"] - (step + int(m) * negative_pass) / step) < 1e-9
            assert abs(row["cpl_over_floor"] * row["floor"] - row["cpl_over_plain"]) < 1e-9
            ratio = row["cpl_over_plain"] / row["executed_floor"]
            assert abs(row["cpl_over_executed_floor"] - ratio) < 1e-9
            assert all(value > 0 for value in row.values())
    assert (
        figures["networks"]["reference"]["parameters"]
        > figures["networks"]["example"]["parameters"]
    )
