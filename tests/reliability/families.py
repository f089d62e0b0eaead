"""The catalogue's families for issue 21: where a file lives, not only what it holds.

- paths: `export --force` on a folder holding its input or other files, manifests whose
  files are absolute, `..` or a symlink out of the folder (predict and the runner), tune
  through a symlinked checkpoint, predict on a folder / FIFO / device, a refused train;
- signals: SIGINT and SIGTERM right after one file of a multi-file verb (sweep, compare,
  report, export) is written, and during the commit; the folder must be the old run or the
  new one, with no temp files (`tests/reliability/_interrupt.py` sends the signal);
- disk-full: train, tune, compare and both exports onto a 5 MB tmpfs filled to 8 KB free
  (mounted when the machine allows it: root; otherwise the family is left out and the report
  says so; tests/test_failure_paths.py simulates ENOSPC either way);
- deep-json: 100 000 nested brackets as a config, a results file, a manifest and a lock file;
- resume-state: `train --resume` on checkpoints whose RNG state, epoch, history, optimiser or
  flags are corrupt;
- image-modes: every Pillow mode through predict, and an image folder of every mode through train.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tests.reliability.catalogue import CLI, LOST, SILENT, Case, Fixtures, env

LAUNCHER = Path(__file__).with_name("_interrupt.py")
DEEP = "[" * 100_000 + "]" * 100_000
MEMBERS, LOCK = ".bofexits-members.json", ".bofexits.lock"
DISK_FREE = 8 * 1024  # bytes left free on each filled tmpfs
DISK_VERBS = ("train", "tune", "compare", "export-onnx", "export-torchscript")
#: Why the disk-full family is absent from this run, if it is ("" when the tmpfs mounts worked).
DISK_SKIPPED: dict[str, str] = {}
EVAL = ["--timing-samples", "0"]


def _cli(*args: Any) -> list[str]:
    return [*CLI, *map(str, args)]


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env())
    if done.returncode != 0:
        raise SystemExit(f"building the issue-21 fixtures failed: {' '.join(argv)}: {done.stderr[-400:]}")


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _base(fx: Fixtures) -> Path:
    return fx.path("f21")


# ---------------------------------------------------------------- fixtures


def build(fx: Fixtures) -> None:
    """Everything the families read, afresh under `f21/` (an earlier run, exports, disks, files)."""
    teardown(fx)
    base = _base(fx)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    data = fx.data_args()
    earlier = base / "earlier"  # a run folder with a comparison, a sweep and their report
    _run(_cli("compare", fx.ckpt, "--out", earlier, "--points", "4", *EVAL, *data))
    _run(_cli("sweep", fx.ckpt, "--out", earlier, "--betas", "0.5", *EVAL, *data))
    _deep(base)
    _states(fx, base)
    _modes(base)
    _disks(fx, base)


def teardown(fx: Fixtures) -> None:
    """Unmount the tmpfs disks (a no-op when none is mounted)."""
    disks = _base(fx) / "disk"
    if disks.is_dir():
        for d in disks.iterdir():
            if os.path.ismount(d):
                subprocess.run(["umount", str(d)], capture_output=True)


def _deep(base: Path) -> None:
    d = base / "deep"
    d.mkdir()
    (d / "config.json").write_text(DEEP)
    (d / "results").mkdir()
    (d / "results" / "results.json").write_text(DEEP)
    (d / "locked").mkdir()
    (d / "locked" / LOCK).write_text(DEEP)


def _state_edits(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rng = state["rng"]
    return {
        "rng-short": {"rng": rng[:100].clone()},
        "rng-float": {"rng": rng.float()},
        "rng-not-contiguous": {"rng": torch.stack([rng, rng], 1)[:, 0]},
        "epoch-a-string": {"epoch": str(state["epoch"])},
        "epoch-past-the-end": {"epoch": 99},
        "history-null": {"history": None},
        "history-short": {"history": []},
        "optimizer-null": {"optimizer": None},
        "codebooks-flag-a-string": {"codebooks_ready": "yes"},
    }


def _states(fx: Fixtures, base: Path) -> None:
    state = torch.load(fx.ckpt, map_location="cpu", weights_only=True)
    for name, changes in {"intact": {}, **_state_edits(state)}.items():
        d = base / "resume" / name
        d.mkdir(parents=True)
        shutil.copy(fx.ckpt.parent / "config.json", d / "config.json")
        torch.save({**state, **changes}, d / "checkpoint.pt")


#: Every mode Pillow creates, the format that stores it, and whether the decoder reads it.
MODES = {
    "1": ("png", True),
    "L": ("png", True),
    "LA": ("png", True),
    "P": ("png", True),
    "PA": ("tiff", True),
    "RGB": ("png", True),
    "RGBA": ("png", True),
    "CMYK": ("jpg", True),
    "YCbCr": ("jpg", True),
    "I": ("tiff", True),
    "I;16": ("png", True),
    "F": ("tiff", True),
    "LAB": ("tiff", False),
}


def _mode_image(mode: str, level: int) -> Image.Image:
    rng = np.random.default_rng(level)
    pixels = np.clip(rng.normal(level, 30, (28, 28, 4)), 0, 255).astype(np.uint8)
    pixels[..., 3] = 255
    rgba = Image.fromarray(pixels, "RGBA")
    if mode == "I;16":
        return Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).convert("I")
    if mode == "F":
        return Image.fromarray(pixels[..., 0].astype(np.float32) / 255)
    if mode == "PA":
        return rgba.convert("RGB").convert("P").convert("PA")
    if mode == "LAB":
        return Image.new("LAB", (28, 28), (level, 128, 128))
    return rgba.convert(mode)


def _modes(base: Path) -> None:
    d = base / "modes"
    d.mkdir()
    for mode, (fmt, _) in MODES.items():
        _mode_image(mode, 120).save(d / f"{mode.replace(';', '-')}.{fmt}")
    Image.fromarray(np.full((28, 28), 7.5, np.float32)).save(d / "F-out-of-range.tiff")
    Image.fromarray(np.full((28, 28), 70000, np.int32)).save(d / "I-out-of-range.tiff")
    folder = base / "mode-folder"
    for cls, level in (("dark", 50), ("light", 200)):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            for mode, (fmt, readable) in MODES.items():
                if readable and fmt in ("png", "jpg"):  # the formats an image folder reads
                    _mode_image(mode, level + i).save(folder / cls / f"{i}-{mode.replace(';', '-')}.{fmt}")
    bad = base / "mode-folder-broken"
    shutil.copytree(folder, bad)
    (bad / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG header, no image


def _disks(fx: Fixtures, base: Path) -> None:
    """One 5 MB tmpfs per verb, an earlier file on it, filled to `DISK_FREE` bytes free."""
    DISK_SKIPPED.clear()
    for verb in DISK_VERBS:
        d = base / "disk" / verb
        d.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(d)], capture_output=True)
        if done.returncode != 0:
            DISK_SKIPPED["reason"] = (done.stderr.decode().strip() or "mount failed")[:200]
            return
        (d / "earlier.txt").write_text("written before the run\n")
        if verb == "tune":
            shutil.copy(fx.ckpt, d / "checkpoint.pt")
        st = os.statvfs(d)
        (d / "filler").write_bytes(bytes(max(st.f_bavail * st.f_frsize - DISK_FREE, 0)))


# ---------------------------------------------------------------- checks


def _leftovers(folder: Path) -> list[str]:
    """Hidden names bofexits may leave between runs are the members record and the lock; any other is a temp."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.name.startswith(".") and p.name not in (MEMBERS, LOCK)
    )


def _old_or_whole(folder: Path, strict: bool, parent_too: bool = False) -> Any:
    """A check: `folder` is its snapshot taken at setup (the old run), or (not `strict`) a whole new set."""
    before: dict[str, str] = {}

    def snapshot() -> None:
        before.clear()
        before.update(_digests(folder))

    def check(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
        left = _leftovers(folder) + (_leftovers(folder.parent) if parent_too else [])
        if left:
            return SILENT, f"temp files left: {', '.join(left)}"
        after = _digests(folder)
        if after == before:
            return None
        if strict:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            return SILENT, f"mixed folder: {', '.join(changed)} changed by an interrupted run"
        from bofexits._outputs import MixedOutputError, check_members

        try:
            check_members(folder)
        except MixedOutputError as exc:
            return SILENT, str(exc)[:300]
        return None

    return snapshot, check


def _intact(*paths: Path, digests: dict[str, str] | None = None) -> Any:
    """A check: every path still exists with its bytes (a missing or changed one is lost)."""
    saved: dict[str, str] = {}

    def snapshot() -> None:
        saved.clear()
        saved.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths})

    def check(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
        for p in paths:
            if not p.exists() or hashlib.sha256(p.read_bytes()).hexdigest() != saved[str(p)]:
                return LOST, f"{p.name} was deleted or changed"
        return None

    return snapshot, check


def _absent_words(*words: str) -> Any:
    def check(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
        text = done.stdout + done.stderr
        found = [w for w in words if w in text]
        return (SILENT, f"says {found[0]!r}: the wrong cause") if found else None

    return check


# ---------------------------------------------------------------- cases


def cases(fx: Fixtures) -> list[Case]:
    return [
        *_path_cases(fx),
        *_signal_cases(fx),
        *_disk_cases(fx),
        *_deep_cases(fx),
        *_resume_cases(fx),
        *_mode_cases(fx),
    ]


def _export_copy(fx: Fixtures, name: str, extra: str | None = None) -> Path:
    d = fx.path("out", name)

    def setup() -> None:
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(fx.export, d)
        if extra == "checkpoint":
            shutil.copy(fx.ckpt, d / "model.pt")
        elif extra == "notes":
            (d / "notes.txt").write_text("mine\n")

    _SETUPS[str(d)] = setup
    return d


_SETUPS: dict[str, Any] = {}


def _then(*steps: Any) -> Any:
    def run() -> None:
        for step in steps:
            step()

    return run


def _manifest_edit(fx: Fixtures, name: str) -> Path:
    """A copy of the export whose adaptive graph's file is moved out of reach, the manifest resealed."""
    from bofexits.deploy.manifest import manifest_digest

    d = fx.path("f21", "manifests", name)
    shutil.copytree(fx.export, d)
    data = json.loads((d / "manifest.json").read_text())
    graph = data["adaptive"]["file"]
    if name == "absolute":
        shutil.copy(d / graph, d.parent / f"{name}-outside.onnx")
        data["adaptive"]["file"] = str(d.parent / f"{name}-outside.onnx")
    elif name == "dotdot":
        (d.parent / "x").mkdir(exist_ok=True)
        shutil.copy(d / graph, d.parent / "x" / "adaptive.onnx")
        data["adaptive"]["file"] = "../x/adaptive.onnx"
    elif name == "etc-passwd":
        data["graphs"][0]["file"] = "/etc/passwd"
        data["graphs"][0]["sha256"] = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    elif name == "symlink-out":
        shutil.move(d / graph, d.parent / f"{name}-moved.onnx")
        (d / graph).symlink_to(d.parent / f"{name}-moved.onnx")
    data["content_sha256"] = manifest_digest(data)
    (d / "manifest.json").write_text(json.dumps(data))
    return d


def _path_cases(fx: Fixtures) -> list[Case]:
    out: list[Case] = []
    for name, extra, expect in (
        ("force-input-inside", "checkpoint", "error"),
        ("force-foreign-file", "notes", "error"),
        ("force-clean-export", None, "ok"),
    ):
        d = _export_copy(fx, f"p-{name}", extra)
        source = d / "model.pt" if extra == "checkpoint" else fx.ckpt
        kept = [d / "model.pt"] if extra == "checkpoint" else [d / "notes.txt"] if extra == "notes" else []
        snapshot, check = _intact(*kept)
        out.append(
            Case(
                f"paths/export/{name}",
                "paths",
                _cli("export", source, d, "--force", "--onnx-exporter", "legacy"),
                expect=expect,
                setup=_then(_SETUPS[str(d)], snapshot),
                check=check,
            )
        )
    real, link = fx.path("out", "p-real-export"), fx.path("out", "p-link-export")

    def link_setup() -> None:
        shutil.rmtree(real, ignore_errors=True)
        shutil.copytree(fx.export, real)
        link.unlink(missing_ok=True)
        link.symlink_to(real, target_is_directory=True)

    def link_kept(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
        if not link.is_symlink():
            return SILENT, "the symlinked export folder became a separate folder"
        return None

    out.append(
        Case(
            "paths/export/force-through-a-symlinked-folder",
            "paths",
            _cli("export", fx.ckpt, link, "--force", "--format", "torchscript"),
            expect="ok",
            setup=link_setup,
            check=link_kept,
        )
    )
    img = fx.path("img", "good.png")
    for name in ("absolute", "dotdot", "etc-passwd", "symlink-out"):
        d = _manifest_edit(fx, name)
        out.append(Case(f"paths/manifest-{name}/predict", "paths", _cli("predict", d, img)))
        out.append(
            Case(
                f"paths/manifest-{name}/onnx-runner",
                "paths",
                code=f"from bofexits.deploy.runner import OnnxAdaptiveRunner\nresult = OnnxAdaptiveRunner({str(d)!r})",
            )
        )
    tune_real, tune_link = (
        fx.path("out", "p-tune-real", "checkpoint.pt"),
        fx.path("out", "p-tune-link", "c.pt"),
    )

    def tune_setup() -> None:
        tune_real.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fx.ckpt, tune_real)
        tune_link.parent.mkdir(parents=True, exist_ok=True)
        tune_link.unlink(missing_ok=True)
        tune_link.symlink_to(tune_real)

    def tune_stored(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
        if not tune_link.is_symlink():
            return SILENT, "the symlinked checkpoint became a separate copy"
        tuned = torch.load(tune_real, map_location="cpu", weights_only=True).get("tuned")
        return None if tuned else (SILENT, "the result was not stored in the checkpoint the link points to")

    out.append(
        Case(
            "paths/tune/through-a-symlinked-checkpoint",
            "paths",
            _cli("tune", tune_link, "--budget", "0.9", *fx.data_args()),
            expect="ok",
            setup=tune_setup,
            check=tune_stored,
        )
    )
    fifo = fx.path("f21", "pipe.png")
    if not fifo.exists():
        os.mkfifo(fifo)
    for name, target in (("a-folder", fx.path("img")), ("a-fifo", fifo), ("dev-null", Path(os.devnull))):
        out.append(
            Case(
                f"paths/predict/{name}",
                "paths",
                _cli("predict", fx.ckpt, target),
                check=_absent_words("does not exist"),
            )
        )
    new = fx.path("out", "p-refused-train", "run")

    def no_lock_only_folder(done: subprocess.CompletedProcess[str]) -> tuple[str, str] | None:
        return (SILENT, "left a folder holding only .bofexits.lock") if new.parent.exists() else None

    out.append(
        Case(
            "paths/train/refused-leaves-no-lock-only-folder",
            "paths",
            _cli("train", *fx.data_args(), "--out", new, "--epochs", "1", "--resume"),  # nothing to resume
            check=no_lock_only_folder,
        )
    )
    return out


#: verb -> (arguments after the verb, given the run folder; the file after which the signal comes)
def _signal_verbs(fx: Fixtures) -> dict[str, tuple[Any, str]]:
    data = fx.data_args()
    return {
        "compare": (
            lambda d: ["compare", fx.ckpt, "--out", d, "--points", "5", *EVAL, *data],
            "policies.json",
        ),
        "sweep": (lambda d: ["sweep", fx.ckpt, "--out", d, "--betas", "0.6", *EVAL, *data], "results.json"),
        "report": (lambda d: ["report", d], "report.md"),
        "export": (lambda d: ["export", fx.ckpt, d, "--force", "--onnx-exporter", "legacy"], "manifest.json"),
    }


def _signal_cases(fx: Fixtures) -> list[Case]:
    out: list[Case] = []
    earlier = fx.path("f21", "earlier")
    for verb, (args, file) in _signal_verbs(fx).items():
        for sig in ("SIGINT", "SIGTERM"):
            for when in ("after", "commit"):
                d = fx.path(
                    "out", f"sig-{verb}-{sig}-{when}", "run"
                )  # its own parent: temp files there are its own
                source = fx.export if verb == "export" else earlier

                def copy(d: Path = d, source: Path = source) -> None:
                    shutil.rmtree(d, ignore_errors=True)
                    shutil.copytree(source, d)

                snapshot, check = _old_or_whole(d, strict=when == "after", parent_too=verb == "export")
                argv = [sys.executable, str(LAUNCHER), "_", sig, when, file, "--", "-q"]
                argv += [str(a) for a in args(d)]
                out.append(
                    Case(
                        f"signals/{verb}/{sig.lower()}-{'after-' + file if when == 'after' else 'during-commit'}",
                        "signals",
                        argv,
                        expect="interrupt",
                        setup=_then(copy, snapshot),
                        check=check,
                    )
                )
    return out


def _disk_cases(fx: Fixtures) -> list[Case]:
    if DISK_SKIPPED:
        return []
    base = fx.path("f21", "disk")
    data = fx.data_args()
    argv = {
        "train": ["train", "--out", base / "train" / "run", "--epochs", "1", "--exit-epochs", "1"]
        + ["--limit-train", "300", "--threads", "1", *data],
        "tune": ["tune", base / "tune" / "checkpoint.pt", "--budget", "0.9", *data],
        "compare": ["compare", fx.ckpt, "--out", base / "compare" / "cmp", "--points", "4", *EVAL, *data],
        "export-onnx": ["export", fx.ckpt, base / "export-onnx" / "e", "--onnx-exporter", "legacy"],
        "export-torchscript": [
            "export",
            fx.ckpt,
            base / "export-torchscript" / "e",
            "--format",
            "torchscript",
        ],
    }
    out = []
    for verb in DISK_VERBS:
        disk = base / verb
        kept = [disk / "earlier.txt"] + ([disk / "checkpoint.pt"] if verb == "tune" else [])
        snapshot, intact = _intact(*kept)

        def check(
            done: subprocess.CompletedProcess[str], disk: Path = disk, intact: Any = intact
        ) -> tuple[str, str] | None:
            if str(disk) not in done.stderr:
                return SILENT, "the message does not name the full disk"
            found = intact(done)
            if found:
                return found
            before = {"earlier.txt", "filler", "checkpoint.pt", LOCK}  # the lock file is empty, not partial
            left = [str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file() and p.name not in before]
            left = [n for n in left if not n.endswith("config.json")]  # a whole config is not a partial file
            return (SILENT, f"partial files left on the full disk: {', '.join(left)}") if left else None

        out.append(Case(f"disk-full/{verb}", "disk-full", _cli(*argv[verb]), setup=snapshot, check=check))
    return out


def _deep_cases(fx: Fixtures) -> list[Case]:
    d = fx.path("f21", "deep")
    export = fx.path("f21", "deep", "export")
    if not export.exists():
        shutil.copytree(fx.export, export)
        (export / "manifest.json").write_text(DEEP)
    img = fx.path("img", "good.png")
    return [
        Case(
            "deep-json/train-config",
            "deep-json",
            _cli("train", "--config", d / "config.json", "--out", fx.path("out", "deep-train")),
        ),
        Case("deep-json/report-results", "deep-json", _cli("report", d / "results")),
        Case("deep-json/predict-manifest", "deep-json", _cli("predict", export, img)),
        Case(
            "deep-json/api-load_manifest",
            "deep-json",
            code=f"from bofexits.deploy.runner import load_manifest\nresult = load_manifest({str(export)!r})",
        ),
        Case(
            "deep-json/train-lock-file",
            "deep-json",
            _cli("train", "--out", d / "locked", "--data-dir", fx.path("data", "nope"), "--epochs", "1"),
        ),
    ]


def _resume_cases(fx: Fixtures) -> list[Case]:
    train = ["train", "--dataset", "fashion-mnist", "--limit-train", "300", "--epochs", "1"]
    train += ["--exit-epochs", "1", "--threads", "1", "--seed", "0", *fx.data_args()]
    out = []
    state = torch.load(fx.ckpt, map_location="cpu", weights_only=True)
    for name in ("intact", *_state_edits(state)):
        d = fx.path("f21", "resume", name)
        keep = fx.path("f21", "resume", f"{name}.pt")
        if not keep.exists():
            shutil.copy(d / "checkpoint.pt", keep)
        out.append(
            Case(
                f"resume-state/{name}",
                "resume-state",
                _cli(*train, "--out", d, "--resume"),
                expect="ok" if name == "intact" else "error",
                copy=(keep, d / "checkpoint.pt"),
            )
        )
    return out


def _mode_cases(fx: Fixtures) -> list[Case]:
    d = fx.path("f21", "modes")
    out = []
    for mode, (fmt, readable) in MODES.items():
        f = d / f"{mode.replace(';', '-')}.{fmt}"
        out.append(
            Case(
                f"image-modes/predict/{mode}",
                "image-modes",
                _cli("predict", fx.ckpt, f),
                expect="ok" if readable else "error",
            )
        )
    for name in ("F-out-of-range.tiff", "I-out-of-range.tiff"):
        out.append(Case(f"image-modes/predict/{name}", "image-modes", _cli("predict", fx.ckpt, d / name)))
    train = [
        "train",
        "--dataset",
        "image-folder",
        "--epochs",
        "1",
        "--exit-epochs",
        "1",
        "--val-fraction",
        "0.2",
    ]
    train += ["--widths", "4", "8", "8", "16", "--codewords", "8", "--batch-size", "8", "--threads", "1"]
    out.append(
        Case(
            "image-modes/train/every-mode-folder",
            "image-modes",
            _cli(*train, "--data-dir", fx.path("f21", "mode-folder"), "--out", fx.path("out", "modes-train")),
            expect="ok",
        )
    )
    out.append(
        Case(
            "image-modes/train/folder-with-a-broken-png",
            "image-modes",
            _cli(
                *train,
                "--data-dir",
                fx.path("f21", "mode-folder-broken"),
                "--out",
                fx.path("out", "modes-bad"),
            ),
        )
    )
    return out
