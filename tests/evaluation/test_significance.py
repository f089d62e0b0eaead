"""The paired bootstrap and McNemar's test: known ties, wins and losses, a plain reference loop,
reproducibility, and clear errors for inputs that are not one flag per test image."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from bofexits.errors import InputError
from bofexits.evaluation.significance import Interval, mcnemar_p, paired_bootstrap


def _pair(n: int, only_a: int, only_b: int, both: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness with `both` images right for both, and the given discordant counts."""
    a, b = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    a[:both] = b[:both] = True
    a[both : both + only_a] = True
    b[both + only_a : both + only_a + only_b] = True
    return a, b


def test_identical_results_give_a_zero_width_interval_at_zero() -> None:
    a = np.random.default_rng(0).random(500) < 0.9
    r = paired_bootstrap(a, a.copy())
    assert (r.difference, r.low, r.high, r.verdict) == (0.0, 0.0, 0.0, "tie")
    assert (r.only_a, r.only_b, r.mcnemar_p, r.images) == (0, 0, 1.0, 500)


def test_a_five_image_lead_on_ten_thousand_is_a_tie() -> None:
    # +0.05 pp: what a plain comparison would call a win
    a, b = _pair(10_000, only_a=25, only_b=20, both=9_000)
    r = paired_bootstrap(a, b)
    assert r.difference == pytest.approx(0.0005) and r.low < 0 < r.high and r.verdict == "tie"
    assert r.mcnemar_p > 0.5


def test_a_clear_win_and_its_mirror_loss() -> None:
    a, b = _pair(1_000, only_a=60, only_b=5, both=800)
    win, loss = paired_bootstrap(a, b), paired_bootstrap(b, a)
    assert win.verdict == "win" and 0 < win.low < win.difference < win.high
    assert win.difference == pytest.approx(0.055) and win.mcnemar_p < 1e-10
    # the same resampled indices: the mirror's interval is exactly the negated one
    assert loss.verdict == "loss" and (loss.low, loss.high) == pytest.approx((-win.high, -win.low))
    assert (loss.only_a, loss.only_b, loss.mcnemar_p) == (5, 60, win.mcnemar_p)


def test_matches_a_plain_loop_over_resamples() -> None:
    a, b = _pair(300, only_a=12, only_b=7, both=250)
    fast = paired_bootstrap(a, b, resamples=400, seed=3, confidence=0.9)
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(400):  # one resample at a time: the same image indices for both policies
        idx = rng.integers(0, a.size, size=a.size, dtype=np.int32)
        diffs.append(a[idx].mean() - b[idx].mean())
    assert (fast.low, fast.high) == pytest.approx(tuple(np.quantile(diffs, [0.05, 0.95])))
    assert fast.difference == pytest.approx(a.mean() - b.mean())


def test_reproducible_with_its_seed() -> None:
    a, b = _pair(2_000, only_a=40, only_b=30, both=1_700)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)


def test_takes_torch_flags_and_is_fast_on_ten_thousand_images() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10_000, generator=g) < 0.93, torch.rand(10_000, generator=g) < 0.93
    t0 = time.perf_counter()
    r = paired_bootstrap(a, b, resamples=2000)
    assert time.perf_counter() - t0 < 3.0  # ~0.2 s vectorised; a loop over resamples takes seconds
    assert r.images == 10_000 and r.resamples == 2000 and r.low <= r.difference <= r.high


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.ones(5, dtype=bool), np.ones(4, dtype=bool), "same test images, got 5 and 4"),
        (np.ones(5), np.ones(5, dtype=bool), "must hold booleans .* float64"),
        ([1, 0, 1], [True, False, True], "must hold booleans"),
        (np.ones((2, 3), dtype=bool), np.ones((2, 3), dtype=bool), "1-D"),
        (np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), "no test images"),
    ],
    ids=["lengths", "floats", "ints", "2-d", "empty"],
)
def test_refuses_what_is_not_one_flag_per_image(a: object, b: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        paired_bootstrap(a, b)  # type: ignore[arg-type]


def test_refuses_bad_settings() -> None:
    a = np.ones(4, dtype=bool)
    with pytest.raises(InputError, match="resamples"):
        paired_bootstrap(a, a, resamples=0)
    with pytest.raises(InputError, match="confidence"):
        paired_bootstrap(a, a, confidence=1.0)
    with pytest.raises(InputError, match="negative"):
        mcnemar_p(-1, 2)


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 0), (1, 0), (10, 0), (7, 3), (3, 53), (400, 450)])
def test_mcnemar_is_the_exact_binomial_test(only_a: int, only_b: int) -> None:
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 0.5
    assert mcnemar_p(only_a, only_b) == pytest.approx(min(1.0, 2 * tail), rel=1e-12)
    assert mcnemar_p(only_a, only_b) == mcnemar_p(only_b, only_a)
    stats = pytest.importorskip("scipy.stats")
    if n:
        assert mcnemar_p(only_a, only_b) == pytest.approx(stats.binomtest(only_a, n, 0.5).pvalue, rel=1e-9)


def test_interval_round_trips_with_its_verdict() -> None:
    a, b = _pair(200, only_a=30, only_b=2, both=150)
    r = paired_bootstrap(a, b, resamples=100)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["verdict"] == "win" and Interval.from_dict(data) == r
