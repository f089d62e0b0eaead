"""The command line's grammar: every verb's flags, with allowed values read from the library.

`build_parser` is the whole parser; the verbs themselves are in `commands`. Flags named after
`TrainConfig` fields reach the config by name (`commands.config_from_args`).
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bofexits.cli import commands
from bofexits.config import (
    BOUNDS,
    CALIBRATION_SPLITS,
    MODES,
    OPTIMIZERS,
    ModelConfig,
    TrainConfig,
)
from bofexits.devices import DEVICE_HELP, device_argument
from bofexits.errors import ConfigError
from bofexits.options import GRID_POINTS

__all__ = ["DESCRIPTION", "build_parser"]

DESCRIPTION = "Bag-of-Features early exits with one-knob adaptive inference for PyTorch image classifiers."


class _Registered:
    """The names a library registry accepts (a list, or a `list_*` function), read when used.

    Lazy because the registries live in modules that import torch, and parsing
    `bofexits predict EXPORT_DIR` must not. argparse lists `choices` while it builds a
    parser unless the argument has a `metavar`, so `_choice` always gives one. Read anew
    each time, so names registered later show too.
    """

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name

    def _load(self) -> tuple[str, ...]:
        found = getattr(importlib.import_module(self._module), self._name)
        return tuple(found() if callable(found) else found)

    def __contains__(self, value: object) -> bool:
        return value in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `bofexits: error: ...; see `bofexits VERB --help``, like every other error.

    argparse prints its whole usage block before an error; a wrong value deserves one line
    that names the option, the value and what is allowed (the CLI's error contract).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bofexits: error: {message}; see `{self.prog} --help`\n")


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; the error names the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(low: float, high: float | None = None, *, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with `open_low`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if open_low else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            if high is not None:
                bound = f"in {'(' if open_low else '['}{low:g}, {high:g}]"
            else:
                bound = f"{'>' if open_low else '>='} {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _bounded(key: str) -> Callable[[str], float]:
    """An argparse type for the flag of config key `key`: its range from `config.BOUNDS`, the table
    config files and the Python API are checked against too."""
    bound = BOUNDS[key]

    def parse(text: str) -> float:
        try:
            value = int(text) if bound.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if bound.integer else 'a number'}, got {text!r}"
            ) from None
        if not bound.admits(value):
            raise argparse.ArgumentTypeError(f"must be {bound.describe(with_unset=False)}, got {text}")
        return value

    parse.__name__ = "integer" if bound.integer else "number"
    return parse


def _folder(text: str) -> str:
    """An argparse type for --data-dir: an existing folder, checked before any work starts."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got an empty string")
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return text


def _out_path(text: str) -> Path:
    """An argparse type for output paths: not empty (an empty string would mean the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    return Path(text)


def _file(text: str) -> str:
    """An argparse type for an input file (a checkpoint): it must exist and be a file."""
    path = Path(text).expanduser()
    if not text or not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text or 'an empty string'} {what}")
    return text


def _weights_file(text: str) -> str:
    """An argparse type for --backbone-weights: an existing file, not a weights name to download."""
    from bofexits.models.vision import check_weights_file

    try:
        check_weights_file(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _backbone(text: str) -> str:
    """An argparse type: a registered backbone name (the registry is read only when the flag is given)."""
    names = list(_Registered("bofexits.models.backbones", "list_backbones"))
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown backbone {text!r}; choose one of {', '.join(names)}")
    if text.startswith("tv:"):  # before the data is read (or downloaded)
        from bofexits.models.vision import check_torchvision_installed

        try:
            check_torchvision_installed()
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_device(p: argparse._ActionsContainer, default: str | None = "auto") -> None:
    """--device, the same for every verb that runs a network."""
    p.add_argument(
        "--device",
        type=device_argument,
        default=default,
        metavar="DEVICE",
        help=f"{DEVICE_HELP} (default auto)",
    )


_THREADS = _bounded("threads")
_EPOCHS = _bounded("epochs")
_POSITIVE = _number(0, open_low=True)
_DIST_TIMEOUT = _number(0, 86400, open_low=True)
_COUNT = _integer(0)
_ROUNDS = _integer(1, 1000)


_SCORES = _Registered("bofexits.policies", "SCORES")
_VARIANTS = _Registered("bofexits.policies.calibrated", "VARIANTS")
_MEMBERSHIPS = _Registered("bofexits.models.bof", "MEMBERSHIPS")
_AGGREGATIONS = _Registered("bofexits.models.exits", "AGGREGATIONS")
_EXIT_HEADS = _Registered("bofexits.models.build", "EXIT_HEADS")


def _choice(
    group: argparse._ActionsContainer,
    flag: str,
    names: _Registered | Sequence[str],
    text: str,
) -> None:
    """A string option whose allowed values come from the library; its help lists them."""
    metavar = flag.lstrip("-").replace("-", "_").upper()
    group.add_argument(flag, choices=names, metavar=metavar, help=f"{text}; one of %(choices)s")


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    """Flags named after `TrainConfig` fields: `config_from_args` passes them on by name."""
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--config", type=Path, help="JSON config (e.g. a run's config.json); flags override it")
    g.add_argument(
        "--dataset",
        help=f"dataset name (default {d.dataset}; `bofexits datasets` lists them); its recipe (backbone, "
        "channels, classes, schedule, augmentation) sets the defaults",
    )
    g.add_argument(
        "--data-dir",
        type=_folder,
        help="folder holding the dataset files (else standard places, then download)",
    )
    _choice(g, "--mode", MODES, f"default {d.mode}")
    g.add_argument("--epochs", type=_EPOCHS, help=f"default {d.epochs}")
    g.add_argument(
        "--exit-epochs",
        type=_bounded("exit_epochs"),
        help=f"exit epochs in two-phase mode (default {d.exit_epochs}); in frozen mode, which trains only "
        "exits, the run's epochs (as --epochs)",
    )
    g.add_argument("--batch-size", type=_bounded("batch_size"), help=f"default {d.batch_size}")
    _choice(g, "--optimizer", OPTIMIZERS, f"default {d.optimizer}")
    g.add_argument("--lr", type=_bounded("lr"), help=f"peak learning rate (default {d.lr})")
    g.add_argument(
        "--exit-lr",
        type=_bounded("exit_lr"),
        help=f"peak learning rate when only exits train (default {d.exit_lr})",
    )
    g.add_argument("--weight-decay", type=_bounded("weight_decay"), help=f"default {d.weight_decay}")
    g.add_argument("--exit-weights", type=_bounded("exit_weights"), nargs="+", help="loss weight per exit, final last")
    g.add_argument(
        "--distill",
        type=_bounded("distill"),
        help=f"self-distillation weight of the early exits' loss, 0..1 (default {d.distill})",
    )
    g.add_argument(
        "--distill-temperature",
        type=_bounded("distill_temperature"),
        help=f"softening temperature of self-distillation (default {d.distill_temperature})",
    )
    g.add_argument(
        "--no-augment", dest="augment", action="store_false", default=None, help="no flips or crops"
    )
    g.add_argument(
        "--crop-padding",
        type=_bounded("crop_padding"),
        help="random-crop padding in pixels (default: the dataset's)",
    )
    g.add_argument(
        "--no-flip", dest="flip", action="store_false", default=None, help="no horizontal flips (digits)"
    )
    g.add_argument(
        "--flip",
        dest="flip",
        action="store_true",
        default=None,
        help="horizontal flips (default: the dataset's; off for image-folder, whose mirror images may differ)",
    )
    g.add_argument(
        "--val-fraction",
        type=_bounded("val_fraction"),
        help=f"held out of the training set (default {d.val_fraction})",
    )
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    _add_device(g, default=None)  # None: the config's (auto unless --config says otherwise)
    g.add_argument("--threads", type=_THREADS, help="torch CPU threads")
    _choice(g, "--calibration-split", CALIBRATION_SPLITS, f"default {d.calibration_split}")
    _choice(g, "--score", _SCORES, f"confidence score the rule is calibrated on (default {d.score})")
    _choice(g, "--variant", _VARIANTS, f"rule variant (default {d.variant})")
    g.add_argument(
        "--backbone-checkpoint",
        type=_file,
        help="trained bofexits run whose backbone frozen mode reuses (your own classifier: --backbone-weights)",
    )
    g.add_argument(
        "--finetune-epochs",
        type=_bounded("finetune_epochs"),
        help="epochs of joint fine-tuning (backbone and exits together) after the exits are trained on the "
        f"frozen backbone; resume a finished run with it to fine-tune that run (default {d.finetune_epochs})",
    )
    g.add_argument(
        "--finetune-lr",
        type=_bounded("finetune_lr"),
        help=f"peak learning rate of the backbone while fine-tuning (default {d.finetune_lr})",
    )
    g.add_argument(
        "--finetune-exit-lr",
        type=_bounded("finetune_exit_lr"),
        help=f"peak learning rate of the exits while fine-tuning (default {d.finetune_exit_lr})",
    )
    g.add_argument(
        "--finetune-distill",
        type=_bounded("finetune_distill"),
        help="weight of distillation from the pre-fine-tuning network in the final exit's loss, 0..1 "
        f"(default {d.finetune_distill})",
    )
    g.add_argument(
        "--finetune-weights",
        type=_bounded("finetune_weights"),
        nargs="+",
        help="loss weight per exit while fine-tuning, final last (default: --exit-weights)",
    )
    g.add_argument(
        "--limit-train", type=_bounded("limit_train"), help="use only the first N training images (quick runs)"
    )


def _add_network_flags(p: argparse.ArgumentParser) -> None:
    """Flags named after `ModelConfig` fields (flat: `--codewords`, not `--model.codewords`)."""
    m = ModelConfig()
    g = p.add_argument_group("network")
    g.add_argument(
        "--backbone",
        type=_backbone,
        help=f"registered backbone (default {m.backbone}; `bofexits backbones` lists them)",
    )
    g.add_argument("--widths", type=_bounded("widths"), nargs="+", help="backbone stage widths")
    g.add_argument(
        "--image-size",
        type=_bounded("image_size"),
        help="input height = width for tv: backbones (default: the dataset's)",
    )
    g.add_argument(
        "--backbone-weights",
        type=_weights_file,
        metavar="PATH",
        help="state_dict file loaded into a tv: backbone (never downloaded; read with weights_only=True); "
        "with --mode frozen your classifier stays as it is, its head the final exit",
    )
    g.add_argument(
        "--codewords", type=_bounded("codewords"), help=f"K, shared by all exits (default {m.codewords})"
    )
    _choice(g, "--membership", _MEMBERSHIPS, f"default {m.membership}")
    g.add_argument(
        "--not-squared",
        dest="squared",
        action="store_false",
        default=None,
        help="RBF on distances instead of squared distances",
    )
    g.add_argument("--spatial-level", type=_bounded("spatial_level"), help=f"0 or 1 (default {m.spatial_level})")
    g.add_argument("--reduce-channels", type=_bounded("reduce_channels"))
    g.add_argument("--exit-pools", type=_bounded("exit_pools"), nargs="+", help="per-exit pre-pool factor")
    g.add_argument(
        "--exit-points",
        type=_bounded("exit_points"),
        nargs="+",
        help="exit after these backbone units (indices; `bofexits place` chooses them; default: the stages)",
    )
    _choice(g, "--aggregation", _AGGREGATIONS, f"default {m.aggregation}")
    g.add_argument("--per-exit-classifiers", dest="shared_classifier", action="store_false", default=None)
    g.add_argument(
        "--shared-width",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"one RBF width per exit, not per codeword: a cheaper fused exit head (default {m.shared_width})",
    )
    _choice(
        g,
        "--exit-head",
        _EXIT_HEADS,
        f"exit heads: BoF, or the SDN (pooled) / BranchyNet (conv) baselines (default {m.exit_head})",
    )


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a multi-exit network and calibrate its exit rule")
    p.add_argument(
        "--out", type=_out_path, default=Path("runs/train"), help="run folder (default runs/train)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument(
        "--dist-timeout",
        type=_DIST_TIMEOUT,
        default=300.0,
        metavar="SECONDS",
        help="under torchrun: seconds a rank waits for the others before the job fails "
        "(default 300, at most a day: a dead rank must not hang the job for longer)",
    )
    _add_training_flags(p)
    _add_network_flags(p)
    p.set_defaults(func=commands.train)


class _MovedToCompare(argparse.Action):
    """An option of the policy comparison given to `sweep`, which it belonged to before the rename.

    Fails with the new spelling instead of argparse's "unrecognized arguments".
    """

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        raise ConfigError(
            f"{option_string} belongs to the policy comparison, now `bofexits compare CKPT {option_string} N`; "
            "`bofexits sweep` runs the proposed rule's knob with real early exit (formerly `evaluate`)"
        )


def _add_sweep(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "sweep", replaces: str | None = None
) -> None:
    """`sweep`, or under `name` a deprecated alias of it that names `replaces`."""
    about = "the proposed rule's knob (beta) with real early exit on the test set, timed; writes results.json"
    p = sub.add_parser(
        name, help=f"deprecated alias of `{replaces}`" if replaces else about, description=about
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=_out_path, help="where results.json goes (default: the checkpoint's folder)")
    p.add_argument("--data-dir", type=_folder)
    _choice(p, "--score", _SCORES, "confidence score (default: the checkpoint's)")
    _choice(p, "--variant", _VARIANTS, "rule variant (default: the checkpoint's)")
    p.add_argument(
        "--betas", type=_number(0), nargs="+", help="knob values (default: a range for the variant)"
    )
    p.add_argument(
        "--timing-samples", type=_COUNT, default=500, help="images timed at batch 1 (0: no timing)"
    )
    p.add_argument("--timing-rounds", type=_ROUNDS, default=5)
    p.add_argument("--threads", type=_THREADS, help="torch CPU threads for evaluation and timing")
    _add_device(p)
    for flag in ("--points", "--timed-points"):
        p.add_argument(flag, action=_MovedToCompare, help=argparse.SUPPRESS)
    p.set_defaults(func=commands.sweep, replaced_by=replaces)


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    about = "every exit policy over its knob, side by side, with timing; writes policies.json/csv, a report"
    p = sub.add_parser("compare", help=about, description=about)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=_out_path, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--data-dir", type=_folder)
    _choice(p, "--score", _SCORES, "confidence score of the proposed rule (default: the checkpoint's)")
    _choice(p, "--variant", _VARIANTS, "variant of the proposed rule (default: the checkpoint's)")
    p.add_argument(
        "--points",
        type=_integer(2, 100_000),
        default=GRID_POINTS,
        help="knob values per threshold policy (simulated)",
    )
    p.add_argument(
        "--timed-points",
        type=_COUNT,
        default=9,
        help="points per policy run for real and timed, plus knee and matched ones (0: every point)",
    )
    p.add_argument(
        "--timing-samples", type=_COUNT, default=500, help="images timed at batch 1 (0: no timing)"
    )
    p.add_argument("--timing-rounds", type=_ROUNDS, default=3)
    p.add_argument("--threads", type=_THREADS, help="torch CPU threads")
    _add_device(p)
    p.set_defaults(func=commands.compare)


def _add_tune(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tune", help="pick beta on the validation split for a target and store it in the checkpoint"
    )
    p.add_argument("checkpoint", type=Path)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--max-drop", type=_number(0, 100), help="largest accuracy drop vs the full network, in pp"
    )
    g.add_argument(
        "--budget",
        type=_number(0, 2, open_low=True),
        help="largest mean compute, as a fraction of the backbone's MACs",
    )
    g.add_argument(
        "--latency-ms",
        type=_POSITIVE,
        help="largest mean batch-1 latency in ms (measured here)",
    )
    _choice(p, "--variant", _VARIANTS, "rule variant (default: the checkpoint's)")
    p.add_argument("--data-dir", type=_folder)
    _add_device(p)
    p.set_defaults(func=commands.tune)


def _add_place(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "place",
        help="try exits at every backbone boundary of a trained run and keep the subset with the cheapest "
        "validation knee; writes a new run",
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument(
        "--out",
        type=_out_path,
        help="the new run folder, which must not hold a run (default: the checkpoint's folder + '-placed')",
    )
    p.add_argument("--epochs", type=_integer(1, 1000), default=3, help="candidate-exit training epochs")
    p.add_argument(
        "--retrain-epochs", type=_integer(0, 1000), default=1, help="epochs re-training the kept exits together"
    )
    _choice(p, "--cost", ("macs", "time"), "a head's cost: counted MACs (default) or measured batch-1 time")
    p.add_argument(
        "--points",
        type=_bounded("exit_points"),
        nargs="+",
        help="candidate unit indices (default: every unit with a map)",
    )
    p.add_argument("--data-dir", type=_folder)
    p.add_argument("--threads", type=_THREADS, help="torch CPU threads")
    p.set_defaults(func=commands.place)


def _add_demo_and_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="train on Fashion-MNIST, then sweep the knob and compare every policy; write a report"
    )
    p.add_argument("--out", type=_out_path, default=Path("runs/demo"))
    p.add_argument("--epochs", type=_EPOCHS, help="override the demo's training epochs")
    p.add_argument("--timing-samples", type=_COUNT, default=500)
    p.set_defaults(func=commands.demo)
    p = sub.add_parser(
        "report", help="render report.md/html and plots from a run folder's results.json and policies.json"
    )
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=commands.report)


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export", help="write a deployable export: staged ONNX graphs + manifest, or TorchScript"
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out_dir", type=_out_path, help="export folder (written atomically)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument(
        "--beta", type=_number(0), help="the knob (default: the tuned one, else 0.4 quantile / 1.0 mean)"
    )
    _choice(p, "--score", _SCORES, "confidence score (default: the checkpoint's)")
    _choice(p, "--variant", _VARIANTS, "rule variant (default: the checkpoint's)")
    p.add_argument(
        "--onnx-exporter",
        choices=["dynamo", "legacy"],
        default="dynamo",
        help="dynamo (default: leaner graphs) or legacy (TorchScript-based, exports ~100x faster)",
    )
    p.add_argument(
        "--layout", choices=["fused", "separate"], default="fused", help="graphs per stage+exit pair"
    )
    p.add_argument("--force", action="store_true", help="replace an existing export folder")
    p.add_argument(
        "--data-dir", type=_folder, help="training data (class names and normalisation are read from it)"
    )
    p.set_defaults(func=commands.export)


def _add_predict(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", help="classify PNG/JPEG files with a checkpoint or an ONNX export folder")
    p.add_argument("source", type=Path, help="checkpoint.pt, or a folder written by `bofexits export`")
    p.add_argument("images", type=Path, nargs="+", help="image files, folders or quoted glob patterns")
    p.add_argument(
        "--max-batch", type=_integer(1, 4096), default=32, help="most images per stage batch (default 32)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for programs")
    p.add_argument("--beta", type=_number(0), help="override the knob")
    p.add_argument("--threads", type=_THREADS, help="inference threads")
    p.add_argument(
        "--data-dir", type=_folder, help="training data, for a checkpoint (class names and normalisation)"
    )
    p.add_argument(
        "--device",
        type=device_argument,
        default="auto",
        metavar="DEVICE",
        help=f"{DEVICE_HELP} (default auto); for an export folder, onnxruntime's CUDA execution provider "
        "(onnxruntime-gpu) on cuda, its CPU provider on cpu, and auto takes CUDA when onnxruntime has it",
    )
    p.set_defaults(func=commands.predict)


def _nonempty(text: str) -> str:
    """An argparse type: any text but the empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    about = "serve a checkpoint or an ONNX export over HTTP with stage-level batching (needs bofexits[serve])"
    p = sub.add_parser("serve", help=about, description=about)
    p.add_argument("source", type=Path, help="checkpoint.pt, or a folder written by `bofexits export`")
    p.add_argument(
        "--host", type=_nonempty, default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=_integer(1, 65535), default=8000, help="default 8000")
    p.add_argument("--max-batch", type=_integer(1, 4096), default=32, help="most samples per stage batch (32)")
    p.add_argument(
        "--max-wait-ms", type=_number(0, 60_000), default=5.0,
        help="a queue whose oldest sample waited this long runs next (5)",
    )
    p.add_argument("--max-queue", type=_integer(1, 1_000_000), default=1024, help="past it: 503 (1024)")
    p.add_argument("--max-body", type=_integer(1, 1 << 30), default=1 << 20, help="bytes; past it: 413 (1 MiB)")
    p.add_argument("--beta", type=_number(0), help="the knob (default: the tuned one)")
    p.add_argument("--threads", type=_THREADS, help="inference threads")
    p.add_argument("--data-dir", type=_folder, help="training data, for a checkpoint without class names")
    p.add_argument(
        "--api-key",
        type=_nonempty,
        help="require 'Authorization: Bearer KEY' (default: $BOFEXITS_API_KEY; none: open)",
    )
    p.add_argument(
        "--latency-slo-ms", type=_number(0, 600_000, open_low=True),
        help="p95 latency target: beta is lowered under queueing and raised back when load falls",
    )
    p.add_argument("--slo-min-beta", type=_number(0), default=0.0, help="lowest beta the SLO controller may use")
    p.add_argument("--ray", action="store_true", help="serve with Ray Serve (needs bofexits[ray])")
    p.add_argument("--replicas", type=_integer(1, 1024), default=1, help="Ray Serve replicas, each a whole engine")
    p.add_argument(
        "--device", type=device_argument, default="auto", metavar="DEVICE", help=f"{DEVICE_HELP} (default auto)"
    )
    p.set_defaults(func=commands.serve)


_LISTS = {
    "backbones": _Registered("bofexits.models.backbones", "list_backbones"),
    "datasets": _Registered("bofexits.data.registry", "list_datasets"),
    "policies": _Registered("bofexits.policies", "list_policies"),
}


def _add_lists(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, names in _LISTS.items():
        sub.add_parser(name, help=f"list registered {name}").set_defaults(
            func=commands.list_names, names=names
        )


def build_parser() -> argparse.ArgumentParser:
    # (each `_add_*` reads `commands.<verb>` when it runs, so a test can monkeypatch a verb)
    """The whole command line; each verb's flags are added by its own `_add_*` function."""
    parser: argparse.ArgumentParser = _Parser(prog="bofexits", description=DESCRIPTION)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _add_compare(sub)
    _add_tune(sub)
    _add_place(sub)
    _add_demo_and_report(sub)
    _add_export(sub)
    _add_predict(sub)
    _add_serve(sub)
    _add_lists(sub)
    _add_sweep(sub, "evaluate", replaces="sweep")  # deprecated alias, for one release
    return parser
