"""Head to head with the outside early-exit toolkit `earlyon` (PyPI, 0.3.0) on one frozen backbone.

    .venv-earlyon/bin/python benchmarks/peers/earlyon.py [CHECKPOINT] [--exit-epochs 2] [--threads 1]
        [--images 300] [--batched-images 1024] [--batch 256] [--rounds 3] [--out runs/benchmarks/peers]
        [--quick]

Needs earlyon and its dependencies beside bofexits (benchmarks/peers/requirements-earlyon.txt;
the project's .venv does not carry them). Both libraries get the same frozen backbone: the
checkpoint's `model.stages` (the `make demo` vgg28 on Fashion-MNIST, 1x28x28), the same
train / validation / test split (`run_splits`: the validation split training held out with the
run's seed and val_fraction), and exits at the same positions (after stages 1..3).

* bofexits: the checkpoint's trained BoF exits and its calibrated rule (score and variant of the
  run); beta tuned on the validation split (`tune_beta`) for each target.
* earlyon: `custom_ee(nn.Sequential(*stages), ["0", "1", "2"])` on a copy of the same stages, its
  heads trained with its own two-stage recipe (`stage2_train_exits`: frozen backbone, Adam 1e-3,
  --exit-epochs epochs, unaugmented training split), its thresholds calibrated with its own
  `calibrate_thresholds` / `calibrate_thresholds_for_budget` on the same validation split.

Targets: an accuracy drop of at most 0.5 pp from the full network, and a budget of 50 % of the
backbone's compute (each library's own notion of compute: bofexits counts exits' MACs, earlyon's
calibrator uses its fvcore estimate of backbone FLOPs, exit heads excluded).

Measured the same way for both, on the test split: accuracy, MACs of what ran (bofexits'
FlopCounterMode counter, `count_macs`, for every stage and every head; a sample that leaves at
exit e paid stages 1..e plus every head evaluated on its way), exit distribution and balance;
batch-1 mean / p95 latency and batched throughput with real early exit, all callables timed
interleaved in one run. earlyon's batch-1 router stops per image; its batched router
(`forward_inference_batched`) stops a whole batch only when every sample clears one exit, so its
batched accuracy and MACs are reported separately.

Writes earlyon.json and earlyon.md into --out.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import json
import logging
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bofexits.data.dataset import ImageDataset
from bofexits.errors import TargetUnreachableError
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.cost import CostTable, count_macs, measure_costs
from bofexits.evaluation.metrics import balance, exit_distribution
from bofexits.evaluation.timing import cpu_model, interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold
from bofexits.reporting.tables import markdown_table
from bofexits.training.checkpoint import load_model
from bofexits.training.splits import run_splits
from bofexits.training.tuning import tune_beta

# Run as a script, this file's folder is sys.path[0] and this file would shadow the earlyon package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE.parent))  # benchmarks/: the shared README-block writer
from _readme_blocks import write_block  # noqa: E402

try:
    from earlyon.core.thresholds import calibrate_thresholds, calibrate_thresholds_for_budget
    from earlyon.models import custom_ee
    from earlyon.training import stage2_train_exits
    from earlyon.utils import load_wrapper, save_wrapper

    EARLYON_ERROR: str | None = None
except Exception as exc:  # recorded, not hidden: the report says why earlyon did not run
    EARLYON_ERROR = f"{type(exc).__name__}: {exc}"

log = logging.getLogger("peers.earlyon")
TARGETS = {"accuracy drop <= 0.5 pp": {"max_drop_pp": 0.5}, "compute budget 50 %": {"budget": 0.5}}
EXIT_LAYERS = ["0", "1", "2"]  # children of nn.Sequential(*stages): after stages 1..3
PLAIN = "plain backbone (eager)"


def _tensors(data: ImageDataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, C, H, W) float images and (N,) labels, in order (the first `limit`)."""
    if limit is not None and limit < len(data):
        data = data.subset(torch.arange(limit))
    return next(data.batches(len(data), shuffle=False))


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int, shuffle: bool) -> DataLoader[Any]:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle, generator=gen)


# ---------------------------------------------------------------- bofexits side


def _bofexits_side(
    model: MultiExitNetwork, cal: Any, variant: str, costs: CostTable, val: tuple, test: tuple
) -> dict[str, dict[str, Any]]:
    """Per target: beta tuned on validation, and the real runtime's exits on the test split."""
    logits, labels = collect_logits(model, _dataset_like(*val))
    out = {}
    for name, target in TARGETS.items():
        try:
            tuned = tune_beta(logits, labels, cal, costs, variant=variant, **target)
            beta, met, note = tuned.beta, True, ""
        except TargetUnreachableError as exc:  # record the closest point rather than stop
            beta, met, note = (0.0 if "budget" in target else 1.0), False, str(exc)
            tuned = None
        runtime = AdaptiveRuntime(model, CalibratedThreshold(cal, beta, variant), check_inputs=False)
        preds, exits = [], []
        for i in range(0, len(test[0]), 1024):
            r = runtime.run_batched(test[0][i : i + 1024])
            preds.append(r.predictions)
            exits.append(r.exit_index)
        out[name] = {
            "runtime": runtime,
            "knob": {"beta": beta, "variant": variant, "score": cal.score},
            "validation": (tuned.to_dict() if tuned else {}) | {"target_met": met, "note": note},
            "predictions": torch.cat(preds),
            "exit_index": torch.cat(exits),
            "sample_macs": costs.macs_for(torch.cat(exits)).double(),
        }
    return out


def _dataset_like(x: torch.Tensor, y: torch.Tensor) -> Any:
    """An object with `batches` over already-normalised tensors, for `collect_logits`."""

    class _Tensors:
        def batches(self, batch: int, shuffle: bool) -> Any:
            for i in range(0, len(x), batch):
                yield x[i : i + batch], y[i : i + batch]

    return _Tensors()


# ---------------------------------------------------------------- earlyon side


def _earlyon_factory(model: MultiExitNetwork) -> Callable[[], Any]:
    """A fresh earlyon wrapper on its own copy of the frozen stages (hooks never touch bofexits')."""
    stages = [copy.deepcopy(s) for s in model.stages]
    shape = (1, *model.input_shape)

    def make() -> Any:
        backbone = nn.Sequential(*copy.deepcopy(stages)).eval()
        return custom_ee(backbone, EXIT_LAYERS, model.num_classes, input_shape=shape)  # type: ignore[arg-type]

    return make


def _train_earlyon(make: Callable[[], Any], train: tuple, epochs: int, batch: int, path: Path) -> list[dict]:
    wrapper = make()
    history: list[dict] = []

    def on_epoch(entry: Any) -> None:
        history.append(
            {"epoch": entry.epoch, "loss": entry.loss, "per_exit_accuracy": entry.per_exit_accuracy}
        )
        log.info("earlyon exits epoch %d: loss %.4f %s", entry.epoch, entry.loss, entry.per_exit_accuracy)

    stage2_train_exits(wrapper, _loader(*train, batch, True), epochs=epochs, on_epoch_end=on_epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "custom_ee needs a factory to reload": we pass one
        save_wrapper(wrapper, path)
    return history


def _head_macs(wrapper: Any, stage_macs: list[int], input_shape: tuple) -> list[int]:
    """MACs of each earlyon exit head on one sample, counted like bofexits' (`count_macs`)."""
    x = torch.zeros(1, *input_shape)
    out = []
    with torch.no_grad():
        for i, name in enumerate(wrapper.exit_heads):
            x = wrapper.backbone[i](x)
            out.append(count_macs(partial(wrapper.exit_heads[name].eval(), x)))
    return out


def _earlyon_macs(exit_at: int, enabled: list[bool], stage_macs: list[int], head_macs: list[int]) -> int:
    """Leaving at exit `exit_at` (0-based; last = the final classifier) pays its stages plus the
    enabled heads evaluated on the way (a disabled head is skipped by earlyon's hook)."""
    heads = sum(h for h, on in zip(head_macs[: exit_at + 1], enabled, strict=False) if on)
    return sum(stage_macs[: exit_at + 1]) + heads


def _earlyon_side(
    make: Callable[[], Any], path: Path, stage_macs: list[int], val: tuple, test: tuple, batch: int
) -> dict[str, dict[str, Any]]:
    last = len(stage_macs) - 1
    out = {}
    for name, target in TARGETS.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapper = load_wrapper(path, factory=make).eval()
            loader = _loader(*val, 512, False)
            if "max_drop_pp" in target:
                res = calibrate_thresholds(wrapper, loader, target_accuracy_drop=target["max_drop_pp"] / 100)
            else:
                res = calibrate_thresholds_for_budget(wrapper, loader, target_computation=target["budget"])
        enabled = list(wrapper.config.enabled_exits)
        head_macs = _head_macs(wrapper, stage_macs, test[0].shape[1:])
        preds, exits = [], []
        for i in range(len(test[0])):  # the per-image router: real early exit at batch 1
            r = wrapper(test[0][i : i + 1], mode="inference")
            preds.append(int(r.prediction.argmax(1)))
            exits.append(last if r.exit_taken < 0 else r.exit_taken)
        bpreds, bexits = [], []
        for i in range(0, len(test[0]), batch):  # the batched router: the whole batch leaves together
            xb = test[0][i : i + batch]
            r = wrapper.forward_inference_batched(xb)
            bpreds.append(r.predictions.argmax(1))
            bexits += [last if r.exit_taken < 0 else r.exit_taken] * len(xb)
        exit_index = torch.tensor(exits)
        out[name] = {
            "wrapper": wrapper,
            "knob": {
                "thresholds": list(res.thresholds),
                "enabled_exits": enabled,
                "policy": res.policy,
                "estimated_flops_fractions": dict(wrapper.flops_estimate.fractions),
                "flops_estimate_method": wrapper.flops_estimate.method,
            },
            "validation": {
                "objective": res.objective,
                "baseline_accuracy": res.baseline_accuracy,
                "final_accuracy": res.final_accuracy,
                "accuracy_delta": res.accuracy_delta,
                "avg_estimated_computation": res.avg_computation_used,
                "budget_met": res.budget_met,
                "target_met": (
                    res.accuracy_delta <= target["max_drop_pp"] / 100 + 1e-12
                    if "max_drop_pp" in target
                    else res.budget_met
                ),
                "warnings": [str(w.message) for w in caught if "earlyon" in w.filename],
            },
            "head_macs": head_macs,
            "predictions": torch.tensor(preds),
            "exit_index": exit_index,
            "sample_macs": torch.tensor(
                [_earlyon_macs(int(e), enabled, stage_macs, head_macs) for e in exits]
            ).double(),
            "batched_predictions": torch.cat(bpreds),
            "batched_exit_index": torch.tensor(bexits),
            "batched_sample_macs": torch.tensor(
                [_earlyon_macs(int(e), enabled, stage_macs, head_macs) for e in bexits]
            ).double(),
        }
    return out


# ---------------------------------------------------------------- measuring both the same way


def _outcome(
    side: dict[str, Any], y: torch.Tensor, backbone_macs: int, num_exits: int, prefix: str = ""
) -> dict:
    exits = side[f"{prefix}exit_index"]
    fractions = exit_distribution(exits, num_exits)
    return {
        "accuracy": float((side[f"{prefix}predictions"] == y).float().mean()),
        "mean_macs": float(side[f"{prefix}sample_macs"].mean()),
        "relative_macs": float(side[f"{prefix}sample_macs"].mean() / backbone_macs),
        "exit_fractions": fractions,
        "balance": balance(fractions),
    }


def _timing(
    bof: dict, eo: dict, plain: nn.Module, x: torch.Tensor, images: int, batched: int, batch: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Batch-1 mean / p95 ms and batched images/s of every configuration, interleaved in one run."""
    singles = [x[i : i + 1] for i in range(min(images, len(x)))]
    batches = [x[i : i + batch] for i in range(0, min(batched, len(x)) - batch + 1, batch)] or [x[:batch]]
    some = next(iter(bof.values()))["runtime"]
    one: dict[str, Callable[[Any], object]] = {PLAIN: plain, "plain backbone (bofexits folded)": some.plain}
    many: dict[str, Callable[[Any], object]] = dict(one)
    for target in TARGETS:
        one[f"bofexits/{target}"] = bof[target]["runtime"].run_single
        many[f"bofexits/{target}"] = bof[target]["runtime"].run_batched
        one[f"earlyon/{target}"] = partial(eo[target]["wrapper"], mode="inference")
        many[f"earlyon/{target}"] = eo[target]["wrapper"].forward_inference_batched
    with torch.inference_mode():
        t1 = interleaved_timing(one, singles, reference=PLAIN, rounds=rounds)
        tb = interleaved_timing(many, batches, reference=PLAIN, rounds=rounds)
    return {
        name: {
            "batch1_mean_ms": t1.mean(name) * 1e3,
            "batch1_p95_ms": t1.percentile(name, 95) * 1e3,
            "batch1_speedup": t1.mean_speedup(name),
            "batched_images_per_s": 1.0 / tb.mean(name),
            "batched_speedup": tb.mean_speedup(name),
        }
        for name in one
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("bofexits", "earlyon", "torch", "torchvision", "fvcore", "numpy", "click"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ---------------------------------------------------------------- report

ROWS = [  # label, key, digits, higher is better (None: no winner)
    ("test accuracy %", "accuracy", 2, True),
    ("MACs of what ran, % of backbone", "relative_macs", 1, False),
    ("batch-1 mean ms", "batch1_mean_ms", 3, False),
    ("batch-1 p95 ms", "batch1_p95_ms", 3, False),
    ("batch-1 speedup vs plain eager", "batch1_speedup", 2, True),
    ("batched images/s", "batched_images_per_s", 0, True),
    ("batched: test accuracy %", "batched_accuracy", 2, True),
    ("batched: MACs, % of backbone", "batched_relative_macs", 1, False),
    ("exit balance (1 = uniform)", "balance", 3, None),
]


def _cell(value: float, key: str, digits: int) -> str:
    pct = key.endswith("accuracy") or key.endswith("relative_macs")
    return f"{100 * value:.{digits}f}" if pct else f"{value:.{digits}f}"


def _winner(b: float, e: float, higher: bool | None, key: str, digits: int) -> str:
    if higher is None or _cell(b, key, digits) == _cell(e, key, digits):
        return "-" if higher is None else "tie"
    return "bofexits" if (b > e) == higher else "**earlyon wins**"


def readme_block(table: str) -> str:
    """earlyon.md for the README: without its title, its sections one heading level down."""
    lines = table.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("###" + line[1:] if line.startswith("## ") else line for line in lines).strip()


def markdown(r: dict[str, Any]) -> str:
    """earlyon.md: setup, commands, then per target one row per measure with the winner named."""
    v = r["versions"]
    parts = [
        f"# bofexits vs earlyon {v['earlyon']} on the `{r['checkpoint']}` backbone",
        "",
        f"{r['setup']} CPU: {r['hardware']['cpu']} ({r['hardware']['cores']} cores), {r['threads']} thread(s); "
        f"torch {v['torch']}, torchvision {v['torchvision']}, fvcore {v['fvcore']}, bofexits {v['bofexits']}, "
        f"python {v['python']}. Wall time {r['wall_s']:.0f} s.",
        "",
        "Commands:",
        "",
        "```bash",
        *r["commands"],
        "```",
    ]
    for target, t in r["targets"].items():
        b, e = t["bofexits"], t["earlyon"]
        rows = [
            [label, _cell(b[key], key, d), _cell(e[key], key, d), _winner(b[key], e[key], hi, key, d)]
            for label, key, d, hi in ROWS
        ]
        rows.append(["exit fractions (1, 2, 3, final)", _fractions(b), _fractions(e), "-"])
        rows.append(["target met on validation", str(b["target_met"]), str(e["target_met"]), "-"])
        parts += [
            "",
            f"## {target}",
            "",
            f"bofexits: {_bof_knob(t['bofexits_knob'])}. earlyon: {_eo_knob(t['earlyon_knob'])}.",
            "",
            markdown_table(["measure", "bofexits", "earlyon", "better"], rows),
        ]
    p = r["plain"]
    parts += [
        "",
        f"Plain backbone, eager: {p['accuracy'] * 100:.2f} % test accuracy, {p['batch1_mean_ms']:.3f} ms at batch 1, "
        f"{p['batched_images_per_s']:.0f} images/s at batch {r['batch']}; bofexits' folded plain backbone: "
        f"{r['plain_folded']['batch1_mean_ms']:.3f} ms, {r['plain_folded']['batched_images_per_s']:.0f} images/s.",
        "",
        "Not comparable, and why:",
        "",
        *[f"- {n}" for n in r["notes"]],
    ]
    return "\n".join(parts)


def _bof_knob(k: dict[str, Any]) -> str:
    return f"{k['variant']} rule on {k['score']}, beta {k['beta']:g} (tuned on validation)"


def _eo_knob(k: dict[str, Any]) -> str:
    thr = ", ".join(
        f"{t:g}" if on else "off" for t, on in zip(k["thresholds"], k["enabled_exits"], strict=True)
    )
    est = ", ".join(f"{f:.3f}" for f in k["estimated_flops_fractions"].values())
    return f"{k['policy']} thresholds per exit [{thr}] (its fvcore FLOPs estimate at the exits: {est})"


def _fractions(side: dict[str, Any]) -> str:
    return " / ".join(f"{f:.3f}" for f in side["exit_fractions"])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", type=Path, default=Path("runs/demo/checkpoint.pt"))
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/peers"))
    ap.add_argument("--data-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--exit-epochs", type=int, default=2, help="earlyon exit-head epochs (its default: 20)")
    ap.add_argument("--train-images", type=int, help="first N of the training split for earlyon's heads")
    ap.add_argument("--test-images", type=int, help="first N of the test split (default: all)")
    ap.add_argument("--images", type=int, default=300, help="test images timed at batch 1")
    ap.add_argument("--batched-images", type=int, default=1024, help="test images timed in batches")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--quick", action="store_true", help="1 epoch on 1024 train / 500 test images, short timing"
    )
    ap.add_argument("--readme", action="store_true", help="replace the README's earlyon block with the table")
    return ap


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args()
    if EARLYON_ERROR is not None:
        raise SystemExit(
            f"earlyon is not importable ({EARLYON_ERROR}); install benchmarks/peers/requirements-earlyon.txt"
        )
    if args.quick:
        args.exit_epochs, args.train_images, args.test_images = 1, 1024, 500
        args.images, args.batched_images, args.batch, args.rounds = 50, 256, 64, 2
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, calibrations, cfg = load_model(args.checkpoint)
    model.eval()
    cal = calibrations[cfg.score]
    if args.data_dir:
        cfg.data_dir = args.data_dir
    train_set, val_set, test_set = run_splits(cfg)
    train, val, test = (
        _tensors(train_set, args.train_images),
        _tensors(val_set),
        _tensors(test_set, args.test_images),
    )
    costs = measure_costs(model)
    n = model.num_exits
    bof = _bofexits_side(model, cal, cfg.variant, costs, val, test)
    log.info("bofexits tuned: %s", {t: s["knob"]["beta"] for t, s in bof.items()})
    make = _earlyon_factory(model)
    with tempfile.TemporaryDirectory(prefix="peer-earlyon-") as tmp:
        history = _train_earlyon(make, train, args.exit_epochs, cfg.batch_size, Path(tmp) / "earlyon.pt")
        eo = _earlyon_side(make, Path(tmp) / "earlyon.pt", costs.stage_macs, val, test, args.batch)
    log.info("earlyon calibrated: %s", {t: s["knob"]["thresholds"] for t, s in eo.items()})
    plain = nn.Sequential(*copy.deepcopy(list(model.stages))).eval()
    times = _timing(bof, eo, plain, test[0], args.images, args.batched_images, args.batch, args.rounds)
    y = test[1]
    targets = {}
    for t in TARGETS:
        sides = {}
        for lib, side in (("bofexits", bof[t]), ("earlyon", eo[t])):
            o = _outcome(side, y, costs.backbone_macs, n) | times[f"{lib}/{t}"]
            batched = _outcome(side, y, costs.backbone_macs, n, "batched_") if lib == "earlyon" else o
            o |= {"batched_accuracy": batched["accuracy"], "batched_relative_macs": batched["relative_macs"]}
            o |= {"target_met": side["validation"]["target_met"], "validation": side["validation"]}
            sides[lib] = o
        targets[t] = sides | {
            "bofexits_knob": bof[t]["knob"],
            "earlyon_knob": eo[t]["knob"],
            "earlyon_head_macs": eo[t]["head_macs"],
        }
    with torch.inference_mode():
        plain_acc = float(
            torch.cat([plain(test[0][i : i + 1024]).argmax(1) for i in range(0, len(y), 1024)])
            .eq(y)
            .float()
            .mean()
        )
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {
        "checkpoint": str(args.checkpoint),
        "setup": (
            f"Frozen {cfg.model.backbone} from `{args.checkpoint}` on {cfg.dataset} ({len(train[0])} training images "
            f"for earlyon's heads, {len(val[0])} validation, {len(y)} test); exits after stages 1..3; earlyon heads "
            f"trained {args.exit_epochs} epoch(s) with `stage2_train_exits` (Adam 1e-3, batch {cfg.batch_size}); "
            f"batch 1 timed over {len(test[0][: args.images])} images, batch {args.batch} over "
            f"{min(args.batched_images, len(y))}, {args.rounds} interleaved rounds."
        ),
        "versions": _versions(),
        "commands": [
            "python3.11 -m venv .venv-earlyon",
            ".venv-earlyon/bin/pip install -r benchmarks/peers/requirements-earlyon.txt",
            ".venv-earlyon/bin/pip install --no-deps -e .",
            f".venv-earlyon/bin/python benchmarks/peers/earlyon.py {argv}".rstrip(),
        ],
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine()},
        "threads": args.threads,
        "batch": args.batch,
        "exit_epochs": args.exit_epochs,
        "costs": costs.to_dict(),
        "earlyon_training": history,
        "targets": targets,
        "plain": {"accuracy": plain_acc} | times[PLAIN],
        "plain_folded": times["plain backbone (bofexits folded)"],
        "notes": NOTES,
        "wall_s": time.perf_counter() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "earlyon.json").write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    table = markdown(result)
    (args.out / "earlyon.md").write_text(table + "\n")
    if args.readme:
        write_block("earlyon", readme_block(table))
    print(table)


def _jsonable(o: object) -> object:
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


NOTES = [
    "Exit heads differ by design: bofexits' are the checkpoint's BoF exits trained in its own two-phase run "
    "(the checkpoint config's exit_epochs, with augmentation); earlyon's are GAP + MLP heads trained here for "
    "--exit-epochs epochs (its recipe's default is 20), unaugmented. Fewer epochs can only favour bofexits.",
    "Compute targets are each library's own: bofexits' budget counts exit MACs; earlyon's calibrator meets "
    "its fvcore *estimate* of backbone FLOPs, exit heads excluded. The table counts both with one counter.",
    "bofexits' runtime folds BatchNorm into the convolutions and runs batches channels-last (its default); "
    "earlyon runs the eager stages with hooks. Both plain backbones are timed so the gap can be read.",
    "earlyon's batched router exits a whole batch only when every sample clears one exit, so at batch "
    "sizes worth timing it rarely exits; its batched rows are its real batched path, not per-sample routing.",
    "No torchvision ResNet-18 run: earlyon's `custom_ee` wraps any nn.Module whose forward returns logits, "
    "so it ran on the same frozen vgg28 as bofexits and no fallback backbone was needed.",
]


if __name__ == "__main__":
    main()
