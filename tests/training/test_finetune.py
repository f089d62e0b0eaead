"""Joint fine-tuning, the third phase: what it trains, what it distils from, and how it resumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bofexits.cli import main
from bofexits.config import TrainConfig
from bofexits.errors import CheckpointError, ConfigError
from bofexits.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from bofexits.training.loop import train
from bofexits.training.loss import loss, phases
from bofexits.training.teacher import make_teacher, teacher_logits


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=lambda m, k=k: f"{k}: {m}")


def test_fine_tuning_epochs_come_after_the_frozen_backbone_phases() -> None:
    two = TrainConfig(mode="two-phase", epochs=2, exit_epochs=1, finetune_epochs=2)
    assert phases(two) == ["backbone", "backbone", "exits", "finetune", "finetune"]
    frozen = TrainConfig(mode="frozen", epochs=1, finetune_epochs=1, backbone_checkpoint="x.pt")
    assert phases(frozen)[-1] == "finetune" and phases(frozen).count("finetune") == 1


def test_joint_mode_with_fine_tuning_is_refused(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    with pytest.raises(ConfigError, match="joint mode already trains"):
        train(tiny_config(fake_data, mode="joint", finetune_epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="finetune_weights needs 4"):
        cfg = tiny_config(fake_data, mode="two-phase", epochs=0, exit_epochs=0, finetune_epochs=1)
        cfg.finetune_weights = [1.0, 1.0]
        train(cfg, tmp_path / "w", progress=False)


def test_the_final_exit_learns_from_the_teacher_by_the_distillation_weight() -> None:
    gen = torch.Generator().manual_seed(0)
    outs = [torch.randn(8, 5, generator=gen) for _ in range(3)]
    y, soft = torch.randint(0, 5, (8,), generator=gen), torch.randn(8, 5, generator=gen)
    weights = [1.0, 2.0, 3.0]
    plain = loss(outs, y, weights, "finetune")
    assert plain == pytest.approx(loss(outs, y, weights, "finetune", teacher=soft, teacher_weight=0.0))
    t = 2.0
    kd = F.kl_div(
        F.log_softmax(outs[-1] / t, 1), F.log_softmax(soft / t, 1), log_target=True, reduction="batchmean"
    )
    ce = [float(F.cross_entropy(o, y)) for o in outs]
    want = (1 * ce[0] + 2 * ce[1] + 3 * (0.25 * ce[2] + 0.75 * float(kd) * t**2)) / 6
    got = loss(outs, y, weights, "finetune", temperature=t, teacher=soft, teacher_weight=0.75)
    assert float(got) == pytest.approx(want, rel=1e-5)
    # Only fine-tuning reads the teacher: the same call in joint mode is the plain loss.
    assert float(loss(outs, y, weights, "joint", teacher=soft, teacher_weight=0.75)) == pytest.approx(
        float(plain)
    )


def test_the_teacher_is_a_frozen_copy_of_the_stages(tiny_net_factory: Callable[..., torch.nn.Module]) -> None:
    net = tiny_net_factory()
    teacher = make_teacher(net)
    x = torch.randn(3, *net.input_shape, dtype=next(net.parameters()).dtype)
    net.eval()
    torch.testing.assert_close(teacher_logits(teacher, x), net.forward_backbone(x))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        next(net.stages.parameters()).add_(1.0)  # the network moves on; the teacher does not
    assert not torch.allclose(teacher_logits(teacher, x), net.forward_backbone(x))


def test_fine_tuning_trains_the_backbone_and_recalibrates(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    base = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1)
    before = train(base, tmp_path / "base", progress=False)
    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1, finetune_epochs=1)
    after = train(cfg, tmp_path / "ft", progress=False)
    assert [h["phase"] for h in after.history] == ["backbone", "exits", "finetune"]
    for (k, a), b in zip(before.model.state_dict().items(), after.model.state_dict().values(), strict=True):
        if k.startswith("stages.") and a.is_floating_point() and "running" not in k:
            assert not torch.equal(a, b) or k.endswith("num_batches_tracked"), f"{k} did not train"
    data = load_checkpoint(after.checkpoint)
    assert data["complete"] and data["teacher"] is None  # the teacher is not shipped with the network
    old = load_checkpoint(before.checkpoint)["calibration"]["max_prob"]
    assert data["calibration"]["max_prob"] != old  # calibrated again on the fine-tuned exits


def test_an_interrupted_fine_tuning_resumes_from_the_same_teacher(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1, finetune_epochs=2)
    straight = train(cfg, tmp_path / "a", progress=False)

    def interrupt(epoch: int) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False, on_epoch=interrupt)
    mid = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert mid["epoch"] == 3 and mid["teacher"] is not None
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    _assert_same(straight.model, resumed.model)
    # A mid-fine-tuning checkpoint without its teacher cannot resume as it was trained.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "c", progress=False, on_epoch=interrupt)
    state = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    save_checkpoint(tmp_path / "c" / "checkpoint.pt", {**state, "teacher": None})
    with pytest.raises(CheckpointError, match="no teacher"):
        train(cfg, tmp_path / "c", resume=True, progress=False)


def test_a_finished_run_is_fine_tuned_in_place_by_resuming_it(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """`train --resume --finetune-epochs N` on a finished run equals training with N from the start."""
    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1, finetune_epochs=1)
    straight = train(cfg, tmp_path / "a", progress=False)
    train(tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1), tmp_path / "b", progress=False)
    extended = train(cfg, tmp_path / "b", resume=True, progress=False)
    _assert_same(straight.model, extended.model)
    # Other settings, or other fine-tuning settings once fine-tuning has run, are still refused.
    with pytest.raises(CheckpointError, match="only the fine-tuning settings"):
        train(
            tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=2, finetune_epochs=1),
            tmp_path / "b",
            resume=True,
            progress=False,
        )
    with pytest.raises(CheckpointError, match="before fine-tuning has begun"):
        cfg2 = tiny_config(
            fake_data, mode="two-phase", epochs=1, exit_epochs=1, finetune_epochs=1, finetune_lr=1e-2
        )
        train(cfg2, tmp_path / "b", resume=True, progress=False)


def test_the_cli_fine_tunes(fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train", "--data-dir", str(fake_data), "--mode", "two-phase", "--epochs", "1", "--exit-epochs", "1",
            "--finetune-epochs", "1", "--finetune-lr", "1e-4", "--finetune-distill", "0.25",
            "--finetune-weights", "1", "1", "1", "2", "--widths", "4", "8", "8", "16", "--codewords", "8",
            "--batch-size", "32", "--threads", "1", "--device", "cpu", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    _, _, cfg = load_model(out / "checkpoint.pt")
    assert (cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_distill) == (1, 1e-4, 0.25)
    assert cfg.finetune_weights == [1.0, 1.0, 1.0, 2.0]
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(fake_data),
                "--mode",
                "joint",
                "--finetune-epochs",
                "1",
                "--out",
                str(tmp_path / "j"),
            ]
        )
        == 2
    )
    assert "joint mode already trains" in capsys.readouterr().err


def test_a_torchvision_backbone_is_fine_tuned_through_attach(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """A `tv:` backbone (cut by `bofexits.attach`) goes through the same three phases."""
    pytest.importorskip("torchvision")
    cfg = tiny_config(fake_data, mode="two-phase", epochs=0, exit_epochs=1, finetune_epochs=1, limit_train=64)
    cfg.model = dataclasses.replace(cfg.model, backbone="tv:resnet18", widths=None)
    result = train(cfg, tmp_path / "tv", progress=False)
    assert [h["phase"] for h in result.history] == ["exits", "finetune"]
    model, cals, saved = load_model(result.checkpoint)
    assert saved.model.backbone == "tv:resnet18" and cals and model.num_exits == 4


def test_a_run_stored_before_shared_widths_existed_loads_resumes_and_exports_as_trained(
    fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """`shared_width` became the default; a stored config without the key was per-codeword."""
    import json

    from bofexits.config import resolve_config

    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1)
    cfg.model.shared_width = False
    train(cfg, tmp_path / "old", progress=False)
    ckpt = tmp_path / "old" / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    del state["config"]["model"]["shared_width"]  # as written before the key existed ...
    del state["config"]["model"]["exit_points"]  # ... and before the later one
    save_checkpoint(ckpt, state)
    stored = json.loads((tmp_path / "old" / "config.json").read_text())
    del stored["model"]["shared_width"], stored["model"]["exit_points"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(stored))
    model, _, loaded = load_model(ckpt)
    assert loaded.model.shared_width is False and model.exits.bof[0].log_sigma.numel() > 1  # type: ignore[union-attr]
    again = resolve_config(config_file=tmp_path / "old" / "config.json")
    assert again.model.shared_width is False  # its config.json rebuilds the network it trained ...
    assert resolve_config().model.shared_width is True  # ... while new runs get the default
    extended = train(
        dataclasses.replace(again, finetune_epochs=1), tmp_path / "old", resume=True, progress=False
    )
    assert [h["phase"] for h in extended.history][-1] == "finetune"
