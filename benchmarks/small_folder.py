"""The exit rules on a small, easy image folder: scikit-learn's handwritten digits, calibrated on the
training split and on the validation split.

    .venv/bin/python benchmarks/small_folder.py [--out runs/benchmarks/small_folder] [--seed 0]
        [--epochs 15] [--exit-epochs 5] [--device cpu] [--quick]

Needs scikit-learn (`pip install scikit-learn`) for its bundled digits: 1797 real 8x8 scans of
handwritten digits, nothing is downloaded. They are written once as 28x28 grey PNGs (upsampled
bilinearly, ink bright as in MNIST) in the layout `--dataset image-folder` reads,
`DIR/train/<digit>/NNNN.png` and `DIR/test/<digit>/NNNN.png`, split 80/20 stratified with a fixed
seed; the folder is built in a temporary sibling and renamed into place, so a rerun reuses a
complete folder and never sees a half-written one.

One network (`vgg28` with BoF exits, two-phase, the library's image-folder defaults: no flips,
since a mirrored digit is another symbol; `--flip` turns them on to measure that choice) is
trained on the folder; its exits are then calibrated twice with the
function training calibrates with, on the training split (the default) and on the validation split
(`calibration_split val`), and every exit policy is compared on the test set for each. The
baselines' knob grids come from the validation split alone, so they are the same in both; only
the calibrated rules move. Writes small_folder.json and small_folder.md into --out: full-network
accuracy, the proposed rule's knee against the best baseline's, and accuracy at 40% and 50% of
the MACs for every policy, with the number of test images the differences are counted on.
Default settings take under a minute on a shared 2-core CPU (training ~40 s); --quick about 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bofexits._io import write_json, write_text
from bofexits.config import TrainConfig, resolve_config
from bofexits.data import ImageDataset
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.compare import compare_policies
from bofexits.evaluation.comparison import BASELINES, Comparison, FamilyResult
from bofexits.evaluation.points import MAX_DROP, Point, at_compute
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import ExitCalibration
from bofexits.reporting.claims import check_claims
from bofexits.reporting.format import pct, pct_value, pp
from bofexits.reporting.tables import markdown_table
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.loop import CHECKPOINT, calibrate, train
from bofexits.training.splits import run_splits

IMAGE_SIZE = 28  # vgg28's input; the loader would resize anyway, the files are stored at it
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the folder's train/test split: fixed, so every --seed is scored on the same test set
LEVELS = (0.4, 0.5)
SPLITS = ("train", "val")
MANIFEST = ".small_folder.json"  # hidden: the image-folder loader skips it
SOURCE = "sklearn.datasets.load_digits"


# --- the image folder ------------------------------------------------------------------------------


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) float in [0, 16], labels (N,)) of scikit-learn's bundled digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit(
            "benchmarks/small_folder.py needs scikit-learn for its bundled digits: pip install scikit-learn"
        ) from None
    digits = load_digits()
    return digits.images, digits.target


def _split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices, sorted; fixed by `SPLIT_SEED`."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    return np.sort(train), np.sort(test)


def _to_png(scan: np.ndarray, path: Path) -> None:
    grey = np.clip(np.rint(scan * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (8, 8), ink bright
    Image.fromarray(grey).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR).save(path)


def _manifest(train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "image_size": IMAGE_SIZE,
        "test_fraction": TEST_FRACTION,
        "split_seed": SPLIT_SEED,
        "num_train": len(train),
        "num_test": len(test),
    }


def _complete(root: Path, expected: dict[str, Any]) -> bool:
    """Whether `root` is a folder this script finished with the same settings and all its files."""
    try:
        found = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if found != expected:
        return False
    counts = {part: sum(1 for _ in (root / part).glob("*/*.png")) for part in ("train", "test")}
    return counts == {"train": expected["num_train"], "test": expected["num_test"]}


def build_folder(root: Path) -> dict[str, Any]:
    """Write the digits as `root/{train,test}/<digit>/NNNN.png` unless a complete copy is there.

    Returns the folder's manifest (with `reused`). A folder in the way that this script did not
    finish is refused, never deleted.
    """
    images, labels = _load_digits()
    train, test = _split(labels)
    expected = _manifest(train, test)
    if _complete(root, expected):
        return {**expected, "reused": True}
    if root.exists() and any(root.iterdir()):
        raise SystemExit(
            f"{root} exists but is not a complete digits folder written by this script; remove it or pass "
            "another --data-dir"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    try:
        for part, index in (("train", train), ("test", test)):
            for i in index:
                folder = tmp / part / str(int(labels[i]))
                folder.mkdir(parents=True, exist_ok=True)
                _to_png(images[i], folder / f"{int(i):04d}.png")
        (tmp / MANIFEST).write_text(json.dumps(expected, indent=2) + "\n")
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {**expected, "reused": False}


# --- training and the comparison ------------------------------------------------------------------


def _config(args: argparse.Namespace, data_dir: Path) -> TrainConfig:
    overrides: dict[str, Any] = {
        "dataset": "image-folder",
        "data_dir": str(data_dir),
        "seed": args.seed,
        "epochs": args.epochs,
        "exit_epochs": args.exit_epochs,
        "batch_size": args.batch_size,
        "crop_padding": 2,  # as the MNIST recipe
        "device": args.device,
        "threads": args.threads,
        "calibration_split": "train",  # the other split is calibrated below, on the same network
    }
    if args.flip is not None:  # else the image-folder recipe's (no flips)
        overrides["flip"] = args.flip
    if args.quick:
        overrides.update(widths=[4, 8, 8, 16], codewords=8, kmeans_images=64, batch_size=64)
    return resolve_config(overrides)


def _trained(cfg: TrainConfig, run_dir: Path) -> tuple[Path, float, bool]:
    """The run's checkpoint (trained unless a complete one with this config is there), seconds, reused."""
    ckpt = run_dir / CHECKPOINT
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("complete") and state["config"] == cfg.to_dict():
            return ckpt, 0.0, True
    started = time.perf_counter()
    train(cfg, run_dir, resume=False, progress=False)
    return ckpt, time.perf_counter() - started, False


def _summary(p: Point | None, num_test: int) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "accuracy": p.accuracy,
        "correct": round(p.accuracy * num_test),
        "relative_macs": p.relative_macs,
        "balance": p.balance,
        "exit_fractions": list(p.exit_fractions),
        "knob": p.knob,
        "value": p.value,
    }


def _family(f: FamilyResult, num_test: int) -> dict[str, Any]:
    return {
        "label": f.label,
        "knob": f.knob,
        "knee": _summary(f.knee, num_test),
        "at": {f"{lv:g}": _summary(at_compute(f.points, lv), num_test) for lv in LEVELS},
    }


def calibrations_by_split(
    model: MultiExitNetwork, stored: dict[str, ExitCalibration], val: ImageDataset
) -> dict[str, dict[str, ExitCalibration]]:
    """Calibration split -> the statistics of every score: the checkpoint's (training split) and,
    fitted by the function training calibrates with, the validation split's, which is what
    training with `calibration_split val` stores (the network does not depend on the split)."""
    return {"train": stored, "val": calibrate(model, val)}


def _paired(comparison: Comparison) -> dict[str, Any]:
    """The comparison's paired-bootstrap contrasts (proposed minus the best baseline at matched compute)
    at each of `LEVELS` and at the proposed knee's MACs; {} where the library computes none."""
    find = getattr(comparison, "contrast", None)  # `Comparison.contrast`: absent before contrasts existed
    if find is None:
        return {}
    found = {f"{lv:g}": find(lv) for lv in LEVELS} | {"knee": find(0.0, knee=True)}
    return {
        key: {"level": c.level, "rival": c.rival, **c.interval.to_dict()}
        for key, c in found.items()
        if c is not None
    }


def split_result(comparison: Comparison, split: str, calibration_images: int) -> dict[str, Any]:
    """The numbers of one calibration split: full accuracy, knees and matched-compute points."""
    n = comparison.num_test
    families = {f.name: _family(f, n) for f in comparison.families}
    proposed = comparison.proposed
    mine = families[proposed.name]

    def best(choose: Any, key: Any) -> dict[str, Any] | None:
        found = [(name, choose(families[name])) for name in BASELINES if name in families]
        found = [(name, p) for name, p in found if p is not None]
        if not found:
            return None
        name, p = max(found, key=lambda r: key(r[1]))
        return {"policy": name, **p}

    best_knee = best(lambda f: f["knee"], lambda p: (-p["relative_macs"], p["accuracy"]))
    # As `Comparison.best_baseline`: the most accurate, the first of `BASELINES` on ties.
    best_at = {lv: best(lambda f, lv=lv: f["at"][lv], lambda p: p["accuracy"]) for lv in mine["at"]}

    def diff(a: dict[str, Any] | None, b: dict[str, Any] | None, field: str) -> float | None:
        return None if a is None or b is None else 100 * (a[field] - b[field])

    return {
        "calibration_split": split,
        "calibration_images": calibration_images,
        "num_test": n,
        "num_val": comparison.num_val,
        "full_accuracy": comparison.full_accuracy,
        "rule": proposed.label,
        "proposed": {
            "knee": mine["knee"],
            "at": mine["at"],
        },
        "best_baseline": {
            "knee": best_knee,
            "knee_macs_difference_pp": diff(mine["knee"], best_knee, "relative_macs"),
            "knee_accuracy_difference_pp": diff(mine["knee"], best_knee, "accuracy"),
            "at": best_at,
            "at_accuracy_difference_pp": {
                lv: diff(mine["at"][lv], best_at[lv], "accuracy") for lv in best_at
            },
        },
        "paired": _paired(comparison),
        "families": families,
        "exit_confidence_medians": comparison.exit_confidence_medians,
        "claims": {c.claim: c.verdict for c in comparison.claims},
    }


# --- rendering ------------------------------------------------------------------------------------


def _cell(p: dict[str, Any] | None) -> str:
    if p is None:
        return "unreachable"
    return f"{pct_value(p['accuracy'])} @ {pct(p['relative_macs'], 1)} ({p['correct']})"


def _split_table(r: dict[str, Any]) -> str:
    header = [
        "policy",
        "knee: acc % @ MACs (correct)",
        *[f"<= {float(lv):.0%} MACs: acc % @ MACs" for lv in LEVELS],
    ]
    rows = []
    for name, f in r["families"].items():
        label = f"**{name}**" if name == "proposed" else name
        rows.append(
            [f"{label}: {f['label']}", _cell(f["knee"]), *[_cell(f["at"][f"{lv:g}"]) for lv in LEVELS]]
        )
    return markdown_table(header, rows)


def _headline(r: dict[str, Any]) -> list[str]:
    mine, best = r["proposed"], r["best_baseline"]
    knee, other = mine["knee"], best["knee"]
    lines = [f"- full network: {pct(r['full_accuracy'])} on {r['num_test']} test images"]
    if knee is None:
        lines.append("- knee: the proposed rule never comes within the tolerance of the full network")
    else:
        vs = "no baseline reaches the tolerance"
        if other is not None:
            vs = (
                f"best baseline {other['policy']} {pct(other['accuracy'])} @ {pct(other['relative_macs'], 1)} "
                f"(proposed uses {pp(knee['relative_macs'] - other['relative_macs'], 1)} of the MACs)"
            )
        lines.append(f"- knee: proposed {pct(knee['accuracy'])} @ {pct(knee['relative_macs'], 1)}; {vs}")
        at_knee = r["paired"].get("knee")
        if at_knee is not None:
            lines.append(
                f"- at the knee's MACs, against the best baseline within them ({at_knee['rival']}): "
                f"{_interval(at_knee)}"
            )
    for lv in LEVELS:
        key = f"{lv:g}"
        a, b, d = mine["at"][key], best["at"][key], best["at_accuracy_difference_pp"][key]
        if a is None or b is None or d is None:
            lines.append(f"- <= {lv:.0%} MACs: proposed {_cell(a)}, best baseline {_cell(b)}")
            continue
        images = a["correct"] - b["correct"]
        paired = r["paired"].get(key)
        interval = f", {_interval(paired, difference=False)}" if paired is not None else ""
        lines.append(
            f"- <= {lv:.0%} MACs: proposed {_cell(a)} vs {b['policy']} {_cell(b)}: {d:+.2f} pp "
            f"({images:+d} images){interval}"
        )
    return lines


def _interval(c: dict[str, Any], *, difference: bool = True) -> str:
    """A paired contrast: difference, interval, verdict, discordant images and McNemar's p."""
    return (
        (f"{pp(c['difference'])}, " if difference else "")
        + f"{c['confidence']:.0%} interval [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}] "
        f"{c['verdict']} "
        f"(images right only with the proposed rule: {c['only_a']}, only with {c['rival']}: {c['only_b']}; "
        f"McNemar p {c['mcnemar_p']:.2f})"
    )


def render_markdown(result: dict[str, Any]) -> str:
    data, settings = result["data"], result["settings"]
    out = [
        "# Exit rules on a small image folder: scikit-learn digits",
        "",
        f"Produced by `{result['command']}` on {result['date'][:10]} ({'quick' if result['quick'] else 'full'} "
        f"settings, {result['wall_s']['total']:.0f} s). Data: {SOURCE}, {data['num_train']} train + "
        f"{data['num_test']} test 8x8 scans as {IMAGE_SIZE}x{IMAGE_SIZE} grey PNGs in {data['folder']}; "
        f"training held out {result['num_val']} images for validation. Network: {settings['backbone']}, "
        f"{settings['mode']}, {settings['epochs']} + {settings['exit_epochs']} epochs, seed {settings['seed']}, "
        f"{'with' if settings.get('flip') else 'no'} horizontal flips.",
        "",
        f"Knee: the cheapest point within {pp(MAX_DROP, 1, signed=False)} of the full network. `<= X MACs`: the most "
        "accurate point using at most that share of the backbone's MACs. Cells: accuracy % @ MACs (correct test "
        f"images). Best baseline: the best of {', '.join(BASELINES)}. Differences are on one test set of "
        f"{result['num_test']} images, so one image is {100 / max(result['num_test'], 1):.2f} pp. Paired: "
        "the library's paired bootstrap of proposed minus the best baseline at matched compute, with its "
        "interval in pp and win/tie/loss (`Comparison.contrasts`).",
        "",
    ]
    for split, r in result["splits"].items():
        out += [
            f"## Calibrated on the {'training' if split == 'train' else 'validation'} split "
            f"({r['calibration_images']} images)",
            "",
            *_headline(r),
            "",
            _split_table(r),
            "",
        ]
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/small_folder"))
    ap.add_argument("--data-dir", type=Path, help="where the image folder is written (default: OUT/digits)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (the folder's split is fixed)")
    ap.add_argument("--epochs", type=int, default=15, help="backbone epochs")
    ap.add_argument("--exit-epochs", type=int, default=5, help="exit epochs on the frozen backbone")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--points", type=int, default=101, help="knob values per threshold policy")
    ap.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core CPU, tiny ops with 2 threads ran ~100x slower)",
    )
    ap.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips in training (default: the image-folder recipe's, none)",
    )
    ap.add_argument("--quick", action="store_true", help="a tiny network and schedule: a few seconds")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.quick:
        args.epochs, args.exit_epochs, args.points = 1, 1, 21
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = _run(args, argv)
    finally:  # training sets the run's threads too; a caller (a test) gets its own back
        torch.set_num_threads(threads)
    print(render_markdown(result))
    return result


def _run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Build the folder, train (or reuse), compare per calibration split, write the JSON and markdown."""
    started = time.perf_counter()
    data_dir = args.data_dir or args.out / "digits"
    data = build_folder(data_dir)
    built = time.perf_counter()
    cfg = _config(args, data_dir)
    run_dir = args.out / ("run-quick" if args.quick else f"run-seed{args.seed}{'-flip' if cfg.flip else ''}")
    ckpt, train_s, reused = _trained(cfg, run_dir)
    model, calibrations, cfg = load_model(ckpt)
    train_set, val, test = run_splits(cfg)
    fits = calibrations_by_split(model, calibrations, val)
    result_splits: dict[str, Any] = {}
    for split in SPLITS:
        comparison = compare_policies(
            model,
            fits[split],
            val,
            test,
            score=cfg.score,
            variant=cfg.variant,
            points=args.points,
            timing_samples=0,
            device=args.device,
        )
        comparison.claims = check_claims(comparison)
        images = len(train_set) if split == "train" else len(val)
        result_splits[split] = split_result(comparison, split, images)
    test_logits, labels = collect_logits(model, test)
    result = {
        "command": " ".join(["python benchmarks/small_folder.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "backbone": cfg.model.backbone,
            "mode": cfg.mode,
            "epochs": cfg.epochs,
            "exit_epochs": cfg.exit_epochs,
            "seed": cfg.seed,
            "flip": cfg.flip,
            "points": args.points,
            "device": args.device,
            "config": cfg.to_dict(),
        },
        "data": {**data, "folder": str(data_dir)},
        "num_test": len(test),
        "num_val": len(val),
        "num_train_fit": len(train_set),
        "exit_accuracies": [float((lg.argmax(1) == labels).float().mean()) for lg in test_logits],
        "levels": list(LEVELS),
        "max_drop": MAX_DROP,
        "baselines": list(BASELINES),
        "splits": result_splits,
        "run_dir": str(run_dir),
        "wall_s": {"build": built - started, "train": train_s, "train_reused": reused},
    }
    result["wall_s"]["total"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "small_folder.json", result)
    write_text(args.out / "small_folder.md", render_markdown(result))
    return result


if __name__ == "__main__":
    main()
