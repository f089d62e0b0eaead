"""Open-loop load on the serving engine: plain backbone, adaptive at the knee, adaptive with the SLO controller.

    python benchmarks/serve_load.py --checkpoint runs/demo/checkpoint.pt [--device cuda] [--readme]

Arrivals are Poisson and open-loop: a driver thread submits request k at its scheduled time
t_k whatever the engine is doing (a small threaded client written here, no load tool), and a
request's latency runs from t_k to its answer, so time spent behind a busy driver counts too
(no coordinated omission). Past `--max-queue` requests in flight a request is dropped (the
server's 503). The three servers are three engines over the same stages and scheduler:

* plain: the backbone alone, one stage (`PlainStages`);
* knee: the calibrated rule at the knee beta (the cheapest beta within 0.5 points of the full
  network's test accuracy, from an offline sweep of the test set's exit logits);
* slo: the knee beta as set point, turned by `SloController` against `--slo-ms`.

The plain server's capacity C is measured first (single-image requests submitted as fast as
the queue takes them, answers per second); offered rates are fractions of C (`--fractions`,
10% to 200%). Per rate and server: achieved throughput, p50/p95/p99 latency, drops, mean
MACs (from the exits taken), accuracy of the answers served (the test labels), mean batch
size per stage and, for slo, beta.
Capacity at a target = the highest offered rate with p95 <= `--slo-ms` and no drops.

Writes serve_load.json, serve_load.md (the README block) and serve_load.png into `--out`;
``--readme`` replaces the README's serve_load block. This measures the engine in-process: the
HTTP layer (uvicorn + FastAPI) adds its own per-request cost, which `benchmarks/serve_ray.py`
measures as the embedded server's round trip beside Ray Serve's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _readme_blocks import write_block  # noqa: E402

from bofexits.deploy.info import deploy_info  # noqa: E402
from bofexits.devices import describe_device, resolve_device  # noqa: E402
from bofexits.evaluation.collect import collect_logits  # noqa: E402
from bofexits.evaluation.cost import measure_costs  # noqa: E402
from bofexits.inference.offline import simulate  # noqa: E402
from bofexits.policies.calibrated import CalibratedThreshold  # noqa: E402
from bofexits.serving import Engine, ModelFacts, Overloaded, SloController  # noqa: E402
from bofexits.serving.torch_stages import PlainStages, TorchStages  # noqa: E402
from bofexits.training.checkpoint import load_model  # noqa: E402
from bofexits.training.splits import load_run_data  # noqa: E402

log = logging.getLogger("serve_load")
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
KNEE_DROP = 0.005


@dataclass
class RatePoint:
    """One server at one offered rate."""

    server: str
    fraction: float
    offered: float
    sent: int
    answered: int
    dropped: int
    achieved: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    accuracy: float
    relative_macs: float
    stage_batch: list[float]
    beta_end: float | None
    beta_min: float | None
    exits: list[int] = field(default_factory=list)


def _percentiles(lat: list[float]) -> tuple[float, float, float, float]:
    if not lat:
        return (float("nan"),) * 4  # type: ignore[return-value]
    a = 1e3 * np.asarray(lat)
    return (
        float(np.percentile(a, 50)),
        float(np.percentile(a, 95)),
        float(np.percentile(a, 99)),
        float(a.mean()),
    )


def knee_beta(
    model: Any, calibration: Any, variant: str, test: Any, device: Any
) -> tuple[float, dict[str, Any]]:
    """The cheapest beta on a grid whose simulated test accuracy is within KNEE_DROP of the full network's."""
    logits, labels = collect_logits(model, test, device=device)
    logits, labels = [lg.cpu() for lg in logits], labels.cpu()
    costs = measure_costs(model)
    macs = torch.tensor(costs.macs_at_exit(), dtype=torch.float64)
    full = float((logits[-1].argmax(1) == labels).float().mean())
    grid = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999]
    best: tuple[float, float, float] | None = None
    table = []
    for b in grid:
        r = simulate(CalibratedThreshold(calibration, b, variant), logits)
        acc = float((r.predictions == labels).float().mean())
        rel = float(macs[r.exit_index].mean() / macs[-1])
        table.append({"beta": b, "accuracy": acc, "relative_macs": rel})
        if acc >= full - KNEE_DROP and (best is None or rel < best[2]):
            best = (b, acc, rel)
    if best is None:
        raise SystemExit("no beta on the grid reaches the full network's accuracy within 0.5 points")
    return best[0], {
        "full_accuracy": full,
        "grid": table,
        "knee": {"beta": best[0], "accuracy": best[1], "relative_macs": best[2]},
    }


def capacity(engine: Engine, x: np.ndarray, n: int = 4000) -> float:
    """Answers per second when requests (one image each) arrive faster than they are served.

    A driver submits n single-image requests as fast as the queue takes them, against the
    started engine: the saturation throughput including the per-request cost, the number the
    offered rates are fractions of.
    """
    engine.start()
    left = threading.Semaphore(0)
    t0 = time.perf_counter()
    for k in range(n):
        while True:
            try:
                engine.submit(x[k % len(x) : k % len(x) + 1], lambda row, a: left.release())
                break
            except Overloaded:
                time.sleep(0.001)
    for _ in range(n):
        left.acquire()
    rate = n / (time.perf_counter() - t0)
    engine.stop()
    return rate


def run_rate(
    engine: Engine,
    x: np.ndarray,
    labels: np.ndarray,
    macs: np.ndarray,
    rate: float,
    duration: float,
    seed: int,
) -> dict[str, Any]:
    """Open-loop Poisson arrivals at `rate` for `duration` seconds against a started engine."""
    rng = np.random.default_rng(seed)
    n = max(1, int(rate * duration))
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    picks = rng.integers(0, len(x), n)
    lock = threading.Lock()
    done: list[tuple[float, int, int, int]] = []  # latency, class, exit, image
    dropped = 0
    finished = threading.Event()
    remaining = [n]

    def answer(k: int, scheduled: float, img: int) -> Any:
        def on_done(row: int, a: Any) -> None:
            now = time.perf_counter()
            with lock:
                if not isinstance(a, BaseException):
                    done.append((now - scheduled, a.class_index, a.exit, img))
                remaining[0] -= 1
                if remaining[0] == 0:
                    finished.set()

        return on_done

    t0 = time.perf_counter()
    for k in range(n):
        scheduled = t0 + times[k]
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        img = int(picks[k])
        try:
            engine.submit(x[img : img + 1], answer(k, scheduled, img))
        except Overloaded:
            with lock:
                dropped += 1
                remaining[0] -= 1
                if remaining[0] == 0:
                    finished.set()
    finished.wait(timeout=60)
    elapsed = max(time.perf_counter() - t0, times[-1])
    lat = [d[0] for d in done]
    p50, p95, p99, mean = _percentiles(lat)
    imgs = np.array([d[3] for d in done], dtype=int)
    classes = np.array([d[1] for d in done], dtype=int)
    exits = np.array([d[2] for d in done], dtype=int)
    return {
        "sent": n,
        "answered": len(done),
        "dropped": dropped,
        "achieved": len(done) / elapsed,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_ms": mean,
        "accuracy": float((classes == labels[imgs]).mean()) if len(done) else float("nan"),
        "relative_macs": float(macs[exits - 1].mean() / macs[-1]) if len(done) else float("nan"),
        "exits": np.bincount(exits, minlength=int(macs.shape[0]) + 1)[1:].tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data-dir")
    p.add_argument("--out", type=Path, default=Path("runs/serve_load"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of arrivals per rate")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--slo-min-beta", type=float, default=0.0)
    p.add_argument("--max-queue", type=int, default=1024)
    p.add_argument("--test-images", type=int, default=2000, help="test images used as the request pool")
    p.add_argument("--readme", action="store_true", help="replace the README's serve_load block")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, info = deploy_info(args.checkpoint, data_dir=args.data_dir)
    model = model.float().to(device).eval()
    _, _, cfg = load_model(args.checkpoint)
    _, test = load_run_data(cfg, args.data_dir)
    xt, yt = next(test.batches(min(args.test_images, len(test)), shuffle=False))
    x, labels = xt.numpy().astype(np.float32), yt.numpy()
    beta, sweep = knee_beta(model, info.calibration, info.variant, test, device)
    macs = np.asarray(measure_costs(model).macs_at_exit(), dtype=np.float64)
    log.info(
        "knee beta %g (test accuracy %.4f at %.1f%% of the MACs; full %.4f)",
        beta,
        sweep["knee"]["accuracy"],
        100 * sweep["knee"]["relative_macs"],
        sweep["full_accuracy"],
    )
    c, h, w = (int(d) for d in model.input_shape)
    facts = ModelFacts(
        "pytorch",
        describe_device(device),
        info.classes,
        (c, h, w),
        info.mean,
        info.std,
        info.color_mode,
        info.calibration.score,
        info.variant,
    )
    opts = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "max_queue": args.max_queue}

    def build(server: str) -> Engine:
        if server == "plain":
            return Engine(PlainStages(model, facts), **opts)
        stages = TorchStages(model, CalibratedThreshold(info.calibration, beta, info.variant), facts)
        ctl = SloController(args.slo_ms / 1e3, beta, args.slo_min_beta, log_scale=info.variant != "mean")
        ctl = ctl if server == "slo" else None
        return Engine(stages, controller=ctl, **opts)

    caps = {s: capacity(build(s), x) for s in ("plain", "knee")}
    log.info("saturation throughput: plain %.0f/s, knee %.0f/s", caps["plain"], caps["knee"])
    points: list[RatePoint] = []
    for k, frac in enumerate(args.fractions):
        for server in ("plain", "knee", "slo"):  # interleaved, so load drift hits all three alike
            engine = build(server)
            engine.start()
            warm = np.repeat(x[:1], 64, 0)
            engine.submit(warm, lambda row, a: None)
            time.sleep(0.2)
            engine.telemetry = type(engine.telemetry)(engine.num_exits)  # count the measured part only
            r = run_rate(
                engine,
                x,
                labels,
                macs if server != "plain" else macs[-1:],
                frac * caps["plain"],
                args.duration,
                seed=k,
            )
            betas = (
                [b for _, b in engine.controller.trajectory]
                if isinstance(engine.controller, SloController)
                else []
            )
            engine.stop(timeout_s=30)
            stage_batch = [engine.telemetry.mean_batch(i) for i in range(engine.num_exits)]
            point = RatePoint(
                server,
                frac,
                frac * caps["plain"],
                beta_end=engine.beta if server != "plain" else None,
                beta_min=min(betas) if betas else None,
                stage_batch=stage_batch,
                **r,
            )
            points.append(point)
            log.info(
                "%-5s %4.0f%% offered %6.0f/s achieved %6.0f/s p50 %6.1f p95 %6.1f p99 %6.1f ms drops %d "
                "acc %.4f macs %.3f batches %s",
                server,
                100 * frac,
                point.offered,
                point.achieved,
                point.p50_ms,
                point.p95_ms,
                point.p99_ms,
                point.dropped,
                point.accuracy,
                point.relative_macs,
                [round(b, 1) for b in stage_batch],
            )
    result = summarise(points, caps, args, sweep, beta, describe_device(device))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2))
    block = markdown(result)
    (args.out / "serve_load.md").write_text(block + "\n")
    plot(points, args.slo_ms, args.out / "serve_load.png")
    if args.readme:
        write_block("serve_load", block)
    print(block)
    return 0


def _capacity(points: list[RatePoint], server: str, slo_ms: float) -> float:
    ok = [p.offered for p in points if p.server == server and p.p95_ms <= slo_ms and p.dropped == 0]
    return max(ok) if ok else 0.0


def summarise(
    points: list[RatePoint],
    caps: dict[str, float],
    args: Any,
    sweep: dict[str, Any],
    beta: float,
    device: str,
) -> dict[str, Any]:
    cap = {s: _capacity(points, s, args.slo_ms) for s in ("plain", "knee", "slo")}
    half = {p.server: p for p in points if abs(p.fraction - 0.5) < 1e-9}
    high = {p.server: p for p in points if abs(p.fraction - 1.5) < 1e-9}
    targets: dict[str, Any] = {
        "capacity_ratio_knee_over_plain": cap["knee"] / cap["plain"] if cap["plain"] else None,
    }
    if half:
        targets["mean_latency_ratio_at_50pct"] = half["knee"].mean_ms / half["plain"].mean_ms
        targets["p99_ratio_at_50pct"] = half["knee"].p99_ms / half["plain"].p99_ms
    loaded = [p for p in points if p.server == "knee" and p.fraction >= 1.0]
    if loaded:
        b = loaded[-1].stage_batch
        targets["stage3_over_stage1_batch_under_load"] = b[2] / b[0] if len(b) > 2 and b[0] else None
    if high:
        targets["slo_at_150pct"] = {
            "p95_ms": high["slo"].p95_ms,
            "dropped": high["slo"].dropped,
            "accuracy": high["slo"].accuracy,
            "knee_accuracy": high["knee"].accuracy,
        }
    return {
        "device": device,
        "threads": args.threads,
        "duration_s": args.duration,
        "slo_ms": args.slo_ms,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "knee_beta": beta,
        "sweep": sweep,
        "saturation_per_s": caps,
        "capacity_at_slo_per_s": cap,
        "targets": targets,
        "points": [asdict(p) for p in points],
        "client": "in-process open-loop Poisson driver thread (benchmarks/serve_load.py), no HTTP",
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Open-loop Poisson load on the serving engine ({r['device']}, {r['threads']} thread, max batch "
        f"{r['max_batch']}, max wait {r['max_wait_ms']:g} ms, {r['duration_s']:g} s per rate; knee beta "
        f"{r['knee_beta']:g}). Plain saturation {r['saturation_per_s']['plain']:.0f}/s, knee "
        f"{r['saturation_per_s']['knee']:.0f}/s. Capacity at p95 <= {r['slo_ms']:g} ms with no drops: plain "
        f"{r['capacity_at_slo_per_s']['plain']:.0f}/s, knee {r['capacity_at_slo_per_s']['knee']:.0f}/s, slo "
        f"{r['capacity_at_slo_per_s']['slo']:.0f}/s.",
        "",
        "| server | offered | achieved/s | p50 ms | p95 ms | p99 ms | drops | accuracy | MACs "
        "| batch per stage | beta |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["points"]:
        beta = "" if p["beta_end"] is None else f"{p['beta_end']:.3g}"
        if p["beta_min"] is not None:
            beta += f" (min {p['beta_min']:.3g})"
        lines.append(
            f"| {p['server']} | {100 * p['fraction']:.0f}% ({p['offered']:.0f}/s) | {p['achieved']:.0f} | "
            f"{p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['dropped']} | {p['accuracy']:.4f} | "
            f"{p['relative_macs']:.3f} | {' / '.join(f'{b:.1f}' for b in p['stage_batch'])} | {beta} |"
        )
    return "\n".join(lines)


def plot(points: list[RatePoint], slo_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for server, style, color in (("plain", "o-", "C0"), ("knee", "s-", "C2"), ("slo", "^-", "C4")):
        pts = [p for p in points if p.server == server]
        ax.plot([p.offered for p in pts], [p.p95_ms for p in pts], style, color=color, label=f"{server} p95")
        ax.plot(
            [p.offered for p in pts],
            [p.p50_ms for p in pts],
            style.replace("-", ":"),
            color=color,
            alpha=0.5,
            label=f"{server} p50",
        )
    ax.axhline(slo_ms, color="grey", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
