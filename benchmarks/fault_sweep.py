"""Crash safety of training: kill -9 a small real run at random points, resume it, compare.

    .venv/bin/python benchmarks/fault_sweep.py [--runs 10] [--out runs/benchmarks/fault_sweep/fault_sweep.json]
        [--data-dir DIR] [--seed 0] [--jobs 2] [--keep]

One uninterrupted reference run of `bofexits train` (Fashion-MNIST, 3000 training images,
two backbone epochs and one exit epoch, one thread, seed 0) gives the expected result and
the run's duration. Then each of `--runs` runs is killed with SIGKILL once:

* half at a random time within the reference run's duration;
* half the moment a checkpoint temp file (`.checkpoint.pt.*.tmp`) appears in the run folder,
  i.e. inside the atomic checkpoint write (which write: drawn among those the reference made).

After the kill the checkpoint (if any) must load with `torch.load(weights_only=True)`; the
run is then resumed with `--resume` (or started again when no checkpoint exists yet) until it
exits 0, at most three times. Counted: kills, resumes, fresh restarts, corrupt checkpoints
(goal 0), temp files left in the run folder after the resumed run finished (reported), runs
whose final weights are not bitwise equal to the reference's (goal 0) and runs whose
calibration differs. Writes the JSON to --out and prints a table. Runs go two at a time
(--jobs); about 3 minutes for the default 10 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
TEMP_GLOB = f".{CHECKPOINT}.*.tmp"
POLL_S = 0.0005
MAX_RESUMES = 3


@dataclass
class RunRecord:
    """One killed and resumed run."""

    index: int
    mode: str  # "time" or "checkpoint-write"
    target: str  # when the kill was aimed: seconds, or the n-th checkpoint write
    killed_at_s: float | None  # seconds after launch; None when the run finished first
    checkpoint_after_kill: str  # "none", "ok (epoch E)" or "corrupt: ..."
    temps_after_kill: int
    restarts: list[str] = field(default_factory=list)  # "resume" / "fresh", one per relaunch
    final_exit: int | None = None
    temps_after_resume: list[str] = field(default_factory=list)
    tensors_differing: int | None = None
    calibration_equal: bool | None = None
    error: str = ""


def train_command(out: Path, data_dir: str | None, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "bofexits.cli", "-q", "train", "--dataset", "fashion-mnist"]
    cmd += ["--limit-train", "3000", "--epochs", "2", "--exit-epochs", "1", "--threads", "1"]
    cmd += ["--out", str(out), "--seed", "0"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return [*cmd, "--resume"] if resume else cmd


def launch(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a run in its own process group, its output appended to `log`."""
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run's process group (only what `launch` started) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def watch_writes(
    proc: subprocess.Popen[bytes], folder: Path, stop_at: int | None
) -> tuple[int, float | None]:
    """Poll `folder` for checkpoint temp files until the run ends; kill it at the `stop_at`-th one.

    Returns the number of distinct temp files seen and, if killed, the seconds since launch.
    """
    seen: set[str] = set()
    start = time.monotonic()
    while proc.poll() is None:
        for name in (p.name for p in folder.glob(TEMP_GLOB)):
            if name not in seen:
                seen.add(name)
                if stop_at is not None and len(seen) == stop_at:
                    kill(proc)
                    return len(seen), time.monotonic() - start
        time.sleep(POLL_S)
    return len(seen), None


def checkpoint_state(path: Path) -> str:
    """'none', 'ok (epoch E[, complete])' or 'corrupt: ...' as `torch.load(weights_only=True)` sees it."""
    if not path.exists():
        return "none"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # anything torch.load raises is a corrupt file here
        return f"corrupt: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    done = ", complete" if data.get("complete") else ""
    return f"ok (epoch {data.get('epoch')}{done})"


def compare(result: Path, reference: dict[str, Any]) -> tuple[int, bool]:
    """Tensors of the final model not bitwise equal to the reference's, and whether calibrations match."""
    data = torch.load(result, map_location="cpu", weights_only=True)
    ref_model, model = reference["model"], data["model"]
    differing = sum(
        1
        for k in set(ref_model) | set(model)
        if k not in model or k not in ref_model or not torch.equal(model[k], ref_model[k])
    )
    return differing, data.get("calibration") == reference.get("calibration")


def reference_run(root: Path, data_dir: str | None) -> tuple[dict[str, Any], float, int]:
    """The uninterrupted run: its checkpoint, duration and number of checkpoint writes."""
    out = root / "reference"
    start = time.monotonic()
    proc = launch(train_command(out, data_dir, resume=False), root / "reference.log")
    out.mkdir(parents=True, exist_ok=True)
    writes, _ = watch_writes(proc, out, None)
    duration = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed (exit {proc.returncode}); see {root / 'reference.log'}")
    return torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True), duration, writes


def killed_run(
    index: int,
    mode: str,
    rng: random.Random,
    root: Path,
    data_dir: str | None,
    reference: tuple[dict[str, Any], float, int],
) -> RunRecord:
    """Launch, kill as `mode` says, check the checkpoint, resume until done, compare with `reference`."""
    expected, duration, writes = reference
    out = root / f"run{index:02d}"
    out.mkdir(parents=True)
    log = root / f"run{index:02d}.log"
    proc = launch(train_command(out, data_dir, resume=False), log)
    if mode == "time":
        delay = rng.uniform(0.05, 0.95) * duration
        target = f"{delay:.1f}s"
        try:
            proc.wait(timeout=delay)
            killed_at = None
        except subprocess.TimeoutExpired:
            kill(proc)
            killed_at = delay
    else:
        nth = rng.randint(1, max(1, writes))
        target = f"write {nth}/{writes}"
        _, killed_at = watch_writes(proc, out, nth)
        proc.wait()
    record = RunRecord(
        index, mode, target, killed_at, checkpoint_state(out / CHECKPOINT), len(list(out.glob(".*.tmp")))
    )
    for _ in range(MAX_RESUMES):
        resume = (out / CHECKPOINT).exists()
        record.restarts.append("resume" if resume else "fresh")
        with open(log, "ab") as fh:
            code = subprocess.call(train_command(out, data_dir, resume), stdout=fh, stderr=subprocess.STDOUT)
        record.final_exit = code
        if code == 0:
            break
    record.temps_after_resume = temps(out)
    if record.final_exit == 0:
        record.tensors_differing, record.calibration_equal = compare(out / CHECKPOINT, expected)
    else:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        record.error = tail[0][:200]
    return record


def summarise(records: list[RunRecord]) -> dict[str, Any]:
    return {
        "runs": len(records),
        "kills": sum(r.killed_at_s is not None for r in records),
        "finished_before_kill": sum(r.killed_at_s is None for r in records),
        "resumes": sum(r.restarts.count("resume") for r in records),
        "fresh_restarts": sum(r.restarts.count("fresh") for r in records),
        "corrupt_checkpoints": sum(r.checkpoint_after_kill.startswith("corrupt") for r in records),
        "runs_not_finishing": sum(r.final_exit != 0 for r in records),
        "leftover_temp_files": sum(len(r.temps_after_resume) for r in records),
        "runs_with_different_weights": sum(bool(r.tensors_differing) for r in records),
        "runs_with_different_calibration": sum(r.calibration_equal is False for r in records),
    }


def table(records: list[RunRecord], summary: dict[str, Any]) -> str:
    head = f"{'run':>3} {'mode':<16} {'target':<10} {'killed':>7} {'checkpoint after kill':<28} {'tmp':>3} "
    head += f"{'restarts':<14} {'exit':>4} {'tmp left':>8} {'weights':>9} {'calib':>5}"
    rows = [head]
    for r in records:
        killed = "-" if r.killed_at_s is None else f"{r.killed_at_s:.2f}s"
        weights = (
            "n/a"
            if r.tensors_differing is None
            else ("equal" if r.tensors_differing == 0 else f"{r.tensors_differing} diff")
        )
        calib = "n/a" if r.calibration_equal is None else ("equal" if r.calibration_equal else "DIFF")
        rows.append(
            f"{r.index:>3} {r.mode:<16} {r.target:<10} {killed:>7} {r.checkpoint_after_kill[:28]:<28} "
            f"{r.temps_after_kill:>3} {'+'.join(r.restarts):<14} {r.final_exit!s:>4} "
            f"{len(r.temps_after_resume):>8} {weights:>9} {calib:>5}"
        )
    rows.append("")
    rows.append("; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="killed runs (half by time, half mid-write)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/fault_sweep/fault_sweep.json"))
    parser.add_argument("--data-dir", help="Fashion-MNIST folder (default: the library's search)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument(
        "--jobs", type=int, default=2, help="killed runs at a time (each trains on one thread)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folders (printed) for inspection")
    args = parser.parse_args()
    if args.runs < 1 or args.jobs < 1:
        parser.error("--runs and --jobs must be >= 1")
    root = Path(tempfile.mkdtemp(prefix="fault_sweep_"))
    started = time.monotonic()
    try:
        reference = reference_run(root, args.data_dir)
        _, duration, writes = reference
        print(f"reference run: {duration:.1f}s, {writes} checkpoint writes", flush=True)
        modes = ["time" if i < (args.runs + 1) // 2 else "checkpoint-write" for i in range(args.runs)]

        def one(i: int) -> RunRecord:
            r = killed_run(i, modes[i], random.Random(args.seed * 1000 + i), root, args.data_dir, reference)
            print(
                f"run {i}: {r.mode} {r.target}: {r.checkpoint_after_kill}; {'+'.join(r.restarts)} -> exit "
                f"{r.final_exit}",
                flush=True,
            )
            return r

        with ThreadPoolExecutor(args.jobs) as pool:
            records = list(pool.map(one, range(args.runs)))
    finally:
        if args.keep:
            print(f"run folders kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarise(records)
    result = {
        "command": " ".join(train_command(Path("DIR"), args.data_dir, resume=False)[2:]),
        "reference_seconds": round(duration, 2),
        "reference_checkpoint_writes": writes,
        "seed": args.seed,
        "jobs": args.jobs,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "runs": [asdict(r) for r in records],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(records, summary))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
