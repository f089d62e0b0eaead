"""The simulation replays the runtime exactly, beta = 1 is the full network whatever the rounding, and
where the two part the report says how many images, at which betas and why."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bofexits.data.dataset import ImageDataset
from bofexits.evaluation.agreement import ROUNDING_GAP, Mismatch, mismatch
from bofexits.evaluation.collect import collect_runtime_logits, run_adaptive
from bofexits.inference.offline import simulate
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitCalibration, FullNetwork
from bofexits.policies.calibrated import calibrated_thresholds
from bofexits.reporting.markdown import agreement_sentence
from tests.conftest import TINY_SHAPE, make_tiny_net
from tests.evaluation.conftest import make_sweep


def _data(n: int, seed: int = 3) -> ImageDataset:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *TINY_SHAPE), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 5, (n,), generator=gen)
    return ImageDataset(images, labels, tuple("abcde"), (0.5, 0.5), (0.25, 0.25), "tiny")


def _calibrated(net: MultiExitNetwork, data: ImageDataset) -> ExitCalibration:
    logits, labels = collect_runtime_logits(AdaptiveRuntime(net, FullNetwork()), data)
    return ExitCalibration.fit(logits[:-1], "max_prob", labels=labels)


@pytest.mark.parametrize("variant", ["quantile", "accuracy"])
def test_the_simulation_on_the_runtimes_logits_takes_the_runtimes_exit_everywhere(variant: str) -> None:
    net = make_tiny_net(dtype=torch.float32)
    data = _data(300)
    cal = _calibrated(net, _data(300, seed=4))
    base = AdaptiveRuntime(net, FullNetwork(), check_inputs=False)
    logits, _ = collect_runtime_logits(base, data, batch_size=64)
    for beta in (0.0, 0.2, 0.5, 0.8, 0.95, 0.999, 1.0):
        policy = CalibratedThreshold(cal, beta, variant)
        real, _ = run_adaptive(base.with_policy(policy), data, batch_size=64)
        sim = simulate(policy, logits)
        assert torch.equal(real.exit_index, sim.exit_index), beta
        assert mismatch(policy, real.exit_index, sim.exit_index, logits) is None


def test_runtime_logits_are_the_runtimes_outputs_at_the_first_exit() -> None:
    net = make_tiny_net(dtype=torch.float32)
    data = _data(70)
    runtime = AdaptiveRuntime(net, CalibratedThreshold(_calibrated(net, data), 0.0, "quantile"))
    logits, _ = collect_runtime_logits(runtime, data, batch_size=32)
    real, _ = run_adaptive(runtime, data, batch_size=32)  # beta 0: everyone leaves at exit 1
    assert torch.equal(real.exit_index, torch.zeros(70, dtype=torch.long))
    assert torch.equal(real.logits, logits[0])  # bit for bit: the same arithmetic, the same batches


@pytest.mark.parametrize("variant", ["quantile", "conditional", "accuracy"])
def test_beta_one_is_the_full_network_even_for_a_score_at_the_top_of_the_table(variant: str) -> None:
    # Saturated max-softmax: calibration scores of exactly 1.0, so the tables' top is 1.0 too.
    logits = [torch.tensor([[30.0, 0.0], [40.0, 0.0], [0.5, 0.0]])] * 2
    cal = ExitCalibration.fit(logits, "max_prob", labels=torch.tensor([0, 0, 1]))
    assert calibrated_thresholds(cal, 1.0, variant) == [float("inf")] * 2
    top = torch.tensor([[50.0, 0.0]])  # max-softmax rounds to 1.0 in float32
    stop, _ = CalibratedThreshold(cal, 1.0, variant).stop(0, top, None)
    assert not bool(stop.any())
    below = calibrated_thresholds(cal, 0.999, variant)
    assert all(t <= 3.5e38 for t in below)  # just below 1 the tables still decide


def test_the_runner_keeps_the_same_definition() -> None:
    from bofexits.deploy.rule import calibrated_thresholds as numpy_thresholds

    q = torch.linspace(0.5, 1.0, 1001).repeat(2, 1).numpy()
    assert numpy_thresholds([0.9, 0.9], q, 1.0, "quantile") == [float("inf")] * 2
    assert numpy_thresholds([0.9, 0.9], q, 0.0, "quantile") == [float("-inf")] * 2


def test_mismatch_counts_the_images_and_measures_the_gap() -> None:
    logits = [torch.tensor([[0.863000214, 0.0], [3.0, 0.0], [0.1, 0.0]]), torch.zeros(3, 2)]
    policy = CalibratedThreshold(
        ExitCalibration("max_logit", torch.tensor([1.0]), torch.zeros(1, 1001), 3), 0.863
    )
    found = mismatch(policy, torch.tensor([1, 0, 1]), torch.tensor([0, 0, 1]), logits)
    assert found is not None and found.images == 1 and found.beta == 0.863
    assert found.largest_gap < ROUNDING_GAP and found.rounding
    assert mismatch(policy, torch.tensor([1, 0, 1]), torch.tensor([1, 0, 1]), logits) is None
    assert Mismatch.from_dict(found.to_dict()) == found


def test_the_report_gives_the_count_the_betas_and_the_cause() -> None:
    sweep = make_sweep()
    assert agreement_sentence(sweep).startswith("yes (3 betas x 100 images)")
    tie = dataclasses.replace(
        sweep, simulation_matches_runtime=False, simulation_mismatches=[Mismatch(0.875, 1, 1.4e-7)]
    )
    text = agreement_sentence(tie)
    assert (
        "1 image(s) differ (1 at beta 0.875)" in text and "1.4e-07" in text and "a tie, not a defect" in text
    )
    defect = dataclasses.replace(tie, simulation_mismatches=[Mismatch(0.5, 3, 0.02), Mismatch(0.9, 1, 1e-8)])
    text = agreement_sentence(defect)
    assert "4 image(s) differ (3 at beta 0.5, 1 at beta 0.9)" in text and "a defect to report" in text
    again = type(sweep).from_dict(defect.to_dict())
    assert again.simulation_mismatches == defect.simulation_mismatches
