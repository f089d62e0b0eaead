"""The paper's three claims, checked against a policy comparison and said in words.

The comparison (`bofexits.evaluation.compare`) measures; this module reads it: which numeric
targets are met, and a sentence built from the run's numbers where they are not. It lives in
reporting because its output is English; the result types it fills (`Check`, `Claim`) live
beside the comparison they describe (`bofexits.evaluation.comparison`).

(a) a more balanced distribution of samples over the exits, (b) one interpretable knob from
fastest to most accurate, (c) higher accuracy and less inference time than existing rules;
each with its numeric targets, and a verdict with a reading of the numbers where they do not
support it. Every clause of that reading is written from the run's numbers and only appears
when those numbers show it. At matched compute the proposed rule is held against the best
baseline image by image (`Contrast`): a difference inside the paired bootstrap interval is a
tie, not a win or a loss.
"""

from __future__ import annotations

from bofexits.evaluation.comparison import BASELINES, Check, Claim, Comparison, Contrast, FamilyResult
from bofexits.evaluation.frontier import first_reaching
from bofexits.evaluation.points import Point, cheapest_reaching
from bofexits.evaluation.significance import Interval
from bofexits.reporting.format import fractions, pct, pp, times

__all__ = [
    "BALANCE_TARGET",
    "CONFIDENCE_GAP",
    "OVERHEAD_LIMIT",
    "ORACLE_RATIO_LIMIT",
    "PILED",
    "check_claims",
    "matched_compute_summary",
]

BALANCE_TARGET = 0.75
"""Claim (a): the smallest balance at the knee that counts as balanced."""
ORACLE_RATIO_LIMIT = 1.3
"""Claim (c): the knee may use at most this multiple of the oracle's MACs at the same accuracy."""
OVERHEAD_LIMIT = 0.02
"""Claim (c): a decision may cost at most this share of the backbone's batch-1 time."""
PILED = 0.5
"""Claim (a)'s reading: a point "piles samples up" at an exit that takes at least this share of them
(and at least twice the share every exit would take under a uniform split)."""
CONFIDENCE_GAP = 0.1
"""Claim (a)'s reading: exit 1 counts as less confident than the last early exit when its median
max-softmax on the calibration data is lower by at least this much."""
_FASTEST = 0.999  # share at exit 1 that counts as "everything leaves at exit 1"
_SPAN_TOLERANCE = 0.001  # the knob's last point may miss the full network by this much


def _sentence(parts: list[str]) -> str:
    """Clauses joined into one sentence.

    >>> _sentence(["a is 1", "b is 2"])
    'A is 1; b is 2.'
    """
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def _claim(key: str, statement: str, checks: list[Check], why: str) -> Claim:
    results = [c.met for c in checks if c.met is not None]
    verdict = "supported" if results and all(results) else "not supported" if not any(results) else "partly"
    return Claim(key, statement, checks, verdict, "" if verdict == "supported" else why)


def check_claims(comparison: Comparison) -> list[Claim]:
    """The paper's three claims (and their numeric targets), each checked against this comparison."""
    return [_balance(comparison), _one_knob(comparison), _accuracy_and_time(comparison)]


def _medians_note(comparison: Comparison) -> str:
    """The early exits' median confidences, only when exit 1 is `CONFIDENCE_GAP` less confident than the last."""
    medians = comparison.exit_confidence_medians
    if not medians or len(medians) < 2 or medians[-1] - medians[0] < CONFIDENCE_GAP:
        return ""
    return (
        f"the early exits are less confident than the later ones: the median max-softmax at exits "
        f"1..{len(medians)} on the calibration data is {fractions(medians, 3)}"
    )


def _piled(who: str, p: Point | None) -> str:
    """Where `p` piles samples up (an exit taking at least `PILED` of them and twice a uniform
    share), or "".

    >>> _piled("the knee", Point(0.9, 5.0, 0.5, [0.1, 0.7, 0.2], 0.7))
    'the knee sends 70% of the samples to exit 2'
    >>> _piled("the knee", Point(0.9, 5.0, 0.5, [0.4, 0.3, 0.3], 0.9))  # no exit takes half
    ''
    >>> _piled("the knee", Point(0.9, 5.0, 0.5, [0.2, 0.8], 0.7))  # of two exits: not twice a uniform share
    ''
    """
    if p is None or not p.exit_fractions:
        return ""
    share = max(p.exit_fractions)
    if share < max(PILED, 2 / len(p.exit_fractions)):
        return ""
    return f"{who} sends {pct(share, 0)} of the samples to exit {p.exit_fractions.index(share) + 1}"


def _balance(comparison: Comparison) -> Claim:
    """(a): balance at the knee, absolutely and against max-softmax at the same accuracy."""
    statement = "a more balanced distribution of samples over the exits"
    knee, soft = comparison.proposed.knee, comparison.family("max-softmax")
    if knee is None:
        best = max(comparison.proposed.points, key=lambda p: p.accuracy)
        tol = f"within {pp(comparison.max_drop, 1, signed=False)} of the full network"
        checks = [Check(f"a knee exists ({tol})", "none", False)]
        why = f"no point comes {tol} ({pct(comparison.full_accuracy)}); the most accurate reaches {pct(best.accuracy)}"
        return _claim("a", statement, checks, why)
    other = cheapest_reaching(soft.points, knee.accuracy) if soft else None
    checks = [
        Check(
            f"balance at the knee >= {BALANCE_TARGET:g}",
            f"{knee.balance:.3f} (beta={knee.value:g}, {pct(knee.accuracy)} at {pct(knee.relative_macs)} MACs)",
            knee.balance >= BALANCE_TARGET,
        ),
        Check(
            "balance higher than max-softmax's at the same accuracy",
            f"{knee.balance:.3f} vs {other.balance:.3f} (max-softmax at {pct(other.accuracy)}, "
            f"{pct(other.relative_macs)} MACs)"
            if other
            else "max-softmax never reaches that accuracy",
            knee.balance > other.balance if other else True,
        ),
    ]
    reasons = []
    if other is not None:
        reasons.append(
            f"max-softmax reaches the knee's accuracy with balance {other.balance:.3f} against {knee.balance:.3f}"
        )
    reasons += [_piled(who, p) for who, p in (("the knee", knee), ("max-softmax", other)) if _piled(who, p)]
    if note := _medians_note(comparison):
        reasons.append(note)
    return _claim("a", statement, checks, _sentence(reasons))


def _one_knob(comparison: Comparison) -> Claim:
    """(b): compute grows with beta, and beta spans exit 1 only to the full network's accuracy."""
    pts = comparison.proposed.points
    macs = [p.relative_macs for p in pts]
    drops = sum(1 for a, b in zip(macs, macs[1:], strict=False) if b < a - 1e-12)
    first, last = pts[0], pts[-1]
    checks = [
        Check(
            "mean compute never decreases as beta grows (test set, every grid point)",
            f"{len(pts)} points, {drops} decreases",
            drops == 0,
        ),
        Check(
            "the knob spans fastest (everything at exit 1) to the full network's accuracy",
            f"beta={first.value:g}: {pct(first.exit_fractions[0])} at exit 1; "
            f"beta={last.value:g}: {pct(last.accuracy)} (full {pct(comparison.full_accuracy)})",
            first.exit_fractions[0] >= _FASTEST
            and last.accuracy >= comparison.full_accuracy - _SPAN_TOLERANCE,
        ),
    ]
    reasons = [f"{drops} of {len(pts) - 1} steps of beta lower the compute"] if drops else []
    if not checks[1].met:
        reasons.append(
            f"the knob runs from {pct(first.exit_fractions[0])} at exit 1 to {pct(last.accuracy)} "
            f"against the full network's {pct(comparison.full_accuracy)}"
        )
    return _claim(
        "b", "one interpretable hyper-parameter from fastest to most accurate", checks, _sentence(reasons)
    )


def _ci(interval: Interval, sign: float = 0.0) -> str:
    """The interval in pp: of the difference as stored (signed), or, with `sign` +1 (the proposed
    rule leads) or -1 (the rival leads), of the leader's advantage (unsigned).

    >>> iv = Interval(-0.0042, -0.0070, -0.0010, 0.95, 2000, 0, 10000, 10, 52, 0.0)
    >>> _ci(iv), _ci(iv, -1)
    ('95% CI -0.70..-0.10', '95% CI 0.10..0.70')
    """
    lo, hi = sorted(((sign or 1.0) * interval.low, (sign or 1.0) * interval.high))
    fmt = ".2f" if sign else "+.2f"
    return f"{interval.confidence:.0%} CI {100 * lo:{fmt}}..{100 * hi:{fmt}}"


def _matched(
    comparison: Comparison, level: float, *, knee: bool = False
) -> tuple[tuple[str, Point] | None, Contrast | None]:
    """The best baseline within `level`, and the stored contrast against it (None: not stored)."""
    best = comparison.best_baseline(level, BASELINES)
    contrast = comparison.contrast(level, knee=knee)
    return best, contrast if contrast is not None and best is not None and contrast.rival == best[0] else None


def _level_check(comparison: Comparison, level: float, p: Point | None) -> Check:
    """The proposed rule's accuracy at `level` against the best baseline's: met only when significantly
    ahead (a paired interval above zero), since "higher accuracy" is the claim and a tie is not
    higher; in files without per-image intervals, when not behind at all."""
    rivals = ", ".join(BASELINES)
    if p is None:
        name = f"accuracy at {level:.0%} of the compute vs the best of {rivals}"
        exit1 = pct(comparison.costs.first_exit_fraction)
        return Check(name, f"unreachable: exit 1 alone costs {exit1} of the backbone", None)
    best, contrast = _matched(comparison, level)
    if best is not None and contrast is not None:
        iv, (rival, q) = contrast.interval, best
        name = (
            f"accuracy at {level:.0%} of the compute significantly above the best of {rivals} "
            f"(paired bootstrap over {iv.images} test images)"
        )
        measured = (
            f"{pct(p.accuracy)} vs {rival} {pct(q.accuracy)} ({pp(iv.difference)}, {_ci(iv)}: {iv.verdict})"
        )
        return Check(name, measured, iv.verdict == "win")
    name = f"accuracy at {level:.0%} of the compute >= best of {rivals}"
    if best is None:
        return Check(name, "no baseline reaches this level", True)
    rival, q = best
    diff = p.accuracy - q.accuracy
    measured = f"{pct(p.accuracy)} vs {rival} {pct(q.accuracy)} ({pp(diff)}; no per-image interval stored)"
    return Check(name, measured, diff >= 0)


def _behind(comparison: Comparison) -> list[str]:
    """A clause for each level at which the proposed rule is not significantly ahead (behind, or a
    tie); in files without per-image intervals, one for the largest plain shortfall."""
    out, plain = [], []
    for level, p in comparison.proposed.at_levels.items():
        best, contrast = _matched(comparison, level)
        if p is None or best is None:
            continue
        if contrast is not None:
            iv = contrast.interval
            if iv.verdict == "loss":
                out.append(
                    f"at {level:.0%} of the MACs, {best[0]} is ahead by {pp(-iv.difference, signed=False)} "
                    f"({_ci(iv, -1)} pp over {iv.images} test images)"
                )
            elif iv.verdict == "tie":
                out.append(
                    f"at {level:.0%} of the MACs it ties {best[0]} ({pp(iv.difference)}, {_ci(iv)} pp "
                    f"over {iv.images} test images)"
                )
        elif (diff := p.accuracy - best[1].accuracy) < 0:
            plain.append((diff, level, best[0]))
    if plain:
        diff, level, rival = min(plain)
        out.append(
            f"at matched compute it trails by at most {pp(-diff, signed=False)} ({rival}, {level:.0%} of the "
            "MACs), with no per-image interval stored to tell a loss from a tie"
        )
    return out


def _summary_line(where: str, p: Point, best: tuple[str, Point] | None, contrast: Contrast | None) -> str:
    """Who is ahead at one matched compute and by how much; a tie when the interval includes 0."""
    if best is None:
        return f"{where}: no baseline has a point within that compute; the proposed rule reaches {pct(p.accuracy)}"
    rival, q = best
    accs = f"the proposed rule {pct(p.accuracy)}, {rival} {pct(q.accuracy)}"
    if contrast is None:
        diff = p.accuracy - q.accuracy
        lead = (
            "equal"
            if diff == 0
            else f"{'the proposed rule' if diff > 0 else rival} ahead by {pp(abs(diff), signed=False)}"
        )
        return f"{where}: {lead} ({accs}; no per-image interval stored: re-run `bofexits compare` for one)"
    iv = contrast.interval
    test = (
        f"McNemar p = {iv.mcnemar_p:.2g}: {iv.only_a} images only the proposed rule gets right, "
        f"{iv.only_b} only {rival}"
    )
    if iv.verdict == "tie":
        return f"{where}: tie with {rival} ({pp(iv.difference)}, {_ci(iv)} pp; {accs}; {test})"
    ahead, sign = (
        (f"the proposed rule ahead of {rival}", 1.0)
        if iv.verdict == "win"
        else (f"{rival} ahead of the proposed rule", -1.0)
    )
    return (
        f"{where}: {ahead} by {pp(sign * iv.difference, signed=False)} ({_ci(iv, sign)} pp; {accs}; {test})"
    )


def matched_compute_summary(comparison: Comparison) -> list[str]:
    """One sentence per matched-compute level (and the knee): which policy is ahead and by how much.

    The proposed rule against the best of `BASELINES` within the same share of the MACs; a
    difference whose paired interval includes 0 reads as a tie. Comparisons written before the
    intervals were stored (no `contrasts`) read as the plain difference, said to have no interval.
    """
    out = []
    prop = comparison.proposed
    for level, p in prop.at_levels.items():
        where = f"At {level:.0%} of the MACs"
        if p is None:
            exit1 = pct(comparison.costs.first_exit_fraction)
            out.append(f"{where}: the proposed rule has no point (exit 1 alone costs {exit1})")
        else:
            out.append(_summary_line(where, p, *_matched(comparison, level)))
    if (knee := prop.knee) is not None:
        where = f"At the knee ({pct(knee.relative_macs, 1)} of the MACs)"
        out.append(_summary_line(where, knee, *_matched(comparison, knee.relative_macs, knee=True)))
    return out


def _speed_checks(comparison: Comparison, knee: Point) -> tuple[list[Check], list[str]]:
    """Batch-1 speed at the knee's accuracy against the global-threshold rules, and a clause for each
    rule that ran faster.

    Both rules were timed in the same rounds on the same images, so their times are compared
    directly with a paired bootstrap interval (`ComparisonTiming.speed_contrasts`): "less inference
    time" needs the interval above 1; inside it the rules tie. Comparisons written before the rules
    shared their rounds hold no interval and compare the two speedups as they are.
    """
    checks, slower = [], []
    contrasts = comparison.timing.speed_contrasts if comparison.timing is not None else {}
    for name in ("max-softmax", "entropy"):
        fam: FamilyResult | None = comparison.family(name)
        other = cheapest_reaching(fam.points, knee.accuracy) if fam else None
        if other is None or other.timing is None or knee.timing is None:
            continue
        mine, theirs = knee.timing.batch1_speedup, other.timing.batch1_speedup
        speeds = f"{times(mine)} vs {times(theirs)} over the plain backbone"
        if (iv := contrasts.get(name)) is None:
            checks.append(
                Check(f"batch-1 speedup at the knee's accuracy above {name}'s", speeds, mine >= theirs)
            )
            faster_than_us = mine < theirs
        else:
            ci = f"{iv.confidence:.0%} CI {iv.low:.2f}..{iv.high:.2f}"
            measured = f"{speeds}; knee {iv.estimate:.2f}x {name}'s speed ({ci}): {iv.verdict}"
            checks.append(
                Check(f"batch-1 time at the knee's accuracy below {name}'s", measured, iv.verdict == "faster")
            )
            faster_than_us = iv.verdict == "slower"
        if faster_than_us:
            slower.append(
                f"at the knee's accuracy {name} runs at {times(theirs)} the backbone's speed against "
                f"{times(mine)} ({pct(other.relative_macs)} vs {pct(knee.relative_macs)} of the MACs)"
            )
    return checks, slower


def _oracle_check(knee: Point, reach: float) -> Check:
    """The knee's MACs against the oracle's at the same accuracy."""
    ratio = knee.relative_macs / reach
    return Check(
        f"within {ORACLE_RATIO_LIMIT:g}x of the oracle's mean MACs at the same accuracy",
        f"{pct(knee.relative_macs)} vs oracle {pct(reach)}: {times(ratio)}",
        ratio <= ORACLE_RATIO_LIMIT,
    )


def _overhead_checks(comparison: Comparison) -> list[Check]:
    return [
        Check(
            f"decision overhead per exit < {pct(OVERHEAD_LIMIT, 0)} of the backbone's batch-1 time",
            f"{row.us_per_decision:.1f} µs = {pct(row.fraction_of_backbone_batch1)}",
            row.fraction_of_backbone_batch1 < OVERHEAD_LIMIT,
        )
        for row in comparison.decision_overhead
        if row.policy == "proposed"
    ]


def _accuracy_and_time(comparison: Comparison) -> Claim:
    """(c): matched-compute accuracy, speed, oracle gap and decision overhead."""
    checks = [_level_check(comparison, lv, p) for lv, p in comparison.proposed.at_levels.items()]
    reasons = _behind(comparison)
    knee = comparison.proposed.knee
    reach = first_reaching(comparison.frontier, knee.accuracy) if knee is not None else None
    if knee is not None:
        speed, slower = _speed_checks(comparison, knee)
        checks += speed
        reasons += slower
        if reach is not None:
            oracle = _oracle_check(knee, reach)
            checks.append(oracle)
            if oracle.met is False:
                reasons.append(
                    f"the oracle (earliest correct exit) reaches the knee's accuracy with {pct(reach)} of the "
                    f"MACs against the knee's {pct(knee.relative_macs)}"
                )
    overhead = _overhead_checks(comparison)
    checks += overhead
    reasons += [
        f"a decision costs {c.measured} of the backbone's batch-1 time" for c in overhead if c.met is False
    ]
    statement = "higher accuracy and less inference time than existing rules"
    return _claim("c", statement, checks, _sentence(reasons))
