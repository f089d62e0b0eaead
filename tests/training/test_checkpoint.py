"""Checkpoints: round trips, every way a file can be broken, architecture mismatches, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bofexits.config import ModelConfig, TrainConfig
from bofexits.errors import CheckpointError
from bofexits.models.build import build_model
from bofexits.policies import ExitCalibration
from bofexits.training import checkpoint as ckpt
from bofexits.training.checkpoint import load_checkpoint, load_model, load_state_into, save_checkpoint


def _payload() -> dict[str, Any]:
    torch.manual_seed(0)
    return {"model": nn.Linear(3, 2).state_dict(), "epoch": 4, "history": [0.5, 0.25], "note": "x"}


def _write(path: Path) -> dict[str, Any]:
    payload = _payload()
    save_checkpoint(path, payload)
    return payload


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "c.pt"  # parent folders are created
    payload = _write(path)
    data = load_checkpoint(path)
    assert data["format"] == "bofexits-checkpoint" and data["version"] == 1
    assert data["epoch"] == 4 and data["history"] == [0.5, 0.25] and data["note"] == "x"
    for k, v in payload["model"].items():
        assert torch.equal(data["model"][k], v)
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]


def test_overwrite_replaces_old_content(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _small_cfg() -> TrainConfig:
    return TrainConfig(model=ModelConfig(widths=[4, 4, 8, 8], codewords=3, num_classes=4))


def test_load_model_round_trip(tmp_path: Path) -> None:
    cfg = _small_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    cal = ExitCalibration.fit([torch.randn(20, 4) for _ in range(3)], "max_prob", torch.randint(0, 4, (20,)))
    save_checkpoint(
        tmp_path / "c.pt",
        {"config": cfg.to_dict(), "model": model.state_dict(), "calibration": {"max_prob": cal.to_dict()}},
    )
    back, cals, back_cfg = load_model(tmp_path / "c.pt")
    assert back_cfg == cfg
    assert not back.training
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for a, b in zip(model(x), back(x), strict=True):
            torch.testing.assert_close(a, b)
    assert list(cals) == ["max_prob"]
    torch.testing.assert_close(cals["max_prob"].quantiles, cal.quantiles)


def test_load_model_without_calibration(tmp_path: Path) -> None:
    cfg = _small_cfg()
    state = build_model(cfg.model).state_dict()
    save_checkpoint(tmp_path / "c.pt", {"config": cfg.to_dict(), "model": state})
    _, cals, _ = load_model(tmp_path / "c.pt")
    assert cals == {}


def test_load_model_unusable_config(tmp_path: Path) -> None:
    cfg = _small_cfg().to_dict()
    cfg["model"]["backbone"] = "nonet"
    save_checkpoint(tmp_path / "c.pt", {"config": cfg, "model": {}})
    with pytest.raises(CheckpointError, match="unusable config"):
        load_model(tmp_path / "c.pt")
    save_checkpoint(tmp_path / "d.pt", {"model": {}})  # no config at all
    with pytest.raises(CheckpointError, match="unusable config"):
        load_model(tmp_path / "d.pt")


def test_load_model_corrupt_calibration(tmp_path: Path) -> None:
    cfg = _small_cfg()
    save_checkpoint(
        tmp_path / "c.pt",
        {
            "config": cfg.to_dict(),
            "model": build_model(cfg.model).state_dict(),
            "calibration": {"max_prob": {"score": "max_prob"}},
        },
    )
    with pytest.raises(CheckpointError, match="calibration"):
        load_model(tmp_path / "c.pt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint file


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, 0.9])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "c.pt"
    _write(path)
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "data",
    [
        b"hello world, this is not a checkpoint",
        bytes(range(256)),
        bytes(255 - i for i in range(256)),
        b"\x80\x04\x95",  # a pickle header and nothing after it
        b"PK\x03\x04" + b"\x00" * 60,  # a zip header and nothing after it
    ],
)
def test_garbage_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_seeded_random_garbage(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "c.pt"
    for _ in range(20):
        data = torch.randint(0, 256, (64,), generator=g, dtype=torch.uint8).numpy().tobytes()
        if data[0] in (0x8E, 0x63, 0x93):  # opcodes covered by the xfail test below
            continue
        path.write_bytes(data)
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


@pytest.mark.parametrize(
    "data",
    [
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"cno_such_module_xyz\nthing\n.",
        b"cbuiltins\nno_such_attribute_xyz\n.",
    ],
)
def test_garbage_bytes_unpickler_edge_cases(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "obj",
    [torch.zeros(3), {"model": {}}, {"format": "other", "version": 1}, [1, 2], nn.Linear(2, 2).state_dict()],
)
def test_not_a_bofexits_file(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "c.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a bofexits checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [0, 2, None, "1"])
def test_wrong_version(tmp_path: Path, version: object) -> None:
    path = tmp_path / "c.pt"
    torch.save({"format": "bofexits-checkpoint", "version": version}, path)
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(path)


class _Net(nn.Module):
    def __init__(self, width: int = 3, extra: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(2, width)
        self.head = nn.Linear(width, 1)
        if extra:
            self.more = nn.Linear(1, 1)


@pytest.mark.parametrize(
    "source_kwargs, key",
    [
        ({"width": 4}, "body.weight"),  # shape mismatch
        ({"extra": True}, "more.weight"),  # unexpected key
    ],
)
def test_load_state_into_names_the_mismatched_key(source_kwargs: dict[str, Any], key: str) -> None:
    target = _Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="another architecture") as info:
        load_state_into(target, _Net(**source_kwargs).state_dict(), "checkpoint x.pt")
    assert key in str(info.value) and "checkpoint x.pt" in str(info.value)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k])  # nothing half-loaded


def test_load_state_into_missing_key() -> None:
    state = _Net().state_dict()
    del state["head.bias"]
    with pytest.raises(CheckpointError, match=r"missing \['head.bias'\]"):
        load_state_into(_Net(), state, "src")


def test_load_state_into_shape_message_has_both_shapes() -> None:
    with pytest.raises(CheckpointError, match=r"body.weight \(4, 2\) vs \(3, 2\)"):
        load_state_into(_Net(), _Net(width=4).state_dict(), "src")


def test_load_state_into_matching() -> None:
    src, dst = _Net(), _Net()
    load_state_into(dst, src.state_dict(), "src")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_load_model_with_other_architecture(tmp_path: Path) -> None:
    cfg = _small_cfg()
    other = build_model(ModelConfig(widths=[4, 4, 8, 16], codewords=3, num_classes=4))
    save_checkpoint(tmp_path / "c.pt", {"config": cfg.to_dict(), "model": other.state_dict()})
    with pytest.raises(CheckpointError, match="stages.3"):
        load_model(tmp_path / "c.pt")


def test_failed_save_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.pt"
    _write(path)
    old = path.read_bytes()

    def broken_save(obj: object, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"half a checkpoint")  # partial output, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 99})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert load_checkpoint(path)["epoch"] == 4
    assert os.listdir(tmp_path) == ["c.pt"]


def test_failed_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "tensor, value",
    [
        ("stages.0.1.running_var", float("inf")),
        ("stages.3.5.weight", float("nan")),
        ("exits.bof.0.codebook", float("nan")),
    ],
)
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path, tensor: str, value: float) -> None:
    cfg = _small_cfg()
    state = build_model(cfg.model).state_dict()
    assert tensor in state, sorted(state)[:20]
    state[tensor].view(-1)[0] = value
    save_checkpoint(tmp_path / "c.pt", {"config": cfg.to_dict(), "model": state})
    with pytest.raises(CheckpointError, match=rf"NaN or inf weights in {tensor} \(1 of \d+ values\)"):
        load_model(tmp_path / "c.pt")


def test_unsafe_pickle_error_does_not_advise_weights_only_false(tmp_path: Path) -> None:
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "c.pt"
    torch.save({"format": "bofexits-checkpoint", "version": 1, "x": Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="not a safe bofexits checkpoint") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_negative_batchnorm_variance_is_refused(tmp_path: Path) -> None:
    cfg = _small_cfg()
    state = build_model(cfg.model).state_dict()
    state["stages.1.1.running_var"][0] = -0.5
    save_checkpoint(tmp_path / "c.pt", {"config": cfg.to_dict(), "model": state})
    with pytest.raises(CheckpointError, match="negative BatchNorm variances in stages.1.1.running_var"):
        load_model(tmp_path / "c.pt")
