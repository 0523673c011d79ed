"""The third round of careless and hostile inputs: each ends in one line naming the problem.

Images whose name says another format, CMYK files, EXIF orientation, WebP headers and the
machine's memory as the last bound; seeds at their maximum; devices that hold no data; wrapped,
scripted and nested modules given to add_prompts; paths that are folders or pipes; weights in
safetensors given to the PyTorch readers.
"""

import copy
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from contrastive_prompts import InputError, InputTypeError, add_prompts
from contrastive_prompts.app import data as Dt
from contrastive_prompts.app.checkpoints import load_checkpoint_model, load_promptir
from contrastive_prompts.app.config import MAX_SEED, TrainConfig
from contrastive_prompts.app.data import images as image_files
from contrastive_prompts.app.files import CheckpointError, file_problem, read_weights, safe_load
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.core.features import VGG16Features


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def pattern(height: int = 6, width: int = 10) -> Image.Image:
    """An RGB image whose every pixel differs: any flip or turn of it is another image."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rgb = torch.stack([x * 25, y * 40, (x + 3 * y) % 7 * 30]).permute(1, 2, 0)
    return Image.fromarray(rgb.to(torch.uint8).numpy(), "RGB")


# -- image files -------------------------------------------------------------------------------


def test_a_file_named_as_another_format_is_refused_with_both_named(tmp_path):
    path = tmp_path / "photo.png"
    pattern().save(path, format="JPEG")
    with pytest.raises(InputError) as error:
        Dt.read_image(path)
    message = one_line(error)
    assert "a JPEG file (its first bytes say so) named as PNG" in message
    assert "rename it to .jpg" in message and str(path) in message
    os.replace(path, tmp_path / "photo.jpg")
    assert Dt.read_image(tmp_path / "photo.jpg").shape == (3, 6, 10)


@pytest.mark.parametrize("name", ["cmyk.jpg", "cmyk.tif"])
def test_cmyk_files_are_refused_as_cmyk_not_as_codec_failures(tmp_path, name):
    path = tmp_path / name
    pattern().convert("CMYK").save(path)
    for read in (Dt.read_image, Dt.check_image_file):
        with pytest.raises(InputError) as error:
            read(path)
        assert "CMYK is not supported" in one_line(error) and str(path) in str(error.value)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_exif_orientation_makes_the_photo_upright_as_pillow_shows_it(tmp_path, fmt, orientation):
    path = tmp_path / ("photo.jpg" if fmt == "JPEG" else "photo.tif")
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    pattern().save(path, format=fmt, exif=exif, **options)
    with Image.open(path) as stored:
        upright = torch.from_numpy(
            np.asarray(ImageOps.exif_transpose(stored).convert("RGB")).copy()
        )
    expected = upright.permute(2, 0, 1).float() / 255
    image = Dt.read_image(path)
    assert image.shape == expected.shape  # 6 and 8 turn the 10 x 6 photo: 6 wide, 10 high
    assert image.is_contiguous()
    tolerance = 0 if fmt == "TIFF" else 4 / 255  # two JPEG decoders
    assert (image - expected).abs().max() <= tolerance


@pytest.mark.parametrize("options", [{"lossless": False}, {"lossless": True}, {"exif": b"Exif"}])
def test_webp_is_read_and_its_header_checked(tmp_path, options):
    path = tmp_path / "photo.webp"
    extra = {"exif": Image.Exif().tobytes()} if "exif" in options else options
    pattern(9, 14).save(path, format="WEBP", **extra)
    assert Dt.read_image(path).shape == (3, 9, 14)
    with pytest.raises(InputError, match=r"declares 14 x 9 pixels"):
        Dt.read_image(path, max_pixels=14 * 9 - 1)
    assert path in Dt.list_images(tmp_path)


def webp_declaring(path, width, height):
    """A lossy WebP whose VP8X chunk declares ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    pattern().save(buffer, format="WEBP", exif=Image.Exif().tobytes())
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8X"
    data[24:27] = (width - 1).to_bytes(3, "little")
    data[27:30] = (height - 1).to_bytes(3, "little")
    path.write_bytes(bytes(data))
    return path


def test_a_webp_bomb_is_refused_and_no_limit_still_means_what_fits(tmp_path, monkeypatch):
    path = webp_declaring(tmp_path / "bomb.webp", 16383, 16383)
    with pytest.raises(InputError, match=r"declares 16383 x 16383 pixels"):
        Dt.read_image(path)
    monkeypatch.setattr(image_files, "memory_of", lambda device: 2 * 10**9)
    with pytest.raises(InputError) as error:
        Dt.read_image(path, max_pixels=None)  # 3.2 GB as float32 RGB, on a 2 GB machine
    assert "fits in this machine's memory (2.0 GB)" in one_line(error)
    assert "3.2 GB as float32 RGB" in str(error.value)


# -- paths that are not files ------------------------------------------------------------------


def test_a_folder_or_a_pipe_is_not_called_missing(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    assert file_problem(tmp_path / "none") == "not found"
    assert file_problem(tmp_path) == "is a folder, not a file"
    assert file_problem(pipe) == "is not a regular file (a pipe, socket or device)"
    for path, words in ((tmp_path, "is a folder"), (pipe, "is not a regular file")):
        for read in (safe_load, load_checkpoint_model):
            with pytest.raises(CheckpointError, match=words):
                read(path)
        with pytest.raises(CheckpointError, match=words):
            read_weights(path)
    with pytest.raises(InputError, match="is not a regular file"):
        Dt.image_paths([pipe])
    with pytest.raises(InputError, match=r"expected an existing folder or file, got .*: not found"):
        Dt.SyntheticDataset([tmp_path / "none.png"])


def test_the_pytorch_readers_call_a_safetensors_file_what_it_is(tmp_path):
    from safetensors.torch import load_file

    save_file({"w": torch.arange(4.0)}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as error:
        safe_load(tmp_path / "w.safetensors")
    assert "is a safetensors file" in one_line(error) and "load_file" in str(error.value)
    assert "corrupt" not in str(error.value)
    # the reader of weights files reads either kind, by what the file holds, not by its name
    save_file({"w": torch.arange(4.0)}, tmp_path / "w.pth")
    torch.save({"w": torch.arange(4.0)}, tmp_path / "w.safetensors.pt")
    for name in ("w.safetensors", "w.pth", "w.safetensors.pt"):
        assert torch.equal(read_weights(tmp_path / name)["w"], torch.arange(4.0))
    with pytest.raises(InputError, match=r"expected torchvision VGG16 weights; missing"):
        VGG16Features(load_file(tmp_path / "w.safetensors"))  # read, then found other tensors


def test_load_promptir_checks_its_argument_before_building_the_model():
    with pytest.raises(InputTypeError, match="expected checkpoint to be a path or a state dict"):
        load_promptir([1, 2], top_k=1)


# -- configuration and devices -----------------------------------------------------------------


def test_the_largest_seed_trains(tmp_path):
    config = TrainConfig(seed=MAX_SEED, steps=1, batch_size=1, crop=16, val_crop=16,
                         num_negatives=1, out_dir=str(tmp_path / "run"))  # fmt: skip
    assert len(Trainer(config).fit()) == 1


def test_a_device_without_data_and_a_trainer_without_a_config_are_refused():
    with pytest.raises(InputError, match=r"expected a device that holds data .* got 'meta'"):
        Trainer(TrainConfig(device="meta"))
    with pytest.raises(InputTypeError, match="expected config to be a TrainConfig, got str"):
        Trainer("config")
    for out_dir in ("", "  "):
        with pytest.raises(InputError, match="expected out_dir to name a folder"):
            TrainConfig(out_dir=out_dir).validate()


# -- add_prompts on what it cannot change ------------------------------------------------------


def plain() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 1))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_add_prompts_refuses_scripted_traced_and_wrapped_models():
    x = torch.rand(1, 3, 8, 8)
    for model in (torch.jit.script(plain()), torch.jit.trace(plain(), x)):
        with pytest.raises(InputError, match=r"expected an eager nn\.Module"):
            add_prompts(model, {"0": {"dim": 8}})
    for wrapped in (AveragedModel(plain()), nn.DataParallel(plain())):
        keys = list(wrapped.state_dict())
        with pytest.raises(InputError, match=f"wrapped in {type(wrapped).__name__}"):
            add_prompts(wrapped, {"module.0": {"dim": 8}})
        assert list(wrapped.state_dict()) == keys


def test_add_prompts_refuses_a_part_of_a_prompt_layer():
    model = add_prompts(plain(), {"0": {"dim": 8}})
    keys = list(model.state_dict())
    for name in ("0.prompt_stage.fusion.proj", "0.prompt_stage.prompt.conv"):
        with pytest.raises(InputError, match=r"part of the prompt layer '0\.prompt_stage"):
            add_prompts(model, {name: {"dim": 12}})
    assert list(model.state_dict()) == keys
    copy.deepcopy(model)(torch.rand(1, 3, 8, 8))


# -- sizes: checked before allocating, or one line when the allocator refuses -----------------


def test_sizes_that_cannot_fit_are_refused_before_anything_is_allocated():
    from contrastive_prompts import PromptStage, SparsePrompt, SparsePromptIR

    cases = [
        (lambda: SparsePrompt(dim=8, prompt_dim=8, prompt_size=100_000), "prompt_size=100000"),
        (lambda: PromptStage(dim=100_000), "dim=100000"),
        (lambda: SparsePromptIR("tiny", dim=100_000), "dim=100000"),
        (lambda: add_prompts(plain(), {"0": {"dim": 8, "num_prompts": 10**9}}), "num_prompts"),
    ]
    for build, sizes in cases:
        with pytest.raises(InputError) as error:
            build()
        assert "expected a module that fits in the memory of cpu" in one_line(error)
        assert sizes in str(error.value)
    with pytest.raises(InputError, match=r"num_blocks\[3\] to be an integer in \[0, 64\]"):
        SparsePromptIR("tiny", num_blocks=(1, 1, 1, 10**6))


def test_bounds_of_negatives_and_padding_hold_everywhere_they_are_set(tmp_path, capsys):
    from contrastive_prompts import CPLObjective
    from contrastive_prompts.app.cli import main
    from contrastive_prompts.app.metrics import evaluate
    from contrastive_prompts.reference.padding import pad_to_multiple

    with pytest.raises(InputError, match=r"num_negatives to be an integer in \[1, 64\]"):
        CPLObjective(num_negatives=100_000)
    with pytest.raises(InputError, match=r"num_negatives to be an integer in \[1, 64\]"):
        TrainConfig(num_negatives=65).validate()
    with pytest.raises(InputError, match=r"val_pad_multiple to be an integer in \[1, 256\]"):
        TrainConfig(val_pad_multiple=100_000).validate()  # before training, not after it
    with pytest.raises(InputError, match=r"multiple to be an integer in \[1, 256\]"):
        pad_to_multiple(torch.rand(1, 3, 8, 8), 2048)
    with pytest.raises(InputError, match=r"pad_multiple to be an integer in \[1, 256\]"):
        evaluate(nn.Identity(), [(torch.rand(3, 8, 8), torch.rand(3, 8, 8), 0)], pad_multiple=2048)
    with pytest.raises(SystemExit):
        main(
            ["evaluate", "--checkpoint", "x.pt", "--data", str(tmp_path), "--pad-multiple", "2048"]
        )
    assert "expected a multiple in [1, 256], got 2048" in capsys.readouterr().err


def test_a_crop_of_mostly_padding_is_refused_when_the_data_is_made(tmp_path):
    for name in ("a", "b"):
        Dt.write_image(tmp_path / f"{name}.png", torch.rand(3, 48, 40))
    for images in (tmp_path, [torch.rand(3, 48, 40)]):
        expected = r"at most twice the longest side of the images \(2 x 48\), got 97"
        with pytest.raises(InputError, match=expected):
            Dt.SyntheticDataset(images, crop_size=97)
        Dt.SyntheticDataset(images, crop_size=96)  # padded: a warning when read


def test_a_step_the_allocator_refuses_is_one_line_and_the_checkpoint_stays(tmp_path, monkeypatch):
    from .test_safety import small_trainer

    trainer = small_trainer(tmp_path / "run", steps=3, save_every=1)

    def refuse(*args, **kwargs):
        if trainer.step == 2:
            raise RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 9830400000 bytes"
            )
        return real(*args, **kwargs)

    real = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", refuse)
    with pytest.raises(InputError) as error:
        trainer.fit()
    message = one_line(error)
    assert "expected a training step that fits in the memory of cpu" in message
    assert "at step 3" in message and "--batch-size" in message
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


def test_the_final_checkpoint_is_written_before_the_final_validation(tmp_path, monkeypatch):
    from .test_safety import small_trainer

    trainer = small_trainer(tmp_path / "run", steps=2, save_every=100, val_every=0)

    def fail() -> None:
        raise RuntimeError("validation failed")

    monkeypatch.setattr(trainer, "validate", fail)
    with pytest.raises(RuntimeError, match="validation failed"):
        trainer.fit()
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


# -- output paths and temporary files ----------------------------------------------------------


def test_an_output_path_that_is_a_folder_or_lies_under_a_file_is_one_line(tmp_path):
    from contrastive_prompts.app.files import make_folder, writing

    (tmp_path / "file").write_text("mine")
    with pytest.raises(InputError, match=r"expected a file to write, got .*, which is a folder"):
        with writing(tmp_path):
            pass
    with pytest.raises(InputError, match=r"expected the folder of .* to exist, got .*: a file"):
        with writing(tmp_path / "file" / "x.json"):
            pass
    with pytest.raises(InputError, match=r"to be a folder \(made if missing\), got .*file'"):
        make_folder(tmp_path / "file" / "deeper" / "run", "out_dir")
    with pytest.raises(InputError, match="which is a file"):
        Trainer(TrainConfig(out_dir=str(tmp_path / "file" / "run"), steps=1)).fit()
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
            "writing file data/3: file write failed"
        ),
        Exception(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
            '"No space left on device" })'
        ),
    ],
)
def test_a_full_disk_is_said_in_one_line_and_the_old_file_is_kept(tmp_path, failure):
    from contrastive_prompts.app.files import writing

    target = tmp_path / "last.pt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(OSError) as error:
        with writing(target) as temporary:
            temporary.write_bytes(b"half")
            raise failure
    assert error.value.errno == 28 and "the disk that holds it is full" in one_line(error)
    assert "the file there is as it was" in str(error.value)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("name", ["last.pt", "model.safetensors", "table.json", "README"])
def test_the_leftover_check_of_the_tests_finds_a_writers_temporary(tmp_path, name):
    from contrastive_prompts.app.files import writing

    from .leftovers import temporaries

    (tmp_path / "sub").mkdir()
    target = tmp_path / "sub" / name
    with writing(target) as temporary:
        assert temporaries(tmp_path) == [temporary]  # the check the tests make can fail
    assert target.exists() and not temporaries(tmp_path)


def test_temporaries_of_writers_that_died_are_removed_and_no_other_file(tmp_path):
    import subprocess
    import sys

    from contrastive_prompts.app import files as _files

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    token, host = "0123456789abcdef", _files._HOST
    dead = tmp_path / f".last.pt.{token}-{host}-{gone.pid}.partial.pt"
    running = tmp_path / f".last.pt.{token}-{host}-{os.getpid()}.partial.pt"
    reused = tmp_path / f".a.png.{token}-{host}-{os.getpid()}.partial.png"
    elsewhere = tmp_path / f".b.png.{token}-ffffff-{gone.pid}.partial.png"
    mine = [tmp_path / ".a0.partial.png", tmp_path / ".a0.png.partial", tmp_path / "a.png"]
    for path in (dead, running, reused, elsewhere, *mine):
        path.write_bytes(b"x")
    os.utime(reused, (0, 0))  # written before this process started: its id was reused
    if elsewhere.name.split("-")[1] == host:
        pytest.skip("this machine's name hashes to ffffff")
    removed = _files.remove_stale(tmp_path)
    assert sorted(removed) == sorted([dead, reused])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (running, elsewhere, *mine)
    )


def test_a_restore_and_a_training_clear_what_a_killed_writer_left(tmp_path):
    import subprocess
    import sys

    from contrastive_prompts.app import files as _files

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = tmp_path / "run"
    run.mkdir()
    left = run / f".last.pt.0123456789abcdef-{_files._HOST}-{gone.pid}.partial.pt"
    left.write_bytes(b"half a checkpoint")
    from .test_safety import small_trainer

    small_trainer(run, steps=1).fit()
    assert not left.exists() and (run / "last.pt").exists()


def test_restore_names_an_output_folder_under_a_file_before_loading_anything(tmp_path, capsys):
    from contrastive_prompts.app.cli import main

    Dt.write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    (tmp_path / "file").write_text("mine")
    argv = ["restore", "--checkpoint", str(tmp_path / "none.pt"), str(tmp_path / "a.png"),
            "--output", str(tmp_path / "file" / "sub")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "expected the output folder" in err and "which is a file" in err and "\n" not in err
    assert (tmp_path / "file").read_text() == "mine"


def test_validation_measures_the_prompts_on_centres_no_larger_than_the_crop(tmp_path, monkeypatch):
    """The prompt-effect part of validation runs the network several times an image: bounded."""
    from contrastive_prompts.app import train as train_module

    from .test_safety import small_trainer

    seen: list[tuple[int, ...]] = []
    real = train_module.measure_effect

    def spy(model, batches, **kwargs):
        def watched():
            for degraded, clean, labels in batches():
                seen.append(tuple(degraded.shape))
                yield degraded, clean, labels

        return real(model, watched, **kwargs)

    monkeypatch.setattr(train_module, "measure_effect", spy)
    trainer = small_trainer(tmp_path / "run", steps=1, val_crop=48)  # three times the crop
    trainer.fit()
    assert seen and all(shape[-2] <= 16 and shape[-1] <= 16 for shape in seen), seen
    assert "swap_cost" in trainer.validations[-1]
