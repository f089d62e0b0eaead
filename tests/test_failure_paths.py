"""Issue 21's examples, each a test: paths and symlinks, multi-file outputs, failure paths.

Where the checks reach: what a file holds was always checked; these check where it lives (export
folders, manifest paths, symlinks, locks), what a folder holds after an interrupt, and what a
full disk, a deep JSON file or a corrupt training state does.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bofexits._io import DiskFullError, RunLock, atomic_path, write_text
from bofexits._outputs import MEMBERS, MixedOutputError, check_members, output_set, signals_deferred
from bofexits.cli import main
from bofexits.config import TrainConfig
from bofexits.deploy.errors import ManifestError
from bofexits.deploy.manifest import manifest_digest
from bofexits.errors import CheckpointError
from bofexits.training.checkpoint import check_training_state, load_checkpoint, save_checkpoint
from tests.helpers import write_tiny_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, write_fake_data: Callable[..., Path]) -> dict[str, Path]:
    """Fake data, a tiny calibrated checkpoint and its ONNX export (legacy exporter: fast)."""
    from bofexits.deploy.onnx import export_onnx

    root = tmp_path_factory.mktemp("failures")
    data = write_fake_data(root / "data", n_train=64, n_test=32)
    ckpt = write_tiny_checkpoint(root / "run" / "checkpoint.pt", data)
    export = export_onnx(ckpt, root / "export", exporter="legacy")
    return {"root": root, "data": data, "ckpt": ckpt, "export": export}


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bofexits: error: "), err
    return err[0]


# ---------------------------------------------------------------- 1. paths and symlinks


def test_export_force_never_deletes_its_own_input(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "dir"
    shutil.copytree(run["export"], folder)  # an earlier export ...
    shutil.copy(run["ckpt"], folder / "model.pt")  # ... with the checkpoint beside it
    before = _digests(folder)
    code = main(
        ["-q", "export", str(folder / "model.pt"), str(folder), "--force", "--onnx-exporter", "legacy"]
    )
    assert code == 2 and "inside the output folder" in _one_error_line(capsys)
    assert _digests(folder) == before


def test_export_force_refuses_files_it_did_not_write(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "dir"
    shutil.copytree(run["export"], folder)
    (folder / "notes.txt").write_text("mine")
    args = ["-q", "export", str(run["ckpt"]), str(folder), "--force", "--onnx-exporter", "legacy"]
    assert main(args) == 2 and "notes.txt" in _one_error_line(capsys)
    assert (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()
    assert main(args) == 0  # an export and nothing else: replaced as a unit
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_export_through_a_symlinked_folder_keeps_the_link(run: dict[str, Path], tmp_path: Path) -> None:
    from bofexits.deploy.torchscript import export_torchscript

    real = tmp_path / "real"
    shutil.copytree(run["export"], real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    export_torchscript(run["ckpt"], link, overwrite=True)
    assert (
        link.is_symlink()
        and json.loads((real / "manifest.json").read_text())["format"] == "bofexits-torchscript"
    )


def _tampered(run: dict[str, Path], tmp_path: Path, edit: Callable[[dict[str, Any], Path], None]) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(run["export"], folder)
    data = json.loads((folder / "manifest.json").read_text())
    edit(data, folder)
    data["content_sha256"] = manifest_digest(data)  # resealed: the checksum is a plain hash anyone redoes
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def _absolute(data: dict[str, Any], folder: Path) -> None:
    outside = folder.parent / "outside.onnx"
    shutil.copy(folder / data["adaptive"]["file"], outside)
    data["adaptive"]["file"] = str(outside)


def _dotdot(data: dict[str, Any], folder: Path) -> None:
    (folder.parent / "x").mkdir()
    shutil.copy(folder / data["adaptive"]["file"], folder.parent / "x" / "adaptive.onnx")
    data["adaptive"]["file"] = "../x/adaptive.onnx"


def _passwd(data: dict[str, Any], folder: Path) -> None:
    data["graphs"][0]["file"] = "/etc/passwd"


def _symlink_out(data: dict[str, Any], folder: Path) -> None:
    name = data["adaptive"]["file"]
    shutil.move(folder / name, folder.parent / "moved.onnx")
    (folder / name).symlink_to(folder.parent / "moved.onnx")  # same bytes, same hash: only the place differs


@pytest.mark.parametrize("edit", [_absolute, _dotdot, _passwd, _symlink_out], ids=lambda f: f.__name__[1:])
def test_manifest_paths_stay_inside_the_export(
    run: dict[str, Path], tmp_path: Path, edit: Callable[[dict[str, Any], Path], None]
) -> None:
    from bofexits.deploy.predict import predict_files
    from bofexits.deploy.runner import OnnxAdaptiveRunner, load_manifest

    folder = _tampered(run, tmp_path, edit)
    for attempt in (
        lambda: load_manifest(folder),
        lambda: OnnxAdaptiveRunner(folder),
        lambda: predict_files(folder, []),
    ):
        with pytest.raises(ManifestError, match="inside its folder|outside the export folder"):
            attempt()


def test_the_shipped_runner_checks_paths_too(run: dict[str, Path], tmp_path: Path) -> None:
    folder = _tampered(run, tmp_path, _dotdot)
    code = (
        f"import sys; sys.path.insert(0, {str(folder)!r}); import bofexits_deploy as d\n"
        f"try:\n    d.OnnxAdaptiveRunner({str(folder)!r})\nexcept d.ManifestError as e:\n    print('refused', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.startswith("refused"), done.stdout + done.stderr


def test_atomic_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "a" / "checkpoint.pt"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "b" / "checkpoint.pt"
    link.parent.mkdir()
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert os.listdir(real.parent) == ["checkpoint.pt"] and os.listdir(link.parent) == ["checkpoint.pt"]


def test_tune_through_a_symlink_takes_the_lock_of_the_real_checkpoint(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "a" / "checkpoint.pt"
    real.parent.mkdir()
    shutil.copy(run["ckpt"], real)
    link = tmp_path / "b" / "checkpoint.pt"
    link.parent.mkdir()
    link.symlink_to(real)
    with RunLock(real.parent):  # a tune (or train) running on the real file
        code = main(["-q", "tune", str(link), "--budget", "0.9", "--data-dir", str(run["data"])])
    line = _one_error_line(capsys)
    assert code == 2 and "in use" in line and "--out" not in line  # tune has no --out
    assert link.is_symlink()


def test_a_refused_train_leaves_no_folder_holding_only_the_lock(
    fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "run"
    code = main(["-q", "train", "--data-dir", str(fake_data), "--out", str(out), "--epochs", "1", "--resume"])
    assert code == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- 2. multi-file outputs


def test_an_interrupted_compare_leaves_the_earlier_run(
    run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bofexits.reporting import report

    out = tmp_path / "out"
    args = ["-q", "compare", str(run["ckpt"]), "--out", str(out), "--data-dir", str(run["data"])]
    args += ["--points", "4", "--timing-samples", "0"]
    assert main(args) == 0
    capsys.readouterr()
    before = _digests(out)
    rendered = report._render

    def interrupt_after_policies(*a: Any, **k: Any) -> Path:
        rendered(*a, **k)  # policies.json, .csv and the report all written ... then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_render", interrupt_after_policies)
    assert main([*args[:-4], "--points", "5", "--timing-samples", "0"]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "nothing was written" in err
    assert _digests(out) == before  # the old run whole: no new policies beside an old report
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MEMBERS]


def test_output_set_commits_all_or_nothing(tmp_path: Path) -> None:
    with output_set(tmp_path, "one") as stage:
        (stage / "a.json").write_text("1")
        (stage / "b.md").write_text("made from a=1")
    with pytest.raises(RuntimeError):
        with output_set(tmp_path, "two") as stage:
            (stage / "a.json").write_text("2")
            raise RuntimeError("killed after the first file")
    assert (tmp_path / "a.json").read_text() == "1" and (tmp_path / "b.md").read_text() == "made from a=1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [MEMBERS, "a.json", "b.md"]
    check_members(tmp_path)
    (tmp_path / "a.json").write_text("2")  # what a hard kill between two renames would leave
    with pytest.raises(MixedOutputError, match="a.json"):
        check_members(tmp_path)


def test_signals_wait_for_the_commit() -> None:
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done = True  # reached: the signal was held until the block ended
    assert done


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_set_leaves_no_temp_files(tmp_path: Path, signum: int) -> None:
    (tmp_path / "a.json").write_text("old")
    code = (
        "import os, signal, sys\n"
        "from bofexits.cli import _on_sigterm\n"
        "from bofexits._outputs import output_set\n"
        "signal.signal(signal.SIGTERM, _on_sigterm)\n"
        "try:\n"
        f"    with output_set({str(tmp_path)!r}, 'x') as stage:\n"
        "        (stage / 'a.json').write_text('new')\n"
        f"        os.kill(os.getpid(), {int(signum)})\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 130, done.stderr
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
        and (tmp_path / "a.json").read_text() == "old"
    )


@pytest.mark.parametrize("verb", ["export", "sweep", "compare", "tune"])
def test_interrupting_a_verb_without_resume_does_not_offer_resume(
    verb: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from bofexits.cli import commands

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, verb, interrupted)
    argv = {
        "export": ["x.pt", "d"],
        "sweep": ["x.pt"],
        "compare": ["x.pt"],
        "tune": ["x.pt", "--budget", "0.5"],
    }
    assert main(["-q", verb, *argv[verb]]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "interrupted" in err


# ---------------------------------------------------------------- 3. failure paths


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_in_torch_save_names_the_disk_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})

    def unexpected_pos(obj: Any, f: Any) -> None:
        Path(f).write_bytes(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
            "data/0: file write failed; unexpected pos 1088 vs 1024"
        )

    monkeypatch.setattr(torch, "save", unexpected_pos)
    with pytest.raises(DiskFullError, match="no space left on the disk mounted at /"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_full_disk_in_compare_is_one_line(
    run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bofexits.evaluation import comparison

    monkeypatch.setattr(comparison, "write_json", _enospc)
    out = tmp_path / "out"
    args = ["-q", "compare", str(run["ckpt"]), "--out", str(out), "--data-dir", str(run["data"])]
    assert main([*args, "--points", "4", "--timing-samples", "0"]) == 2
    assert "no space left on the disk" in _one_error_line(capsys)
    assert list(out.iterdir()) == []  # no staging folder, no temp file


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_full_disk_in_export_names_the_disk_not_the_network(
    run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from bofexits.deploy import onnx, torchscript

    if fmt == "torchscript":
        monkeypatch.setattr(Path, "write_bytes", _enospc)
        attempt: Callable[[], Any] = lambda: torchscript.export_torchscript(run["ckpt"], tmp_path / "e")  # noqa: E731
    else:
        monkeypatch.setattr(torch.onnx, "export", _enospc)
        attempt = lambda: onnx.export_onnx(run["ckpt"], tmp_path / "e", exporter="legacy")  # noqa: E731
    with pytest.raises(DiskFullError) as err:
        attempt()
    assert "cannot be exported" not in str(err.value) and "no space left" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # the partial export folder removed


def test_atomic_path_turns_enospc_into_one_error(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError):
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("partial")
            _enospc()
    assert list(tmp_path.iterdir()) == []


DEEP = "[" * 100_000 + "]" * 100_000


def test_deep_json_is_one_line_everywhere(
    run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deep.json"
    config.write_text(DEEP)
    assert main(["-q", "train", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "nested too deeply" in _one_error_line(capsys)
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.json").write_text(DEEP)
    assert main(["-q", "report", str(report)]) == 2
    assert "nested too deeply" in _one_error_line(capsys)
    export = tmp_path / "export"
    shutil.copytree(run["export"], export)
    (export / "manifest.json").write_text(DEEP)
    assert main(["-q", "predict", str(export), str(tmp_path / "x.png")]) == 2
    assert "nested too deeply" in _one_error_line(capsys)


def _state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "config": {},
        "epoch": 1,
        "phase": "joint",
        "history": [{"epoch": 1, "val_acc": [0.5, 0.6]}],
        "rng": torch.get_rng_state(),
        "optimizer": {"state": {}, "param_groups": [{}]},
        "scheduler": {},
        "codebooks_ready": True,
    }
    state.update(changes)
    return state


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"rng": torch.get_rng_state()[:100]}, "rng"),
        ({"rng": torch.get_rng_state().float()}, "rng"),
        ({"rng": torch.stack([torch.get_rng_state()] * 2, 1)[:, 0]}, "rng"),  # non-contiguous
        ({"epoch": "1"}, "epoch"),
        ({"epoch": 99}, "epoch"),
        ({"history": None}, "history"),
        ({"history": []}, "history"),
        ({"codebooks_ready": "yes"}, "codebooks_ready"),
        ({"optimizer": None}, "optimizer"),
        ({"config": None}, "config"),
    ],
    ids=[
        "rng-size",
        "rng-dtype",
        "rng-not-contiguous",
        "epoch-str",
        "epoch-past-end",
        "history-null",
        "history-short",
        "codebooks-str",
        "optimizer-null",
        "config-null",
    ],
)
def test_resume_state_is_validated(changes: dict[str, Any], field: str) -> None:
    check_training_state(_state(), "c.pt", 2)  # the intact state passes
    with pytest.raises(CheckpointError, match=f"'{field}'"):
        check_training_state(_state(**changes), "c.pt", 2)


def test_train_resume_on_a_corrupt_state_is_one_line(
    fake_data: Path,
    tmp_path: Path,
    tiny_config: Callable[..., TrainConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bofexits.training.loop import train

    cfg = tiny_config(fake_data, epochs=2)

    def interrupt(epoch: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", progress=False, on_epoch=interrupt)
    ckpt = tmp_path / "r" / "checkpoint.pt"
    data = load_checkpoint(ckpt)
    data["rng"] = data["rng"][:10]
    save_checkpoint(ckpt, data)
    with pytest.raises(CheckpointError, match="'rng'"):
        train(cfg, tmp_path / "r", resume=True, progress=False)


@pytest.mark.slow
def test_sigterm_during_export_leaves_no_temp_folder(run: dict[str, Path], tmp_path: Path) -> None:
    launcher = Path(__file__).parent / "reliability" / "_interrupt.py"
    out = tmp_path / "parent" / "export"
    shutil.copytree(run["export"], out)
    before = _digests(out)
    argv = [sys.executable, str(launcher), "_", "SIGTERM", "after", "manifest.json", "--", "-q", "export"]
    argv += [str(run["ckpt"]), str(out), "--force", "--onnx-exporter", "legacy"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert done.returncode == 143 and "terminated" in done.stderr and "--resume" not in done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["export"]  # no .export.*.tmp folder
    assert _digests(out) == before
