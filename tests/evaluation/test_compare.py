"""Policies side by side: the conditional rule, the oracle frontier, the comparison and its claims."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bofexits.cli import main
from bofexits.data.registry import load_dataset
from bofexits.errors import ConfigError
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.compare import _contrasts, _simulate_family, compare_policies, decision_overhead_us
from bofexits.evaluation.comparison import BASELINES, Comparison
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.families import policy_families
from bofexits.evaluation.points import MAX_DROP, Point, at_compute, cheapest_reaching
from bofexits.evaluation.timing import interleaved_timing, platform_info
from bofexits.inference.offline import oracle, oracle_frontier, simulate
from bofexits.models.backbones import create_backbone
from bofexits.policies import CalibratedThreshold, ExitCalibration, calibrated_thresholds
from bofexits.policies.calibrated import conditional_quantiles
from bofexits.reporting.claims import check_claims
from bofexits.reporting.report import write_report
from bofexits.training import splits as datasets
from bofexits.training import tuning
from bofexits.training.checkpoint import load_model
from bofexits.training.loop import train
from bofexits.training.tuning import validation_split

# --- the conditional rule -----------------------------------------------------------------------


def test_conditional_quantiles_hand() -> None:
    # beta = 0.5 at exit 1: median of 1..5 is 3, so 3, 4, 5 stop; samples 0, 1 (exit-2 scores 5, 1) go on,
    # and the median of {5, 1} is 3.
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 1.0, 2.0, 3.0, 4.0]])
    out = conditional_quantiles(scores, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert out[:, 1].tolist() == [3.0, 3.0]
    assert out[:, 0].tolist() == [1.0, float("inf")]  # beta 0: all stop at exit 1, none reach exit 2
    assert out[0, 2].item() == 5.0


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.8])
def test_conditional_rule_passes_a_share_beta_at_every_exit(beta: float) -> None:
    # Exits with very different confidence levels: the conditional rule still passes beta of what arrives.
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(4000, 10, generator=g) * s for s in (0.3, 1.0, 3.0, 5.0)]
    cal = ExitCalibration.fit(logits[:-1], "max_prob")
    r = simulate(CalibratedThreshold(cal, beta, "conditional"), logits)
    reached = [int((r.exit_index >= i).sum()) for i in range(4)]
    for i in range(1, 4):
        assert reached[i] / reached[i - 1] == pytest.approx(beta, abs=0.03)


def test_conditional_needs_its_statistics() -> None:
    cal = ExitCalibration.fit([torch.randn(50, 4) for _ in range(3)], "max_prob")
    again = ExitCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert calibrated_thresholds(again, 0.3, "conditional") == pytest.approx(
        calibrated_thresholds(cal, 0.3, "conditional")
    )
    old = cal.to_dict()
    del old["conditional"]  # a calibration written before the variant existed
    with pytest.raises(ConfigError, match="conditional variant"):
        calibrated_thresholds(ExitCalibration.from_dict(old), 0.3, "conditional")


# --- the oracle frontier and matched compute ------------------------------------------------------


def test_oracle_frontier_bounds_every_policy(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(seed=3)
    x = images(200, seed=4)
    logits = [lg.float() for lg in net(x)]
    labels = logits[-1].argmax(1)  # every sample correct at the end
    labels[::3] = (labels[::3] + 1) % 5  # some never correct
    costs = measure_costs(net)
    macs, acc = oracle_frontier(logits, labels, costs.macs_at_exit())
    assert bool((macs[1:] >= macs[:-1]).all()) and bool((acc[1:] >= acc[:-1]).all())
    best = oracle(logits, labels)
    assert float(acc[-1]) == pytest.approx(float((best.predictions == labels).float().mean()))
    # samples no exit gets right stay at exit 1 on the frontier (the oracle sends them to the end)
    assert float(macs[-1]) < float(costs.macs_for(best.exit_index).mean())
    cal = ExitCalibration.fit(logits[:-1], "max_prob")
    for beta in (0.0, 0.3, 0.6, 0.9, 1.0):
        r = simulate(CalibratedThreshold(cal, beta, "conditional"), logits)
        m = float(costs.macs_for(r.exit_index).mean())
        a = float((r.predictions == labels).float().mean())
        reachable = acc[macs <= m + 1e-6]
        assert float(reachable.max()) >= a - 1e-6


def test_at_compute_and_cheapest_reaching() -> None:
    pts = [
        Point(accuracy=acc, mean_macs=macs, relative_macs=macs, exit_fractions=[1.0], balance=0.0, index=i)
        for i, (macs, acc) in enumerate([(0.3, 0.80), (0.45, 0.85), (0.7, 0.84), (0.9, 0.90)])
    ]
    assert at_compute(pts, 0.75).index == 1  # type: ignore[union-attr]  # the best within the level, not the last
    assert at_compute(pts, 0.2) is None
    assert cheapest_reaching(pts, 0.84).index == 1  # type: ignore[union-attr]
    assert cheapest_reaching(pts, 0.95) is None


# --- the comparison on a trained network ----------------------------------------------------------


@pytest.fixture
def trained_run(fake_data: Path, tiny_config: Any, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    train(tiny_config(fake_data, epochs=3), run, progress=False)
    return run


def _compare(run: Path, fake_data: Path, **kw: Any) -> Comparison:
    model, cals, cfg = load_model(run / "checkpoint.pt")
    _, test = load_dataset(cfg.dataset, fake_data)
    # A toy network's time is per-operation overhead and a few images are noise: no efficiency bound.
    args: dict[str, Any] = dict(
        points=21, timed_points=3, timing_samples=6, timing_rounds=1, max_efficiency=math.inf
    )
    args.update(throughput_batch=16, throughput_batches=2)
    args.update(kw)
    return compare_policies(model, cals, validation_split(cfg, str(fake_data)), test, **args)


def test_comparison_on_a_trained_network(trained_run: Path, fake_data: Path) -> None:
    comp = _compare(trained_run, fake_data)
    fams = {f.name: f for f in comp.families}
    assert {"proposed", "max-softmax", "entropy", "patience", "budgeted", "single-exit"} <= set(fams)
    # the real runtime took the simulated exits and predictions at every timed point
    assert comp.timing is not None
    check = comp.timing.runtime_check
    assert check.points > 10 and check.mismatched_exits == 0 and check.mismatched_predictions == 0
    # every knob is monotone on this network's real outputs: compute never falls towards "accurate".
    # Budgeted fits its thresholds to each budget on the validation split, so on 100 test images its
    # compute follows the budget only up to a few images moving exit (0.0076 seen on one CPU).
    for name in ("proposed", "max-softmax", "entropy", "patience", "budgeted", "single-exit"):
        macs = [p.relative_macs for p in fams[name].points]
        slack = 0.02 if name == "budgeted" else 1e-12
        assert all(b >= a - slack for a, b in zip(macs, macs[1:], strict=False)), name
    prop = fams["proposed"].points
    assert prop[0].exit_fractions[0] == 1.0  # beta = 0: everything at exit 1
    timed = [p for p in prop if p.timing is not None]
    assert timed and all(p.timing.batch1_speedup > 0 for p in timed)  # type: ignore[union-attr]
    assert comp.claims == []  # the comparison measures; reporting reads the claims from it
    claims = check_claims(comp)
    assert [c.claim for c in claims] == ["a", "b", "c"]
    assert all(c.verdict in ("supported", "partly", "not supported") for c in claims)
    # matched compute read image by image: every contrast on the whole test set, against a baseline
    assert all(c.rival in BASELINES and c.interval.images == comp.num_test for c in comp.contrasts)
    assert {r.policy for r in comp.decision_overhead} >= {"proposed", "max-softmax", "patience"}


def test_knob_grids_come_from_validation_only(trained_run: Path, fake_data: Path) -> None:
    model, cals, cfg = load_model(trained_run / "checkpoint.pt")
    _, test = load_dataset(cfg.dataset, fake_data)
    val = validation_split(cfg, str(fake_data))
    grids = []
    for part in (test.subset(torch.arange(0, 50)), test.subset(torch.arange(50, 100))):
        comp = compare_policies(model, cals, val, part, points=21, timing_samples=0)
        grids.append({f.name: [p.value for p in f.points] for f in comp.families})
    assert grids[0] == grids[1]


def test_tuning_never_reads_the_test_split(
    trained_run: Path, fake_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = datasets.load_run_data

    class Poison:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the test split was read ({name})")

        def __len__(self) -> int:
            raise AssertionError("the test split was read")

    def no_test(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **kwargs)[0], Poison()

    monkeypatch.setattr(datasets, "load_run_data", no_test)  # what run_splits reads the files with
    result = tuning.tune_on_validation(trained_run / "checkpoint.pt", max_drop_pp=5.0, data_dir=str(fake_data))
    assert 0 <= result.beta <= 1


def test_tune_picks_the_reports_knee_on_the_same_split(trained_run: Path, fake_data: Path) -> None:
    """`bofexits tune --max-drop 0.5` and the report's knee: one grid, one rule, one beta."""
    model, cals, cfg = load_model(trained_run / "checkpoint.pt")
    val = validation_split(cfg, str(fake_data))
    comp = compare_policies(model, cals, val, val, points=41, timing_samples=0)  # the report's path
    tuned = tuning.tune_on_validation(
        trained_run / "checkpoint.pt", max_drop_pp=100 * MAX_DROP, data_dir=str(fake_data), points=41
    )
    knee = comp.proposed.knee
    assert knee is not None and (tuned.variant, tuned.score) == (cfg.variant, cfg.score)
    assert tuned.beta == knee.value and tuned.val_relative_macs == knee.relative_macs


def test_compare_cli_writes_json_csv_and_a_self_contained_report(
    trained_run: Path, fake_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(trained_run / "checkpoint.pt")
    argv = ["-q", "compare", ckpt, "--data-dir", str(fake_data), "--points", "11", "--timed-points", "2"]
    assert main([*argv, "--timing-samples", "4", "--timing-rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "claim (a)" in out and "max-softmax" in out
    comp = json.loads((trained_run / "policies.json").read_text())
    rows = list(csv.DictReader((trained_run / "policies.csv").open()))
    assert len(rows) == sum(len(f["points"]) for f in comp["families"])
    assert {r["policy"] for r in rows} >= {"proposed", "entropy", "budgeted"}
    assert any(r["batch1_mean_ms"] for r in rows) and any(not r["batch1_mean_ms"] for r in rows)
    html = (trained_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # the three comparison plots, embedded
    assert "The paper&#x27;s claims on this run" in html and "<table>" in html
    assert "(a) a more balanced distribution" in (trained_run / "report.md").read_text()
    # the knob sweep adds its section to the same report
    assert main(["-q", "sweep", ckpt, "--data-dir", str(fake_data), "--timing-samples", "0"]) == 0
    assert main(["-q", "report", str(trained_run)]) == 0
    text = (trained_run / "report.md").read_text()
    assert "## Targets" in text and "## Policies side by side" in text


def test_report_needs_results(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither results.json nor policies.json"):
        write_report(tmp_path)
    (tmp_path / "policies.json").write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        write_report(tmp_path)


# --- decision overhead ----------------------------------------------------------------------------


def test_decision_overhead_is_under_two_percent_of_the_backbone() -> None:
    # The policy alone (score, host read, one comparison) against the reference backbone at batch 1.
    torch.manual_seed(0)
    backbone = create_backbone("vgg28")
    plain = torch.nn.Sequential(*backbone.stages).eval()
    singles = [torch.randn(1, 1, 28, 28) for _ in range(30)]
    t = interleaved_timing({"plain": plain}, singles, reference="plain", rounds=3)
    logits = [torch.randn(300, 10) * s for s in (1.0, 2.0, 3.0, 4.0)]
    policy = CalibratedThreshold(ExitCalibration.fit(logits[:-1], "max_prob"), 0.5, "conditional")
    us = decision_overhead_us(policy, logits)
    assert 0 < us / 1e3 < 0.02 * t.median("plain") * 1e3, (us, t.median("plain"))


def test_policy_families_are_ordered_fastest_first(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(seed=1).float()
    logits, labels = collect_logits(net, _dataset(images(120, seed=2)))
    cals = {s: ExitCalibration.fit(logits[:-1], s, labels) for s in ("max_prob", "max_logit")}
    fams = {f.name: f for f in policy_families(cals, logits, measure_costs(net), points=11)}
    for name in ("proposed", "max-softmax", "entropy", "patience", "budgeted"):
        first = simulate(fams[name].make(fams[name].values[0]), logits).exit_index
        last = simulate(fams[name].make(fams[name].values[-1]), logits).exit_index
        assert float(first.float().mean()) <= float(last.float().mean()), name


def _dataset(x: torch.Tensor) -> Any:
    from bofexits.data import ImageDataset

    imgs = (x.float().clamp(-2, 2) * 60 + 128).to(torch.uint8)
    return ImageDataset(
        imgs, torch.zeros(x.shape[0], dtype=torch.long), ("a",), (0.5, 0.5), (0.25, 0.25), "t"
    )


def test_conditional_thresholds_are_never_nan() -> None:
    # Near beta = 0 hardly any calibration sample reaches the later exits; no threshold may be NaN.
    g = torch.Generator().manual_seed(1)
    cal = ExitCalibration.fit([torch.randn(3000, 10, generator=g) * s for s in (1.0, 2.0, 3.0)], "max_prob")
    assert cal.conditional is not None and not bool(cal.conditional.isnan().any())
    for beta in (0.0005, 0.002, 0.004, 0.5, 0.999):
        assert all(t == t for t in calibrated_thresholds(cal, beta, "conditional")), beta


def test_every_point_can_be_timed(trained_run: Path, fake_data: Path) -> None:
    comp = _compare(trained_run, fake_data, points=6, timed_points=0, timing_samples=2)
    for fam in comp.families:
        if fam.timed:
            assert all(p.timing is not None for p in fam.points), fam.name
    assert comp.timing is not None and comp.timing.runtime_check.mismatched_exits == 0


def test_contrasts_pair_the_matched_points_image_by_image(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(seed=1).float()
    logits, _ = collect_logits(net, _dataset(images(300, seed=2)))
    labels = logits[-1].argmax(1)
    labels[::4] = (labels[::4] + 1) % logits[-1].shape[1]  # a quarter never right at the end
    costs = measure_costs(net)
    cals = {s: ExitCalibration.fit(logits[:-1], s, labels) for s in ("max_prob", "max_logit")}
    fams = [f for f in policy_families(cals, logits, costs, points=11) if f.proposed or f.name in BASELINES]
    full = float((logits[-1].argmax(1) == labels).float().mean())
    results = [_simulate_family(f, logits, labels, costs, full) for f in fams]
    comp = Comparison(300, 300, platform_info(), costs, full, results[0].points[0], [], results)
    contrasts = _contrasts(comp, fams, logits, labels)
    expected = {lv for lv, p in comp.proposed.at_levels.items() if p and comp.best_baseline(lv, BASELINES)}
    assert {c.level for c in contrasts if not c.knee} == expected and expected
    assert [c.level for c in contrasts if c.knee] == (
        [comp.proposed.knee.relative_macs] if comp.proposed.knee else []
    )
    for c in contrasts:
        p = comp.proposed.points[c.proposed_index]
        rival = comp.best_baseline(c.level, BASELINES)
        assert rival is not None and (c.rival, c.rival_index) == (rival[0], rival[1].index)
        # the per-image vectors were those of exactly these two points
        assert c.interval.difference == pytest.approx(p.accuracy - rival[1].accuracy, abs=1e-9)
        assert c.interval.images == 300 and c.interval.low <= c.interval.difference <= c.interval.high
