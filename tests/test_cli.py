"""The command line: train, resume, evaluate, restore, and its errors."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from contrastive_prompts.app.checkpoints import load_promptir
from contrastive_prompts.app.cli import main
from contrastive_prompts.app.data import read_image, write_image

from .leftovers import temporaries


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--steps", "2", "--batch-size", "1", "--crop", "24", "--val-crop", "24",
                 "--num-negatives", "1", "--log-every", "1", "--out-dir", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_train_writes_a_run(trained):
    assert (trained / "last.pt").is_file()
    config = json.loads((trained / "config.json").read_text())
    assert config["steps"] == 2 and config["num_negatives"] == 1 and config["crop"] == 24


def test_resume_carries_on(trained, capsys):
    code = main(["train", "--steps", "3", "--batch-size", "1", "--crop", "24", "--val-crop", "24",
                 "--num-negatives", "1", "--out-dir", str(trained), "--resume"])  # fmt: skip
    assert code == 0
    assert "resumed from" in capsys.readouterr().err
    steps = [
        json.loads(line).get("step") for line in (trained / "log.jsonl").read_text().splitlines()
    ]
    assert 3 in steps


def test_restore_images_and_folders(trained, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(inputs / "a.png", torch.rand(3, 21, 30))
    write_image(inputs / "b.jpg", torch.rand(3, 40, 17))
    code = main(["restore", "--checkpoint", str(trained / "last.pt"), str(inputs),
                 "--output", str(tmp_path / "out"), "--tile", "16", "--overlap", "4"])  # fmt: skip
    assert code == 0
    assert read_image(tmp_path / "out" / "a.png").shape == (3, 21, 30)
    assert read_image(tmp_path / "out" / "b.png").shape == (3, 40, 17)


def test_restore_routes_once_per_image_unless_told(trained, tmp_path, monkeypatch):
    from contrastive_prompts import SparsePromptIR

    write_image(tmp_path / "a.png", torch.rand(3, 21, 30))
    seen, restore = [], SparsePromptIR.restore
    monkeypatch.setattr(
        SparsePromptIR, "restore", lambda self, x, **kw: seen.append(kw) or restore(self, x, **kw)
    )
    for routing, out in ((None, "image"), ("tile", "tile")):
        flags = [] if routing is None else ["--routing", routing]
        assert main(["restore", "--checkpoint", str(trained / "last.pt"), str(tmp_path / "a.png"),
                     "--output", str(tmp_path / out), "--tile", "16", "--overlap", "4",
                     *flags]) == 0  # fmt: skip
    assert [kw["routing"] for kw in seen] == ["image", "tile"]
    with pytest.raises(SystemExit):
        main(["restore", "--checkpoint", "x.pt", "a.png", "--output", "o", "--routing", "pass"])


def test_evaluate_prints_a_table_per_degradation(trained, tmp_path, capsys):
    folder = tmp_path / "clean"
    folder.mkdir()
    write_image(folder / "x.png", torch.rand(3, 32, 32))
    code = main(["evaluate", "--checkpoint", str(trained / "last.pt"), "--data", str(folder),
                 "--json", str(tmp_path / "t.json")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    for name in ("noise_15", "noise_25", "noise_50", "rain", "haze", "average"):
        assert f"| {name} |" in out
    assert set(json.loads((tmp_path / "t.json").read_text())["psnr"]) >= {"rain", "haze"}


def test_evaluate_reads_the_benchmarks_of_the_table(trained, tmp_path, capsys):
    checkpoint = ["evaluate", "--checkpoint", str(trained / "last.pt")]
    root = tmp_path / "lol"
    for folder in ("low", "high"):
        (root / folder).mkdir(parents=True)
        write_image(root / folder / "1.png", torch.rand(3, 24, 24))
    assert main([*checkpoint, "--benchmark", "lol", "--root", str(root)]) == 0
    assert "| low_light |" in capsys.readouterr().out
    write_image(root / "low" / "2.png", torch.rand(3, 24, 24))
    assert main([*checkpoint, "--benchmark", "lol", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "read_benchmark('lol'): 1 files in" in err and "no partner: low/2.png" in err
    assert main([*checkpoint, "--benchmark", "cbsd68", "--root", str(root / "high"),
                 "--sigma", "15"]) == 0  # fmt: skip
    assert "| noise_15 |" in capsys.readouterr().out
    assert main([*checkpoint, "--benchmark", "sots"]) == 2
    assert "expected --root with --benchmark sots" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*checkpoint, "--benchmark", "rain100h", "--root", str(root)])
    assert "invalid choice: 'rain100h'" in capsys.readouterr().err


def test_clear_errors(trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["restore", "--checkpoint", str(trained / "last.pt"), str(empty),
                 "--output", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "expected image files in folder" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["restore", "--checkpoint", str(trained / "last.pt"), str(bad),
                 "--output", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "got 1 of 1 inputs that are not: expected a PNG, JPEG" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(trained / "last.pt")]) == 2
    assert "expected --data FOLDER or --benchmark NAME --root FOLDER" in capsys.readouterr().err


def test_missing_checkpoint_message(tmp_path, capsys):
    write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    code = main(["restore", "--checkpoint", str(tmp_path / "none.pt"), str(tmp_path),
                 "--output", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert f"checkpoint '{tmp_path / 'none.pt'}' not found" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "contrastive_prompts", "--help"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    for command in ("train", "evaluate", "restore", "demo"):
        assert command in result.stdout


def test_none_values_and_resume_from_the_checkpoint_options(tmp_path, capsys):
    out = tmp_path / "run"
    # whole validation images (--val-crop none): small ones, not the full-size sample photos
    (tmp_path / "val").mkdir()
    write_image(tmp_path / "val" / "a.png", torch.rand(3, 24, 32))
    assert main(["train", "--steps", "2", "--batch-size", "1", "--crop", "24", "--lr", "1e-3",
                 "--seed", "5", "--num-negatives", "1", "--grad-clip", "none", "--val-crop", "none",
                 "--val-data", str(tmp_path / "val"), "--val-every", "0",
                 "--out-dir", str(out)]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["grad_clip"] is None and config["val_crop"] is None
    # --resume takes the checkpoint's options; flags change only what they name
    assert main(["train", "--steps", "3", "--out-dir", str(out), "--resume"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["lr"], config["seed"], config["steps"], config["grad_clip"]) == (
        1e-3,
        5,
        3,
        None,
    )
    assert main(["train", "--steps", "4", "--out-dir", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "trained with other options (lr: run 0.5, checkpoint 0.001)" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_evaluate_scores_an_official_promptir_checkpoint(tmp_path, capsys, promptir_checkpoint):
    """A PromptIR .ckpt is read as PromptIR (top-5) or, if asked, as CPL weights (top-1)."""
    from contrastive_prompts.app.checkpoints import load_checkpoint_model
    from contrastive_prompts.app.data import read_benchmark
    from contrastive_prompts.app.metrics import evaluate

    from .test_model import random_promptir_state_dict

    state = random_promptir_state_dict()  # what promptir_checkpoint holds
    shutil.copy(promptir_checkpoint, tmp_path / "p.ckpt")
    for folder, name in (("rainy", "rain-1.png"), ("gt", "norain-1.png")):
        (tmp_path / "R" / folder).mkdir(parents=True)
        write_image(tmp_path / "R" / folder / name, torch.rand(3, 16, 24))
    for top_k in (5, 1):
        table = tmp_path / f"{top_k}.json"
        code = main(["evaluate", "--checkpoint", str(tmp_path / "p.ckpt"), "--benchmark",
                     "rain100l", "--root", str(tmp_path / "R"), "--device", "cpu",
                     "--promptir-top-k", str(top_k), "--json", str(table)])  # fmt: skip
        assert code == 0
        printed = json.loads(table.read_text())["psnr"]["rain"]
        model = load_promptir(state, top_k=top_k).eval()
        expected = evaluate(
            lambda x, m=model: m.restore(x), read_benchmark("rain100l", tmp_path / "R")
        )
        assert printed == pytest.approx(expected.psnr["rain"], abs=1e-9)
    assert load_checkpoint_model(tmp_path / "p.ckpt").config.top_k == 5


def test_evaluate_says_what_a_foreign_file_is_not(tmp_path, capsys):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    code = main(["evaluate", "--checkpoint", str(tmp_path / "notes.pt"), "--data",
                 str(tmp_path), "--device", "cpu"])  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert "cannot be read" in err or "not a contrastive_prompts training checkpoint" in err


def test_evaluate_never_writes_over_a_file_unasked(trained, tmp_path, capsys):
    folder = tmp_path / "clean"
    folder.mkdir()
    write_image(folder / "x.png", torch.rand(3, 16, 16))
    table = tmp_path / "mine.json"
    table.write_text("my notes")
    argv = ["evaluate", "--checkpoint", str(trained / "last.pt"), "--data", str(folder),
            "--json", str(table), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert table.read_text() == "my notes"
    assert main([*argv, "--overwrite"]) == 0
    assert set(json.loads(table.read_text())["psnr"]) >= {"rain", "haze"}
    assert not temporaries(tmp_path)


def test_train_flags_take_their_choices_from_the_tables(capsys):
    from contrastive_prompts.app.cli import build_parser
    from contrastive_prompts.app.degradations import MIXES
    from contrastive_prompts.reference.model import MODEL_PRESETS

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    by_flag = {a.option_strings[0]: a for a in train._actions if a.option_strings}
    assert by_flag["--preset"].choices == list(MODEL_PRESETS)
    assert by_flag["--mix"].choices == list(MIXES)
    with pytest.raises(SystemExit):
        main(["train", "--preset", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def _rows(text, header):
    """``{first cell: other cells}`` of the Markdown table whose header starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_evaluate_prints_the_prompt_effect_of_a_cpl_model(trained, tmp_path, capsys):
    folder = tmp_path / "clean"
    folder.mkdir()
    write_image(folder / "x.png", torch.rand(3, 24, 24))
    write_image(folder / "y.png", torch.rand(3, 16, 32))
    argv = ["evaluate", "--checkpoint", str(trained / "last.pt"), "--data", str(folder),
            "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "Prompt effect" in out
    scores = _rows(out, "| degradation | images | PSNR (dB) |")
    effect = _rows(out, "| degradation | images | degraded | own | negative | swap |")
    assert set(effect) == set(scores)  # every degradation and the average
    for name, (images, psnr, _) in scores.items():
        count, _degraded, own, negative, swap, cost, swap_cost = effect[name]
        assert count == images == ("2" if name != "average" else str(2 * (len(scores) - 1)))
        assert own == psnr  # the own prompts are what the first table scored
        assert float(cost) == pytest.approx(float(own) - float(negative), abs=0.011)
        assert float(swap_cost) == pytest.approx(float(own) - float(swap), abs=0.011)
    figures = json.loads((tmp_path / "t.json").read_text())["prompt_effect"]
    for name in figures["names"]:
        cost = figures["own"][name] - figures["negative"][name]
        assert figures["cost"][name] == pytest.approx(cost, abs=1e-12)
        swap_cost = figures["own"][name] - figures["swap"][name]
        assert figures["swap_cost"][name] == pytest.approx(swap_cost, abs=1e-12)
    layers = _rows(out, "| most used expert (share) |")
    assert list(layers) == list(figures["experts"]) == ["prompt3", "prompt2", "prompt1"]
    found = _rows(out, "| prompt layer | specialisation (NMI) |")
    assert list(found) == list(figures["specialisation"]) == ["prompt3", "prompt2", "prompt1"]
    for layer, (nmi, dead, collapsed, separated) in found.items():
        figure = figures["specialisation"][layer]
        assert float(nmi) == pytest.approx(figure["nmi"], abs=0.006)
        assert int(dead) == figure["dead"]
        assert (collapsed, separated) == tuple(
            "yes" if figure[k] else "no" for k in ("collapsed", "separated")
        )
    assert main([*argv, "--no-prompt-effect"]) == 0
    assert "Prompt effect" not in capsys.readouterr().out


def test_evaluate_shows_no_prompt_effect_for_dense_prompts(tmp_path, capsys, promptir_checkpoint):
    """PromptIR's dense prompts (top-5 of 5) leave no expert for a negative prompt."""
    root = tmp_path / "R"
    for folder, name in (("rainy", "rain-1.png"), ("gt", "norain-1.png")):
        (root / folder).mkdir(parents=True)
        write_image(root / folder / name, torch.rand(3, 16, 16))
    argv = ["evaluate", "--checkpoint", str(promptir_checkpoint), "--benchmark", "rain100l",
            "--root", str(root), "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--promptir-top-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "| rain |" in out and "Prompt effect" not in out
    assert main([*argv, "--promptir-top-k", "1"]) == 0
    assert "rain" in _rows(capsys.readouterr().out, "| degradation | images | degraded |")


def test_init_promptir_chooses_the_base_preset_unless_told_otherwise(tmp_path, capsys):
    """PromptIR's weights fit the base preset alone: the command chooses it, and says so; a
    preset given on the command line is kept (and refused, in one line, if it is not base)."""
    missing = tmp_path / "promptir.ckpt"  # read after the preset is chosen: its error comes next
    out = ["--steps", "1", "--out-dir", str(tmp_path / "run")]
    assert main(["train", "--init-promptir", str(missing), *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "--init-promptir: training the base preset (PromptIR's size)"
    assert "not found" in err[-1] and "preset" not in err[-1]
    assert main(["train", "--init-promptir", str(missing), "--preset", "tiny", *out]) == 2
    assert "expected preset='base' with prompts" in capsys.readouterr().err
