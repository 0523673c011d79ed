"""What only a GPU has: float16 / bfloat16 autocast, the trainer on CUDA, NCCL.

The modules themselves run on CUDA through the ``device`` fixture (tests/test_modules.py and
the other module tests); these are skipped without a CUDA device.
"""

import socket

import pytest
import torch
import torch.distributed as dist

from contrastive_prompts import CPLObjective, SparsePrompt, SparsePromptIR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prompt_layer_autocast_matches_float32(dtype):
    torch.manual_seed(0)
    layer = SparsePrompt(dim=96, prompt_dim=64, prompt_size=64).cuda()
    x = torch.rand(4, 96, 64, 64, device="cuda")
    reference = layer(x)
    with torch.autocast("cuda", dtype=dtype):
        low = layer(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpl_step_under_autocast_is_finite(dtype):
    torch.manual_seed(0)
    model = SparsePromptIR("small").cuda()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    degraded, clean = (
        torch.rand(4, 3, 64, 64, device="cuda"),
        torch.rand(4, 3, 64, 64, device="cuda"),
    )
    for _ in range(3):
        with torch.autocast("cuda", dtype=dtype):
            parts = CPLObjective(num_negatives=4)(model, degraded, clean)
        optimiser.zero_grad()
        scaler.scale(parts.loss).backward()
        scaler.step(optimiser)
        scaler.update()
        assert torch.isfinite(parts.loss) and torch.isfinite(parts.cpr)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_trainer_on_cuda(tmp_path, precision):
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.app.train import Trainer

    config = TrainConfig(steps=3, batch_size=2, crop=32, val_crop=64, precision=precision,
                         device="cuda", out_dir=str(tmp_path))  # fmt: skip
    history = Trainer(config).fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)


def test_nccl_process_group_and_ddp_step(tmp_path, monkeypatch):
    if not dist.is_nccl_available():
        pytest.skip("this build of PyTorch has no NCCL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    from contrastive_prompts.app.config import TrainConfig
    from contrastive_prompts.app.train import Trainer

    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        total = torch.ones(1, device="cuda")
        dist.all_reduce(total)
        assert total.item() == 1
        trainer = Trainer(TrainConfig(steps=2, batch_size=2, crop=32, val_crop=32,
                                      device="cuda", out_dir=str(tmp_path)))  # fmt: skip
        trainer.step_module = torch.nn.parallel.DistributedDataParallel(
            trainer.step_module, device_ids=[0]
        )
        history = trainer.fit()
        assert len(history) == 2 and (tmp_path / "last.pt").is_file()
    finally:
        dist.destroy_process_group()
