"""The second round of hostile inputs: files and folders.

A run folder belongs to one run; no output of a command is one of its inputs; temporary files
are the library's own and never outlive a write; a file's metadata is checked against its
weights and against what can be built before anything is allocated; every mistake with a file
ends in one line naming what was expected and what came.
"""

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import filelock
import pytest
import torch
from safetensors.torch import save_file

from contrastive_prompts import InputError, SparsePromptIR
from contrastive_prompts.app.checkpoints import (
    WEIGHTS_FORMAT,
    CheckpointError,
    load_checkpoint_model,
    load_promptir,
)
from contrastive_prompts.app.cli import main
from contrastive_prompts.app.config import TrainConfig
from contrastive_prompts.app.data import SyntheticDataset, write_image
from contrastive_prompts.app.files import read_weights
from contrastive_prompts.app.train import LOCK_FILE, Trainer
from contrastive_prompts.core.features import VGG16Features

from .test_safety import PoisonedAfter, photos, small_config, small_trainer

TRAIN = ["--batch-size", "1", "--crop", "16", "--val-crop", "16", "--num-negatives", "1",
         "--log-every", "1", "--save-every", "100"]  # fmt: skip


def train(out: Path, steps: int, *extra: str) -> int:
    return main(["train", "--preset", "tiny", *TRAIN, "--steps", str(steps),
                 "--out-dir", str(out), *extra])  # fmt: skip


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def logged_steps(folder: Path) -> list[int]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "step" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs of the command line: A (3 steps) and C (2 steps)."""
    root = tmp_path_factory.mktemp("runs")
    assert train(root / "A", 3) == 0
    assert train(root / "C", 2) == 0
    return root


@pytest.fixture(scope="module")
def checkpoint(runs):
    return runs / "A" / "last.pt"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a0", "a1"):
        write_image(folder / f"{name}.png", torch.rand(3, 20, 18))
    return folder


def one_line_error(capsys, *phrases: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for phrase in phrases:
        assert phrase in err, err
    return err


# -- a run folder belongs to one run ------------------------------------------------------------


def test_a_new_run_into_a_finished_runs_folder_is_refused_before_writing(runs, tmp_path, capsys):
    before = folder_state(runs / "A")
    assert train(runs / "A", 1) == 2
    one_line_error(capsys, "holds run", "--resume", "--overwrite")
    assert folder_state(runs / "A") == before  # config.json, log.jsonl and last.pt untouched


def test_resuming_another_runs_checkpoint_into_a_run_folder_is_refused(runs, capsys):
    before = folder_state(runs / "A")
    code = main(["train", "--resume", str(runs / "C" / "last.pt"), "--steps", "4",
                 "--out-dir", str(runs / "A")])  # fmt: skip
    assert code == 2
    one_line_error(capsys, "holds run", "C/last.pt', is of run")
    assert folder_state(runs / "A") == before


def test_a_run_resumes_into_its_own_folder_and_into_a_new_one(tmp_path):
    assert train(tmp_path / "B", 2) == 0
    assert main(["train", "--out-dir", str(tmp_path / "B"), "--resume", "--steps", "3"]) == 0
    assert logged_steps(tmp_path / "B") == [1, 2, 3]
    # a copy of the run carries on elsewhere: the new folder is its own
    code = main(["train", "--resume", str(tmp_path / "B" / "last.pt"), "--steps", "4",
                 "--out-dir", str(tmp_path / "fork")])  # fmt: skip
    assert code == 0
    assert logged_steps(tmp_path / "fork") == [4]
    run = json.loads((tmp_path / "B" / "run.json").read_text())["run"]
    assert json.loads((tmp_path / "fork" / "run.json").read_text())["run"] == run


def test_overwrite_replaces_the_other_run_whole(tmp_path):
    assert train(tmp_path / "A", 3) == 0
    old_run = json.loads((tmp_path / "A" / "run.json").read_text())["run"]
    assert train(tmp_path / "A", 1, "--overwrite") == 0
    assert logged_steps(tmp_path / "A") == [1]  # not 1, 2, 3, 1
    assert json.loads((tmp_path / "A" / "run.json").read_text())["run"] != old_run
    assert torch.load(tmp_path / "A" / "last.pt", weights_only=True)["step"] == 1


def test_a_run_folder_from_before_run_ids_resumes_and_refuses_new_runs(tmp_path, capsys):
    """Folders written before run.json existed: their own last.pt resumes, a new run is refused."""
    assert train(tmp_path / "old", 2) == 0
    (tmp_path / "old" / "run.json").unlink()
    capsys.readouterr()
    assert train(tmp_path / "old", 1) == 2
    one_line_error(capsys, "holds a run (config.json")
    assert main(["train", "--out-dir", str(tmp_path / "old"), "--resume", "--steps", "3"]) == 0


def test_trainer_fit_refuses_a_held_folder_and_fits_again_its_own(tmp_path):
    trainer = small_trainer(tmp_path / "run")
    trainer.fit()
    trainer.config = dataclasses.replace(trainer.config, steps=3)
    trainer.fit()  # the same trainer carries on in its own folder
    with pytest.raises(InputError, match="holds run"):
        small_trainer(tmp_path / "run").fit()
    small_trainer(tmp_path / "run").fit(overwrite=True)
    with pytest.raises(InputError, match="to be a folder"):
        (tmp_path / "file").write_text("mine")
        small_trainer(tmp_path / "file").fit()
    assert (tmp_path / "file").read_text() == "mine"


def test_a_fit_into_a_folder_another_fit_is_writing_to_is_refused_before_writing(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    other = filelock.FileLock(folder / LOCK_FILE, timeout=0)  # another process's fit, say
    with other:
        with pytest.raises(InputError, match=r"another training is writing to .*fit\.lock"):
            small_trainer(folder).fit()
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
    small_trainer(folder).fit()  # free again
    assert logged_steps(folder) == [1, 2]


def test_two_fits_started_together_into_one_new_folder_train_once(tmp_path):
    """One claims the folder, the other is refused: no step logged twice, one run's files."""
    folder, barrier = tmp_path / "new", threading.Barrier(2)
    trainers = [small_trainer(folder, steps=4) for _ in range(2)]
    outcomes: list[object] = [None, None]

    def fit(i: int) -> None:
        barrier.wait()
        try:
            trainers[i].fit()
            outcomes[i] = "trained"
        except InputError as error:
            outcomes[i] = error

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("trained") == 1, outcomes
    winner = trainers[outcomes.index("trained")]
    refused = next(o for o in outcomes if isinstance(o, InputError))
    assert "another training is writing to" in str(refused) or "holds run" in str(refused)
    assert logged_steps(folder) == [1, 2, 3, 4]
    assert json.loads((folder / "run.json").read_text())["run"] == winner.run_id
    assert torch.load(folder / "last.pt", weights_only=True)["step"] == 4


# -- no output is an input; temporary files are the library's own ------------------------------


def test_evaluate_json_never_writes_over_its_checkpoint_or_images(checkpoint, images, capsys):
    before = checkpoint.read_bytes()
    for target in (checkpoint, images / "a0.png"):
        code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(images),
                     "--no-prompt-effect", "--json", str(target), "--overwrite"])  # fmt: skip
        assert code == 2
        one_line_error(capsys, "apart from the inputs", "even with --overwrite")
    assert checkpoint.read_bytes() == before


def test_evaluate_json_into_a_new_folder_is_written_and_valid(checkpoint, images, tmp_path):
    target = tmp_path / "new" / "deeper" / "table.json"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(images),
                 "--json", str(target)])  # fmt: skip
    assert code == 0
    json.loads(target.read_text(), parse_constant=pytest.fail)  # no NaN / Infinity literals
    assert [p.name for p in target.parent.iterdir()] == ["table.json"]


def test_restore_leaves_a_users_file_of_any_name_alone(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = {out / ".a0.partial.png": b"mine", out / ".a0.png.partial": b"mine too"}
    for path, content in mine.items():
        path.write_bytes(content)
    code = main(["restore", "--checkpoint", str(checkpoint), str(images), "--output", str(out)])
    assert code == 0
    assert all(path.read_bytes() == content for path, content in mine.items())
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "a0.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not a private 0600
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".a0.partial.png", ".a0.png.partial", "a0.png", "a1.png"]
    )


def test_restore_checks_every_input_before_it_restores_one(checkpoint, images, tmp_path, capsys):
    (images / "b0.png").write_bytes(b"")  # a 0-byte image between the good ones
    write_image(images / "z.png", torch.rand(3, 40, 40))
    out = tmp_path / "out"
    argv = ["restore", "--checkpoint", str(checkpoint), str(images), "--output", str(out)]
    assert main([*argv, "--max-pixels", "1000"]) == 2
    one_line_error(
        capsys, "2 of 4 inputs", "b0.png', which is empty", "40 x 40 pixels", "nothing was done"
    )
    assert not out.exists()  # a rerun needs no --overwrite


def test_restore_restores_the_rest_when_a_body_does_not_decode(
    checkpoint, images, tmp_path, capsys
):
    whole = (images / "a0.png").read_bytes()
    (images / "a0.png").write_bytes(whole[: len(whole) // 2])  # the header intact, the data cut
    out = tmp_path / "out"
    argv = ["restore", "--checkpoint", str(checkpoint), str(images), "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("contrastive-prompts restore: error: restore: expected every input")
    assert "a0.png" in err[-1] and "the other 1 were restored" in err[-1]
    assert sorted(p.name for p in out.iterdir()) == ["a1.png"]


@pytest.mark.parametrize("command", ["restore", "export", "evaluate"])
def test_ctrl_c_in_a_command_is_one_line_and_leaves_no_temporary(
    command, checkpoint, images, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()

    def interrupted(*args, **kwargs):
        for value in [*kwargs.values(), *args]:
            if isinstance(value, str | os.PathLike) and ".partial" in str(value):
                Path(value).write_bytes(b"half")  # what an interrupted write leaves
        raise KeyboardInterrupt

    if command == "restore":
        monkeypatch.setattr("contrastive_prompts.app.data.write_image", interrupted)
        argv = ["restore", "--checkpoint", str(checkpoint), str(images), "--output", str(out)]
    elif command == "export":
        monkeypatch.setattr("safetensors.torch.save_file", interrupted)
        argv = ["export", "--checkpoint", str(checkpoint), str(out / "w.safetensors")]
    else:
        monkeypatch.setattr("contrastive_prompts.app.metrics.evaluate", interrupted)
        argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(images)]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == f"contrastive-prompts {command}: interrupted"
    assert list(out.iterdir()) == []


# -- bounds before allocation, and loading mistakes in one line --------------------------------


@pytest.fixture(scope="module")
def tiny_weights():
    model = SparsePromptIR("tiny")
    return dataclasses.asdict(model.config), {
        k: v.contiguous() for k, v in model.state_dict().items()
    }


def write_weights(path, config, tensors, **metadata):
    meta = {"format": WEIGHTS_FORMAT, "model_config": json.dumps(config), **metadata}
    save_file(tensors, path, metadata=meta)
    return path


HOSTILE_CONFIGS = [
    ({"num_blocks": [100000, 1, 1, 1]}, "asks for 100004 transformer blocks"),
    ({"num_refinement_blocks": 10**9}, "transformer blocks"),
    ({"dim": 10**6}, "do not fit its model_config: shape mismatches"),
    ({"prompt_sizes": [10**5, 8, 8]}, "prompt1.prompts: expected (5, 16, 100000, 100000)"),
    ({"num_prompts": 10**9, "top_k": 1}, "prompt1.prompts: expected (1000000000,"),
    ({"use_prompts": "false"}, "use_prompts"),
]


@pytest.mark.parametrize(("change", "message"), HOSTILE_CONFIGS)
def test_metadata_is_checked_against_the_weights_before_the_model_is_built(
    tiny_weights, tmp_path, change, message
):
    config, tensors = tiny_weights
    path = write_weights(tmp_path / "w.safetensors", {**config, **change}, tensors)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="model_config") as error:
        load_checkpoint_model(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert time.perf_counter() - start < 20  # refused, not built (minutes and gigabytes before)


def test_deeply_nested_metadata_is_one_line(tiny_weights, tmp_path):
    _, tensors = tiny_weights
    path = tmp_path / "w.safetensors"
    save_file(tensors, path, metadata={"format": WEIGHTS_FORMAT,
                                       "model_config": "[" * 100_000 + "]" * 100_000})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"not JSON .nested too deeply"):
        load_checkpoint_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w > 0, "expected a floating-point tensor, got torch.bool"),
        (lambda w: (w * 100).long(), "expected a floating-point tensor, got torch.int64"),
        (lambda w: w * float("nan"), "NaN or infinite values ['patch_embed.weight']"),
        (lambda w: w / 0, "NaN or infinite values ['patch_embed.weight']"),
    ],
)
def test_weights_that_a_cast_would_change_or_that_are_not_finite(
    tiny_weights, tmp_path, change, message
):
    config, tensors = tiny_weights
    tensors = {**tensors, "patch_embed.weight": change(tensors["patch_embed.weight"])}
    path = write_weights(tmp_path / "w.safetensors", config, tensors)
    with pytest.raises(CheckpointError, match="do not fit") as error:
        load_checkpoint_model(path)
    assert message in str(error.value)


def test_a_checkpoint_is_read_by_its_content_not_its_name(checkpoint, tmp_path):
    renamed = tmp_path / "last.safetensors"
    renamed.write_bytes(checkpoint.read_bytes())
    model = load_checkpoint_model(renamed)
    expected = load_checkpoint_model(checkpoint)
    pairs = zip(model.parameters(), expected.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def damaged_safetensors(path: Path) -> Path:
    save_file({"w": torch.ones(3)}, path)
    data = bytearray(path.read_bytes())
    data[9:20] = b"\xff" * 11  # the JSON header, broken
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_safetensors_header_is_one_line_everywhere(tmp_path, capsys):
    path = damaged_safetensors(tmp_path / "promptir.safetensors")
    with pytest.raises(CheckpointError, match=r"cannot be read .SafetensorError"):
        load_promptir(path, top_k=5)
    with pytest.raises(CheckpointError, match=r"cannot be read .SafetensorError"):
        load_checkpoint_model(path)
    assert main(["train", "--init-promptir", str(path), "--preset", "base", "--steps", "1",
                 "--out-dir", str(tmp_path / "run")]) == 2  # fmt: skip
    one_line_error(capsys, "cannot be read (SafetensorError")
    assert not (tmp_path / "run").exists()


def test_vgg16_weights_files_that_are_hostile_or_wrong(tmp_path, capsys):
    from .test_safety import Payload

    evil = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": Payload(tmp_path / "marker")}, evil)
    with pytest.raises(CheckpointError, match="was refused") as error:
        read_weights(evil)
    assert "weights_only" not in str(error.value)
    assert not (tmp_path / "marker").exists()
    listed = tmp_path / "list.pth"
    torch.save([torch.ones(1)], listed)
    with pytest.raises(InputError, match=r"expected torchvision VGG16 weights .* got a list"):
        VGG16Features(weights=read_weights(listed))
    assert main(["train", "--cpr-features", f"vgg16:{evil}", "--steps", "1",
                 "--out-dir", str(tmp_path / "run")]) == 2  # fmt: skip
    one_line_error(capsys, "was refused")
    absent = tmp_path / "vgg16-397923af.pth"
    assert main(["train", "--cpr-features", f"vgg16:{absent}", "--steps", "1",
                 "--out-dir", str(tmp_path / "run")]) == 2  # fmt: skip
    line = one_line_error(capsys, "VGG16 weights file")
    assert "not found. Download torchvision's VGG16 weights from https://" in line
    assert not (tmp_path / "run").exists()


def test_a_binary_config_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_bytes(bytes(range(256)))
    assert main(["train", "--config", str(config), "--out-dir", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "expected --config to be a JSON file")
    config.write_text("[" * 100_000)
    assert main(["train", "--config", str(config), "--out-dir", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "nested too deeply")


def test_seeds_beyond_64_bits_are_refused_in_one_line(tmp_path, images, capsys):
    assert train(tmp_path / "run", 1, "--seed", str(2**70)) == 2
    one_line_error(capsys, "expected seed to be an integer in [0, 9223372036854775807]")
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "x.pt", "--data", str(images), "--seed", str(2**70)])
    assert "expected a seed in [0, 2**63 - 1]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_diverged_record_is_valid_json(tmp_path):
    data = PoisonedAfter(SyntheticDataset(photos(), crop_size=16), after=1)
    trainer = small_trainer(tmp_path / "run", data, steps=3)
    with pytest.raises(RuntimeError, match="diverged"):
        trainer.fit()
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=pytest.fail) for line in lines]
    assert records[-1]["diverged"]["l1"] == "nan"


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_the_trainer_refuses_a_model_it_would_feed_another_dtype(tmp_path, dtype):
    model = SparsePromptIR("tiny").to(dtype)
    with pytest.raises(InputError, match=f"float32 parameters .* got {dtype}; call model.float"):
        Trainer(small_config(tmp_path / "run"), model=model)


@pytest.mark.filterwarnings("ignore:SyntheticDataset. skipping")
def test_training_images_have_the_same_budget(images, tmp_path, capsys):
    argv = ["train", "--data", str(images), "--steps", "1", "--crop", "16", "--val-crop", "16",
            "--out-dir", str(tmp_path / "run")]  # fmt: skip
    assert main([*argv, "--max-pixels", "100"]) == 2
    # the images are read once training starts: its first line, then the error in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("training SparsePromptIR") and len(err) == 2
    assert "at most 100 pixels" in err[1] and "18 x 20 pixels (width x height)" in err[1]
    with pytest.raises(InputError, match="max_pixels"):
        TrainConfig(max_pixels=0).validate()
