"""The rule in one ONNX graph against the staged graphs driven from Python: which path the runner takes.

    .venv/bin/python benchmarks/adaptive_graphs.py [--out DIR] [--rounds 7] [--exporter dynamo|legacy]

Exports a demo-like network (vgg28 at 28x28 with random weights, exits calibrated on random
inputs, beta 0.5 on the quantile variant) and measures, interleaved (`interleaved_timing`),
mean microseconds per image (total time / images, all rounds) and the ratio staged / one
graph (> 1: the one graph is faster) of:

* batch 1, 1 thread: ``adaptive.onnx`` (`OnnxAdaptiveRunner.run_single`, nested If), the
  staged graphs (`run_staged`: a call per stage+exit, the decision in numpy) and
  ``backbone.onnx``;
* batches of 2, 8, 32 and 256 at 1 and 2 threads: ``adaptive_batched.onnx`` (compaction in
  the graph), the staged graphs (`run_staged`, shrinking batches), the staged graphs with
  onnxruntime I/O binding into preallocated buffers (`BoundStaged`, kept here only), and
  ``backbone.onnx``.

`bofexits.deploy.runner.BATCHED_GRAPH_FROM` records the outcome. Prints markdown tables;
writes adaptive_graphs.json into --out when given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bofexits.config import ModelConfig
from bofexits.deploy.onnx import export_onnx
from bofexits.deploy.runner import OnnxAdaptiveRunner, RunResult, confidence
from bofexits.evaluation.timing import Timing, interleaved_timing
from bofexits.models.build import build_model
from bofexits.policies import ExitCalibration
from bofexits.reporting.tables import markdown_table

BATCHES = (2, 8, 32, 256)
IMAGES = 512  # per configuration and round, batched
SINGLES = 200  # batch-1 images per configuration and round


class BoundStaged:
    """The staged graphs with I/O binding: outputs written into buffers allocated once, for `limit` samples."""

    def __init__(self, runner: OnnxAdaptiveRunner, limit: int) -> None:
        self.runner, m = runner, runner.manifest
        self.bindings = [g.session.io_binding() for g in runner.graphs]
        self.outputs = [
            {t.name: np.empty((limit, *t.shape[1:]), np.float32) for t in g.outputs} for g in m.graphs
        ]
        self.inputs = [
            {t.name: np.empty((limit, *t.shape[1:]), np.float32) for t in g.inputs} for g in m.graphs
        ]
        self.logits = np.empty((limit, m.num_classes), np.float32)

    def _run(self, i: int, feed: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        binding = self.bindings[i]
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        views = {name: buf[:n] for name, buf in self.outputs[i].items()}
        for name, view in views.items():
            binding.bind_output(name, "cpu", 0, np.float32, view.shape, view.ctypes.data)
        self.runner.graphs[i].session.run_with_iobinding(binding)
        return views

    def __call__(self, x: np.ndarray) -> RunResult:
        r, n = self.runner, x.shape[0]
        last = len(r.graphs) - 1
        exit_index = np.full(n, last, dtype=np.int64)
        out, alive, feed = self.logits[:n], np.arange(n), {"x": x}
        for i in range(last):
            got = self._run(i, feed, alive.shape[0])
            stop = confidence(got["logits"], r.score) >= r.thresholds[i]
            out[alive[stop]] = got["logits"][stop]
            exit_index[alive[stop]] = i
            keep = np.flatnonzero(~stop)
            if keep.shape[0] == 0:
                return RunResult(out.copy(), exit_index)
            alive = alive[keep]
            nxt = self.inputs[i + 1]
            feed = {
                k: np.take(
                    got["features" if k == "x" else "next_state"], keep, axis=0, out=nxt[k][: keep.shape[0]]
                )
                for k in nxt
            }
        out[alive] = self._run(last, feed, alive.shape[0])["logits"]
        return RunResult(out.copy(), exit_index)


def export(folder: Path, exporter: str) -> Path:
    torch.manual_seed(0)
    net = build_model(ModelConfig()).float().eval()
    with torch.no_grad():
        cal = ExitCalibration.fit(net(torch.randn(512, *net.input_shape))[:-1], "max_prob")
    return export_onnx(
        net, folder / "export", calibration=cal, beta=0.5, variant="quantile", exporter=exporter
    )


def _row(threads: int, batch: int, exits: np.ndarray, t: Timing) -> dict[str, Any]:
    """Mean microseconds per image of each configuration (docs/method.md §7: the headline is the mean)."""
    row = {"threads": threads, "batch": batch, "exits": exits.tolist()}
    row |= {k: t.mean(k) * 1e6 for k in t.rounds}
    row["staged / one graph"] = row["staged"] / row["one graph"]
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return row


def measure(export_dir: Path, rounds: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    runner = OnnxAdaptiveRunner(export_dir, threads=1)
    singles = [rng.standard_normal((1, *runner.input_shape)).astype(np.float32) for _ in range(SINGLES)]
    runs = {
        "one graph": runner.run_single,
        "staged": runner.run_staged,
        "backbone": runner.run_backbone,
    }
    t = interleaved_timing(runs, singles, reference="backbone", rounds=rounds)
    exits = np.bincount([runner.run_single(s)[1] for s in singles], minlength=runner.num_exits)
    rows.append(_row(1, 1, exits, t))
    for threads in (1, 2):
        runner = OnnxAdaptiveRunner(export_dir, threads=threads)
        for batch in BATCHES:
            x = [
                rng.standard_normal((batch, *runner.input_shape)).astype(np.float32)
                for _ in range(IMAGES // batch)
            ]
            bound = BoundStaged(runner, batch)
            assert np.array_equal(bound(x[0]).exit_index, runner.run_staged(x[0]).exit_index)
            assert np.array_equal(runner.run_batched(x[0]).exit_index, runner.run_staged(x[0]).exit_index)
            runs = {
                "one graph": runner.run_batched,
                "staged": runner.run_staged,
                "staged, I/O binding": bound,
                "backbone": runner.run_backbone,
            }
            t = interleaved_timing(runs, x, reference="backbone", rounds=rounds)
            exits = np.bincount(np.concatenate([runner.run_batched(b).exit_index for b in x]), minlength=4)
            rows.append(_row(threads, batch, exits, t))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "legacy"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(export(Path(tmp), args.exporter), args.rounds)
    names = ["one graph", "staged", "staged, I/O binding", "backbone"]
    print(
        markdown_table(
            ["threads", "batch", "exits", *(f"{n} (us/img)" for n in names), "staged / one graph"],
            [
                [
                    str(r["threads"]),
                    str(r["batch"]),
                    str(r["exits"]),
                    *(f"{r[n]:.0f}" if n in r else "-" for n in names),
                    f"{r['staged / one graph']:.2f}",
                ]
                for r in rows
            ],
        )
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "adaptive_graphs.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
