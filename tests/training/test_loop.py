"""Training end to end on small Fashion-MNIST-format files: exits learn, checkpoints resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bofexits._io import RunLock, RunLockedError, UnwritableOutputError
from bofexits.config import TrainConfig
from bofexits.errors import CheckpointError, ConfigError
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.loop import train


def test_exits_learn_and_checkpoint_is_complete(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=2)
    result = train(cfg, tmp_path / "run", progress=False)
    before, after = result.history[0]["val_acc"], result.history[-1]["val_acc"]
    # k-means-initialised BoF exits learn on a frozen backbone (chance is 0.1) ...
    assert len(after) == 4 and all(a > 0.3 for a in after[:-1]), after
    assert sum(after[:-1]) > sum(before[:-1]) + 0.3, (before, after)  # and they improved on their init
    assert after[-1] == before[-1]  # ... and the frozen final exit does not move
    data = load_checkpoint(result.checkpoint)
    assert data["complete"] and data["epoch"] == 3 and set(data["calibration"]) >= {"max_logit", "max_prob"}
    model, cals, cfg = load_model(result.checkpoint)
    assert cfg.exit_epochs == 2 and cals["max_logit"].means.shape == (3,)
    assert (tmp_path / "run" / "config.json").exists()


def test_joint_training_lowers_the_loss(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    result = train(tiny_config(fake_data, epochs=2, lr=1e-2), tmp_path / "run", progress=False)
    assert result.history[1]["loss"] < result.history[0]["loss"]


def test_interrupted_run_resumes_to_the_same_weights(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = tiny_config(fake_data, epochs=2)
    straight = train(cfg, tmp_path / "a", progress=False)

    def interrupt(epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False, on_epoch=interrupt)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=k)


def test_resume_with_another_config_is_refused(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    train(tiny_config(fake_data, epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match="different config"):
        train(tiny_config(fake_data, epochs=1, lr=1e-2), tmp_path / "r", resume=True, progress=False)


def test_two_phase_and_frozen_modes(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    two = train(
        tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1), tmp_path / "two", progress=False
    )
    assert [h["phase"] for h in two.history] == ["backbone", "exits"]
    frozen = train(
        tiny_config(fake_data, mode="frozen", epochs=1, backbone_checkpoint=str(two.checkpoint)),
        tmp_path / "frozen",
        progress=False,
    )
    for a, b in zip(
        two.model.stages.state_dict().values(), frozen.model.stages.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)  # the backbone did not move


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"mode": "sideways"}, "key .mode. expects one of"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"exit_weights": [1.0, 1.0]}, "exit_weights"),
        ({"mode": "frozen"}, "backbone-checkpoint"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
    ],
)
def test_bad_options_are_refused(
    fake_data: Path,
    tmp_path: Path,
    tiny_config: Callable[..., TrainConfig],
    overrides: dict[str, object],
    match: str,
) -> None:
    with pytest.raises(ConfigError, match=match):
        train(tiny_config(fake_data, **overrides), tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_a_second_run_on_a_locked_folder_is_refused(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    with RunLock(tmp_path / "run"), pytest.raises(RunLockedError, match="in use by process"):
        train(tiny_config(fake_data, epochs=1), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_removes_temp_files_of_an_interrupted_checkpoint_write(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = tiny_config(fake_data, epochs=2)

    def interrupt(epoch: int) -> None:
        (tmp_path / "b" / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # as kill -9 leaves
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False, on_epoch=interrupt)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    assert not list((tmp_path / "b").glob("*.tmp")) and not list((tmp_path / "b").glob(".*.tmp"))


def test_out_that_is_a_file_is_refused_before_any_work(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(UnwritableOutputError, match="is a file, not a folder"):
        train(tiny_config(fake_data, epochs=1), tmp_path / "taken", progress=False)


def test_a_dataset_without_test_images_is_refused(
    tmp_path: Path, tiny_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bofexits.data import ImageDataset
    from bofexits.errors import DataError
    from bofexits.training import splits

    def no_test(cfg: TrainConfig, root: object) -> tuple[ImageDataset, ImageDataset]:
        images = torch.zeros(20, 1, 28, 28, dtype=torch.uint8)
        train = ImageDataset(images, torch.arange(20) % 10, tuple("abcdefghij"), [0.5], [0.25], "t/train")
        return train, train.subset(torch.arange(0))

    monkeypatch.setattr(splits, "_load_run_data", no_test)
    with pytest.raises(DataError, match="test split has no images"):
        train(tiny_config(tmp_path, epochs=1), tmp_path / "run", progress=False)


def _outputs(seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outs = [torch.randn(8, 5, generator=g, requires_grad=True) for _ in range(4)]
    return outs, torch.randint(0, 5, (8,), generator=g)


@pytest.mark.parametrize("phase", ["joint", "exits"])
def test_self_distillation_adds_a_kl_term_to_the_early_exits_only(phase: str) -> None:
    from torch.nn import functional as F

    from bofexits.training.loss import loss as _loss

    outs, y = _outputs()
    weights = [1.0, 1.0, 1.0, 1.0]
    plain = _loss(outs, y, weights, phase)
    assert torch.equal(plain, _loss(outs, y, weights, phase, distill=0.0, temperature=3.0))
    # distill = 1: an early exit learns only the final exit's softened outputs; KL(p || p) = 0.
    same = [outs[-1]] * 4
    loss = _loss(same, y, weights, phase, distill=1.0, temperature=2.0)
    want = F.cross_entropy(outs[-1], y) / 4 if phase == "joint" else torch.tensor(0.0)
    torch.testing.assert_close(loss, want)
    # The teacher is detached: distillation sends no gradient into the final classifier.
    outs, y = _outputs(1)
    _loss(outs, y, weights, "joint", distill=1.0, temperature=2.0).backward()
    final_grad = outs[-1].grad
    outs2 = [o.detach().clone().requires_grad_() for o in outs]
    (F.cross_entropy(outs2[-1], y) / 4).backward()
    torch.testing.assert_close(final_grad, outs2[-1].grad)


def test_distillation_settings_are_checked(fake_data: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    from bofexits.config import check_ranges

    for key, value in (("distill", 1.5), ("distill", float("nan")), ("distill_temperature", 0.0)):
        cfg = tiny_config(fake_data, **{key: value})
        with pytest.raises(ConfigError, match=key):
            check_ranges(cfg)
