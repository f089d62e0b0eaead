"""Training on two processes (torchrun, gloo on loopback) against one process.

The comparisons train exits on a frozen backbone (two-phase mode with no backbone epochs):
BatchNorm is in eval mode there, so two ranks with half batches compute exactly the
single-process gradients and the weights agree to float rounding (atol 1e-5). In phases that
train BatchNorm each rank normalises by its own half batch (SyncBatchNorm needs GPUs), so those
runs agree with one process only approximately; docs/distributed.md says so.
The multi-process tests start torchrun (a few seconds each on a busy machine; generous timeouts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bofexits._io import write_json
from bofexits.config import TrainConfig
from bofexits.errors import ConfigError
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.distributed import World, check_batch_size, interleave, shard
from bofexits.training.loop import train

WORKER = Path(__file__).with_name("ddp_worker.py")
ATOL = 1e-5  # float sums in another order: the gradient is summed over two ranks, not one batch


def _torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _worker(
    tmp_path: Path, out: Path, configs: list[TrainConfig], **spec: object
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.json"
    path.write_text(json.dumps({"configs": [c.to_dict() for c in configs], "out": str(out), **spec}))
    return _torchrun(str(WORKER), str(path))


def _cli_train_on_two(cfg: TrainConfig, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc-per-node 2 -m bofexits train --config ... --out tmp_path/two`, which must succeed."""
    write_json(tmp_path / "cfg.json", cfg.to_dict())
    done = _torchrun(
        "-m", "bofexits", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "two")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _exits_only(tiny_config: Callable[..., TrainConfig], data: Path, epochs: int) -> TrainConfig:
    """Exits trained on a frozen (random) backbone: BatchNorm in eval mode, results exact."""
    return tiny_config(data, mode="two-phase", epochs=0, exit_epochs=epochs)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = ATOL) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_shard_is_distributed_samplers_split_and_interleave_undoes_it() -> None:
    order = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    parts = [shard(order, World(r, 3)) for r in range(3)]
    assert [p.tolist() for p in parts] == [
        order[r::3].tolist() for r in range(3)
    ]  # DistributedSampler's r::world
    assert torch.equal(interleave(parts), order)
    assert shard(order, World()) is order


def test_batch_size_must_split_over_the_ranks_and_fit_the_data() -> None:
    check_batch_size(7, 5, World())  # one process: anything goes, as before
    with pytest.raises(ConfigError, match="multiple of 2"):
        check_batch_size(31, 100, World(0, 2))
    with pytest.raises(ConfigError, match="larger than the 100 training images"):
        check_batch_size(128, 100, World(0, 2))


@pytest.mark.distributed
def test_two_processes_train_the_same_weights_as_one(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = _exits_only(tiny_config, fake_data, 2)
    one = train(cfg, tmp_path / "one", progress=False)
    done = _cli_train_on_two(cfg, tmp_path)
    assert done.stdout.count("checkpoint:") == 1  # rank 0 alone reports
    two, cals, _ = load_model(tmp_path / "two" / "checkpoint.pt")
    data = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert data["complete"] and not any(k.startswith("module.") for k in data["model"])
    _assert_same_weights(one.model, two)
    assert torch.tensor([h["val_acc"] for h in data["history"]]).flatten().tolist() == pytest.approx(
        torch.tensor([h["val_acc"] for h in one.history]).flatten().tolist()
    )
    torch.testing.assert_close(cals["max_prob"].means, one.calibrations["max_prob"].means, atol=ATOL, rtol=0)


@pytest.mark.distributed
def test_a_rank_left_without_images_in_the_last_batch_still_steps_with_the_others(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """261 training images in batches of 20: the last batch has one image, rank 1 none.

    A one-image AdamW step amplifies float rounding (one process on 1 vs 2 threads differs by
    1e-3 here), hence one epoch and a looser tolerance than the exact comparison above.
    """
    cfg = _exits_only(tiny_config, fake_data, 1)
    cfg.limit_train, cfg.batch_size = 290, 20
    one = train(cfg, tmp_path / "one", progress=False)
    _cli_train_on_two(cfg, tmp_path)
    two, _, _ = load_model(tmp_path / "two" / "checkpoint.pt")
    _assert_same_weights(one.model, two, atol=2e-3)


@pytest.mark.distributed
def test_two_processes_train_a_network_whose_batchnorm_learns(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """Backbone and fine-tuning phases: BatchNorm trains on each rank's half batch, so the result is
    close, not equal; fine-tuning's teacher runs on each rank's rows as the network does."""
    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1, finetune_epochs=1)
    one = train(cfg, tmp_path / "one", progress=False)
    _cli_train_on_two(cfg, tmp_path)
    data = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert data["complete"] and [h["phase"] for h in data["history"]] == ["backbone", "exits", "finetune"]
    two_loss = [h["loss"] for h in data["history"]]
    assert two_loss == pytest.approx([h["loss"] for h in one.history], rel=0.2)
    bn = [k for k in data["model"] if k.endswith("running_mean")]
    assert bn and all(torch.isfinite(data["model"][k]).all() for k in bn)


@pytest.mark.distributed
def test_resume_across_world_sizes_one_two_one(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = _exits_only(tiny_config, fake_data, 3)
    straight = train(cfg, tmp_path / "straight", progress=False)

    def stop_after_first(epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, on_epoch=stop_after_first)
    done = _worker(tmp_path, tmp_path / "run", [cfg], resume=True, stop_after=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2
    resumed = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    _assert_same_weights(straight.model, resumed.model)


@pytest.mark.distributed
def test_a_failing_rank_fails_the_job_naming_it_and_keeps_the_checkpoint(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = _exits_only(tiny_config, fake_data, 3)
    done = _worker(tmp_path, tmp_path / "run", [cfg], fail=[1, 1])
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "rank 1 of 2 failed: RuntimeError: injected fault after epoch 1" in log, log[-3000:]
    assert "injected fault" in log.split("Root Cause", 1)[-1]  # torchrun's summary names the cause
    model, _, _ = load_model(tmp_path / "run" / "checkpoint.pt")  # the last whole checkpoint loads
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


@pytest.mark.distributed
def test_a_hung_rank_fails_the_job_after_the_timeout_instead_of_hanging_it(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = _exits_only(tiny_config, fake_data, 3)
    t0 = time.monotonic()
    done = _worker(tmp_path, tmp_path / "run", [cfg], hang=[1, 1], timeout=5)
    assert done.returncode != 0
    assert time.monotonic() - t0 < 120  # the hour-long sleep was cut short by rank 0's timeout
    assert "rank 0 of 2 failed" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


@pytest.mark.distributed
def test_ranks_with_different_configs_are_refused(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = _exits_only(tiny_config, fake_data, 1)
    other = _exits_only(tiny_config, fake_data, 1)
    other.lr = 1e-2
    done = _worker(tmp_path, tmp_path / "run", [cfg, other])
    assert done.returncode != 0
    assert "ranks 1 have a different config from rank 0" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
