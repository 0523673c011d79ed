import copy
import itertools
import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrastive_prompts import CPLObjective, InputError, InputTypeError, SparsePromptIR
from contrastive_prompts.app.building import (
    StepBatchSampler,
    build_data,
    build_model,
    build_objective,
    build_optimizer,
    build_step_module,
    setup_distributed,
    warmup_cosine,
)
from contrastive_prompts.app.checkpoints import CheckpointError, load_checkpoint_model
from contrastive_prompts.app.config import RECIPES, TrainConfig
from contrastive_prompts.app.train import Trainer
from contrastive_prompts.core.prompt import prompt_layers

from .leftovers import temporaries


def images(n: int = 3, size: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return list(torch.nn.functional.interpolate(low, size=size, mode="bilinear").clamp(0, 1))


def config(tmp_path, **kwargs) -> TrainConfig:
    options = dict(
        steps=6, batch_size=2, crop=24, num_negatives=2, log_every=1, save_every=100,
        warmup_steps=2, lr=1e-3, val_crop=24, out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    options.update(kwargs)
    return TrainConfig(**options)


def make_trainer(tmp_path, **kwargs) -> Trainer:
    from contrastive_prompts.app.data import SyntheticDataset, degraded_copies

    cfg = config(tmp_path, **kwargs)
    train = SyntheticDataset(images(), cfg.mix, crop_size=cfg.crop, seed=cfg.seed)
    val = degraded_copies(images(1), cfg.mix, crop=24)
    return Trainer(cfg, train_data=train, val_data=val)


def test_fit_logs_plots_and_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, val_every=3)
    history = trainer.fit()
    assert [r["step"] for r in history] == list(range(1, 7))
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    validations = [r["validation"] for r in records if "validation" in r]
    assert len(steps) == 6 and {"l1", "cpr", "lr", "steps_per_s", "expert_counts"} <= set(steps[0])
    assert [v["step"] for v in validations] == [3, 6]
    assert set(validations[0]["psnr"]) == {"noise_15", "noise_25", "noise_50", "rain", "haze"}
    # whether the prompt matters and the experts specialise, at every validation
    for v in validations:
        assert math.isfinite(v["swap_cost"]) and math.isfinite(v["negative_cost"])
        assert list(v["specialisation"]) == ["prompt3", "prompt2", "prompt1"]
        for found in v["specialisation"].values():
            assert set(found) == {"nmi", "dead", "collapsed", "separated", "experts"}
            assert len(found["experts"]) == 5  # one favourite per degradation
    assert {"routing", "balance"} <= set(steps[0])
    for name in ("loss.png", "validation.png", "experts.png", "last.pt", "config.json"):
        assert (out / name).is_file(), name
    assert not temporaries(out)  # atomic writes leave no temporary file
    # learning-rate schedule: warm-up then cosine
    assert steps[0]["lr"] < steps[1]["lr"] and steps[-1]["lr"] < steps[2]["lr"]


def interrupt_at(trainer: Trainer, step: int, monkeypatch) -> None:
    """Make ``trainer`` raise KeyboardInterrupt (as Ctrl-C does) before running ``step + 1``."""
    original = trainer.train_step

    def train_step(*args):
        if trainer.step == step:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(trainer, "train_step", train_step)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    straight = make_trainer(tmp_path / "a")
    straight.fit()
    first = make_trainer(tmp_path / "b")
    interrupt_at(first, 3, monkeypatch)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C saves a checkpoint before leaving
        first.fit()
    resumed = make_trainer(tmp_path / "b")
    resumed.load(tmp_path / "b" / "run" / "last.pt")
    assert resumed.step == 3
    rest = resumed.fit()
    assert [r["step"] for r in rest] == [4, 5, 6]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema.parameters(), straight.ema.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    trainer = make_trainer(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        trainer.load(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"cannot be read .* corrupt or truncated"):
        trainer.load(corrupt)
    trainer.save(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "good.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        trainer.load(truncated)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a contrastive_prompts training checkpoint"):
        trainer.load(tmp_path / "other.pt")
    other_model = make_trainer(tmp_path / "x", top_k=2)
    with pytest.raises(CheckpointError, match="another model \\(top_k: run 2, checkpoint 1\\)"):
        other_model.load(tmp_path / "good.pt")


def test_checkpoint_model_for_inference(tmp_path):
    trainer = make_trainer(tmp_path, steps=2)
    trainer.fit()
    model = load_checkpoint_model(tmp_path / "run" / "last.pt")
    assert not model.training
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.ema.module.eval()(x))


def test_bfloat16_training_is_finite(tmp_path):
    history = make_trainer(tmp_path, precision="bf16", steps=2).fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)


def test_bad_configs(tmp_path):
    with pytest.raises(
        InputError, match="expected precision to be one of 'fp32', 'bf16', 'fp16', got 'fp8'"
    ):
        config(tmp_path, precision="fp8").validate()
    with pytest.raises(InputError, match="expected cpr_weight=0 for a model without negatives"):
        make_trainer(tmp_path, top_k=5)
    with pytest.raises(
        InputError, match="expected cpr_features 'filters', 'pixels' or 'vgg16:<weights file>'"
    ):
        config(tmp_path, cpr_features="resnet").validate()
    with pytest.raises(InputError, match=r"expected fields among .*got \['epochs'\]"):
        TrainConfig.from_dict({"epochs": 3})


def test_recipes_validate():
    for recipe in RECIPES.values():
        recipe.validate()
    assert RECIPES["paper"].preset == "base" and RECIPES["paper"].betas == (0.9, 0.9)


def test_warmup_cosine_schedule():
    """Steps 0..109 of a 110-step run: linear warm-up to 1 at step 9, cosine to the floor at 109."""
    f = [warmup_cosine(s, warmup_steps=10, total_steps=110, floor=0.01) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] < 1.0  # the peak is used once
    assert f[59] == pytest.approx(0.505)  # half-way through the decay: floor + (1 - floor) / 2
    assert f[109] == pytest.approx(0.01)  # the last step runs at the floor
    assert all(a > b for a, b in itertools.pairwise(f[9:]))


def test_step_sampler_partitions_the_global_batch():
    whole = StepBatchSampler(10, 4, seed=1)
    ranks = [StepBatchSampler(10, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(7):
        assert whole.batch(step) == ranks[0].batch(step) + ranks[1].batch(step)
    epoch0 = [i for s in range(2) for _, i in whole.batch(s)] + [
        whole.batch(2)[0][1],
        whole.batch(2)[1][1],
    ]
    assert sorted(epoch0) == list(range(10))  # each epoch is a permutation
    later = StepBatchSampler(10, 4, seed=1, start_step=5)
    assert next(iter(later)) == whole.batch(5)


# -- distributed: 2 processes with gloo on the CPU ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_gradients(rank: int, world: int, port: int, batch, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    degraded, clean, labels = batch
    cfg = TrainConfig(
        steps=1, batch_size=2, crop=16, cpr_weight=0.0, out_dir=out_dir, grad_clip=None
    )
    trainer = Trainer(cfg, train_data=_Fixed(batch), val_data=None)
    half = slice(2 * rank, 2 * rank + 2)
    with torch.autocast("cpu", enabled=False):
        parts = trainer.step_module(degraded[half], clean[half], labels[half])
    parts.loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    torch.save(grads, f"{out_dir}/grads{rank}.pt")
    # a whole training step through the trainer: parameters stay identical on every rank
    trainer.optimizer.zero_grad()
    trainer.fit()
    torch.save(trainer.model.state_dict(), f"{out_dir}/params{rank}.pt")
    dist.destroy_process_group()


class _Fixed(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return self.batch[0].shape[0]

    def __getitem__(self, i):
        return self.batch[0][i], self.batch[1][i], self.batch[2][i]


def test_ddp_gloo_averages_gradients_like_one_process_on_the_combined_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g),
             torch.tensor([0, 1, 3, 4]))  # fmt: skip
    mp.spawn(_ddp_gradients, args=(2, _free_port(), batch, str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    single = SparsePromptIR("tiny")
    CPLObjective(weight=0.0)(single, *batch).loss.backward()  # the routing term too
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        for name, p in single.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    p0, p1 = (torch.load(tmp_path / f"params{r}.pt") for r in range(2))
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "log.jsonl").is_file()


def test_fine_tuning_starts_from_promptir_weights(tmp_path):
    from .test_model import random_promptir_state_dict

    state = random_promptir_state_dict()
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, tmp_path / "p.ckpt")
    cfg = config(tmp_path, preset="base", init_promptir=str(tmp_path / "p.ckpt"))
    trainer = Trainer(
        cfg,
        train_data=_Fixed((torch.rand(2, 3, 16, 16),) * 2 + (torch.zeros(2, dtype=torch.long),)),
    )
    assert torch.equal(trainer.model.prompt2.prompts, state["prompt2.prompt_param"][0])
    assert torch.equal(trainer.ema.module.output.weight, state["output.weight"])
    with pytest.raises(InputError, match="expected preset='base' with prompts for init_promptir"):
        config(tmp_path, init_promptir="p.ckpt").validate()


def test_validation_on_given_held_out_folders(tmp_path):
    from contrastive_prompts.app.data import SyntheticDataset, write_image

    held_out = tmp_path / "held_out"
    held_out.mkdir()
    write_image(held_out / "a.png", images(1, 32)[0])
    cfg = config(tmp_path, data=["unused-by-this-test"], val_data=[str(held_out)], steps=1)
    trainer = Trainer(cfg, train_data=SyntheticDataset(images(), cfg.mix, crop_size=24))
    assert len(trainer.val_data) == 5  # one image under each of the five 3-task degradations
    with pytest.raises(InputError, match="expected an image file or a folder, got 'nowhere'"):
        Trainer(config(tmp_path, data=[str(held_out)], val_data=["nowhere"]))


def test_bad_optimisation_options(tmp_path):
    for kwargs, message in [
        (dict(grad_clip=-1.0), "expected grad_clip to be a number >= 0, got -1.0"),
        (dict(betas=(1.5, 0.9)), r"expected betas of two numbers in \[0, 1\), got \(1.5, 0.9\)"),
        (dict(min_lr=1.0), r"expected min_lr in \[0, lr=0.001\], got 1.0"),
        (dict(weight_decay=-0.1), "expected weight_decay to be a number >= 0, got -0.1"),
        (dict(val_crop=0), "expected val_crop to be an integer >= 1, got 0"),
        (dict(chunk_size=0), "expected chunk_size to be an integer >= 1, got 0"),
    ]:
        with pytest.raises(InputError, match=message):
            config(tmp_path, **kwargs).validate()


def test_resume_refuses_other_run_options(tmp_path):
    trainer = make_trainer(tmp_path, steps=1)
    trainer.fit()
    with pytest.raises(CheckpointError, match=r"other options \(lr: run 0.002, checkpoint 0.001\)"):
        make_trainer(tmp_path, lr=2e-3).load(tmp_path / "run" / "last.pt")
    longer = make_trainer(tmp_path, steps=3)  # more steps is fine: training carries on
    longer.load(tmp_path / "run" / "last.pt")
    assert longer.step == 1


def test_epochs_reach_datasets_inside_a_concatenation():
    from contrastive_prompts.app.building import _EpochIndexed
    from contrastive_prompts.app.data import SyntheticDataset

    inner = SyntheticDataset(images(), "3task", crop_size=16)
    wrapped = _EpochIndexed(torch.utils.data.ConcatDataset([inner, inner]))
    assert not torch.equal(wrapped[(0, 1)][0], wrapped[(1, 1)][0])


def test_ctrl_c_during_the_update_is_held_until_the_step_is_whole(tmp_path, monkeypatch):
    import signal

    straight = make_trainer(tmp_path / "a")
    straight.fit()
    first = make_trainer(tmp_path / "b")
    update = first.ema.update_parameters

    def interrupted_update(model):
        if first.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-update
        update(model)

    monkeypatch.setattr(first.ema, "update_parameters", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = make_trainer(tmp_path / "b")
    resumed.load(tmp_path / "b" / "run" / "last.pt")
    assert resumed.step == 4  # the interrupted step finished before the checkpoint
    resumed.fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_network_of_ones_own_validates_on_images_of_any_size(tmp_path):
    """A network that needs even sizes and does not pad: validation pads it (to 16 by default)."""
    from contrastive_prompts import add_prompts
    from contrastive_prompts.app.data import DegradedCopies

    from .networks import PlainUNet

    torch.manual_seed(0)
    net = add_prompts(PlainUNet(), {"decoder.1": {"dim": 8, "prompt_size": 4}})
    odd = DegradedCopies([torch.rand(3, 31, 45)], "3task")
    trainer = Trainer(config(tmp_path, steps=2), model=net, val_data=odd)
    trainer.fit()
    assert trainer.validations and (tmp_path / "run" / "last.pt").is_file()
    # asked for no padding, the same network cannot take the odd size
    refused = Trainer(config(tmp_path / "b", steps=1, val_pad_multiple=1), model=net, val_data=odd)
    with pytest.raises(RuntimeError):
        refused.validate()


# -- the trainer's parts, each alone -----------------------------------------------------------


def test_setup_distributed_reads_torchrun_and_names_its_caller(tmp_path, monkeypatch):
    assert setup_distributed(config(tmp_path, device="cpu")) == (0, 1, torch.device("cpu"))
    # under torchrun, with the process group already made: the place is read, nothing is joined
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "init_process_group", pytest.fail)
    assert setup_distributed(config(tmp_path, device="cpu")) == (3, 4, torch.device("cpu"))
    with pytest.raises(InputError, match="setup_distributed: expected a device such as"):
        setup_distributed(config(tmp_path, device="gpu9"))
    with pytest.raises(InputError, match="Trainer: expected a device such as"):
        setup_distributed(config(tmp_path, device="gpu9"), where="Trainer")
    with pytest.raises(InputError, match="expected config to be a TrainConfig, got dict"):
        setup_distributed({"device": "cpu"})
    if not torch.cuda.is_available():  # "auto" is the CPU here: fp16 is refused
        with pytest.raises(InputError, match="setup_distributed: expected precision 'fp32' or"):
            setup_distributed(config(tmp_path, device="auto", precision="fp16"))


def test_build_model_is_the_trainers_model(tmp_path):
    cfg = config(tmp_path, seed=5)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, device="cpu")
    assert isinstance(model, SparsePromptIR) and model.config == SparsePromptIR("tiny").config
    trainer = make_trainer(tmp_path, seed=5)
    mine, theirs = model.state_dict(), trainer.model.state_dict()
    assert list(mine) == list(theirs)
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    plain = build_model(config(tmp_path, use_prompts=False, cpr_weight=0.0))
    assert isinstance(plain, SparsePromptIR) and not prompt_layers(plain)


def test_build_model_checks_a_network_of_ones_own(tmp_path):
    from contrastive_prompts import add_prompts

    from .networks import PlainUNet

    net = add_prompts(PlainUNet(), {"decoder.1": {"dim": 8, "prompt_size": 4}})
    assert build_model(config(tmp_path), net, device="cpu") is net
    with pytest.raises(InputTypeError, match=r"build_model: expected model to be an nn\.Module"):
        build_model(config(tmp_path), "unet")
    float64 = r"build_model: expected a model with float32 .* got torch\.float64; call model\.float"
    for model, options, message in [
        (copy.deepcopy(net).double(), {}, float64),
        (
            net,
            dict(preset="base", init_promptir="p.ckpt"),
            "build_model: expected init_promptir=None",
        ),
        (PlainUNet(), {}, "build_model: expected cpr_weight=0 for a model without negatives"),
    ]:
        with pytest.raises(InputError, match=message):
            build_model(config(tmp_path, **options), model)
    assert build_model(config(tmp_path, cpr_weight=0.0), PlainUNet()) is not None
    with pytest.raises(InputError, match="Trainer: expected a model with float32"):
        build_model(config(tmp_path), SparsePromptIR("tiny").double(), where="Trainer")
    with pytest.raises(InputError, match="TrainConfig: expected batch_size to be an integer"):
        build_model(config(tmp_path, batch_size=0))  # the config is checked before anything


def test_build_objective_follows_the_config_and_the_chunk_rule(tmp_path):
    from contrastive_prompts.core.features import FilterFeatures, PixelFeatures

    cpu = build_objective(config(tmp_path, batch_size=3), 5, "cpu")
    assert cpu.chunk_size == 3  # one decoder pass per negative on a CPU
    assert isinstance(cpu.loss.features, FilterFeatures) and cpu.num_labels == 5
    elsewhere = build_objective(config(tmp_path, batch_size=3), 5, "meta")
    assert elsewhere.chunk_size is None  # all negatives at once off the CPU
    chosen = build_objective(config(tmp_path, batch_size=3, chunk_size=5), 2, "cpu")
    assert chosen.chunk_size == 5
    options = dict(cpr_weight=0.5, num_negatives=3, cpr_mode="infonce", temperature=0.2,
                   balance_weight=0.1, use_labels=True, cpr_features="pixels")  # fmt: skip
    objective = build_objective(config(tmp_path, **options), 4, torch.device("cpu"))
    assert (objective.weight, objective.num_negatives, objective.balance_weight) == (0.5, 3, 0.1)
    assert objective.label_negatives and isinstance(objective.loss.features, PixelFeatures)
    assert (objective.loss.mode, objective.loss.temperature) == ("infonce", 0.2)
    with pytest.raises(InputError, match="build_objective: expected a device such as"):
        build_objective(config(tmp_path), 5, "gpu9")
    with pytest.raises(InputError, match="CPLObjective: expected num_labels to be an integer"):
        build_objective(config(tmp_path), 0, "cpu")


def test_build_step_module_runs_the_objective_on_the_model(tmp_path):
    torch.manual_seed(0)
    model = build_model(config(tmp_path))
    objective = build_objective(config(tmp_path), 5, "cpu")
    step = build_step_module(model, objective, "cpu")
    assert not isinstance(step, torch.nn.parallel.DistributedDataParallel)
    assert {id(p) for p in step.parameters()} == {
        id(p) for p in [*model.parameters(), *objective.parameters()]
    }
    g = torch.Generator().manual_seed(0)
    degraded, clean = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        got = step(degraded, clean, labels, generator=torch.Generator().manual_seed(1))
        expected = objective(
            model, degraded, clean, labels, generator=torch.Generator().manual_seed(1)
        )
    assert torch.equal(got.loss, expected.loss) and torch.equal(got.cpr, expected.cpr)


def test_build_optimizer_is_adamw_on_the_warmup_cosine_schedule(tmp_path):
    cfg = config(tmp_path, lr=1e-3, min_lr=1e-5, warmup_steps=3, steps=12, betas=(0.8, 0.95),
                 weight_decay=0.05)  # fmt: skip
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["params"] == list(model.parameters())
    assert (group["betas"], group["weight_decay"]) == ((0.8, 0.95), 0.05)
    rates = []
    for _ in range(cfg.steps):
        rates.append(group["lr"])
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        scheduler.step()
    factors = [warmup_cosine(s, warmup_steps=3, total_steps=12, floor=1e-2) for s in range(12)]
    assert rates == pytest.approx([1e-3 * f for f in factors], rel=1e-12)
    assert rates[0] == pytest.approx(1e-3 / 3) and rates[2] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-5)
    assert scheduler.state_dict()["lr_lambdas"] == [None]  # no function in the checkpoint
    with pytest.raises(InputError, match=r"expected min_lr in \[0, lr=0.001\], got 1.0"):
        build_optimizer(config(tmp_path, min_lr=1.0), model)


def test_build_data_defaults_and_what_is_given(tmp_path):
    from contrastive_prompts.app.data import SyntheticDataset, write_image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images(2, 40)):
        write_image(folder / f"{i}.png", image)
    cfg = config(tmp_path, data=[str(folder)])
    train, val = build_data(cfg)
    assert isinstance(train, SyntheticDataset) and len(train) == 2 and val is None
    assert train[0][0].shape == (3, 24, 24)  # crops of config.crop
    trainer = Trainer(cfg)  # the trainer's defaults are these
    assert torch.equal(trainer.train_data[1][0], train[1][0]) and trainer.val_data is None
    given = SyntheticDataset(images(), cfg.mix, crop_size=16)
    assert build_data(cfg, train_data=given)[0] is given
    _, held_out = build_data(config(tmp_path, data=[str(folder)], val_data=[str(folder)]))
    assert len(held_out) == 2 * 5 and held_out[0][0].shape == (3, 24, 24)
    _, photos = build_data(config(tmp_path), train_data=given)  # no data: held-out photos
    assert len(photos) == 2 * 5
    small = config(tmp_path, data=[str(folder)], val_data=[str(folder)], max_pixels=100)
    with pytest.raises(InputError, match=r"build_data: cannot read validation image .*0\.png"):
        build_data(small, train_data=given)
    with pytest.raises(InputError, match="Trainer: cannot read validation image"):
        build_data(small, train_data=given, where="Trainer")


def test_fit_says_what_it_does_before_the_first_step_and_how_long_one_takes(tmp_path, capsys):
    from .test_safety import small_trainer

    small_trainer(tmp_path / "run", steps=3, log_every=100).fit()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("training SparsePromptIR (") and "from step 0 to 3 on cpu" in err[0]
    assert err[1].startswith("step 1 took ") and "the 2 left take about" in err[1]
